"""Attention masks of the causal conditional transformers."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causal_memory_mask", "causal_self_mask"]


def causal_self_mask(length: int, device: torch.device | None = None) -> Tensor:
    """Boolean self-attention mask: token ``t`` may attend to tokens ``s <= t`` only.

    Args:
        length: Sequence length ``T``.
        device: Device of the mask.

    Returns:
        Boolean tensor of shape ``(T, T)``, ``True`` where attention is *forbidden* (``s > t``), the
        convention of ``torch.nn.MultiheadAttention``.
    """
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


def causal_memory_mask(
    num_tokens: int, num_cond: int, device: torch.device | None = None
) -> Tensor:
    """Boolean cross-attention mask from input tokens to the memory ``[step, cond_0, ...]``.

    Input token ``t`` may attend to the step token (memory index 0) and to the conditioning tokens
    ``cond_s`` with ``s <= t`` (memory index ``s + 1 <= t + 1``). The step token is always visible,
    so no row is fully masked.

    Args:
        num_tokens: Number of input tokens ``T_x``.
        num_cond: Number of conditioning tokens ``T_z`` (the memory holds ``T_z + 1`` tokens).
        device: Device of the mask.

    Returns:
        Boolean tensor of shape ``(T_x, T_z + 1)``, ``True`` where attention is forbidden (memory
        index > t + 1).
    """
    return torch.ones(num_tokens, num_cond + 1, dtype=torch.bool, device=device).triu(2)
