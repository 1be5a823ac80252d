"""PyTorch `sbi` as a peer for the side-by-side benchmarks: priors, array conversion, timed training.

Imported by the benchmark scripts in this folder (npe_vs_sbi.py, diffusion_table.py). It needs the
`bench` extra (torch==2.13.0, sbi==0.27.0, scikit-learn), installed in the benchmark virtual
environment `.venv-bench` (see README.md); jaxhep itself never imports it.

    from _peers import sbi_prior, train_sbi_npe, sample_sbi
    prior = sbi_prior(task.prior)
    run = train_sbi_npe(theta, x, prior, seed=0)
    samples, seconds = sample_sbi(run.posterior, x_obs, 10_000)

Every `train_sbi_*` returns a `SbiRun` with the posterior, the training wall time (network
construction, data handling, training and `build_posterior`), the epochs trained and the settings
used. No TensorBoard logs are written: training runs with a tracker that drops its metrics, so the
timing leaves out sbi's log writing (which only makes sbi faster than with its default tracker).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import _machine
import numpy as np
import torch

import sbi
from sbi.inference import FMPE, NPE, NPSE
from sbi.neural_nets import posterior_flow_nn, posterior_nn, posterior_score_nn
from sbi.utils import BoxUniform

# sbi 0.27's own training defaults (NPE_C.train / VectorFieldTrainer.train), spelled out so that
# the JSON records them and the jaxhep side can be given the same numbers.
SBI_TRAIN_DEFAULTS: dict[str, Any] = dict(
    training_batch_size=200,
    learning_rate=5e-4,
    validation_fraction=0.1,
    stop_after_epochs=20,
    clip_max_norm=5.0,
)


class NullTracker:
    """An sbi `Tracker` that keeps nothing (so training writes no sbi-logs/ folder)."""

    @property
    def log_dir(self):
        return None

    def log_metric(self, name, value, step=None):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_params(self, params):
        pass

    def add_figure(self, name, figure, step=None):
        pass

    def flush(self):
        pass


@dataclasses.dataclass
class SbiRun:
    """One timed sbi training run.

    Attributes:
        posterior: the posterior from `build_posterior()`.
        train_s: wall seconds from building the trainer to the built posterior.
        epochs: epochs trained (sbi's `epochs_trained`).
        settings: the method, estimator and training settings used.
        inference: the sbi trainer object (for its `summary`).
    """

    posterior: Any
    train_s: float
    epochs: int
    settings: dict
    inference: Any


def to_torch(a) -> torch.Tensor:
    """A float32 torch tensor holding a copy of `a` (a NumPy or JAX array)."""
    return torch.tensor(np.array(a, dtype=np.float32))


def to_numpy(t) -> np.ndarray:
    """A NumPy copy of a torch tensor (or anything `np.asarray` takes)."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.array(t)


def sbi_prior(prior) -> torch.distributions.Distribution:
    """The torch prior for sbi that matches a jaxhep task's numpyro prior.

    Supported: a box uniform (`Uniform(low, high).to_event(1)`, or a `Uniform` with batch shape
    (d,)), a `MultivariateNormal`, and independent normals (`Normal(loc, scale).to_event(1)`).

    Arguments:
        prior: a numpyro distribution over vectors of size d.

    Returns:
        `sbi.utils.BoxUniform` for a box, `torch.distributions.MultivariateNormal` for a
        multivariate normal, an `Independent(Normal)` for independent normals.

    Raises:
        ValueError: for another kind of prior, or one that is not over vectors.
    """
    import numpyro.distributions as ndist

    base, reinterpreted = prior, 0
    while isinstance(base, ndist.Independent):
        reinterpreted += base.reinterpreted_batch_ndims
        base = base.base_dist
    shape = tuple(base.batch_shape) + tuple(base.event_shape)
    if len(shape) != 1:
        raise ValueError(f"expected a prior over vectors (shape (d,)), got batch+event shape {shape}")
    if isinstance(base, ndist.Uniform):
        low, high = np.broadcast_arrays(np.asarray(base.low), np.asarray(base.high))
        return BoxUniform(low=to_torch(low), high=to_torch(high))
    if isinstance(base, ndist.MultivariateNormal):
        return torch.distributions.MultivariateNormal(
            loc=to_torch(base.loc), covariance_matrix=to_torch(base.covariance_matrix))
    if isinstance(base, ndist.Normal) and reinterpreted + len(base.event_shape) >= 1:
        loc, scale = np.broadcast_arrays(np.asarray(base.loc), np.asarray(base.scale))
        return torch.distributions.Independent(torch.distributions.Normal(to_torch(loc), to_torch(scale)), 1)
    raise ValueError(f"cannot translate a {type(prior).__name__} prior (base {type(base).__name__}) to torch; "
                     "expected a box Uniform, a MultivariateNormal or independent Normals")


def _train(trainer_cls, estimator_arg: str, builder, build_kwargs: dict, theta, x, prior, train_kwargs: dict,
           seed: int | None, settings: dict, posterior_kwargs: dict | None = None) -> SbiRun:
    theta_t, x_t = to_torch(theta), to_torch(x)
    if theta_t.ndim != 2 or x_t.ndim != 2 or theta_t.shape[0] != x_t.shape[0]:
        raise ValueError(f"theta and x must be 2-D with the same number of rows, got shapes "
                         f"{tuple(theta_t.shape)} and {tuple(x_t.shape)}")
    if seed is not None:
        torch.manual_seed(seed)
    train_kwargs = {**SBI_TRAIN_DEFAULTS, **train_kwargs}
    start = time.perf_counter()
    # builder None: the trainer's own default estimator.
    estimator = {} if builder is None else {estimator_arg: builder(**build_kwargs)}
    inference = trainer_cls(prior=prior, **estimator, tracker=NullTracker(), show_progress_bars=False)
    inference.append_simulations(theta_t, x_t).train(**train_kwargs)
    posterior = inference.build_posterior(**(posterior_kwargs or {}))
    train_s = time.perf_counter() - start
    epochs = int(inference.summary["epochs_trained"][-1])
    settings = {**settings, "estimator": dict(build_kwargs), "train": train_kwargs,
                "build_posterior": dict(posterior_kwargs or {}), "seed": seed}
    return SbiRun(posterior, train_s, epochs, settings, inference)


def train_sbi_npe(theta, x, prior, *, model: str = "nsf", hidden_features: int = 50, num_transforms: int = 5,
                  num_bins: int = 10, seed: int | None = None, sbi_defaults: bool = False,
                  **train_kwargs) -> SbiRun:
    """Train sbi's NPE (NPE-C; single round, so plain maximum likelihood) and build its posterior.

    Arguments:
        theta: (n, d) parameters.
        x: (n, c) simulations.
        prior: torch prior (see `sbi_prior`).
        model, hidden_features, num_transforms, num_bins: arguments of `sbi.neural_nets.posterior_nn`.
        seed: torch seed set before training (None leaves torch's RNG as it is).
        sbi_defaults: ignore the estimator arguments and use `NPE(prior)` with sbi's default
            density estimator (the string default of `NPE`, 'maf' in 0.27).
        **train_kwargs: arguments of `NPE.train` (defaults: `SBI_TRAIN_DEFAULTS`).

    Returns:
        A `SbiRun`.

    Raises:
        ValueError: for arrays of the wrong shape.
    """
    if sbi_defaults:
        return _train(NPE, "density_estimator", None, {}, theta, x, prior, train_kwargs, seed,
                      {"method": "NPE", "sbi_defaults": True, "density_estimator": "sbi's NPE default ('maf')"})
    build = dict(model=model, hidden_features=hidden_features, num_transforms=num_transforms, num_bins=num_bins)
    return _train(NPE, "density_estimator", posterior_nn, build, theta, x, prior, train_kwargs, seed,
                  {"method": "NPE"})


def train_sbi_fmpe(theta, x, prior, *, model: str = "mlp", hidden_features: int = 100, num_layers: int = 5,
                   seed: int | None = None, posterior_kwargs: dict | None = None, **train_kwargs) -> SbiRun:
    """Train sbi's flow-matching posterior estimation (FMPE) and build its posterior (ODE sampling).

    Arguments:
        theta, x, prior, seed: as for `train_sbi_npe`.
        model, hidden_features, num_layers: arguments of `sbi.neural_nets.posterior_flow_nn`
            (its defaults: 'mlp', 100, 5).
        posterior_kwargs: arguments of `FMPE.build_posterior` (e.g. sample_with='ode').
        **train_kwargs: arguments of `FMPE.train`.

    Returns:
        A `SbiRun`.
    """
    build = dict(model=model, hidden_features=hidden_features, num_layers=num_layers)
    return _train(FMPE, "vf_estimator", posterior_flow_nn, build, theta, x, prior, train_kwargs, seed,
                  {"method": "FMPE"}, posterior_kwargs)


def train_sbi_npse(theta, x, prior, *, sde_type: str = "ve", model: str = "mlp", hidden_features: int = 100,
                   num_layers: int = 5, seed: int | None = None, posterior_kwargs: dict | None = None,
                   **train_kwargs) -> SbiRun:
    """Train sbi's neural posterior score estimation (NPSE) and build its posterior (SDE sampling).

    Arguments:
        theta, x, prior, seed: as for `train_sbi_npe`.
        sde_type: 've', 'vp' or 'subvp'.
        model, hidden_features, num_layers: arguments of `sbi.neural_nets.posterior_score_nn`.
        posterior_kwargs: arguments of `NPSE.build_posterior` (e.g. sample_with='ode').
        **train_kwargs: arguments of `NPSE.train`.

    Returns:
        A `SbiRun`.

    Raises:
        ValueError: for an unknown sde_type.
    """
    if sde_type not in ("ve", "vp", "subvp"):
        raise ValueError(f"sde_type must be 've', 'vp' or 'subvp', got {sde_type!r}")
    build = dict(model=model, sde_type=sde_type, hidden_features=hidden_features, num_layers=num_layers)
    return _train(NPSE, "vf_estimator", posterior_score_nn, build, theta, x, prior, train_kwargs, seed,
                  {"method": "NPSE"}, posterior_kwargs)


def sample_sbi(posterior, x_obs, num_samples: int, *, seed: int | None = None, **sample_kwargs
               ) -> tuple[np.ndarray, float]:
    """Draw posterior samples for one observation and time the call.

    Arguments:
        posterior: an sbi posterior.
        x_obs: one observation, shape (c,).
        num_samples: number of samples.
        seed: torch seed set before sampling (outside the timed region).
        **sample_kwargs: extra arguments of `posterior.sample` (progress bars are off).

    Returns:
        (samples as a NumPy array of shape (num_samples, d), wall seconds of the call).
    """
    if seed is not None:
        torch.manual_seed(seed)
    x_t = to_torch(x_obs).reshape(1, -1)
    start = time.perf_counter()
    with torch.no_grad():
        samples = posterior.sample((num_samples,), x=x_t, show_progress_bars=False, **sample_kwargs)
    seconds = time.perf_counter() - start
    return to_numpy(samples).reshape(num_samples, -1), seconds


def set_torch_threads(n: int | None = None) -> int:
    """Let torch use `n` threads (default: one per core this process may run on, so that a run
    pinned with taskset is not oversubscribed); returns the number set."""
    if n is None:
        from jaxhep.training.parallel import usable_cores

        n = usable_cores()
    torch.set_num_threads(n)
    return torch.get_num_threads()


def versions() -> dict[str, str]:
    """Versions of the peer stack (torch, sbi, scikit-learn, numpy)."""
    import sklearn

    return {"torch": torch.__version__, "sbi": sbi.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__}


def machine_info() -> dict[str, Any]:
    """Where the benchmark ran (see `_machine.machine_info`), plus torch's thread count."""
    return _machine.machine_info() | {"torch_threads": torch.get_num_threads()}
