"""Neural posterior estimation (NPE): fit q(theta | x) directly to simulations."""

from __future__ import annotations

import equinox as eqx
from jaxtyping import PRNGKeyArray

from jaxhep.checks import check_positive_finite, check_positive_int
from jaxhep.densities import AbstractConditionalDensity, MixtureDensityNetwork, maf, nsf
from jaxhep.densities.flows import NSF_LAYOUTS
from jaxhep.nn import get_activation
from jaxhep.sbi.base import AbstractPosteriorEstimator

DENSITY_ESTIMATORS = ("nsf", "nsf_autoregressive", "maf", "mdn")


class NPE(AbstractPosteriorEstimator):
    """Amortized neural posterior estimation with a normalizing flow or mixture density network.

    Arguments:
        density_estimator: 'nsf' (spline coupling flow), 'nsf_autoregressive', 'maf', or 'mdn'.
        num_transforms: flow layers (ignored by 'mdn'); 5, as in sbi.
        hidden_features: conditioner / network width; 150 by default (sbi uses 50).
        batch_size: minibatch size; 100 by default (sbi uses 200). Width 150 with batch 100
            (session 16, 2026-11-30) brought slcp at 10^4 simulations from a mean C2ST over 10
            observations of 0.879 (0.867-0.893 over six simulation seeds, width 100 with batch
            200) to 0.870 (0.862-0.876), with two_moons, gaussian_linear and bernoulli_glm as
            before (within 0.006), for 1.1-1.2x (gaussian_linear, slcp) to 1.5x (two_moons) the
            training time on one core.
            Before that, 5 layers of width 100 had replaced sbi-like 8 layers of width 50
            (slcp 0.888 -> 0.876). README.md has the commands.
        learning_rate: Adam step size.
        validation_fraction: held-out share for early stopping.
        patience: epochs without validation improvement before stopping.
        max_epochs: upper bound on epochs.
        progress: show a progress bar.
        num_bins: spline bins (NSF).
        tail_bound: NSF splines act on [-tail_bound, tail_bound] (identity outside); 5 by default
            (sbi uses 3).
        activation: hidden activation of the conditioners (all estimators); "tanh" by default
            (sbi's NSF uses "relu"). Mean held-out negative log-likelihood at 10^4 simulations
            over two training seeds, relu with bound 3 -> tanh with bound 5 (width 100, batch
            200; 2026-11-30):
            bernoulli_glm 2.62 -> 2.24, gaussian_linear -0.49 -> -0.67, slcp 4.66 -> 4.49,
            two_moons -3.58 -> -3.63; mean C2ST on bernoulli_glm 0.63-0.65 -> 0.59-0.60, but on
            slcp more spread over seeds (0.867-0.893 against 0.872-0.879): for multimodal
            posteriors like slcp's, activation="relu" with tail_bound=3.0 can be the better
            choice. README.md has the commands.
        num_components: mixture components (MDN).
        clip_norm: gradient clipping norm (None for none).
        z_score_theta, z_score_x: standardise theta (in unconstrained space) and x.
        ema_decay: if set, validate and return an exponential moving average of the weights
            (see `jaxhep.training.fit`). The default 0.99 averages over about the last 100 steps;
            on bernoulli_glm at 10^4 simulations it lowered the mean C2ST over 10 observations
            from 0.654 to 0.630. None switches averaging off.
        validation_draws: evaluations of the validation loss per epoch, averaged, each with its
            own fixed keys (see `jaxhep.training.fit`). NPE's loss is deterministic, so 1; for
            NPSE and FMPE, whose losses draw random times and noise, more draws make early
            stopping react less to that noise (FMPE on two_moons at learning rate 5e-4 with a
            training key whose run stopped at epoch 259 with C2ST 0.75: with 8 draws it trained
            all 1000 epochs, 0.52).
        lr_decay_factor, lr_decay_patience: a plateau schedule: the step size is multiplied by
            lr_decay_factor after every lr_decay_patience epochs without a better validation loss
            (see `jaxhep.training.fit`); None (the default) keeps it constant. On the diffusion
            benchmarks it stopped training early on the validation-loss plateaus of
            gaussian_mixture (C2ST 0.74 instead of 0.56-0.59), so it is off by default.
        weight_decay: decoupled weight decay (AdamW, Loshchilov and Hutter 2019); 0 trains with
            Adam.
        support: for a bounded prior, "transform" (train in the image of a logit-type map of the
            prior's box, so that no sample can leave it) or "truncate" (train on theta itself and
            reject samples outside the box; `log_prob` is then not renormalised).
        embedding_net: an equinox module mapping one (z-scored) x to a vector of summary
            features, trained together with the density, e.g.
            `jaxhep.nn.PermutationInvariant` for x made of iid draws. None: condition on x itself.
        devices: data-parallel training (see `jaxhep.training.fit`): None trains on the default
            device; "all", a count or a sequence of devices split every minibatch over them
            (`batch_size` must be a multiple of their number). On a CPU, JAX makes several
            devices only when told before it first runs: `jaxhep.training.use_cpu_cores()`
            right after `import jax` makes one per core; NPE with sbi's settings on two_moons
            then trains about 1.4x faster per epoch on 2 cores.
        layout: the NSF network's insides: "jaxhep" (the default) or "sbi", the network PyTorch
            sbi builds for `posterior_nn("nsf")`, the same function of the same parameters (see
            `jaxhep.densities.nsf`); for comparisons with sbi. density_estimator="nsf" only.

    Raises:
        ValueError: for an unknown estimator name or invalid sizes.
    """

    density_estimator: str = "nsf"
    num_transforms: int = 5
    hidden_features: int = 150
    batch_size: int = 100
    learning_rate: float = 5e-4
    validation_fraction: float = 0.1
    patience: int = 20
    max_epochs: int = 1000
    progress: bool = True
    num_bins: int = 10
    tail_bound: float = 5.0
    activation: str = "tanh"
    num_components: int = 10
    clip_norm: float | None = 5.0
    z_score_theta: bool = True
    z_score_x: bool = True
    ema_decay: float | None = 0.99
    validation_draws: int = 1
    lr_decay_factor: float | None = None
    lr_decay_patience: int = 10
    weight_decay: float = 0.0
    embedding_net: eqx.Module | None = None
    support: str = "transform"
    devices: None | str | int | tuple = None
    layout: str = "jaxhep"

    def __check_init__(self):
        if self.density_estimator not in DENSITY_ESTIMATORS:
            raise ValueError(f"unknown density_estimator {self.density_estimator!r}; expected one of "
                             f"{DENSITY_ESTIMATORS}")
        for name in ("num_transforms", "hidden_features", "num_bins", "num_components"):
            check_positive_int(name, getattr(self, name), numpy_ints=False)
        check_positive_finite("tail_bound", self.tail_bound)
        get_activation(self.activation)  # an unknown name fails here, with the names it knows
        if self.layout not in NSF_LAYOUTS:
            raise ValueError(f"layout must be one of {NSF_LAYOUTS}, got {self.layout!r}")
        if self.layout == "sbi" and self.density_estimator != "nsf":
            raise ValueError(f"layout='sbi' is sbi's NSF network: it needs density_estimator='nsf', got "
                             f"{self.density_estimator!r}")

    @property
    def method(self) -> str:
        return "npe"

    def build(self, key: PRNGKeyArray, theta_dim: int, x_dim: int) -> AbstractConditionalDensity:
        if self.density_estimator == "mdn":
            return MixtureDensityNetwork(theta_dim, x_dim, self.num_components, self.hidden_features,
                                         activation=self.activation, key=key)
        if self.density_estimator == "maf":
            return maf(theta_dim, x_dim, num_transforms=self.num_transforms, hidden_features=self.hidden_features,
                       activation=self.activation, key=key)
        return nsf(theta_dim, x_dim, num_transforms=self.num_transforms, hidden_features=self.hidden_features,
                   num_bins=self.num_bins, tail_bound=self.tail_bound, activation=self.activation,
                   autoregressive=self.density_estimator == "nsf_autoregressive", layout=self.layout, key=key)


