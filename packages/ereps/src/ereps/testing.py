"""Test helpers for equivariant models: equivariance assertions, dtype sweeps, compile checks.

Shipped with the library (as e3nn ships ``e3nn.util.test``) so that users test their own models
the way this project tests its layers. Nothing here imports pytest at import time:
:func:`dtype_fixture` imports it only when called, so ``ereps`` does not depend on it.

Examples:
    >>> import torch, ereps
    >>> from ereps.testing import assert_equivariant
    >>> G = ereps.dihedral_group(4)
    >>> rho = G.regular_representation
    >>> errors = assert_equivariant(torch.relu, rho, rho)  # passes: ReLU permutes with ρ_reg(g)
    >>> max(errors.values()) < 1e-12
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ereps._escnn import GroupElement, Representation
from ereps._group_action import EquivarianceError, _default_dtype_device, equivariance_errors

__all__ = [
    "FLOAT_DTYPES",
    "LOW_PRECISION_DTYPES",
    "assert_compiles",
    "assert_equivariant",
    "default_tolerance",
    "dtype_fixture",
    "dtype_id",
    "float_dtypes",
]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
"""The dtypes every module is tested in by default."""

LOW_PRECISION_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
"""Half-precision dtypes, for tests of mixed-precision paths."""

# Relative errors that round-off stays below for the small models of tests: a few hundred units
# in the last place of each dtype (float32: 1.2e-7, float64: 2.2e-16, bfloat16: 7.8e-3,
# float16: 9.8e-4).
_TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}

# How many of the worst elements an equivariance failure lists.
_REPORTED = 3


def float_dtypes(*, low_precision: bool = False) -> tuple[torch.dtype, ...]:
    """Return the floating dtypes to parametrize a test over.

    Args:
        low_precision: Also return :data:`LOW_PRECISION_DTYPES` (bfloat16, float16).

    Returns:
        ``(float32, float64)``, followed by ``(bfloat16, float16)`` when ``low_precision``.

    Examples:
        >>> float_dtypes()
        (torch.float32, torch.float64)
    """
    return FLOAT_DTYPES + LOW_PRECISION_DTYPES if low_precision else FLOAT_DTYPES


def dtype_id(dtype: torch.dtype) -> str:
    """Return a short name of ``dtype`` for test ids.

    Args:
        dtype: A torch dtype.

    Returns:
        The name without the ``torch.`` prefix, e.g. ``"float32"``.
    """
    return str(dtype).removeprefix("torch.")


def default_tolerance(dtype: torch.dtype) -> float:
    """Return the relative error that :func:`assert_equivariant` accepts by default in ``dtype``.

    Args:
        dtype: A floating dtype.

    Returns:
        ``1e-10`` for float64, ``1e-4`` for float32, ``1e-2`` for float16, ``5e-2`` for bfloat16.

    Raises:
        ValueError: If ``dtype`` is not one of those four.
    """
    tol = _TOLERANCES.get(dtype)
    if tol is None:
        known = ", ".join(dtype_id(d) for d in _TOLERANCES)
        raise ValueError(
            f"default_tolerance expects a floating dtype ({known}); got {dtype}. "
            "Pass tol= explicitly for other dtypes."
        )
    return tol


def dtype_fixture(
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, *, name: str = "dtype"
) -> Callable[..., Any]:
    """Return a pytest fixture that runs each test using it once per dtype.

    pytest is imported when this function is called, not when :mod:`ereps.testing` is imported.
    Assign the result to a module-level name (in a test module or a ``conftest.py``); the fixture
    takes that name from ``name``.

    Args:
        dtypes: The dtypes, one test run each (ids ``float32``, ``float64``, ...).
        name: The fixture's name, which tests request as an argument.

    Returns:
        The fixture function.

    Raises:
        ValueError: If ``dtypes`` is empty or holds something that is not a floating dtype.
        ImportError: If pytest is not installed.

    Examples:
        In ``conftest.py``: ``dtype = dtype_fixture(float_dtypes(low_precision=True))``; then
        ``def test_layer(dtype: torch.dtype) -> None: ...`` runs four times.
    """
    chosen = list(dtypes)
    if not chosen or not all(isinstance(d, torch.dtype) and d.is_floating_point for d in chosen):
        raise ValueError(
            f"dtype_fixture expects a non-empty sequence of floating torch dtypes; got {dtypes!r}."
        )
    import pytest  # here, not at the top: ereps does not depend on pytest

    def fixture(request: Any) -> torch.dtype:
        dtype: torch.dtype = request.param
        return dtype

    return pytest.fixture(params=chosen, ids=[dtype_id(d) for d in chosen], name=name)(fixture)


def assert_equivariant(
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
) -> dict[GroupElement, float]:
    r"""Assert that ``fn`` is equivariant, naming the worst group element when it is not.

    Measures, for every tested element ``g``, the relative error

    .. math::
        e(g) = \frac{\| f(\rho_1(g) x_1, \dots) - \rho_{out}(g) f(x_1, \dots)\|}
                    {\|\rho_{out}(g) f(x_1, \dots)\|}

    at the same inputs (see :func:`ereps.equivariance_errors`, whose arguments these are) and fails
    if ``max_g e(g) > tol``. The failure message names the worst elements (and their positions among
    the tested ones) and their errors. The error is relative: for a function whose output is zero
    up to round-off, test a nonzero one or pass ``tol`` accordingly. Its own frame is hidden from
    pytest's tracebacks (``__tracebackhide__``), so a failure points at the calling test.

    Args:
        fn: The function or module to test; called with one tensor per input representation.
        in_reps: The representation of each input (one, or a sequence for several inputs).
        out_rep: The representation of the output (acting on its last axis).
        inputs: Inputs to test at, one per representation, each of shape ``(..., rep.size)``.
            Random normal inputs of shape ``(*batch_shape, rep.size)`` when omitted.
        batch_shape: Leading shape of the random inputs.
        elements: Group elements to test. All elements of the group when omitted.
        dtype: Dtype of the random inputs. Defaults to the dtype of the first floating parameter
            when ``fn`` is a :class:`torch.nn.Module` with one, else float64.
        device: Device of the random inputs.
        tol: Largest accepted relative error. Defaults to :func:`default_tolerance` of the output's
            dtype.
        generator: Random generator for the inputs.

    Returns:
        The error ``e(g)`` of every tested element.

    Raises:
        EquivarianceError: An ``AssertionError``, if some ``e(g)`` exceeds ``tol`` (or is NaN).
        ValueError: If the representations are of different groups, the inputs do not match them
            or ``tol`` is negative.
    """
    __tracebackhide__ = True
    if tol is not None and not tol >= 0.0:
        raise ValueError(f"assert_equivariant expects tol >= 0; got {tol!r}.")
    if tol is None:
        # The dtype the errors are computed in: the inputs' (given, or chosen as
        # equivariance_errors chooses them).
        computed_in = inputs[0].dtype if inputs else _default_dtype_device(fn, dtype, device)[0]
        tol = default_tolerance(computed_in)
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
    # Rank by error, keeping each element's position among the tested ones (in the default
    # order of group_elements, that is its index in the regular representation).
    ranked = sorted(enumerate(errors), key=lambda item: item[1][1], reverse=True)
    if ranked and not ranked[0][1][1] <= tol:
        index, (worst_g, worst) = ranked[0]
        listing = ", ".join(f"#{i} {g} ({err:.3e})" for i, (g, err) in ranked[:_REPORTED])
        failing = sum(1 for _, err in errors if not err <= tol)
        raise EquivarianceError(
            f"Not equivariant: the relative error {worst:.3e} at the group element {worst_g} "
            f"(#{index} of the {len(errors)} tested) exceeds the tolerance {tol:.1e} (group "
            f"{out_rep.group.name!r}, output representation {out_rep.name!r}; {failing} of "
            f"{len(errors)} elements fail). Worst elements: {listing}."
        )
    return dict(errors)


def assert_compiles(
    module: Callable[..., Tensor],
    *inputs: Tensor,
    backend: str = "aot_eager",
    fullgraph: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    **kwargs: Any,
) -> Tensor:
    """Assert that ``torch.compile(module)`` runs and computes what ``module`` computes eagerly.

    Compiles with a fresh dynamo state (``torch._dynamo.reset()``), calls the compiled and the
    eager module on the same inputs and compares the outputs with
    :func:`torch.testing.assert_close`. No gradients are compared: call it under
    ``torch.no_grad()`` or compare gradients yourself.

    Args:
        module: The module or function to compile.
        *inputs: Positional inputs of the call.
        backend: The ``torch.compile`` backend. ``"aot_eager"`` traces forward and backward
            through AOTAutograd without generating code (fast, no compiler needed);
            ``"inductor"`` is torch's default.
        fullgraph: Fail on any graph break (``torch.compile(..., fullgraph=True)``).
        rtol: Relative tolerance of the comparison (default: ``assert_close``'s for the dtype).
        atol: Absolute tolerance; given together with ``rtol``.
        **kwargs: Keyword inputs of the call.

    Returns:
        The compiled module's output.

    Raises:
        AssertionError: If compilation or the compiled call fails (the cause is chained and its
            type and message quoted), or the outputs differ.
        ValueError: If only one of ``rtol`` and ``atol`` is given.
    """
    __tracebackhide__ = True
    if (rtol is None) != (atol is None):
        raise ValueError(
            f"assert_compiles expects rtol and atol together or neither; got rtol={rtol!r}, "
            f"atol={atol!r}."
        )
    name = type(module).__name__ if isinstance(module, torch.nn.Module) else repr(module)
    eager: Tensor = module(*inputs, **kwargs)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(module, backend=backend, fullgraph=fullgraph)
        out: Tensor = compiled(*inputs, **kwargs)
    except Exception as err:
        raise AssertionError(
            f"torch.compile(backend={backend!r}, fullgraph={fullgraph}) of {name} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    try:
        torch.testing.assert_close(out, eager, rtol=rtol, atol=atol)
    except AssertionError as err:
        raise AssertionError(
            f"torch.compile(backend={backend!r}) of {name} computes something else than the "
            f"eager module: {err}"
        ) from err
    return out
