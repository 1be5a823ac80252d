"""`jaxhep pinn <problem>`: train a built-in PINN problem, print its error and time, write JSON and a plot."""

from __future__ import annotations

import argparse
import sys

from jaxhep.theory.pinn.problems import BUILTINS


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the PINN options to a parser (used by the sub-command and the experiment scripts)."""
    parser.add_argument("problem", choices=sorted(BUILTINS), help="built-in problem")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default: the problem's setting)")
    parser.add_argument("--lbfgs-steps", type=int, default=None, help="L-BFGS iterations (default: the problem's)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="wall-time budget of the Adam phase (default: the problem's)")
    parser.add_argument("--lbfgs-max-seconds", type=float, default=None,
                        help="wall-time budget of the L-BFGS phase (default: the problem's)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--out", default="./jaxhep-out", help="output directory for JSON and plot (default ./jaxhep-out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def handler(args: argparse.Namespace) -> int:
    """Run the problem named in `args`; return the exit code (0 on success)."""
    from jaxhep.theory.pinn.study import run_benchmark

    overrides = {}
    if args.max_seconds is not None:
        overrides["max_seconds"] = args.max_seconds
    if args.lbfgs_max_seconds is not None:
        overrides["lbfgs_max_seconds"] = args.lbfgs_max_seconds
    result = run_benchmark(args.problem, seed=args.seed, steps=args.steps, lbfgs_steps=args.lbfgs_steps,
                           out=args.out, progress=not args.no_progress, config_overrides=overrides)
    print("wrote " + ", ".join(result["files"]))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `pinn` sub-command to an argparse sub-parsers object.

    Arguments:
        subparsers: the object returned by `ArgumentParser.add_subparsers()`.

    Returns:
        The new sub-parser (its `func` default is `handler`).
    """
    parser = subparsers.add_parser("pinn", help="train a built-in physics-informed neural network problem",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None, problem: str | None = None) -> int:
    """Stand-alone entry (experiment scripts): parse `argv` (optionally with a fixed problem) and run."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__))
    argv = list(sys.argv[1:] if argv is None else argv)
    if problem is not None:
        argv = [problem] + argv
    return handler(parser.parse_args(argv))
