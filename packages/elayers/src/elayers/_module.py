"""The base class of equivariant modules."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from ereps import ExactBuffersModule, InitScheme, Representation

__all__ = ["eModule", "rep_signature"]


def rep_signature(rep: Representation) -> str:
    """A short, stable description of a representation: group, name, irreps and change of basis."""
    q = np.round(np.asarray(rep.change_of_basis, dtype=np.float64), 8) + 0.0
    digest = hashlib.sha1(q.tobytes()).hexdigest()[:12]
    irreps = ",".join(str(tuple(i)) for i in rep.irreps)
    return f"{rep.group.name}|{rep.name}|size={rep.size}|irreps=[{irreps}]|Q={digest}"


class eModule(ExactBuffersModule):
    """Base class of modules that commute with a finite group's action.

    A subclass maps features transforming by ``in_rep`` on their last axis to features transforming
    by ``out_rep``: ``f(ρ_in(g) x) = ρ_out(g) f(x)`` for every ``g`` in the group.

    The state dict records which representations the parameters were built for, and loading a state
    dict built for other representations raises ``ValueError`` instead of silently mixing bases.

    Args:
        in_rep: Representation of the input features.
        out_rep: Representation of the output features.
    """

    def __init__(self, in_rep: Representation, out_rep: Representation) -> None:
        super().__init__()
        self.in_rep = in_rep
        self.out_rep = out_rep

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Re-initialize every parameter of this module and its equivariant submodules.

        Args:
            scheme: Initialization scheme for the linear maps; each module's own default if
            ``None``.
        """
        for child in self.children():
            _reset(child, scheme)

    def get_extra_state(self) -> dict[str, str]:
        """Record the representations in the state dict."""
        return {"in_rep": rep_signature(self.in_rep), "out_rep": rep_signature(self.out_rep)}

    def set_extra_state(self, state: Any) -> None:
        """Refuse a state dict built for other representations."""
        if not isinstance(state, dict):
            return
        mine = self.get_extra_state()
        for key in ("in_rep", "out_rep"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"Cannot load a state dict into {type(self).__name__}: it was built for "
                    f"{key} {state[key]}, this module has {mine[key]}."
                )

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Refuse before anything of this module (or its children) is copied, so a refused load
        # leaves the module as it was.
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            self.set_extra_state(extra)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> eModule:
        # Representations and groups are immutable descriptions: share them between copies
        # (escnn would otherwise deep-copy whole groups, and group-keyed caches would miss).
        for rep in (self.in_rep, self.out_rep):
            memo.setdefault(id(rep), rep)
            memo.setdefault(id(rep.group), rep.group)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def _check_input(self, x: Tensor, name: str = "input") -> None:
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a torch.Tensor; got {type(x).__name__}."
            )
        if x.ndim == 0 or x.shape[-1] != self.in_rep.size:
            raise ValueError(
                f"{type(self).__name__} expects {name} of shape (..., {self.in_rep.size}) for "
                f"in_rep {self.in_rep.name!r}; got {tuple(x.shape)}."
            )


def _reset(module: Any, scheme: InitScheme | None) -> None:
    if isinstance(module, eModule):
        module.reset_parameters(scheme)
        return
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for child in module.children():
        _reset(child, scheme)
