"""Training PINNs: Adam with a schedule, gradient-norm loss balancing, causal weighting, RAD
resampling, then optionally L-BFGS with a zoom line search; float64 by default.

Iterative in the house style: `PINNSolver.init(key, model) -> TrainState` and
`PINNSolver.step(key, state) -> (state, info)`; `solve` is the jit-compiled entry point that runs
many steps inside `lax.scan` chunks with a progress bar, a wall-time budget and a loss history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

# Each solve compiles its programs afresh, and compilation is most of a short run: they compile
# with jaxhep's CPU options.
from jaxhep.compilation import filter_jit
from jaxhep.theory.pinn.domain import SAMPLERS, rad_resample, unit_sample
from jaxhep.theory.pinn.precision import cast_floats, float64 as _float64
from jaxhep.theory.pinn.problem import Observations, PDEProblem, PINNModel


class TrainConfig(eqx.Module):
    """Settings of a PINN training run (all static).

    Arguments:
        steps: Adam steps.
        batch: residual collocation points per step.
        sampler: "uniform", "lhs", "sobol" (randomly shifted scrambled Sobol set) or "rad"
            (residual-based adaptive resampling every `rad_every` steps).
        learning_rate: peak Adam learning rate.
        warmup: linear warm-up steps.
        decay_steps, decay_rate: exponential decay of the learning rate after warm-up.
        clip_norm: global gradient-norm clip (None: none).
        balance: loss balancing by gradient norms (Wang et al. 2023).
        balance_every: steps between weight updates.
        balance_alpha: moving-average factor of the weights.
        causal: causal weighting of the residual over time (needs a time coordinate).
        causal_chunks: number of time chunks.
        causal_eps: causality parameter epsilon.
        rad_every, rad_candidates, rad_k, rad_c: RAD settings.
        lbfgs_steps: L-BFGS iterations after Adam (0: none).
        lbfgs_points: fixed residual points for L-BFGS.
        lbfgs_rad_every: when > 0, the L-BFGS residual points are chosen by RAD (from
            `rad_candidates` uniform candidates, using the current model's residual) and chosen
            again every this many iterations, restarting the L-BFGS memory; 0 keeps one
            Latin-hypercube set. RAD points follow sharp features such as Burgers' shock, which a
            fixed uniform set resolves poorly.
        lbfgs_memory: L-BFGS history size.
        chunk: steps per compiled `lax.scan` call (one progress/history entry each).
        max_seconds: wall-time budget of the Adam phase (None: unlimited), counted after the first
            (compiling) chunk.
        lbfgs_max_seconds: wall-time budget of the L-BFGS phase, counted likewise.
        float64: train in float64 (locally, see `precision.float64`).
        adam_float32: with `float64`, run the Adam phase in float32 and only L-BFGS in float64.
            Adam's noisy steps do not need the precision, and on a CPU a float32 step costs about
            a third of a float64 one, so the same wall-time budget buys about three times the
            steps; L-BFGS, whose line search works at the round-off level near convergence,
            keeps float64.
        progress: show a progress bar.
    """

    steps: int = eqx.field(static=True, default=5000)
    batch: int = eqx.field(static=True, default=1024)
    sampler: str = eqx.field(static=True, default="uniform")
    learning_rate: float = eqx.field(static=True, default=1e-3)
    warmup: int = eqx.field(static=True, default=500)
    decay_steps: int = eqx.field(static=True, default=2000)
    decay_rate: float = eqx.field(static=True, default=0.9)
    clip_norm: float | None = eqx.field(static=True, default=None)
    balance: bool = eqx.field(static=True, default=True)
    balance_every: int = eqx.field(static=True, default=500)
    balance_alpha: float = eqx.field(static=True, default=0.9)
    causal: bool = eqx.field(static=True, default=False)
    causal_chunks: int = eqx.field(static=True, default=16)
    causal_eps: float = eqx.field(static=True, default=1.0)
    rad_every: int = eqx.field(static=True, default=1000)
    rad_candidates: int = eqx.field(static=True, default=8192)
    rad_k: float = eqx.field(static=True, default=1.0)
    rad_c: float = eqx.field(static=True, default=1.0)
    lbfgs_steps: int = eqx.field(static=True, default=0)
    lbfgs_points: int = eqx.field(static=True, default=4096)
    lbfgs_memory: int = eqx.field(static=True, default=50)
    lbfgs_rad_every: int = eqx.field(static=True, default=0)
    chunk: int = eqx.field(static=True, default=100)
    max_seconds: float | None = eqx.field(static=True, default=None)
    lbfgs_max_seconds: float | None = eqx.field(static=True, default=None)
    float64: bool = eqx.field(static=True, default=True)
    adam_float32: bool = eqx.field(static=True, default=False)
    progress: bool = eqx.field(static=True, default=True)


class TrainState(NamedTuple):
    """Immutable training state: model, optimizer state, loss weights, step, point pool."""

    model: PINNModel
    opt_state: Any
    weights: Float[Array, " terms"]
    step: Array
    pool: Float[Array, "n d"]


class StepInfo(NamedTuple):
    """Per-step information: total loss, loss terms, weights, smallest causal weight."""

    loss: Array
    terms: Array
    weights: Array
    causal_min: Array


class History(eqx.Module):
    """Loss history, one entry per recorded chunk.

    Attributes:
        step: cumulative optimizer step at the entry (Adam steps, then L-BFGS iterations on top).
        phase: 0 for Adam, 1 for L-BFGS.
        loss: weighted total loss.
        terms: unweighted loss terms (entries, terms), named by `term_names`.
        weights: loss weights (entries, terms).
        error: relative L2 error on the monitoring points (NaN without them).
        seconds: elapsed wall time, compilation included.
        compile_seconds: wall time of the first (compiling) chunk of each phase; the `max_seconds`
            budgets count from the end of those chunks.
        term_names: names of the loss terms.
    """

    step: np.ndarray
    phase: np.ndarray
    loss: np.ndarray
    terms: np.ndarray
    weights: np.ndarray
    error: np.ndarray
    seconds: np.ndarray
    compile_seconds: float = eqx.field(static=True)
    term_names: tuple[str, ...] = eqx.field(static=True)


class PINNSolver(eqx.Module):
    """A PINN training algorithm for one problem (see `TrainConfig` for the techniques).

    Arguments:
        problem: the PDE problem.
        config: the training settings.

    Raises:
        ValueError: for inconsistent settings (e.g. causal weighting without a time coordinate).
    """

    problem: PDEProblem
    config: TrainConfig

    def __init__(self, problem: PDEProblem, config: TrainConfig = TrainConfig()):
        c = config
        if c.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {c.sampler!r}")
        if c.causal and problem.domain.time_dim is None:
            raise ValueError("causal weighting needs a time coordinate; the problem's domain has time_dim=None")
        for name in ("steps", "lbfgs_steps", "lbfgs_rad_every"):
            if getattr(c, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(c, name)}")
        for name in ("batch", "chunk", "balance_every", "rad_every", "lbfgs_points", "causal_chunks"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
        # After the checks above, which keep causal_chunks from being 0 here.
        if c.causal and c.batch % c.causal_chunks:
            raise ValueError(f"batch ({c.batch}) must be a multiple of causal_chunks ({c.causal_chunks})")
        self.problem, self.config = problem, config

    # ---- the pieces -------------------------------------------------------------------------
    def optimizer(self) -> optax.GradientTransformation:
        """Adam with linear warm-up and exponential decay (optionally clipped)."""
        c = self.config
        schedule = optax.warmup_exponential_decay_schedule(
            0.0, c.learning_rate, max(c.warmup, 1), c.decay_steps, c.decay_rate)
        adam = optax.adam(schedule)
        return optax.chain(optax.clip_by_global_norm(c.clip_norm), adam) if c.clip_norm else adam

    def sample_points(self, key: PRNGKeyArray, pool: Array, n: int | None = None) -> dict[str, Array]:
        """Residual and condition points for one step (residual points sorted in time when causal)."""
        c, box = self.config, self.problem.domain
        n = c.batch if n is None else n
        kr, *kc = jax.random.split(key, 1 + len(self.problem.conditions))
        if c.sampler == "sobol":
            shift = jax.random.uniform(kr, (1, box.dim), pool.dtype)
            res = box.scale(jnp.mod(pool + shift, 1.0))
        elif c.sampler == "rad":
            res = pool
        else:
            res = box.scale(unit_sample(kr, n, box.dim, c.sampler))
        if c.causal:
            res = res[jnp.argsort(res[:, box.time_dim])]
        pts = {"res": res}
        method = "lhs" if c.sampler in ("lhs", "sobol") else "uniform"
        for k, cond in zip(kc, self.problem.conditions):
            pts[cond.name] = cond.sample(k, box, method)
        return pts

    def loss_terms(self, model: PINNModel, pts: dict[str, Array]) -> tuple[Array, Array]:
        """Unweighted loss terms (residual first) and the smallest causal weight (1 without causality)."""
        c, prob = self.config, self.problem
        r = prob.residuals(model, pts["res"])
        r2 = r**2 if r.ndim == 1 else jnp.sum(r**2, axis=-1)
        if c.causal:
            per_chunk = jnp.mean(r2.reshape(c.causal_chunks, -1), axis=1)
            before = jnp.cumsum(per_chunk) - per_chunk
            w = jax.lax.stop_gradient(jnp.exp(-c.causal_eps * before))
            res_loss = jnp.mean(w * per_chunk)
            wmin = w[-1]
        else:
            res_loss = jnp.mean(r2)
            wmin = jnp.ones((), r2.dtype)
        u = prob.solution(model)
        terms = [res_loss] + [cond.loss(u, pts[cond.name], prob.domain) for cond in prob.conditions]
        return jnp.stack(terms), wmin

    def balanced_weights(self, model: PINNModel, pts: dict[str, Array], weights: Array) -> Array:
        """Moving-average update of the weights to lambda_i = sum_j |grad L_j| / |grad L_i|."""
        params, static = eqx.partition(model, eqx.is_inexact_array)
        jac = jax.jacrev(lambda p: self.loss_terms(eqx.combine(p, static), pts)[0])(params)
        sq = sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1) for leaf in jax.tree_util.tree_leaves(jac))
        norms = jnp.sqrt(sq) + 1e-12
        target = jnp.sum(norms) / norms
        a = self.config.balance_alpha
        return jax.lax.stop_gradient(a * weights + (1.0 - a) * target)

    def _rad_pool(self, key, model, n: int | None = None):
        """n (default: the batch size) points chosen by RAD among `rad_candidates` uniform ones."""
        c, box = self.config, self.problem.domain
        kc, kd = jax.random.split(key)
        cand = box.scale(unit_sample(kc, c.rad_candidates, box.dim, "uniform"))
        r = self.problem.residuals(model, cand)
        r = jnp.abs(r) if r.ndim == 1 else jnp.linalg.norm(r, axis=-1)
        return rad_resample(kd, cand, jax.lax.stop_gradient(r), c.batch if n is None else n, c.rad_k, c.rad_c)

    # ---- init / step ------------------------------------------------------------------------
    def init(self, key: PRNGKeyArray, model: PINNModel) -> TrainState:
        """Initial state: optimizer state, unit weights, the initial point pool."""
        c, box = self.config, self.problem.domain
        params = eqx.filter(model, eqx.is_inexact_array)
        dtype = jnp.zeros(()).dtype
        if c.sampler == "sobol":
            pool = unit_sample(key, c.batch, box.dim, "sobol")
        elif c.sampler == "rad":
            pool = box.scale(unit_sample(key, c.batch, box.dim, "uniform"))
        else:
            pool = jnp.zeros((1, box.dim), dtype)
        weights = jnp.ones(len(self.problem.term_names), dtype)
        return TrainState(model, self.optimizer().init(params), weights, jnp.zeros((), jnp.int32), pool)

    def step(self, key: PRNGKeyArray, state: TrainState) -> tuple[TrainState, StepInfo]:
        """One Adam step on freshly drawn points (weights and RAD pool refreshed on schedule)."""
        c = self.config
        kp, kr = jax.random.split(key)
        model = state.model
        pool = state.pool
        if c.sampler == "rad":
            pool = jax.lax.cond((state.step % c.rad_every == 0) & (state.step > 0),
                                lambda: self._rad_pool(kr, model), lambda: pool)
        pts = self.sample_points(kp, pool)
        weights = state.weights
        if c.balance:
            weights = jax.lax.cond(state.step % c.balance_every == 0,
                                   lambda: self.balanced_weights(model, pts, weights), lambda: weights)
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def total(p):
            terms, wmin = self.loss_terms(eqx.combine(p, static), pts)
            return jnp.dot(weights, terms), (terms, wmin)

        (loss, (terms, wmin)), grads = jax.value_and_grad(total, has_aux=True)(params)
        updates, opt_state = self.optimizer().update(grads, state.opt_state, params)
        model = eqx.combine(optax.apply_updates(params, updates), static)
        new = TrainState(model, opt_state, weights, state.step + 1, pool)
        return new, StepInfo(loss, terms, weights, wmin)


def relative_l2(pred: Array, ref: Array) -> Array:
    """Relative L2 error ||pred - ref|| / ||ref|| of arrays of one shape (ValueError otherwise:
    (n,) against (n, 1) would broadcast to (n, n))."""
    pred, ref = jnp.asarray(pred), jnp.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"relative_l2 needs arrays of one shape, got {pred.shape} and {ref.shape}")
    return jnp.linalg.norm((pred - ref).ravel()) / jnp.linalg.norm(ref.ravel())


def solve(key: PRNGKeyArray, problem: PDEProblem, net: eqx.Module | PINNModel, config: TrainConfig = TrainConfig(),
          *, eval_points: Array | None = None, eval_values: Array | None = None,
          callback: Callable | None = None) -> tuple[PINNModel, History]:
    """Train a PINN: Adam (with the configured techniques), then optional L-BFGS.

    Arguments:
        key: PRNG key.
        problem: the PDE problem.
        net: a network (wrapped with the problem's unknown coefficients) or a `PINNModel`.
        config: training settings.
        eval_points, eval_values: optional points and reference values for monitoring the
            relative L2 error in the history.
        callback: optional function(phase, step, model) called after every chunk.

    Returns:
        (trained model, history). The model's arrays are float64 when `config.float64`; evaluate
        it inside `precision.float64()` to keep that precision.

    Raises:
        ValueError: for bad settings or monitoring arrays of mismatched length.
    """
    if (eval_points is None) != (eval_values is None):
        raise ValueError("give both eval_points and eval_values, or neither")
    if eval_points is not None and len(eval_points) != len(eval_values):
        raise ValueError(f"eval_points ({len(eval_points)}) and eval_values ({len(eval_values)}) differ in length")
    with _float64(config.float64):
        return _solve(key, problem, net, config, eval_points, eval_values, callback)


def _solve(key, problem, net, config, eval_points, eval_values, callback):
    c = config
    solver = PINNSolver(problem, c)
    dtype = jnp.zeros(()).dtype
    model = net if isinstance(net, PINNModel) else problem.init_model(net)
    model = cast_floats(model, dtype)
    if eval_points is not None:
        ep, ev = jnp.asarray(eval_points, dtype), jnp.asarray(eval_values, dtype)
        # Reference values in the layout of the predictions (a scalar solution's (n, 1) column
        # as (n,)); a size that does not fit is an error rather than a broadcast.
        shape = jax.eval_shape(lambda m: problem.predict(m, ep), model).shape
        if ev.size != math.prod(shape):
            raise ValueError(f"eval_values has shape {ev.shape}, but the model predicts shape {shape} at eval_points")
        ev = ev.reshape(shape)
        err_fn = filter_jit(lambda m: relative_l2(problem.predict(m, ep), ev))
    else:
        err_fn = None

    records = {k: [] for k in ("step", "phase", "loss", "terms", "weights", "error", "seconds")}
    t0 = time.perf_counter()

    def record(step, phase, loss, terms, weights, m):
        records["step"].append(step)
        records["phase"].append(phase)
        records["loss"].append(float(loss))
        records["terms"].append(np.asarray(terms, float))
        records["weights"].append(np.asarray(weights, float))
        if err_fn is None:
            records["error"].append(np.nan)
        else:
            # In the training precision, also when the Adam phase runs in float32.
            with _float64(c.float64):
                records["error"].append(float(err_fn(cast_floats(m, dtype))))
        records["seconds"].append(time.perf_counter() - t0)
        if callback is not None:
            callback(phase, step, m)
        return records["error"][-1]

    kinit, kadam, klb = jax.random.split(key, 3)
    compile_seconds = [0.0]
    bar = tqdm(total=c.steps + c.lbfgs_steps, disable=not c.progress, desc=f"pinn {problem.name}")
    try:
        # Adam in float32 when asked: x64 is switched off for that phase only, and the model and
        # loss weights come back in the training precision for L-BFGS.
        adam32 = c.float64 and c.adam_float32
        with jax.enable_x64(False) if adam32 else contextlib.nullcontext():
            model, weights, done = _adam(solver, kinit, kadam, cast_floats(model, jnp.float32 if adam32 else dtype),
                                         record, bar, compile_seconds)
        model, weights = cast_floats(model, dtype), weights.astype(dtype)
        if c.lbfgs_steps:
            model = _lbfgs(solver, klb, model, weights, record, bar, done, compile_seconds)
    finally:
        bar.close()
    hist = History(*(np.asarray(records[k]) for k in ("step", "phase", "loss", "terms", "weights", "error",
                                                      "seconds")), compile_seconds=compile_seconds[0],
                   term_names=problem.term_names)
    return model, hist


def _adam(solver, kinit, kadam, model, record, bar, compile_seconds):
    """The Adam phase; returns (model, loss weights, steps done)."""
    c = solver.config
    state = solver.init(kinit, model)

    @filter_jit
    def run_chunk(state, keys):
        def body(s, k):
            s, info = solver.step(k, s)
            return s, info

        state, infos = jax.lax.scan(body, state, keys)
        return state, jax.tree_util.tree_map(lambda a: a[-1], infos)

    done = 0
    t_phase = None
    while done < c.steps:
        n = min(c.chunk, c.steps - done)
        keys = jax.random.split(jax.random.fold_in(kadam, done), n)
        t_chunk = time.perf_counter()
        state, info = run_chunk(state, keys)
        jax.block_until_ready(info.loss)
        if t_phase is None:
            # The first call compiles; wall-time budgets count from its end.
            t_phase = time.perf_counter()
            compile_seconds[0] += t_phase - t_chunk
        done += n
        if not np.isfinite(float(info.loss)):
            raise FloatingPointError(f"loss became {float(info.loss)} at Adam step {done}; lower the learning rate")
        err = record(done, 0, info.loss, info.terms, info.weights, state.model)
        bar.update(n)
        bar.set_postfix(loss=f"{float(info.loss):.2e}", err=f"{err:.2e}")
        if c.max_seconds is not None and time.perf_counter() - t_phase > c.max_seconds:
            break
    return state.model, state.weights, done


def _lbfgs(solver, key, model, weights, record, bar, start, compile_seconds):
    c, prob = solver.config, solver.problem
    sampler = "lhs" if c.sampler in ("rad", "uniform") else c.sampler
    box = prob.domain
    kr, kc = jax.random.split(key)
    # Causal weights are stop-gradient factors: with them the objective's gradient is not the
    # derivative of its value, and the line search stalls (seen on advection at c = 50, where
    # the weights are far from 1). L-BFGS therefore minimises the plain weighted loss.
    lb_solver = PINNSolver(prob, dataclasses.replace(c, causal=False)) if c.causal else solver

    def residual_points(k, m):
        """The residual set: a space-filling one, or RAD-chosen with the model m."""
        if c.lbfgs_rad_every > 0:
            return jax.lax.stop_gradient(lb_solver._rad_pool(k, m, c.lbfgs_points))
        return box.scale(unit_sample(k, c.lbfgs_points, box.dim, sampler))

    def ordered(res):
        return res[jnp.argsort(res[:, box.time_dim])] if c.causal else res

    # Condition points are drawn once; the residual points once, or again on RAD's schedule.
    pts = {"res": ordered(residual_points(kr, model))}
    for k, cond in zip(jax.random.split(kc, max(len(prob.conditions), 1)), prob.conditions):
        n_cond = max(getattr(cond, "n", 0), c.lbfgs_points // 4)
        cond_big = cond if isinstance(cond, Observations) else _with_n(cond, n_cond)
        pts[cond.name] = cond_big.sample(k, box, "lhs")
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def value_fn(p, pts):
        terms, _ = lb_solver.loss_terms(eqx.combine(p, static), pts)
        return jnp.dot(weights, terms)

    opt = optax.lbfgs(memory_size=c.lbfgs_memory,
                      linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))

    @filter_jit
    def run_chunk(p, s, pts, n):
        f = lambda q: value_fn(q, pts)  # noqa: E731
        vg = optax.value_and_grad_from_state(f)

        def body(carry, _):
            p, s = carry
            value, grad = vg(p, state=s)
            updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
            return (optax.apply_updates(p, updates), s), value

        (p, s), _ = jax.lax.scan(body, (p, s), None, length=n)
        # The loss at the point returned (the scan's values are each step's starting point, one
        # iterate behind): the best-iterate choice and the history describe the same point.
        return p, s, f(p)

    terms_fn = filter_jit(lambda p, pts: lb_solver.loss_terms(eqx.combine(p, static), pts)[0])
    value_jit = filter_jit(value_fn)
    new_points = filter_jit(lambda k, p: ordered(residual_points(k, eqx.combine(p, static))))
    s = _strong(opt.init(params))
    t_start = None
    done, best, best_p = 0, float(value_jit(params, pts)), params
    since_points = 0
    resample_key = jax.random.fold_in(kr, 1)
    while done < c.lbfgs_steps:
        if c.lbfgs_rad_every > 0 and since_points >= c.lbfgs_rad_every:
            # New points change the objective: restart the memory, and compare losses afresh.
            resample_key, k_new = jax.random.split(resample_key)
            pts = {**pts, "res": new_points(k_new, params)}
            s, since_points = _strong(opt.init(params)), 0
            best, best_p = float(value_jit(params, pts)), params
        n = min(c.chunk, c.lbfgs_steps - done)
        t_chunk = time.perf_counter()
        p_new, s_new, value = run_chunk(params, s, pts, n)
        jax.block_until_ready(value)
        if t_start is None:
            t_start = time.perf_counter()
            compile_seconds[0] += t_start - t_chunk
        done += n
        since_points += n
        bar.update(n)
        value = float(value)
        if not np.isfinite(value):
            break  # keep the last finite iterate; the line search can fail once the loss is at round-off
        params, s = p_new, s_new
        if value < best:
            best, best_p = value, params
        m = eqx.combine(params, static)
        record(start + done, 1, value, terms_fn(params, pts), weights, m)
        bar.set_postfix(loss=f"{value:.2e}")
        if c.lbfgs_max_seconds is not None and time.perf_counter() - t_start > c.lbfgs_max_seconds:
            break
    return eqx.combine(best_p, static)


def _strong(tree):
    """`tree` with its weakly typed arrays made strongly typed, in the same dtype.

    optax's L-BFGS starts some fields of its state (the line search's info) as weakly typed
    scalars, which its update returns strongly typed: the second chunk of iterations then
    traced and compiled `run_chunk` again (about 2 s a solve on the 2-core machine)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=a.dtype) if isinstance(a, jax.Array) else a, tree)


def _with_n(cond, n):
    import dataclasses

    return dataclasses.replace(cond, n=n)
