"""Accuracy/cost table: NPE, NPSE and FMPE (ours) and PyTorch sbi's FMPE/NPSE on the same simulations.

For each task: 10^4 simulations (fixed seed) are saved to disk, each method trains on them and
draws 10^4 posterior samples for each chosen observation; C2ST (jaxhep.diagnostics.c2st) is
taken against the task's reference posterior. Recorded: C2ST per observation, training wall
time (compilation included), time for 10^4 samples after compilation, time for log_prob of
100 points after compilation. The PyTorch `sbi` side runs in the interpreter given by
--sbi-python (a separate venv with torch + sbi) on the same saved arrays.

    nice -n 10 python experiments/benchmarks/diffusion_table.py \
        --tasks two_moons gaussian_linear --methods npe npse fmpe --observations 1 \
        --out experiments/results/benchmarks/diffusion_table.json

Timings on a shared machine are inflated by other load; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from jaxhep.nn import SET_EMBEDDINGS

TASKS = ("two_moons", "gaussian_linear", "gaussian_mixture", "slcp", "bernoulli_glm")
METHODS = ("npe", "npse", "npse_vp", "fmpe")
# Variants with a permutation-invariant embedding of x (jaxhep.nn.set_embedding): plain
# Deep Sets, and with the items standardised within each x.
SET_SUFFIXES = tuple("_" + kind for kind in SET_EMBEDDINGS)
DEEPSETS = tuple(m + suffix for suffix in SET_SUFFIXES for m in ("npe", "npse", "fmpe"))

SBI_SCRIPT = r"""
import json, os, sys, time
import numpy as np, torch
from sbi.inference import FMPE, NPSE
# One torch thread per core this process may run on: pinned to one core (taskset), two threads
# made sbi's FMPE on two_moons 1.3x slower (46.7 s against 35.5 s) than one.
torch.set_num_threads(len(os.sched_getaffinity(0)))
d = np.load(sys.argv[1])
theta, x, xo = (torch.tensor(d[k], dtype=torch.float32) for k in ("theta", "x", "x_obs"))
out = {}
for name in sys.argv[3].split(","):
    torch.manual_seed(0)
    inf = FMPE() if name == "sbi_fmpe" else NPSE(sde_type="ve")
    t0 = time.perf_counter()
    est = inf.append_simulations(theta, x).train(show_train_summary=False)
    train_s = time.perf_counter() - t0
    post = inf.build_posterior(est)
    samples, sample_s = [], []
    for i in range(xo.shape[0]):
        t0 = time.perf_counter()
        s = post.sample((10000,), x=xo[i], show_progress_bars=False)
        sample_s.append(time.perf_counter() - t0)
        samples.append(s.numpy())
    np.save(sys.argv[2] + "_" + name + ".npy", np.stack(samples))
    try:
        epochs = int(inf._summary["epochs_trained"][-1])
    except Exception:
        epochs = None
    out[name] = {"train_s": train_s, "sample_s": sample_s, "epochs": epochs, "torch_threads": torch.get_num_threads()}
with open(sys.argv[2] + "_info.json", "w") as f:
    json.dump(out, f)
"""


def parse_settings(items) -> dict:
    """KEY=VALUE strings to a dict; values are read as JSON where they parse (numbers, true,
    null), otherwise kept as strings."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build(method: str, max_epochs: int | None, iid_items: tuple[int, int] | None, settings: dict | None = None):
    """Our estimator named `method`; the `_deepsets` / `_setnorm` variants embed x as a set of
    `iid_items` (number of draws, size of each: the task's `iid_items`, e.g. slcp's (4, 2))."""
    from jaxhep.nn import set_embedding
    from jaxhep.sbi import FMPE, NPE, NPSE

    kw = {"progress": False, **(settings or {})}
    if max_epochs is not None:
        kw["max_epochs"] = max_epochs
    for kind in SET_EMBEDDINGS:
        if method.endswith("_" + kind):
            kw["embedding_net"] = set_embedding(kind, iid_items, key=jax.random.key(11))
            method = method.removesuffix("_" + kind)
    return {"npe": lambda: NPE(**kw), "npse": lambda: NPSE(sde="ve", **kw), "npse_vp": lambda: NPSE(sde="vp", **kw),
            "fmpe": lambda: FMPE(**kw)}[method]()


def markdown(results: dict) -> str:
    """The rows as a markdown table: task, method, mean C2ST, training seconds, epochs, sampling and
    log_prob seconds, and for each of our methods the training-time ratio to sbi's same method."""
    rows = results["rows"]
    sbi_train = {(r["task"], r["method"][4:]): r["train_s"] for r in rows if r["method"].startswith("sbi_")}
    lines = ["| task | method | C2ST (mean) | train s | epochs | 10^4 samples s | log_prob(100) s | sbi train s / ours |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peer = sbi_train.get((r["task"], r["method"]))
        ratio = f"{peer / r['train_s']:.1f}" if peer else ""
        lp = f"{np.mean(r['log_prob_100_s']):.3f}" if r.get("log_prob_100_s") else ""
        lines.append(f"| {r['task']} | {r['method']} | {r['c2st_mean']:.3f} | {r['train_s']:.1f} | {r['epochs']} | "
                     f"{np.mean(r['sample_10k_s']):.2f} | {lp} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    from jaxhep.diagnostics import c2st
    from jaxhep.simulators import get_task

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--methods", nargs="*", default=list(METHODS),
                   help=f"ours: {METHODS + DEEPSETS} (the _deepsets and _setnorm ones run only on tasks whose x is a set of iid draws, e.g. slcp)")
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--max-epochs", type=int, default=None, help="cap on epochs (default: each method's own)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="estimator settings for our methods, e.g. learning_rate=2e-3 (default: each method's own)")
    p.add_argument("--fit-seed", type=int, default=1, help="seed of our methods' training key")
    p.add_argument("--sbi-python", default=os.path.join(os.path.dirname(__file__), "..", "..", ".venv-bench",
                                                        "bin", "python"))
    p.add_argument("--sbi-methods", nargs="*", default=["sbi_fmpe", "sbi_npse"])
    p.add_argument("--out", default="experiments/results/benchmarks/diffusion_table.json")
    p.add_argument("--summarize", metavar="JSON", help="only print the markdown table of an earlier run's JSON")
    args = p.parse_args(argv)
    try:
        settings = parse_settings(args.set)
    except ValueError as e:
        p.error(str(e))
    if args.summarize:
        with open(args.summarize) as f:
            print(markdown(json.load(f)))
        return

    results = {"config": vars(args), "loadavg_start": os.getloadavg(), "cores": sorted(os.sched_getaffinity(0)),
               "rows": []}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def save():
        results["loadavg_end"] = os.getloadavg()
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

    for task_name in args.tasks:
        task = get_task(task_name)
        theta, x = task.simulate(jax.random.key(0), args.num_simulations)
        theta, x = np.asarray(theta), np.asarray(x)
        obs = [np.asarray(task.get_observation(i)[1]) for i in args.observations]
        refs = [np.asarray(task.reference_posterior(jax.random.key(100 + i), xo, 10_000))
                for i, xo in zip(args.observations, obs)]

        def record(method, train_s, epochs, samples, sample_s, logprob_s=None, **extra):
            scores = [float(c2st(jax.random.key(7), s, r)) for s, r in zip(samples, refs)]
            row = {"task": task_name, "method": method, "c2st": scores, "c2st_mean": float(np.mean(scores)),
                   "train_s": train_s, "epochs": epochs, "sample_10k_s": sample_s, "log_prob_100_s": logprob_s, **extra}
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
            save()

        for method in args.methods:
            if method.endswith(SET_SUFFIXES) and task.iid_items is None:
                continue
            est = build(method, args.max_epochs, task.iid_items, settings)
            t0 = time.perf_counter()
            post = est.fit(jax.random.key(args.fit_seed), theta, x, prior=task.prior)
            train_s = time.perf_counter() - t0
            sample = jax.jit(lambda k, xo: post.sample(k, xo, (10_000,)))
            logp = jax.jit(lambda th, xo: post.log_prob(th, xo))
            samples, sample_s, logprob_s = [], [], []
            for i, xo in enumerate(obs):
                sample(jax.random.key(2), xo).block_until_ready()  # compile
                t0 = time.perf_counter()
                s = np.asarray(sample(jax.random.key(3 + i), xo).block_until_ready())
                sample_s.append(time.perf_counter() - t0)
                samples.append(s)
                if not method.startswith("npe") or i == 0:
                    logp(s[:100], xo).block_until_ready()
                    t0 = time.perf_counter()
                    lp = logp(s[100:200], xo).block_until_ready()
                    logprob_s.append(time.perf_counter() - t0)
                    if not np.all(np.isfinite(np.asarray(lp))):
                        print(f"warning: non-finite log_prob for {method} on {task_name}", flush=True)
            record(method, train_s, post.history.epochs, samples, sample_s, logprob_s)

        if args.sbi_methods:
            if not os.path.exists(args.sbi_python):
                results.setdefault("not_run", []).append(f"sbi peers on {task_name}: {args.sbi_python} missing")
                save()
                continue
            with tempfile.TemporaryDirectory() as tmp:
                data = os.path.join(tmp, "data.npz")
                np.savez(data, theta=theta, x=x, x_obs=np.stack(obs))
                script = os.path.join(tmp, "run_sbi.py")
                with open(script, "w") as f:
                    f.write(SBI_SCRIPT)
                # Run outside the repository so that `import sbi` finds PyTorch sbi, not our sbi/ folder.
                proc = subprocess.run([args.sbi_python, script, data, os.path.join(tmp, "s"),
                                       ",".join(args.sbi_methods)], cwd=tmp, capture_output=True, text=True)
                if proc.returncode != 0:
                    results.setdefault("not_run", []).append(
                        f"sbi peers on {task_name} failed: {proc.stderr[-2000:]}")
                    save()
                    continue
                # sbi prints its own messages on stdout; the timings come back in a file.
                with open(os.path.join(tmp, "s_info.json")) as f:
                    info = json.load(f)
                for name, v in info.items():
                    samples = list(np.load(os.path.join(tmp, f"s_{name}.npy")))
                    record(name, v["train_s"], v["epochs"], samples, v["sample_s"], torch_threads=v["torch_threads"])
    save()
    table = markdown(results)
    print(table)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
