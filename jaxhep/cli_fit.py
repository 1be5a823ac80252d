"""`jaxhep fit`: train a posterior estimator on simulations kept in files (ROOT, HDF5, Parquet) and
sample it for observed data.

    jaxhep fit sims.parquet --theta mass,width --x m1,m2,m3 --observed data.parquet --bounds 100:200,0:10

reads the training pairs (theta, x) from the simulation files (a list or a glob pattern), trains
NPE (or NPSE/FMPE), and, for each row of the observed file, draws posterior samples and reports
their mean, standard deviation and 2.5/16/50/84/97.5% quantiles. Written into `--out`: the
trained posterior (`posterior.jaxhep`, for `jaxhep.io.load`), the loss curves, a corner plot of
the first observation's posterior, all samples (`samples.npz`, shape (observations, samples,
parameters)) and `summary.json`. With `--coverage N`, N random simulations are kept out of
training and the expected coverage of the posterior's highest-density regions on them is
reported (and plotted), with its area to the diagonal and a KS p-value (`coverage_summary`): the
calibration check for a simulator without a reference posterior.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time

QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"{option} must be column names separated by commas, got {text!r}")
    return names


def _bounds(text: str | None, theta_names: list[str]):
    """The box prior that `--bounds LOW:HIGH,...` gives, or None."""
    if text is None:
        return None
    import numpy as np
    import numpyro.distributions as dist

    parts = text.split(",")
    try:
        pairs = [tuple(float(v) for v in part.split(":")) for part in parts]
    except ValueError:
        pairs = []
    if len(pairs) != len(parts) or any(len(p) != 2 or not np.all(np.isfinite(p)) or p[0] >= p[1] for p in pairs):
        raise ValueError(f"--bounds must be LOW:HIGH for each parameter, separated by commas, with finite LOW < HIGH "
                         f"(e.g. -1:1,0:5), got {text!r}")
    if len(pairs) != len(theta_names):
        raise ValueError(f"--bounds gives {len(pairs)} intervals for {len(theta_names)} parameters {theta_names}")
    low, high = (np.array(v, np.float32) for v in zip(*pairs))
    return dist.Uniform(low, high).to_event(1)


@contextlib.contextmanager
def _cli_words():
    """Reword the file readers' messages, which name Python arguments (tree=, key=, max_length=),
    with this command's options."""
    try:
        yield
    except ValueError as err:
        text = re.sub(r"max_length= \(an int, or a dict such as \{[^}]*\}\)", "--max-length N", str(err))
        text = re.sub(r"\b(tree|key)=(?=')", r"--\1 ", text)
        text = re.sub(r"\b(tree|key|max_length|fill_value)=",
                      lambda m: "--" + m.group(1).replace("_", "-"), text)
        raise ValueError(text.replace(" fill_value ", " --fill-value ")) from err


def fit_files(args: argparse.Namespace) -> int:
    """Train on simulations read from files, sample for observed rows, write the results.

    Returns:
        The exit code.
    """
    from jaxhep.cli import _setup_run

    method_class, settings = _setup_run(args)

    import jax
    import numpy as np

    import jaxhep
    from jaxhep import compilation
    from jaxhep.diagnostics import coverage_summary, expected_coverage
    from jaxhep.io import read_array, read_columns, save, stack_columns
    from jaxhep.plotting import corner, coverage_curve, loss_curves

    theta_names, x_names = _names(args.theta, "--theta"), _names(args.x, "--x")
    if set(theta_names) & set(x_names):
        raise ValueError(f"--theta and --x share columns: {sorted(set(theta_names) & set(x_names))}")
    prior = _bounds(args.bounds, theta_names)
    read = dict(tree=args.tree, key=args.key, max_length=args.max_length, fill_value=args.fill_value)
    say = print if settings["progress"] else (lambda *a, **k: None)

    t0 = time.perf_counter()
    with _cli_words():
        table = read_columns(args.simulations, theta_names + x_names, **read)  # each file read once
    theta, x = stack_columns(table, theta_names), stack_columns(table, x_names)
    del table
    t_read = time.perf_counter() - t0
    say(f"read {len(theta)} simulations (theta {theta.shape[1]}, x {x.shape[1]} numbers) in {t_read:.1f} s")
    if theta.shape[1] != len(theta_names):
        raise ValueError(f"--theta columns must hold one number per row each; {theta_names} give {theta.shape[1]}")
    x_obs = None
    if args.observed is not None:
        with _cli_words():
            x_obs = read_array(args.observed, x_names, **read)
        rows = list(range(len(x_obs)))  # the rows of the file, for messages
        if args.observed_rows is not None:
            rows = [int(r) for r in _names(args.observed_rows, "--observed-rows")]
            if any(not 0 <= r < len(x_obs) for r in rows):
                raise ValueError(f"--observed-rows must lie in 0..{len(x_obs) - 1}, got {args.observed_rows!r}")
            x_obs = x_obs[rows]
        if len(x_obs) == 0 or x_obs.shape[1] != x.shape[1]:
            raise ValueError(f"the observed data must have at least one row of {x.shape[1]} numbers (the x of the "
                             f"simulations), got shape {x_obs.shape}")
        if not np.all(np.isfinite(x_obs)):
            bad = [rows[i] for i in np.flatnonzero(~np.all(np.isfinite(x_obs), axis=1))]
            raise ValueError(f"observed rows {bad} of {args.observed} hold NaN or inf (rows padded by --max-length "
                             f"hold --fill-value, NaN by default); choose others with --observed-rows")

    n_read, held_out = len(theta), None
    if args.coverage:
        # A random set of simulations, kept out of training, on which the posterior's credible
        # regions are checked: finite ones only (training drops the others with a warning).
        finite = np.flatnonzero(np.all(np.isfinite(theta), axis=1) & np.all(np.isfinite(x), axis=1))
        if not 10 <= args.coverage <= len(finite) // 2:
            raise ValueError(f"--coverage must lie in 10..{len(finite) // 2} (at most half of the {len(finite)} "
                             f"finite simulations), got {args.coverage}")
        test = np.random.default_rng(args.seed).permutation(finite)[:args.coverage]
        train = np.setdiff1d(np.arange(len(theta)), test)
        held_out = theta[test], x[test]
        theta, x = theta[train], x[train]

    # Before training, so that an --out that cannot be written fails now rather than after it.
    os.makedirs(args.out, exist_ok=True)
    if not os.access(args.out, os.W_OK):
        raise ValueError(f"--out {args.out!r} is not writable")

    k_fit, k_sample, k_coverage = jax.random.split(jax.random.key(args.seed), 3)
    t0 = time.perf_counter()
    posterior = method_class(**settings).fit(k_fit, theta, x, prior=prior)
    t_train = time.perf_counter() - t0
    say(f"trained {args.method} in {t_train:.1f} s ({posterior.history.epochs} epochs)")

    files = {"posterior": os.path.join(args.out, "posterior.jaxhep"), "loss": os.path.join(args.out, "loss.png")}
    save(files["posterior"], posterior, overwrite=True)
    loss_curves(posterior.history, path=files["loss"])
    summary = {
        "simulations": n_read, "trained_on": len(theta), "simulation_files": args.simulations, "theta": theta_names, "x": x_names,
        "bounds": None if prior is None else np.stack([prior.base_dist.low, prior.base_dist.high], 1).tolist(),
        "method": args.method, "seed": args.seed, "epochs": posterior.history.epochs,
        "best_epoch": posterior.history.best_epoch,
        "final_val_loss": float(posterior.history.val_loss[-1]) if posterior.history.val_loss.size else None,
        "seconds": {"read": t_read, "train": t_train},
        "versions": {"jaxhep": jaxhep.__version__, "jax": jax.__version__},
    }
    if x_obs is not None:
        sample = compilation.jit(lambda k, xo: posterior.sample(k, xo, (args.num_samples,)))
        t0 = time.perf_counter()
        samples = np.swapaxes(np.asarray(sample(k_sample, x_obs)), 0, 1)  # (observations, samples, theta)
        summary["seconds"]["sample"] = time.perf_counter() - t0
        say(f"drew {args.num_samples} samples for each of {len(x_obs)} observations")
        files["samples"] = os.path.join(args.out, "samples.npz")
        np.savez(files["samples"], samples=samples, x_observed=x_obs, theta_names=np.array(theta_names))
        files["corner"] = os.path.join(args.out, "corner.png")
        corner({f"jaxhep {args.method.upper()}": samples[0]}, labels=theta_names, path=files["corner"])
        summary["observations"] = [
            {"x": row.tolist(), "mean": s.mean(0).tolist(), "std": s.std(0).tolist(),
             "quantiles": {str(q): np.quantile(s, q, axis=0).tolist() for q in QUANTILES}}
            for row, s in zip(x_obs, samples)]
    if held_out is not None:
        levels = np.linspace(0.0, 1.0, 21)
        t0 = time.perf_counter()
        coverage = expected_coverage(k_coverage, posterior, *held_out, levels, num_posterior_samples=500)
        summary["seconds"]["coverage"] = time.perf_counter() - t0
        files["coverage"] = os.path.join(args.out, "coverage.png")
        coverage_curve(levels, coverage, path=files["coverage"], num_pairs=len(held_out[0]))
        summary["coverage"] = {"held_out": len(held_out[0]), "levels": levels.tolist(), "hpd": coverage.tolist(),
                               **coverage_summary(coverage, levels, len(held_out[0]))}
        at = {f"{q:.2f}": float(coverage[i]) for i, q in enumerate(levels) if round(q, 2) in (0.5, 0.9, 0.95)}
        say(f"expected coverage of the highest-density regions on {len(held_out[0])} held-out simulations: "
            + ", ".join(f"{v:.2f} at {k}" for k, v in at.items()) + " (calibrated: equal to the level); "
            f"area to the diagonal over [0.5, 1] {summary['coverage']['atc']:+.3f} (negative: over-confident), "
            f"KS p-value {summary['coverage']['ks_pvalue']:.2g}")
    summary["files"] = files
    json_path = os.path.join(args.out, "summary.json")
    with open(json_path, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({"simulations": n_read, "epochs": posterior.history.epochs, "summary": json_path}))
    return 0


def register(sub) -> None:
    """Add the `fit` subcommand to the `jaxhep` parser's subparsers."""
    from jaxhep.cli import add_common_arguments

    parser = sub.add_parser("fit", help="train a posterior on simulations in ROOT/HDF5/Parquet files and sample it "
                                        "for observed data",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("simulations", nargs="+", help="simulation files (ROOT, HDF5, Parquet), or a glob pattern")
    parser.add_argument("--theta", required=True, help="the parameter columns, separated by commas")
    parser.add_argument("--x", required=True, help="the data columns, separated by commas")
    parser.add_argument("--observed", default=None, help="a file with the observed data (the --x columns)")
    parser.add_argument("--observed-rows", default=None, help="which rows of --observed (e.g. 0,3; default all)")
    parser.add_argument("--bounds", default=None,
                        help="a uniform prior box LOW:HIGH per parameter, separated by commas: the posterior "
                             "then puts no mass outside it; write --bounds=-1:1,0:5 when it starts with a minus "
                             "(default: no bounds)")
    parser.add_argument("--tree", default=None, help="ROOT: the TTree or RNTuple to read")
    parser.add_argument("--key", default=None, help="HDF5: the group or table to read")
    parser.add_argument("--max-length", type=int, default=None,
                        help="pad or cut columns with a varying number of values per row to this many; padded "
                             "values are --fill-value")
    parser.add_argument("--fill-value", type=float, default=float("nan"),
                        help="the value that pads rows shorter than --max-length (default NaN: simulations with a "
                             "padded value are then dropped from training, with a warning; give a number, e.g. 0, "
                             "to keep them)")
    parser.add_argument("--coverage", type=int, default=0, metavar="N",
                        help="keep N random simulations out of training and report the expected coverage of the "
                             "posterior's highest-density regions on them, a calibration check (default 0: off)")
    parser.add_argument("--out", default="./jaxhep-fit", help="output directory (default ./jaxhep-fit)")
    add_common_arguments(parser)
    parser.set_defaults(func=fit_files)
