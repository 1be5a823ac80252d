"""Saving and loading trained objects (`save`, `load`; see `jaxhep.io.checkpoint`) and reading
event tables from ROOT, HDF5 and Parquet files (`read_columns`, `read_array`, `list_columns`; see
`jaxhep.io.files`)."""

from jaxhep.io.checkpoint import FORMAT, VERSION, load, save
from jaxhep.io.files import list_columns, read_array, read_columns, stack_columns

__all__ = ["FORMAT", "VERSION", "list_columns", "load", "read_array", "read_columns", "save", "stack_columns"]
