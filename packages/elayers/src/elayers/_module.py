"""The base class of equivariant modules."""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ereps import ExactBuffersModule, InitScheme, Representation

__all__ = [
    "FrozenTwin",
    "eModule",
    "frozen_registry",
    "frozen_twin",
    "rep_signature",
    "transform_active",
]


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


class FrozenTwin:
    """The plain twin of one module inside an :func:`elayers.frozen` scope.

    Built once on entry (the module's :meth:`eModule.export`); every use first checks that the
    module's parameters (its whole subtree) are still the same tensors at the same version and
    address, and raises instead of computing with old weights when an edit was detected (an
    in-place update, an optimizer step, ``load_state_dict``, ``.to()``). That is a guard against
    misuse, not a cache policy: edits through ``.data`` bypass version counters, which is why
    parameters must not change inside the scope at all.
    """

    __slots__ = ("hookables", "keys", "module", "params", "ptrs", "training", "twin", "versions")

    def __init__(self, module: nn.Module, twin: nn.Module) -> None:
        self.module = module
        self.twin = twin
        self.training = module.training
        # Submodules whose hooks the twin would skip (the module's own run around the twin).
        self.hookables = list(module.modules())[1:]
        self.keys: list[tuple[nn.Module, str]] = []
        self.params: list[Tensor] = []
        for owner in module.modules():
            for name, p in owner._parameters.items():
                if p is not None:
                    self.keys.append((owner, name))
                    self.params.append(p)
        self.versions = self._versions()
        self.ptrs = [p.data_ptr() for p in self.params]

    def _versions(self) -> list[int]:
        # Inference tensors have no version counter (then only identity and address are checked).
        return [-1 if p.is_inference() else p._version for p in self.params]

    def usable(self) -> bool:
        """Whether the twin computes this call.

        It does in the training mode of entry, without autograd of the parameters, compilers,
        tracers or ``torch.func`` transforms, and with no hook that the twin would skip.
        """
        if self.module.training != self.training or transform_active():
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.params):
            return False
        from torch.nn.modules import module as torch_module

        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return False
        return not any([m._forward_hooks or m._forward_pre_hooks for m in self.hookables])

    def check(self) -> None:
        """Raise ``RuntimeError`` if a parameter was replaced or edited since entry."""
        # List comprehensions compared at once: a few microseconds for a whole model.
        if (
            self._versions() == self.versions
            and [p.data_ptr() for p in self.params] == self.ptrs
            and all(
                [
                    o._parameters.get(n) is p
                    for (o, n), p in zip(self.keys, self.params, strict=True)
                ]
            )
        ):
            return
        for (owner, name), p, version, ptr in zip(
            self.keys, self.params, self.versions, self.ptrs, strict=True
        ):
            if (
                owner._parameters.get(name) is not p
                or (not p.is_inference() and p._version != version)
                or p.data_ptr() != ptr
            ):
                raise RuntimeError(
                    f"{type(self.module).__name__}: parameter {name!r} of "
                    f"{type(owner).__name__} changed inside elayers.frozen(); the weights were "
                    "built on entry and would be stale. Edit parameters outside the scope (or "
                    "re-enter it after the edit)."
                )


# Modules inside an active frozen() scope, by id: a forward looks itself up here. Kept outside
# the modules so that copies and pickles of a module made inside a scope are never frozen.
_FROZEN: dict[int, FrozenTwin] = {}
_FROZEN_LOCK = threading.Lock()


def frozen_registry() -> tuple[dict[int, FrozenTwin], threading.Lock]:
    """The registry of frozen modules and its lock (for :func:`elayers.frozen`)."""
    return _FROZEN, _FROZEN_LOCK


def frozen_twin(module: nn.Module) -> nn.Module | None:
    """The plain twin that ``module``'s forward should run instead of itself, or ``None``.

    Not ``None`` only inside an :func:`elayers.frozen` scope that built one for ``module`` and
    when the twin computes this call (see :meth:`FrozenTwin.usable`); raises ``RuntimeError`` if
    the module's parameters changed since entry. Cheap outside scopes (one dict check).
    """
    if not _FROZEN or torch.compiler.is_compiling():
        return None
    entry = _FROZEN.get(id(module))
    if entry is None or not entry.usable():
        return None
    entry.check()
    return entry.twin


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
    * :func:`elayers.frozen` exports once on entry and runs that plain twin in every forward
      inside the scope (parameters must not change there).

    Subclasses override :meth:`export`, and their forwards start (after validating the input) by
    running the frozen twin if :func:`frozen_twin` gives one.

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
