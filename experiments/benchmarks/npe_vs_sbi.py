"""jaxhep NPE against PyTorch `sbi` NPE on the same simulations, in one process; writes JSON.

For each task the simulations are drawn once with jaxhep and handed to both libraries. Each
library trains the same neural spline flow (jaxhep's `layout="sbi"`, the network sbi builds)
with the same training settings, then
draws 10^4 posterior samples for each of the task's observations 1..N; both sets of samples are
compared with the task's reference posterior by the same C2ST (`jaxhep.diagnostics.c2st`, same
key for both). Reported per library: training wall time (compilation included for jaxhep;
network construction, training and `build_posterior` for sbi), epochs, the wall time of the
first sampling call and of a later one, and C2ST per observation and its mean.

Both use all the cores this process may run on: torch through its intra-op threads, jaxhep by
splitting each minibatch over one JAX CPU device per core (`jaxhep.training.use_cpu_cores`,
NPE `devices="all"`; as many devices as divide the batch size). `--jax-cpu-devices 1` trains
jaxhep on one device, as before 2026-11-30.

Run it in the benchmark environment (torch, sbi and jaxhep together; see README.md):

    .venv-bench/bin/python experiments/benchmarks/npe_vs_sbi.py --tasks two_moons --simulations 10000

Timings are wall-clock on whatever else the machine is doing; the JSON records the load average
at the start and the end, so that a loaded run can be recognised.

Both libraries share one Python heap, which holds torch's and sbi's modules as well as JAX's
(about 0.5 million objects). Before each library trains, the benchmark collects garbage and
freezes the objects that exist then (`gc.freeze`), so that neither pays for the other's imports
in Python's full collections: on 2026-11-30 one such collection, triggered by the garbage of
tracing, took 0.26 s of jaxhep's 5.3 s training in the shared process, against 0.015 s without
torch and sbi imported. `--no-gc-freeze` times both without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"

# sbi's own NPE settings (sbi 0.27: posterior_nn defaults and NPE_C.train defaults), given to both.
# sbi has no weight averaging, and it trains on z-scored theta itself and rejects samples outside
# a bounded prior's support: jaxhep's support="truncate" (until 2026-11-30 this benchmark used
# jaxhep's default "transform", training in the image of a logit map of the prior's box). sbi's NSF
# conditioners use relu and its splines a tail bound of 3 (jaxhep's NPE defaults: tanh and 5).
# layout="sbi" (from 2026-12-01) builds sbi's network itself (nflows' conditioners, spline
# parameterisation and initialisation; check_sbi_layout.py verifies it with sbi's weights);
# before, jaxhep trained its own layout of the same size.
SBI_SETTINGS = dict(density_estimator="nsf", num_transforms=5, hidden_features=50, batch_size=200,
                    learning_rate=5e-4, validation_fraction=0.1, patience=20, ema_decay=None, support="truncate",
                    activation="relu", tail_bound=3.0, layout="sbi")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons"],
                   help="task names from jaxhep.simulators.TASKS (default: two_moons)")
    p.add_argument("--simulations", type=int, default=10_000, help="training simulations per task")
    p.add_argument("--observations", type=int, default=10,
                   help="C2ST is averaged over observations 1..N (default 10)")
    p.add_argument("--observation-source", choices=["sbibm", "jaxhep"], default="sbibm",
                   help="sbibm's stored observations (default since 2026-12-01) or jaxhep's own draws (the results "
                        "recorded before)")
    p.add_argument("--num-samples", type=int, default=10_000,
                   help="posterior and reference samples per observation (default 10^4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder for the JSON")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--jaxhep-only", action="store_true", help="run jaxhep alone (torch/sbi not needed)")
    only.add_argument("--sbi-only", action="store_true", help="run PyTorch sbi alone")
    p.add_argument("--settings", choices=("sbi", "defaults"), default="sbi",
                   help="'sbi': both libraries with sbi's NPE settings (NSF 5x50, batch 200, lr 5e-4, "
                        "validation 0.1, patience 20); 'defaults': each library's own NPE defaults")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="do not collect and freeze the Python heap before each library trains")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: the cores this process may run on)")
    p.add_argument("--jax-cpu-devices", type=int, default=None,
                   help="JAX CPU devices, over which jaxhep splits each minibatch (NPE devices='all'), as torch "
                        "spreads its work over its threads (default: the cores this process may run on, as "
                        "many as divide the batch size of 200; 1 trains on one device)")
    args = p.parse_args(argv)
    if args.jax_cpu_devices is not None and args.jax_cpu_devices < 1:
        p.error(f"--jax-cpu-devices must be a positive integer, got {args.jax_cpu_devices}")
    for name in ("simulations", "observations", "num_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    return args


def settle_heap(args) -> None:
    """Collect garbage and move every live object out of the garbage collector's reach (see the
    module docstring), unless --no-gc-freeze."""
    if not args.no_gc_freeze:
        gc.collect()
        gc.freeze()


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def jax_versions() -> dict:
    import equinox
    import jax
    import jaxlib

    import jaxhep

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "equinox": equinox.__version__,
            "jaxhep": getattr(jaxhep, "__version__", "unknown"), "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()]}


def _block(tree):
    import equinox as eqx
    import jax

    jax.block_until_ready(eqx.filter(tree, eqx.is_array))


def run_jaxhep(key, task, theta, x, observations, num_samples, settings_mode, c2st_keys, references,
               devices=None) -> dict:
    """Train jaxhep NPE, time sampling and score C2ST for each observation."""
    import equinox as eqx
    import jax

    from jaxhep.diagnostics import c2st
    from jaxhep.sbi import NPE
    from jaxhep.training.fit import _shared_programs

    settings = SBI_SETTINGS if settings_mode == "sbi" else {}
    npe = NPE(**settings, progress=False, devices=devices)
    # Every task pays its own compilation: fits of the same shapes in one process share their
    # compiled programs, so an earlier task of the same sizes (gaussian_linear and bernoulli_glm
    # are both 10 by 10) would otherwise train the later one without compiling.
    _shared_programs.cache_clear()
    jax.clear_caches()
    k_fit, k_sample = jax.random.split(key)
    start = time.perf_counter()
    posterior = npe.fit(k_fit, theta, x, prior=task.prior)
    _block(posterior)
    train_s = time.perf_counter() - start
    history = posterior.history

    def timed(fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        out = np.asarray(jax.block_until_ready(out))
        return out, time.perf_counter() - t0

    sample_keys = jax.random.split(k_sample, len(observations) + 3)
    # The public API as a user calls it: first call (tracing/compilation), then a second one.
    public = lambda k, xo: posterior.sample(k, xo, (num_samples,))  # noqa: E731
    _, sample_first_s = timed(public, sample_keys[-1], observations[0])
    # The same under one eqx.filter_jit around the call (what a user jitting their own loop gets).
    jitted_fn = eqx.filter_jit(lambda post, k, xo: post.sample(k, xo, (num_samples,)))
    _, sample_jit_first_s = timed(jitted_fn, posterior, sample_keys[-2], observations[0])
    _, sample_jit_s = timed(jitted_fn, posterior, sample_keys[-3], observations[0])

    sample_s, c2sts = [], []
    for i, x_obs in enumerate(observations):
        samples, seconds = timed(public, sample_keys[i], x_obs)
        sample_s.append(seconds)
        c2sts.append(_c2st_finite(c2st, c2st_keys[i], references[i], samples))
    return {
        "train_s": train_s,
        "train_s_history": float(history.seconds),
        "epochs": int(history.epochs),
        "best_epoch": int(history.best_epoch),
        "stopped_early": bool(history.stopped_early),
        "train_s_per_epoch": train_s / max(int(history.epochs), 1),
        "best_val_loss": float(np.min(np.asarray(history.val_loss))) if np.size(history.val_loss) else None,
        "sample_first_s": sample_first_s,
        "sample_s": sample_s[0],
        "sample_s_all": sample_s,
        "sample_jit_first_s": sample_jit_first_s,
        "sample_jit_s": sample_jit_s,
        "c2st": c2sts,
        "c2st_mean": float(np.nanmean(c2sts)),
        "settings": {f.name: getattr(npe, f.name) for f in dataclasses.fields(npe)},
    }


def _c2st_finite(c2st, key, reference, samples) -> float:
    finite = np.all(np.isfinite(samples), axis=1)
    if not finite.all():
        print(f"  warning: {int((~finite).sum())} non-finite posterior samples dropped before C2ST", file=sys.stderr)
    return float(c2st(key, reference, samples[finite]))


def run_sbi(seed, task, theta, x, observations, num_samples, settings_mode, c2st_keys, references) -> dict:
    """Train PyTorch sbi NPE, time sampling and score C2ST for each observation."""
    import _peers
    from jaxhep.diagnostics import c2st

    prior = _peers.sbi_prior(task.prior)
    if settings_mode == "sbi":
        run = _peers.train_sbi_npe(theta, x, prior, model=SBI_SETTINGS["density_estimator"],
                                   hidden_features=SBI_SETTINGS["hidden_features"],
                                   num_transforms=SBI_SETTINGS["num_transforms"], seed=seed,
                                   training_batch_size=SBI_SETTINGS["batch_size"],
                                   learning_rate=SBI_SETTINGS["learning_rate"],
                                   validation_fraction=SBI_SETTINGS["validation_fraction"],
                                   stop_after_epochs=SBI_SETTINGS["patience"])
    else:
        run = _peers.train_sbi_npe(theta, x, prior, seed=seed, sbi_defaults=True)
    _, sample_first_s = _peers.sample_sbi(run.posterior, observations[0], num_samples, seed=seed + 1)
    sample_s, c2sts = [], []
    for i, x_obs in enumerate(observations):
        samples, seconds = _peers.sample_sbi(run.posterior, x_obs, num_samples, seed=seed + 2 + i)
        sample_s.append(seconds)
        c2sts.append(_c2st_finite(c2st, c2st_keys[i], references[i], samples))
    summary = run.inference.summary
    return {
        "train_s": run.train_s,
        "epochs": run.epochs,
        "train_s_per_epoch": run.train_s / max(run.epochs, 1),
        "epoch_durations_sum_s": float(np.sum(summary.get("epoch_durations_sec", [np.nan]))),
        "best_val_loss": float(summary["best_validation_loss"][-1]),
        "sample_first_s": sample_first_s,
        "sample_s": sample_s[0],
        "sample_s_all": sample_s,
        "c2st": c2sts,
        "c2st_mean": float(np.nanmean(c2sts)),
        "settings": _jsonable(run.settings),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


def print_table(results: dict) -> None:
    header = f"{'task':<16}{'library':<8}{'train s':>10}{'epochs':>8}{'s/epoch':>9}{'sample s':>10}" \
             f"{'1st sample s':>14}{'jit sample s':>14}{'C2ST':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results["tasks"].items():
        for lib in ("jaxhep", "sbi"):
            if lib in r:
                m = r[lib]
                jit = f"{m['sample_jit_s']:>14.3f}" if "sample_jit_s" in m else f"{'-':>14}"
                print(f"{name:<16}{lib:<8}{m['train_s']:>10.2f}{m['epochs']:>8d}{m['train_s_per_epoch']:>9.3f}"
                      f"{m['sample_s']:>10.3f}{m['sample_first_s']:>14.3f}{jit}{m['c2st_mean']:>8.3f}")
        if "ratio" in r:
            q = r["ratio"]
            print(f"{name:<16}{'sbi/jax':<8}{q['train']:>10.1f}{'':>8}{q['train_per_epoch']:>9.1f}"
                  f"{q['sample']:>10.2f}{'':>14}{q['sample_vs_jit']:>14.2f}")
    print(f"load average at start {results['load_average_start']}, at end {results['load_average_end']}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    run_jax, run_torch = not args.sbi_only, not args.jaxhep_only
    sys.path.insert(0, str(HERE))  # for _peers

    load_start = load_average()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    import jax

    from jaxhep import simulators
    from jaxhep.training.parallel import devices_for_cores

    # Before JAX first runs: its CPU device count is fixed from then on.
    jax_devices = devices_for_cores(SBI_SETTINGS["batch_size"], n=args.jax_cpu_devices)
    cpu_devices = len(jax.devices("cpu"))

    for name in args.tasks:
        if name not in simulators.TASKS:
            raise SystemExit(f"unknown task {name!r}; expected some of: {', '.join(simulators.TASKS)}")
    versions = jax_versions()
    from _machine import machine_info

    machine = machine_info()
    if run_torch:
        import _peers

        machine["torch_threads"] = _peers.set_torch_threads(args.torch_threads)
        versions.update(_peers.versions())

    results = {"benchmark": "npe_vs_sbi", "argv": sys.argv[1:] if argv is None else list(argv),
               "started_utc": started, "settings_mode": args.settings, "simulations": args.simulations,
               "observations": args.observations, "num_samples": args.num_samples, "seed": args.seed,
               "load_average_start": load_start, "machine": machine, "versions": versions,
               "jax_cpu_devices": cpu_devices, "jaxhep_devices": jax_devices, "gc_freeze": not args.no_gc_freeze,
               "tasks": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    libs = "jaxhep" if args.jaxhep_only else "sbi" if args.sbi_only else "both"
    out_file = args.out / f"npe_vs_sbi_{args.settings}_{args.simulations}_{libs}.json"

    root = jax.random.key(args.seed)
    for t, name in enumerate(args.tasks):
        task = simulators.get_task(name)
        n_obs = min(args.observations, task.num_observations)
        k_sim, k_ref, k_c2st, k_jax = jax.random.split(jax.random.fold_in(root, t), 4)
        start = time.perf_counter()
        theta, x = task.simulate(k_sim, args.simulations)
        theta, x = np.asarray(theta), np.asarray(x)
        simulation_s = time.perf_counter() - start
        observations = [np.asarray(task.get_observation(i, args.observation_source)[1]) for i in range(1, n_obs + 1)]
        start = time.perf_counter()
        references = [np.asarray(task.reference_posterior(k, xo, args.num_samples))
                      for k, xo in zip(jax.random.split(k_ref, n_obs), observations)]
        reference_s = time.perf_counter() - start
        c2st_keys = jax.random.split(k_c2st, n_obs)
        entry = {"simulation_s": simulation_s, "reference_s": reference_s, "observations": list(range(1, n_obs + 1))}
        results["tasks"][name] = entry
        if run_jax:
            print(f"[{name}] jaxhep NPE ...", flush=True)
            settle_heap(args)
            entry["jaxhep"] = run_jaxhep(k_jax, task, theta, x, observations, args.num_samples, args.settings,
                                         c2st_keys, references, jax_devices)
        if run_torch:
            print(f"[{name}] sbi NPE ...", flush=True)
            settle_heap(args)
            entry["sbi"] = run_sbi(args.seed, task, theta, x, observations, args.num_samples, args.settings,
                                   c2st_keys, references)
        if run_jax and run_torch:
            j, s = entry["jaxhep"], entry["sbi"]
            entry["ratio"] = {"train": s["train_s"] / j["train_s"],
                              "train_per_epoch": s["train_s_per_epoch"] / j["train_s_per_epoch"],
                              "sample": s["sample_s"] / j["sample_s"],
                              "sample_vs_jit": s["sample_s"] / j["sample_jit_s"]}
        results["load_average_end"] = load_average()
        out_file.write_text(json.dumps(_jsonable(results), indent=2))  # after every task, so partial runs survive
    print()  # sbi ends its convergence message without a newline
    print_table(results)
    print(f"wrote {out_file}")
    return results


if __name__ == "__main__":
    main()
