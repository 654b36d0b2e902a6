"""Padding masks and token positions of the conditional transformer regressors.

The validation lives here; the torch-only mask and position helpers live in
``eregressors._plain`` (shared with the exported model, which imports nothing but torch) and are
re-exported here.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from eregressors._plain import (
    anchored_table_indices,
    memory_padding,
    memory_positions,
    padded_self_mask,
)

__all__ = [
    "POS_ENCODINGS",
    "PosEncoding",
    "anchored_table_indices",
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
