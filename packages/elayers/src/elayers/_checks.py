"""Checks of constructor and call arguments: the right kind of object, then the right value.

Each raises ``TypeError`` for the wrong kind of object (a string for a float, a bool for an int,
a list for a tensor) and ``ValueError`` for a value out of range, naming the owner, the argument,
what was expected and what was received. None of them uses ``assert``, so they hold under
``python -O``.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = [
    "check_bool",
    "check_int",
    "check_mask",
    "check_positive_real",
    "check_probability",
    "check_tensor",
]


def _received(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def check_bool(owner: str, name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool`` (numpy bools included), else raise ``TypeError``."""
    if isinstance(value, bool):
        return value
    # numpy.bool_ is not a bool subclass; accept it without importing numpy here.
    if type(value).__name__ == "bool" and type(value).__module__ == "numpy":
        return bool(value)
    raise TypeError(f"{owner} expects {name} to be a bool (True or False); got {_received(value)}.")


def check_int(owner: str, name: str, value: object, minimum: int | None = 1) -> int:
    """Return ``value`` if it is an ``int`` (not a bool) ``>= minimum`` (if given), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TypeError(f"{owner} expects {name} to be an int{bound}; got {_received(value)}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner} expects {name} to be an int >= {minimum}; got {value}.")
    return int(value)


def _check_real(owner: str, name: str, value: object, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner} expects {name} to be {expected}; got {_received(value)}.")
    return float(value)


def check_probability(owner: str, name: str, value: object) -> float:
    """Return ``value`` as a float if it is a real number in ``[0, 1)``, else raise."""
    p = _check_real(owner, name, value, "a probability, a float in [0, 1)")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{owner} expects {name} in [0, 1); got {value!r}.")
    return p


def check_positive_real(owner: str, name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number ``> 0``, else raise."""
    x = _check_real(owner, name, value, "a positive float")
    if not 0.0 < x < float("inf"):
        raise ValueError(f"{owner} expects {name} > 0 (finite); got {value!r}.")
    return x


def check_tensor(owner: str, name: str, value: object) -> Tensor:
    """Return ``value`` if it is a floating-point tensor, else raise ``TypeError``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner} expects {name} to be a torch.Tensor; got {_received(value)}.")
    if not value.is_floating_point():
        raise TypeError(
            f"{owner} expects {name} to be a floating-point tensor; got dtype {value.dtype}. "
            f"Cast it, e.g. {name}.float()."
        )
    return value


def check_mask(owner: str, name: str, value: object) -> Tensor | None:
    """Return ``value`` if it is ``None`` or a bool or floating-point tensor, else raise."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{owner} expects {name} to be None or a bool/float torch.Tensor; got "
            f"{_received(value)}."
        )
    if value.dtype != torch.bool and not value.is_floating_point():
        raise TypeError(
            f"{owner} expects {name} of dtype bool (True = masked) or floating (added to the "
            f"scores); got dtype {value.dtype}."
        )
    return value
