"""Pointwise activations accepted by the equivariant layers."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elayers._module import transform_active
from elayers._plain import Pointwise

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "apply_activation",
    "plain_activation",
    "resolve_activation",
]

Activation = str | Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


# Module-level functions only (no lambdas): modules holding them must pickle (torch.save(model)).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "elu": F.elu,
    "tanh": torch.tanh,
    "sigmoid": F.sigmoid,
    "identity": _identity,
}


def _gelu_(x: Tensor) -> Tensor:
    out: Tensor = torch.ops.aten.gelu_(x)
    return out


def _silu_(x: Tensor) -> Tensor:
    return F.silu(x, inplace=True)


def _elu_(x: Tensor) -> Tensor:
    return F.elu(x, inplace=True)


# In-place forms of the named activations. A pointwise activation of a hidden layer is usually the
# largest allocation of a forward; without autograd there is no reason to keep its input.
_INPLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_,
    "gelu": _gelu_,
    "silu": _silu_,
    "elu": _elu_,
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "identity": _identity,
}


def apply_activation(
    activation: Callable[[Tensor], Tensor], name: str | None, fresh: Tensor
) -> Tensor:
    """``activation(fresh)``, in place when autograd does not record it and ``name`` has a form.

    ``fresh`` must be a tensor nobody else holds (the output of a linear map).
    """
    inplace = _INPLACE.get(name) if name is not None else None
    if inplace is None or fresh.requires_grad or transform_active():
        return activation(fresh)
    return inplace(fresh)


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


_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def plain_activation(activation: Callable[[Tensor], Tensor], name: str | None) -> nn.Module:
    """The activation as a module of an exported model.

    ``torch.nn.GELU()`` for ``"gelu"`` (and so on), a copy of a module, or a :class:`Pointwise`
    wrapper of any other callable.
    """
    if name is not None:
        return _MODULES[name]()
    if isinstance(activation, nn.Module):
        return copy.deepcopy(activation)
    return Pointwise(activation)
