"""Reading event tables from the files HEP analyses keep them in: ROOT (TTree or RNTuple, through
uproot), HDF5 (through h5py) and Parquet (through pyarrow).

Each row is one event (or simulation); each column one quantity. `read_columns` returns the
columns asked for as numpy arrays, `read_array` stacks them into the `(n, features)` matrix
that `NPE.fit`, the unfolding methods and the diagnostics take, and `list_columns` says what a
file holds. The readers are optional dependencies (`pip install "jaxhep[hep]"`); each is imported
only when a file of its format is read.

Columns may hold one number per row (shape `(n,)`), a fixed number (`(n, k)`: a ROOT `double[3]`
branch, an HDF5 dataset of shape `(n, k)`, a Parquet fixed-size list), or a varying number (a
ROOT `std::vector` or `double[]` branch, an HDF5 variable-length dataset, a Parquet list), such
as the jets of each event. A varying column whose rows all have the same length is returned as
`(n, k)`; otherwise `max_length` pads each row (with `fill_value`, NaN by default) or cuts it to
that many values. Nothing is dropped: rows with NaN are returned as they are (training drops them
with a warning). A data set split over several files is read from a list of them or a glob
pattern, its rows end to end.
"""

from __future__ import annotations

import glob
import importlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: File name endings and the format each one is read as.
SUFFIXES = {".root": "root", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".he5": "hdf5",
            ".parquet": "parquet", ".pq": "parquet"}
_READERS = {"root": ("uproot", "ROOT"), "hdf5": ("h5py", "HDF5"), "parquet": ("pyarrow", "Parquet")}


@dataclass(frozen=True)
class _Jagged:
    """A column with a varying number of values per row: the counts and the values end to end."""

    counts: np.ndarray
    values: np.ndarray


def list_columns(path: str | os.PathLike | Sequence[str | os.PathLike], *, tree: str | None = None, key: str | None = None,
                 format: str | None = None) -> dict[str, str]:
    """The columns a file holds, each with a short description of its type.

    Arguments:
        path: the file (of a list of files or a glob pattern, the first).
        tree: ROOT only: the TTree or RNTuple to read (needed when the file has more than one).
        key: HDF5 only: the group whose datasets are the columns, or a dataset with named fields
            (a compound dtype) whose fields are; the file's root group by default.
        format: "root", "hdf5" or "parquet"; by default from the file name's ending.

    Returns:
        A dict from column name to a description such as "float32", "float64[3]" or
        "var * float64" (a varying number per row).

    Raises:
        FileNotFoundError, ValueError, ImportError: see `read_columns`.
    """
    with _open(_paths(path)[0], tree, key, format) as source:
        return dict(source.describe())


def read_columns(path: str | os.PathLike | Sequence[str | os.PathLike], columns: Sequence[str] | None = None, *,
                 tree: str | None = None, key: str | None = None, start: int | None = None,
                 stop: int | None = None, dtype: Any = np.float32,
                 max_length: int | Mapping[str, int] | None = None, fill_value: float = np.nan,
                 format: str | None = None) -> dict[str, np.ndarray]:
    """Read columns of an event table from a ROOT, HDF5 or Parquet file, or from several.

    Arguments:
        path: the file; or a list of files, or a glob pattern such as "events_*.root" (matches
            in sorted order), read one after the other with their rows end to end.
        columns: names of the columns, in the order wanted; None reads every column.
        tree: ROOT only: the TTree or RNTuple to read (needed when the file has more than one).
        key: HDF5 only: the group whose datasets are the columns, or a dataset with named fields
            whose fields are; the file's root group by default.
        start, stop: read rows start..stop-1 only (as a slice; None for the ends), counted
            across all the files.
        dtype: the dtype of the returned arrays (float32, JAX's default, unless told); None keeps
            the file's.
        max_length: for columns with a varying number of values per row: pad (with
            `fill_value`) or cut every row to this many values; an int for all such columns or
            a dict from column name to int.
        fill_value: what pads rows shorter than `max_length`.
        format: "root", "hdf5" or "parquet"; by default from the file name's ending.

    Returns:
        A dict from column name to a numpy array of shape `(n,)` or `(n, k)`, in the order of
        `columns`.

    Raises:
        FileNotFoundError: when there is no such file, or no file matches the pattern.
        ValueError: for an unknown format, a missing column, tree or key, columns of different
            lengths, a column that is not numeric, a varying-length column without
            `max_length`, files whose columns differ in width, or bad
            `start`/`stop`/`max_length`.
        ImportError: when the reader for the format is not installed.
    """
    start, stop = _check_range(start, stop)
    lengths = _check_max_length(max_length)
    files = _paths(path)
    read = dict(dtype=dtype, lengths=lengths, fill_value=fill_value)
    if len(files) == 1:
        with _open(files[0], tree, key, format) as source:
            return _read_table(source, _names_in(source, columns), start, stop, **read)
    # One pass over the files, each opened once: its columns checked, and the rows of it that
    # fall in start..stop of all the files' rows end to end read.
    tables, names, offset = [], None, 0
    for file in files:
        with _open(file, tree, key, format) as source:
            if names is None:
                names = _names_in(source, columns)
            elif columns is None:
                if source.readable() != names:
                    raise ValueError(f"{source.where} has the columns {source.readable()}, but {str(files[0])!r} has "
                                     f"{names}; name the columns to read")
            else:
                _check_columns(names, source.names(), source.where)
            n = source.num_rows(names[0]) if names else 0
            begin, end = max((start or 0) - offset, 0), n if stop is None else min(stop - offset, n)
            if end > begin:
                tables.append((file, _read_table(source, names, begin, end, **read)))
            offset += n
    if not tables:  # no row in the range: the first file's columns, with no rows
        with _open(files[0], tree, key, format) as source:
            tables.append((files[0], _read_table(source, names, 0, 0, **read)))
    out = {}
    for name in names:
        widths = {str(file): table[name].shape[1:] for file, table in tables}
        if len(set(widths.values())) > 1:
            raise ValueError(f"column {name!r} has a different width in different files (shape per row: {widths}); "
                             "pass max_length= to read them all at one width")
        out[name] = np.concatenate([table[name] for _, table in tables])
    return out


def _names_in(source, columns):
    """The columns to read from an open table: `columns`, checked against it, or all of its."""
    return source.readable() if columns is None else _check_columns(columns, source.names(), source.where)


def _read_table(source, names, start, stop, *, dtype, lengths, fill_value):
    """The columns `names` of rows start..stop-1 of an open table, as arrays."""
    if isinstance(lengths, dict):
        unknown = sorted(set(lengths) - set(names))
        if unknown:
            raise ValueError(f"max_length names columns that are not read: {unknown}; read: {names}")
    out: dict[str, np.ndarray] = {}
    for name in names:
        raw = source.read(name, start, stop)
        column = _regular(name, raw, lengths.get(name) if isinstance(lengths, dict) else lengths, fill_value)
        if column.dtype.kind not in "biuf":
            raise ValueError(f"column {name!r} holds {column.dtype} values; only numbers and booleans can be "
                             "read into arrays")
        out[name] = column if dtype is None else column.astype(dtype, copy=False)
    rows = {name: len(a) for name, a in out.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(f"the columns have different numbers of rows: {rows}")
    return out


def read_array(path: str | os.PathLike | Sequence[str | os.PathLike], columns: Sequence[str], **kwargs) -> np.ndarray:
    """Read columns into one `(n, features)` array, in the order given; a column of shape
    `(n, k)` gives k features in a row.

    Arguments:
        path: the file, a list of files or a glob pattern (as for `read_columns`).
        columns: names of the columns (at least one).
        **kwargs: as for `read_columns` (tree, key, start, stop, dtype, max_length, fill_value,
            format).

    Returns:
        An array of shape `(n, features)`.

    Raises:
        ValueError, FileNotFoundError, ImportError: as for `read_columns`.
    """
    if isinstance(columns, str) or not isinstance(columns, Sequence) or len(columns) == 0:
        raise ValueError(f"columns must be a non-empty sequence of column names, got {columns!r}")
    return stack_columns(read_columns(path, columns, **kwargs), columns)


def stack_columns(table: dict[str, np.ndarray], columns: Sequence[str]) -> np.ndarray:
    """The `(n, features)` array of some columns of a table that `read_columns` returned, in
    the order given (what `read_array` returns), so that one read can give several arrays."""
    return np.concatenate([table[c].reshape(len(table[c]), math.prod(table[c].shape[1:])) for c in columns], axis=1)


# -- checks -----------------------------------------------------------------------------------

def _paths(path) -> list:
    """The files `path` names: itself or the matches of a glob pattern, or those of each entry of
    a list."""
    if isinstance(path, (str, os.PathLike)):
        path = [path]
    if not (isinstance(path, Sequence) and path and all(isinstance(p, (str, os.PathLike)) for p in path)):
        raise ValueError(f"path must be a file path, a glob pattern or a non-empty list of them, got {path!r}")
    files = []
    for entry in path:
        text = os.fspath(entry)
        if not os.path.exists(text) and any(c in text for c in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise FileNotFoundError(f"no file matches {text!r}")
            files.extend(matches)
        else:
            files.append(entry)
    return files


def _check_range(start, stop):
    for name, value in (("start", start), ("stop", stop)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
    if start is not None and stop is not None and stop < start:
        raise ValueError(f"stop ({stop}) must not be less than start ({start})")
    return (None if start is None else int(start)), (None if stop is None else int(stop))


def _check_max_length(max_length):
    def ok(v):
        return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 1

    if max_length is None or ok(max_length):
        return max_length
    if isinstance(max_length, Mapping) and all(isinstance(k, str) and ok(v) for k, v in max_length.items()):
        return dict(max_length)
    raise ValueError(f"max_length must be a positive integer or a dict from column name to one, got {max_length!r}")


def _check_columns(columns, available, where):
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise ValueError(f"columns must be a sequence of column names (a list), got {columns!r}")
    names = list(columns)
    if len(set(names)) != len(names):
        raise ValueError(f"columns names a column more than once: {names}")
    missing = [c for c in names if c not in available]
    if missing:
        raise ValueError(f"{where} has no column {missing[0]!r}; it has {available}")
    return names


def _regular(name, raw, max_length, fill_value):
    """A column as an (n,) or (n, k) array; a varying one padded or cut to max_length."""
    if not isinstance(raw, _Jagged):
        return np.asarray(raw)
    counts = np.asarray(raw.counts, dtype=np.int64)
    values = np.asarray(raw.values)
    if max_length is None:
        if not len(counts):
            return values.reshape(0, 0)  # no rows, so no width to tell
        if counts.min() == counts.max():
            return values.reshape(len(counts), int(counts[0]))
        low, high = int(counts.min()), int(counts.max())
        raise ValueError(f"column {name!r} holds from {low} to {high} values per row; pass max_length= (an int, or "
                         f"a dict such as {{{name!r}: {max(high, 1)}}}) to pad every row with fill_value or cut it to "
                         "that many values")
    out = np.full((len(counts), max_length), fill_value, dtype=np.result_type(values.dtype, np.asarray(fill_value)))
    row = np.repeat(np.arange(len(counts)), counts)
    position = np.arange(len(values)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = position < max_length
    out[row[keep], position[keep]] = values[keep]
    return out


# -- formats ----------------------------------------------------------------------------------

def _import(fmt):
    module, label = _READERS[fmt]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"reading {label} files needs the {module} package: pip install \"jaxhep[hep]\" "
                          f"(or pip install {module})") from err


def _open(path, tree, key, format):
    """The table in one file (a path that `_paths` gave), opened; use it as a context manager."""
    path = Path(path)
    if format is None:
        format = SUFFIXES.get(path.suffix.lower())
        if format is None:
            raise ValueError(f"cannot tell the format of {str(path)!r} from its ending; endings read: "
                             f"{sorted(SUFFIXES)}; or pass format='root', 'hdf5' or 'parquet'")
    elif format not in _READERS:
        raise ValueError(f"format must be one of {sorted(_READERS)}, got {format!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if tree is not None and format != "root":
        raise ValueError(f"tree= names a ROOT tree; {str(path)!r} is read as {format} (use key= for HDF5)")
    if key is not None and format != "hdf5":
        raise ValueError(f"key= names an HDF5 group or dataset; {str(path)!r} is read as {format}")
    return {"root": _RootSource, "hdf5": _HDF5Source, "parquet": _ParquetSource}[format](path, tree, key)


class _Source:
    """One table in an open file: `describe()` lists its columns, `read` returns one."""

    where = ""

    def names(self) -> list[str]:
        return list(self.describe())

    def readable(self) -> list[str]:
        """The columns read when none are named (`names` may list more, e.g. HDF5 subgroups)."""
        return self.names()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass


class _RootSource(_Source):
    _TREES = ("TTree", "ROOT::RNTuple")

    def __init__(self, path, tree, key):
        uproot = _import("root")
        try:
            self.file = uproot.open(path)
        except Exception as err:  # uproot raises several kinds for a file that is not ROOT
            raise ValueError(f"{str(path)!r} could not be read as a ROOT file: {err}") from err
        try:
            trees = sorted({name.split(";")[0] for name, cls in self.file.classnames().items() if cls in self._TREES})
            if tree is None:
                if len(trees) != 1:
                    raise ValueError(f"{str(path)!r} holds {len(trees)} trees {trees}; name one with tree=")
                tree = trees[0]
            elif tree not in trees:
                raise ValueError(f"{str(path)!r} has no tree {tree!r}; its trees (TTree or RNTuple): {trees}")
            self.tree = self.file[tree]
        except Exception:
            self.file.close()
            raise
        self.where = f"tree {tree!r} of {str(path)!r}"

    def names(self):
        return list(self.tree.keys())  # without reading every branch, as describe does

    def num_rows(self, name):
        return int(self.tree.num_entries)

    def describe(self):
        ak = importlib.import_module("awkward")

        def label(kind):
            if isinstance(kind, ak.types.RegularType):
                return f"{label(kind.content)}[{kind.size}]"
            if isinstance(kind, ak.types.ListType):
                return f"var * {label(kind.content)}"
            return str(kind)

        return {name: label(self.tree[name].array(library="ak", entry_stop=0).type.content) for name in self.tree.keys()}

    def read(self, name, start, stop):
        ak = importlib.import_module("awkward")
        array = self.tree[name].array(library="ak", entry_start=start, entry_stop=stop)
        kind = array.type.content
        try:
            # A varying-length branch stays one even where the rows read happen to agree in length
            # (ak.to_numpy would make those regular), so that max_length applies to it alike.
            if isinstance(kind, ak.types.ListType) and isinstance(kind.content, ak.types.NumpyType):
                return _Jagged(ak.to_numpy(ak.num(array, axis=1)), ak.to_numpy(ak.flatten(array, axis=1)))
            return ak.to_numpy(array)
        except ValueError:
            raise ValueError(f"column {name!r} has type {kind}, which is not a number, a fixed number or a varying "
                             "number of numbers per row") from None

    def close(self):
        self.file.close()


class _HDF5Source(_Source):
    def __init__(self, path, tree, key):
        h5py = _import("hdf5")
        self.h5py = h5py
        try:
            self.file = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{str(path)!r} could not be read as an HDF5 file: {err}") from err
        try:
            if key is None:
                self.node = self.file
            elif key in self.file:
                self.node = self.file[key]
            else:
                raise ValueError(f"{str(path)!r} has no group or dataset {key!r}; at its top: {sorted(self.file)}")
        except Exception:
            self.file.close()
            raise
        self.where = f"{'group' if isinstance(self.node, h5py.Group) else 'dataset'} {self.node.name!r} of {str(path)!r}"

    def _compound(self):
        return isinstance(self.node, self.h5py.Dataset) and self.node.dtype.names is not None

    def readable(self):
        return [name for name, what in self.describe().items() if not what.startswith("group ")]

    def _dataset(self, name):
        return self.node if isinstance(self.node, self.h5py.Dataset) else self.node[name]

    def num_rows(self, name):
        return len(self._dataset(name))

    def describe(self):
        if self._compound():
            fields = self.node.dtype
            return {name: _shape_label(fields[name].base, fields[name].shape) for name in fields.names}
        if isinstance(self.node, self.h5py.Dataset):
            datasets = {self.node.name.rsplit("/", 1)[-1]: self.node}
        else:
            # The datasets directly in the group (not in its subgroups: name those with key=).
            datasets = {name: obj for name, obj in self.node.items()
                        if isinstance(obj, self.h5py.Dataset) and obj.ndim >= 1}
        out = {}
        if isinstance(self.node, self.h5py.Group):
            # Subgroups are listed (not read) so that a file keeping its data in a group shows where.
            for name, obj in self.node.items():
                if isinstance(obj, self.h5py.Group):
                    out[name] = f"group (read with key={obj.name!r})"
        for name, data in datasets.items():
            if data.dtype.names is not None:
                out[name] = f"fields {list(data.dtype.names)} (read with key={data.name!r})"
                continue
            base = self.h5py.check_vlen_dtype(data.dtype)
            out[name] = f"var * {np.dtype(base)}" if base is not None else _shape_label(data.dtype, data.shape[1:])
        return out

    def read(self, name, start, stop):
        rows = slice(start, stop)
        if self._compound():
            return np.asarray(self.node.fields(name)[rows])
        data = self._dataset(name)
        if isinstance(data, self.h5py.Group):
            raise ValueError(f"{name!r} is a group, not a column; read its datasets with key={data.name!r}")
        if data.dtype.names is not None:
            raise ValueError(f"column {name!r} is a dataset with named fields {list(data.dtype.names)}; read them "
                             f"with key={data.name!r}")
        base = self.h5py.check_vlen_dtype(data.dtype)
        if base is None:
            return np.asarray(data[rows])
        parts = [np.asarray(row) for row in data[rows]]
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        return _Jagged(counts, np.concatenate(parts) if parts else np.zeros(0, np.dtype(base)))

    def close(self):
        self.file.close()


class _ParquetSource(_Source):
    def __init__(self, path, tree, key):
        _import("parquet")
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid for a file that is not Parquet
            raise ValueError(f"{str(path)!r} could not be read as a Parquet file: {err}") from err
        self.schema = self.file.schema_arrow
        self.where = f"{str(path)!r}"

    def describe(self):
        return {field.name: _arrow_type(field.type) for field in self.schema}

    def num_rows(self, name):
        return int(self.file.metadata.num_rows)

    def read(self, name, start, stop):
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self.file.read(columns=[name]).column(name)
        begin = start or 0
        end = len(column) if stop is None else min(stop, len(column))
        column = column.slice(begin, max(end - begin, 0)).combine_chunks()
        kind = column.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            if not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)
                    or pa.types.is_boolean(kind.value_type)):
                raise ValueError(f"column {name!r} has type {kind}, which is not a number, a fixed number or a "
                                 "varying number of numbers per row")
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            if pa.types.is_fixed_size_list(kind) and column.null_count == 0:
                return values.reshape(len(column), kind.list_size)  # its width even without rows
            counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
            return _Jagged(counts, values)
        return column.to_numpy(zero_copy_only=False)


def _shape_label(dtype, shape) -> str:
    return f"{np.dtype(dtype)}" + (f"[{', '.join(map(str, shape))}]" if shape else "")


def _arrow_type(kind) -> str:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(kind):
        return f"{_arrow_type(kind.value_type)}[{kind.list_size}]"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"var * {_arrow_type(kind.value_type)}"
    try:
        return str(np.dtype(kind.to_pandas_dtype()))
    except (NotImplementedError, TypeError):
        return str(kind)


__all__ = ["SUFFIXES", "list_columns", "read_array", "read_columns"]
