"""Plain-PyTorch parts of the temporal U-Nets: blocks, the trunk and the exported model.

This file imports nothing but torch: :class:`PlainConditionalUnet1D` is what
``ConditionalUnet1D.export()`` and ``eConditionalUnet1D.export()`` return, and it must run (and
trace with ``torch.export``/ONNX) without escnn or any equivariant object.

Layout inside the trunk is channels first, ``(B, C, T)``, as in ``torch.nn.Conv1d`` and Diffusion
Policy; the models' inputs and outputs keep tokens on the last axis, ``(B, T, C)``.

*Any horizon.* The trunk downsamples ``L - 1`` times for ``L = len(down_dims)`` levels, so it needs
a length that is a multiple of ``2^(L-1)``. A shorter multiple-less sequence of length ``T`` is
padded at the end to the next multiple and the output cropped back to ``T``. The padded positions
are masked so that they cannot influence the real ones: every convolution that mixes time steps
sees zeros there (the input of each such convolution is multiplied by the mask of its level, so it
computes exactly what a zero-padded convolution of the real sequence computes), and group norms take
their statistics over the real positions only. Level ``l`` has ``T_l = ceil(T_{l-1} / 2)`` real
positions (a stride-2 window is real when its centre is). Outputs at the real positions therefore
do not depend on what the padded positions hold; when ``T`` is a multiple no mask is built and the
trunk is exactly Diffusion Policy's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConditionalResidualBlock1D",
    "Conv1dBlock",
    "PlainConditionalUnet1D",
    "apply_film",
    "conv_block",
    "global_conditioning",
    "horizon_multiple",
    "level_masks",
    "masked_group_norm",
    "residual_block",
    "run_trunk",
    "unet_forward",
]


def masked_group_norm(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    mask: Tensor | None,
) -> Tensor:
    """``F.group_norm`` whose statistics only count the time steps where ``mask`` is one.

    Args:
        x: Tensor of shape ``(B, C, T)``.
        num_groups: Number of groups of consecutive channels.
        weight: Per-channel scale ``(C,)`` or ``None``.
        bias: Per-channel bias ``(C,)`` or ``None``.
        eps: Added to the variance.
        mask: ``(T,)`` tensor of ones (real steps) and zeros, with at least one one; ``None``
            means all steps are real (then this is ``F.group_norm``).

    Returns:
        Tensor of shape ``(B, C, T)``; the padded steps are normalized with the statistics of the
        real ones.
    """
    if mask is None:
        return F.group_norm(x, num_groups, weight, bias, eps)
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        # Statistics in float32, as torch's group norm (and autocast's policy for it) computes them.
        x = x.float()
    B, C, T = x.shape
    xg = x.reshape(B, num_groups, C // num_groups, T)
    m = mask.to(x.dtype)
    count = m.sum() * (C // num_groups)
    mean = (xg * m).sum(dim=(-2, -1), keepdim=True) / count
    centred = xg - mean
    var = (centred.square() * m).sum(dim=(-2, -1), keepdim=True) / count
    y = (centred * torch.rsqrt(var + eps)).reshape(B, C, T)
    if weight is not None:
        y = y * weight.to(y.dtype).unsqueeze(-1)
    if bias is not None:
        y = y + bias.to(y.dtype).unsqueeze(-1)
    return y.to(dtype)


def apply_film(out: Tensor, embed: Tensor, out_channels: int, cond_predict_scale: bool) -> Tensor:
    """FiLM: ``scale ⊙ out + bias`` (``cond_predict_scale``) or ``out + bias``.

    Args:
        out: Features ``(B, out_channels, T)``.
        embed: ``(B, 2·out_channels)`` (scale first, then bias) or ``(B, out_channels)``.
        out_channels: Channels of ``out``.
        cond_predict_scale: Whether ``embed`` holds a scale too.

    Returns:
        Tensor of shape ``(B, out_channels, T)``.
    """
    embed = embed.unsqueeze(-1)
    if cond_predict_scale:
        scale, shift = embed[:, :out_channels], embed[:, out_channels:]
        return torch.addcmul(shift, scale, out)
    return out + embed


def conv_block(
    conv: Callable[[Tensor], Tensor],
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    x: Tensor,
    mask: Tensor | None,
) -> Tensor:
    """``Mish(GroupNorm(conv(x)))`` with the padded steps masked: both U-Nets' conv block.

    ``weight``/``bias`` are the norm's per-channel affine maps (dense, for the equivariant one).
    """
    if mask is not None:
        x = x * mask.to(x.dtype)
    y = conv(x)
    return F.mish(masked_group_norm(y, num_groups, weight, bias, eps, mask))


def residual_block(
    blocks: nn.ModuleList,
    film: Tensor,
    residual: Callable[[Tensor], Tensor],
    out_channels: int,
    cond_predict_scale: bool,
    x: Tensor,
    mask: Tensor | None,
) -> Tensor:
    """``block_1(FiLM(block_0(x), film)) + residual(x)``: both U-Nets' residual block.

    ``film`` ``(B, C_film)`` holds the FiLM parameters (see :func:`apply_film`).
    """
    out = blocks[0](x, mask)
    out = apply_film(out, film, out_channels, cond_predict_scale)
    out = blocks[1](out, mask)
    res: Tensor = residual(x)
    total: Tensor = out + res
    return total


class Conv1dBlock(nn.Module):
    """``Conv1d → GroupNorm → Mish``, channels first (Diffusion Policy's block).

    Args:
        conv: The convolution (length preserving: odd kernel, padding ``K // 2``).
        norm: The group norm over its output channels.
    """

    def __init__(self, conv: nn.Conv1d, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Apply the block.

        Args:
            x: ``(B, C_in, T)``.
            mask: ``(T,)`` mask of real steps, or ``None`` (see the module docstring).

        Returns:
            ``(B, C_out, T)``.
        """
        n = self.norm
        return conv_block(self.conv, n.num_groups, n.weight, n.bias, n.eps, x, mask)

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class ConditionalResidualBlock1D(nn.Module):
    """Two :class:`Conv1dBlock` with FiLM from a global conditioning vector between them.

    ``out = block_1(film(block_0(x), W c + b)) + residual(x)``, with ``W c + b`` either a
    per-channel bias or a per-channel scale and bias (``cond_predict_scale``).

    Args:
        blocks: The two conv blocks.
        cond_encoder: Linear map from the (activated) global conditioning to the FiLM parameters.
        residual_conv: 1x1 convolution of the skip path, or an identity.
        out_channels: Output channels.
        cond_predict_scale: Whether the FiLM predicts a scale as well as a bias.
    """

    def __init__(
        self,
        blocks: Sequence[Conv1dBlock],
        cond_encoder: nn.Linear,
        residual_conv: nn.Module,
        out_channels: int,
        cond_predict_scale: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.cond_encoder = cond_encoder
        self.residual_conv = residual_conv
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor | None = None) -> Tensor:
        """Apply the block.

        Args:
            x: ``(B, C_in, T)``.
            cond: ``(B, cond_dim)``, the activated global conditioning.
            mask: ``(T,)`` mask of real steps, or ``None``.

        Returns:
            ``(B, out_channels, T)``.
        """
        film: Tensor = self.cond_encoder(cond)
        return residual_block(
            self.blocks,
            film,
            self.residual_conv,
            self.out_channels,
            self.cond_predict_scale,
            x,
            mask,
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


def level_masks(length: int, padded: int, levels: int, like: Tensor) -> list[Tensor | None]:
    """Masks of the real steps at each level, or ``None`` everywhere when nothing is padded.

    Args:
        length: Real length ``T``.
        padded: Padded length (a multiple of ``2^(levels-1)``).
        levels: Number of resolutions.
        like: Tensor whose dtype and device the masks take.

    Returns:
        ``levels`` masks, level ``l`` of shape ``(padded / 2^l,)`` with ``ceil(T / 2^l)`` ones.
    """
    if length == padded:
        return [None] * levels
    masks: list[Tensor | None] = []
    real = length
    for level in range(levels):
        steps = torch.arange(padded >> level, device=like.device)
        masks.append((steps < real).to(like.dtype))
        real = -(-real // 2)
    return masks


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask.to(x.dtype)


def horizon_multiple(levels: int) -> int:
    """The trunk's lengths must be multiples of ``2^(levels - 1)`` (one halving per level)."""
    return 1 << (levels - 1)


def run_trunk(
    x: Tensor,
    cond: Tensor,
    down_modules: nn.ModuleList,
    mid_modules: nn.ModuleList,
    up_modules: nn.ModuleList,
    final_conv: nn.Sequential,
    length: int | None = None,
) -> Tensor:
    """The U-Net trunk: down levels with skips, middle blocks, up levels, final convolutions.

    Diffusion Policy's order: every down level is two residual blocks then a stride-2
    convolution (none at the last level); the up levels concatenate the matching skip, apply two
    residual blocks and a stride-2 transposed convolution. Works for plain and equivariant blocks
    alike (they share the call signatures).

    Args:
        x: ``(B, C_in, T)``, channels first, ``T`` a multiple of :func:`horizon_multiple`.
        cond: ``(B, cond_dim)``, the activated global conditioning.
        down_modules: ``[[res, res, downsample or Identity], ...]``, one entry per level.
        mid_modules: The middle residual blocks.
        up_modules: ``[[res, res, upsample], ...]``, one entry per level but the first.
        final_conv: ``(Conv1dBlock-like, 1x1 convolution)``.
        length: Number of real steps at the start of ``x`` (default: all ``T``); the others are
            padding, masked so that they do not influence the real steps (module docstring).

    Returns:
        ``(B, C_out, length)``: the outputs at the real steps.
    """
    levels = len(down_modules)
    padded = x.shape[-1]
    length = padded if length is None else length
    masks = level_masks(length, padded, levels, x)
    skips: list[Tensor] = []
    for level, modules in enumerate(down_modules):
        res1, res2, downsample = modules.children()
        mask = masks[level]
        x = res1(x, cond, mask)
        x = res2(x, cond, mask)
        skips.append(x)
        if level < levels - 1:
            x = downsample(_masked(x, mask))
    for block in mid_modules:
        x = block(x, cond, masks[levels - 1])
    for index, modules in enumerate(up_modules):
        res1, res2, upsample = modules.children()
        mask = masks[levels - 1 - index]
        x = torch.cat((x, skips.pop()), dim=1)
        x = res1(x, cond, mask)
        x = res2(x, cond, mask)
        x = upsample(_masked(x, mask))
    x = final_conv[0](x, masks[0])
    out: Tensor = final_conv[1](x)
    return out[..., :length] if padded != length else out


def global_conditioning(
    step_encoder: nn.Module, cond_mish: bool, step: Tensor, Z: Tensor
) -> Tensor:
    """``[Mish(step_encoder(k)), Z flattened]``, with Mish on ``Z`` too when ``cond_mish``.

    Diffusion Policy applies Mish to the whole vector; the equivariant model only where it is
    equivariant, on the invariant step features.

    Args:
        step_encoder: Steps ``(B,)`` to step features ``(B, D)``.
        cond_mish: Whether Mish is applied to the flattened ``Z``.
        step: ``(B,)``.
        Z: ``(B, T_z, d_z)``.

    Returns:
        ``(B, D + T_z·d_z)``.
    """
    step_features = F.mish(step_encoder(step))
    z = Z.reshape(Z.shape[0], -1)
    if cond_mish:
        z = F.mish(z)
    return torch.cat((step_features.to(z.dtype), z), dim=-1)


def unet_forward(
    step_encoder: nn.Module,
    cond_mish: bool,
    down_modules: nn.ModuleList,
    mid_modules: nn.ModuleList,
    up_modules: nn.ModuleList,
    final_conv: nn.Sequential,
    X: Tensor,
    step: Tensor,
    Z: Tensor,
) -> Tensor:
    """The whole U-Net on tokens-last inputs (shared by the models and the exported module).

    Pads ``X`` at the end with zeros to a multiple of :func:`horizon_multiple` and runs
    :func:`run_trunk` with the real length (so the padding is masked).

    Args:
        step_encoder: See :func:`global_conditioning`.
        cond_mish: See :func:`global_conditioning`.
        down_modules: See :func:`run_trunk`.
        mid_modules: See :func:`run_trunk`.
        up_modules: See :func:`run_trunk`.
        final_conv: See :func:`run_trunk`.
        X: ``(B, T, C_in)``.
        step: ``(B,)``.
        Z: ``(B, T_z, d_z)``.

    Returns:
        ``(B, T, C_out)``.
    """
    cond = global_conditioning(step_encoder, cond_mish, step, Z)
    x = X.transpose(1, 2)
    length = x.shape[-1]
    multiple = horizon_multiple(len(down_modules))
    padded = -(-length // multiple) * multiple
    if padded != length:
        x = F.pad(x, (0, padded - length))
    y = run_trunk(x, cond, down_modules, mid_modules, up_modules, final_conv, length)
    return y.transpose(1, 2)


class PlainConditionalUnet1D(nn.Module):
    """A temporal U-Net denoiser made of torch modules only: what the U-Nets export to.

    ``forward(X, opt_step, Z)`` computes the exporting model's function: ``X`` ``(B, T, C_in)``,
    ``opt_step`` a number, a 0-d or a ``(B,)`` tensor, ``Z`` ``(B, T_z, d_z)``; output
    ``(B, T, C_out)``. No input validation (the exporting model did it); traceable with
    ``torch.export`` (dynamic batch) and ONNX.

    Args:
        step_encoder: Steps ``(B,)`` to step features.
        down_modules: See :func:`run_trunk`.
        mid_modules: See :func:`run_trunk`.
        up_modules: See :func:`run_trunk`.
        final_conv: See :func:`run_trunk`.
        cond_mish: Whether Mish is applied to the flattened ``Z`` (see :func:`unet_forward`).
    """

    def __init__(
        self,
        step_encoder: nn.Module,
        down_modules: nn.ModuleList,
        mid_modules: nn.ModuleList,
        up_modules: nn.ModuleList,
        final_conv: nn.Sequential,
        cond_mish: bool,
    ) -> None:
        super().__init__()
        self.diffusion_step_encoder = step_encoder
        self.down_modules = down_modules
        self.mid_modules = mid_modules
        self.up_modules = up_modules
        self.final_conv = final_conv
        self.cond_mish = cond_mish

    def forward(self, X: Tensor, opt_step: Any, Z: Tensor) -> Tensor:
        """Regress ``V = f(X, k, Z)``; shapes in the class docstring."""
        step = opt_step if isinstance(opt_step, Tensor) else torch.tensor(float(opt_step))
        # Steps in at least float32 (in bfloat16 neighbouring steps near 1000 collapse).
        step = step.to(
            device=X.device, dtype=torch.float64 if X.dtype == torch.float64 else torch.float32
        )
        if step.ndim == 0:
            step = step.expand(X.shape[0])
        return unet_forward(
            self.diffusion_step_encoder,
            self.cond_mish,
            self.down_modules,
            self.mid_modules,
            self.up_modules,
            self.final_conv,
            X,
            step,
            Z,
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
