"""The shared positive-integer check and the entry points that use it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.checks import check_positive_finite, check_positive_int


def test_check_positive_int_accepts_and_refuses():
    for ok in (1, 7, np.int64(3)):
        check_positive_int("n", ok)
    check_positive_int("n", None, none_ok=True)
    for bad in (0, -2, 2.0, 2.5, "3", True, False, None, np.float32(2)):
        with pytest.raises(ValueError, match=r"^n must be a positive integer, got "):
            check_positive_int("n", bad)
    with pytest.raises(ValueError, match="n must be a positive integer, got np.int64"):
        check_positive_int("n", np.int64(3), numpy_ints=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None, got 0"):
        check_positive_int("batch_size", 0, none_ok=True)


def test_check_positive_finite_accepts_and_refuses():
    for ok in (1, 0.5, 3.0, np.float32(2), np.int64(3)):
        check_positive_finite("bound", ok)
    for bad in (0, -1.0, float("inf"), float("nan"), True, "3", None):
        with pytest.raises(ValueError, match=r"^bound must be a positive finite number, got "):
            check_positive_finite("bound", bad)


class _AnyPosterior:
    """Stands in for a posterior: the argument checks run before it is used."""

    def sample(self, *args):
        raise AssertionError("not reached")

    def log_prob(self, *args):
        raise AssertionError("not reached")


def _pde_problem():
    from jaxhep.theory.pinn import Box, Initial, PDEProblem, partial

    box = Box([0.0, 0.0], [1.0, 1.0], time_dim=1, names=("x", "t"))
    return PDEProblem(box, lambda u, x, c: partial(u, x, 1), [Initial(lambda x: jnp.sin(x[0]), 1, n=8)], name="p")


def _entry_points():
    """(argument name, call with a bad value v) for every entry point that checks a count."""
    from jaxhep import simulators
    from jaxhep.densities import FlowMatching, ScoreDiffusion, nsf
    from jaxhep.diagnostics import c2st, sbc_ranks, sbc_uniformity
    from jaxhep.nn.embedding import PermutationInvariant
    from jaxhep.theory.pinn import PINNNet
    from jaxhep.theory.pinn.marching import solve_time_marching
    from jaxhep.training.parallel import use_cpu_cores

    key = jax.random.key(0)
    X = np.zeros((20, 2), np.float32)
    theta = np.zeros((4, 2), np.float32)
    fm = FlowMatching(2, 2, width=8, depth=1, key=key)
    return [
        ("theta_dim", lambda v: nsf(v, 2, key=key)),
        ("num_transforms", lambda v: nsf(2, 2, num_transforms=v, key=key)),
        ("num_items", lambda v: PermutationInvariant(v, 2, key=key)),
        ("x_dim", lambda v: ScoreDiffusion(2, v, key=key)),
        ("max_steps", lambda v: FlowMatching(2, 2, max_steps=v, key=key)),
        ("num_probes", lambda v: fm.log_prob_hutchinson(key, theta, theta, num_probes=v)),
        ("n", lambda v: simulators.get_task("two_moons").simulate(key, v)),
        ("n_folds", lambda v: c2st(key, X, X, n_folds=v)),
        ("num_posterior_samples", lambda v: sbc_ranks(key, _AnyPosterior(), theta, theta, num_posterior_samples=v)),
        ("batch_size", lambda v: sbc_ranks(key, _AnyPosterior(), theta, theta, batch_size=v)),
        ("num_posterior_samples", lambda v: sbc_uniformity(np.zeros((4, 2), int), num_posterior_samples=v)),
        ("n", lambda v: use_cpu_cores(v)),
        ("width", lambda v: PINNNet(2, 1, width=v, key=key)),
        ("windows", lambda v: solve_time_marching(key, _pde_problem(), None, None, v)),
    ]


@pytest.mark.parametrize("bad", [0, 2.5, True, "3"])
def test_entry_points_refuse_bad_counts_with_the_argument_named(bad):
    for name, call in _entry_points():
        with pytest.raises(ValueError, match=rf"{name} must be a positive integer.*, got {bad!r}"):
            call(bad)
