"""Argument checks shared across jaxhep, so that every entry point refuses bad input with the
same message. Only numpy is needed here, so any module may import it."""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from typing import Any

import numpy as np


def check_positive_int(name: str, value: Any, *, numpy_ints: bool = True, none_ok: bool = False) -> None:
    """Raise ValueError unless `value` is an integer >= 1.

    Arguments:
        name: the argument's name, for the message.
        value: what the caller passed.
        numpy_ints: accept numpy integers as well as Python ints (set False where the value
            becomes a static field or shape that should stay a plain int).
        none_ok: accept None too (for optional sizes).

    Bools are refused although they are ints in Python: `True` passed as 1 is almost always a
    mistake.
    """
    if none_ok and value is None:
        return
    types = (int, np.integer) if numpy_ints else int
    if isinstance(value, bool) or not isinstance(value, types) or value < 1:
        expected = "a positive integer or None" if none_ok else "a positive integer"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_int_at_least(name: str, value: Any, least: int) -> None:
    """Raise ValueError unless `value` is a Python or numpy integer (not a bool) >= `least`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def check_positive_finite(name: str, value: Any) -> None:
    """Raise ValueError unless `value` is a real number in (0, inf): a Python or numpy int or
    float, never a bool, NaN or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def sample_shape_tuple(sample_shape: Any) -> tuple[int, ...]:
    """`sample_shape` (an int, a sequence of ints or an integer array, as numpy and JAX take a
    shape) as a tuple of Python ints; ValueError for anything else or a negative size."""
    shape = np.asarray(sample_shape)
    if shape.ndim > 1 or (shape.size and (shape.dtype == bool or not np.issubdtype(shape.dtype, np.integer))):
        raise ValueError(f"sample_shape must be an integer or a sequence of integers, got {sample_shape!r}")
    sizes = tuple(int(s) for s in np.atleast_1d(shape)) if shape.size else ()
    if any(s < 0 for s in sizes):
        raise ValueError(f"sample_shape must hold non-negative sizes, got {sample_shape!r}")
    return sizes


def _internal_folders() -> tuple[str, ...]:
    """Folders of jaxhep's code (its sub-packages `sbi` and `theory` may live elsewhere in an
    editable install) and of equinox, whose wrappers sit between a user and a module's method."""
    folders = []
    for name in ("jaxhep", "jaxhep.sbi", "jaxhep.theory", "equinox"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            folders.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
    return tuple(folders)


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` pointing at the first frame outside jaxhep (and equinox): the user's
    line, however many jaxhep functions lie between it and the warning."""
    folders = _internal_folders()
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(folders):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)
