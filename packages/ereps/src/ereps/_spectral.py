r"""The spectral (isotypic, Fourier) basis of copies of the regular representation.

For a finite group :math:`G` the regular representation decomposes as
:math:`\rho_{reg}(g) = T \left(\bigoplus_k \rho_k(g)^{\oplus m_k}\right) T^\top` with an orthogonal
:math:`T` (``|G| × |G|``), ``m_k = d_k / e_k`` copies of each irrep ``ρ_k`` of dimension ``d_k``
whose endomorphism algebra :math:`\mathrm{End}_G(\rho_k)` has dimension ``e_k`` (1, 2 or 4: real,
complex or quaternionic type). In these coordinates every equivariant map between ``c_in`` and
``c_out`` regular copies is block diagonal by irrep type, and this module chooses the basis inside
each block so that the block is a *shared* matrix applied to ``d_k / e_k`` rows:

.. math::
    y_k[b, :] = M_k\, x_k[b, :], \qquad b = 0, \dots, d_k/e_k - 1, \qquad
    M_k \in \mathbb{R}^{(c_{out} m_k e_k) \times (c_{in} m_k e_k)},

where ``M_k`` is made of ``(c_out m_k) × (c_in m_k)`` blocks ``L(a) = Σ_j a_j L_j``, the matrices of
left multiplication by an element ``a`` of the algebra (``L_j`` of size ``e_k × e_k``). The cost of
the map is ``c_in · c_out · Σ_k d_k³ / e_k`` multiply-adds per token instead of
``c_in · c_out · |G|²``.

Construction, per irrep type ``k``: a Frobenius-orthogonal basis ``E_1 = I, E_2, …, E_e`` of
``End_G(ρ_k)`` scaled to orthogonal matrices (the ``E_j``, ``j ≥ 2``, are then anti-symmetric
complex structures: pure imaginary units of ``C`` or ``H``), and an orthonormal basis
``u_{b,j} = E_j v_b`` of ``R^{d_k}`` (Gram–Schmidt over the algebra), in which
``U^T E_j U = I_{d_k/e_k} ⊗ L_j``. The coordinates of one regular copy are, irrep type after irrep
type (sorted by ``(d_k, e_k)``, then in the order of ``group.irreps()``, so that blocks of one
shape are adjacent and the trivial irrep comes first), ``(b, μ, j)`` with ``μ`` the copy of
``ρ_k`` inside the regular representation; the trivial irrep has one coordinate, whose basis
vector is the constant function ``1/√|G|`` (positive sign).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ereps._escnn import Group, Representation
from ereps._group_action import group_order
from ereps._hom_basis import endomorphism_basis
from ereps._isotypic import IrrepId

__all__ = ["RegularSpectralBasis", "SpectralBlock", "regular_spectral_basis", "spectral_rep"]


@dataclass(frozen=True)
class SpectralBlock:
    """One irrep type's coordinates inside a regular copy in the spectral basis.

    Attributes:
        irrep_id: escnn's id of the irrep ``ρ_k``.
        dim: ``d_k``, its dimension.
        endo_dim: ``e_k = dim End_G(ρ_k)`` (1, 2 or 4).
        multiplicity: ``m_k = d_k / e_k``, its number of copies in the regular representation.
        offset: First coordinate of the block inside a copy.
        left_mult: Float64 ``(e_k, e_k, e_k)``: ``left_mult[j]`` is ``L_j``, left multiplication by
            the ``j``-th basis element of the algebra in the block's coordinates.
    """

    irrep_id: IrrepId
    dim: int
    endo_dim: int
    multiplicity: int
    offset: int
    left_mult: Tensor

    @property
    def rows(self) -> int:
        """``d_k / e_k``: the rows that share one matrix ``M_k``."""
        return self.dim // self.endo_dim

    @property
    def features(self) -> int:
        """``m_k · e_k``: the features per row and regular copy."""
        return self.multiplicity * self.endo_dim

    @property
    def size(self) -> int:
        """``m_k · d_k``: the coordinates of the block inside one copy."""
        return self.multiplicity * self.dim


@dataclass(frozen=True)
class RegularSpectralBasis:
    """The spectral basis of one regular copy of a finite group (see the module docstring).

    Attributes:
        group: The group.
        order: ``|G|``.
        transform: Float64 orthogonal ``(|G|, |G|)`` matrix ``T``; its columns are the spectral
            basis vectors in regular coordinates: ``x_reg = T x_spec``, ``x_spec = T^T x_reg``.
        blocks: The irrep blocks in coordinate order.
        trivial_index: The coordinate of the trivial irrep (basis vector ``1/√|G|``).
    """

    group: Group
    order: int
    transform: Tensor
    blocks: tuple[SpectralBlock, ...]
    trivial_index: int

    def macs_per_copy_pair(self) -> int:
        """Multiply-adds of an equivariant map per token and (input, output) copy pair.

        ``Σ_k (d_k/e_k) · (m_k e_k)² = Σ_k d_k³ / e_k`` (``|G|²`` for the dense map).
        """
        return sum(b.rows * b.features**2 for b in self.blocks)


def _algebra_basis(endo: npt.NDArray[np.float64], d: int) -> list[npt.NDArray[np.float64]]:
    """``I`` first, then the other elements made orthogonal to it and scaled to orthogonal ones."""
    basis = [np.eye(d)]
    for e in endo:
        x = e.copy()
        for b in basis:
            x -= np.sum(x * b) / np.sum(b * b) * b
        norm = np.linalg.norm(x)
        if norm < 1e-8:
            continue
        basis.append(x * np.sqrt(d) / norm)
    if len(basis) != endo.shape[0]:
        raise RuntimeError(
            f"internal error: End_G basis of rank {len(basis)}, expected {len(endo)}"
        )
    for b in basis:
        if not np.allclose(b.T @ b, np.eye(d), atol=1e-9):
            raise RuntimeError("internal error: End_G element is not a scaled orthogonal matrix")
    return basis


def _module_basis(algebra: list[npt.NDArray[np.float64]], d: int) -> npt.NDArray[np.float64]:
    """Orthonormal ``U`` with columns ``u_{b,j} = E_j v_b`` (Gram–Schmidt over the algebra)."""
    cols: list[npt.NDArray[np.float64]] = []
    for r in range(d):
        v = np.zeros(d)
        v[r] = 1.0
        for u in cols:
            v -= (u @ v) * u
        norm = np.linalg.norm(v)
        if norm < 1e-6:
            continue
        v /= norm
        # The span of the previous columns is invariant under the algebra (and so is its
        # orthogonal complement, the E_j being orthogonal with E_j^T in the algebra): E_j v ⟂ it.
        cols.extend(e @ v for e in algebra)
        if len(cols) == d:
            break
    u_mat = np.stack(cols, axis=1)
    if not np.allclose(u_mat.T @ u_mat, np.eye(d), atol=1e-9):
        raise RuntimeError("internal error: the algebra basis of an irrep is not orthonormal")
    return u_mat


_BASES: dict[int, tuple[Group, RegularSpectralBasis]] = {}


def regular_spectral_basis(group: Group) -> RegularSpectralBasis:
    """Return the spectral basis of the regular representation of ``group`` (computed once).

    Args:
        group: A finite escnn group.

    Returns:
        The basis, its blocks and the left-multiplication matrices of every block.

    Raises:
        RuntimeError: If escnn's decomposition is not orthogonal (an internal invariant).
    """
    cached = _BASES.get(id(group))
    if cached is not None:
        return cached[1]
    reg = group.regular_representation
    n = group_order(group)
    q = np.asarray(reg.change_of_basis, dtype=np.float64)
    if not np.allclose(q.T @ q, np.eye(n), atol=1e-9):
        raise RuntimeError(f"escnn's regular representation of {group.name} is not orthogonal")
    columns: dict[IrrepId, list[int]] = {}
    offset = 0
    for irrep_id in map(tuple, reg.irreps):
        size = group.irrep(*irrep_id).size
        columns.setdefault(irrep_id, []).append(offset)
        offset += size
    order = [tuple(irrep.id) for irrep in group.irreps()]
    # Blocks of equal shape next to each other (one batched product per shape), the trivial
    # irrep first.
    present = sorted(
        columns,
        key=lambda i: (
            group.irrep(*i).size,
            len(endomorphism_basis(group, i)),
            order.index(i),
        ),
    )
    trivial = tuple(group.trivial_representation.irreps[0])
    transform = np.zeros((n, n))
    blocks: list[SpectralBlock] = []
    offset, trivial_index = 0, -1
    for irrep_id in present:
        d = group.irrep(*irrep_id).size
        algebra = _algebra_basis(endomorphism_basis(group, irrep_id).numpy(), d)
        e = len(algebra)
        u_mat = _module_basis(algebra, d)
        rows = d // e
        left = []
        for a in algebra:
            conj = u_mat.T @ a @ u_mat
            lj = conj[:e, :e]
            if not np.allclose(conj, np.kron(np.eye(rows), lj), atol=1e-9):
                raise RuntimeError("internal error: End_G does not act row by row in the basis")
            left.append(lj)
        starts = columns[irrep_id]
        m = len(starts)
        for mu, start in enumerate(starts):
            q_mu = q[:, start : start + d] @ u_mat  # (n, d), columns ordered (b, j)
            for b in range(rows):
                for j in range(e):
                    transform[:, offset + b * m * e + mu * e + j] = q_mu[:, b * e + j]
        if irrep_id == trivial:
            trivial_index = offset
            if transform[:, offset].sum() < 0:
                transform[:, offset] *= -1.0
        blocks.append(
            SpectralBlock(
                irrep_id, d, e, m, offset, torch.from_numpy(np.stack(left)).to(torch.float64)
            )
        )
        offset += m * d
    if not np.allclose(transform.T @ transform, np.eye(n), atol=1e-9):
        raise RuntimeError("internal error: the spectral basis is not orthonormal")
    basis = RegularSpectralBasis(
        group, n, torch.from_numpy(transform), tuple(blocks), trivial_index
    )
    _BASES[id(group)] = (group, basis)
    return basis


_REPS: dict[tuple[int, int], tuple[Group, Representation]] = {}


def spectral_rep(group: Group, copies: int) -> Representation:
    r"""``copies`` regular copies of ``group`` written in the spectral basis.

    ``ρ_spec(g) = (I_c ⊗ T)^T (I_c ⊗ ρ_reg(g)) (I_c ⊗ T)``: the representation on which the
    spectral modules of ``elayers`` act (each copy's ``|G|`` coordinates as in
    :func:`regular_spectral_basis`).

    Args:
        group: A finite escnn group.
        copies: ``c >= 1``.

    Returns:
        An escnn representation of size ``c · |G|`` named ``"<c>×spectral"``.

    Raises:
        ValueError: If ``copies`` is not a positive int.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"spectral_rep expects copies to be an int >= 1; got {copies!r}.")
    cached = _REPS.get((id(group), copies))
    if cached is not None:
        return cached[1]
    basis = regular_spectral_basis(group)
    reg = group.regular_representation
    t = basis.transform.numpy()
    q_copy = t.T @ np.asarray(reg.change_of_basis, dtype=np.float64)
    q_inv_copy = np.asarray(reg.change_of_basis_inv, dtype=np.float64) @ t
    eye = np.eye(copies)
    rep = Representation(
        group,
        f"{copies}×spectral",
        [tuple(i) for i in reg.irreps] * copies,
        np.kron(eye, q_copy),
        supported_nonlinearities=set(),
        change_of_basis_inv=np.kron(eye, q_inv_copy),
    )
    _REPS[(id(group), copies)] = (group, rep)
    return rep
