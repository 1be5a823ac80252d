"""The `jaxhep lattice` sub-command: registration, argument handling, error exit code, tiny end-to-end run."""

import argparse
import json

import pytest

from jaxhep.theory.lattice import cli


def _parser():
    parser = argparse.ArgumentParser(prog="jaxhep")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    return parser


def test_register_adds_lattice_with_handler():
    args = _parser().parse_args(["lattice", "u1", "--steps", "7", "--seed", "3", "--no-progress", "--L", "4"])
    assert args.func is cli.handler
    assert (args.theory, args.steps, args.seed, args.no_progress, args.L, args.out) == ("u1", 7, 3, True, 4, "./jaxhep-out")
    with pytest.raises(SystemExit):
        _parser().parse_args(["lattice", "su3"])


def test_invalid_lattice_size_is_an_error_exit(capsys):
    args = _parser().parse_args(["lattice", "u1", "--L", "6", "--no-progress"])
    assert args.func(args) == 2
    assert "multiple of 4" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_json_and_plot(tmp_path):
    code = cli.main(
        ["--L", "4", "--steps", "20", "--layers", "2", "--hidden", "4", "--mh-samples", "512", "--hmc-chains", "2",
         "--hmc-steps", "200", "--no-progress", "--out", str(tmp_path)],
        theory="phi4",
    )
    assert code == 0
    res = json.loads((tmp_path / "lattice_phi4.json").read_text())
    assert res["training"]["steps"] == 20 and res["flow"]["n_samples"] == 512
    assert (tmp_path / "lattice_phi4.png").stat().st_size > 0
