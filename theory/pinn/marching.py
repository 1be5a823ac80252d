"""Time marching: solve a time-dependent problem window by window, each window's initial
condition being the previous window's solution at its end.

Long time horizons with fast dynamics (advection at c = 50 crosses eight periods in t) are
where one network trained on the whole space-time box fails: it learns the first fraction of
the horizon and settles on a wrong smooth solution after it. Splitting [t0, t1] into windows,
each with its own network, makes every sub-problem short (the "sequence-to-sequence" training
of Krishnapriyan et al. 2021, "Characterizing possible failure modes in physics-informed neural
networks"; also Wight & Zhao 2020). The price is that errors carry forward through the initial
conditions, and each window is a separate (compiled) training run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.theory.pinn.domain import Box
from jaxhep.theory.pinn.precision import cast_floats, float64 as _float64
from jaxhep.theory.pinn.problem import Dirichlet, Observations, PDEProblem, PINNModel
from jaxhep.theory.pinn.solver import History, TrainConfig, solve


class TimeWindows(eqx.Module):
    """A network that is piecewise in time: `nets[k]` on [edges[k], edges[k+1]].

    Arguments:
        nets: one network per window, each x -> outputs.
        edges: the window boundaries in time, increasing, len(nets) + 1 of them.
        time_dim: index of the time coordinate.
    """

    nets: tuple
    edges: tuple[float, ...] = eqx.field(static=True)
    time_dim: int = eqx.field(static=True)

    def __init__(self, nets, edges, time_dim: int):
        if len(edges) != len(nets) + 1:
            raise ValueError(f"need len(nets) + 1 window edges, got {len(edges)} for {len(nets)} networks")
        self.nets, self.edges, self.time_dim = tuple(nets), tuple(float(e) for e in edges), time_dim

    def __call__(self, x: Float[Array, " d"]) -> Array:
        inner = jnp.asarray(self.edges[1:-1], x.dtype)
        k = jnp.sum(x[self.time_dim] >= inner)  # window index; the last window keeps its end point
        outs = jnp.stack([net(x) for net in self.nets])
        return outs[k]


def _initial_condition(problem: PDEProblem) -> Dirichlet:
    td = problem.domain.time_dim
    found = [c for c in problem.conditions if isinstance(c, Dirichlet) and c.dim == td and c.side == 0]
    if len(found) != 1:
        raise ValueError(f"time marching needs exactly one initial condition (Initial(...)) on the time face; "
                         f"the problem has {len(found)}")
    return found[0]


def solve_time_marching(key: PRNGKeyArray, problem: PDEProblem, make_net: Callable[[PRNGKeyArray, Box], eqx.Module],
                        config: TrainConfig, windows: int, *, eval_points: Array | None = None,
                        eval_values: Array | None = None) -> tuple[PINNModel, History]:
    """Train a forward time-dependent problem window by window (see the module docstring).

    Arguments:
        key: PRNG key.
        problem: a forward problem with a time coordinate and one initial condition; no unknown
            coefficients and no output transform (hard constraints would fix the first window's
            initial condition in every window).
        make_net: function (key, window box) -> network for that window (its input scaling
            should use the window's bounds).
        config: training settings of the whole run: each window gets 1/windows of the Adam
            steps and the L-BFGS iterations (rounded up, so the total can exceed them by up to
            windows - 1 each) and of the two wall-time budgets.
        windows: number of equal time windows.
        eval_points, eval_values: optional monitoring points and reference values; each window
            records its error on the points inside it.

    Returns:
        (model, history): a `PINNModel` whose network is a `TimeWindows`, and the windows'
        histories one after the other (steps and seconds accumulated).

    Raises:
        ValueError: for a problem that cannot be marched or a bad number of windows.
    """
    box = problem.domain
    td = box.time_dim
    if td is None:
        raise ValueError("time marching needs a time coordinate; the problem's domain has time_dim=None")
    check_positive_int("windows", windows, numpy_ints=False)
    if problem.unknown:
        raise ValueError("time marching solves forward problems; this one has unknown coefficients "
                         f"{sorted(problem.unknown)}")
    if problem.output_transform is not None:
        raise ValueError("time marching does not support output transforms (hard constraints)")
    if any(isinstance(c, Observations) for c in problem.conditions):
        # Every window would get all the observations, and fit those outside its time range.
        raise ValueError("time marching does not support Observations (data terms); solve the problem in one "
                         "window with `solve`")
    if (eval_points is None) != (eval_values is None):
        raise ValueError("give both eval_points and eval_values, or neither")
    ic = _initial_condition(problem)
    share = lambda v: None if v is None else v / windows  # noqa: E731
    config = dataclasses.replace(
        config, steps=-(-config.steps // windows), lbfgs_steps=-(-config.lbfgs_steps // windows),
        max_seconds=share(config.max_seconds), lbfgs_max_seconds=share(config.lbfgs_max_seconds))
    others = tuple(c for c in problem.conditions if c is not ic)
    edges = np.linspace(box.lower[td], box.upper[td], windows + 1)
    ep = None if eval_points is None else np.asarray(eval_points)
    ev = None if eval_values is None else np.asarray(eval_values)
    nets, hists = [], []
    with _float64(config.float64):
        for w, k in enumerate(jax.random.split(key, windows)):
            lower, upper = list(box.lower), list(box.upper)
            lower[td], upper[td] = float(edges[w]), float(edges[w + 1])
            sub_box = Box(lower, upper, time_dim=td, names=box.names)
            sub = PDEProblem(sub_box, problem.residual, (ic,) + others, problem.out_size, problem.known,
                             name=f"{problem.name}[{w + 1}/{windows}]")
            k_net, k_fit = jax.random.split(k)
            kwargs = {}
            if ep is not None:
                inside = (ep[:, td] >= edges[w]) & (ep[:, td] <= edges[w + 1])
                if inside.any():
                    kwargs = dict(eval_points=ep[inside], eval_values=ev[inside])
            model, hist = solve(k_fit, sub, make_net(k_net, sub_box), config, **kwargs)
            nets.append(model.net)
            hists.append(hist)
            # The next window starts from this window's solution at its end time, evaluated in
            # the precision of the points it is asked at (float32 in an `adam_float32` phase).
            ic = dataclasses.replace(ic, value=_solution_at_dtype(sub, model))
    return PINNModel(TimeWindows(nets, edges, td), {}), _join(hists)


def _solution_at_dtype(problem: PDEProblem, model: PINNModel) -> Callable:
    def value(x):
        return problem.solution(cast_floats(model, x.dtype))(x)

    return value


def _join(hists: list[History]) -> History:
    step_off, sec_off, parts = 0, 0.0, []
    for h in hists:
        parts.append((h.step + step_off, h.seconds + sec_off))
        if len(h.step):
            step_off, sec_off = step_off + int(h.step[-1]), sec_off + float(h.seconds[-1])
    return History(
        step=np.concatenate([p[0] for p in parts]), phase=np.concatenate([h.phase for h in hists]),
        loss=np.concatenate([h.loss for h in hists]), terms=np.concatenate([h.terms for h in hists]),
        weights=np.concatenate([h.weights for h in hists]), error=np.concatenate([h.error for h in hists]),
        seconds=np.concatenate([p[1] for p in parts]),
        compile_seconds=float(sum(h.compile_seconds for h in hists)), term_names=hists[0].term_names)
