"""Lattice field theory: actions, equivariant normalizing flows, exact flow-based MCMC, HMC and observables.

Reference setups: Albergo, Kanwar, Shanahan, PRD 100 034515 (2019) for phi^4; Kanwar et al., PRL 125
121601 (2020) for U(1); Albergo et al., arXiv:2101.08176 (tutorial) for both.
"""

from .actions import (
    AbstractAction,
    Phi4Action,
    U1Action,
    gauge_transform,
    phi4_action,
    plaquette_angles,
    topological_charge,
    u1_action,
    wrap_angle,
)
from .exact import (
    free_field_two_point,
    u1_exact_charge_distribution,
    u1_exact_plaquette,
    u1_exact_topological_susceptibility,
)
from .flows import (
    AffineCoupling,
    CircularConvNet,
    GaugeEquivariantCoupling,
    GaussianPrior,
    HaarPrior,
    LatticeFlow,
    SplineCoupling,
    checkerboard,
    make_phi4_flow,
    make_u1_flow,
    rational_quadratic_spline,
    u1_coupling_masks,
)
from .mcmc import (
    HMC,
    FlowChain,
    FlowMetropolis,
    HMCInfo,
    HMCState,
    IMHInfo,
    IMHState,
    flow_metropolis_chain,
    imh_accept,
    reweight,
    run_chain,
)
from .observables import (
    Estimate,
    TauInt,
    autocorrelation,
    average_plaquette,
    bootstrap,
    connected_two_point,
    correlator_per_config,
    effective_mass,
    effective_mass_from_correlator,
    integrated_autocorrelation_time,
    magnetization,
    second_moment_correlation_length,
    topological_susceptibility,
    two_point_susceptibility,
)
from .train import TrainHistory, ess_per_sample, reverse_kl_loss, train_reverse_kl
