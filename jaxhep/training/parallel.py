"""Data-parallel training over several devices: the `devices` argument of `fit` and the estimators."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxhep.checks import check_positive_int

# Name of the mesh axis that data-parallel training splits each minibatch over.
DATA_AXIS = "data"


_DEVICES_EXPECTED = 'devices must be None, "all", a positive integer or a non-empty sequence of distinct jax devices'


def check_devices(devices: Any) -> None:
    """Check the form of a `devices` argument (see `fit`) without starting any JAX backend.

    Raises:
        ValueError: for anything but None, "all", a positive integer or a non-empty sequence of
            distinct `jax.Device`s.
    """
    if devices is None or (isinstance(devices, str) and devices == "all"):
        return
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueError(f"{_DEVICES_EXPECTED}, got {devices!r}")
        return
    if (isinstance(devices, Sequence) and not isinstance(devices, str) and devices
            and all(isinstance(d, jax.Device) for d in devices) and len(set(devices)) == len(devices)):
        return
    raise ValueError(f"{_DEVICES_EXPECTED}, got {devices!r}")


def data_mesh(devices: None | str | int | Sequence[jax.Device]) -> Mesh | None:
    """The mesh that `fit` splits minibatches over, from its `devices` argument; None for one device.

    None or 1: the default device (no mesh). "all": every device of the default backend in this
    process (no mesh if there is only one). An integer n: the first n of those. A sequence of
    `jax.Device`: those devices.

    Raises:
        ValueError: for a malformed argument (see `check_devices`) or a count above the devices
            this process has.
    """
    check_devices(devices)
    if devices is None or (isinstance(devices, (int, np.integer)) and devices == 1):
        return None
    local = jax.local_devices()
    if isinstance(devices, str):
        if len(local) == 1:
            return None
        chosen = local
    elif isinstance(devices, (int, np.integer)):
        if devices > len(local):
            hint = ("; for several CPU devices, call jaxhep.training.use_cpu_cores(n) right after importing jax"
                    if local[0].platform == "cpu" else "")
            raise ValueError(f"devices={devices} but this process has {len(local)} {local[0].platform} "
                             f"device(s){hint}")
        chosen = local[:devices]
    else:
        chosen = devices
    return Mesh(np.array(list(chosen)), (DATA_AXIS,))


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cores_for_batch(batch_size: int, limit: int | None = None) -> int:
    """The most cores this process may run on, up to `limit`, whose count divides `batch_size`
    (so that each gets an equal share of a minibatch); at least 1."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("limit", limit, none_ok=True)
    top = usable_cores() if limit is None else min(usable_cores(), limit)
    return max(n for n in range(1, top + 1) if batch_size % n == 0)


def use_cpu_cores(n: int | None = None) -> int:
    """Give JAX's CPU backend `n` devices (default: one per core this process may run on), so that
    `fit(..., devices="all")` and the estimators' `devices="all"` split each minibatch over the
    cores. JAX fixes its device count when it first runs, so call this right after `import jax`.

    Returns:
        The number of CPU devices asked for.

    Raises:
        ValueError: for an `n` that is not a positive integer.
        RuntimeError: when JAX has already run a computation in this process.
    """
    n = usable_cores() if n is None else n
    check_positive_int("n", n)
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as err:
        raise RuntimeError("use_cpu_cores must run before JAX's first computation in this process (right after "
                           "`import jax`); JAX's CPU device count is fixed from then on") from err
    return int(n)


def devices_for_cores(batch_size: int, n: int | None = None, limit: int | None = None) -> str | None:
    """Make JAX's CPU backend one device per core and return the `devices` argument that trains
    on them: "all" where JAX computes on the CPU with more than one device, else None (an
    accelerator, or a single core). Call it right after `import jax`.

    Arguments:
        batch_size: the minibatch size, which each device gets an equal share of.
        n: the CPU device count; default: the most cores this process may run on, up to
            `limit`, whose count divides `batch_size`.
        limit: upper bound on the default count.

    Raises:
        ValueError: when `batch_size` is not a multiple of the CPU device count.
        RuntimeError: when JAX has already run a computation with another CPU device count.
    """
    check_positive_int("n", n, none_ok=True)
    count = use_cpu_cores(cores_for_batch(batch_size, limit) if n is None else n)
    if batch_size % count:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {count} CPU devices")
    return "all" if count > 1 and jax.default_backend() == "cpu" else None
