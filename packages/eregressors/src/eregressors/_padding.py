"""Padding masks and token positions of the conditional transformer regressors."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "POS_ENCODINGS",
    "PosEncoding",
    "check_padding_mask",
    "check_pos_encoding",
    "memory_padding",
    "memory_positions",
    "padded_self_mask",
]

#: Positional encodings of the regressors: learned absolute tables (the seed's), a learned
#: relative bias in every attention, or rotary embeddings of queries and keys.
PosEncoding = Literal["absolute", "relative", "rope"]
POS_ENCODINGS: tuple[str, ...] = get_args(PosEncoding)


def check_pos_encoding(owner: str, pos_encoding: object) -> None:
    """Raise ``ValueError`` unless ``pos_encoding`` is one of :data:`POS_ENCODINGS`."""
    if pos_encoding not in POS_ENCODINGS:
        raise ValueError(
            f"{owner} expects pos_encoding to be one of {list(POS_ENCODINGS)}; "
            f"got {pos_encoding!r}."
        )


def check_padding_mask(owner: str, arg: str, mask: object, tokens: Tensor) -> None:
    """Raise unless ``mask`` is ``None`` or a bool ``(B, T)`` tensor matching ``tokens``.

    Args:
        owner: Class name for the message.
        arg: Argument name (``X_padding_mask`` or ``Z_padding_mask``).
        mask: The received mask.
        tokens: The sequence it masks.

    Raises:
        TypeError: If ``mask`` is not a bool tensor.
        ValueError: If its shape or device does not match.
    """
    if mask is None:
        return
    expected = f"({tokens.shape[0]}, {tokens.shape[1]})"
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"{owner} expects {arg} to be None or a bool tensor of shape (B, T) = {expected} "
            f"(True = padding); got an object of type {type(mask).__name__}."
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{owner} expects {arg} of dtype torch.bool (True = padding, as torch's "
            f"key_padding_mask); got dtype {mask.dtype}. Convert it with {arg}.bool() if it holds "
            "0/1."
        )
    if tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(
            f"{owner} expects {arg} of shape (B, T) = {expected}, the batch and length of its "
            f"sequence; got {tuple(mask.shape)}."
        )
    if mask.device != tokens.device:
        raise ValueError(
            f"{owner} expects {arg} on the device of its sequence ({tokens.device}); got "
            f"{mask.device}."
        )


def memory_padding(Z_padding_mask: Tensor | None) -> Tensor | None:
    """Padding mask ``(B, T_z + 1)`` of the memory ``[step, Z_0, ...]`` (the step is real)."""
    if Z_padding_mask is None:
        return None
    step = torch.zeros_like(Z_padding_mask[:, :1])
    return torch.cat((step, Z_padding_mask), dim=1)


def memory_positions(num_cond: int, Z_padding_mask: Tensor | None, device: torch.device) -> Tensor:
    """Positions of the memory tokens ``[step, Z_0, ..., Z_{T_z-1}]`` in the time frame of ``X``.

    ``Z_s`` is at time ``s`` (``X_t`` at ``t``: they are aligned slot by slot, as in the causal
    masks); the step token sits just before the first real conditioning token, at ``f - 1`` where
    ``f`` is the first slot that is not padding (``-1`` without a mask), so a common shift of both
    sequences moves every real token and the step token alike.

    Returns:
        ``(T_z + 1,)`` without a mask, ``(B, T_z + 1)`` with one (integer).
    """
    slots = torch.arange(num_cond, device=device)
    if Z_padding_mask is None:
        return torch.cat((slots.new_full((1,), -1), slots))
    # argmax of a bool row gives its first True (0 for an all-padding row: the step stays at -1).
    first = (~Z_padding_mask).to(torch.int64).argmax(dim=1, keepdim=True)
    return torch.cat((first - 1, slots.expand(Z_padding_mask.shape[0], num_cond)), dim=1)


def padded_self_mask(X_padding_mask: Tensor, causal: bool, num_heads: int) -> Tensor:
    """Self-attention mask ``(B·H, T, T)`` (``True`` forbids) for torch's attention.

    Keys that are padding are forbidden (and later keys when causal); rows of padding queries are
    left open instead, so no row is fully masked (torch's attention would return NaN there, and
    a NaN value poisons later layers even under a zero weight). Real rows keep their own key.
    """
    batch, length = X_padding_mask.shape
    forbid = X_padding_mask.unsqueeze(1).expand(batch, length, length)
    if causal:
        later = torch.ones(length, length, dtype=torch.bool, device=X_padding_mask.device).triu(1)
        forbid = forbid | later
    forbid = forbid & ~X_padding_mask.unsqueeze(2)
    return forbid.repeat_interleave(num_heads, dim=0)


def _first_real(mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """First slot that is not padding, per row ``(B,)`` (0 without a mask or for all padding)."""
    if mask is None:
        return torch.zeros(batch, dtype=torch.int64, device=device)
    return (~mask).to(torch.int64).argmax(dim=1)


def anchored_table_indices(
    X_padding_mask: Tensor | None,
    Z_padding_mask: Tensor | None,
    shape: tuple[int, int, int],
    horizons: tuple[int, int],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Rows of the absolute tables for ``"relative"``/``"rope"``: time since the first real token.

    The anchor is the earliest real slot of ``X`` or ``Z`` (per sample; 0 without masks, where
    the rows are the slots themselves), so a common shift of both sequences picks the same rows.

    Args:
        X_padding_mask: ``(B, T_x)`` or ``None``.
        Z_padding_mask: ``(B, T_z)`` or ``None``.
        shape: ``(B, T_x, T_z)``.
        horizons: ``(in_horizon, cond_horizon)``, the table sizes (``cond_horizon + 1`` rows).
        device: Device of the indices.

    Returns:
        ``(B, T_x)`` rows of the input table and ``(B, T_z + 1)`` rows of the memory table (row 0:
        the step token); padding tokens are clamped into the tables.
    """
    batch, t_x, t_z = shape
    anchor = torch.minimum(
        _first_real(X_padding_mask, batch, device), _first_real(Z_padding_mask, batch, device)
    ).unsqueeze(1)
    x_rows = (torch.arange(t_x, device=device) - anchor).clamp(0, horizons[0] - 1)
    z_rows = (torch.arange(1, t_z + 1, device=device) - anchor).clamp(1, horizons[1])
    return x_rows, torch.cat((torch.zeros_like(z_rows[:, :1]), z_rows), dim=1)
