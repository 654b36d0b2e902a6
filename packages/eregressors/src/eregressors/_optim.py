"""Weight-decay parameter groups for ``torch.optim.AdamW``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from elayers import PositionalMultiheadAttention

__all__ = ["OptimGroup", "default_optim_groups", "is_decayed_default", "split_optim_groups"]

#: One parameter group of a ``torch.optim`` optimiser: ``{"params": list[Parameter], "weight_decay":
#: float}``.
#: A plain ``dict`` so that it type-checks as the argument of every ``torch.optim`` optimiser.
OptimGroup = dict[str, Any]

#: ``(module, parameter name inside that module) -> decayed?``
DecayRule = Callable[[torch.nn.Module, str], bool]

_ATTENTION_PROJECTIONS = frozenset(
    {"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"}
)


def is_decayed_default(module: torch.nn.Module, param_name: str) -> bool:
    """Decay ``torch.nn.Linear`` weights and ``torch.nn.MultiheadAttention`` input projections.

    Args:
        module: The module that owns the parameter directly.
        param_name: The parameter's name inside ``module`` (no dots).

    Returns:
        Whether the parameter belongs to the weight-decayed group.
    """
    if isinstance(module, torch.nn.Linear):
        return param_name == "weight"
    if isinstance(module, torch.nn.MultiheadAttention | PositionalMultiheadAttention):
        return param_name in _ATTENTION_PROJECTIONS
    return False


def split_optim_groups(
    model: torch.nn.Module, weight_decay: float, is_decayed: DecayRule
) -> list[OptimGroup]:
    """Partition the trainable parameters of ``model`` into a decayed and a non-decayed group.

    Each parameter is classified once, by the first module that owns it directly (shared parameters
    are not duplicated), so every trainable parameter lands in exactly one group. Frozen parameters
    are left out.

    Args:
        model: The model.
        weight_decay: Weight decay of the first group.
        is_decayed: Rule deciding, from the owning module and the parameter's local name, whether to
            decay.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay":
        0.0}]``.

    Raises:
        ValueError: If ``weight_decay`` is negative.
    """
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise TypeError(
            f"weight_decay must be a float >= 0; got {weight_decay!r} "
            f"({type(weight_decay).__name__})."
        )
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}.")
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            (decay if is_decayed(module, name) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def default_optim_groups(model: torch.nn.Module, weight_decay: float) -> list[OptimGroup]:
    """:func:`split_optim_groups` with :func:`is_decayed_default`.

    Args:
        model: The model.
        weight_decay: Weight decay of the first group.

    Returns:
        The two parameter groups.
    """
    return split_optim_groups(model, weight_decay, is_decayed_default)
