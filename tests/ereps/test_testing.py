"""The shipped test helpers: assert_equivariant, the dtype helpers and assert_compiles."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

import ereps
from ereps import EquivarianceError, act, equivariance_errors, group_elements
from ereps.testing import (
    FLOAT_DTYPES,
    LOW_PRECISION_DTYPES,
    assert_compiles,
    assert_equivariant,
    default_tolerance,
    dtype_fixture,
    dtype_id,
    float_dtypes,
)
from tests.ereps import _cases as C

TESTING_FILE = Path(ereps.testing.__file__).resolve()

# The helper under test, used as the project's own dtype parametrization in this file.
dtype = dtype_fixture()


def _weighted(w: Tensor) -> Callable[[Tensor], Tensor]:
    """x ↦ w ⊙ x: equivariant on a permutation representation only if w is constant."""
    return lambda x: x * w.to(x.dtype)


def test_an_equivariant_map_passes_and_every_element_is_reported(dtype: torch.dtype) -> None:
    rho = C.rep("D4", "reg")
    errors = assert_equivariant(torch.relu, rho, rho, dtype=dtype)
    assert list(errors) == group_elements(rho.group)
    assert max(errors.values()) <= default_tolerance(dtype)


def test_a_non_equivariant_map_fails_naming_the_worst_element() -> None:
    G = ereps.cyclic_group(4)
    rho = G.regular_representation
    w = torch.tensor([3.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    # Brute force, independent of ereps: e(g) from the permutation matrices escnn gives.
    brute = {}
    for g in G.elements:
        P = torch.from_numpy(np.asarray(rho(g), dtype=np.float64))
        expected = (w * x) @ P.T
        brute[g] = float((w * (x @ P.T) - expected).norm() / expected.norm())
    worst = max(brute, key=lambda g: brute[g])
    assert brute[worst] > 0.1
    with pytest.raises(EquivarianceError) as info:
        assert_equivariant(lambda t: w * t, rho, rho, inputs=[x])
    message = str(info.value)
    assert f"at the group element {worst} (#{list(G.elements).index(worst)} of the 4 tested)" in (
        message
    )
    assert f"{brute[worst]:.3e}" in message
    assert "exceeds the tolerance 1.0e-10" in message
    assert repr(G.name) in message
    # The identity commutes with everything: 3 of the 4 elements fail.
    assert "3 of 4 elements fail" in message
    assert isinstance(info.value, AssertionError)


def test_the_helpers_frame_is_hidden_from_pytest_tracebacks() -> None:
    rho = ereps.cyclic_group(4).regular_representation
    w = torch.tensor([1.0, 0.0, 0.0, 0.0])
    with pytest.raises(EquivarianceError) as info:
        assert_equivariant(lambda t: w.to(t.dtype) * t, rho, rho)
    paths = [Path(str(entry.path)).resolve() for entry in info.traceback]
    assert TESTING_FILE in paths  # the error is raised there ...
    shown = [Path(str(entry.path)).resolve() for entry in info.traceback.filter(info)]
    assert TESTING_FILE not in shown  # ... but pytest does not show that frame
    assert Path(__file__).resolve() in shown


def test_the_default_tolerance_follows_the_dtype() -> None:
    rho = ereps.cyclic_group(4).regular_representation
    w = torch.tensor([1.0, 1.0, 1.0, 1.0 + 1e-6])
    # Error ~1e-6: round-off in float32, a real defect in float64.
    errors = assert_equivariant(_weighted(w), rho, rho, dtype=torch.float32)
    assert 1e-8 < max(errors.values()) < default_tolerance(torch.float32)
    with pytest.raises(EquivarianceError, match=r"tolerance 1\.0e-10"):
        assert_equivariant(_weighted(w), rho, rho, dtype=torch.float64)
    # An explicit tolerance wins; the inputs' dtype decides the default when inputs are given.
    assert_equivariant(_weighted(w), rho, rho, dtype=torch.float64, tol=1e-5)
    x = torch.randn(3, 4, dtype=torch.float32)
    assert_equivariant(_weighted(w), rho, rho, inputs=[x])


def test_nan_fails() -> None:
    rho = ereps.cyclic_group(4).regular_representation
    with pytest.raises(EquivarianceError, match="relative error inf"):
        assert_equivariant(lambda t: t * float("nan"), rho, rho, tol=1e30)


def test_the_errors_agree_with_check_equivariance() -> None:
    rho, out = C.rep("D4", "reg"), C.rep("D4", "irr2")
    W = torch.randn(out.size, rho.size, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, rho.size, dtype=torch.float64, generator=gen)
    errors = equivariance_errors(lambda t: t @ W.T, rho, out, inputs=[x])
    assert max(e for _, e in errors) == ereps.check_equivariance(
        lambda t: t @ W.T, rho, out, inputs=[x]
    )
    for g, err in errors:
        expected = act(out, g, x @ W.T)
        assert err == pytest.approx(
            float((act(rho, g, x) @ W.T - expected).norm() / expected.norm())
        )


def test_assert_equivariant_validation() -> None:
    rho = ereps.cyclic_group(4).regular_representation
    with pytest.raises(ValueError, match=r"tol >= 0; got -1"):
        assert_equivariant(torch.relu, rho, rho, tol=-1.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        assert_equivariant(torch.relu, rho, rho, inputs=[torch.randn(3, 5)])
    with pytest.raises(ValueError, match="Pass tol= explicitly"):
        assert_equivariant(lambda t: t, rho, rho, inputs=[torch.ones(3, 4, dtype=torch.complex64)])


# ---------------------------------------------------------------------------------------------
# dtypes


def test_dtype_fixture_runs_once_per_dtype(
    request: pytest.FixtureRequest, dtype: torch.dtype
) -> None:
    assert dtype in FLOAT_DTYPES
    assert request.node.callspec.id == dtype_id(dtype)


def test_float_dtypes_and_ids() -> None:
    assert float_dtypes() == (torch.float32, torch.float64)
    assert float_dtypes(low_precision=True) == FLOAT_DTYPES + LOW_PRECISION_DTYPES
    assert [dtype_id(d) for d in float_dtypes(low_precision=True)] == [
        "float32",
        "float64",
        "bfloat16",
        "float16",
    ]
    assert default_tolerance(torch.float64) < default_tolerance(torch.float32)
    assert default_tolerance(torch.float32) < default_tolerance(torch.bfloat16)


def test_dtype_fixture_validation() -> None:
    with pytest.raises(ValueError, match="non-empty sequence of floating torch dtypes; got"):
        dtype_fixture([])
    with pytest.raises(ValueError, match=r"got \[torch.int64\]"):
        dtype_fixture([torch.int64])


def test_ereps_testing_does_not_import_pytest() -> None:
    script = "import sys, ereps.testing; print('pytest' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# assert_compiles


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def test_assert_compiles_passes_for_a_module_and_returns_the_compiled_output() -> None:
    basis = ereps.GroupHomomorphismBasis(C.rep("D4", "reg"), C.rep("D4", "irr2"))
    coeffs = torch.randn(3, basis.dim, dtype=torch.float64)
    with torch.no_grad():
        out = assert_compiles(basis, coeffs, fullgraph=True)
        torch.testing.assert_close(out, basis(coeffs))


def test_assert_compiles_fails_when_compiled_and_eager_differ() -> None:
    def differs(x: Tensor) -> Tensor:
        return x + 1.0 if torch.compiler.is_compiling() else x

    with pytest.raises(
        AssertionError, match="computes something else than the eager module"
    ) as info:
        assert_compiles(differs, torch.zeros(3))
    assert "Mismatched elements: 3 / 3" in str(info.value)


def test_assert_compiles_fails_clearly_when_compilation_fails() -> None:
    def breaks(x: Tensor) -> Tensor:
        torch._dynamo.graph_break()
        return x * 2.0

    assert_compiles(breaks, torch.ones(2))  # a graph break is allowed by default ...
    torch._dynamo.reset()
    with pytest.raises(AssertionError, match=r"fullgraph=True\) of <function .*breaks.* failed: "):
        assert_compiles(breaks, torch.ones(2), fullgraph=True)  # ... not with fullgraph


def test_assert_compiles_validation() -> None:
    with pytest.raises(ValueError, match=r"rtol and atol together or neither; got rtol=0\.1"):
        assert_compiles(torch.relu, torch.ones(2), rtol=0.1)
