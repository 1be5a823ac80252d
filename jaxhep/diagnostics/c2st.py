"""Classifier two-sample test (C2ST) as defined in the sbibm benchmark.

The definition follows Lueckmann et al., "Benchmarking Simulation-Based Inference" (AISTATS
2021): both sample sets are z-scored with the mean and standard deviation of the first, a
ReLU network with two hidden layers of `10 * d` units is trained to tell them apart, and the
score is the mean held-out accuracy of a 5-fold cross-validation. 0.5 means indistinguishable
(for sets of equal size), 1.0 means perfectly separable.

The classifier follows the training recipe of scikit-learn's `MLPClassifier` with its default
settings, as sbibm uses it (with `max_iter=10000`): Glorot-uniform initialisation, Adam at step
size 1e-3, shuffled minibatches of 200, an L2 penalty `alpha / 2 * ||W||^2 / batch size` on the
weights, and a stop once the epoch loss has failed to improve by more than `tol` for more than
`n_iter_no_change` consecutive epochs. The folds are stratified (sbibm itself uses plain
shuffled K-fold splits; with equal set sizes the two differ only in fold composition). Here
all folds are trained at once with `jax.vmap`, each epoch is a `lax.scan` over minibatches and
the epochs run in a `lax.while_loop`, all inside one jit-compiled call.

Known differences from scikit-learn: random streams differ (so individual scores differ by
run-to-run noise, not systematically), and optax's Adam adds its epsilon after bias
correction rather than before.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.compilation import jit

__all__ = ["c2st", "c2st_scores"]


def _as_key(key) -> PRNGKeyArray:
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key) or an int seed, got {type(key).__name__}")
    return key


def _check_samples(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    Y = np.asarray(Y)
    for name, a in (("X", X), ("Y", Y)):
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if X.ndim == 1:
        X = X[:, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(
            f"X and Y must have shape (n, d) (or (n,) for d = 1); got X {X.shape} and Y {Y.shape}")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X and Y must have the same dimension d; got X with d = {X.shape[1]} and Y with d = {Y.shape[1]}")
    if X.shape[1] == 0:
        raise ValueError("X and Y have dimension d = 0; nothing to compare")
    for name, a in (("X", X), ("Y", Y)):
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(
                f"{name} must be finite, but {int(bad.any(axis=1).sum())} of its {a.shape[0]} rows "
                "contain NaN or inf")
    return X, Y


class _Classifier(eqx.Module):
    """ReLU network with two hidden layers and one logit output, applied to a batch of rows."""

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]

    def __init__(self, key: PRNGKeyArray, d: int, width: int):
        sizes = [d, width, width, 1]
        shapes = [(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        # One uniform draw for all parameters keeps the compiled program small; each layer's
        # share is scaled to scikit-learn's Glorot bound sqrt(6 / (fan_in + fan_out)) and used
        # for its weights and biases alike.
        counts = [a * b + b for a, b in shapes]
        u = jax.random.uniform(key, (sum(counts),), jnp.float32, minval=-1.0, maxval=1.0)
        weights, biases, start = [], [], 0
        for (fan_in, fan_out), count in zip(shapes, counts):
            bound = float(np.sqrt(6.0 / (fan_in + fan_out)))  # a Python float: float32 weights under x64 too
            chunk = bound * u[start:start + count]
            weights.append(chunk[: fan_in * fan_out].reshape(fan_in, fan_out))
            biases.append(chunk[fan_in * fan_out:])
            start += count
        self.weights = tuple(weights)
        self.biases = tuple(biases)

    def __call__(self, x: Float[Array, "b d"]) -> Float[Array, " b"]:
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = jax.nn.relu(h @ w + b)
        return (h @ self.weights[-1] + self.biases[-1])[:, 0]

    def weight_sq_norm(self) -> Array:
        return sum(jnp.sum(w**2) for w in self.weights)


def _reshuffle(key: PRNGKeyArray, perm: Array, mask: Array) -> Array:
    """Shuffle `perm` (a permutation of the row indices), moving rows where `mask` is False last.

    XLA's CPU sort of a single uint32 operand is several times faster than an argsort, so each
    sort key packs, from the top bit down: "not a training row", random bits, and the current
    position. Rows whose random bits tie keep their current relative order, which is itself
    the random order of the previous epoch, so the shuffles compose into a well-mixed sequence.
    """
    n = perm.shape[0]
    pos_bits = max(1, int(np.ceil(np.log2(n))))
    rand_bits = 31 - pos_bits
    if rand_bits < 8:
        # Too many rows to pack; fall back to the slower exact argsort.
        u = jax.random.uniform(key, (n,))
        return perm[jnp.argsort(jnp.where(mask[perm], u, 2.0))]
    r = jax.random.bits(key, (n,)) >> (32 - rand_bits)
    test = (~mask[perm]).astype(jnp.uint32)
    keys = (test << 31) | (r << pos_bits) | jnp.arange(n, dtype=jnp.uint32)
    new_pos = jnp.sort(keys) & jnp.uint32((1 << pos_bits) - 1)
    return perm[new_pos]


@functools.partial(
    jit,
    static_argnames=("n_folds", "n_train_max", "width", "batch_size", "max_iter", "n_iter_no_change"),
)
def _c2st_folds(key, data, labels, fold_id, *, n_folds, n_train_max, width, batch_size, max_iter,
                n_iter_no_change, learning_rate, alpha, tol):
    n, d = data.shape
    # The settings in the data's dtype (float32): under x64 they would come in as float64 and
    # change the type of the training loop's carry.
    learning_rate, alpha, tol = (jnp.asarray(v, data.dtype) for v in (learning_rate, alpha, tol))
    folds = jnp.arange(n_folds)
    train_mask = fold_id[None, :] != folds[:, None]  # (n_folds, n)
    n_train = jnp.sum(train_mask, axis=1)  # (n_folds,)
    # Every fold runs the same number of minibatch slots (enough for the largest training set);
    # slots past a fold's own training-set size carry zero weight, so all folds share one scan.
    n_batches = -(-n_train_max // batch_size)
    optimizer = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)

    def batch_loss(model, xb, yb, wb):
        count = jnp.maximum(jnp.sum(wb), 1.0)
        nll = jnp.sum(wb * optax.sigmoid_binary_cross_entropy(model(xb), yb)) / count
        return nll + 0.5 * alpha * model.weight_sq_norm() / count

    def train_one(k, mask, n_tr):
        k_init, k_perm, k_loop = jax.random.split(k, 3)
        params = _Classifier(k_init, d, width)
        opt_state = optimizer.init(params)

        def epoch(carry):
            params, opt_state, perm, it, best, stall = carry
            perm = _reshuffle(jax.random.fold_in(k_loop, it), perm, mask)
            order = perm
            pad = n_batches * batch_size - n
            if pad > 0:
                order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
            order = order[: n_batches * batch_size]
            order = order.reshape(n_batches, batch_size)
            weights = (jnp.arange(n_batches * batch_size) < n_tr).astype(data.dtype)
            weights = weights.reshape(n_batches, batch_size)

            def step(inner, inp):
                params, opt_state = inner
                idx, wb = inp
                loss, grads = jax.value_and_grad(batch_loss)(params, data[idx], labels[idx], wb)
                updates, new_state = optimizer.update(grads, opt_state, params)
                new_params = optax.apply_updates(params, updates)
                has_rows = jnp.sum(wb) > 0
                params, opt_state = jax.tree_util.tree_map(
                    lambda a, b: jnp.where(has_rows, a, b), (new_params, new_state), (params, opt_state))
                return (params, opt_state), loss * jnp.sum(wb)

            (params, opt_state), weighted = jax.lax.scan(step, (params, opt_state), (order, weights))
            epoch_loss = jnp.sum(weighted) / n_tr
            # scikit-learn's rule: a non-improvement is a loss above (best - tol).
            stall = jnp.where(epoch_loss > best - tol, stall + 1, 0)
            best = jnp.minimum(best, epoch_loss)
            return params, opt_state, perm, it + 1, best, stall

        def keep_going(carry):
            *_, it, _, stall = carry
            return (it < max_iter) & (stall <= n_iter_no_change)

        # An exact random permutation to start from, so that tie-breaking in `_reshuffle`
        # never falls back on the X-then-Y order of the rows.
        perm0 = jax.random.permutation(k_perm, n).astype(jnp.uint32)
        init = (params, opt_state, perm0, jnp.asarray(0), jnp.asarray(jnp.inf, data.dtype), jnp.asarray(0))
        params, _, _, iters, _, _ = jax.lax.while_loop(keep_going, epoch, init)
        return params, iters

    params, iters = jax.vmap(train_one)(jax.random.split(key, n_folds), train_mask, n_train)

    def accuracy(model, mask):
        pred = (model(data) > 0).astype(labels.dtype)
        test = ~mask
        return jnp.sum(jnp.where(test, pred == labels, False)) / jnp.sum(test)

    return jax.vmap(accuracy)(params, train_mask), iters


def c2st_scores(
    key: PRNGKeyArray | int,
    X: Float[ArrayLike, "n d"],
    Y: Float[ArrayLike, "m d"],
    *,
    n_folds: int = 5,
    z_score: bool = True,
    hidden_factor: int = 10,
    learning_rate: float = 1e-3,
    batch_size: int = 200,
    alpha: float = 1e-4,
    tol: float = 1e-4,
    n_iter_no_change: int = 10,
    max_iter: int = 10000,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out accuracy of each cross-validation fold of the C2ST classifier.

    Arguments:
        key: PRNG key (or an int seed) for the folds, initialisation and shuffling.
        X: first sample set, shape (n, d) (or (n,) for d = 1). Not modified.
        Y: second sample set, shape (m, d). Not modified.
        n_folds: number of stratified cross-validation folds.
        z_score: standardise both sets with X's mean and standard deviation (dimensions where X
            is constant are only centred).
        hidden_factor: each of the two hidden layers has `hidden_factor * d` units.
        learning_rate: Adam step size.
        batch_size: minibatch size (reduced to the training-set size if larger).
        alpha: L2 penalty on the weights, scaled as in scikit-learn.
        tol: smallest epoch-loss improvement that counts as progress.
        n_iter_no_change: training stops after more than this many epochs without progress.
        max_iter: upper bound on epochs.

    Returns:
        (accuracies, epochs): the held-out accuracy of each fold, shape (n_folds,), and the
        number of epochs each fold trained for.

    Raises:
        ValueError: for sets of different dimension, non-finite values, too few samples for the
            folds, or invalid settings.
        TypeError: for a key that is neither a PRNG key nor an int, or non-numeric data.
    """
    key = _as_key(key)
    X, Y = _check_samples(X, Y)
    for name, value in (("n_folds", n_folds), ("hidden_factor", hidden_factor), ("batch_size", batch_size),
                        ("max_iter", max_iter), ("n_iter_no_change", n_iter_no_change)):
        check_positive_int(name, value)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if min(len(X), len(Y)) < n_folds:
        raise ValueError(
            f"each set needs at least n_folds = {n_folds} samples for stratified folds; "
            f"got {len(X)} in X and {len(Y)} in Y")
    for name, value in (("learning_rate", learning_rate), ("alpha", alpha), ("tol", tol)):
        if not np.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
            raise ValueError(f"{name} must be a finite {'positive' if name == 'learning_rate' else 'non-negative'} "
                             f"number, got {value!r}")

    # Standardised in float64, then cast: a float32 copy first would merge the values of data
    # with a large offset (1e5 + 1e-3 * v keeps one float32 value) before z-scoring separates them.
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    if z_score:
        mean = X.mean(axis=0)
        std = X.std(axis=0, ddof=1) if len(X) > 1 else np.ones(X.shape[1])
        std = np.where(std > 0, std, 1.0)
        X = (X - mean) / std
        Y = (Y - mean) / std
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    data = jnp.asarray(np.concatenate([X, Y]))
    labels = jnp.concatenate([jnp.zeros(len(X)), jnp.ones(len(Y))]).astype(jnp.float32)

    # Stratified folds: each class is shuffled on its own and dealt round-robin into the folds,
    # so every fold holds the two classes in (almost exactly) the overall proportion.
    k_fold_x, k_fold_y, k_train = jax.random.split(key, 3)
    fold_x = jnp.zeros(len(X), jnp.int32).at[jax.random.permutation(k_fold_x, len(X))].set(
        jnp.arange(len(X), dtype=jnp.int32) % n_folds)
    fold_y = jnp.zeros(len(Y), jnp.int32).at[jax.random.permutation(k_fold_y, len(Y))].set(
        jnp.arange(len(Y), dtype=jnp.int32) % n_folds)
    fold_id = jnp.concatenate([fold_x, fold_y])

    n_train_min = len(data) - -(-len(X) // n_folds) - -(-len(Y) // n_folds)
    n_train_max = len(data) - len(X) // n_folds - len(Y) // n_folds
    accs, iters = _c2st_folds(
        k_train, data, labels, fold_id, n_folds=int(n_folds), n_train_max=int(n_train_max), width=int(hidden_factor * X.shape[1]),
        batch_size=int(min(batch_size, n_train_min)), max_iter=int(max_iter),
        n_iter_no_change=int(n_iter_no_change), learning_rate=float(learning_rate), alpha=float(alpha),
        tol=float(tol))
    return np.asarray(accs), np.asarray(iters)


def c2st(
    key: PRNGKeyArray | int,
    X: Float[ArrayLike, "n d"],
    Y: Float[ArrayLike, "m d"],
    *,
    n_folds: int = 5,
    z_score: bool = True,
    hidden_factor: int = 10,
    learning_rate: float = 1e-3,
    batch_size: int = 200,
    alpha: float = 1e-4,
    tol: float = 1e-4,
    n_iter_no_change: int = 10,
    max_iter: int = 10000,
) -> float:
    """Classifier two-sample test: mean held-out accuracy of a classifier telling X from Y.

    0.5 means the classifier cannot tell the sets apart (for sets of equal size; with n and m
    samples chance is max(n, m) / (n + m), as in sbibm); 1.0 means it separates them perfectly.
    The definition is sbibm's (Lueckmann et al. 2021); see the module docstring for the recipe.

    Arguments:
        key: PRNG key (or an int seed) for the folds, initialisation and shuffling.
        X: first sample set, shape (n, d) (or (n,) for d = 1), e.g. reference posterior samples.
            Not modified.
        Y: second sample set, shape (m, d), e.g. samples from an approximation. Not modified.
        n_folds: number of stratified cross-validation folds.
        z_score: standardise both sets with X's mean and standard deviation.
        hidden_factor: each of the two hidden layers has `hidden_factor * d` units.
        learning_rate: Adam step size.
        batch_size: minibatch size.
        alpha: L2 penalty on the weights, scaled as in scikit-learn.
        tol: smallest epoch-loss improvement that counts as progress.
        n_iter_no_change: training stops after more than this many epochs without progress.
        max_iter: upper bound on epochs.

    Returns:
        The mean held-out accuracy over the folds, a float in [0, 1].

    Raises:
        ValueError: for sets of different dimension, non-finite values, too few samples for the
            folds, or invalid settings.
        TypeError: for a key that is neither a PRNG key nor an int, or non-numeric data.
    """
    accs, _ = c2st_scores(
        key, X, Y, n_folds=n_folds, z_score=z_score, hidden_factor=hidden_factor,
        learning_rate=learning_rate, batch_size=batch_size, alpha=alpha, tol=tol,
        n_iter_no_change=n_iter_no_change, max_iter=max_iter)
    return float(np.mean(accs))
