"""Held-out negative log-likelihood of NPE on sbibm tasks: a quick accuracy score for comparing
settings, much cheaper than C2ST against reference posteriors; writes JSON.

Each seed S trains NPE on the simulations of key S and scores -mean log q(theta | x) on 20 000
fresh prior-predictive pairs (key 999, the same for every setting and seed). Lower is better; the
difference between two settings is their difference in expected KL(p(theta | x) || q(theta | x))
over x, since the true posterior's entropy term is the same for both.

    python experiments/benchmarks/npe_heldout_nll.py --tasks bernoulli_glm --seeds 0 1 \
        --set activation=relu tail_bound=3.0
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import numpy as np

from jaxhep import simulators

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npe_accuracy import fit_npe, npe_parser, npe_settings, write_results  # noqa: E402

TEST_KEY = 999
TEST_SIZE = 20_000


def heldout_nll(posterior, theta_test, x_test) -> float:
    """-mean log q(theta | x) over the held-out pairs (`log_prob` batches over them and compiles
    once per posterior structure, so later seeds reuse the program)."""
    return float(-np.mean(np.asarray(posterior.log_prob(theta_test, x_test))))


def main() -> None:
    p = npe_parser(__doc__.split("\n\n")[0], "experiments/benchmarks/out/npe_heldout_nll.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    settings = npe_settings(p, args)
    results = {"argv": vars(args), "settings": settings, "test_key": TEST_KEY, "test_size": TEST_SIZE,
               "load_average_start": os.getloadavg(), "tasks": {}}
    for name in args.tasks:
        task = simulators.get_task(name)
        theta_test, x_test = task.simulate(jax.random.key(TEST_KEY), TEST_SIZE)
        runs = []
        for seed in args.seeds:
            posterior, train_s = fit_npe(task, seed, args.simulations, settings)
            runs.append({"seed": seed, "nll": heldout_nll(posterior, theta_test, x_test), "train_s": train_s,
                         "epochs": posterior.history.epochs, "best_epoch": posterior.history.best_epoch})
            print(f"{name:16s} seed {seed}: NLL {runs[-1]['nll']:.4f}  train {train_s:.1f} s, "
                  f"{runs[-1]['epochs']} epochs", flush=True)
        results["tasks"][name] = {"runs": runs, "nll_mean": float(np.mean([r["nll"] for r in runs]))}
        print(f"{name:16s} mean NLL {results['tasks'][name]['nll_mean']:.4f}", flush=True)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
