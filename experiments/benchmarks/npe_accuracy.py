"""NPE accuracy on sbibm tasks: C2ST of jaxhep NPE (defaults unless overridden) against each task's
reference posterior, averaged over built-in observations; writes JSON.

    python experiments/benchmarks/npe_accuracy.py --tasks two_moons slcp --simulations 10000 --observations 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxhep import simulators
from jaxhep.diagnostics import c2st
from jaxhep.sbi import NPE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusion_table import parse_settings  # noqa: E402


def npe_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The arguments the NPE accuracy scripts share: tasks, simulations, NPE settings, output."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tasks", nargs="+", default=["two_moons", "gaussian_linear", "bernoulli_glm", "slcp"])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="NPE settings other than its defaults, e.g. batch_size=100 activation=relu")
    p.add_argument("--out", default=out)
    return p


def npe_settings(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The `--set` settings as a dict; a malformed item ends the script with a usage error."""
    try:
        return parse_settings(args.set)
    except ValueError as e:
        p.error(str(e))


def fit_npe(task, seed: int, simulations: int, settings: dict):
    """NPE trained on `simulations` pairs drawn with key `seed` (training key seed + 1); also the
    training time in seconds."""
    theta, x = task.simulate(jax.random.key(seed), simulations)
    start = time.perf_counter()
    posterior = NPE(progress=False, **settings).fit(jax.random.key(seed + 1), theta, x, prior=task.prior)
    return posterior, time.perf_counter() - start


def write_results(results: dict, out: str) -> None:
    """Record the closing load average and write `results` to `out` as JSON."""
    results["load_average_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")


def main() -> None:
    p = npe_parser(__doc__.split("\n\n")[0], "experiments/benchmarks/out/npe_accuracy.json")
    p.add_argument("--observations", type=int, default=3, help="C2ST averaged over observations 1..N")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning-rate", type=float, default=None, help="override NPE's default")
    p.add_argument("--num-transforms", type=int, default=None, help="override NPE's default")
    p.add_argument("--hidden-features", type=int, default=None, help="override NPE's default")
    p.add_argument("--observation-source", choices=["sbibm", "jaxhep"], default="sbibm",
                   help="sbibm's stored observations (default since 2026-12-01) or jaxhep's own draws (results "
                        "recorded before)")
    args = p.parse_args()
    overrides = npe_settings(p, args)
    overrides.update({k: v for k, v in (("learning_rate", args.learning_rate), ("num_transforms", args.num_transforms),
                                        ("hidden_features", args.hidden_features)) if v is not None})
    results = {"argv": vars(args), "load_average_start": os.getloadavg(), "tasks": {}}
    for name in args.tasks:
        task = simulators.get_task(name)
        post, train_s = fit_npe(task, args.seed, args.simulations, overrides)
        scores = []
        for i in range(1, args.observations + 1):
            _, x_obs = task.get_observation(i, args.observation_source)
            s = post.sample(jax.random.key(10 + i), x_obs, (args.num_samples,))
            r = task.reference_posterior(jax.random.key(20 + i), x_obs, args.num_samples)
            scores.append(float(c2st(jax.random.key(3), np.asarray(s), np.asarray(r))))
        results["tasks"][name] = {"c2st": scores, "c2st_mean": float(np.mean(scores)), "train_s": train_s,
                                  "epochs": post.history.epochs, "best_epoch": post.history.best_epoch}
        print(f"{name:20s} C2ST {np.round(scores, 3)} mean {np.mean(scores):.3f}  train {train_s:.1f} s, "
              f"{post.history.epochs} epochs", flush=True)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
