"""Equivariant RMS and layer normalization."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from ereps import InitScheme, Representation, regular_multiplicity
from ereps._validation import check_orthogonal, check_representation
from torch import Tensor

from elayers._affine import eAffine
from elayers._linear import trivial_columns
from elayers._module import eModule

__all__ = ["eLayerNorm", "eRMSNorm", "stable_rms_normalize"]


def stable_rms_normalize(x: Tensor, eps: float) -> Tensor:
    r"""Return :math:`x / \sqrt{\overline{x^2} + \epsilon}` over the last axis without overflow.

    With :math:`s = \max(\max_i |x_i|, \sqrt{\epsilon})` (no gradient flows through :math:`s`),

    .. math::
        \frac{x}{\sqrt{\overline{x^2} + \epsilon}} = \frac{x/s}{\sqrt{\overline{(x/s)^2} + \epsilon/s^2}},

    and every intermediate stays in ``[0, 1]`` (plus ``ε/s² ≤ 1``): finite values and gradients
    for zero, tiny (1e-20) and huge (1e20) inputs in float32. Half-precision inputs are normalized in
    float32.
    """
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(math.sqrt(eps))
    xs = x / scale
    denom = torch.sqrt(xs.square().mean(dim=-1, keepdim=True) + eps / scale.square())
    return (xs / denom).to(dtype)


class _eNorm(eModule):  # noqa: N801
    def __init__(self, rep: Representation, eps: float, equiv_affine: bool, bias: bool) -> None:
        check_representation(rep, "rep")
        check_orthogonal(rep, "rep")
        if not eps > 0:
            raise ValueError(f"{type(self).__name__} expects eps > 0; got {eps}.")
        super().__init__(rep, rep)
        self.eps = float(eps)
        self.affine = eAffine(rep, bias=bias) if equiv_affine else None

    def _normalize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Normalize the last axis and apply the equivariant affine map.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of shape ``(..., rep.size)``.
        """
        self._check_input(x)
        y = self._normalize(x)
        return y if self.affine is None else self.affine(y)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Reset the affine map to the identity."""
        if self.affine is not None:
            self.affine.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.in_rep.name}, eps={self.eps}, equiv_affine={self.affine is not None}"

    if TYPE_CHECKING:

        def __call__(self, x: Tensor) -> Tensor: ...


class eRMSNorm(_eNorm):  # noqa: N801 (the name users know)
    r"""Equivariant RMS normalization.

    .. math::
        y = A\!\left(\frac{x}{\sqrt{\tfrac{1}{n}\|x\|^2 + \epsilon}}\right),

    where :math:`\|x\|^2 = \sum_i \|x_{(i)}\|^2` sums the squared norms of the irreducible components
    (orthogonal change of basis), so the statistic is invariant because every :math:`\rho(g)` is
    orthogonal, and :math:`A` is an :class:`eAffine` (a scale per irreducible copy). Computed without
    overflow or division by zero (see :func:`stable_rms_normalize`).

    Args:
        rep: An orthogonal representation of a finite group.
        eps: Added to the mean square.
        equiv_affine: Whether to apply a learnable :class:`eAffine` after normalizing.
        bias: Whether that affine map has an invariant bias (off by default, as in RMSNorm).
    """

    def __init__(
        self, rep: Representation, eps: float = 1e-6, equiv_affine: bool = True, bias: bool = False
    ) -> None:
        super().__init__(rep, eps, equiv_affine, bias)

    def _normalize(self, x: Tensor) -> Tensor:
        return stable_rms_normalize(x, self.eps)


class eLayerNorm(_eNorm):  # noqa: N801 (the name users know)
    r"""Equivariant layer normalization.

    .. math::
        \bar x = x - P_0 x, \qquad y = A\!\left(\frac{\bar x}{\sqrt{\tfrac{1}{n}\|\bar x\|^2 + \epsilon}}\right),

    where :math:`P_0` is the orthogonal projector onto the invariant (trivial-isotypic) subspace: the
    equivariant analogue of subtracting the mean (for copies of the regular representation, it
    subtracts each copy's mean over the group). The variance is the mean squared norm of the centred
    irreducible components, invariant because :math:`\rho(g)` is orthogonal. :math:`A` is an
    :class:`eAffine`. Numerically stable for zero, tiny and huge inputs.

    Args:
        rep: An orthogonal representation of a finite group.
        eps: Added to the variance.
        equiv_affine: Whether to apply a learnable :class:`eAffine` after normalizing.
        bias: Whether that affine map has an invariant bias.
    """

    def __init__(
        self, rep: Representation, eps: float = 1e-5, equiv_affine: bool = True, bias: bool = True
    ) -> None:
        super().__init__(rep, eps, equiv_affine, bias)
        self.copies = regular_multiplicity(rep)
        basis = trivial_columns(rep)
        self.register_exact_buffer("trivial_basis", basis)
        self.trivial_basis: Tensor
        self.centre = basis.shape[1] > 0

    def _normalize(self, x: Tensor) -> Tensor:
        if self.copies is not None:
            order = self.in_rep.group.order()
            xc = x.reshape(*x.shape[:-1], self.copies, order)
            x = (xc - xc.mean(dim=-1, keepdim=True)).reshape(x.shape)
        elif self.centre:
            q0 = self.trivial_basis.to(x.dtype)
            x = x - (x @ q0) @ q0.T
        return stable_rms_normalize(x, self.eps)
