"""Ablation for Burgers and advection: switch off one technique at a time and record the error it costs.

Techniques: Fourier features, random weight factorization, gradient-norm loss balancing, causal
weighting, L-BFGS, and for advection time marching. Every run gets the same wall-time budget
(default 150 s of Adam + 150 s of L-BFGS, a fraction of the full runs' budget so that the runs fit
in a session; the run without L-BFGS gets the whole budget for Adam). Burgers trains with Adam
alone, so its budget is --adam-seconds, and its L-BFGS row ("lbfgs_added") switches L-BFGS on
for --lbfgs-seconds of that budget instead of switching it off. Writes
experiments/pinn_results/pinn_ablation_<problem>.json and a markdown table. `--techniques` runs
only some rows and keeps the others already on disk, so that rows can be run by two processes.

Usage: nice -n 10 python experiments/pinn_ablation.py [burgers advection] [--adam-seconds S] [--lbfgs-seconds S]
       [--techniques none fourier_features ...]
"""

import argparse
import json
import os

import jax

from jaxhep.theory.pinn.problems import get_benchmark
from jaxhep.theory.pinn.study import run_benchmark


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("problems", nargs="*", default=["burgers", "advection"])
    parser.add_argument("--adam-seconds", type=float, default=150.0)
    parser.add_argument("--lbfgs-seconds", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/pinn_results")
    parser.add_argument("--techniques", nargs="*", default=None,
                        help="run only these rows ('none' is the baseline); rows already in the JSON are kept")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in args.problems:
        bench = get_benchmark(name)
        budget = {"max_seconds": args.adam_seconds, "lbfgs_max_seconds": args.lbfgs_seconds}
        path = os.path.join(args.out, f"pinn_ablation_{name}.json")
        order = ["none"] + list(bench.techniques)
        mine = []
        for off, (net_over, cfg_over) in [("none", ({}, {}))] + list(bench.techniques.items()):
            if args.techniques is not None and off not in args.techniques:
                continue
            cfg = {**budget, **cfg_over}
            if off == "lbfgs":
                # Same total wall time: the L-BFGS budget goes to Adam (with room for the extra steps).
                cfg["max_seconds"] = args.adam_seconds + args.lbfgs_seconds
                cfg["steps"] = 4 * bench.config.steps
            elif off == "lbfgs_added":
                # The baseline has no L-BFGS (Burgers): the same total time, of which L-BFGS gets
                # --lbfgs-seconds out of Adam's --adam-seconds.
                cfg["max_seconds"] = args.adam_seconds - args.lbfgs_seconds
            r = run_benchmark(name, seed=args.seed, progress=False, net_overrides=net_over,
                              config_overrides=cfg, tag=f"ablate_{off}", verbose=True)
            mine.append({"switched_off": off, "rel_l2": r["rel_l2"], "train_seconds": r["train_seconds"],
                         "adam_steps": r["adam_steps"], "lbfgs_iterations": r["lbfgs_iterations"],
                         "loadavg_start": r["loadavg_start"], "loadavg_end": r["loadavg_end"]})
            # Compiled programs of finished runs are not needed again; a long ablation that
            # keeps them all ran out of memory for new ones (LLVM "Cannot allocate memory").
            jax.clear_caches()
            # With --techniques, rows on disk from other runs (perhaps another process) are kept.
            done = {r["switched_off"] for r in mine}
            rows = []
            if args.techniques is not None and os.path.exists(path):
                with open(path) as f:
                    # Rows of techniques the problem no longer lists are stale: dropped.
                    rows = [r for r in json.load(f)["rows"] if r["switched_off"] not in done
                            and r["switched_off"] in order]
            rows = sorted(rows + mine, key=lambda r: order.index(r["switched_off"]))
            with open(path, "w") as f:
                json.dump({"problem": name, "budget": budget, "seed": args.seed, "rows": rows,
                           "note": "same wall-time budget per run; each row records the load average"}, f, indent=1)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rows = json.load(f)["rows"]  # everything recorded so far, by this process or another
        if rows[0]["switched_off"] != "none":
            continue  # no baseline yet: the table needs it
        base = rows[0]["rel_l2"]
        lines = [f"| {name}: switched off (lbfgs_added: switched on) | rel. L2 | x baseline | Adam steps | "
                 "L-BFGS its | seconds |",
                 "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['switched_off']} | {r['rel_l2']:.3e} | {r['rel_l2'] / base:.2f} | {r['adam_steps']} | "
                         f"{r['lbfgs_iterations']} | {r['train_seconds']:.0f} |")
        table = "\n".join(lines)
        print(table, flush=True)
        with open(os.path.join(args.out, f"pinn_ablation_{name}.md"), "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
