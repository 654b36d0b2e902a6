"""Recognizing copies of the regular representation, and the group's Cayley table."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ereps._escnn import Group, Representation
from ereps._group_action import group_order, rep_matrices

__all__ = ["cayley_index", "is_permutation_representation", "regular_multiplicity"]


# escnn groups are unhashable singletons: key the cache on their identity and keep them alive.
_CAYLEY: dict[int, tuple[Group, npt.NDArray[np.int64]]] = {}


def _cayley_np(group: Group) -> npt.NDArray[np.int64]:
    cached = _CAYLEY.get(id(group))
    if cached is not None:
        return cached[1]
    # ρ_reg(g_a) e_c = e_{g_a g_c}: row b of ρ_reg(g_a) has its one at c = index(g_a⁻¹ g_b). Reading
    # it off the regular matrices avoids |G|² slow escnn group operations.
    regular = rep_matrices(group.regular_representation)
    table = regular.argmax(dim=-1).numpy().astype(np.int64)
    _CAYLEY[id(group)] = (group, table)
    return table


def cayley_index(group: Group) -> Tensor:
    r"""Return the table ``T[a, b] = index(g_a⁻¹ g_b)`` of a finite group.

    A linear map ``W`` on the regular representation (``ρ(g) e_h = e_{gh}``) commutes with the group
    action iff ``W[ga, gb] = W[a, b]`` for all ``g``, i.e. iff ``W[a, b] = w(g_a^{-1} g_b)`` for a
    function ``w`` on the group: a group convolution. ``w[T]`` builds that matrix with one gather.

    Args:
        group: A finite escnn group.

    Returns:
        Long tensor of shape ``(|G|, |G|)``.
    """
    return torch.from_numpy(_cayley_np(group))


def regular_multiplicity(rep: Representation) -> int | None:
    """Return ``c`` if ``ρ(g) = I_c ⊗ ρ_reg(g)`` for every ``g``, else ``None``.

    Such a representation is ``c`` copies of the regular representation in escnn's basis: features
    are ``c`` functions on the group, stored one after another, each as ``|G|`` values.

    Args:
        rep: A representation of a finite group.

    Returns:
        The number of regular copies, or ``None`` if ``rep`` is not of that form.
    """
    order = group_order(rep.group)
    if rep.size % order != 0:
        return None
    copies = rep.size // order
    key = "_ereps_regular_multiplicity"
    cached = rep.attributes.get(key)
    if cached is not None:
        return int(cached) if cached >= 0 else None
    result = copies if _is_regular_copies(rep, copies) else None
    rep.attributes[key] = -1 if result is None else result
    return result


def _is_regular_copies(rep: Representation, copies: int) -> bool:
    regular = rep.group.regular_representation
    # Fast structural test: escnn's direct sum of regular copies has these irreps and this
    # block-diagonal change of basis.
    if [tuple(i) for i in rep.irreps] == [tuple(i) for i in regular.irreps] * copies:
        q = np.asarray(rep.change_of_basis, dtype=np.float64)
        q_reg = np.asarray(regular.change_of_basis, dtype=np.float64)
        n = q_reg.shape[0]
        blocks_ok = all(
            np.allclose(q[i * n : (i + 1) * n, i * n : (i + 1) * n], q_reg, atol=1e-10)
            for i in range(copies)
        )
        off_block = q.copy()
        for i in range(copies):
            off_block[i * n : (i + 1) * n, i * n : (i + 1) * n] = 0.0
        if blocks_ok and np.abs(off_block).max(initial=0.0) < 1e-10:
            return True
    # Otherwise compare the matrices, block by block, for every element.
    mats = rep_matrices(rep)
    reg = rep_matrices(regular)
    n = reg.shape[-1]
    blocks = mats.reshape(mats.shape[0], copies, n, copies, n)
    eye = torch.eye(copies, dtype=mats.dtype).view(1, copies, 1, copies, 1)
    expected = eye * reg.view(reg.shape[0], 1, n, 1, n)
    return bool(torch.allclose(blocks, expected, rtol=0.0, atol=1e-9))


def is_permutation_representation(rep: Representation) -> bool:
    """Return whether every ``ρ(g)`` is a permutation matrix.

    Exactly on such representations a pointwise nonlinearity ``σ`` commutes with the group action,
    ``σ(ρ(g) x) = ρ(g) σ(x)``, for every ``σ``.

    Args:
        rep: A representation of a finite group.

    Returns:
        Whether all matrices of ``rep`` are permutation matrices.
    """
    mats = rep_matrices(rep)
    binary = bool(torch.all((mats.abs() < 1e-9) | ((mats - 1).abs() < 1e-9)))
    return (
        binary
        and bool(torch.all(mats.round().sum(dim=-1) == 1))
        and bool(torch.all(mats.round().sum(dim=-2) == 1))
    )
