"""Simulators in pure JAX: the sbibm benchmark tasks (Lueckmann et al. 2021, AISTATS).

    from jaxhep import simulators
    task = simulators.get_task("two_moons")
    theta, x = task.simulate(key, 1000)
    theta_true, x_obs = task.get_observation(1)
    samples = task.reference_posterior(key, x_obs, 10_000)

Every task has `name`, `theta_dim`, `x_dim`, `prior` (numpyro, event shape (theta_dim,)),
`simulator(key, theta)`, `simulate(key, n)`, `log_likelihood(theta, x)`,
`num_observations`, `get_observation(i)` and `reference_posterior(key, x_obs, num_samples)`.
Observations are sbibm's own, from its data files (`get_observation(i)`; jaxhep's earlier
fixed-seed draws with `get_observation(i, "jaxhep")`).
"""

from .base import AbstractTask, rejection_sample
from .bernoulli_glm import BernoulliGLM, BernoulliGLMRaw
from .gaussian import GaussianLinear, GaussianLinearUniform, GaussianMixture
from .slcp import SLCP, SLCPDistractors
from .two_moons import TwoMoons

_TASK_CLASSES = {
    cls.name: cls
    for cls in (
        TwoMoons,
        GaussianLinear,
        GaussianLinearUniform,
        GaussianMixture,
        SLCP,
        SLCPDistractors,
        BernoulliGLM,
        BernoulliGLMRaw,
    )
}

TASKS: tuple[str, ...] = tuple(_TASK_CLASSES)


def get_task(name: str) -> AbstractTask:
    """Build a benchmark task by its sbibm name.

    Arguments:
        name: one of `TASKS`.

    Returns:
        The task.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if not isinstance(name, str) or name not in _TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}")
    return _TASK_CLASSES[name]()


__all__ = [
    "TASKS",
    "get_task",
    "AbstractTask",
    "rejection_sample",
    "TwoMoons",
    "GaussianLinear",
    "GaussianLinearUniform",
    "GaussianMixture",
    "SLCP",
    "SLCPDistractors",
    "BernoulliGLM",
    "BernoulliGLMRaw",
]
