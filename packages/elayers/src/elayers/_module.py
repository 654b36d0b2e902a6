"""The base class of equivariant modules."""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ereps import ExactBuffersModule, InitScheme, Representation

__all__ = ["FrozenWeights", "eModule", "frozen_registry", "rep_signature", "transform_active"]

_Derived = TypeVar("_Derived", Tensor, tuple[Tensor | None, ...])


def transform_active() -> bool:
    """Whether the call is traced, compiled, exported or under a torch.func transform.

    Tensors there are proxies, fakes or batched wrappers: comparing or keeping them is wrong.
    """
    compiler = torch.compiler
    return bool(
        compiler.is_compiling()
        or getattr(compiler, "is_exporting", lambda: False)()
        or torch._C._is_tracing()
        or torch._C._are_functorch_transforms_active()
    )


class FrozenWeights:
    """The dense tensors of one module inside an :func:`elayers.frozen` scope.

    Built once on entry from the module's own parameters (``sources``). Every use first checks
    that those parameters are still the same tensors at the same version and address, and raises
    instead of serving old weights when an edit was detected (an in-place update, an optimizer
    step, ``load_state_dict``, ``.to()``). That is a guard against misuse, not a cache policy:
    edits through ``.data`` bypass version counters, which is why parameters must not change
    inside the scope at all.
    """

    __slots__ = ("module", "sources", "values")

    def __init__(self, module: eModule, values: dict[str, Any]) -> None:
        self.module = module
        self.values = values
        self.sources = [
            (name, p, None if p.is_inference() else p._version, p.data_ptr())
            for name, p in module._parameters.items()
            if p is not None
        ]

    def check(self) -> None:
        """Raise ``RuntimeError`` if a parameter was replaced or edited since entry."""
        params = self.module._parameters
        for name, p, version, ptr in self.sources:
            if (
                params.get(name) is not p
                or (version is not None and p._version != version)
                or p.data_ptr() != ptr
            ):
                raise RuntimeError(
                    f"{type(self.module).__name__}: parameter {name!r} changed inside "
                    "elayers.frozen(); the dense weights were built on entry and would be stale. "
                    "Edit parameters outside the scope (or re-enter it after the edit)."
                )

    def needs_grad(self) -> bool:
        """Whether autograd would track the sources (then the module synthesizes as usual)."""
        return torch.is_grad_enabled() and any(p.requires_grad for _, p, _, _ in self.sources)


# Modules inside an active frozen() scope, by id: a forward looks itself up here. Kept outside
# the modules so that copies and pickles of a module made inside a scope are never frozen.
_FROZEN: dict[int, FrozenWeights] = {}
_FROZEN_LOCK = threading.Lock()


def frozen_registry() -> tuple[dict[int, FrozenWeights], threading.Lock]:
    """The registry of frozen modules and its lock (for :func:`elayers.frozen`)."""
    return _FROZEN, _FROZEN_LOCK


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

    Nothing derived from the parameters is cached implicitly: every forward, in training or in
    eval, synthesizes its dense tensors (an :class:`eLinear`'s matrix, a norm's per-feature scale)
    from the current parameters, so no edit of the parameters can make a forward use old weights.
    Two explicit ways avoid the synthesis at inference time:

    * :meth:`export` (and :func:`elayers.export` for any module tree) returns a new plain-PyTorch
      module computing the same function with the current weights (``torch.nn.Linear``,
      ``torch.nn.LayerNorm``, ``torch.nn.MultiheadAttention``, ...), for ``torch.export``, ONNX
      and machines without escnn;
    * :func:`elayers.frozen` builds the dense tensors once on entry and uses them in every forward
      inside the scope (parameters must not change there).

    Subclasses override :meth:`export` and, where they derive dense tensors, :meth:`_freeze`
    (what :func:`elayers.frozen` builds) and read them through :meth:`_derived`.

    Args:
        in_rep: Representation of the input features.
        out_rep: Representation of the output features.
    """

    def __init__(self, in_rep: Representation, out_rep: Representation) -> None:
        super().__init__()
        self.in_rep = in_rep
        self.out_rep = out_rep

    def export(self) -> nn.Module:
        """A new plain-PyTorch module computing this module's function with its current weights.

        The result holds detached copies of the weights (this module is left unchanged), no escnn
        or ``ereps`` object and no equivariant module: ``torch.nn`` classes, or plain modules of
        ``elayers``' torch-only ``_plain`` module where torch has no exact equivalent. It keeps
        this module's training flag. Subclasses override this method; use
        :func:`elayers.export` to export a whole module tree.

        Raises:
            NotImplementedError: If the subclass does not implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement export(); override it to return a plain "
            "torch.nn.Module computing the same function."
        )

    def _freeze(self) -> dict[str, Any]:
        """The dense tensors that :func:`elayers.frozen` builds on entry, by key (none here)."""
        return {}

    def _derived(self, key: str, build: Callable[[], _Derived]) -> _Derived:
        """``build()``, or the value built on entry of an :func:`elayers.frozen` scope.

        The frozen value is used only when this module is inside a scope, autograd does not track
        its parameters, and no compiler, tracer or ``torch.func`` transform is running (there the
        synthesis is recorded from the parameters as in training).
        """
        # The transform check comes before the registry is read, so that compilers never trace it.
        if not _FROZEN or transform_active():
            return build()
        entry = _FROZEN.get(id(self))
        if entry is None or key not in entry.values or entry.needs_grad():
            return build()
        entry.check()
        value: _Derived = entry.values[key]
        return value

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
