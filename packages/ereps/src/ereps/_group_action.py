"""Acting with group elements on tensors, and measuring equivariance."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ereps._escnn import Group, GroupElement, Representation

__all__ = [
    "EquivarianceError",
    "act",
    "check_equivariance",
    "equivariance_errors",
    "group_elements",
    "group_order",
    "rep_matrices",
    "rep_matrix",
]

# Matrices of a representation for all group elements, computed once per representation object.
_MATRICES: weakref.WeakKeyDictionary[Representation, dict[tuple[torch.dtype, str], Tensor]] = (
    weakref.WeakKeyDictionary()
)


class EquivarianceError(AssertionError):
    """Raised by :func:`check_equivariance` when the measured error exceeds the tolerance."""


def _default_dtype_device(
    fn: object, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device | str | None]:
    if isinstance(fn, torch.nn.Module):
        for p in fn.parameters():
            if p.is_floating_point():
                return (dtype or p.dtype), (device if device is not None else p.device)
    return (dtype or torch.float64), device


# The elements of each group, read once. escnn's groups are immutable singletons, but some of their
# accessors are slow: a DirectProductGroup (O_h, C_n × C_2) rebuilds every element on each access
# of `.elements`, and so on each `.order()` (~34 ms for O_h). Keyed by identity (escnn groups are
# unhashable), keeping the group alive so that the id cannot be reused.
_ELEMENTS: dict[int, tuple[Group, tuple[GroupElement, ...]]] = {}


def _elements(group: Group) -> tuple[GroupElement, ...]:
    cached = _ELEMENTS.get(id(group))
    if cached is None:
        if group.continuous:
            raise ValueError(
                f"ereps supports finite groups only; got the continuous group {group.name!r}. "
                "Use a finite subgroup (e.g. escnn.group.cyclic_group(N) instead of so2_group())."
            )
        cached = (group, tuple(group.elements))
        _ELEMENTS[id(group)] = cached
    return cached[1]


def group_elements(group: Group) -> list[GroupElement]:
    """Return the elements of a finite group in escnn's canonical order.

    The order is the one used by ``group.regular_representation``: basis vector ``i`` is element
    ``i``. Read from escnn once per group (groups are immutable), so repeated calls are cheap.

    Args:
        group: A finite escnn group.

    Returns:
        A new list of the ``|G|`` group elements.

    Raises:
        ValueError: If the group is continuous.
    """
    return list(_elements(group))


def group_order(group: Group) -> int:
    """Return ``|G|``, the number of elements of a finite group.

    Unlike escnn's ``group.order()``, which rebuilds every element of a direct-product group on
    each call (tens of milliseconds for O_h), this reads the elements once per group.

    Args:
        group: A finite escnn group.

    Returns:
        The order of the group.

    Raises:
        ValueError: If the group is continuous.
    """
    return len(_elements(group))


def _matrices_np(rep: Representation) -> npt.NDArray[np.float64]:
    return np.stack([np.asarray(rep(g), dtype=np.float64) for g in group_elements(rep.group)])


def rep_matrices(
    rep: Representation,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return ``ρ(g)`` for every element ``g`` of the group, stacked.

    Computed once per representation in float64 and cached per ``(dtype, device)``. The cached
    tensor itself is returned: treat it as read-only (clone it before editing in place).

    Args:
        rep: A representation ``ρ`` of a finite group ``G``.
        dtype: Floating dtype of the result.
        device: Device of the result.

    Returns:
        Tensor of shape ``(|G|, rep.size, rep.size)``; entry ``i`` is ``ρ(group_elements(G)[i])``.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    per_rep = _MATRICES.setdefault(rep, {})
    key = (dtype, str(dev))
    cached = per_rep.get(key)
    if cached is None:
        base_key = (torch.float64, "cpu")
        base = per_rep.get(base_key)
        if base is None:
            base = torch.from_numpy(_matrices_np(rep))
            per_rep[base_key] = base
        cached = base.to(dtype=dtype, device=dev)
        per_rep[key] = cached
    return cached


# escnn groups are unhashable singletons: key on identity and keep them alive. Comparing elements
# is slow in escnn (milliseconds for the icosahedral group), so look indices up by hash.
_ELEMENT_INDEX: dict[int, tuple[Group, dict[GroupElement, int]]] = {}


def _element_index(group: Group, g: GroupElement) -> int:
    if g.group != group:
        raise ValueError(
            f"The group element {g} belongs to {g.group.name!r}, but the representation is of "
            f"{group.name!r}."
        )
    cached = _ELEMENT_INDEX.get(id(group))
    if cached is None:
        cached = (group, {e: i for i, e in enumerate(group_elements(group))})
        _ELEMENT_INDEX[id(group)] = cached
    return cached[1][g]


def rep_matrix(
    rep: Representation,
    g: GroupElement,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return the matrix ``ρ(g)`` as a tensor.

    Args:
        rep: A representation ``ρ`` of a finite group.
        g: An element of the same group.
        dtype: Floating dtype of the result.
        device: Device of the result.

    Returns:
        Tensor of shape ``(rep.size, rep.size)``.

    Raises:
        ValueError: If ``g`` is not an element of ``rep.group``.
    """
    return rep_matrices(rep, dtype=dtype, device=device)[_element_index(rep.group, g)]


def act(rep: Representation, g: GroupElement, x: Tensor) -> Tensor:
    """Act with ``ρ(g)`` on the last axis of a batch: ``y[..., i] = Σ_j ρ(g)[i, j] x[..., j]``.

    Args:
        rep: A representation ``ρ`` of a finite group.
        g: An element of the same group.
        x: Tensor of shape ``(..., rep.size)``.

    Returns:
        Tensor of shape ``(..., rep.size)``, same dtype and device as ``x``.

    Raises:
        ValueError: If the last axis of ``x`` is not ``rep.size`` or ``g`` is of another group.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"act expects a torch.Tensor; got {type(x).__name__}.")
    if x.ndim == 0 or x.shape[-1] != rep.size:
        raise ValueError(
            f"act expects a tensor of shape (..., {rep.size}) for representation {rep.name!r}; "
            f"got {tuple(x.shape)}."
        )
    matrix = rep_matrix(rep, g, dtype=x.dtype, device=x.device)
    return x @ matrix.T


def check_equivariance(
    fn: Callable[..., Tensor],
    in_reps: Representation | Sequence[Representation],
    out_rep: Representation,
    *,
    inputs: Sequence[Tensor] | None = None,
    batch_shape: Sequence[int] = (3,),
    elements: Sequence[GroupElement] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    tol: float | None = None,
    generator: torch.Generator | None = None,
) -> float:
    r"""Measure how far ``fn`` is from being equivariant.

    For every tested element ``g`` it computes the relative error

    .. math::
        e(g) = \frac{\| f(\rho_1(g) x_1, \dots, \rho_n(g) x_n) - \rho_{out}(g) f(x_1, \dots, x_n)\|}
                    {\max(\|\rho_{out}(g) f(x_1, \dots, x_n)\|, \epsilon)}

    and returns ``max_g e(g)``. Each representation acts on the last axis of its input.
    :func:`equivariance_errors` returns every ``e(g)``; :func:`ereps.testing.assert_equivariant`
    fails a test and names the worst element.

    Args:
        fn: The function to test; called with one tensor per input representation.
        in_reps: The representation of each input (one, or a sequence for several inputs).
        out_rep: The representation of the output (acting on its last axis).
        inputs: Inputs to test at, one per representation, each of shape ``(..., rep.size)``.
            Random normal inputs of shape ``(*batch_shape, rep.size)`` when omitted.
        batch_shape: Leading shape of the random inputs.
        elements: Group elements to test. All elements of the group when omitted.
        dtype: Dtype of the random inputs. Defaults to the dtype of the first floating parameter
            when ``fn`` is a :class:`torch.nn.Module` with one, else float64.
        device: Device of the random inputs. Defaults like ``dtype`` (else CPU).
        tol: When given, raise :class:`EquivarianceError` if the error exceeds it.
        generator: Random generator for the inputs.

    Returns:
        The largest relative error over the tested elements.

    Raises:
        ValueError: If the representations are of different groups or the inputs do not match them.
        EquivarianceError: If ``tol`` is given and the error exceeds it.

    Examples:
        >>> import torch, ereps
        >>> G = ereps.dihedral_group(4)
        >>> rho = G.regular_representation
        >>> check_equivariance(torch.relu, rho, rho) < 1e-12
        True
    """
    errors = equivariance_errors(
        fn,
        in_reps,
        out_rep,
        inputs=inputs,
        batch_shape=batch_shape,
        elements=elements,
        dtype=dtype,
        device=device,
        generator=generator,
    )
    worst = max((err for _, err in errors), default=0.0)
    if tol is not None and worst > tol:
        raise EquivarianceError(
            f"Equivariance error {worst:.3e} exceeds the tolerance {tol:.1e} "
            f"(group {out_rep.group.name!r}, output representation {out_rep.name!r})."
        )
    return worst


def equivariance_errors(
    fn: Callable[..., Tensor],
    in_reps: Representation | Sequence[Representation],
    out_rep: Representation,
    *,
    inputs: Sequence[Tensor] | None = None,
    batch_shape: Sequence[int] = (3,),
    elements: Sequence[GroupElement] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> list[tuple[GroupElement, float]]:
    r"""Return the relative equivariance error ``e(g)`` of ``fn`` for every tested element ``g``.

    ``e(g) = ‖f(ρ_1(g) x_1, …, ρ_n(g) x_n) − ρ_out(g) f(x_1, …, x_n)‖ / ‖ρ_out(g) f(x_1, …, x_n)‖``
    (denominator at least ``1e-30``; a NaN error counts as infinite), at the same inputs for every
    element. The arguments are those of :func:`check_equivariance`.

    Args:
        fn: The function to test; called with one tensor per input representation.
        in_reps: The representation of each input (one, or a sequence for several inputs).
        out_rep: The representation of the output (acting on its last axis).
        inputs: Inputs to test at, one per representation, each of shape ``(..., rep.size)``.
            Random normal inputs of shape ``(*batch_shape, rep.size)`` when omitted.
        batch_shape: Leading shape of the random inputs.
        elements: Group elements to test. All elements of the group when omitted.
        dtype: Dtype of the random inputs (default as in :func:`check_equivariance`).
        device: Device of the random inputs.
        generator: Random generator for the inputs.

    Returns:
        One ``(g, e(g))`` pair per tested element, in the order of ``elements`` (default: the
        group's canonical order, see :func:`group_elements`).

    Raises:
        ValueError: If the representations are of different groups or the inputs do not match them.
    """
    reps = [in_reps] if isinstance(in_reps, Representation) else list(in_reps)
    if not reps:
        raise ValueError("check_equivariance expects at least one input representation; got none.")
    group = out_rep.group
    for rep in reps:
        if rep.group != group:
            raise ValueError(
                "check_equivariance expects all representations to be of one group; got "
                f"{rep.group.name!r} for an input and {group.name!r} for the output."
            )
    if inputs is None:
        dtype, device = _default_dtype_device(fn, dtype, device)
        inputs = [
            torch.randn((*batch_shape, rep.size), dtype=dtype, device=device, generator=generator)
            for rep in reps
        ]
    else:
        inputs = list(inputs)
        if len(inputs) != len(reps):
            raise ValueError(
                f"check_equivariance expects one input per representation ({len(reps)}); "
                f"got {len(inputs)}."
            )
        for i, (x, rep) in enumerate(zip(inputs, reps, strict=True)):
            if x.ndim == 0 or x.shape[-1] != rep.size:
                raise ValueError(
                    f"check_equivariance input {i} must have shape (..., {rep.size}) for "
                    f"{rep.name!r}; got {tuple(x.shape)}."
                )
    tested = list(elements) if elements is not None else group_elements(group)
    y = fn(*inputs)
    errors: list[tuple[GroupElement, float]] = []
    for g in tested:
        expected = act(out_rep, g, y)
        got = fn(*(act(rep, g, x) for rep, x in zip(reps, inputs, strict=True)))
        num = torch.linalg.vector_norm((got - expected).double()).item()
        den = max(torch.linalg.vector_norm(expected.double()).item(), 1e-30)
        err = num / den
        if math.isnan(err):
            err = math.inf
        errors.append((g, err))
    return errors
