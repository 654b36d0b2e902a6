"""Representation theory for finite-group equivariant PyTorch models, on top of escnn.

``ereps`` turns an escnn representation into what equivariant layers need: direct sums, isotypic
decompositions, invariant projectors, a basis of the equivariant linear maps, group actions on
tensors, an equivariance checker and symmetric statistics (mean, covariance, whitening). It also
re-exports escnn's finite-group constructors (``cyclic_group``, ``dihedral_group``, ``octa_group``,
...), imported with escnn's caches redirected (see :func:`cache_dir`), and the argument checks that
the layers built on it share (``check_representation``, ``check_same_group``, ``check_orthogonal``,
``check_init_scheme``). Test helpers for users' own models live in :mod:`ereps.testing`.

Examples:
    >>> import ereps
    >>> G = ereps.dihedral_group(4)
    >>> ereps.direct_sum([G.regular_representation, G.trivial_representation]).size
    9
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ereps import _pickling
from ereps._direct_sum import direct_sum
from ereps._escnn import (
    CACHE_ENV_VAR,
    Group,
    GroupElement,
    IrreducibleRepresentation,
    Representation,
    cache_dir,
    cyclic_group,
    dihedral_group,
    direct_product,
    full_ico_group,
    full_octa_group,
    ico_group,
    octa_group,
)
from ereps._exact_buffers import ExactBuffersModule
from ereps._group_action import (
    EquivarianceError,
    act,
    check_equivariance,
    equivariance_errors,
    group_elements,
    group_order,
    rep_matrices,
    rep_matrix,
)
from ereps._hom_basis import (
    INIT_SCHEMES,
    GroupHomomorphismBasis,
    InitScheme,
    check_init_scheme,
    endomorphism_basis,
    init_std,
    sample_init,
)
from ereps._isotypic import IrrepId, isotypic_decomp_rep, isotypic_slices
from ereps._projector import invariant_orthogonal_projector
from ereps._regular import cayley_index, is_permutation_representation, regular_multiplicity
from ereps._serialize import (
    group_from_dict,
    group_to_dict,
    representation_from_dict,
    representation_to_dict,
)
from ereps._spectral import (
    RegularSpectralBasis,
    SpectralBlock,
    regular_spectral_basis,
    spectral_rep,
)
from ereps._statistics import (
    group_average,
    symmetric_covariance,
    symmetric_mean,
    whitening_transform,
)
from ereps._validation import check_orthogonal, check_representation, check_same_group

# Groups, representations and group elements pickle by reference (torch.save(model), pickle,
# multiprocessing, copy.deepcopy): see ereps._pickling.
_pickling.register_reducers()

# The installed distribution's version: one source (the repository's VERSION file, read at build
# time), never a second literal here.
try:
    __version__: str = _metadata.version("ereps")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
    "RegularSpectralBasis",
    "Representation",
    "SpectralBlock",
    "__version__",
    "act",
    "cache_dir",
    "cayley_index",
    "check_equivariance",
    "check_init_scheme",
    "check_orthogonal",
    "check_representation",
    "check_same_group",
    "cyclic_group",
    "dihedral_group",
    "direct_product",
    "direct_sum",
    "endomorphism_basis",
    "equivariance_errors",
    "full_ico_group",
    "full_octa_group",
    "group_average",
    "group_elements",
    "group_from_dict",
    "group_order",
    "group_to_dict",
    "ico_group",
    "init_std",
    "invariant_orthogonal_projector",
    "is_permutation_representation",
    "isotypic_decomp_rep",
    "isotypic_slices",
    "octa_group",
    "regular_multiplicity",
    "regular_spectral_basis",
    "rep_matrices",
    "rep_matrix",
    "representation_from_dict",
    "representation_to_dict",
    "sample_init",
    "spectral_rep",
    "symmetric_covariance",
    "symmetric_mean",
    "whitening_transform",
]
