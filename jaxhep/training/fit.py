"""Minibatch training with optax: epochs run inside `lax.scan`, early stopping on a validation split."""

from __future__ import annotations

import functools
import math
import numbers
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from jaxhep import compilation
from jaxhep.checks import check_positive_finite, check_positive_int, warn_caller
from jaxhep.nn.init import numpy_rng, split_on_host, typed_key
from jaxhep.training.parallel import DATA_AXIS, data_mesh


class History(eqx.Module):
    """Loss history of one training run.

    Attributes:
        train_loss: mean training loss of each epoch.
        val_loss: validation loss after each epoch (empty without a validation split; NaN for
            an epoch whose training loss or weights were not finite, where training stopped).
        best_epoch: index of the epoch whose state was kept.
        epochs: number of epochs run.
        stopped_early: whether training was ended by something other than `max_epochs`: patience
            ran out (possibly at the last allowed epoch), or the loss or the weights stopped
            being finite.
        seconds: wall time of the run, compilation included.
        lr_scale: the factor the step size was multiplied by in each epoch (all ones without a
            plateau schedule; None where not recorded).
    """

    train_loss: Float[Array, " epochs"]
    val_loss: Float[Array, " epochs"]
    best_epoch: int = eqx.field(static=True)
    epochs: int = eqx.field(static=True)
    stopped_early: bool = eqx.field(static=True)
    seconds: float = eqx.field(static=True)
    lr_scale: Float[Array, " epochs"] | None = None


def _leading_size(data: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data is empty: expected a pytree of arrays sharing a leading (sample) axis")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) > 0 else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        raise ValueError(f"every array in data must share the same leading (sample) axis; got shapes {shapes}")
    return sizes.pop()


def drop_nonfinite(data: PyTree, *, what: str = "simulations") -> tuple[PyTree, int]:
    """Drop rows with a NaN or inf in any array, warning with how many were dropped.

    Arguments:
        data: pytree of arrays sharing a leading axis.
        what: what a row is, for the warning (which points at the first caller outside jaxhep).

    Returns:
        (data without those rows, number dropped). The input is not modified.
    """
    n = _leading_size(data)
    if n == 0:
        raise ValueError(f"no {what} given: expected arrays with at least one row")
    ok = np.ones(n, dtype=bool)
    for leaf in jax.tree_util.tree_leaves(data):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact):
            ok &= np.isfinite(arr.reshape(n, -1)).all(axis=1)
    dropped = int(n - ok.sum())
    if dropped:
        warn_caller(f"dropped {dropped} of {n} {what} containing NaN or inf")
        if dropped == n:
            raise ValueError(f"all {n} {what} contain NaN or inf; nothing is left to train on")
        data = jax.tree_util.tree_map(lambda a: np.asarray(a)[ok], data)
    return data, dropped


def check_ema_decay(ema_decay: float | None) -> None:
    """Raise ValueError unless `ema_decay` is None or lies in [0, 1)."""
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1) or be None, got {ema_decay!r}")


def check_clip_norm(clip_norm: float | None) -> None:
    """Raise ValueError unless `clip_norm` is None or a positive finite number (optax's global-norm
    clipping at 0 trains nothing, at a negative value it turns every step uphill)."""
    if clip_norm is not None:
        check_positive_finite("clip_norm", clip_norm)


def check_weight_decay(weight_decay: float) -> None:
    """Raise ValueError unless `weight_decay` is a finite number >= 0 (inf drove every weight to -inf)."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or not 0 <= weight_decay < math.inf:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")


def check_lr_decay(factor: float | None, patience: int) -> None:
    """Raise ValueError unless `factor` is None or lies in (0, 1) and `patience` is a positive integer."""
    if factor is not None and not 0.0 < factor < 1.0:
        raise ValueError(f"lr_decay_factor must lie in (0, 1) or be None, got {factor!r}")
    check_positive_int("lr_decay_patience", patience)


def split_train_val(key: PRNGKeyArray, data: PyTree, validation_fraction: float) -> tuple[PyTree, PyTree | None]:
    """Randomly split a pytree of arrays into training and validation parts."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction}")
    n = _leading_size(data)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0 and n_val == 0:
        n_val = 1
    if n - n_val < 1:
        raise ValueError(f"too few samples ({n}) for a validation fraction of {validation_fraction}")
    # On the host: the same split with jax.random.permutation and device gathers compiled several
    # small programs (about 0.6 s) before training could start.
    perm = numpy_rng(key).permutation(n)
    data = jax.tree_util.tree_map(np.asarray, data)
    train = jax.tree_util.tree_map(lambda a: jax.device_put(a[perm[n_val:]]), data)
    val = jax.tree_util.tree_map(lambda a: jax.device_put(a[perm[:n_val]]), data) if n_val else None
    return train, val


@functools.lru_cache(maxsize=64)
def _cached_optimizer(optimizer, learning_rate, clip_norm, weight_decay=0.0):
    if optimizer is None:
        adam = optax.adamw(learning_rate, weight_decay=weight_decay) if weight_decay else optax.adam(learning_rate)
        chain = adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)
        # Element-wise updates and one global norm: on the concatenated vector the step runs a
        # few fused kernels instead of several per parameter array, which compiles faster.
        return optax.flatten(chain)
    if clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
    return optimizer


def _build_optimizer(optimizer, learning_rate, clip_norm, weight_decay=0.0):
    """Adam at `learning_rate` (AdamW when `weight_decay` > 0) or `optimizer`, after global-norm
    clipping unless `clip_norm` is None.

    The same settings give the same transformation object, so that fits with equal settings can
    share their compiled programs; unhashable settings (e.g. an array as learning rate) get
    a new one.
    """
    try:
        return _cached_optimizer(optimizer, learning_rate, clip_norm, weight_decay)
    except TypeError:
        return _cached_optimizer.__wrapped__(optimizer, learning_rate, clip_norm, weight_decay)


class _EpochConfig(NamedTuple):
    """Everything about a training epoch that is not an array: the static argument of `_train_epoch`."""

    loss_fn: Callable
    static: Any  # the model without its arrays
    optimizer: optax.GradientTransformation
    n_batches: int
    batch_size: int
    ema_decay: float | None
    scale_updates: bool  # plateau schedule on: multiply the updates by lr_scale
    mesh: Mesh | None = None  # data-parallel over the mesh's devices (see `data_mesh`), or one device


class _ValidationConfig(NamedTuple):
    """The static argument of `_validate`."""

    loss_fn: Callable
    static: Any
    validation_draws: int
    mesh: Mesh | None = None


def _loss_of_params(config, frozen):
    def loss_of_params(p, k, batch):
        return config.loss_fn(eqx.combine(p, frozen, config.static), k, batch)
    return loss_of_params


def _shard_index(mesh: Mesh):
    """This device's position along the data axis inside `shard_map`, with the device count."""
    return jax.lax.axis_index(DATA_AXIS), mesh.shape[DATA_AXIS]


def _replicated(fun, mesh: Mesh | None):
    """`fun` itself without a mesh; else `fun` run on every device of `mesh` by `shard_map`, with
    all arguments and the results replicated (each device picks its rows itself)."""
    if mesh is None:
        return fun
    return jax.shard_map(fun, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec(), check_vma=False)


def _train_epoch(params, frozen, opt_state, avg, train, perm, k_train, epoch, lr_scale, config):
    """One epoch of training: all full minibatches, in the order `perm`, in a `lax.scan`.

    `params` are the trained arrays, `frozen` the model's other arrays (e.g. integer masks),
    `avg` the moving average of `params` or None, `perm` the training rows of this epoch's
    minibatches (n_batches * batch_size indices). Returns the new state and the mean loss.

    With a mesh in `config`, every device takes its equal share of each minibatch, and the
    gradients are averaged over the devices (one all-reduce per step) before the same update is
    applied everywhere; the updates are those of one device up to float rounding. The epoch's
    mean loss is averaged over the devices once, at the end. Also returns whether the weights
    that would be validated and returned (the trained ones, or their average) are all finite: a
    last step with a NaN gradient leaves NaN weights after a finite loss.
    """
    c = config
    loss_of_params = _loss_of_params(c, frozen)

    # Keys are derived inside the compiled program: eager splits compile per shape.
    k_steps = jax.random.fold_in(k_train, epoch)
    rows = perm.reshape(c.n_batches, c.batch_size)
    if c.mesh is not None:
        shard, n_shards = _shard_index(c.mesh)
        rows = rows.reshape(c.n_batches, n_shards, c.batch_size // n_shards)[:, shard]
    batches = jax.tree_util.tree_map(lambda a: a[rows], train)

    def step(carry, inp):
        p, s, a = carry
        k, batch, i = inp
        if c.mesh is not None and c.mesh.size > 1:
            # Each device's share draws its own randomness; on one device, that of no mesh.
            k = jax.random.fold_in(k, shard)
        value, grads = jax.value_and_grad(loss_of_params)(p, k, batch)
        if c.mesh is not None:
            # One all-reduce for all gradients. The losses are averaged over the devices once
            # per epoch instead: on CPU devices each all-reduce costs about 50 us, whatever its size.
            flat, unravel = ravel_pytree(grads)
            grads = unravel(jax.lax.pmean(flat, DATA_AXIS))
        updates, s = c.optimizer.update(grads, s, p)
        if c.scale_updates:
            updates = jax.tree_util.tree_map(lambda u: (u * lr_scale).astype(u.dtype), updates)
        p = optax.apply_updates(p, updates)
        if a is not None:
            k_step = (epoch * c.n_batches + i).astype(jnp.float32)
            d = jnp.minimum(c.ema_decay, (1.0 + k_step) / (10.0 + k_step))
            a = jax.tree_util.tree_map(lambda m, q: (d * m + (1.0 - d) * q).astype(m.dtype), a, p)
        return (p, s, a), value

    (params, opt_state, avg), losses = jax.lax.scan(
        step, (params, opt_state, avg), (jax.random.split(k_steps, c.n_batches), batches, jnp.arange(c.n_batches)))
    loss = jnp.mean(losses)
    finite = jnp.all(jnp.isfinite(ravel_pytree(params if avg is None else avg)[0]))
    return params, opt_state, avg, loss if c.mesh is None else jax.lax.pmean(loss, DATA_AXIS), finite


def _train_epoch_program(params, frozen, opt_state, avg, train, perm, k_train, epoch, lr_scale, config):
    """`_train_epoch`, on every device of the configuration's mesh if it has one."""
    epoch_fn = _replicated(functools.partial(_train_epoch, config=config), config.mesh)
    return epoch_fn(params, frozen, opt_state, avg, train, perm, k_train, epoch, lr_scale)


def _validate(checked, frozen, val_chunks, k_val, config):
    """The validation loss of the weights `checked`: the batch loss over the validation split in
    equal chunks, averaged over `config.validation_draws` sets of keys (the same keys every
    epoch, so that stochastic losses compare like with like). With a mesh, each device takes
    an equal share of every chunk and the losses are averaged over the devices."""
    loss_of_params = _loss_of_params(config, frozen)
    n_chunks = _leading_size(val_chunks)
    val_keys = jax.random.split(k_val, config.validation_draws * n_chunks).reshape(config.validation_draws, n_chunks)
    if config.mesh is not None:
        shard, n_shards = _shard_index(config.mesh)
        val_chunks = jax.tree_util.tree_map(
            lambda a: a.reshape((n_chunks, n_shards, a.shape[1] // n_shards) + a.shape[2:])[:, shard], val_chunks)
        if config.mesh.size > 1:
            val_keys = jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, shard)))(val_keys)

    def one_draw(keys):
        return jnp.mean(jax.lax.map(lambda kb: loss_of_params(checked, kb[0], kb[1]), (keys, val_chunks)))

    loss = jnp.mean(jax.lax.map(one_draw, val_keys))
    return loss if config.mesh is None else jax.lax.pmean(loss, DATA_AXIS)


def _validate_program(checked, frozen, val_chunks, k_val, config):
    """`_validate`, on every device of the configuration's mesh if it has one."""
    return _replicated(functools.partial(_validate, config=config), config.mesh)(checked, frozen, val_chunks, k_val)


# The training and validation programs compile with `jaxhep.compilation`'s CPU options
# (compilation is a large part of a short fit on the CPU: about 1.8 s of a 9 s NPE run on the
# 2-core benchmark machine, and the options about halve it, for epochs that run a few percent
# slower: NPE 5x50 on two_moons, 67 instead of 62 ms per epoch on one core, which costs less than
# the compilation saves for fits of up to about 200 epochs).
def _jit(fun, options: dict[str, Any] | None, **kwargs):
    """`jax.jit`, compiling with the XLA `options` when there are any."""
    return jax.jit(fun, **kwargs) if options is None else jax.jit(fun, compiler_options=options, **kwargs)


@functools.cache
def _shared_programs(options: tuple | None):
    """The training and validation programs shared by every fit in the process that compiles with
    `options` (sorted (name, value) pairs): one compiled program per configuration and set of
    shapes, kept until exit."""
    options = None if options is None else dict(options)
    return (_jit(_train_epoch_program, options, static_argnames="config"),
            _jit(_validate_program, options, static_argnames="config"))


# Compile the validation program on a second thread beside the training program (see `fit`).
_DEFER_VALIDATION = True


def fit(
    key: PRNGKeyArray,
    model: PyTree,
    loss_fn: Callable[[PyTree, PRNGKeyArray, PyTree], Float[Array, ""]],
    data: PyTree,
    *,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-4,
    clip_norm: float | None = 5.0,
    batch_size: int = 200,
    max_epochs: int = 1000,
    validation_fraction: float = 0.1,
    patience: int = 20,
    validation_batch_size: int = 4096,
    progress: bool = True,
    drop_invalid: bool = True,
    filter_spec: Any = eqx.is_inexact_array,
    description: str = "training",
    ema_decay: float | None = None,
    validation_draws: int = 1,
    lr_decay_factor: float | None = None,
    lr_decay_patience: int = 10,
    weight_decay: float = 0.0,
    devices: None | str | int | Sequence[jax.Device] = None,
) -> tuple[PyTree, History]:
    """Train `model` by minibatch gradient descent with early stopping.

    Each epoch shuffles the training split and runs all its full minibatches inside one
    jit-compiled `lax.scan`; after each epoch the validation loss decides early stopping,
    and the state with the lowest validation loss is returned.

    The compiled programs (a training epoch, the validation loss) are shared between calls in one
    process that have equal settings, model structure and array shapes and the same loss
    function, when that is a plain function that does not close over variables (a module-level
    function; NPE, NPSE and FMPE use one): a second NPE fit of the same size skips the seconds
    of compilation. Other losses (closures, partials, callable objects) get programs of their
    own, released after the call.

    The validation program is compiled on a second thread while this one compiles the training
    program, and epochs that finish before it is ready are validated in order once it is; where
    a second core is free this hides its compilation. Only epochs that early stopping cannot
    have cut off (up to the best epoch so far plus `patience`) train ahead of their validation,
    so the results and the work done are those of validating after every epoch (when no epoch
    ever validates to a finite loss, which ends in an error, one epoch more may be trained). With the
    plateau schedule (`lr_decay_factor`), whose step size depends on each validation loss, every
    epoch waits for its validation instead.

    Arguments:
        key: PRNG key (split, validation split, shuffling, stochastic losses).
        model: an equinox module (or any pytree); its inexact arrays are trained.
        loss_fn: `loss_fn(model, key, batch) -> scalar`, the mean loss over a batch whose
            structure is that of `data`.
        data: pytree of arrays with a shared leading sample axis. Not modified.
        optimizer: an optax transformation; Adam at `learning_rate` by default (run on the
            parameters concatenated into one vector, which compiles faster; the updates are
            those of per-array Adam).
        learning_rate: Adam's step size when `optimizer` is None (a positive finite number).
        clip_norm: global gradient-norm clipping (None to switch off).
        batch_size: minibatch size (reduced to the training-set size if larger, rounded down to
            a multiple of the device count with `devices`).
        max_epochs: upper bound on epochs.
        validation_fraction: share of data held out for early stopping (0 trains all epochs).
        patience: epochs without validation improvement before stopping.
        validation_batch_size: largest chunk for evaluating the validation loss (equal chunks
            are used; fewer than one row per chunk may be left out to keep shapes static, and
            with `devices`, where each chunk is a multiple of the device count, fewer than that
            count per chunk).
        progress: show a progress bar.
        drop_invalid: drop rows with NaN/inf (with a warning) instead of raising.
        filter_spec: which leaves of `model` are trained (an `eqx.filter` spec).
        description: progress-bar label.
        ema_decay: if given (in [0, 1)), also keep an exponential moving average of the
            trained leaves, updated after every step; the validation loss, early stopping and
            the returned model then use the averaged weights. The decay at step k is
            min(ema_decay, (1 + k) / (10 + k)), so that the average forgets the initial weights
            within the first steps instead of after about 1 / (1 - ema_decay) of them.
            Averaging is the usual companion of the noisy regression losses of diffusion and
            flow-matching models.
        validation_draws: how many times the validation loss is evaluated per epoch, each with
            its own fixed keys, and averaged. For a stochastic loss (the random times and noise
            of diffusion and flow-matching models) this averages out the noise that early
            stopping would otherwise react to; a deterministic loss needs 1.
        lr_decay_factor: if given (in (0, 1)), multiply the step size by this factor whenever
            the validation loss has not improved for `lr_decay_patience` epochs in a row (the
            count restarts after each reduction), in the manner of PyTorch's ReduceLROnPlateau
            (which waits one epoch more and has an improvement threshold). The
            optimizer's updates are scaled, so this works with any optimizer whose update is
            proportional to its learning rate (Adam, SGD, ...). Needs a validation split.
        lr_decay_patience: epochs without improvement before each reduction.
        weight_decay: when `optimizer` is None and this is > 0 (finite), AdamW's decoupled weight decay
            (Loshchilov and Hutter 2019) instead of Adam.
        devices: data-parallel training. None (the default) trains on the default device. "all",
            an integer n (the first n devices of the default backend in this process) or a
            sequence of devices: each minibatch, and each validation chunk, is split into
            equal shares, one per device (so `batch_size` must be a multiple of the device
            count), the gradients are averaged over the devices after every step, and every
            device applies the same update. The updates equal those of one device up to float
            rounding for a deterministic loss; a stochastic loss draws each share's randomness
            with its own key (a single device draws as without `devices`). The validation loss
            covers the same rows as on one device when the validation split divides into the
            device count; otherwise up to count - 1 rows per chunk are left out, which for a
            small split can move the best epoch. The model is returned on the first of the devices. On the CPU,
            JAX has one device unless it is told otherwise before it first runs:
            `jaxhep.training.use_cpu_cores()` right after `import jax` makes one per core
            (NPE's 5x50 spline flow with 200-row minibatches: 0.86 instead of 1.31 ms per step
            on 2 cores). One process only: across hosts, use `jax.distributed` and your own loop.

    Returns:
        (trained model, History).

    Raises:
        ValueError: for inconsistent data, bad settings, or non-finite data when
            `drop_invalid` is False.
        RuntimeError: when no epoch gives usable weights (a loss that is NaN or inf from the
            first epoch on).
    """
    start = time.perf_counter()
    for name, value in (("batch_size", batch_size), ("max_epochs", max_epochs), ("patience", patience),
                        ("validation_draws", validation_draws), ("validation_batch_size", validation_batch_size)):
        check_positive_int(name, value)
    mesh = data_mesh(devices)
    n_shards = 1 if mesh is None else mesh.size
    if batch_size % n_shards:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {n_shards} devices each minibatch is "
                         "split over")
    check_ema_decay(ema_decay)
    check_lr_decay(lr_decay_factor, lr_decay_patience)
    check_clip_norm(clip_norm)
    check_weight_decay(weight_decay)
    if optimizer is None:
        # A negative step size ascends the loss (and early stopping then hid it by returning epoch 0).
        check_positive_finite("learning_rate", learning_rate)
    if weight_decay and optimizer is not None:
        raise ValueError("weight_decay applies to the default optimizer; pass optax.adamw(...) as optimizer instead")
    if drop_invalid:
        data, _ = drop_nonfinite(data)
    else:
        for leaf in jax.tree_util.tree_leaves(data):
            if not np.isfinite(np.asarray(leaf)).all():
                raise ValueError("data contains NaN or inf (pass drop_invalid=True to drop those rows)")
    # Typed keys inside: raw uint32 keys (jax.random.PRNGKey) split into arrays with a trailing axis.
    k_split, k_train, k_val = split_on_host(typed_key(key), 3)
    train, val = split_train_val(k_split, data, validation_fraction)
    if lr_decay_factor is not None and val is None:
        raise ValueError("lr_decay_factor needs a validation split (validation_fraction > 0) to detect plateaus")
    n_train = _leading_size(train)
    # Fewer rows than a minibatch: one minibatch of all of them (a multiple of the device count).
    batch_size = int(min(batch_size, n_train // n_shards * n_shards))
    if batch_size == 0:
        raise ValueError(f"{n_train} training rows cannot be split over {n_shards} devices")
    n_batches = n_train // batch_size

    optimizer = _build_optimizer(optimizer, learning_rate, clip_norm, float(weight_decay))

    params, static = eqx.partition(model, filter_spec)
    # Arrays that are not trained (e.g. integer masks) travel as arguments, so that the rest of
    # the model is hashable and equal models share compiled programs.
    frozen, static = eqx.partition(static, eqx.is_array)
    # Weak-typed leaves (e.g. from jnp.full(shape, 1.0)) come back strongly typed after the
    # first update, which would make the training program compile a second time.
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), params)
    # One compiled program instead of an eager zeros_like (one small compilation) per leaf shape.
    opt_state = jax.jit(optimizer.init)(params)

    val_chunks = None
    if val is not None:
        # Equal chunks of at most `validation_batch_size` rows, evaluated with the same batch
        # loss as training; at most n_chunks - 1 rows are left out so that shapes stay static.
        n_val = _leading_size(val)
        n_chunks = -(-n_val // int(validation_batch_size))
        # With several devices, chunks are a multiple of their count (up to n_shards - 1 more
        # rows per chunk are left out).
        chunk = n_val // n_chunks // n_shards * n_shards
        if chunk == 0:
            raise ValueError(f"{n_val} validation rows cannot be split over {n_shards} devices; raise "
                             "validation_fraction or train on fewer devices")
        # Cut on the host: on the device, the slice and reshape compile a small program each.
        val_chunks = jax.tree_util.tree_map(
            lambda a: jax.device_put(np.asarray(a)[: n_chunks * chunk].reshape((n_chunks, chunk) + a.shape[1:])), val)

    # The weights that are validated and returned: the trained ones, or their moving average
    # `avg` (None without averaging).
    avg = params if ema_decay is not None else None

    config = _EpochConfig(loss_fn, static, optimizer, n_batches, batch_size,
                          None if ema_decay is None else float(ema_decay), lr_decay_factor is not None, mesh)
    val_config = _ValidationConfig(loss_fn, static, int(validation_draws), mesh)
    # With several devices, the state and data are placed on all of them once; the model's
    # untrained arrays go back into the returned model as they came.
    returned_frozen = frozen
    if mesh is not None:
        everywhere = NamedSharding(mesh, PartitionSpec())
        params, frozen, opt_state, avg, train, val_chunks = jax.device_put(
            (params, frozen, opt_state, avg, train, val_chunks), everywhere)
    # The shared programs' caches keep their configurations alive for the whole process, so a
    # loss that may hold data (a closure, a partial, a bound method or other callable object), or
    # a configuration that cannot be hashed, gets programs of its own (new function objects),
    # released with this call.
    options = compilation.compiler_options()
    # Each program is a jitted function with the keyword arguments (its configuration) it is
    # called with.
    programs = None
    if isinstance(loss_fn, types.FunctionType) and loss_fn.__closure__ is None:
        try:
            hash((config, val_config))
            train_shared, validate_shared = _shared_programs(None if options is None else tuple(sorted(options.items())))
            programs = (train_shared, {"config": config}), (validate_shared, {"config": val_config})
        except TypeError:
            pass
    if programs is None:
        programs = ((_jit(functools.partial(_train_epoch_program, config=config), options), {}),
                    (_jit(functools.partial(_validate_program, config=val_config), options), {}))
    (train_jit, train_kw), (validate_jit, validate_kw) = programs

    def train_program(*args):
        return train_jit(*args, **train_kw)

    def validate(weights):
        return float(validate_jit(weights, frozen, val_chunks, k_val, **validate_kw))

    def compile_validation(weights):
        """Compile the validation program for weights shaped like `weights` (later calls find it
        in JAX's cache)."""
        validate_jit.lower(weights, frozen, val_chunks, k_val, **validate_kw).compile()

    train_hist, val_hist = [], []
    # best_epoch -1: no epoch has given usable weights yet (early stopping counts from there).
    best_params, best_val, best_epoch, since_best = params, np.inf, -1, 0
    stopped_early = False
    # The step-size factor of the plateau schedule, passed as an argument so that changing it
    # does not recompile the training program.
    lr_scale, since_decay, scales = 1.0, 0, []
    # Epochs trained but not yet validated, in order, with the weights to validate; the
    # validation program is compiled on `executor`, and `first` is done when it is.
    pending: list[tuple[int, PyTree]] = []
    defer = val is not None and lr_decay_factor is None and _DEFER_VALIDATION
    executor = ThreadPoolExecutor(max_workers=1) if defer else None
    first = None

    def validate_pending(wait: bool) -> bool:
        """Validate the pending epochs in order if the validation program is ready (or `wait`);
        True when early stopping ends training at one of them."""
        nonlocal best_val, best_params, best_epoch, since_best, since_decay, lr_scale, stopped_early
        if first is not None and not (wait or first.done()):
            return False
        if first is not None:
            first.result()  # raises what compiling raised
        while pending:
            epoch, weights = pending.pop(0)
            vl = validate(weights)
            val_hist.append(vl)
            if vl < best_val:
                best_val, best_params, best_epoch, since_best, since_decay = vl, weights, epoch, 0, 0
            else:
                since_best += 1
                since_decay += 1
                if lr_decay_factor is not None and since_decay >= lr_decay_patience:
                    lr_scale, since_decay = lr_scale * lr_decay_factor, 0
            bar.set_postfix(train=f"{train_hist[epoch]:.4f}", val=f"{vl:.4f}", best=f"{best_val:.4f}", refresh=False)
            if since_best >= patience:
                # No epoch after it has been trained (see the loop below), unless no epoch has
                # given usable weights at all, which ends in an error after the loop.
                assert best_epoch < 0 or (not pending and len(train_hist) == epoch + 1)
                stopped_early = True
                return True
        return False

    shuffle = numpy_rng(k_train)
    bar = tqdm(total=max_epochs, desc=description, disable=not progress, leave=False)
    try:
        if defer:
            # Trace the training program here, then compile the validation program on the
            # second thread while this one compiles the training program (XLA releases the
            # GIL): where a second core is free, the validation program costs no time. Both
            # land in JAX's caches, where the calls below find them.
            perm_shape = jax.ShapeDtypeStruct((n_batches * batch_size,), np.int32,
                                              sharding=None if mesh is None else everywhere)
            lowered = train_jit.lower(params, frozen, opt_state, avg, train, perm_shape, k_train, np.int32(0),
                                      np.float32(1.0), **train_kw)
            first = executor.submit(compile_validation, params if avg is None else avg)
            lowered.compile()
        for epoch in range(max_epochs):
            # Train ahead of validation only while the epoch is needed whatever the pending
            # validation losses are: early stopping cannot end training before best + patience
            # (epoch 0 counts as best until validated: only a loss that is not finite fails to
            # improve on none).
            if pending and epoch > max(best_epoch, 0) + patience and validate_pending(wait=True):
                break
            scales.append(lr_scale)
            # The shuffle on the host: in the program, jax.random.permutation's sorts cost
            # about 3 ms of a 70 ms epoch (9000 rows, 2-core CPU); numpy's takes about 0.2 ms.
            perm = shuffle.permutation(n_train)[: n_batches * batch_size].astype(np.int32)
            if mesh is not None:
                perm = jax.device_put(perm, everywhere)
            params, opt_state, avg, tl, finite = train_program(params, frozen, opt_state, avg, train, perm, k_train,
                                                               np.int32(epoch), np.float32(lr_scale))
            current = params if avg is None else avg
            tl = float(tl)
            train_hist.append(tl)
            bar.update(1)
            if not (np.isfinite(tl) and bool(finite)):
                # Unless an earlier epoch, still waiting for validation, stops training first.
                if not validate_pending(wait=True):
                    if best_epoch >= 0:
                        what = f"training loss became {tl}" if not np.isfinite(tl) else "weights became NaN or inf"
                        warn_caller(f"{what} at epoch {epoch}; keeping the best earlier state (epoch {best_epoch})")
                    stopped_early = True
                    if val is not None:
                        val_hist.append(np.nan)  # not validated: one entry per epoch all the same
                break
            if val is None:
                best_params, best_epoch = current, epoch
                bar.set_postfix(train=f"{tl:.4f}", refresh=False)
                continue
            pending.append((epoch, current))
            if validate_pending(wait=not defer):
                break
        else:
            validate_pending(wait=True)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    if best_epoch < 0:
        what = "training" if val is None or not np.isfinite(train_hist[-1]) else "validation"
        cause = f"the {what} loss was not finite"
        if np.isfinite(train_hist[-1]) and not bool(finite):
            cause = "the weights became NaN or inf (a gradient that was not finite)"

        def head(hist):
            return f"{np.round(hist[:5], 4).tolist()}{' ...' if len(hist) > 5 else ''}"

        raise RuntimeError(
            f"no epoch gave usable weights: {cause} (training losses {head(train_hist)}, "
            f"validation losses {head(val_hist)}); check the data (e.g. values on a bounded prior's edge) and "
            f"the learning rate")
    history = History(
        # device_put of numpy arrays: jnp.asarray of a list compiles a conversion.
        train_loss=jax.device_put(np.asarray(train_hist, np.float32)),
        val_loss=jax.device_put(np.asarray(val_hist, np.float32)),
        best_epoch=int(best_epoch),
        epochs=len(train_hist),
        stopped_early=bool(stopped_early),
        lr_scale=jax.device_put(np.asarray(scales, np.float32)),
        seconds=time.perf_counter() - start,
    )
    if mesh is not None:
        best_params = jax.device_put(best_params, mesh.devices.flat[0])
    return eqx.combine(best_params, returned_frozen, static), history
