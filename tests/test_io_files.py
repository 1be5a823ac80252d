"""Reading event tables from ROOT, HDF5 and Parquet files (jaxhep.io.files)."""

import importlib

import jax
import numpy as np
import pytest

from jaxhep import io
from jaxhep.simulators import get_task

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")
h5py = pytest.importorskip("h5py")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# Jets per event: rows of 2, 0, 1 and 4 values (4 rows), the case `max_length` is for.
JETS = [[1.5, 2.5], [], [3.5], [4.5, 5.5, 6.5, 7.5]]


def padded(rows, length, fill=np.nan):
    out = np.full((len(rows), length), fill)
    for i, row in enumerate(rows):
        row = row[:length]
        out[i, :len(row)] = row
    return out


@pytest.fixture(scope="module")
def simulations():
    theta, x = get_task("two_moons").simulate(jax.random.key(0), 4)
    return np.asarray(theta, np.float64), np.asarray(x, np.float64)


def write(fmt, folder, theta, x, jets=JETS):
    """The same table (theta as two scalar columns, x as one (n, 2) column, varying-length jets)
    written in `fmt`; returns the path and the keyword that selects the table."""
    if fmt == "root":
        path = folder / "events.root"
        with uproot.recreate(path) as f:
            f.mktree("events", {"theta0": np.float64, "theta1": np.float64, "x": ("f8", (2,)), "jets": "var * float64"})
            f["events"].extend({"theta0": theta[:, 0], "theta1": theta[:, 1], "x": x, "jets": ak.Array(jets)})
        return path, {}
    if fmt == "hdf5":
        path = folder / "events.h5"
        with h5py.File(path, "w") as f:
            group = f.create_group("sim")
            group["theta0"], group["theta1"], group["x"] = theta[:, 0], theta[:, 1], x
            data = group.create_dataset("jets", (len(jets),), dtype=h5py.vlen_dtype(np.float64))
            for i, row in enumerate(jets):
                data[i] = np.asarray(row, np.float64)
        return path, {"key": "sim"}
    path = folder / "events.parquet"
    pq.write_table(pa.table({"theta0": theta[:, 0], "theta1": theta[:, 1],
                             "x": pa.array(list(x), pa.list_(pa.float64(), 2)),
                             "jets": pa.array(jets, pa.list_(pa.float64()))}), path)
    return path, {}


FORMATS = ["root", "hdf5", "parquet"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_back_what_was_written(fmt, tmp_path, simulations):
    theta, x = simulations
    path, where = write(fmt, tmp_path, theta, x)
    expected = {"theta0": "float64", "theta1": "float64", "x": "float64[2]", "jets": "var * float64"}
    if fmt == "root":
        expected["njets"] = "int32"  # the counter branch ROOT keeps for a varying-length branch
        np.testing.assert_array_equal(io.read_columns(path, ["njets"])["njets"], [len(row) for row in JETS])
    assert io.list_columns(path, **where) == expected
    # float32 by default, the file's float64 with dtype=None; columns in the order asked.
    table = io.read_columns(path, ["x", "theta1", "theta0"], **where)
    assert list(table) == ["x", "theta1", "theta0"]
    np.testing.assert_array_equal(table["x"], x.astype(np.float32))
    np.testing.assert_array_equal(table["theta0"], theta[:, 0].astype(np.float32))
    exact = io.read_array(path, ["theta0", "theta1", "x"], dtype=None, **where)
    assert exact.dtype == np.float64
    np.testing.assert_array_equal(exact, np.concatenate([theta, x], axis=1))
    # Several arrays from one read, in the order asked (not the table's).
    np.testing.assert_array_equal(io.stack_columns(table, ["theta0", "theta1"]), theta.astype(np.float32))
    np.testing.assert_array_equal(io.stack_columns(table, ["x"]), x.astype(np.float32))
    # A row range reads that slice only.
    np.testing.assert_array_equal(io.read_array(path, ["x"], start=1, stop=3, dtype=None, **where), x[1:3])
    np.testing.assert_array_equal(io.read_array(path, ["x"], start=2, dtype=None, **where), x[2:])


@pytest.mark.parametrize("fmt", FORMATS)
def test_varying_length_columns_are_padded_or_cut(fmt, tmp_path, simulations):
    path, where = write(fmt, tmp_path, *simulations)
    three = io.read_columns(path, ["jets"], max_length=3, dtype=None, **where)["jets"]
    np.testing.assert_array_equal(three, padded(JETS, 3))  # NaN-padded, the 4-jet row cut to 3
    cut = io.read_array(path, ["theta0", "jets"], max_length={"jets": 1}, fill_value=-1.0, dtype=None, **where)
    np.testing.assert_array_equal(cut[:, 1], [1.5, -1.0, 3.5, 4.5])
    # The range applies before padding: rows 1..2 are [] and [3.5].
    np.testing.assert_array_equal(io.read_columns(path, ["jets"], start=1, stop=3, max_length=2, dtype=None,
                                                  **where)["jets"], padded(JETS[1:3], 2))
    with pytest.raises(ValueError, match=r"'jets' holds from 0 to 4 values per row; pass max_length="):
        io.read_columns(path, ["jets"], **where)


@pytest.mark.parametrize("fmt", FORMATS)
def test_varying_columns_of_one_length_need_no_padding(fmt, tmp_path, simulations):
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    path, where = write(fmt, tmp_path, *simulations, jets=rows)
    np.testing.assert_array_equal(io.read_columns(path, ["jets"], dtype=None, **where)["jets"], np.array(rows))


def test_root_files_with_several_trees_and_rntuples(tmp_path):
    path = tmp_path / "two.root"
    with uproot.recreate(path) as f:
        f["signal"] = {"m": np.array([1.0, 2.0])}  # uproot writes RNTuples this way
        f.mktree("background", {"m": np.float32, "flag": np.bool_})
        f["background"].extend({"m": np.array([3.0, 4.0, 5.0], np.float32), "flag": np.array([True, False, True])})
    with pytest.raises(ValueError, match=r"holds 2 trees \['background', 'signal'\]; name one with tree="):
        io.read_columns(path)
    np.testing.assert_array_equal(io.read_columns(path, tree="signal")["m"], [1.0, 2.0])
    table = io.read_columns(path, tree="background")
    np.testing.assert_array_equal(table["flag"], [1.0, 0.0, 1.0])
    assert table["flag"].dtype == np.float32
    with pytest.raises(ValueError, match=r"has no tree 'sig'; its trees \(TTree or RNTuple\): \['background', "):
        io.read_columns(path, tree="sig")


def test_hdf5_tables_with_named_fields_and_plain_datasets(tmp_path):
    path = tmp_path / "t.hdf5"
    record = np.zeros(3, dtype=[("a", "f4"), ("b", "f8", (2,))])
    record["a"], record["b"] = [1, 2, 3], [[1, 2], [3, 4], [5, 6]]
    with h5py.File(path, "w") as f:
        f["table"], f["x"], f["label"] = record, np.arange(6.0).reshape(3, 2), np.array([b"a", b"b", b"c"])
    assert io.list_columns(path, key="table") == {"a": "float32", "b": "float64[2]"}
    assert io.list_columns(path)["table"] == "fields ['a', 'b'] (read with key='/table')"
    np.testing.assert_array_equal(io.read_array(path, ["b", "a"], key="table", dtype=None),
                                  [[1, 2, 1], [3, 4, 2], [5, 6, 3]])
    np.testing.assert_array_equal(io.read_columns(path, key="x", dtype=None)["x"], np.arange(6.0).reshape(3, 2))
    with pytest.raises(ValueError, match=r"'table' is a dataset with named fields \['a', 'b'\]; read them with "
                                         r"key='/table'"):
        io.read_columns(path, ["table"])
    with pytest.raises(ValueError, match=r"column 'label' holds \|S1 values; only numbers and booleans"):
        io.read_columns(path, ["label"])
    with pytest.raises(ValueError, match=r"has no group or dataset 'tabel'; at its top: \['label', 'table', 'x'\]"):
        io.read_columns(path, key="tabel")
    # The reader closed the file: it can be opened for writing again.
    with h5py.File(path, "a") as f:
        f["more"] = np.zeros(3)
    # Data kept in a group: listed with the key that reads it, named in the missing-column error
    # (list_columns found nothing and the error listed no column before), and skipped when all
    # columns are read.
    nested = tmp_path / "nested.h5"
    with h5py.File(nested, "w") as f:
        f["sims/mu"], f["top"] = np.arange(3.0), np.ones(3)
    assert io.list_columns(nested) == {"sims": "group (read with key='/sims')", "top": "float64"}
    with pytest.raises(ValueError, match=r"has no column 'mu'; it has \['sims', 'top'\]"):
        io.read_columns(nested, ["mu"])
    with pytest.raises(ValueError, match=r"'sims' is a group, not a column; read its datasets with key='/sims'"):
        io.read_columns(nested, ["sims"])
    assert list(io.read_columns(nested)) == ["top"]
    np.testing.assert_array_equal(io.read_array(nested, ["mu"], key="sims")[:, 0], [0.0, 1.0, 2.0])


def test_parquet_nulls_become_nan(tmp_path):
    path = tmp_path / "t.pq"
    pq.write_table(pa.table({"a": pa.array([1.0, None, 3.0]), "i": pa.array([1, 2, None]),
                             "l": pa.array([[1, 2], None, [3]]), "s": ["x", "y", "z"]}), path)
    table = io.read_columns(path, ["a", "i"], dtype=None)
    np.testing.assert_array_equal(table["a"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(table["i"], [1.0, 2.0, np.nan])
    np.testing.assert_array_equal(io.read_columns(path, ["l"], max_length=2)["l"], padded([[1, 2], [], [3]], 2))
    with pytest.raises(ValueError, match="column 's' holds object values; only numbers and booleans"):
        io.read_columns(path, ["s"])


def test_mixed_lengths_are_refused(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f["a"], f["b"] = np.zeros(3), np.zeros(4)
    with pytest.raises(ValueError, match=r"different numbers of rows: \{'a': 3, 'b': 4\}"):
        io.read_array(path, ["a", "b"])


def test_clear_errors(tmp_path, simulations):
    path, _ = write("parquet", tmp_path, *simulations)
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_columns(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*events.csv.*pass format="):
        io.read_columns(tmp_path / "events.csv")
    with pytest.raises(ValueError, match=r"format must be one of \['hdf5', 'parquet', 'root'\], got 'csv'"):
        io.read_columns(path, format="csv")
    with pytest.raises(ValueError, match=r"has no column 'theta2'; it has \['theta0', 'theta1', 'x', 'jets'\]"):
        io.read_columns(path, ["theta0", "theta2"])
    with pytest.raises(ValueError, match="columns must be a sequence of column names"):
        io.read_columns(path, "theta0")
    with pytest.raises(ValueError, match="columns must be a non-empty sequence"):
        io.read_array(path, [])
    with pytest.raises(ValueError, match="names a column more than once"):
        io.read_columns(path, ["x", "x"])
    with pytest.raises(ValueError, match="tree= names a ROOT tree"):
        io.read_columns(path, tree="events")
    with pytest.raises(ValueError, match="key= names an HDF5 group"):
        io.read_columns(path, key="sim")
    for bad in (dict(start=-1), dict(stop=1.5), dict(start=True)):
        with pytest.raises(ValueError, match="must be a non-negative integer or None"):
            io.read_columns(path, **bad)
    with pytest.raises(ValueError, match=r"stop \(1\) must not be less than start \(2\)"):
        io.read_columns(path, start=2, stop=1)
    for bad in (0, True, 2.0, {"jets": 0}):
        with pytest.raises(ValueError, match="max_length must be a positive integer or a dict"):
            io.read_columns(path, max_length=bad)
    with pytest.raises(ValueError, match=r"max_length names columns that are not read: \['jets'\]"):
        io.read_columns(path, ["x"], max_length={"jets": 2})
    for fmt, suffix in (("root", ".root"), ("hdf5", ".h5"), ("parquet", ".parquet")):
        fake = tmp_path / f"fake{suffix}"
        fake.write_text("not a data file\n")
        with pytest.raises(ValueError, match=f"could not be read as an? {'HDF5' if fmt == 'hdf5' else fmt.title()}"
                                             if fmt != "root" else "could not be read as a ROOT file"):
            io.read_columns(fake)


def test_a_missing_reader_says_how_to_install_it(tmp_path, monkeypatch, simulations):
    path, where = write("hdf5", tmp_path, *simulations)
    real = importlib.import_module

    def without_h5py(name, *args):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_h5py)
    with pytest.raises(ImportError, match=r"reading HDF5 files needs the h5py package: pip install \"jaxhep\[hep\]\""):
        io.read_columns(path, **where)


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_files_are_read_end_to_end(fmt, tmp_path, simulations):
    theta, x = simulations
    parts = [(slice(0, 1), JETS[:1]), (slice(1, 4), JETS[1:])]  # a file of 1 row and one of 3
    paths = []
    for i, (rows, jets) in enumerate(parts):
        (tmp_path / f"part{i}").mkdir()
        path, where = write(fmt, tmp_path / f"part{i}", theta[rows], x[rows], jets=jets)
        paths.append(path)
    whole = np.concatenate([theta, x, padded(JETS, 3)], axis=1)
    kwargs = dict(max_length={"jets": 3}, dtype=None, **where)
    np.testing.assert_array_equal(io.read_array(paths, ["theta0", "theta1", "x", "jets"], **kwargs), whole)
    # A glob pattern reads the matches in sorted order; start/stop count rows across the files.
    pattern = str(tmp_path / "part*" / paths[0].name)
    np.testing.assert_array_equal(io.read_array(pattern, ["theta0", "theta1", "x", "jets"], **kwargs), whole)
    for start, stop in ((0, 1), (1, 3), (0, 2), (3, None), (4, None)):
        np.testing.assert_array_equal(
            io.read_array(paths, ["theta0", "theta1", "x", "jets"], start=start, stop=stop, **kwargs),
            whole[start:stop])
    # Without max_length each file's jets come out at their own width (1 and, here, 0..4), which
    # cannot be stacked: the first file alone has one length.
    with pytest.raises(ValueError, match=r"'jets' holds from 0 to 4 values per row"):
        io.read_columns(paths, ["jets"], **where)
    assert io.list_columns(pattern, **where) == io.list_columns(paths[0], **where)


def test_several_files_errors(tmp_path, simulations):
    theta, x = simulations
    for name, rows in (("a", [[1.0, 2.0]] * 4), ("b", [[1.0, 2.0, 3.0]] * 4)):
        (tmp_path / name).mkdir()
        write("parquet", tmp_path / name, theta, x, jets=rows)
    paths = [tmp_path / "a" / "events.parquet", tmp_path / "b" / "events.parquet"]
    with pytest.raises(ValueError, match=r"column 'jets' has a different width in different files .*pass max_length="):
        io.read_columns(paths, ["jets"])
    np.testing.assert_array_equal(io.read_columns(paths, ["jets"], max_length=2)["jets"], np.tile([1.0, 2.0], (8, 1)))
    pq.write_table(pa.table({"theta0": theta[:, 0]}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"c.parquet' has no column 'x'"):
        io.read_columns([paths[0], tmp_path / "c.parquet"], ["theta0", "x"])
    with pytest.raises(ValueError, match=r"has the columns \['theta0'\], but .* has \['theta0', 'theta1', 'x', 'jets'\]"):
        io.read_columns([paths[0], tmp_path / "c.parquet"])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        io.read_columns(str(tmp_path / "nothing_*.parquet"))
    for bad in ([], [1, 2], 3):
        with pytest.raises(ValueError, match="path must be a file path, a glob pattern or a non-empty list of them"):
            io.read_columns(bad)
