"""Equivariant RMS and layer normalization."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elayers._affine import eAffine
from elayers._checks import check_bool, check_positive_real
from elayers._module import eModule, frozen_twin, transform_active
from elayers._plain import Bias, RemoveComponent
from ereps import (
    InitScheme,
    Representation,
    check_orthogonal,
    check_representation,
    group_order,
    invariant_orthogonal_projector,
    regular_multiplicity,
)

__all__ = ["SAFE_MAX_ABS", "eLayerNorm", "eRMSNorm", "max_abs", "stable_rms_normalize"]


class _StableNormalize(torch.autograd.Function):
    """``y = x̄ / sqrt(mean(x̄²) + eps)`` with ``x̄ = x - mean(x)`` (``center``) or ``x̄ = x``.

    The squared norm is accumulated in float64 inside the reduction kernel, so ``x̄²`` never
    overflows (finite for 1e20 in float32) and ``eps`` keeps zero and tiny inputs finite. The hand
    written backward, ``dx̄ = r (g - y ⟨g, y⟩ / n)`` (then centred), needs four passes over the
    data where autograd through the composite would need about ten.
    """

    # Written in the setup_context style with a generated vmap rule, so that torch.func
    # transforms (vmap over an ensemble, jacrev) can run through it.
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, eps: float, center: bool) -> tuple[Tensor, Tensor]:
        xc = x - x.mean(dim=-1, keepdim=True) if center else x
        norm = torch.linalg.vector_norm(xc, dim=-1, keepdim=True, dtype=torch.float64)
        r = torch.rsqrt(norm.square() / x.shape[-1] + eps).to(x.dtype)
        return xc * r, r

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        y, r = output
        ctx.save_for_backward(y, r)
        ctx.center = inputs[2]
        ctx.mark_non_differentiable(r)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None, None]:
        g = grads[0]
        y, r = ctx.saved_tensors
        c = torch.linalg.vecdot(g, y).unsqueeze(-1) / y.shape[-1]
        dx = torch.addcmul(g, y, c, value=-1.0).mul_(r)
        if ctx.center:
            dx = dx - dx.mean(dim=-1, keepdim=True)
        return dx, None, None


def stable_rms_normalize(x: Tensor, eps: float, center: bool = False) -> Tensor:
    r"""Return :math:`\bar x / \sqrt{\overline{\bar x^2} + \epsilon}` over the last axis.

    :math:`\bar x = x - \operatorname{mean}(x)` when ``center`` (layer norm), else :math:`x` (RMS
    norm). The mean square is accumulated in float64, so the result and its gradient are finite
    for zero, tiny (1e-20) and huge (1e20) float32 inputs. Half-precision inputs are normalized in
    float32.
    """
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        y, _ = _StableNormalize.apply(x.float(), eps, center)
        return y.to(dtype)  # type: ignore[no-any-return]
    out, _ = _StableNormalize.apply(x, eps, center)
    return out  # type: ignore[no-any-return]


# Below this magnitude single-precision statistics (torch's layer norm kernels included) cannot
# overflow: n·x² stays far below 3e38. Beyond it the float64-accumulated path runs.
SAFE_MAX_ABS = 1e15


def max_abs(x: Tensor) -> float:
    """``max |x|`` as a Python float (0 for an empty tensor)."""
    if x.numel() == 0:
        return 0.0
    low, high = torch.aminmax(x.detach())  # one pass, no temporary
    return max(-float(low), float(high))


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _fast_path_ok(x: Tensor, *params: Tensor | None) -> bool:
    """Whether the no-autograd CPU path may run: it branches on data, so not when compiling."""
    return (
        x.is_cpu
        and x.dtype in (torch.float32, torch.float64)
        and not _needs_grad(x, *params)
        and not transform_active()
    )


def _fast_rms(x: Tensor, eps: float, weight: Tensor | None, bias: Tensor | None) -> Tensor | None:
    """RMS normalization with working-precision statistics, or ``None`` if they overflow.

    Underflow is harmless (``x²`` below ``eps`` does not matter); overflow shows up as an infinite
    norm, which is cheap to check because there is one per token.
    """
    if x.numel() == 0:
        return None  # nothing to check; the stable path handles empty batches
    # vector_norm reduces without a temporary (vecdot would allocate x*x).
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    if not float(norm.amax()) < math.inf:  # overflow (or a NaN input): take the stable path
        return None
    r = norm.square_().mul_(1.0 / x.shape[-1]).add_(eps).rsqrt_()
    y = torch.mul(x, r)
    if weight is not None and bias is not None:
        return torch.addcmul(bias, y, weight)
    if weight is not None:
        return y.mul_(weight)
    return y if bias is None else y.add_(bias)


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is not None and bias is not None:
        return torch.addcmul(bias, y, weight)
    if weight is not None:
        return y * weight
    return y if bias is None else y + bias


AffineMode = Literal["auto", "irrep", "copy"]


class _eNorm(eModule):
    def __init__(
        self, rep: Representation, eps: float, equiv_affine: bool, bias: bool, affine: str
    ) -> None:
        check_representation(rep, "rep")
        check_orthogonal(rep, "rep")
        owner = type(self).__name__
        eps = check_positive_real(owner, "eps", eps)
        check_bool(owner, "equiv_affine", equiv_affine)
        check_bool(owner, "bias", bias)
        if not isinstance(affine, str) or affine not in ("auto", "irrep", "copy"):
            raise ValueError(f"affine must be 'auto', 'irrep' or 'copy'; got {affine!r}.")
        copies = regular_multiplicity(rep)
        if affine == "copy" and copies is None:
            raise ValueError(
                f"affine='copy' scales whole regular copies and needs copies of the regular "
                f"representation; got {rep.name!r}. Use affine='irrep'."
            )
        super().__init__(rep, rep)
        # |G| read once: escnn's order() rebuilds every element of a direct-product group.
        self.order = group_order(rep.group)
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

    def copy_affine(self, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """The per-copy scale and bias as per-feature vectors in ``dtype`` (``None`` if absent).

        Synthesized on every call.
        """
        if self.copy_scale is None and self.copy_bias is None:
            return None, None
        expanded = self._expand_copy_affine(dtype)
        return expanded[0], expanded[1]

    def _expand_copy_affine(self, dtype: torch.dtype) -> tuple[Tensor | None, ...]:
        n = self.order

        def expand(p: Tensor | None) -> Tensor | None:
            return None if p is None else p.to(dtype).unsqueeze(-1).expand(-1, n).reshape(-1)

        return expand(self.copy_scale), expand(self.copy_bias)

    def _plain_core(self, weight: Tensor | None, bias: Tensor | None) -> nn.Module:
        """The plain normalization with the per-feature affine ``weight``/``bias`` folded in."""
        raise NotImplementedError

    def export(self) -> nn.Module:
        """``torch.nn.LayerNorm``/``torch.nn.RMSNorm`` with the expanded per-copy affine map.

        Or the plain norm followed by the exported :class:`eAffine` (see :meth:`eModule.export`).
        """
        with torch.no_grad():
            p = self.copy_scale if self.copy_scale is not None else self.copy_bias
            weight, bias = (None, None) if p is None else self._expand_copy_affine(p.dtype)
            core = self._plain_core(weight, bias)
            if self.affine is not None:
                core = nn.Sequential(core, self.affine.export())
            return core.train(self.training)

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
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        weight, bias = self.copy_affine(x.dtype)
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

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class eRMSNorm(_eNorm):
    r"""Equivariant RMS normalization.

    .. math::
        y = A\!\left(\frac{x}{\sqrt{\tfrac{1}{n}\|x\|^2 + \epsilon}}\right),

    where :math:`\|x\|^2 = \sum_i \|x_{(i)}\|^2` sums the squared norms of the irreducible
    components (orthogonal change of basis), so the statistic is invariant because every
    :math:`\rho(g)` is orthogonal, and :math:`A` is an equivariant affine map (see ``affine``).
    Computed without overflow or division by zero (see :func:`stable_rms_normalize`).

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
        if _fast_path_ok(x, weight, bias):
            y = _fast_rms(x, self.eps, weight, bias)
            if y is not None:
                return y
        return _affine(stable_rms_normalize(x, self.eps), weight, bias)

    def _plain_core(self, weight: Tensor | None, bias: Tensor | None) -> nn.Module:
        return _plain_rms(self.in_rep.size, self.eps, weight, bias)


class eLayerNorm(_eNorm):
    r"""Equivariant layer normalization.

    .. math::
        \bar x = x - (u^\top x)\, u, \qquad
        y = A\!\left(\frac{\bar x}{\sqrt{\tfrac{1}{n}\|\bar x\|^2 + \epsilon}}\right),
        \qquad u = \frac{P_0 \mathbf{1}}{\|P_0 \mathbf{1}\|},

    where :math:`P_0` is the orthogonal projector onto the invariant subspace. Because
    :math:`\rho(g) u = u` and :math:`\rho(g)` is orthogonal, the subtracted component and the
    variance are invariant, so the map is equivariant. On permutation representations (e.g. copies
    of the regular representation) :math:`\mathbf{1}` is invariant and this is exactly the mean and
    variance of :class:`torch.nn.LayerNorm`; other invariant directions, such as per-copy means
    that carry positional embeddings, are kept. When :math:`P_0 \mathbf{1} = 0` nothing is
    subtracted. :math:`A` is an :class:`eAffine`. Numerically stable for zero, tiny and huge inputs.

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
        if self.centre:
            u = self.direction.to(x.dtype)
            x = x - (x @ u).unsqueeze(-1) * u
        if _fast_path_ok(x, weight, bias):
            if not self.mean_centering:
                y = _fast_rms(x, self.eps, weight, bias)
                if y is not None:
                    return y
            elif max_abs(x) <= SAFE_MAX_ABS:
                # Exactly torch's layer norm (mean and variance over all features), fused.
                return F.layer_norm(x, x.shape[-1:], weight, bias, self.eps)
        return _affine(stable_rms_normalize(x, self.eps, center=self.mean_centering), weight, bias)

    def _plain_core(self, weight: Tensor | None, bias: Tensor | None) -> nn.Module:
        n = self.in_rep.size
        if self.mean_centering:
            # Mean and variance over all features: exactly torch's LayerNorm.
            ref = weight if weight is not None else bias
            norm = nn.LayerNorm(
                n,
                eps=self.eps,
                elementwise_affine=ref is not None,
                bias=bias is not None,
                device=None if ref is None else ref.device,
                dtype=None if ref is None else ref.dtype,
            )
            if weight is not None:
                norm.weight.copy_(weight)
            if bias is not None:
                norm.bias.copy_(bias)
            return norm
        rms = _plain_rms(n, self.eps, weight, bias)
        if not self.centre:
            return rms
        u = self.direction if weight is None else self.direction.to(weight.dtype)
        return nn.Sequential(RemoveComponent(u), rms)


def _plain_rms(n: int, eps: float, weight: Tensor | None, bias: Tensor | None) -> nn.Module:
    """``torch.nn.RMSNorm`` with ``weight`` (or none), followed by a :class:`Bias` if given."""
    norm = nn.RMSNorm(
        n,
        eps=eps,
        elementwise_affine=weight is not None,
        device=None if weight is None else weight.device,
        dtype=None if weight is None else weight.dtype,
    )
    if weight is not None:
        if norm.weight is None:  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: elementwise_affine=True")
        norm.weight.copy_(weight)
    return norm if bias is None else nn.Sequential(norm, Bias(bias))
