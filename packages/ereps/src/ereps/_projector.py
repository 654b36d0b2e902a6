"""The orthogonal projector onto the invariant subspace."""

from __future__ import annotations

import torch
from torch import Tensor

from ereps._escnn import Representation
from ereps._group_action import rep_matrices
from ereps._validation import check_orthogonal, check_representation

__all__ = ["invariant_orthogonal_projector"]


def invariant_orthogonal_projector(
    rep: Representation,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Return the orthogonal projector onto the subspace of vectors fixed by every ``ρ(g)``.

    .. math::
        P = \frac{1}{|G|} \sum_{g \in G} \rho(g)

    For an orthogonal representation :math:`P` is symmetric and idempotent, commutes with every
    :math:`\rho(g)`, and its rank is the multiplicity of the trivial irrep in :math:`\rho`.

    Args:
        rep: An orthogonal representation of a finite group.
        dtype: Floating dtype of the result (computed in float64).
        device: Device of the result.

    Returns:
        Tensor of shape ``(rep.size, rep.size)``.

    Raises:
        ValueError: If the change of basis of ``rep`` is not orthogonal.
    """
    check_representation(rep, "rep")
    check_orthogonal(rep, "rep")
    projector = rep_matrices(rep).mean(dim=0)
    # Symmetrize away the round-off of the average.
    projector = 0.5 * (projector + projector.T)
    return projector.to(dtype=dtype, device=device)
