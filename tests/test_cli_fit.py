"""`jaxhep fit`: SBI on simulations kept in files, checked against a closed-form posterior."""

import json
import re
import warnings

import numpy as np
import pytest

from helpers import NOISE, conjugate_data
from jaxhep.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def write_table(path, columns):
    pq.write_table(pa.table({name: np.asarray(values, np.float64) for name, values in columns.items()}), path)


def test_fit_on_files_matches_the_conjugate_posterior(tmp_path):
    # theta ~ N(0, I), x = theta + N(0, NOISE^2 I): the posterior is N(0.8 x, 0.2 I). The
    # simulations are split over two files, read through a glob pattern.
    theta, x = (np.asarray(a) for a in conjugate_data(3000, seed=5))
    for i, rows in enumerate((slice(0, 1000), slice(1000, 3000))):
        write_table(tmp_path / f"sims_{i}.parquet", {"mu0": theta[rows, 0], "mu1": theta[rows, 1],
                                                     "y0": x[rows, 0], "y1": x[rows, 1]})
    observed = np.array([[0.5, -1.0], [1.5, 0.2], [9.0, 9.0]])
    write_table(tmp_path / "data.parquet", {"y0": observed[:, 0], "y1": observed[:, 1]})
    out = tmp_path / "out"
    code = main(["fit", str(tmp_path / "sims_*.parquet"), "--theta", "mu0,mu1", "--x", "y0,y1",
                 "--observed", str(tmp_path / "data.parquet"), "--observed-rows", "0,1", "--num-samples", "4000",
                 "--max-epochs", "40", "--seed", "1", "--coverage", "300", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulations"] == 3000 and summary["trained_on"] == 2700 and summary["theta"] == ["mu0", "mu1"]
    assert 1 <= summary["epochs"] <= 40
    # Calibration on the 300 held-out simulations: coverage near the level (its Monte Carlo
    # sd is at most 0.029 here; an over- or under-confident posterior would miss by far more).
    levels, coverage = np.array(summary["coverage"]["levels"]), np.array(summary["coverage"]["hpd"])
    assert summary["coverage"]["held_out"] == 300 and len(levels) == 21
    np.testing.assert_allclose(coverage, levels, atol=0.1)
    # Its summary: area to the diagonal within 0.05 (4 sd of 300 pairs is 0.037), and no strong
    # evidence against uniform credibilities.
    assert abs(summary["coverage"]["atc"]) < 0.05 and summary["coverage"]["ks_pvalue"] > 1e-3
    assert summary["coverage"]["ks_statistic"] == pytest.approx(np.max(np.abs(coverage - levels)))
    assert len(summary["observations"]) == 2
    sd = np.sqrt(NOISE**2 / (1 + NOISE**2))  # 0.447
    for row, obs in zip(observed[:2], summary["observations"]):
        np.testing.assert_allclose(obs["x"], row)
        np.testing.assert_allclose(obs["mean"], row / (1 + NOISE**2), atol=0.1)
        np.testing.assert_allclose(obs["std"], sd, rtol=0.15)
        np.testing.assert_allclose(obs["quantiles"]["0.5"], obs["mean"], atol=0.05)
        assert np.all(np.array(obs["quantiles"]["0.025"]) < obs["mean"])
    with np.load(out / "samples.npz") as saved:
        samples = saved["samples"]
        assert samples.shape == (2, 4000, 2) and list(saved["theta_names"]) == ["mu0", "mu1"]
    np.testing.assert_allclose(samples.mean(1), [o["mean"] for o in summary["observations"]], rtol=1e-5)
    for name in ("corner", "loss", "coverage"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The saved posterior is the trained one.
    from jaxhep.io import load

    posterior = load(summary["files"]["posterior"])
    assert posterior.history.epochs == summary["epochs"]


def test_fit_respects_bounds_and_reports_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(0)
    theta = rng.uniform(-1.0, 1.0, (600, 1))
    x = theta + 0.3 * rng.normal(size=(600, 1))
    sims = tmp_path / "sims.parquet"
    write_table(sims, {"t": theta[:, 0], "x": x[:, 0], "label": np.arange(600)})
    write_table(tmp_path / "obs.parquet", {"x": [0.95, np.nan]})
    out = tmp_path / "out"
    common = [str(sims), "--theta", "t", "--x", "x", "--max-epochs", "3", "--num-samples", "500", "--out", str(out),
              "--no-progress"]
    # Data near the edge: all the posterior's samples stay inside the prior's box.
    assert main(["fit", *common, "--bounds=-1:1", "--observed", str(tmp_path / "obs.parquet"),
                 "--observed-rows", "0"]) == 0
    with np.load(out / "samples.npz") as saved:
        assert saved["samples"].shape == (1, 500, 1)
        assert np.all(np.abs(saved["samples"]) <= 1.0)
    assert json.loads((out / "summary.json").read_text())["bounds"] == [[-1.0, 1.0]]
    capsys.readouterr()
    for extra, message in (
            (["--bounds=1:-1"], "--bounds must be LOW:HIGH for each parameter"),
            (["--bounds=-1:1,0:1"], r"--bounds gives 2 intervals for 1 parameters \['t'\]"),
            (["--bounds=0:0.5"], "outside the prior's support"),
            (["--observed", str(tmp_path / "obs.parquet")], r"observed rows \[1\] of .* hold NaN or inf"),
            (["--observed", str(tmp_path / "obs.parquet"), "--observed-rows", "2"], "--observed-rows must lie in 0..1"),
            # The file's row numbers, not positions in the selection (it said [0] here).
            (["--observed", str(tmp_path / "obs.parquet"), "--observed-rows", "1,0"], r"observed rows \[1\] of"),
            (["--x", "t"], r"--theta and --x share columns: \['t'\]"),
            (["--x", "x,"], "--x must be column names separated by commas"),
            (["--x", "z"], "has no column 'z'"),
            (["--method", "abc"], "unknown method 'abc'"),
            (["--coverage", "301"], r"--coverage must lie in 10..300 \(at most half of the 600 finite simulations\)"),
            (["--method", "npse", "--density-estimator", "maf"], "--method npse has its own network"),
            (["--out", str(sims)], "File exists")):
        assert main(["fit", *common, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert re.search(message, err), (extra, err)
    # A column of varying length: the readers' advice in this command's words, and padding with a
    # --fill-value that keeps the short rows (NaN padding drops them from training).
    jets = tmp_path / "jets.parquet"
    pq.write_table(pa.table({"t": theta[:, 0], "x": x[:, 0],
                             "jet": pa.array([list(x[i]) * (1 + i % 3) for i in range(600)])}), jets)
    with_jets = [str(jets), *common[1:3], "--x", "x,jet", *common[5:]]
    assert main(["fit", *with_jets]) == 2
    assert re.search(r"pass --max-length N to pad every row with --fill-value", capsys.readouterr().err)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["fit", *with_jets, "--max-length", "2", "--fill-value", "0"]) == 0
    assert json.loads((out / "summary.json").read_text())["trained_on"] == 600
    with pytest.warns(UserWarning, match="dropped 200 of 600"):
        assert main(["fit", *with_jets, "--max-length", "2"]) == 0

    # A missing file or pattern: a message and exit code 2, not a traceback.
    for missing in (tmp_path / "none.parquet", tmp_path / "none_*.parquet"):
        assert main(["fit", str(missing), *common[1:]]) == 2
        assert re.search(r"jaxhep: error: .*none", capsys.readouterr().err)

    # Simulations with NaN rows: training drops them, and the held-out coverage set is drawn
    # from the finite ones (it once took NaN rows and failed after training).
    theta_nan, x_nan = theta.copy(), x.copy()
    theta_nan[::7, 0], x_nan[3::11, 0] = np.nan, np.inf
    write_table(tmp_path / "nan.parquet", {"t": theta_nan[:, 0], "x": x_nan[:, 0]})
    with pytest.warns(UserWarning, match="dropped"):
        assert main(["fit", str(tmp_path / "nan.parquet"), *common[1:], "--coverage", "50"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["coverage"]["held_out"] == 50 and all(np.isfinite(summary["coverage"]["hpd"]))
