"""Equivariant per-irrep scaling with an invariant bias."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from elayers._checks import check_bool
from elayers._linear import invariant_bias_or_none, plain_linear
from elayers._module import eModule, frozen_twin
from elayers._plain import ElementwiseAffine
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
        check_bool("eAffine", "bias", bias)
        super().__init__(rep, rep)
        group = rep.group
        dims = [group.irrep(*i).size for i in rep.irreps]
        self.scale = nn.Parameter(torch.ones(len(dims)))
        self.register_constant(
            "expand", torch.repeat_interleave(torch.arange(len(dims)), torch.tensor(dims))
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

    def _operator(self) -> Tensor:
        """What forward multiplies by.

        The scale vector (elementwise), the per-copy blocks ``(c, |G|, |G|)`` (regular copies) or
        the dense matrix ``Q diag(s) Qᵀ``.
        """
        s = self.scale[self.expand]
        if self.elementwise:
            return s
        if self.copies is None:
            return self.matrix()
        return self._copy_blocks(self.q.to(s.dtype), s)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the per-irrep scaling and the bias.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of shape ``(..., rep.size)``.
        """
        self._check_input(x)
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        op = self._operator().to(x.dtype)
        if self.elementwise:
            y = x * op
        elif self.copies is None:
            # Q diag(s) Qᵀ is symmetric: x ↦ M x is x @ M on the last axis.
            y = x @ op
        else:
            # The per-copy blocks applied as one batched product.
            xc = x.reshape(*x.shape[:-1], self.copies, op.shape[-1])
            y = torch.einsum("...ci,cij->...cj", xc, op).reshape(x.shape)
        if self.invariant_bias is not None:
            y = y + self.invariant_bias.dense().to(x.dtype)
        return y

    def export(self) -> nn.Module:
        """``torch.nn.Linear`` with the dense ``Q diag(s) Qᵀ`` and bias.

        An elementwise affine map instead when the representation is a plain sum of irreps (see
        :meth:`eModule.export`).
        """
        with torch.no_grad():
            bias = None if self.invariant_bias is None else self.invariant_bias.bias
            if self.elementwise:
                return ElementwiseAffine(self.scale[self.expand], bias).train(self.training)
            return plain_linear(self.matrix(), bias, self.training)

    def extra_repr(self) -> str:
        has_bias = self.invariant_bias is not None
        return f"{self.in_rep.name} | {self.scale.numel()} scales, bias={has_bias}"

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
