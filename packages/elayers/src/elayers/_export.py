"""Explicit inference: export to plain PyTorch, and a frozen scope for in-place evaluation."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal, TypeVar, get_args

import torch
from torch import nn

from elayers._module import FrozenTwin, eModule, frozen_registry, watch_frozen
from elayers._records import drop_guards

__all__ = ["EXPORT_FORMS", "ExportForm", "Exportable", "export", "frozen"]

_T = TypeVar("_T", bound=nn.Module)

#: What :func:`export` produces: ``"dense"`` plain ``torch.nn`` layers with dense weights, or
#: ``"spectral"`` (modules of the spectral execution keep computing in the spectral basis).
ExportForm = Literal["dense", "spectral"]
EXPORT_FORMS: tuple[str, ...] = get_args(ExportForm)


class Exportable:
    """Mixin of modules that :func:`export` replaces by the result of their own ``export()``.

    Every :class:`eModule` is one; so are the regressors of ``eregressors``. A subclass returns a
    new module built from ``torch.nn`` classes (or the torch-only plain modules of ``elayers``),
    holding detached copies of its current weights and computing the same function.
    """

    def export(self) -> nn.Module:
        """A plain-PyTorch module computing the same function with the current weights."""
        raise NotImplementedError(f"{type(self).__name__} does not implement export().")


def _is_exportable(module: nn.Module) -> bool:
    return isinstance(module, (eModule, Exportable))


def _topmost_exportables(module: nn.Module, out: dict[int, nn.Module]) -> None:
    for child in module.children():
        if _is_exportable(child):
            out.setdefault(id(child), child)
        else:
            _topmost_exportables(child, out)


def export(module: nn.Module, *, form: ExportForm = "dense") -> nn.Module:
    """Return a new module computing ``module``'s function in plain PyTorch with its weights.

    Walks the tree: every :class:`eModule` (and every :class:`Exportable`, such as the regressors
    of ``eregressors``) is replaced by its own ``export()``, the topmost one of each branch; every
    other module (a user's own container, ``torch.nn`` layers) is deep-copied with its parameters,
    buffers, hooks and attributes. Modules referenced more than once stay shared in the copy. The
    argument is left unchanged, and the result shares no tensor with it.

    The result contains no equivariant module and no escnn or ``ereps`` object: equivariant
    layers become ``torch.nn.Linear``, ``torch.nn.LayerNorm``/``torch.nn.RMSNorm``,
    ``torch.nn.MultiheadAttention`` and ``torch.nn.TransformerEncoderLayer``/``DecoderLayer``
    (thin subclasses that also accept ``is_causal=True`` without a mask, as the equivariant
    layers do), so it runs torch's fused inference kernels, ``torch.export`` and
    ``torch.onnx.export`` without escnn installed. It agrees with ``module`` to rounding (about
    1e-15 relative in float64) in eval mode; in training mode dropout draws differ.

    ``form="spectral"`` replaces each module that has an ``export_spectral()`` method (the spectral
    execution's modules, :class:`elayers.eSpectralLinear` and the other ``eSpectral*`` classes,
    and ``eregressors.eCondTransformerRegressor``) by that method's result instead: torch-only
    modules that keep computing in the spectral basis (block-diagonal batched products and
    constant ``|G| × |G|`` changes of basis around pointwise activations, fewer multiply-adds
    than the dense form; see ``elayers._plain_spectral``), with the same guarantees (no escnn or
    equivariant object, ``torch.export``, ONNX). Every other module exports as with ``"dense"``.

    Args:
        module: Any ``torch.nn.Module`` tree.
        form: Keyword-only. ``"dense"`` (default) or ``"spectral"``.

    Returns:
        The exported module (each part keeps the training flag of its source).

    Raises:
        TypeError: If ``module`` is not a ``torch.nn.Module``.
        ValueError: If ``form`` is not ``"dense"`` or ``"spectral"``.

    Examples:
        >>> import torch, escnn.group as eg
        >>> from elayers import eLinear
        >>> G = eg.cyclic_group(4)
        >>> model = torch.nn.Sequential(eLinear(G.regular_representation, G.regular_representation))
        >>> plain = export(model)
        >>> type(plain[0]).__name__
        'Linear'
    """
    if not isinstance(form, str) or form not in EXPORT_FORMS:
        raise ValueError(f"export expects form to be one of {list(EXPORT_FORMS)}; got {form!r}.")
    if not isinstance(module, nn.Module):
        raise TypeError(f"export expects a torch.nn.Module; got {type(module).__name__}.")
    with torch.no_grad():
        if _is_exportable(module):
            return _checked_export(module, form)
        found: dict[int, nn.Module] = {}
        _topmost_exportables(module, found)
        # Pre-seeding deepcopy's memo substitutes every exported part wherever the tree refers to
        # it, and keeps the copy from descending into (and deep-copying) the equivariant parts.
        memo: dict[int, Any] = {key: _checked_export(part, form) for key, part in found.items()}
        plain: nn.Module = copy.deepcopy(module, memo)
    # The copied containers inherited the loading guard of the equivariant tree (a hook into
    # elayers): the plain tree has nothing to guard, and must load where elayers is absent.
    drop_guards(plain)
    return plain


def _checked_export(module: nn.Module, form: str = "dense") -> nn.Module:
    method = "export"
    if form == "spectral" and callable(getattr(module, "export_spectral", None)):
        method = "export_spectral"
    out = getattr(module, method)()
    if not isinstance(out, nn.Module):
        raise TypeError(
            f"{type(module).__name__}.{method}() must return a torch.nn.Module; got "
            f"{type(out).__name__}."
        )
    return out


@contextlib.contextmanager
def frozen(module: _T) -> Iterator[_T]:
    """Evaluate ``module`` in place with its weights turned into plain PyTorch once, on entry.

    On entry every topmost equivariant module of the tree (each :class:`eModule` or regressor that
    :func:`export` would replace) is exported once; inside the scope its forward validates the
    input as usual and then runs that plain twin (``torch.nn`` layers with the dense weights,
    torch's fused kernels) instead of synthesizing its weights; on exit the twins are dropped. Use
    it for repeated evaluation without exporting, e.g. sampling with an EMA model during training
    (10-100 denoising steps with the same weights)::

        with torch.no_grad(), elayers.frozen(ema_model):
            for k in steps:
                x = x + dt * ema_model(x, k, z)

    As with :func:`torch.nn.utils.parametrize.cached`, **parameters must not change inside the
    scope**. An in-place edit (an optimizer or EMA step, ``load_state_dict``), a step of any
    optimizer holding them (fused ones included, which bump no version counter), ``.to()``, and
    a parameter or submodule assigned or added raise ``RuntimeError`` at the next forward instead
    of using old weights; an edit through ``.data``, a parameter set to ``None`` and a parameter
    or submodule deleted cannot be seen (each forward polls only what an optimizer or EMA step
    can change: at batch 1 every read of a parameter costs). After the scope forwards
    synthesize from the current parameters again.

    The twin runs only for calls it computes exactly as the module would: in the training mode of
    entry (eval, normally), where autograd does not track the parameters (under
    ``torch.no_grad()``/``torch.inference_mode()``, or for parameters with ``requires_grad=False``),
    with no forward hook on a submodule, and not while compiling, tracing or under ``torch.func``
    transforms. Every other call runs the module itself, so gradients, hooks and graphs stay
    correct. Results agree with the module's to rounding (the plain layers sum in another order),
    and inputs beyond about 1e15 lose the equivariant norms' overflow guard. Submodules called on
    their own inside the scope run as usual. The twins hold a copy of the weights while the scope
    lasts. Copies and pickles of the module made inside the scope are not frozen. The scope applies
    to the module objects, so other threads that call them meanwhile use the twins too. Nested
    scopes are allowed; the outermost one builds and drops.

    Args:
        module: Any ``torch.nn.Module`` tree containing equivariant modules.

    Yields:
        ``module`` itself.

    Raises:
        TypeError: If ``module`` is not a ``torch.nn.Module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"frozen expects a torch.nn.Module; got {type(module).__name__}.")
    registry, lock = frozen_registry()
    found: dict[int, nn.Module] = {}
    if _is_exportable(module):
        found[id(module)] = module
    else:
        _topmost_exportables(module, found)
    entries: dict[int, FrozenTwin] = {}
    with torch.no_grad(), torch.inference_mode(False):
        for key, part in found.items():
            # Nothing to gain for a module without equivariant parts (the baseline regressor).
            if key not in registry and any(isinstance(m, eModule) for m in part.modules()):
                entries[key] = FrozenTwin(part, _checked_export(part))
    with lock:
        # Another scope may have frozen some of them meanwhile: that one owns them.
        mine = {key: entry for key, entry in entries.items() if key not in registry}
        registry.update(mine)

    handles = watch_frozen(mine)
    try:
        yield module
    finally:
        for handle in handles:
            handle.remove()
        with lock:
            for key, entry in mine.items():
                if registry.get(key) is entry:
                    del registry[key]
