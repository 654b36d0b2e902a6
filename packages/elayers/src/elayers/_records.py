"""Representation records in state dicts, and loading that refuses before it copies anything.

Every :class:`~elayers.eModule` records the representations its parameters were built for in
the state dict (its ``_extra_state``). A record is a plain container (loadable with
``torch.load(..., weights_only=True)``)::

    ({"format": 2, "in_rep": R, "out_rep": R},)
    R = {
        "group": str,
        "name": str,
        "size": int,
        "irreps": [[...], ...],
        "basis_sketch": [[float] * 8] * 8,
    }

Two representations are the same when their group, size and irreps are equal and their changes
of basis ``Q`` agree: the name is informative only (a renamed representation loads). ``Q`` itself
has ``size²`` numbers (590k for a 768-wide embedding, in every module of a model), so the record
holds the sketch ``Lᵀ Q R`` with fixed random probes ``L, R`` of shape ``(size, 8)``, columns of
norm about one. Equal bases give sketches equal to rounding, and they are compared with the
absolute tolerance ``1e-6``: bases that agree to about ``1e-9`` entry-wise load, any other basis
(a permutation, another orthogonal change of basis) moves the sketch by ``~1/size`` or more and
is refused.

Loading is atomic: :func:`guard_loading` gives a module a load-state-dict pre-hook that, on the
module that receives ``load_state_dict`` (whatever its class, e.g. a user's
``torch.nn.Sequential`` holding equivariant modules), checks every record and every tensor shape
of the whole state dict before torch copies the first tensor. Every eModule is guarded at
construction, and a registration hook guards every module that gets a guarded child, so the root
of any tree that holds an eModule is guarded.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ereps import Representation

__all__ = [
    "RECORD_FORMAT",
    "guard_loading",
    "record_problem",
    "rep_record",
]

RECORD_FORMAT = 2
_SKETCH_SIZE = 8
_SKETCH_ATOL = 1e-6
_GUARD_FLAG = "_elayers_load_guard"
_MAX_LISTED = 6


def _plain(value: Any) -> Any:
    """An irrep id (nested tuples of ints, bools, strings) as nested lists of plain values."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def _canonical(value: Any) -> Any:
    """Nested lists as nested tuples, for comparing irrep lists read back from a state dict."""
    if isinstance(value, (tuple, list)):
        return tuple(_canonical(v) for v in value)
    return value


def _probes(size: int) -> tuple[np.ndarray[Any, np.dtype[np.float64]], ...]:
    # Fixed by the size alone, so that every process and version draws the same probes.
    rng = np.random.default_rng([20261201, size])
    scale = 1.0 / np.sqrt(size)
    return (
        rng.standard_normal((size, _SKETCH_SIZE)) * scale,
        rng.standard_normal((size, _SKETCH_SIZE)) * scale,
    )


def rep_record(rep: Representation) -> dict[str, Any]:
    """The record of ``rep``: group, name, size, irreps and a sketch of the change of basis."""
    q = np.asarray(rep.change_of_basis, dtype=np.float64)
    left, right = _probes(int(rep.size))
    sketch = left.T @ (q @ right)
    return {
        "group": str(rep.group.name),
        "name": str(rep.name),
        "size": int(rep.size),
        "irreps": [_plain(i) for i in rep.irreps],
        "basis_sketch": sketch.tolist(),
    }


def _describe(record: Mapping[str, Any]) -> str:
    irreps = _canonical(record.get("irreps"))
    shown = str(irreps)
    if isinstance(irreps, tuple) and len(irreps) > 6:
        shown = ", ".join(str(i) for i in irreps[:6]) + f", ... ({len(irreps)} irreps)"
    name, group, size = record.get("name"), record.get("group"), record.get("size")
    return f"{name!r} of {group} (size {size}, irreps {shown})"


def _legacy_signature(rep: Representation) -> list[str]:
    """The fields of the records of format 1: a string ``group|name|size|irreps|Q-hash``."""
    q = np.round(np.asarray(rep.change_of_basis, dtype=np.float64), 8) + 0.0
    digest = hashlib.sha1(q.tobytes()).hexdigest()[:12]
    irreps = ",".join(str(tuple(i)) for i in rep.irreps)
    return [rep.group.name, f"size={rep.size}", f"irreps=[{irreps}]", f"Q={digest}"]


def _legacy_problem(saved: str, rep: Representation) -> str | None:
    parts = saved.split("|")
    if len(parts) < 5:
        return f"an unreadable record {saved!r}"
    # The name (parts[1:-3]) is not compared: a renamed representation is the same one.
    group, size, irreps, digest = [parts[0], *parts[-3:]]
    mine = _legacy_signature(rep)
    if [group, size, irreps] != mine[:3]:
        return (
            f"a representation of {group} ({size}, {irreps}) (a record of format 1), but this "
            f"module has {rep.name!r} of {mine[0]} ({mine[1]}, {mine[2]})"
        )
    if digest != mine[3]:
        return (
            f"a representation with the same group and irreps as {rep.name!r} whose change of "
            f"basis has another hash ({digest[2:]}, this module's {mine[3][2:]}); records of "
            "format 1 hold only a hash of Q rounded to 8 decimals, which cannot be compared with a "
            "tolerance. Re-save the state dict with this version, or, if you know the bases are "
            "the same, delete its '_extra_state' entries to load without the check"
        )
    return None


def record_problem(saved: object, mine: Mapping[str, Any], rep: Representation) -> str | None:
    """Why the saved record of one representation does not match ``mine``, or ``None``."""
    if isinstance(saved, str):
        return _legacy_problem(saved, rep)
    if not isinstance(saved, Mapping):
        return f"an unreadable record of type {type(saved).__name__}"
    if saved.get("group") != mine["group"] or saved.get("size") != mine["size"]:
        return f"{_describe(saved)}, but this module has {_describe(mine)}"
    if _canonical(saved.get("irreps")) != _canonical(mine["irreps"]):
        return f"{_describe(saved)}, but this module has {_describe(mine)}"
    sketch = saved.get("basis_sketch")
    try:
        theirs = np.asarray(sketch, dtype=np.float64)
    except (TypeError, ValueError):
        return f"an unreadable change-of-basis sketch in the record of {saved.get('name')!r}"
    ours = np.asarray(mine["basis_sketch"], dtype=np.float64)
    if theirs.shape != ours.shape:
        return f"an unreadable change-of-basis sketch in the record of {saved.get('name')!r}"
    err = float(np.abs(theirs - ours).max())
    if not err <= _SKETCH_ATOL:
        return (
            f"{_describe(saved)} in another basis than this module's {mine['name']!r} (same "
            f"group and irreps, other change of basis: sketches differ by {err:.1e})"
        )
    return None


def _shape_problems(
    module: nn.Module, state_dict: Mapping[str, Any], prefix: str, out: list[str]
) -> None:
    """Torch's size-mismatch messages for this module's own parameters and persistent buffers."""
    local: list[tuple[str, torch.Tensor | None]] = list(module._parameters.items())
    local += [
        (n, b) for n, b in module._buffers.items() if n not in module._non_persistent_buffers_set
    ]
    for name, tensor in local:
        key = prefix + name
        if tensor is None or key not in state_dict:
            continue
        given = state_dict[key]
        if not isinstance(given, torch.Tensor):
            continue  # torch reports it while copying, before copying anything else of it
        if isinstance(tensor, nn.parameter.UninitializedParameter):
            continue
        # torch loads a (1,) tensor into a 0-d parameter (an old format): not a mismatch.
        if tensor.dim() == 0 and given.dim() == 1 and given.numel() == 1:
            continue
        if given.shape != tensor.shape:
            out.append(
                f"size mismatch for {key}: copying a param with shape {given.shape} from "
                f"checkpoint, the shape in current model is {tensor.shape}."
            )


def check_state_dict(root: nn.Module, state_dict: Mapping[str, Any], prefix: str) -> None:
    """Raise unless every record and tensor shape in ``state_dict`` fits ``root``'s subtree.

    Raises:
        ValueError: If a representation record does not match (listing every module concerned).
        RuntimeError: If a tensor has another shape (torch's own message and exception type).
    """
    records: list[tuple[str, str]] = []
    shapes: list[str] = []
    for name, module in root.named_modules(remove_duplicate=False):
        module_prefix = f"{prefix}{name}." if name else prefix
        problems = getattr(module, "_extra_state_problems", None)
        key = module_prefix + "_extra_state"
        if callable(problems) and key in state_dict:
            for problem in problems(state_dict[key]):
                records.append((name or type(module).__name__, problem))
        _shape_problems(module, state_dict, module_prefix, shapes)
    if records:
        where, problem = records[0]
        others = [f"{w}: {p.split(' ', 1)[0]}" for w, p in records[1:]]
        listed = "; ".join(others[:_MAX_LISTED])
        if len(others) > _MAX_LISTED:
            listed += f"; ... ({len(others) - _MAX_LISTED} more)"
        raise ValueError(
            f"Cannot load a state dict into {type(root).__name__}: it was built for other "
            f"representations, so nothing was loaded. {where}: the state dict has {problem}."
            + (f" Refused as well: {listed}." if others else "")
        )
    if shapes:
        details = "\n\t".join(shapes)
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(root).__name__}:\n\t{details}\n"
            "(Checked before loading: nothing was copied.)"
        )


class _Session(threading.local):
    """The load in progress on this thread and the prefixes of the subtrees checked for it."""

    def __init__(self) -> None:
        self.marker: list[str] | None = None
        self.checked: list[str] = []


_SESSION = _Session()


def _check_before_load(
    module: nn.Module,
    state_dict: Mapping[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    # torch calls pre-hooks module by module, top-down, with one missing_keys list per
    # load_state_dict call: the first guarded module of a call checks its whole subtree (the
    # root, when the root is guarded), the guarded modules below it see that it was done.
    session = _SESSION
    if session.marker is not missing_keys:
        session.marker = missing_keys
        session.checked = []
    if any(prefix.startswith(done) for done in session.checked):
        return
    check_state_dict(module, state_dict, prefix)
    session.checked.append(prefix)


def guard_loading(module: nn.Module) -> None:
    """Make ``module.load_state_dict`` check the whole state dict before copying (idempotent)."""
    if module.__dict__.get(_GUARD_FLAG):
        return
    module.register_load_state_dict_pre_hook(_check_before_load)  # type: ignore[no-untyped-call]
    object.__setattr__(module, _GUARD_FLAG, True)


def drop_guards(module: nn.Module) -> None:
    """Remove the loading guard from every module of ``module``'s tree (exported plain trees).

    An exported tree holds no equivariant module, so it has no record to check, and it must not
    refer to elayers (it is saved and loaded where this package is not installed).
    """
    for sub in module.modules():
        if sub.__dict__.pop(_GUARD_FLAG, None) is None:
            continue
        hooks = sub._load_state_dict_pre_hooks
        for key in [k for k, hook in hooks.items() if _is_guard_hook(hook)]:
            del hooks[key]


def _is_guard_hook(hook: object) -> bool:
    # torch stores the registered callable, or a wrapper holding it as ``hook``.
    return hook is _check_before_load or getattr(hook, "hook", None) is _check_before_load


def _guard_parents(parent: nn.Module, name: str, child: nn.Module | None) -> None:
    # A module that receives a guarded child (an eModule, or a container holding one) is guarded
    # too, so the root of every tree that holds an eModule checks before loading.
    if child is not None and child.__dict__.get(_GUARD_FLAG):
        guard_loading(parent)


nn.modules.module.register_module_module_registration_hook(_guard_parents)
