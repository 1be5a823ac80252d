"""Built-in benchmark problems with exact or reference solutions computed in the project.

Each builder returns a `Benchmark`: the `PDEProblem`, the network settings, the training settings
that the experiments use, the reference solution on a grid, and the switches of the techniques
that the ablation study turns off one at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from jaxhep.theory.pinn.derivatives import laplacian, partial
from jaxhep.theory.pinn.domain import Box
from jaxhep.theory.pinn.networks import PINNNet
from jaxhep.theory.pinn.precision import float64
from jaxhep.theory.pinn.problem import Dirichlet, Initial, Observations, PDEProblem
from jaxhep.theory.pinn.reference import allen_cahn_spectral, burgers_cole_hopf
from jaxhep.theory.pinn.solver import TrainConfig

BURGERS_NU = 0.01 / np.pi


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A built-in problem with its settings and reference.

    Attributes:
        name: problem name.
        problem: the `PDEProblem`.
        net_kwargs: keyword arguments of `PINNNet` (in_size, bounds and periodicity included).
        config: training settings used by the experiments and the CLI.
        axes: the 1-D axes of the reference grid, one per coordinate.
        reference: reference solution on that grid, shape tuple(len(a) for a in axes).
        truth: true values of the unknown coefficients (inverse problems).
        techniques: technique name -> (net_kwargs overrides, config overrides) that switch it off.
        windows: number of time windows for time marching (1: one network on the whole box).
    """

    name: str
    problem: PDEProblem
    net_kwargs: dict
    config: TrainConfig
    axes: tuple
    reference: np.ndarray
    truth: dict = dataclasses.field(default_factory=dict)
    techniques: dict = dataclasses.field(default_factory=dict)
    windows: int = 1

    def make_net(self, key: PRNGKeyArray, **overrides: Any) -> PINNNet:
        """Build the network (float64 parameters when called inside `float64()`)."""
        kwargs = dict(self.net_kwargs)
        kwargs.update(overrides)
        return PINNNet(key=key, **kwargs)

    def points(self) -> np.ndarray:
        """Grid points (N, d) in C order matching `reference.ravel()`."""
        mesh = np.meshgrid(*self.axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1)


def _techniques(causal: bool, lbfgs: bool = True) -> dict:
    """Ablation rows: technique -> (network overrides, training overrides) that switch it off.

    Without L-BFGS in the baseline (`lbfgs=False`), the L-BFGS row instead switches it on
    ("lbfgs_added": the ablation moves part of Adam's time budget to L-BFGS).
    """
    out = {
        "fourier_features": ({"fourier_scale": None}, {}),
        "weight_factorization": ({"factorization": None}, {}),
        "gradnorm_balancing": ({}, {"balance": False}),
    }
    out.update({"lbfgs": ({}, {"lbfgs_steps": 0})} if lbfgs else {"lbfgs_added": ({}, {"lbfgs_steps": 20000})})
    if causal:
        out["causal_weighting"] = ({}, {"causal": False})
    return out


# ---------------------------------------------------------------- Burgers
def burgers_residual(u, x, c):
    """u_t + u u_x - nu u_xx, coordinates (x, t)."""
    return partial(u, x, 1) + u(x) * partial(u, x, 0) - c["nu"] * partial(u, x, 0, 0)


def burgers(hard: bool = False, nx: int = 256, nt: int = 101) -> Benchmark:
    """Burgers on x in [-1, 1], t in [0, 1], nu = 0.01/pi, u0 = -sin(pi x), u(+-1, t) = 0 (Raissi et al.).

    Arguments:
        hard: impose the initial and boundary conditions exactly via u = -sin(pi x) + t (1 - x^2) N.
        nx, nt: reference grid size.
    """
    box = Box([-1.0, 0.0], [1.0, 1.0], time_dim=1, names=("x", "t"))
    u0 = lambda x: -jnp.sin(jnp.pi * x[0])  # noqa: E731
    if hard:
        conds = ()
        transform = lambda x, y: -jnp.sin(jnp.pi * x[0]) + x[1] * (1 - x[0] ** 2) * y  # noqa: E731
    else:
        conds = (Initial(u0, 1, n=512), Dirichlet(0.0, 0, "both", n=256))
        transform = None
    xs, ts = np.linspace(-1, 1, nx), np.linspace(0, 1, nt)
    ref = burgers_cole_hopf(xs[:, None], ts[None, :], BURGERS_NU)
    problem = PDEProblem(box, burgers_residual, conds, known={"nu": BURGERS_NU}, output_transform=transform,
                         name="burgers")
    # Sized for a 2-core CPU, under 10 minutes of wall time in all: 80000 Adam steps in float32
    # (fresh residual points every step; about 8.5 minutes here, capped at 560 s), the learning
    # rate decaying to 1.5e-5, and no L-BFGS. L-BFGS on a fixed set of points fits the residual at
    # those points and not between them at the shock (the measured errors are in
    # theory/pinn/README.md, "L-BFGS minimises the loss on one fixed set"). Adam alone: 6.9e-4,
    # 3.3e-4, 5.2e-4 for seeds 0, 1, 2. `float64` stays on so that L-BFGS, if switched on, runs
    # in float64.
    net = dict(in_size=2, out_size=1, width=32, depth=4, arch="modified", lower=box.lower, upper=box.upper,
               fourier_scale=1.0, fourier_features=16, factorization=(0.5, 0.1))
    config = TrainConfig(steps=80000, batch=1024, learning_rate=1e-3, warmup=200, decay_steps=2000,
                         decay_rate=0.9, balance=True, balance_every=250, causal=True, causal_chunks=16,
                         causal_eps=1.0, lbfgs_steps=0, lbfgs_points=8192, chunk=50,
                         max_seconds=560.0, lbfgs_max_seconds=360.0, adam_float32=True)
    return Benchmark("burgers", problem, net, config, (xs, ts), ref, techniques=_techniques(True, lbfgs=False))


# ---------------------------------------------------------------- advection
def advection(speed: float = 50.0, nx: int = 256, nt: int = 101) -> Benchmark:
    """u_t + c u_x = 0 on x in [0, 2 pi) periodic, t in [0, 1], u0 = sin x; exact u = sin(x - c t)."""
    box = Box([0.0, 0.0], [2 * np.pi, 1.0], time_dim=1, names=("x", "t"))

    def residual(u, x, c):
        return partial(u, x, 1) + c["c"] * partial(u, x, 0)

    conds = (Initial(lambda x: jnp.sin(x[0]), 1, n=512),)
    xs, ts = np.linspace(0, 2 * np.pi, nx), np.linspace(0, 1, nt)
    ref = np.sin(xs[:, None] - speed * ts[None, :])
    problem = PDEProblem(box, residual, conds, known={"c": float(speed)}, name="advection")
    # Time marching over 10 windows (each crossing 0.8 periods in t); steps and budgets are for
    # the whole run, a tenth of each per window.
    net = dict(in_size=2, out_size=1, width=32, depth=3, arch="modified", lower=box.lower, upper=box.upper,
               periodic={0: 2 * np.pi}, fourier_scale=1.0, fourier_features=16, factorization=(0.5, 0.1))
    config = TrainConfig(steps=15000, batch=512, learning_rate=1e-3, warmup=100, decay_steps=1000,
                         decay_rate=0.9, balance=True, balance_every=250, causal=True, causal_chunks=16,
                         causal_eps=1.0, lbfgs_steps=10000, lbfgs_points=1024, chunk=50, max_seconds=250.0,
                         lbfgs_max_seconds=250.0)
    techniques = {**_techniques(True), "time_marching": ({}, {"windows": 1})}
    return Benchmark("advection", problem, net, config, (xs, ts), ref, techniques=techniques, windows=10)


# ---------------------------------------------------------------- Allen-Cahn
def allen_cahn(nx: int = 512) -> Benchmark:
    """u_t - 1e-4 u_xx + 5 u^3 - 5 u = 0, x in [-1, 1] periodic, t in [0, 1], u0 = x^2 cos(pi x)."""
    box = Box([-1.0, 0.0], [1.0, 1.0], time_dim=1, names=("x", "t"))

    def residual(u, x, c):
        v = u(x)
        return partial(u, x, 1) - c["d"] * partial(u, x, 0, 0) + c["a"] * (v**3 - v)

    conds = (Initial(lambda x: x[0] ** 2 * jnp.cos(jnp.pi * x[0]), 1, n=512),)
    xg, tg, ug = allen_cahn_spectral(n=nx)
    # Close the periodic grid at x = 1 so that the reference covers the whole box.
    xs = np.append(xg, 1.0)
    ref = np.concatenate([ug, ug[:, :1]], axis=1).T
    problem = PDEProblem(box, residual, conds, known={"d": 1e-4, "a": 5.0}, name="allen_cahn")
    net = dict(in_size=2, out_size=1, width=64, depth=4, arch="modified", lower=box.lower, upper=box.upper,
               periodic={0: 2.0}, fourier_scale=1.0, fourier_features=16, factorization=(0.5, 0.1))
    # Time marching over 5 windows (steps and budgets split among them), each trained by 18000
    # Adam steps in float32 with the learning rate decaying to 2e-5, about 20 minutes in all
    # here. The earlier recipe (1200 float64 Adam steps and 60 s of L-BFGS on 2048 fixed points
    # per window, 9.4 minutes) gave 7.9e-3, and 3.3e-2 with one network for the whole box;
    # 20000 float32 Adam steps per window and no L-BFGS gave 2.1e-3 (Burgers showed why: L-BFGS
    # on fixed points fits the residual at the points, not between them, at sharp fronts).
    config = TrainConfig(steps=90000, batch=1024, learning_rate=1e-3, warmup=200, decay_steps=500,
                         decay_rate=0.9, balance=True, balance_every=250, causal=True, causal_chunks=16,
                         causal_eps=1.0, lbfgs_steps=0, lbfgs_points=8192, chunk=50, max_seconds=1500.0,
                         lbfgs_max_seconds=300.0, adam_float32=True)
    techniques = {**_techniques(True, lbfgs=False), "time_marching": ({}, {"windows": 1})}
    return Benchmark("allen_cahn", problem, net, config, (xs, tg), ref, techniques=techniques, windows=5)


# ---------------------------------------------------------------- Poisson
def poisson_exact(x):
    """Exact Poisson solution u = sin(pi x) sin(2 pi y)."""
    return jnp.sin(jnp.pi * x[..., 0]) * jnp.sin(2 * jnp.pi * x[..., 1])


def poisson(hard: bool = True, n: int = 101) -> Benchmark:
    """-Laplace(u) = 5 pi^2 sin(pi x) sin(2 pi y) on [0, 1]^2, u = 0 on the boundary; exact solution known."""
    box = Box([0.0, 0.0], [1.0, 1.0], names=("x", "y"))

    def residual(u, x, c):
        return laplacian(u, x) + 5 * jnp.pi**2 * poisson_exact(x)

    if hard:
        conds = ()
        # The factor 16 makes the bubble function peak at 1, so the network output stays O(1).
        transform = lambda x, y: 16 * x[0] * (1 - x[0]) * x[1] * (1 - x[1]) * y  # noqa: E731
    else:
        conds = (Dirichlet(0.0, 0, "both", n=256, name="bc_x"), Dirichlet(0.0, 1, "both", n=256, name="bc_y"))
        transform = None
    xs = ys = np.linspace(0, 1, n)
    ref = np.asarray(np.sin(np.pi * xs[:, None]) * np.sin(2 * np.pi * ys[None, :]))
    problem = PDEProblem(box, residual, conds, output_transform=transform, name="poisson")
    net = dict(in_size=2, out_size=1, width=32, depth=3, lower=box.lower, upper=box.upper)
    config = TrainConfig(steps=1000, batch=1024, learning_rate=2e-3, warmup=100, decay_steps=500,
                         balance=not hard, lbfgs_steps=3000, lbfgs_points=2048, max_seconds=120.0,
                         lbfgs_max_seconds=240.0)
    return Benchmark("poisson", problem, net, config, (xs, ys), ref)


# ---------------------------------------------------------------- heat
HEAT_KAPPA = 0.05


def heat_exact(x, t, kappa=HEAT_KAPPA):
    """u = exp(-kappa pi^2 t) sin(pi x) + 0.5 exp(-9 kappa pi^2 t) sin(3 pi x)."""
    return (jnp.exp(-kappa * jnp.pi**2 * t) * jnp.sin(jnp.pi * x)
            + 0.5 * jnp.exp(-9 * kappa * jnp.pi**2 * t) * jnp.sin(3 * jnp.pi * x))


def heat(hard: bool = True, nx: int = 101, nt: int = 101) -> Benchmark:
    """u_t = kappa u_xx on x in [0, 1], t in [0, 1], u(0, t) = u(1, t) = 0, two-mode initial condition."""
    box = Box([0.0, 0.0], [1.0, 1.0], time_dim=1, names=("x", "t"))

    def residual(u, x, c):
        return partial(u, x, 1) - c["kappa"] * partial(u, x, 0, 0)

    u0 = lambda x: heat_exact(x[0], 0.0)  # noqa: E731
    if hard:
        conds = ()
        transform = lambda x, y: heat_exact(x[0], 0.0) + 4 * x[1] * x[0] * (1 - x[0]) * y  # noqa: E731
    else:
        conds = (Initial(u0, 1, n=256), Dirichlet(0.0, 0, "both", n=256))
        transform = None
    xs, ts = np.linspace(0, 1, nx), np.linspace(0, 1, nt)
    with float64():
        ref = np.asarray(heat_exact(jnp.asarray(xs)[:, None], jnp.asarray(ts)[None, :]))
    problem = PDEProblem(box, residual, conds, known={"kappa": HEAT_KAPPA}, output_transform=transform, name="heat")
    net = dict(in_size=2, out_size=1, width=32, depth=3, lower=box.lower, upper=box.upper)
    config = TrainConfig(steps=1000, batch=1024, learning_rate=2e-3, warmup=100, decay_steps=500,
                         balance=not hard, lbfgs_steps=3000, lbfgs_points=2048, max_seconds=120.0,
                         lbfgs_max_seconds=240.0)
    return Benchmark("heat", problem, net, config, (xs, ts), ref)


# ---------------------------------------------------------------- inverse Burgers
def inverse_burgers(key: PRNGKeyArray | None = None, n_obs: int = 2000, noise: float = 0.01,
                    nu_init: float = 0.01) -> Benchmark:
    """Recover nu of the Burgers problem from `n_obs` noisy values of u (noise: fraction of std(u)).

    Observations are Cole-Hopf values at uniform random points plus Gaussian noise of standard
    deviation `noise * std(u)` (the convention of Raissi et al. 2019); the initial and boundary
    conditions are not given to the solver. nu is fitted in log space from `nu_init`.
    """
    if key is None:
        key = jax.random.key(1234)
    kx, kn = jax.random.split(key)
    base = burgers(hard=False)
    xs = np.array(jax.random.uniform(kx, (n_obs, 2)), float)  # a writable copy, also under float64
    xs[:, 0] = 2 * xs[:, 0] - 1
    clean = burgers_cole_hopf(xs[:, 0], xs[:, 1], BURGERS_NU)
    noisy = clean + noise * np.std(clean) * np.asarray(jax.random.normal(kn, (n_obs,)), float)
    problem = PDEProblem(base.problem.domain, burgers_residual, (Observations(xs, noisy),),
                         unknown={"nu": nu_init}, name="inverse_burgers")
    net = dict(base.net_kwargs)
    config = TrainConfig(steps=4000, batch=1024, learning_rate=1e-3, warmup=200, decay_steps=1000,
                         decay_rate=0.9, balance=True, balance_every=250, lbfgs_steps=20000, lbfgs_points=2048,
                         chunk=50, max_seconds=240.0, lbfgs_max_seconds=360.0)
    return Benchmark("inverse_burgers", problem, net, config, base.axes, base.reference,
                     truth={"nu": BURGERS_NU})


BUILTINS: dict[str, Callable[..., Benchmark]] = {
    "burgers": burgers,
    "advection": advection,
    "allen_cahn": allen_cahn,
    "poisson": poisson,
    "heat": heat,
    "inverse_burgers": inverse_burgers,
}


def get_benchmark(name: str, **kwargs: Any) -> Benchmark:
    """Build a built-in problem by name.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in BUILTINS:
        raise ValueError(f"unknown PINN problem {name!r}; expected one of {sorted(BUILTINS)}")
    return BUILTINS[name](**kwargs)
