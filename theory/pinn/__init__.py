"""Physics-informed neural networks: forward and inverse PDE problems (`jaxhep.theory.pinn`).

Write a PDE as a residual of the solution function and its derivatives, state the domain and the
initial/boundary conditions (or observations for an inverse problem), pick a network, and call
`solve`. Built-in benchmarks (Burgers, advection, Allen-Cahn, Poisson, heat, inverse Burgers) come
with exact or in-project reference solutions; `run_benchmark` trains one end to end.
"""

from jaxhep.theory.pinn.derivatives import gradient, hessian, laplacian, partial
from jaxhep.theory.pinn.domain import Box, rad_resample, unit_sample
from jaxhep.theory.pinn.marching import TimeWindows, solve_time_marching
from jaxhep.theory.pinn.networks import Dense, PINNNet
from jaxhep.theory.pinn.precision import float64
from jaxhep.theory.pinn.problem import (Dirichlet, Initial, Neumann, Observations, PDEProblem, Periodic,
                                        PINNModel)
from jaxhep.theory.pinn.problems import BUILTINS, Benchmark, get_benchmark
from jaxhep.theory.pinn.reference import allen_cahn_spectral, burgers_cole_hopf
from jaxhep.theory.pinn.solver import History, PINNSolver, StepInfo, TrainConfig, TrainState, relative_l2, solve
from jaxhep.theory.pinn.study import run_benchmark

__all__ = [
    "BUILTINS", "Benchmark", "Box", "Dense", "Dirichlet", "History", "Initial", "Neumann", "Observations",
    "PDEProblem", "PINNModel", "PINNNet", "PINNSolver", "Periodic", "StepInfo", "TimeWindows", "TrainConfig",
    "TrainState",
    "allen_cahn_spectral", "burgers_cole_hopf", "float64", "get_benchmark", "gradient", "hessian",
    "laplacian", "partial", "rad_resample", "relative_l2", "run_benchmark", "solve", "solve_time_marching",
    "unit_sample",
]
