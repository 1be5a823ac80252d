"""`jaxhep lattice phi4|u1`: train a lattice flow, sample it exactly with Metropolis, compare with HMC."""

from __future__ import annotations

import argparse
import os
import sys


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("theory", choices=["phi4", "u1"], help="phi4 (L=8, m2=-4, lam=8) or u1 (L=8, beta=2) by default")
    parser.add_argument("--steps", type=int, default=None,
                        help="most reverse-KL training steps (default 100000: the time limit decides)")
    parser.add_argument("--max-train-seconds", type=float, default=None,
                        help="stop training after this wall time (default 600 s phi4, 1500 s u1)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--out", default="./jaxhep-out",
                        help="output directory for the JSON, the plot and the flow's weights (default ./jaxhep-out)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--L", type=int, default=8, help="lattice extent")
    parser.add_argument("--m2", type=float, default=-4.0, help="phi4 mass squared")
    parser.add_argument("--lam", type=float, default=8.0, help="phi4 quartic coupling")
    parser.add_argument("--beta", type=float, default=2.0, help="U(1) inverse coupling")
    parser.add_argument("--layers", type=int, default=None, help="coupling layers (default 16 phi4, 24 u1)")
    parser.add_argument("--coupling", choices=["affine", "spline"], default="affine", help="phi4 coupling type")
    parser.add_argument("--hidden", type=int, nargs="+", default=[8, 8], help="conditioner hidden channels")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--mh-samples", type=int, default=32768, help="flow Metropolis chain length")
    parser.add_argument("--hmc-chains", type=int, default=4, help="independent HMC chains")
    parser.add_argument("--hmc-steps", type=int, default=20000, help="recorded HMC trajectories per chain")
    parser.add_argument("--hmc-step-size", type=float, default=0.1, help="HMC leapfrog step")
    parser.add_argument("--hmc-leapfrog", type=int, default=10, help="leapfrog steps per trajectory")
    parser.add_argument("--name", default=None, help="output file stem (default lattice_<theory>)")


def handler(args: argparse.Namespace) -> int:
    """Run the study selected by `args`; print the table; write JSON and plot. Returns an exit code."""
    import jax

    from .studies import format_table, run_phi4_study, run_u1_study, save_outputs

    default_seconds = 600.0 if args.theory == "phi4" else 1500.0
    common = dict(
        L=args.L, hidden_channels=tuple(args.hidden), batch_size=args.batch_size, learning_rate=args.lr,
        max_train_seconds=default_seconds if args.max_train_seconds is None else args.max_train_seconds,
        n_mh=args.mh_samples, hmc_chains=args.hmc_chains,
        hmc_steps=args.hmc_steps, hmc_step_size=args.hmc_step_size, hmc_n_leapfrog=args.hmc_leapfrog,
        progress=not args.no_progress,
    )
    try:
        key = jax.random.key(args.seed)
        if args.theory == "phi4":
            results, arrays = run_phi4_study(
                key, m2=args.m2, lam=args.lam, n_layers=args.layers or 16, coupling=args.coupling,
                train_steps=args.steps or 100_000, **common,
            )
        else:
            results, arrays = run_u1_study(
                key, beta=args.beta, n_layers=args.layers or 24, train_steps=args.steps or 100_000, **common
            )
    except ValueError as e:
        print(f"jaxhep lattice: error: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    name = args.name or f"lattice_{args.theory}"
    jpath, ppath = save_outputs(results, arrays, args.out, name)
    print(f"wrote {jpath}, {ppath} and the flow's weights in {os.path.join(args.out, name + '.eqx')}")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `lattice` sub-command to an argparse subparsers object; its handler is `args.func`."""
    parser = subparsers.add_parser("lattice", help="flow-based sampling of lattice field theories (phi4, U(1))")
    _add_arguments(parser)
    parser.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None, theory: str | None = None) -> int:
    """Stand-alone entry (used by experiments/lattice_*.py): `theory` is prepended to argv when given."""
    parser = argparse.ArgumentParser(prog="jaxhep lattice")
    _add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    if theory is not None:
        argv = [theory, *argv]
    args = parser.parse_args(argv)
    return handler(args)
