"""Pointwise activations accepted by the equivariant layers."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "Activation", "resolve_activation"]

Activation = str | Callable[[Tensor], Tensor]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "elu": F.elu,
    "tanh": torch.tanh,
    "sigmoid": F.sigmoid,
    "identity": lambda x: x,
}


def resolve_activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    """Return the callable of a pointwise activation given by name or as a callable/module.

    Raises:
        ValueError: If the name is unknown.
        TypeError: If it is neither a string nor callable.
    """
    if isinstance(activation, str):
        fn = ACTIVATIONS.get(activation)
        if fn is None:
            raise ValueError(
                f"Unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} "
                "or a pointwise callable."
            )
        return fn
    if isinstance(activation, nn.Module) or callable(activation):
        return activation
    raise TypeError(f"activation must be a name or a callable; got {type(activation).__name__}.")
