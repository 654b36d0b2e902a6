"""Representation theory for finite-group equivariant PyTorch models, on top of escnn.

``ereps`` turns an escnn representation into what equivariant layers need: direct sums, isotypic
decompositions, invariant projectors, a basis of the equivariant linear maps, group actions on
tensors and an equivariance checker.
"""

from __future__ import annotations

from ereps import _pickling
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
    group_order,
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

# Groups, representations and group elements pickle by reference (torch.save(model), pickle,
# multiprocessing, copy.deepcopy): see ereps._pickling.
_pickling.register_reducers()

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
    "group_elements",
    "group_order",
    "init_std",
    "invariant_orthogonal_projector",
    "is_permutation_representation",
    "isotypic_decomp_rep",
    "isotypic_slices",
    "regular_multiplicity",
    "rep_matrices",
    "rep_matrix",
]
