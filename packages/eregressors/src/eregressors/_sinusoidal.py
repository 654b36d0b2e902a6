"""Sinusoidal embedding of a scalar step (diffusion time, flow time)."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from eregressors._plain import PlainSinusoidalPosEmb, PlainStepEmbedding

__all__ = ["SinusoidalPosEmb", "StepEmbedding"]


class SinusoidalPosEmb(torch.nn.Module):
    r"""Fixed sinusoidal features of a scalar, as in the original transformer's positional encoding.

    For ``dim = 2h`` and frequencies :math:`\omega_i = P^{-i/h}`, :math:`i = 0, \dots, h-1` (``P =
    max_period``),

    .. math::
        \mathrm{emb}(k) = \big(\sin(\omega_0 k), \dots, \sin(\omega_{h-1} k),
                               \cos(\omega_0 k), \dots, \cos(\omega_{h-1} k)\big) \in
                               \mathbb{R}^{2h}.

    The frequencies span ``[1/P, 1]`` geometrically, so the features separate steps from ``~1`` (the
    highest frequency) to ``~P`` apart. Flow-matching times in ``[0, 1]`` are best scaled (e.g. by
    1000) before embedding. The module has no parameters; the features are computed in the input's
    dtype.

    Args:
        dim: Number of features, a positive even integer.
        max_period: Longest period ``P`` (keyword-only).

    Raises:
        ValueError: If ``dim`` is not a positive even integer or ``max_period`` is not positive.

    Examples:
        >>> emb = SinusoidalPosEmb(8)
        >>> emb(torch.tensor([0.0, 10.0])).shape
        torch.Size([2, 8])
    """

    dim: int
    max_period: float

    def __init__(self, dim: int, *, max_period: float = 10_000.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(
                f"SinusoidalPosEmb expects dim to be a positive even int; got {type(dim).__name__}."
            )
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"SinusoidalPosEmb expects dim to be a positive even int; got {dim}.")
        if isinstance(max_period, bool) or not isinstance(max_period, (int, float)):
            raise TypeError(
                f"SinusoidalPosEmb expects max_period to be a positive float; got {max_period!r} "
                f"({type(max_period).__name__})."
            )
        if not 0 < max_period < math.inf:
            raise ValueError(f"SinusoidalPosEmb expects max_period > 0 (finite); got {max_period}.")
        super().__init__()
        self.dim = dim
        self.max_period = float(max_period)

    def forward(self, x: Tensor) -> Tensor:
        """Embed the steps.

        Args:
            x: Steps of shape ``(B,)`` (any real dtype; integer steps are embedded in the default
                float dtype).

        Returns:
            Features of shape ``(B, dim)``, of ``x``'s dtype if floating (half-precision steps are
            embedded in float32, then cast back).

        Raises:
            ValueError: If ``x`` is not one-dimensional.
        """
        if not isinstance(x, Tensor):
            raise TypeError(
                f"SinusoidalPosEmb expects x to be a tensor of steps of shape (B,); got "
                f"{type(x).__name__}."
            )
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(
                f"SinusoidalPosEmb expects real (integer or floating) steps; got dtype {x.dtype}."
            )
        if x.dim() != 1:
            raise ValueError(f"SinusoidalPosEmb expects steps of shape (B,); got {tuple(x.shape)}.")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        out_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # angles of large steps need more than 8 bits of mantissa
        half = self.dim // 2
        exponents = torch.arange(half, device=x.device, dtype=x.dtype) / half
        freqs = torch.exp(exponents * (-math.log(self.max_period)))
        angles = x[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1).to(out_dtype)

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return f"dim={self.dim}, max_period={self.max_period:g}"


class StepEmbedding(torch.nn.Sequential):
    """A :class:`SinusoidalPosEmb` followed by layers (an MLP) that run in their own dtype.

    ``StepEmbedding(SinusoidalPosEmb(d), Linear(d, h), GELU(), Linear(h, e))`` embeds steps of
    shape ``(B,)`` into ``(B, e)``. The sinusoid sees the steps in the precision they come in
    (the regressors pass them in float32 or float64), and its features are cast to the dtype of
    the first parameter after it: in a model cast to bfloat16 the angles ``ω k`` of neighbouring
    steps still differ (``k`` itself would round to a multiple of 4 near 1000 in bfloat16), and
    the features, bounded by one, lose nothing that matters in the cast.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Embed the steps ``x`` of shape ``(B,)``; returns ``(B, e)``."""
        layers = iter(self._modules.values())
        out: Tensor = next(layers)(x)
        for p in self.parameters():
            if p.is_floating_point():
                out = out.to(p.dtype)
                break
        for layer in layers:
            out = layer(out)
        return out

    def export(self) -> PlainStepEmbedding:
        """The same embedding in torch-only modules, with copies of the weights.

        The frequencies are computed here, once, as :class:`SinusoidalPosEmb` computes them for
        steps of the parameters' dtype (float32 for half precision), so that other runtimes (ONNX
        Runtime's ``exp``) multiply by exactly the same numbers.
        """
        sinusoid, *rest = self._modules.values()
        if not isinstance(sinusoid, SinusoidalPosEmb):
            raise TypeError(
                f"StepEmbedding.export expects a SinusoidalPosEmb first; got {type(sinusoid)}."
            )
        ref = next(self.parameters(), None)
        dtype = torch.float32 if ref is None or ref.dtype != torch.float64 else torch.float64
        device = None if ref is None else ref.device
        half = sinusoid.dim // 2
        exponents = torch.arange(half, device=device, dtype=dtype) / half
        freqs = torch.exp(exponents * (-math.log(sinusoid.max_period)))
        return PlainStepEmbedding(PlainSinusoidalPosEmb(freqs), *copy.deepcopy(rest))
