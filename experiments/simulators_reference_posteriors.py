"""Reference posteriors of the sbibm tasks: wall time for 10^4 samples, and sanity of the result.

For each task and observation this draws `--num-samples` reference-posterior samples twice
(the first call includes compilation, the second does not), records the wall times, the
posterior mean and standard deviation, any NUTS convergence warnings (split R-hat > 1.05) for
the MCMC tasks, and, where the posterior moments are known in closed form, the largest
deviation of the sample mean in units of its Monte Carlo standard error.

Writes <out>/reference_posteriors.json and <out>/reference_posteriors.png.

    nice -n 10 python experiments/simulators_reference_posteriors.py --out experiments/results/simulators
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxhep import simulators


def run_one(task, i, num_samples, seed):
    theta_true, x_obs = task.get_observation(i)
    times, warns = [], []
    for rep in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            s = task.reference_posterior(jax.random.key(seed + rep), x_obs, num_samples)
            s = np.asarray(jax.block_until_ready(s), dtype=np.float64)
            times.append(time.perf_counter() - start)
        warns += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    row = {
        "task": task.name,
        "observation": i,
        "time_first_s": times[0],
        "time_second_s": times[1],
        "num_samples": num_samples,
        "theta_true": np.asarray(theta_true).tolist(),
        "mean": s.mean(0).tolist(),
        "std": s.std(0).tolist(),
        "warnings": warns,
    }
    if hasattr(task, "posterior_mean_cov"):
        mean, cov = task.posterior_mean_cov(x_obs)
        se = np.sqrt(np.diag(np.asarray(cov)) / num_samples)
        row["max_abs_mean_error_in_se"] = float(np.max(np.abs(s.mean(0) - np.asarray(mean)) / se))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/results/simulators")
    parser.add_argument("--tasks", nargs="+", default=[t for t in simulators.TASKS if t != "bernoulli_glm_raw"])
    parser.add_argument("--observations", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--num-samples", type=int, default=10_000)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    rows = []
    for name in args.tasks:
        task = simulators.get_task(name)
        for i in args.observations:
            row = run_one(task, i, args.num_samples, seed=100 * i)
            rows.append(row)
            print(
                f"{name:24s} obs {i:2d}: first {row['time_first_s']:6.2f} s, second {row['time_second_s']:6.2f} s, "
                f"warnings {len(row['warnings'])}"
                + (f", max mean error {row['max_abs_mean_error_in_se']:.2f} SE" if "max_abs_mean_error_in_se" in row else ""),
                flush=True,
            )

    result = {
        "description": __doc__.splitlines()[0],
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
                    "device": str(jax.devices()[0])},
        "note": "wall times on a shared CPU; other processes' load inflates them",
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    with open(os.path.join(args.out, "reference_posteriors.json"), "w") as f:
        json.dump(result, f, indent=1)

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    names = list(dict.fromkeys(r["task"] for r in rows))
    for k, key in enumerate(["time_first_s", "time_second_s"]):
        vals = [np.median([r[key] for r in rows if r["task"] == n]) for n in names]
        ax.bar(np.arange(len(names)) + 0.4 * k - 0.2, vals, width=0.4,
               label="first call (with compile)" if k == 0 else "second call")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("seconds for %d samples (median)" % args.num_samples)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "reference_posteriors.png"), dpi=120)


if __name__ == "__main__":
    main()
