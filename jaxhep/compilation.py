"""How jaxhep's entry points are compiled: jit with XLA options that shorten compilation on the CPU.

On the CPU much of a short jaxhep call is compilation: a first `posterior.sample` of 10^4 draws
compiles for about 1.7 s and then runs in 0.05 s, a C2ST compiles for about 5 s and runs for 4
(2-core benchmark machine, 2026-11-30). With `CPU_COMPILER_OPTIONS` (XLA's elemental emitters for
fused loops instead of its MLIR fusion emitters, and LLVM's level-1 optimisation pipeline) those
compile in 1.2 s and 3.5 s, and the run times stay within a few percent (NPE training epochs run
a few percent slower; see `jaxhep.training.fit`). Results are the same up to float rounding.
Other backends are not affected; options this jaxlib does not know are left out. Set
`CPU_COMPILER_OPTIONS` to {} to compile with XLA's defaults (it is read at each call).

Not every program uses them: the simulators keep XLA's defaults, since their outputs are data
(with the options one value of two_moons' x moved by a float32 step), and so do the lattice
samplers and trainers and the NUTS reference posteriors, whose long loops ran 25-30% slower with
the options (2026-11-30).

`filter_jit` and `jit` are `eqx.filter_jit` and `jax.jit` with those options, decided at each call
(not at import, which would start JAX's backends before a user can ask for several CPU devices).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1}


@functools.cache
def _options_accepted(options: tuple) -> bool:
    """Whether this jaxlib accepts all the compiler options, given as (name, value) pairs (XLA
    renames and removes its flags between versions: jaxlib 0.12 has no
    `xla_cpu_use_fusion_emitters`)."""
    try:
        jax.jit(lambda a: a + 1, compiler_options=dict(options))(np.float32(0.0)).block_until_ready()
        return True
    except Exception:  # an unknown option is refused when the program is compiled
        return False


def compiler_options() -> dict[str, Any] | None:
    """The options of `CPU_COMPILER_OPTIONS` that this jaxlib knows, on the CPU backend; else None."""
    if jax.default_backend() != "cpu":
        return None
    items = tuple(CPU_COMPILER_OPTIONS.items())
    # One probe compilation for all of them; one per option only where some is refused.
    if items and _options_accepted(items):
        return dict(items)
    options = {name: value for name, value in items if _options_accepted(((name, value),))}
    return options or None


def jit_kwargs() -> dict[str, Any]:
    """Keyword arguments for `jax.jit` or `eqx.filter_jit` that compile with the options of
    `CPU_COMPILER_OPTIONS` this jaxlib knows, on the CPU backend; {} elsewhere."""
    options = compiler_options()
    return {} if options is None else {"compiler_options": options}


def _lazy(transform: Callable, fun: Callable | None, kwargs: dict) -> Callable:
    if fun is None:
        return functools.partial(_lazy, transform, kwargs=kwargs)
    # One compiled function per set of options, so that a change of CPU_COMPILER_OPTIONS (or
    # of backend) takes effect, and repeated calls find their compiled programs.
    jitted: dict[tuple, Callable] = {}

    def compiled(extra):
        key = tuple(sorted(extra.get("compiler_options", {}).items()))
        f = jitted.get(key)
        if f is None:
            f = jitted[key] = transform(fun, **kwargs, **extra)
        return f

    @functools.wraps(fun)
    def call(*args, **kw):
        extra = jit_kwargs()
        try:
            return compiled(extra)(*args, **kw)
        except ValueError as err:
            if not extra or "compiler_options" not in str(err):
                raise
        # Called inside another transformation (a user's jit, vmap or grad): XLA options are
        # for a top-level jit only, and the program this becomes part of is compiled as its
        # caller decides.
        return compiled({})(*args, **kw)

    return call


def filter_jit(fun: Callable | None = None, **kwargs) -> Callable:
    """`eqx.filter_jit(fun, **kwargs)` compiling with `jit_kwargs()`; usable as a decorator,
    with or without keyword arguments."""
    return _lazy(eqx.filter_jit, fun, kwargs)


def jit(fun: Callable | None = None, **kwargs) -> Callable:
    """`jax.jit(fun, **kwargs)` compiling with `jit_kwargs()`; usable as a decorator, with or
    without keyword arguments (`functools.partial(jit, static_argnames=...)` also works)."""
    return _lazy(jax.jit, fun, kwargs)


__all__ = ["CPU_COMPILER_OPTIONS", "compiler_options", "filter_jit", "jit", "jit_kwargs"]
