"""Saving trained objects to one file and loading them back.

Any pytree of arrays can be saved: a fitted `Posterior`, a flow, a lattice flow, a PINN model.
The file is a zip archive holding

- `header.json`: the format name and version, the jaxhep and jax versions that wrote it, the
  saved object's type, and the shape and dtype of every array;
- `arrays/<i>.npy`: the arrays, in the order of `jax.tree_util.tree_leaves`, in numpy's own
  format (read without pickle);
- `skeleton.pkl`: the object with its arrays taken out (its classes, static fields and
  non-array leaves), pickled.

`load(path)` rebuilds the object from the skeleton. Unpickling can run code, as with
`torch.load` or `pickle.load`: load only files you trust. `load(path, like=template)` reads
the arrays only and puts them into `template`, an object of the same structure (for example an
untrained model built with the same settings); it never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxhep.checks import warn_caller

FORMAT = "jaxhep.io"
VERSION = 1
_HEADER, _SKELETON = "header.json", "skeleton.pkl"

__all__ = ["FORMAT", "VERSION", "load", "save"]


class _Slot:
    """Stands for the saved array number `index` inside the pickled skeleton."""

    def __init__(self, index: int):
        self.index = index


def _activation_reducers() -> dict[int, tuple]:
    """jaxhep's named activations by object id. They are jit-wrapped jax functions that pickle
    cannot store by reference, so the skeleton stores their names instead."""
    from jaxhep.nn.mlp import _ACTIVATIONS, get_activation

    return {id(f): (get_activation, (name,)) for name, f in _ACTIVATIONS.items()}


class _Pickler(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._reducers = _activation_reducers()

    def reducer_override(self, obj):
        return self._reducers.get(id(obj), NotImplemented)


def _is_key(a) -> bool:
    return isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def _describe(a) -> dict:
    """Shape, dtype and kind of one array leaf, as the header records them."""
    if _is_key(a):  # the dtype is that of the key data the file holds
        return {"kind": "key", "impl": str(jax.random.key_impl(a)), "shape": list(a.shape),
                "dtype": str(jax.random.key_data(a).dtype)}
    kind = "numpy" if isinstance(a, np.ndarray) else "jax"
    return {"kind": kind, "shape": list(np.shape(a)), "dtype": str(a.dtype)}


def _to_numpy(a) -> np.ndarray:
    """The array as numpy, in a dtype numpy's .npy format stores without pickle (bfloat16 and
    other ml_dtypes types go as unsigned integers of their width; the header keeps the dtype)."""
    a = np.asarray(jax.random.key_data(a) if _is_key(a) else a)
    if a.dtype.kind == "V":
        a = a.view(f"uint{8 * a.dtype.itemsize}")
    return a


def _from_numpy(raw: np.ndarray, meta: dict):
    """Undo `_to_numpy` for the leaf the header describes."""
    dtype = jnp.dtype(meta["dtype"])
    a = raw.view(dtype) if raw.dtype != dtype else raw
    if meta["kind"] == "key":
        return jax.random.wrap_key_data(jnp.asarray(a), impl=meta["impl"])
    return a if meta["kind"] == "numpy" else jnp.asarray(a)


def save(path: str | os.PathLike, obj: Any, *, overwrite: bool = False) -> Path:
    """Write `obj` (a pytree of arrays, e.g. a fitted posterior) to the file `path`.

    Arguments:
        path: the file to write; its folder must exist.
        obj: the object; it is not changed.
        overwrite: replace an existing file (otherwise an existing file is an error, so that
            nothing is lost by mistake).

    Returns:
        The path written.

    Raises:
        FileExistsError: when `path` exists and `overwrite` is False.
        FileNotFoundError: when the folder of `path` does not exist.
        TypeError: when part of the object cannot be pickled (e.g. a lambda in a static field).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name to save to")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} does not exist")
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    arrays = [leaf for leaf in leaves if eqx.is_array(leaf)]
    slots = iter(range(len(arrays)))
    skeleton = jax.tree_util.tree_unflatten(treedef, [_Slot(next(slots)) if eqx.is_array(leaf) else leaf
                                                      for leaf in leaves])
    buf = io.BytesIO()
    try:
        _Pickler(buf).dump(skeleton)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise TypeError(f"cannot save this {type(obj).__name__}: a part of it that is not an array cannot be "
                        f"pickled ({err}); use functions defined at module level rather than lambdas or "
                        "closures in static fields") from err
    header = {"format": FORMAT, "version": VERSION, "type": f"{type(obj).__module__}.{type(obj).__qualname__}",
              "jaxhep": _jaxhep_version(), "jax": jax.__version__, "arrays": [_describe(a) for a in arrays],
              "structure": _structure(obj), "histories": [_run_facts(h) for h in _histories(obj)]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file readable by its owner only; give it the permissions of any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(_HEADER, json.dumps(header, indent=1))
            for i, a in enumerate(arrays):
                with zf.open(f"arrays/{i}.npy", "w") as member:
                    np.lib.format.write_array(member, _to_numpy(a), allow_pickle=False)
            zf.writestr(_SKELETON, buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike, like: Any = None) -> Any:
    """Read an object written by `save`.

    Arguments:
        path: the file.
        like: optional template of the same structure as the saved object (same pytree
            structure, array shapes and dtypes). When given, only the arrays are read from the
            file and placed into a copy of `like` (which is not changed); nothing is unpickled.
            Without it, the saved skeleton is unpickled: load only files you trust.

    Returns:
        The object, with jax arrays on the default device. As everywhere in JAX, float64
        arrays (a PINN solved in double precision) come back as float32 unless
        `jax_enable_x64` is on; numpy arrays keep their dtype.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: when the file is not one `save` wrote, was written by a newer format
            version, or does not match `like` (the message names the first array that differs).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a file written by jaxhep.io.save (not a zip archive)") from None
    with zf:
        try:
            header = json.loads(zf.read(_HEADER))
        except (KeyError, ValueError):
            raise ValueError(f"{path} is not a file written by jaxhep.io.save (no readable {_HEADER})") from None
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a file written by jaxhep.io.save (format {header.get('format')!r})")
        if header.get("version", 0) > VERSION:
            raise ValueError(f"{path} was written in {FORMAT} format version {header['version']}; this jaxhep "
                             f"({_jaxhep_version()}) reads versions up to {VERSION}")
        metas = header["arrays"]
        raw = []
        for i in range(len(metas)):
            with zf.open(f"arrays/{i}.npy") as member:
                raw.append(np.lib.format.read_array(member, allow_pickle=False))
        arrays = [_from_numpy(r, m) for r, m in zip(raw, metas)]
        if like is not None:
            # Arrays first: a template whose arrays do not fit gets that error, without a warning
            # that claims they match.
            filled = _fill(like, arrays, metas, path, header.get("histories"))
            if "structure" in header and header["structure"] != _structure(like):
                # Arrays fit, but a setting held outside them (an activation, a bound, a type)
                # differs, or the file was written by another JAX whose tree format differs.
                warn_caller(f"{path} holds a {header.get('type')} whose settings differ from like= (the arrays "
                            f"match): the loaded object keeps like='s settings. Saved: "
                            f"{_first_difference(header['structure'], _structure(like))}")
            return filled
        try:
            skeleton = pickle.loads(zf.read(_SKELETON))
        except Exception as err:
            raise ValueError(f"cannot rebuild the {header.get('type')} saved in {path} ({type(err).__name__}: "
                             f"{err}); it was written by jaxhep {header.get('jaxhep')}. Build an object of the "
                             "same structure and pass it as like= to read the arrays only") from err
    return jax.tree_util.tree_map(lambda leaf: arrays[leaf.index] if isinstance(leaf, _Slot) else leaf,
                                  skeleton, is_leaf=lambda leaf: isinstance(leaf, _Slot))


def _is_history(node) -> bool:
    from jaxhep.training.fit import History

    return isinstance(node, History)


def _histories(obj: Any) -> list:
    """The training histories in `obj`, in the order of its leaves."""
    return [n for n in jax.tree_util.tree_leaves(obj, is_leaf=_is_history) if _is_history(n)]


def _run_facts(history) -> dict:
    """A history's static fields (epochs, best epoch, ...), which its arrays do not carry."""
    return {f.name: getattr(history, f.name) for f in dataclasses.fields(history) if f.metadata.get("static")}


def _fill(like: Any, arrays: list, metas: list[dict], path: Path, histories: list[dict] | None = None) -> Any:
    """Put the saved arrays into the array leaves of `like`, checking that they match. A training
    history takes the saved run (its loss arrays of the saved length, its epochs and best epoch):
    a template fitted with the same settings has, with early stopping, rarely run as long."""
    nodes, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_history)
    count = sum(eqx.is_array(leaf) for leaf in jax.tree_util.tree_leaves(like))
    if count != len(arrays):
        raise ValueError(f"{path} holds {len(arrays)} arrays but like= has {count}; it must have the "
                         "structure of the saved object")
    saved = iter(zip(arrays, metas))
    facts = iter(histories or [])

    def take(kp, leaf, any_length: bool):
        array, meta = next(saved)
        want = _describe(leaf)
        keep = (lambda shape: (len(shape), list(shape[1:]))) if any_length else list  # any_length: a loss history
        if (keep(want["shape"]), want["dtype"]) != (keep(meta["shape"]), meta["dtype"]):
            raise ValueError(f"like{jax.tree_util.keystr(kp)} has shape {tuple(want['shape'])} and dtype "
                             f"{want['dtype']}, but the file holds shape {tuple(meta['shape'])} and dtype "
                             f"{meta['dtype']} there")
        return array

    out = []
    for kp, node in nodes:
        if _is_history(node):
            leaves, htree = jax.tree_util.tree_flatten_with_path(node)
            node = jax.tree_util.tree_unflatten(htree, [take(kp + hp, a, True) if eqx.is_array(a) else a
                                                        for hp, a in leaves])
            run = next(facts, None)
            if run is not None:
                node = dataclasses.replace(node, **run)
            elif len(node.train_loss) != node.epochs:
                warn_caller(f"{path} predates the saving of a history's run facts: the loaded history has "
                            f"{len(node.train_loss)} epochs of losses but like='s epoch count and best epoch")
            out.append(node)
        else:
            out.append(take(kp, node, False) if eqx.is_array(node) else node)
    return jax.tree_util.tree_unflatten(treedef, out)


def _structure(obj: Any) -> str:
    """The pytree structure of `obj` as text, with the static settings it holds (memory
    addresses in function reprs removed, so that it compares across processes, and a training
    history's run facts (epochs, seconds), which differ between fits of one model, left out)."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(jax.tree_util.tree_structure(obj)))
    return re.sub(r"History\[\([^\]]*\)\]", "History[...]", text)


def _first_difference(saved: str, like: str, context: int = 60) -> str:
    i = next((k for k, (a, b) in enumerate(zip(saved, like)) if a != b), min(len(saved), len(like)))
    lo = max(0, i - context)
    return f"...{saved[lo:i + context]}... against like=: ...{like[lo:i + context]}..."


def _jaxhep_version() -> str:
    from jaxhep import __version__

    return __version__
