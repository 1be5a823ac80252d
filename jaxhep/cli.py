"""The `jaxhep` command: `jaxhep run` (the main SBI job), `jaxhep fit` (SBI on simulations kept in files,
see `jaxhep.cli_fit`), `jaxhep lattice`, `jaxhep pinn`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time



def _available_methods() -> tuple[str, ...]:
    import jaxhep.sbi as sbi_pkg

    return tuple(m for m in ("npe", "npse", "fmpe") if hasattr(sbi_pkg, m.upper()))


# "none" and the names of jaxhep.nn.SET_EMBEDDINGS, spelled out so that --help needs no jax import.
EMBEDDINGS = ("none", "setnorm", "deepsets")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that `jaxhep run` and `jaxhep fit` share: method, sampling, training, devices."""
    parser.add_argument("--method", default="npe", help="npe (default), npse or fmpe")
    parser.add_argument("--density-estimator", default=None,
                        help="NPE density: nsf (default), nsf_autoregressive, maf, mdn (--method npe only)")
    parser.add_argument("--num-samples", type=int, default=10_000, help="posterior samples to draw (default 10000)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap on training epochs (default: the method's)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar and the status lines (the final JSON line stays)")
    parser.add_argument("--devices", default="auto",
                        help="devices to split training minibatches over: 'auto' (default: on a machine without "
                             "an accelerator, one JAX CPU device per core, up to 4 and dividing the batch size; "
                             "else one accelerator), 'all' (every device of JAX's default backend: on the CPU "
                             "just one, since JAX makes one CPU device unless told otherwise) or a count (on the "
                             "CPU, that many CPU devices are made)")
    parser.add_argument("--compilation-cache", metavar="DIR", default=None,
                        help="keep XLA's compiled programs in DIR (JAX's persistent compilation cache), so that "
                             "a repeated run with the same settings skips most compilation (default: off)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="two_moons", help="benchmark task (default two_moons)")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="none",
                        help="summarise x before the density, for tasks whose x is a set of iid draws (slcp): "
                             "'setnorm' (items standardised within each x, jaxhep.nn.PermutationInvariant with "
                             "standardize=True), 'deepsets' (plain), or 'none' (default)")
    parser.add_argument("--simulations", type=int, default=10_000, help="training simulations (default 10000)")
    parser.add_argument("--observation", type=int, default=1, help="built-in observation number (1-10)")
    parser.add_argument("--out", default="./jaxhep-out", help="output directory (default ./jaxhep-out)")
    add_common_arguments(parser)


def _setup_run(args: argparse.Namespace):
    """Check the shared options, make the CPU devices training will use (before JAX first runs)
    and switch on the compilation cache if asked; returns (estimator class, the estimator's
    settings that the shared options give)."""
    import dataclasses

    import jax

    import jaxhep.sbi as sbi_pkg

    if args.num_samples < 10:
        raise ValueError(f"--num-samples must be at least 10, got {args.num_samples}")
    methods = _available_methods()
    if args.method not in methods:
        raise ValueError(f"unknown method {args.method!r}; expected one of {methods}")
    method_class = getattr(sbi_pkg, args.method.upper())
    batch_size = next(f.default for f in dataclasses.fields(method_class) if f.name == "batch_size")
    devices = _training_devices(str(args.devices), batch_size)
    if args.compilation_cache:
        os.makedirs(args.compilation_cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(args.compilation_cache))
        # Every program, however quick to compile: JAX's default (programs that took 1 s or more)
        # would leave out the sampling and C2ST programs, and with any threshold, whether a program
        # near it is cached would depend on how busy the machine is.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    settings = {"progress": not args.no_progress, "devices": devices}
    if args.max_epochs is not None:
        settings["max_epochs"] = args.max_epochs
    if args.method == "npe":
        settings["density_estimator"] = args.density_estimator or "nsf"
    elif args.density_estimator is not None:
        raise ValueError(f"--density-estimator chooses NPE's density; --method {args.method} has its own network")
    return method_class, settings


def _training_devices(choice: str, batch_size: int) -> str | int | None:
    """The estimators' `devices` for `--devices`, after making the CPU devices it needs.

    Must run before JAX's first computation to change the CPU device count; later (e.g. a second
    `run` in one process) the devices JAX already has are used. A CPU device count set by the user
    (JAX_NUM_CPU_DEVICES, or --xla_force_host_platform_device_count in XLA_FLAGS) is kept.
    """
    import jax

    from jaxhep.training import use_cpu_cores
    from jaxhep.training.parallel import devices_for_cores

    if choice == "all":
        return "all"
    user_set = "JAX_NUM_CPU_DEVICES" in os.environ or "xla_force_host_platform_device_count" in os.environ.get(
        "XLA_FLAGS", "")
    if choice == "auto":
        if not user_set:
            try:
                return devices_for_cores(batch_size, limit=4)
            except RuntimeError:
                pass  # JAX has run already: use the devices it has, if they split the batch
        count = len(jax.devices())
        return count if jax.default_backend() == "cpu" and count > 1 and batch_size % count == 0 else None
    try:
        wanted = int(choice)
    except ValueError:
        raise ValueError(f"--devices must be 'auto', 'all' or a positive count, got {choice!r}") from None
    if wanted < 1:
        raise ValueError(f"--devices must be 'auto', 'all' or a positive count, got {choice!r}")
    if not user_set:
        try:
            use_cpu_cores(wanted)
        except RuntimeError:
            pass  # JAX has run already: its devices stay, and training checks that there are enough
    return wanted


def run(args: argparse.Namespace) -> int:
    """Train a posterior estimator on a task, sample it for a built-in observation, compare with
    the task's reference posterior by C2ST, and write a corner plot, a loss plot and a JSON summary.

    Returns:
        The exit code.
    """
    if args.simulations < 10:
        raise ValueError(f"--simulations must be at least 10, got {args.simulations}")
    method_class, settings = _setup_run(args)  # before JAX first runs
    devices = settings["devices"]

    import jax
    import numpy as np

    import jaxhep
    from jaxhep import compilation, simulators
    from jaxhep.diagnostics import c2st
    from jaxhep.io import save
    from jaxhep.plotting import corner, loss_curves

    task = simulators.get_task(args.task)
    if not 1 <= args.observation <= task.num_observations:
        raise ValueError(f"--observation must lie in 1..{task.num_observations}, got {args.observation}")
    if args.embedding != "none" and task.iid_items is None:
        with_items = [name for name in simulators.TASKS if simulators.get_task(name).iid_items is not None]
        raise ValueError(f"--embedding {args.embedding} needs a task whose x is a set of iid draws "
                         f"({', '.join(with_items)}); {task.name}'s x is not")
    os.makedirs(args.out, exist_ok=True)
    say = print if settings["progress"] else (lambda *a, **k: None)

    k_sim, k_fit, k_sample, k_ref, k_c2st = jax.random.split(jax.random.key(args.seed), 5)
    t0 = time.perf_counter()
    theta, x = task.simulate(k_sim, args.simulations)
    t_sim = time.perf_counter() - t0
    say(f"simulated {args.simulations} {task.name} pairs in {t_sim:.1f} s")

    if args.embedding != "none":
        from jaxhep.nn import set_embedding

        settings["embedding_net"] = set_embedding(args.embedding, task.iid_items, key=jax.random.fold_in(k_fit, 1))
    estimator = method_class(**settings)
    t0 = time.perf_counter()
    posterior = estimator.fit(k_fit, theta, x, prior=task.prior)
    t_train = time.perf_counter() - t0
    n_training = {None: 1, "all": len(jax.devices())}.get(devices, devices)
    on = "" if devices is None else f" on {n_training} {jax.default_backend()} devices"
    say(f"trained {args.method} in {t_train:.1f} s ({posterior.history.epochs} epochs{on})")

    theta_true, x_obs = task.get_observation(args.observation)
    sample = compilation.jit(lambda k, xo: posterior.sample(k, xo, (args.num_samples,)))
    t0 = time.perf_counter()
    samples = jax.block_until_ready(sample(k_sample, x_obs))
    t_sample_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(sample(jax.random.fold_in(k_sample, 1), x_obs))
    t_sample = time.perf_counter() - t0
    say(f"drew {args.num_samples} samples in {t_sample:.3f} s ({t_sample_first:.1f} s with compilation)")

    t0 = time.perf_counter()
    reference = task.reference_posterior(k_ref, x_obs, args.num_samples)
    t_ref = time.perf_counter() - t0
    accuracy = float(c2st(k_c2st, np.asarray(samples), np.asarray(reference)))
    say(f"C2ST against the reference posterior: {accuracy:.3f} (0.5 is perfect)")

    labels = [f"theta_{i + 1}" for i in range(task.theta_dim)]
    corner_path = os.path.join(args.out, f"{task.name}_{args.method}_corner.png")
    corner({f"jaxhep {args.method.upper()}": np.asarray(samples), "reference": np.asarray(reference)},
           labels=labels, truth=np.asarray(theta_true), path=corner_path)
    loss_path = os.path.join(args.out, f"{task.name}_{args.method}_loss.png")
    loss_curves(posterior.history, path=loss_path)
    posterior_path = os.path.join(args.out, f"{task.name}_{args.method}_posterior.jaxhep")
    save(posterior_path, posterior, overwrite=True)
    summary = {
        "task": task.name, "method": args.method, "embedding": args.embedding, "simulations": args.simulations,
        "observation": args.observation, "seed": args.seed, "num_samples": args.num_samples,
        "c2st": accuracy, "epochs": posterior.history.epochs, "best_epoch": posterior.history.best_epoch,
        "final_val_loss": float(posterior.history.val_loss[-1]) if posterior.history.val_loss.size else None,
        "seconds": {"simulate": t_sim, "train": t_train, "sample": t_sample,
                    "sample_with_compile": t_sample_first, "reference": t_ref},
        "posterior_mean": np.asarray(samples).mean(0).tolist(),
        "reference_mean": np.asarray(reference).mean(0).tolist(),
        "theta_true": np.asarray(theta_true).tolist(),
        "files": {"corner": corner_path, "loss": loss_path, "posterior": posterior_path},
        "compilation_cache": os.path.abspath(args.compilation_cache) if args.compilation_cache else None,
        "versions": {"jaxhep": jaxhep.__version__, "jax": jax.__version__, "python": platform.python_version()},
        "device": str(jax.devices()[0]),
        "training_devices": [str(d) for d in jax.devices()[:n_training]],
    }
    json_path = os.path.join(args.out, f"{task.name}_{args.method}_summary.json")
    with open(json_path, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: summary[k] for k in ("task", "method", "c2st", "epochs")} | {"summary": json_path}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `jaxhep` command."""
    parser = argparse.ArgumentParser(prog="jaxhep", description="jaxhep: SBI and theory tools in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train a posterior (NPE, NPSE or FMPE) on a benchmark task and compare "
                                                  "it with the task's reference posterior")
    _add_run_arguments(run_parser)
    run_parser.set_defaults(func=run)
    for module in ("jaxhep.cli_fit", "jaxhep.theory.lattice.cli", "jaxhep.theory.pinn.cli"):
        try:
            __import__(module, fromlist=["register"]).register(sub)
        except ImportError as err:  # a theory package that fails to import must not break `jaxhep run`
            print(f"warning: {module} unavailable: {err}", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxhep` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError) as err:
        # Bad input, a missing or unwritable file, a missing optional reader: a message, not a
        # traceback.
        print(f"jaxhep: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # A posterior fitted with truncation at the prior's box (NPSE's and FMPE's default) that
        # puts almost no mass inside it cannot be sampled; the library's advice names an option
        # of the Python API, so say what to do here.
        from jaxhep.densities.standardize import LEAK_PHRASE, MAX_REJECTION_ROUNDS

        if LEAK_PHRASE not in str(err):
            raise
        print("jaxhep: error: fewer than the requested posterior samples fell inside the prior's box, even after "
              f"drawing {MAX_REJECTION_ROUNDS} times as many: the trained model puts almost all its mass outside "
              "it (typical of a briefly trained NPSE/FMPE); train longer (--max-epochs, --simulations) or use "
              "--method npe, whose samples always lie inside the box", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
