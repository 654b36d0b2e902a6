"""Equivariant RMS and layer normalization."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elayers._affine import eAffine
from elayers._module import eModule
from ereps import (
    InitScheme,
    Representation,
    invariant_orthogonal_projector,
    regular_multiplicity,
)
from ereps._validation import check_orthogonal, check_representation

__all__ = ["eLayerNorm", "eRMSNorm", "stable_layer_normalize", "stable_rms_normalize"]


# Above this magnitude squares of float32 features can overflow; rescale the vector first.
_RESCALE_ABOVE = 1e15


def _overflow_scale(x: Tensor) -> Tensor:
    """Per-vector scale: ``max|x|`` where a square could overflow, else exactly 1 (no gradient)."""
    peak = x.detach().abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > _RESCALE_ABOVE, peak, torch.ones_like(peak))


def stable_rms_normalize(x: Tensor, eps: float, weight: Tensor | None = None) -> Tensor:
    r"""Return :math:`x / \sqrt{\overline{x^2} + \epsilon}` over the last axis without overflow.

    Vectors whose entries exceed ``1e15`` in magnitude are first divided by their largest entry
    :math:`s` (without gradient through :math:`s`), which computes
    :math:`x / \sqrt{\overline{x^2} + \epsilon s^2}`: the same up to a relative change below
    :math:`\epsilon n / s^2 \approx 0`. Others use the fused kernel unchanged. Finite values and
    gradients for zero, tiny (1e-20) and huge (1e20) inputs in float32.
    """
    return F.rms_norm(x / _overflow_scale(x), (x.shape[-1],), weight, eps=eps)


def stable_layer_normalize(
    x: Tensor, eps: float, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """``F.layer_norm`` with the overflow guard of :func:`stable_rms_normalize`."""
    return F.layer_norm(x / _overflow_scale(x), (x.shape[-1],), weight, bias, eps=eps)


AffineMode = Literal["auto", "irrep", "copy"]


class _eNorm(eModule):
    def __init__(
        self, rep: Representation, eps: float, equiv_affine: bool, bias: bool, affine: str
    ) -> None:
        check_representation(rep, "rep")
        check_orthogonal(rep, "rep")
        if not eps > 0:
            raise ValueError(f"{type(self).__name__} expects eps > 0; got {eps}.")
        if affine not in ("auto", "irrep", "copy"):
            raise ValueError(f"affine must be 'auto', 'irrep' or 'copy'; got {affine!r}.")
        copies = regular_multiplicity(rep)
        if affine == "copy" and copies is None:
            raise ValueError(
                f"affine='copy' scales whole regular copies and needs copies of the regular "
                f"representation; got {rep.name!r}. Use affine='irrep'."
            )
        super().__init__(rep, rep)
        self.eps = float(eps)
        self.affine: eAffine | None = None
        self.copy_scale: nn.Parameter | None = None
        self.copy_bias: nn.Parameter | None = None
        self.copies = copies
        if not equiv_affine:
            return
        if affine == "irrep" or copies is None:
            self.affine = eAffine(rep, bias=bias)
        else:
            self.copy_scale = nn.Parameter(torch.ones(copies))
            self.copy_bias = nn.Parameter(torch.zeros(copies)) if bias else None

    def _expanded(self, p: nn.Parameter | None, dtype: torch.dtype) -> Tensor | None:
        if p is None:
            return None
        return p.to(dtype).repeat_interleave(self.in_rep.group.order())

    def _normalize(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Normalize the last axis and apply the equivariant affine map.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of shape ``(..., rep.size)``.
        """
        self._check_input(x)
        weight = self._expanded(self.copy_scale, x.dtype)
        bias = self._expanded(self.copy_bias, x.dtype)
        y = self._normalize(x, weight, bias)
        return y if self.affine is None else self.affine(y)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Reset the affine map to the identity."""
        if self.affine is not None:
            self.affine.reset_parameters()
        with torch.no_grad():
            if self.copy_scale is not None:
                self.copy_scale.fill_(1.0)
            if self.copy_bias is not None:
                self.copy_bias.zero_()

    def extra_repr(self) -> str:
        kind = (
            "irrep" if self.affine is not None else "copy" if self.copy_scale is not None else None
        )
        return f"{self.in_rep.name}, eps={self.eps}, affine={kind}"

    if TYPE_CHECKING:

        def __call__(self, x: Tensor) -> Tensor: ...


class eRMSNorm(_eNorm):
    r"""Equivariant RMS normalization.

    .. math::
        y = A\!\left(\frac{x}{\sqrt{\tfrac{1}{n}\|x\|^2 + \epsilon}}\right),

    where :math:`\|x\|^2 = \sum_i \|x_{(i)}\|^2` sums the squared norms of the irreducible
    components
    (orthogonal change of basis), so the statistic is invariant because every :math:`\rho(g)` is
    orthogonal, and :math:`A` is an equivariant affine map (see ``affine``). Computed without
    overflow or division by zero (see :func:`stable_rms_normalize`).

    Args:
        rep: An orthogonal representation of a finite group.
        eps: Added to the mean square.
        equiv_affine: Whether to apply a learnable equivariant affine map after normalizing.
        bias: Whether that affine map has an invariant bias (off by default, as in RMSNorm).
        affine: ``"irrep"``: an :class:`eAffine` (one scale per irreducible copy, a dense matrix
            on copies of the regular representation); ``"copy"``: one scale (and bias) per regular
            copy, applied elementwise inside the fused norm kernel (regular copies only; in a
            pre-norm block it is as expressive, since the next equivariant linear map absorbs any
            per-irrep scale); ``"auto"``: ``"copy"`` on copies of the regular representation, else
            ``"irrep"``.
    """

    def __init__(
        self,
        rep: Representation,
        eps: float = 1e-6,
        equiv_affine: bool = True,
        bias: bool = False,
        *,
        affine: AffineMode = "auto",
    ) -> None:
        super().__init__(rep, eps, equiv_affine, bias, affine)

    def _normalize(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        y = stable_rms_normalize(x, self.eps, weight)
        return y if bias is None else y + bias


class eLayerNorm(_eNorm):
    r"""Equivariant layer normalization.

    .. math::
        \bar x = x - (u^\top x)\, u, \qquad
        y = A\!\left(\frac{\bar x}{\sqrt{\tfrac{1}{n}\|\bar x\|^2 + \epsilon}}\right),
        \qquad u = \frac{P_0 \mathbf{1}}{\|P_0 \mathbf{1}\|},

    where :math:`P_0` is the orthogonal projector onto the invariant subspace. Because
    :math:`\rho(g) u = u` and :math:`\rho(g)` is orthogonal, the subtracted component and the
    variance are invariant, so the map is equivariant. On permutation representations (e.g. copies
    of
    the regular representation) :math:`\mathbf{1}` is invariant and this is exactly the mean and
    variance of :class:`torch.nn.LayerNorm` (computed by its fused kernel); other invariant
    directions, such as per-copy means that carry positional embeddings, are kept. When
    :math:`P_0 \mathbf{1} = 0` nothing is subtracted. :math:`A` is an :class:`eAffine`. Numerically
    stable for zero, tiny and huge inputs.

    Args:
        rep: An orthogonal representation of a finite group.
        eps: Added to the variance.
        equiv_affine: Whether to apply a learnable equivariant affine map after normalizing.
        bias: Whether that affine map has an invariant bias.
        affine: ``"irrep"``: an :class:`eAffine` (one scale per irreducible copy, a dense matrix
            on copies of the regular representation); ``"copy"``: one scale (and bias) per regular
            copy, applied elementwise inside the fused norm kernel (regular copies only; in a
            pre-norm block it is as expressive, since the next equivariant linear map absorbs any
            per-irrep scale); ``"auto"``: ``"copy"`` on copies of the regular representation, else
            ``"irrep"``.
    """

    def __init__(
        self,
        rep: Representation,
        eps: float = 1e-5,
        equiv_affine: bool = True,
        bias: bool = True,
        *,
        affine: AffineMode = "auto",
    ) -> None:
        super().__init__(rep, eps, equiv_affine, bias, affine)
        ones = torch.ones(rep.size, dtype=torch.float64)
        u = invariant_orthogonal_projector(rep) @ ones
        norm = float(torch.linalg.vector_norm(u))
        self.mean_centering = bool(torch.allclose(u, ones, atol=1e-9))
        self.centre = norm > 1e-9 and not self.mean_centering
        self.register_exact_buffer("direction", u / norm if norm > 1e-9 else u)
        self.direction: Tensor

    def _normalize(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        if self.mean_centering:
            return stable_layer_normalize(x, self.eps, weight, bias)
        if self.centre:
            u = self.direction.to(x.dtype)
            x = x - (x @ u).unsqueeze(-1) * u
        y = stable_rms_normalize(x, self.eps, weight)
        return y if bias is None else y + bias
