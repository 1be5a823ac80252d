"""C2ST study: speed of the JAX implementation and its accuracy against the Bayes-optimal classifier.

For two Gaussians N(0, I) and N(mu, I) with equal sample sizes the best possible accuracy is
Phi(|mu| / 2), so the C2ST score of an ideal classifier is known in closed form. This script
runs `jaxhep.diagnostics.c2st` on 10^4 vs 10^4 samples in 2-d over a range of shifts, records
compile and run times, and, when scikit-learn is installed, the sbibm-style reference
implementation on the same data for comparison.

Writes <out>/c2st.json and <out>/c2st.png.

    python experiments/diagnostics_c2st.py --out experiments/results/diagnostics
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxhep.diagnostics import c2st_scores


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def sklearn_c2st(X, Y, seed):
    """sbibm's definition with scikit-learn (stratified folds), or None without scikit-learn."""
    try:
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    mean, std = X.mean(0), X.std(0, ddof=1)
    data = np.concatenate([(X - mean) / std, (Y - mean) / std])
    target = np.concatenate([np.zeros(len(X)), np.ones(len(Y))])
    d = X.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d), max_iter=10000,
                        solver="adam", random_state=seed)
    start = time.perf_counter()
    acc = cross_val_score(clf, data, target, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                          scoring="accuracy").mean()
    return float(acc), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/results/diagnostics")
    parser.add_argument("--n", type=int, default=10_000, help="samples per set")
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per shift after compiling")
    parser.add_argument("--sklearn", action="store_true", help="also run scikit-learn's C2ST")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    rows = []
    compile_seconds = None
    for s, shift in enumerate(args.shifts):
        kx, ky = jax.random.split(jax.random.key(100 + s))
        X = np.asarray(jax.random.normal(kx, (args.n, args.dim)))
        mu = np.zeros(args.dim, np.float32)
        mu[0] = shift
        Y = np.asarray(jax.random.normal(ky, (args.n, args.dim))) + mu
        if compile_seconds is None:
            start = time.perf_counter()
            c2st_scores(jax.random.key(0), X, Y)
            compile_seconds = time.perf_counter() - start  # compile plus one run
        runs = []
        for r in range(args.repeats):
            start = time.perf_counter()
            cpu = time.process_time()
            accs, epochs = c2st_scores(jax.random.key(1 + r), X, Y)
            runs.append({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                         "accuracy": float(np.mean(accs)), "fold_accuracies": accs.tolist(),
                         "epochs": epochs.tolist()})
        bayes = phi(shift / 2)
        row = {"shift": shift, "bayes_accuracy": bayes,
               "binomial_sd": math.sqrt(bayes * (1 - bayes) / (2 * args.n)), "runs": runs}
        if args.sklearn:
            ref = sklearn_c2st(X, Y, seed=0)
            if ref is not None:
                row["sklearn"] = {"accuracy": ref[0], "seconds": ref[1]}
        rows.append(row)
        print(f"shift {shift}: c2st {[round(r['accuracy'], 4) for r in runs]} (Bayes {bayes:.4f}), "
              f"{[round(r['seconds'], 2) for r in runs]} s, epochs {[max(r['epochs']) for r in runs]}"
              + (f", sklearn {row['sklearn']['accuracy']:.4f} in {row['sklearn']['seconds']:.1f} s"
                 if "sklearn" in row else ""), flush=True)

    result = {
        "study": "c2st speed and accuracy vs Bayes-optimal, N(0,I) vs N(mu e_1, I)",
        "n_per_set": args.n, "dim": args.dim, "compile_plus_first_run_seconds": compile_seconds,
        "rows": rows, "machine": platform.platform(), "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "note": "wall times on a shared machine; other jobs inflate them",
    }
    with open(os.path.join(args.out, "c2st.json"), "w") as f:
        json.dump(result, f, indent=2)

    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot()
    grid = np.linspace(0, max(args.shifts), 200)
    ax.plot(grid, [phi(g / 2) for g in grid], "k-", lw=1, label=r"Bayes optimal $\Phi(|\mu|/2)$")
    for r in range(args.repeats):
        ax.plot(args.shifts, [row["runs"][r]["accuracy"] for row in rows], "o", ms=4,
                label="jaxhep c2st" if r == 0 else None, color="C0")
    if any("sklearn" in row for row in rows):
        ax.plot([row["shift"] for row in rows if "sklearn" in row],
                [row["sklearn"]["accuracy"] for row in rows if "sklearn" in row], "x", color="C3",
                label="scikit-learn c2st")
    ax.set_xlabel(r"shift $|\mu|$")
    ax.set_ylabel("C2ST accuracy")
    ax.set_title(f"{args.n} vs {args.n} samples, d = {args.dim}")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.savefig(os.path.join(args.out, "c2st.png"), bbox_inches="tight")


if __name__ == "__main__":
    main()
