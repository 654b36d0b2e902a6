"""A basis of the space of equivariant linear maps Hom_G(ρ_in, ρ_out)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from ereps._escnn import Group, Representation
from ereps._exact_buffers import ExactBuffersModule
from ereps._group_action import group_elements
from ereps._isotypic import IrrepId
from ereps._validation import check_orthogonal, check_representation, check_same_group

__all__ = [
    "INIT_SCHEMES",
    "GroupHomomorphismBasis",
    "InitScheme",
    "check_init_scheme",
    "endomorphism_basis",
    "init_std",
    "sample_init",
]

InitScheme = Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


def check_init_scheme(scheme: object) -> InitScheme:
    """Return ``scheme`` if it is a known initialization scheme, else raise ``ValueError``.

    Args:
        scheme: The scheme to check, one of :data:`INIT_SCHEMES`.

    Returns:
        ``scheme`` itself, typed as an :data:`InitScheme`.

    Raises:
        ValueError: If ``scheme`` is not one of :data:`INIT_SCHEMES`.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"Unknown init scheme {scheme!r}; expected one of {list(INIT_SCHEMES)}.")
    return scheme  # type: ignore[return-value]


def init_std(scheme: InitScheme, fan_in: int, fan_out: int) -> float:
    """Standard deviation of the entries of a dense ``fan_out × fan_in`` weight under ``scheme``.

    Xavier: ``2 / (fan_in + fan_out)``; Kaiming (ReLU gain): ``2 / fan_in`` (variances).
    """
    if scheme.startswith("xavier"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    return math.sqrt(2.0 / fan_in)


def sample_init(
    scheme: InitScheme,
    shape: tuple[int, ...],
    std: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw a zero-mean tensor with standard deviation ``std``, uniform or normal per ``scheme``.

    Uniform schemes draw from ``U(-√3·std, √3·std)`` (whose standard deviation is ``std``), normal
    schemes from ``N(0, std²)``.

    Args:
        scheme: An initialization scheme (checked by the caller, see :func:`check_init_scheme`).
        shape: Shape of the result.
        std: Standard deviation of every entry.
        dtype: Dtype of the result.
        device: Device of the result.
        generator: Random generator.

    Returns:
        Tensor of shape ``shape``.
    """
    out = torch.empty(shape, dtype=dtype, device=device)
    if scheme.endswith("uniform"):
        bound = math.sqrt(3.0) * std
        return out.uniform_(-bound, bound, generator=generator)
    return out.normal_(0.0, std, generator=generator)


# escnn groups are unhashable singletons: key caches on their identity and keep them alive.
_ENDO_CACHE: dict[tuple[int, IrrepId], tuple[Group, npt.NDArray[np.float64]]] = {}


def _endomorphism_basis_np(group: Group, irrep_id: IrrepId) -> npt.NDArray[np.float64]:
    cached = _ENDO_CACHE.get((id(group), irrep_id))
    if cached is not None:
        return cached[1]
    irrep = group.irrep(*irrep_id)
    d = irrep.size
    eye = np.eye(d)
    # vec_row(ρX - Xρ) = (ρ ⊗ I - I ⊗ ρᵀ) vec_row(X) = 0 for every g: a brute-force null space,
    # which does not rely on escnn's own endomorphism bases.
    rows = [
        np.kron(np.asarray(irrep(g)), eye) - np.kron(eye, np.asarray(irrep(g)).T)
        for g in group_elements(group)
    ]
    _, s, vt = np.linalg.svd(np.concatenate(rows, axis=0))
    rank = int((s > 1e-9 * max(s.max(initial=0.0), 1.0)).sum())
    # Orthonormal in the Frobenius inner product (rows of vt are orthonormal).
    basis = np.ascontiguousarray(vt[rank:].reshape(-1, d, d))
    _ENDO_CACHE[(id(group), irrep_id)] = (group, basis)
    return basis


def endomorphism_basis(group: Group, irrep_id: IrrepId) -> Tensor:
    r"""Return a Frobenius-orthonormal basis of :math:`\mathrm{End}_G(\rho_k)` for an irrep ``k``.

    Its dimension is 1, 2 or 4 for irreps of real, complex or quaternionic type. Computed as the
    null space of :math:`X \mapsto \rho_k(g) X - X \rho_k(g)` over all group elements.

    Args:
        group: A finite escnn group.
        irrep_id: The id of one of its irreps.

    Returns:
        Float64 tensor of shape ``(dim End, d_k, d_k)``.
    """
    return torch.from_numpy(_endomorphism_basis_np(group, tuple(irrep_id)))


class _IsotypicBlock(ExactBuffersModule):
    """The part of Hom_G(in, out) between the isotypic components of one irrep type."""

    def __init__(
        self,
        q_out: npt.NDArray[np.float64],
        q_in_inv: npt.NDArray[np.float64],
        endo: Tensor,
        m_out: int,
        m_in: int,
    ) -> None:
        super().__init__()
        self.m_out, self.m_in, self.n_endo = m_out, m_in, int(endo.shape[0])
        self.d = int(endo.shape[-1])
        # Columns of Q_out and rows of Q_in⁻¹ of this type's copies: (out, m_out·d) and (m_in·d,
        # in).
        self.register_exact_buffer("q_out", torch.from_numpy(q_out))
        self.register_exact_buffer("q_in_inv", torch.from_numpy(q_in_inv))
        self.register_exact_buffer("endo", endo)
        self.q_out: Tensor
        self.q_in_inv: Tensor
        self.endo: Tensor

    @property
    def dim(self) -> int:
        return self.m_out * self.m_in * self.n_endo

    def synthesize(self, coeffs: Tensor) -> Tensor:
        batch = coeffs.shape[:-1]
        c = coeffs.reshape(*batch, self.m_out, self.m_in, self.n_endo)
        blocks = torch.einsum("...ijr,rab->...iajb", c, self.endo.to(coeffs.dtype))
        blocks = blocks.reshape(*batch, self.m_out * self.d, self.m_in * self.d)
        return self.q_out.to(coeffs.dtype) @ blocks @ self.q_in_inv.to(coeffs.dtype)

    def analyze(self, weight: Tensor) -> Tensor:
        # Adjoint of synthesize for orthogonal Q: coefficients ⟨B_r, W⟩_F.
        q_out, q_in_inv = self.q_out.to(weight.dtype), self.q_in_inv.to(weight.dtype)
        spectral = q_out.T @ weight @ q_in_inv.T
        batch = weight.shape[:-2]
        spectral = spectral.reshape(*batch, self.m_out, self.d, self.m_in, self.d)
        coeffs = torch.einsum("...iajb,rab->...ijr", spectral, self.endo.to(weight.dtype))
        return coeffs.reshape(*batch, self.dim)


class GroupHomomorphismBasis(nn.Module):
    r"""A Frobenius-orthonormal basis of :math:`\mathrm{Hom}_G(\rho_{in}, \rho_{out})`.

    With :math:`\rho = Q (\bigoplus_i \rho_{k_i}) Q^{-1}`, every equivariant map is

    .. math::
        W = Q_{out} \Big(\bigoplus_k E_k\Big) Q_{in}^{-1},

    where, for each irrep type :math:`k`, :math:`E_k` is an :math:`m_{out,k} \times m_{in,k}`
    array of blocks, each in :math:`\mathrm{End}_G(\rho_k)` (dimension 1, 2 or 4). Hence

    .. math::
        \dim \mathrm{Hom}_G = \sum_k m_{in,k}\, m_{out,k} \dim \mathrm{End}_G(\rho_k)
        = \frac{1}{|G|} \sum_g \chi_{in}(g) \chi_{out}(g).

    The basis matrices are orthonormal for the Frobenius inner product because the changes of basis
    are orthogonal (checked) and each endomorphism basis is orthonormal. Calling the module maps
    coefficients to dense matrices; no dense basis tensor is stored.

    Args:
        in_rep: Representation of the input space, of a finite group, with orthogonal change of
            basis.
        out_rep: Representation of the output space, of the same group.

    Raises:
        TypeError: If an argument is not an escnn representation.
        ValueError: If the groups differ or a change of basis is not orthogonal.

    Examples:
        >>> import torch, ereps
        >>> G = ereps.cyclic_group(4)
        >>> basis = GroupHomomorphismBasis(G.regular_representation, G.regular_representation)
        >>> basis.dim
        4
        >>> basis(torch.randn(basis.dim)).shape
        torch.Size([4, 4])
    """

    def __init__(self, in_rep: Representation, out_rep: Representation) -> None:
        super().__init__()
        check_representation(in_rep, "in_rep")
        check_representation(out_rep, "out_rep")
        check_same_group([in_rep, out_rep], ["in_rep", "out_rep"])
        check_orthogonal(in_rep, "in_rep")
        check_orthogonal(out_rep, "out_rep")
        self.in_rep = in_rep
        self.out_rep = out_rep
        group = in_rep.group
        q_out = np.asarray(out_rep.change_of_basis, dtype=np.float64)
        q_in_inv = np.asarray(in_rep.change_of_basis_inv, dtype=np.float64)
        out_cols = _columns_by_type(out_rep)
        in_cols = _columns_by_type(in_rep)
        blocks: list[_IsotypicBlock] = []
        self.irrep_ids: list[IrrepId] = []
        for irrep_id, cols_out in out_cols.items():
            cols_in = in_cols.get(irrep_id)
            if cols_in is None:
                continue
            d = group.irrep(*irrep_id).size
            blocks.append(
                _IsotypicBlock(
                    q_out[:, cols_out],
                    q_in_inv[cols_in, :],
                    endomorphism_basis(group, irrep_id),
                    m_out=len(cols_out) // d,
                    m_in=len(cols_in) // d,
                )
            )
            self.irrep_ids.append(irrep_id)
        self.blocks = nn.ModuleList(blocks)
        self.dim = sum(block.dim for block in blocks)

    def _block_list(self) -> list[_IsotypicBlock]:
        return [b for b in self.blocks if isinstance(b, _IsotypicBlock)]

    def _check_coeffs(self, coeffs: Tensor) -> None:
        if not isinstance(coeffs, Tensor):
            raise TypeError(
                f"Expected a torch.Tensor of coefficients; got {type(coeffs).__name__}."
            )
        if coeffs.ndim == 0 or coeffs.shape[-1] != self.dim:
            raise ValueError(
                f"GroupHomomorphismBasis expects coefficients of shape (..., {self.dim}) for "
                f"Hom_G({self.in_rep.name}, {self.out_rep.name}); got {tuple(coeffs.shape)}."
            )

    def forward(self, coeffs: Tensor) -> Tensor:
        """Synthesize dense equivariant maps from basis coefficients.

        Args:
            coeffs: Tensor of shape ``(..., dim)``.

        Returns:
            Tensor of shape ``(..., out_rep.size, in_rep.size)`` with ``ρ_out(g) W = W ρ_in(g)``.
        """
        self._check_coeffs(coeffs)
        batch = coeffs.shape[:-1]
        weight = coeffs.new_zeros((*batch, self.out_rep.size, self.in_rep.size))
        offset = 0
        for block in self._block_list():
            weight = weight + block.synthesize(coeffs[..., offset : offset + block.dim])
            offset += block.dim
        return weight

    def coefficients(self, weight: Tensor) -> Tensor:
        """Return the coefficients ``⟨B_r, W⟩_F`` of a dense map in this orthonormal basis.

        Args:
            weight: Tensor of shape ``(..., out_rep.size, in_rep.size)``.

        Returns:
            Tensor of shape ``(..., dim)``.
        """
        self._check_weight(weight)
        parts = [block.analyze(weight) for block in self._block_list()]
        if not parts:
            return weight.new_zeros((*weight.shape[:-2], 0))
        return torch.cat(parts, dim=-1)

    def _check_weight(self, weight: Tensor) -> None:
        shape = (self.out_rep.size, self.in_rep.size)
        if not isinstance(weight, Tensor):
            raise TypeError(f"Expected a torch.Tensor; got {type(weight).__name__}.")
        if weight.ndim < 2 or tuple(weight.shape[-2:]) != shape:
            raise ValueError(
                f"Expected maps of shape (..., {shape[0]}, {shape[1]}) from {self.in_rep.name!r} "
                f"to {self.out_rep.name!r}; got {tuple(weight.shape)}."
            )

    def orthogonal_projection(self, weight: Tensor) -> Tensor:
        r"""Project dense maps onto :math:`\mathrm{Hom}_G` orthogonally (Frobenius).

        ``Π(W) = Σ_r ⟨B_r, W⟩ B_r``: idempotent, self-adjoint, and the identity on equivariant maps.
        It equals the group average :math:`\frac{1}{|G|}\sum_g \rho_{out}(g) W \rho_{in}(g)^\top`.

        Args:
            weight: Tensor of shape ``(..., out_rep.size, in_rep.size)``.

        Returns:
            Tensor of the same shape.
        """
        return self(self.coefficients(weight))

    def initialize_params(
        self,
        scheme: InitScheme = "xavier_normal",
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw basis coefficients whose dense maps have the variance of the unconstrained scheme.

        With an orthonormal basis, ``E‖W‖²_F = dim · σ_c²``; choosing
        ``σ_c² = σ² · out · in / dim`` gives the entries of ``W`` the average variance ``σ²`` that
        ``torch.nn.init.<scheme>_`` gives an ``out × in`` weight.

        Args:
            scheme: One of ``xavier_uniform``, ``xavier_normal``, ``kaiming_uniform``,
                ``kaiming_normal``.
            dtype: Dtype of the coefficients.
            device: Device of the coefficients.
            generator: Random generator.

        Returns:
            Tensor of shape ``(dim,)``.

        Raises:
            ValueError: If ``scheme`` is unknown.
        """
        scheme = check_init_scheme(scheme)
        fan_in, fan_out = self.in_rep.size, self.out_rep.size
        if self.dim == 0:
            return torch.zeros(0, dtype=dtype, device=device)
        std = init_std(scheme, fan_in, fan_out) * math.sqrt(fan_in * fan_out / self.dim)
        return sample_init(
            scheme, (self.dim,), std, dtype=dtype, device=device, generator=generator
        )

    def extra_repr(self) -> str:
        return f"{self.in_rep.name} -> {self.out_rep.name}, dim={self.dim}"

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


def _columns_by_type(rep: Representation) -> dict[IrrepId, list[int]]:
    """Spectral-basis column indices of each irrep type, copies in order."""
    cols: dict[IrrepId, list[int]] = {}
    offset = 0
    for irrep_id in rep.irreps:
        size = rep.group.irrep(*irrep_id).size
        cols.setdefault(tuple(irrep_id), []).extend(range(offset, offset + size))
        offset += size
    return cols
