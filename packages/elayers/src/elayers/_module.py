"""The base class of equivariant modules."""

from __future__ import annotations

import copy
import ctypes
import hashlib
import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ereps import ExactBuffersModule, InitScheme, Representation

__all__ = ["eModule", "rep_signature", "transform_active"]

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
            # The copy starts without a cache (its parameters are new tensors anyway).
            new.__dict__[key] = {} if key == "_derived" else copy.deepcopy(value, memo)
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
