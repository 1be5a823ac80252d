"""`jaxhep run` end to end on a small budget: files written, summary consistent, errors reported."""

import json
import os
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

from jaxhep.cli import build_parser, main


def test_run_writes_plots_and_a_consistent_summary(tmp_path):
    # 80 epochs of batch 100, fewer than early stopping would run here (C2ST 0.526 on 2026-11-30).
    code = main(["run", "--simulations", "1000", "--num-samples", "1000", "--seed", "2", "--max-epochs", "80",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "two_moons_npe_summary.json").read_text())
    for name in ("corner", "loss"):
        png = tmp_path / f"two_moons_npe_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert summary["task"] == "two_moons" and summary["simulations"] == 1000
    # Even 1000 simulations give a posterior that a classifier separates from the exact one
    # only partly; 0.5 is perfect and 1.0 total failure.
    assert 0.45 <= summary["c2st"] < 0.8
    assert np.isfinite(summary["final_val_loss"]) and 1 <= summary["epochs"] <= 80
    # The saved posterior is the one that drew the samples: the same key gives the same mean.
    from jaxhep import simulators
    from jaxhep.io import load

    posterior = load(summary["files"]["posterior"])
    assert posterior.history.epochs == summary["epochs"]
    k_sample = jax.random.split(jax.random.key(2), 5)[2]
    samples = posterior.sample(k_sample, simulators.get_task("two_moons").get_observation(1)[1], (1000,))
    np.testing.assert_allclose(np.asarray(samples).mean(0), summary["posterior_mean"], rtol=1e-4, atol=1e-5)


def test_bad_arguments_give_an_error_code(capsys):
    assert main(["run", "--task", "three_moons", "--no-progress"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["run", "--method", "abc", "--no-progress"]) == 2


def test_all_subcommands_are_registered():
    parser = build_parser()
    for argv in (["run"], ["lattice", "phi4"], ["pinn", "poisson"]):
        assert callable(parser.parse_args(argv).func)


def test_run_accepts_the_diffusion_methods(tmp_path):
    # npse here; fmpe runs end to end in test_run_with_a_set_embedding_on_a_task_of_iid_items.
    code = main(["run", "--method", "npse", "--simulations", "500", "--max-epochs", "3", "--num-samples", "500",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "two_moons_npse_summary.json").read_text())
    assert summary["epochs"] == 3 and 0.45 <= summary["c2st"] <= 1.0
    assert (tmp_path / "two_moons_npse_corner.png").stat().st_size > 5000


def test_a_posterior_that_leaks_out_of_the_box_is_a_message_not_a_traceback(monkeypatch, capsys):
    import jaxhep.cli as cli

    def leaking(args):
        raise eqx.EquinoxRuntimeError("... the posterior leaks almost all its mass; fit with support='transform'")

    monkeypatch.setattr(cli, "run", leaking)
    assert main(["run", "--method", "npse"]) == 2
    err = capsys.readouterr().err
    assert "jaxhep: error: fewer than the requested posterior samples" in err and "--method npe" in err

    def other(args):
        raise RuntimeError("something else")

    monkeypatch.setattr(cli, "run", other)
    with pytest.raises(RuntimeError, match="something else"):
        main(["run"])


def test_run_fills_and_reuses_a_compilation_cache_and_trains_on_the_devices_it_makes(tmp_path):
    # In subprocesses: the cache directory is process-wide JAX configuration, and `--devices 2`
    # must make the two CPU devices before JAX first runs. The second run finds every program
    # it compiles in the cache, so it adds no entries.
    cache = tmp_path / "cache"
    on_cpu = jax.default_backend() == "cpu"  # an accelerator trains on its own device
    argv = [sys.executable, "-m", "jaxhep.cli", "run", "--simulations", "400", "--max-epochs", "2",
            "--num-samples", "300", "--no-progress", "--out", str(tmp_path / "out"), "--compilation-cache", str(cache),
            *(["--devices", "2"] if on_cpu else [])]
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}

    def run_cli():
        # From tmp_path: started in the repository root, `-m` would import the source folder
        # (without jaxhep.sbi, which only the installed package maps) instead of the package.
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads((tmp_path / "out" / "two_moons_npe_summary.json").read_text())

    summary = run_cli()
    first = sorted(p.name for p in cache.iterdir())
    assert len(first) >= 2  # at least the training epoch and the sampler
    assert summary["compilation_cache"] == str(cache) and summary["epochs"] == 2
    if on_cpu:
        assert summary["training_devices"] == ["cpu:0", "cpu:1"]
    run_cli()
    assert sorted(p.name for p in cache.iterdir()) == first


def test_run_with_a_set_embedding_on_a_task_of_iid_items(tmp_path, capsys):
    code = main(["run", "--task", "slcp", "--method", "fmpe", "--embedding", "setnorm", "--simulations", "500",
                 "--max-epochs", "2", "--num-samples", "500", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "slcp_fmpe_summary.json").read_text())
    assert summary["embedding"] == "setnorm" and summary["epochs"] == 2
    # two_moons' x is not a set of iid draws: a clear error, not a silently ignored option.
    assert main(["run", "--embedding", "setnorm", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "needs a task whose x is a set of iid draws (slcp)" in capsys.readouterr().err
    # The CLI spells out the embedding names (no jax import for --help); they are the library's.
    from jaxhep.cli import EMBEDDINGS
    from jaxhep.nn import SET_EMBEDDINGS

    assert sorted(EMBEDDINGS) == sorted(("none", *SET_EMBEDDINGS))


def test_bad_device_counts_are_refused(tmp_path, capsys):
    for bad in ("0", "many"):
        assert main(["run", "--devices", bad, "--no-progress", "--out", str(tmp_path)]) == 2
        assert "--devices must be 'auto', 'all' or a positive count" in capsys.readouterr().err
