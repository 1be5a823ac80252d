"""jaxhep NPE on whatever device JAX runs on (CPU, GPU, TPU): training, sampling, amortized sweeps; writes JSON.

The same code runs unchanged on every backend; this script records what it costs there. For each
case `SIMULATIONS:BATCH` it trains NPE with sbi's settings (those of `npe_vs_sbi.py`: NSF 5x50,
lr 5e-4, patience 20, support="truncate"; the case's batch size) on two_moons simulations drawn
with `task.simulate`. On a CPU backend the minibatches are split over one JAX CPU device per core
(`--jax-cpu-devices 1` for one); on an accelerator, training uses one device:

* `first_fit_s`: a first fit of one epoch, so the compilation of the training and validation
  programs (cold, in this process) plus one epoch;
* `fit_s`, `epochs`, `epoch_ms`: then the full fit with early stopping, which reuses the compiled
  programs, so `fit_s / epochs` is the cost of an epoch (steps and validation);
* `steps_per_s`: optimizer steps per second in that fit.

For the first case it also times posterior sampling (10^4 and 10^6 draws, first and second call),
`log_prob` of 10^6 draws, an amortized sweep (`jax.vmap` of `sample` over 100 observations, 1000
draws each, under one `jax.jit`), and scores C2ST of 10^4 draws against the reference posterior
of observation 1.

    python experiments/benchmarks/npe_device.py --out experiments/benchmarks/out
    python experiments/benchmarks/npe_device.py --cases 2000:200 --max-epochs 5 --out /tmp/x  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402
from npe_vs_sbi import SBI_SETTINGS as _SBI  # noqa: E402

# npe_vs_sbi.py's settings without the batch size, which each case sets.
SBI_SETTINGS = {name: value for name, value in _SBI.items() if name != "batch_size"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["10000:200", "100000:200", "100000:2000", "1000000:2000"],
                   help="SIMULATIONS:BATCH pairs; the first one also gets the sampling measurements")
    p.add_argument("--max-epochs", type=int, default=1000, help="epoch cap of the first case")
    p.add_argument("--max-epochs-large", type=int, default=20, help="epoch cap of the other cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jax-cpu-devices", type=int, default=None,
                   help="on a CPU backend, JAX CPU devices to split minibatches over (default: one per core, as "
                        "many as divide every case's batch size); on an accelerator, training uses one device")
    p.add_argument("--out", default="experiments/benchmarks/out")
    args = p.parse_args(argv)
    cases = []
    for case in args.cases:
        try:
            n, b = (int(v) for v in case.split(":"))
        except ValueError:
            p.error(f"--cases takes SIMULATIONS:BATCH pairs of integers, got {case!r}")
        if n < 10 or b < 1:
            p.error(f"--cases: need at least 10 simulations and a positive batch size, got {case!r}")
        cases.append((n, b))
    args.cases = cases
    if args.jax_cpu_devices is not None and args.jax_cpu_devices < 1:
        p.error("--jax-cpu-devices must be a positive integer")
    for name in ("max_epochs", "max_epochs_large"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def _timed(fn, *args):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def run_case(task, n: int, batch: int, max_epochs: int, seed: int, devices) -> tuple[dict, object]:
    import equinox as eqx
    import jax

    from jaxhep.sbi import NPE

    theta, x = task.simulate(jax.random.key(seed), n)
    theta, x = np.asarray(theta), np.asarray(x)
    settings = dict(SBI_SETTINGS, batch_size=batch, progress=False, devices=devices)
    block = lambda post: jax.block_until_ready(eqx.filter(post, eqx.is_array))  # noqa: E731
    t0 = time.perf_counter()
    block(NPE(**settings, max_epochs=1).fit(jax.random.key(seed + 1), theta, x, prior=task.prior))
    first_fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    posterior = NPE(**settings, max_epochs=max_epochs).fit(jax.random.key(seed + 1), theta, x, prior=task.prior)
    block(posterior)
    fit_s = time.perf_counter() - t0
    epochs = int(posterior.history.epochs)
    n_train = n - int(round(SBI_SETTINGS["validation_fraction"] * n))  # the split of jaxhep.training
    steps = epochs * (n_train // batch)
    return {"simulations": n, "batch_size": batch, "first_fit_s": first_fit_s, "fit_s": fit_s, "epochs": epochs,
            "stopped_early": bool(posterior.history.stopped_early), "epoch_ms": 1e3 * fit_s / epochs,
            "steps_per_s": steps / fit_s,
            "best_val_loss": float(np.min(np.asarray(posterior.history.val_loss)))}, posterior


def sampling(task, posterior, seed: int) -> dict:
    import jax

    from jaxhep.diagnostics import c2st

    x_obs = np.asarray(task.get_observation(1)[1])
    key = jax.random.key(seed + 2)
    out = {}
    for n in (10_000, 1_000_000):
        _, out[f"sample_{n}_first_s"] = _timed(lambda k: posterior.sample(k, x_obs, (n,)), key)
        draws, out[f"sample_{n}_s"] = _timed(lambda k: posterior.sample(k, x_obs, (n,)), jax.random.fold_in(key, 1))
    _, out["log_prob_1000000_first_s"] = _timed(posterior.log_prob, draws, x_obs)
    _, out["log_prob_1000000_s"] = _timed(posterior.log_prob, draws + 0.0, x_obs)
    # Amortized: one compiled call draws for many observations at once.
    x_batch = np.stack([np.asarray(task.get_observation(1 + i % 10)[1]) for i in range(100)])
    sweep = jax.jit(jax.vmap(lambda k, xo: posterior.sample(k, xo, (1000,))))
    keys = jax.random.split(jax.random.fold_in(key, 2), 100)
    many, out["sweep_100x1000_first_s"] = _timed(sweep, keys, x_batch)
    _, out["sweep_100x1000_s"] = _timed(sweep, jax.random.split(jax.random.fold_in(key, 3), 100), x_batch)
    out["sweep_shape"] = list(many.shape)
    reference = task.reference_posterior(jax.random.key(seed + 3), x_obs, 10_000)
    samples = posterior.sample(jax.random.fold_in(key, 4), x_obs, (10_000,))
    (score,), out["c2st_obs1_s"] = _timed(lambda: [c2st(jax.random.key(seed + 4), reference, samples)])
    out["c2st_obs1"] = float(score)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    import math

    import jax
    import jaxlib

    from jaxhep import simulators
    from jaxhep.training.parallel import devices_for_cores

    # Before JAX first runs: its CPU device count is fixed from then on.
    devices = devices_for_cores(math.gcd(*(b for _, b in args.cases)), n=args.jax_cpu_devices)
    task = simulators.get_task("two_moons")
    result = {"benchmark": "npe_device", "settings": SBI_SETTINGS, "training_devices": devices,
              "machine": machine_info(),
              "jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
              "devices": [str(d) for d in jax.devices()],
              "device_kind": jax.devices()[0].device_kind, "cases": []}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"npe_device_{jax.default_backend()}.json"
    for i, (n, batch) in enumerate(args.cases):
        case, posterior = run_case(task, n, batch, args.max_epochs if i == 0 else args.max_epochs_large, args.seed,
                                   devices)
        if i == 0:
            case.update(sampling(task, posterior, args.seed))
        result["cases"].append(case)
        print(json.dumps(case), flush=True)
        path.write_text(json.dumps(result, indent=1))
    print(f"{'simulations':>11} {'batch':>6} {'first fit s':>11} {'fit s':>7} {'epochs':>6} {'epoch ms':>9} {'steps/s':>8}")
    for c in result["cases"]:
        print(f"{c['simulations']:>11} {c['batch_size']:>6} {c['first_fit_s']:>11.2f} {c['fit_s']:>7.2f} "
              f"{c['epochs']:>6} {c['epoch_ms']:>9.1f} {c['steps_per_s']:>8.0f}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    main()
