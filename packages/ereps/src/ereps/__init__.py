"""Representation theory for finite-group equivariant PyTorch models, on top of escnn.

``ereps`` turns an escnn representation into what equivariant layers need: direct sums, isotypic
decompositions, invariant projectors, a basis of the equivariant linear maps, group actions on
tensors, an equivariance checker and symmetric statistics (mean, covariance, whitening).
"""

from __future__ import annotations

from ereps._direct_sum import direct_sum
from ereps._escnn import (
    CACHE_ENV_VAR,
    Group,
    GroupElement,
    IrreducibleRepresentation,
    Representation,
    cache_dir,
)
from ereps._exact_buffers import ExactBuffersModule
from ereps._group_action import (
    EquivarianceError,
    act,
    check_equivariance,
    group_elements,
    rep_matrices,
    rep_matrix,
)
from ereps._hom_basis import (
    INIT_SCHEMES,
    GroupHomomorphismBasis,
    InitScheme,
    endomorphism_basis,
    init_std,
)
from ereps._isotypic import IrrepId, isotypic_decomp_rep, isotypic_slices
from ereps._projector import invariant_orthogonal_projector
from ereps._regular import cayley_index, is_permutation_representation, regular_multiplicity
from ereps._statistics import (
    group_average,
    symmetric_covariance,
    symmetric_mean,
    whitening_transform,
)

__version__ = "0.1.0"

__all__ = [
    "CACHE_ENV_VAR",
    "INIT_SCHEMES",
    "EquivarianceError",
    "ExactBuffersModule",
    "Group",
    "GroupElement",
    "GroupHomomorphismBasis",
    "InitScheme",
    "IrreducibleRepresentation",
    "IrrepId",
    "Representation",
    "__version__",
    "act",
    "cache_dir",
    "cayley_index",
    "check_equivariance",
    "direct_sum",
    "endomorphism_basis",
    "group_average",
    "group_elements",
    "init_std",
    "invariant_orthogonal_projector",
    "is_permutation_representation",
    "isotypic_decomp_rep",
    "isotypic_slices",
    "regular_multiplicity",
    "rep_matrices",
    "rep_matrix",
    "symmetric_covariance",
    "symmetric_mean",
    "whitening_transform",
]
