"""Run a built-in problem end to end: train, measure the error against the reference, plot, write JSON.

Shared by `jaxhep pinn <problem>` and the `experiments/pinn_*.py` scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhep.theory.pinn.marching import solve_time_marching
from jaxhep.theory.pinn.plots import plot_result
from jaxhep.theory.pinn.precision import float64
from jaxhep.theory.pinn.problems import get_benchmark
from jaxhep.theory.pinn.solver import relative_l2, solve


def run_benchmark(name: str, *, seed: int = 0, steps: int | None = None, lbfgs_steps: int | None = None,
                  out: str | None = None, progress: bool = True, net_overrides: dict | None = None,
                  config_overrides: dict | None = None, monitor_points: int = 2000, tag: str = "",
                  verbose: bool = True, problem_kwargs: dict | None = None) -> dict[str, Any]:
    """Train a built-in problem and report the relative L2 error and the training time.

    Arguments:
        name: a built-in problem (see `problems.BUILTINS`).
        seed: PRNG seed.
        steps: Adam steps (default: the benchmark's).
        lbfgs_steps: L-BFGS iterations (default: the benchmark's).
        out: directory for the JSON and plot (None: write nothing).
        progress: progress bar.
        net_overrides, config_overrides: changes to the network/training settings;
            config_overrides may also set "windows" (time-marching windows, 1 for none).
        monitor_points: reference points used to record the error during training.
        tag: suffix of the output file names.
        verbose: print the summary line.
        problem_kwargs: arguments of the problem's builder (e.g. {"hard": True} for Burgers'
            exactly imposed initial and boundary conditions).

    Returns:
        A JSON-serialisable dict of results.
    """
    bench = get_benchmark(name, **(problem_kwargs or {}))
    cfg = dict(config_overrides or {})
    windows = int(cfg.pop("windows", bench.windows))
    if steps is not None:
        cfg["steps"] = int(steps)
    if lbfgs_steps is not None:
        cfg["lbfgs_steps"] = int(lbfgs_steps)
    cfg["progress"] = progress
    config = dataclasses.replace(bench.config, **cfg)
    pts = bench.points()
    ref = bench.reference.ravel()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pts), min(monitor_points, len(pts)), replace=False)
    key = jax.random.key(seed)
    load_start = list(os.getloadavg())
    knet, ktrain = jax.random.split(key)
    overrides = dict(net_overrides or {})
    with float64(config.float64):
        # Time marching builds one network per window itself.
        net = bench.make_net(knet, **overrides) if windows == 1 else None
        t0, c0 = time.perf_counter(), time.process_time()
        if windows > 1:
            def make_net(k, box):
                return bench.make_net(k, **{"lower": box.lower, "upper": box.upper, **overrides})

            model, hist = solve_time_marching(ktrain, bench.problem, make_net, config, windows,
                                              eval_points=pts[idx], eval_values=ref[idx])
        else:
            model, hist = solve(ktrain, bench.problem, net, config, eval_points=pts[idx], eval_values=ref[idx])
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
        pred = np.asarray(bench.problem.predict(model, jnp.asarray(pts)))
        err = float(relative_l2(pred.ravel(), ref))  # ref is the raveled reference grid
        coeffs = {k: float(v) for k, v in bench.problem.coefficients(model).items()}
    phase = np.asarray(hist.phase)
    increments = np.diff(np.concatenate([[0], np.asarray(hist.step)]))  # steps per history entry
    result: dict[str, Any] = {
        "problem": name,
        "tag": tag,
        "seed": seed,
        "rel_l2": err,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "compile_seconds": hist.compile_seconds,
        "train_seconds_excluding_compile": seconds - hist.compile_seconds,
        "adam_steps": int(np.sum(increments[phase == 0])),
        "lbfgs_iterations": int(np.sum(increments[phase == 1])),
        "time_windows": windows,
        "final_loss": float(hist.loss[-1]),
        "term_names": list(hist.term_names),
        "final_terms": [float(v) for v in hist.terms[-1]],
        "final_weights": [float(v) for v in hist.weights[-1]],
        "history": {"step": hist.step.tolist(), "loss": hist.loss.tolist(), "error": hist.error.tolist(),
                    "seconds": hist.seconds.tolist(), "phase": hist.phase.tolist()},
        "net": {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                {**bench.net_kwargs, **overrides}.items() if k not in ("periodic",)},
        "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
        "problem_kwargs": dict(problem_kwargs or {}),
        "coefficients": coeffs,
        "device": str(jax.devices()[0]),
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "note": "train_seconds includes compilation; the wall-time budgets count after it. The load averages "
                "(1, 5, 15 min) say how busy the machine was",
    }
    if bench.truth:
        result["truth"] = bench.truth
        result["coefficient_rel_error"] = {k: abs(coeffs[k] - v) / abs(v) for k, v in bench.truth.items()}
    if verbose:
        extra = "".join(f", {k} = {coeffs[k]:.6g} (true {v:.6g}, rel. error {result['coefficient_rel_error'][k]:.2%})"
                        for k, v in bench.truth.items())
        print(f"[pinn {name}{' ' + tag if tag else ''}] relative L2 error = {err:.3e}, training time = "
              f"{seconds:.1f} s wall ({seconds - hist.compile_seconds:.1f} s after compilation), {cpu_seconds:.1f} s "
              f"CPU ({result['adam_steps']} Adam steps, {result['lbfgs_iterations']} L-BFGS "
              f"iterations){extra}", flush=True)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        stem = os.path.join(out, f"pinn_{name}{'_' + tag if tag else ''}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=1, default=float)
        shape = tuple(len(a) for a in bench.axes)
        plot_result(stem + ".png", bench.axes, pred.reshape(shape), bench.reference, hist,
                    names=bench.problem.domain.names, title=f"{name}: relative L2 = {err:.2e}")
        result["files"] = [stem + ".json", stem + ".png"]
    return result
