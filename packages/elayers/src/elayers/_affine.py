"""Equivariant per-irrep scaling with an invariant bias."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from elayers._linear import invariant_bias_or_none
from elayers._module import eModule
from ereps import (
    InitScheme,
    Representation,
    check_orthogonal,
    check_representation,
    regular_multiplicity,
)

__all__ = ["eAffine"]


class eAffine(eModule):
    r"""Scale each irreducible copy by a learnable scalar and add an invariant bias.

    With :math:`\rho = Q (\bigoplus_i \rho_{k_i}) Q^\top`,

    .. math::
        y = Q\, \mathrm{diag}(s_i \mathbf{1}_{d_{k_i}})\, Q^\top x + b, \qquad \rho(g) b = b,

    which commutes with :math:`\rho(g)` because a scalar commutes with every :math:`\rho_{k_i}(g)`.
    It is the equivariant analogue of the elementwise affine map of a normalization layer: for a
    representation that is a plain direct sum of irreps (``Q = I``) it is elementwise.

    For ``c`` copies of the regular representation the map is block diagonal, one ``|G| × |G|``
    block per copy, and is applied as such (``c·|G|²`` per token instead of ``(c|G|)²``).

    Args:
        rep: An orthogonal representation of a finite group.
        bias: Whether to add an invariant bias (ignored if ``rep`` has no trivial irrep).

    Raises:
        ValueError: If the change of basis of ``rep`` is not orthogonal.
    """

    def __init__(self, rep: Representation, bias: bool = True) -> None:
        check_representation(rep, "rep")
        check_orthogonal(rep, "rep")
        super().__init__(rep, rep)
        group = rep.group
        dims = [group.irrep(*i).size for i in rep.irreps]
        self.scale = nn.Parameter(torch.ones(len(dims)))
        self.register_buffer(
            "expand",
            torch.repeat_interleave(torch.arange(len(dims)), torch.tensor(dims)),
            persistent=False,
        )
        self.expand: Tensor
        copies = regular_multiplicity(rep)
        self.copies = copies
        self.elementwise = False
        if copies is not None:
            # Every regular copy has the same change of basis Q_reg.
            q = torch.as_tensor(group.regular_representation.change_of_basis, dtype=torch.float64)
            self.register_exact_buffer("q", q)
        else:
            q = torch.as_tensor(rep.change_of_basis, dtype=torch.float64)
            self.elementwise = bool(torch.allclose(q, torch.eye(rep.size, dtype=torch.float64)))
            self.register_exact_buffer("q", q)
        self.q: Tensor
        self.invariant_bias = invariant_bias_or_none(rep, bias)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Set the scales to one and the bias to zero."""
        with torch.no_grad():
            self.scale.fill_(1.0)
        if self.invariant_bias is not None:
            self.invariant_bias.reset_parameters()

    def matrix(self) -> Tensor:
        """The dense matrix ``Q diag(s) Qᵀ``, shape ``(rep.size, rep.size)``."""
        s = self.scale[self.expand]
        q = self.q.to(s.dtype)
        if self.copies is None:
            return (q * s) @ q.T
        dense: Tensor = torch.block_diag(*self._copy_blocks(q, s).unbind(0))  # type: ignore[no-untyped-call]
        return dense

    def _copy_blocks(self, q: Tensor, s: Tensor) -> Tensor:
        """Per-copy symmetric blocks ``M_c = Q diag(s_c) Qᵀ``, shape ``(c, |G|, |G|)``."""
        return (q * s.view(-1, 1, q.shape[0])) @ q.T

    def forward(self, x: Tensor) -> Tensor:
        """Apply the per-irrep scaling and the bias.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of shape ``(..., rep.size)``.
        """
        self._check_input(x)
        s = self.scale[self.expand].to(x.dtype)
        if self.elementwise:
            y = x * s
        elif self.copies is None:
            q = self.q.to(x.dtype)
            y = ((x @ q) * s) @ q.T
        else:
            q = self.q.to(x.dtype)
            # The per-copy blocks applied as one batched product.
            xc = x.reshape(*x.shape[:-1], self.copies, q.shape[0])
            y = torch.einsum("...ci,cij->...cj", xc, self._copy_blocks(q, s)).reshape(x.shape)
        if self.invariant_bias is not None:
            y = y + self.invariant_bias.dense().to(x.dtype)
        return y

    def extra_repr(self) -> str:
        has_bias = self.invariant_bias is not None
        return f"{self.in_rep.name} | {self.scale.numel()} scales, bias={has_bias}"

    if TYPE_CHECKING:

        def __call__(self, x: Tensor) -> Tensor: ...
