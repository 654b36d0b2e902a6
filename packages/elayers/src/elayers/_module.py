"""The base class of equivariant modules."""

from __future__ import annotations

import copy
import ctypes
import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from elayers._records import RECORD_FORMAT, guard_loading, record_problem, rep_record
from ereps import ExactBuffersModule, InitScheme, Representation

__all__ = ["eModule", "transform_active"]

_M = TypeVar("_M", bound="eModule")
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


def _cacheable(sources: tuple[Tensor, ...]) -> bool:
    # Plain CPU tensors that autograd does not need to track. On accelerators synthesis is a few
    # asynchronous kernels, while the value check below would synchronize with the device.
    grad = torch.is_grad_enabled()
    for s in sources:
        if type(s) is not nn.Parameter and type(s) is not Tensor:
            return False
        if not s.is_cpu or (grad and s.requires_grad):
            return False
    return True


def _load_memcmp() -> Callable[[int, int, int], int] | None:
    """The C library's ``memcmp``, or ``None`` where ctypes cannot find it."""
    try:
        libc = ctypes.CDLL(None) if sys.platform != "win32" else ctypes.cdll.msvcrt
        fn = libc.memcmp
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


# Comparing bytes in place is several times cheaper than torch.equal (which allocates and does
# not vectorize): it keeps the value check of the eval cache a small fraction of a forward.
_MEMCMP = _load_memcmp()


def _same_values(snapshot: Tensor, source: Tensor) -> bool:
    # torch.equal is False for other shapes, but it would compare values across dtypes.
    if snapshot.dtype is not source.dtype or snapshot.shape != source.shape:
        return False
    if _MEMCMP is not None and source.is_contiguous() and snapshot.is_contiguous():
        # Bit patterns (both on CPU, see _cacheable): equal bits give an equal derived tensor.
        nbytes = source.numel() * source.element_size()
        return _MEMCMP(snapshot.data_ptr(), source.data_ptr(), nbytes) == 0
    return torch.equal(snapshot, source)


def _matches(snapshots: tuple[Tensor, ...], sources: tuple[Tensor, ...]) -> bool:
    return len(snapshots) == len(sources) and all(
        _same_values(snap, src) for snap, src in zip(snapshots, sources, strict=True)
    )


def _has_inference_tensor(value: Tensor | tuple[Tensor | None, ...]) -> bool:
    if isinstance(value, Tensor):
        return value.is_inference()
    return any(v is not None and v.is_inference() for v in value)


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

    Dense tensors derived from the parameters (an :class:`eLinear`'s matrix, a norm's per-feature
    scale) are cached in eval mode, on CPU, when autograd does not track the parameters (under
    ``torch.no_grad()``/``torch.inference_mode()``, or for frozen parameters). A cached tensor is
    reused only while the parameters it was built from hold exactly the bits they had when it was
    built (a byte-wise comparison with a snapshot, a small fraction of the cost of the synthesis),
    so no way of editing parameters (optimizer steps, ``load_state_dict``, in-place EMA
    updates, edits through ``.data``, ``.to()``) can make it serve stale weights. Nothing is cached
    in training mode, while compiling, tracing or exporting, under ``torch.func`` transforms, or on
    accelerators. ``train()`` drops the cache; so do ``.to()`` and the like.

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
        self._derived: dict[Hashable, tuple[tuple[Tensor, ...], Any]] = {}

    def _cached(
        self, key: Hashable, sources: tuple[Tensor, ...], build: Callable[[], _Derived]
    ) -> _Derived:
        """``build()``, or its cached value if ``sources`` hold the values it was built from.

        Only for internal consumers that never modify the result in place (it may be shared).
        """
        if self.training or transform_active() or not _cacheable(sources):
            return build()
        entry = self._derived.get(key)
        if entry is not None and _matches(entry[0], sources):
            value: _Derived = entry[1]
            # Inference tensors must not reach autograd outside inference mode: rebuild.
            if not _has_inference_tensor(value) or torch.is_inference_mode_enabled():
                return value
        value = build()
        snapshots = tuple(s.detach().clone(memory_format=torch.contiguous_format) for s in sources)
        self._derived[key] = (snapshots, value)
        return value

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode (see :meth:`torch.nn.Module.train`); entering it drops the cache."""
        if mode:
            self._derived.clear()
        return super().train(mode)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        self._derived.clear()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled modules (torch.save(model)) carry parameters, not caches.
        state: dict[str, Any] = super().__getstate__()  # type: ignore[no-untyped-call]
        state = dict(state)
        state["_derived"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_derived", {})
        super().__setstate__(state)  # type: ignore[no-untyped-call]

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
            # The copy starts without a cache (its parameters are new tensors anyway).
            new.__dict__[key] = {} if key == "_derived" else copy.deepcopy(value, memo)
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
