"""The base class of equivariant modules."""

from __future__ import annotations

import copy
import operator
import threading
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from elayers._records import RECORD_FORMAT, guard_loading, record_problem, rep_record
from ereps import ExactBuffersModule, InitScheme, Representation

__all__ = [
    "FrozenTwin",
    "eModule",
    "frozen_registry",
    "frozen_twin",
    "transform_active",
    "watch_frozen",
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

    Built once on entry (the module's :meth:`eModule.export`). Every use first checks, cheaply,
    that the module's subtree was not edited since entry, and raises instead of computing with old
    weights when it was. That is a guard against misuse, not a cache policy (parameters must not
    change inside the scope at all):

    * polled at every use: the version counters of all parameters (in-place edits: optimizer
      steps, EMA updates, ``load_state_dict``) and the address of the first parameter (``.to()``,
      ``.double()``, ... move every parameter);
    * seen when they happen (:func:`elayers.frozen` registers torch's global hooks for the scope
      and calls :meth:`mark`): a parameter or submodule assigned (``module.weight = ...``,
      ``load_state_dict(assign=True)``, ``layers[0] = ...``) and a step of an optimizer holding
      the parameters (fused steps bump no version counter);
    * forward hooks: registering any hook anywhere creates a ``RemovableHandle``, whose class
      counter is read at every use; only when it moved are the submodules' hook dicts read again.

    Every use runs right after a forward has evicted the tree's objects from the caches, so each
    object read costs a cache miss (about 1 µs a parameter on a loaded machine): the polls are
    kept to what an optimizer or EMA step can change. Not seen: edits through ``.data`` (no
    version counter), a parameter set to ``None`` (torch calls no hook for it), and a parameter
    or submodule deleted (``del module.weight``).
    """

    __slots__ = (
        "changed",
        "first_ptr",
        "handles_seen",
        "hook_dicts",
        "hooked",
        "module",
        "module_ids",
        "names",
        "params",
        "submodules",
        "training",
        "twin",
        "versioned",
        "versions",
    )

    def __init__(self, module: nn.Module, twin: nn.Module) -> None:
        self.module = module
        self.twin = twin
        self.training = module.training
        # Kept so that their ids, which the registration hooks look up, stay theirs.
        self.submodules = list(module.modules())
        self.module_ids = frozenset(map(id, self.submodules))
        # The hook dicts of the submodules whose hooks the twin would skip (the module's own run
        # around the twin). The dict objects themselves are kept: registering a hook adds to them.
        self.hook_dicts: list[Mapping[int, Any]] = []
        for m in self.submodules[1:]:
            self.hook_dicts += [m._forward_hooks, m._forward_pre_hooks]
        self.handles_seen = _handles_made()
        self.hooked = any(self.hook_dicts)
        named = [
            (f"{type(m).__name__}", name, p)
            for m in self.submodules
            for name, p in m._parameters.items()
            if p is not None
        ]
        self.names = [(owner, name) for owner, name, _ in named]
        self.params: list[Tensor] = [p for _, _, p in named]
        # Inference tensors have no version counter.
        self.versioned = [p for p in self.params if not p.is_inference()]
        self.versions = list(map(_VERSION, self.versioned))
        self.first_ptr = self.params[0].data_ptr() if self.params else 0
        # Set by mark(): what an event of the scope's hooks saw, for the error message.
        self.changed: str | None = None

    def mark(self, what: str) -> None:
        """Record an edit seen by one of the scope's hooks; the next use raises with ``what``."""
        if self.changed is None:
            self.changed = what

    def usable(self) -> bool:
        """Whether the twin computes this call.

        It does in the training mode of entry, without autograd of the parameters, compilers,
        tracers or ``torch.func`` transforms, and with no hook that the twin would skip.
        """
        if self.module.training != self.training or transform_active():
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.params):
            return False
        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return False
        made = _handles_made()
        if made < 0 or made != self.handles_seen:
            # A hook was registered somewhere since the last look: read the dicts again.
            self.handles_seen = made
            self.hooked = any(self.hook_dicts)
        return not self.hooked

    def check(self) -> None:
        """Raise ``RuntimeError`` if the subtree was edited since entry (see the class)."""
        # Two C-level passes: the version counters are the cost (one cache miss or more each).
        if (
            self.changed is None
            and list(map(_VERSION, self.versioned)) == self.versions
            and (not self.params or self.params[0].data_ptr() == self.first_ptr)
        ):
            return
        what = self.changed if self.changed is not None else self._polled_change()
        raise RuntimeError(
            f"{type(self.module).__name__}: {what} inside elayers.frozen(); the weights were "
            "built on entry and would be stale. Change the model outside the scope (or "
            "re-enter it after the change)."
        )

    def _polled_change(self) -> str:
        """What the polls of :meth:`check` saw, for its error message."""
        entry_version = {id(p): v for p, v in zip(self.versioned, self.versions, strict=True)}
        for (owner, name), p in zip(self.names, self.params, strict=True):
            if id(p) in entry_version and p._version != entry_version[id(p)]:
                return f"parameter {name!r} of {owner} changed"
        if self.params and self.params[0].data_ptr() != self.first_ptr:
            return "its parameters (moved or converted: .to(), .double(), ...) changed"
        raise RuntimeError("FrozenTwin._polled_change called without a change")


def watch_frozen(entries: Mapping[int, FrozenTwin]) -> list[RemovableHandle]:
    """Register torch's global hooks that :class:`FrozenTwin` relies on for ``entries``.

    Parameter and submodule assignments (``module.weight = ...``, ``load_state_dict(assign=True)``,
    ``layers[0] = ...``) and optimizer steps are seen when they happen, instead of being polled at
    every forward. The caller removes the handles when its scope ends.
    """
    twins = list(entries.values())
    if not twins:
        return []

    def on_parameter(module: nn.Module, name: str, param: object) -> None:
        for twin in twins:
            if id(module) in twin.module_ids:
                twin.mark(f"parameter {name!r} of {type(module).__name__} changed")

    def on_module(module: nn.Module, name: str, submodule: object) -> None:
        for twin in twins:
            if id(module) in twin.module_ids:
                twin.mark(
                    f"a submodule was replaced, added or removed ({type(module).__name__}, "
                    f"{name!r})"
                )

    def on_step(optimizer: torch.optim.Optimizer, *_: object) -> None:
        # Fused optimizer steps (fused=True) bump no version counter: seen here instead.
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for twin in twins:
            if any(id(p) in stepped for p in twin.params):
                twin.mark("an optimizer stepped its parameters")

    return [
        register_module_parameter_registration_hook(on_parameter),
        register_module_module_registration_hook(on_module),
        register_optimizer_step_pre_hook(on_step),
    ]


_VERSION = operator.attrgetter("_version")


def _handles_made() -> int:
    """How many ``RemovableHandle``s (one per hook registered anywhere) torch has made so far.

    ``-1`` (always different from a count) if this torch has no such counter: the hook dicts are
    then read at every use.
    """
    made = getattr(RemovableHandle, "next_id", None)
    return made if isinstance(made, int) else -1


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


class eModule(ExactBuffersModule):
    """Base class of modules that commute with a finite group's action.

    A subclass maps features transforming by ``in_rep`` on their last axis to features transforming
    by ``out_rep``: ``f(ρ_in(g) x) = ρ_out(g) f(x)`` for every ``g`` in the group.

    The state dict records which representations the parameters were built for (group, irreps
    and change of basis, compared with a tolerance; see ``elayers._records``), and loading a
    state dict built for other representations raises ``ValueError`` instead of silently mixing
    bases. The check covers the whole state dict and runs before anything is copied, on
    whichever module receives ``load_state_dict`` (a plain container of eModules included): a
    refused load changes nothing.

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
        # Records of the (immutable) representations, computed once: saving is a copy.
        in_record = rep_record(in_rep)
        out_record = in_record if out_rep is in_rep else rep_record(out_rep)
        self._rep_records: dict[str, dict[str, Any]] = {"in_rep": in_record, "out_rep": out_record}
        guard_loading(self)

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

    def get_extra_state(self) -> dict[str, Any]:
        """Record the representations in the state dict (plain containers: str, int, float)."""
        return {
            "format": RECORD_FORMAT,
            "in_rep": copy.deepcopy(self._rep_records["in_rep"]),
            "out_rep": copy.deepcopy(self._rep_records["out_rep"]),
        }

    def _extra_state_problems(self, state: object) -> list[str]:
        """Why a saved record does not fit this module (empty if it does)."""
        if not isinstance(state, Mapping):
            return [f"an unreadable representation record of type {type(state).__name__}"]
        fmt = state.get("format", 1)
        if not isinstance(fmt, int) or fmt > RECORD_FORMAT:
            return [f"a representation record of unknown format {fmt!r} (a newer version?)"]
        problems = []
        for key, rep in (("in_rep", self.in_rep), ("out_rep", self.out_rep)):
            if key not in state:
                problems.append(f"a representation record without {key}")
                continue
            problem = record_problem(state[key], self._rep_records[key], rep)
            if problem is not None:
                problems.append(f"{key} {problem}")
        return problems

    def set_extra_state(self, state: Any) -> None:
        """Refuse a state dict built for other representations."""
        problems = self._extra_state_problems(state)
        if problems:
            raise ValueError(
                f"Cannot load a state dict into {type(self).__name__}: it was built for "
                + "; ".join(problems)
                + "."
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
        """Refuse what this module cannot compute with, before any work.

        ``x`` must be a floating-point tensor of shape ``(..., in_rep.size)`` on the module's
        device and, outside autocast, of its parameters' dtype. A few attribute reads: cheap on
        the batch-1 path, no device synchronization, nothing that breaks a compiled graph.

        Raises:
            TypeError: If ``x`` is not a tensor, not floating-point or of another dtype.
            ValueError: If its last axis or its device is wrong.
        """
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{type(self).__name__} expects {name} to be a torch.Tensor of shape (..., "
                f"{self.in_rep.size}); got {type(x).__name__}."
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects {name} to be a floating-point tensor; got dtype "
                f"{x.dtype}. Cast it, e.g. {name}.float()."
            )
        if x.ndim == 0 or x.shape[-1] != self.in_rep.size:
            raise ValueError(
                f"{type(self).__name__} expects {name} of shape (..., {self.in_rep.size}) for "
                f"in_rep {self.in_rep.name!r}; got {tuple(x.shape)}."
            )
        self._check_placement(x, name)

    def _check_placement(self, x: Tensor, name: str) -> None:
        """Refuse a tensor on another device or (outside autocast) of another dtype."""
        ref = _first_parameter(self)
        constant = ref is None
        if ref is None:
            ref = _first_constant(self)
            if ref is None:
                return
        # is_cpu is a plain flag; building two torch.device objects costs more than the rest.
        if not (x.is_cpu and ref.is_cpu) and x.device != ref.device:
            raise ValueError(_device_message(type(self).__name__, name, x, ref))
        # Constants keep their own dtype (float64 bases): only parameters fix the data's dtype.
        # Under autocast the data has the autocast dtype whatever the parameters' dtype.
        if not constant and x.dtype != ref.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"{type(self).__name__} expects {name} of the dtype of its parameters "
                f"({ref.dtype}); got dtype {x.dtype}. Cast the input with "
                f"{name}.to({ref.dtype}) or the module with module.to({x.dtype})."
            )


def _device_message(owner: str, name: str, x: Tensor, ref: Tensor) -> str:
    return (
        f"{owner} expects {name} on the device of its parameters ({ref.device}); got "
        f"{name} on {x.device}. Move the input with {name}.to({str(ref.device)!r}) or the "
        f"module with module.to({str(x.device)!r})."
    )


def _first_parameter(module: nn.Module) -> Tensor | None:
    """The first floating parameter of ``module`` or its submodules (depth first), or ``None``.

    Walks the module dicts directly: ``module.parameters()`` builds generators of generators,
    too slow for every forward.
    """
    for p in module._parameters.values():
        if p is not None and p.is_floating_point():
            return p
    for child in module._modules.values():
        if child is not None:
            found = _first_parameter(child)
            if found is not None:
                return found
    return None


def _first_constant(module: nn.Module) -> Tensor | None:
    names: list[str] = module.__dict__.get("_constant_names", [])
    return module.__dict__[names[0]] if names else None


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
