"""Isotypic decomposition of a representation."""

from __future__ import annotations

from typing import Any

import numpy as np

from ereps._escnn import Representation
from ereps._validation import check_representation

__all__ = ["IrrepId", "isotypic_decomp_rep", "isotypic_slices"]

IrrepId = tuple[object, ...]
"""escnn's identifier of an irreducible representation (a tuple)."""

_SLICES_KEY = "isotypic_slices"


def _irrep_order(rep: Representation) -> dict[IrrepId, int]:
    return {tuple(irrep.id): i for i, irrep in enumerate(rep.group.irreps())}


def isotypic_decomp_rep(rep: Representation) -> Representation:
    r"""Return ``rep`` with its irreducible components grouped by type.

    Every representation is :math:`\rho(g) = Q \left(\bigoplus_i \rho_{k_i}(g)\right) Q^{-1}`.
    The result has the same matrices :math:`\rho(g)` but its list of irreps is sorted by type (in
    the order of ``group.irreps()``), and its change of basis :math:`Q'` has its columns permuted
    to match. In the coordinates :math:`y = Q'^{-1} x` the isotypic subspace of each irrep type
    :math:`k`, :math:`\rho_k^{\oplus m_k}`, is one contiguous slice, available from
    :func:`isotypic_slices` (and as ``result.attributes["isotypic_slices"]``).

    Args:
        rep: A representation of a finite group.

    Returns:
        An equivalent representation (equal matrices) named ``"<name>-iso"``.

    Raises:
        TypeError: If ``rep`` is not an escnn representation.
    """
    check_representation(rep, "rep")
    order = _irrep_order(rep)
    group = rep.group
    # Column ranges of each irrep copy in the spectral basis.
    starts, offset = [], 0
    for irrep_id in rep.irreps:
        starts.append(offset)
        offset += group.irrep(*irrep_id).size
    ranked = sorted(range(len(rep.irreps)), key=lambda i: (order[tuple(rep.irreps[i])], i))
    perm: list[int] = []
    slices: dict[IrrepId, slice] = {}
    for i in ranked:
        irrep_id = tuple(rep.irreps[i])
        size = group.irrep(*irrep_id).size
        begin = len(perm)
        perm.extend(range(starts[i], starts[i] + size))
        previous = slices.get(irrep_id)
        slices[irrep_id] = slice(previous.start if previous else begin, len(perm))
    attributes: dict[str, Any] = {_SLICES_KEY: slices}
    q = np.asarray(rep.change_of_basis, dtype=np.float64)[:, perm]
    q_inv = np.asarray(rep.change_of_basis_inv, dtype=np.float64)[perm, :]
    return Representation(
        group,
        f"{rep.name}-iso",
        [rep.irreps[i] for i in ranked],
        q,
        supported_nonlinearities=set(rep.supported_nonlinearities),
        change_of_basis_inv=q_inv,
        **attributes,
    )


def isotypic_slices(rep: Representation) -> dict[IrrepId, slice]:
    """Return, per irrep type, the slice of spectral coordinates ``Q⁻¹x`` of its isotypic subspace.

    Args:
        rep: A representation whose irreps are grouped by type, e.g. from
            :func:`isotypic_decomp_rep`.

    Returns:
        ``{irrep_id: slice}`` in the order of the irreps.

    Raises:
        ValueError: If the irreps of ``rep`` are not grouped by type.
    """
    check_representation(rep, "rep")
    cached = rep.attributes.get(_SLICES_KEY)
    if isinstance(cached, dict):
        return dict(cached)
    slices: dict[IrrepId, slice] = {}
    offset = 0
    previous: IrrepId | None = None
    for irrep_id in map(tuple, rep.irreps):
        size = rep.group.irrep(*irrep_id).size
        if irrep_id in slices and irrep_id != previous:
            raise ValueError(
                f"isotypic_slices expects the irreps of {rep.name!r} grouped by type; irrep "
                f"{irrep_id} appears in two separate places. Call isotypic_decomp_rep(rep) first."
            )
        start = slices[irrep_id].start if irrep_id in slices else offset
        slices[irrep_id] = slice(start, offset + size)
        offset += size
        previous = irrep_id
    return slices
