"""Invertible maps with log-determinants: the building blocks of normalizing flows."""

from jaxhep.bijections.autoregressive import MaskedAutoregressive
from jaxhep.bijections.base import AbstractBijection, AbstractFeatureBijection
from jaxhep.bijections.chain import Chain, Invert, Stacked
from jaxhep.bijections.coupling import Coupling, alternating_mask
from jaxhep.bijections.elementwise import AffineTransformer, SplineTransformer
from jaxhep.bijections.linear import Affine, LULinear, Permutation
from jaxhep.bijections.support import BoxToReal, support_bounds

__all__ = [
    "AbstractBijection", "AbstractFeatureBijection", "Affine", "AffineTransformer", "BoxToReal", "Chain", "Coupling", "Invert",
    "LULinear", "MaskedAutoregressive", "Permutation", "SplineTransformer", "Stacked", "alternating_mask",
    "support_bounds",
]
