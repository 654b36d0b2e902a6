"""rep_matrix, rep_matrices, act, group_elements and check_equivariance."""

from __future__ import annotations

import math
import random
from typing import Any

import escnn.group as eg
import numpy as np
import pytest
import torch

from ereps import (
    EquivarianceError,
    GroupHomomorphismBasis,
    act,
    check_equivariance,
    group_elements,
    group_order,
    rep_matrices,
    rep_matrix,
)
from tests.ereps import _cases as C


def _specs(key: str) -> list[str]:
    if key == "Oh":
        return ["irr6", "irr6+irr3+triv", "Q:irr1+irr5"]
    return ["reg", "irr1", "triv+irr1", "Q:irr1+triv+quot"]


ACTION_CASES = [pytest.param(key, s, id=f"{key}:{s}") for key in C.ALL_GROUPS for s in _specs(key)]
DTYPES = [torch.float32, torch.float64]


def test_group_elements() -> None:
    for key in C.ALL_GROUPS:
        G = C.group(key)
        els = group_elements(G)
        assert len(els) == G.order()
        assert els == list(G.elements)
        # Basis vector i of the regular representation is element i: ρ_reg(g_i) e_id = e_i.
        if key in C.GROUPS_WITH_REGULAR:
            reg = C.mats(key, "reg")
            identity = els.index(G.identity)
            np.testing.assert_array_equal(
                np.argmax(reg[:, :, identity], axis=1), np.arange(len(els))
            )


def test_group_elements_of_a_continuous_group() -> None:
    with pytest.raises(ValueError, match="finite"):
        group_elements(eg.so2_group(2))


@pytest.mark.parametrize(("key", "spec"), ACTION_CASES)
def test_rep_matrices_are_escnns_matrices(key: str, spec: str) -> None:
    r = C.rep(key, spec)
    M = rep_matrices(r)
    assert M.shape == (C.group(key).order(), r.size, r.size)
    assert M.dtype == torch.float64
    np.testing.assert_allclose(M.numpy(), C.mats(key, spec), atol=1e-12)
    for i, g in enumerate(group_elements(r.group)[:5]):
        torch.testing.assert_close(rep_matrix(r, g), M[i], atol=0, rtol=0)


@pytest.mark.parametrize(("key", "spec"), ACTION_CASES)
def test_homomorphism_and_orthogonality(key: str, spec: str) -> None:
    r = C.rep(key, spec)
    G = r.group
    els = group_elements(G)
    rng = random.Random(0)
    torch.testing.assert_close(rep_matrix(r, G.identity), torch.eye(r.size, dtype=torch.float64))
    for _ in range(4):
        g, h = rng.choice(els), rng.choice(els)
        torch.testing.assert_close(
            rep_matrix(r, g @ h), rep_matrix(r, g) @ rep_matrix(r, h), atol=1e-12, rtol=0
        )
        # Orthogonal: ρ(g⁻¹) = ρ(g)ᵀ.
        torch.testing.assert_close(rep_matrix(r, ~g), rep_matrix(r, g).T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("key", "spec"), ACTION_CASES)
def test_act(key: str, spec: str, dtype: torch.dtype) -> None:
    r = C.rep(key, spec)
    x = torch.randn(4, 2, r.size, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    els = group_elements(r.group)
    # A spread-out subset: finding an element's index is a linear search with escnn's (slow)
    # equality, so all |G| elements of the icosahedral group would cost seconds.
    for i in range(0, len(els), max(1, len(els) // 6)):
        g = els[i]
        y = act(r, g, x)
        assert y.dtype == dtype
        assert y.shape == x.shape
        expected = x.double().numpy() @ C.mats(key, spec)[i].T
        np.testing.assert_allclose(y.double().numpy(), expected, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rep_matrix_dtype_and_device(dtype: torch.dtype) -> None:
    r = C.rep("D4", "reg")
    g = group_elements(r.group)[3]
    m = rep_matrix(r, g, dtype=dtype)
    assert m.dtype == dtype
    assert m.device.type == "cpu"
    torch.testing.assert_close(m.double(), torch.from_numpy(C.mats("D4", "reg")[3]))
    assert rep_matrices(r, dtype=dtype, device="meta").device.type == "meta"
    # Asking for another dtype does not change what the default returns (per-dtype caching).
    assert rep_matrix(r, g).dtype == torch.float64


def test_act_preserves_device() -> None:
    r = C.rep("D4", "irr2")
    x = torch.empty(5, r.size, device="meta", dtype=torch.float32)
    y = act(r, group_elements(r.group)[1], x)
    assert y.device.type == "meta"
    assert y.dtype == torch.float32
    assert y.shape == (5, r.size)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_act_on_cuda() -> None:  # pragma: no cover - exercised on a GPU machine
    r = C.rep("O", "Q:irr1+triv+quot")
    x = torch.randn(3, r.size, device="cuda", dtype=torch.float64)
    g = group_elements(r.group)[7]
    y = act(r, g, x)
    assert y.device == x.device
    torch.testing.assert_close(y.cpu(), act(r, g, x.cpu()))


def test_act_wrong_last_axis() -> None:
    r = C.rep("D4", "reg")
    g = group_elements(r.group)[1]
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)") as info:
        act(r, g, torch.randn(3, 7))
    assert "(3, 7)" in str(info.value)
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        act(r, g, torch.tensor(1.0))
    with pytest.raises(TypeError, match="Tensor"):
        act(r, g, np.zeros(8))  # type: ignore[arg-type]


def test_element_of_another_group() -> None:
    r = C.rep("D4", "reg")
    other = C.group("D3")
    g = group_elements(other)[1]
    with pytest.raises(ValueError, match="belongs to") as info:
        rep_matrix(r, g)
    assert other.name in str(info.value)
    assert r.group.name in str(info.value)
    with pytest.raises(ValueError, match=r.group.name):
        act(r, g, torch.randn(8))


# --------------------------------------------------------------------------------------------------
# check_equivariance


@pytest.mark.parametrize("key", C.SMALL_GROUPS)
def test_check_equivariance_of_an_equivariant_linear_map(key: str) -> None:
    a, b = "Q:irr1+triv+quot", "reg+irr1"
    basis = GroupHomomorphismBasis(C.rep(key, a), C.rep(key, b))
    W = basis(torch.randn(basis.dim, dtype=torch.float64))
    err = check_equivariance(lambda x: x @ W.T, C.rep(key, a), C.rep(key, b), tol=1e-10)
    assert err < 1e-12
    # A generic (non-equivariant) map of the same shape is caught.
    V = torch.randn_like(W)
    assert check_equivariance(lambda x: x @ V.T, C.rep(key, a), C.rep(key, b)) > 0.1


def test_check_equivariance_relu_on_regular_and_on_an_irrep() -> None:
    reg = C.rep("D4", "reg")
    assert check_equivariance(torch.relu, reg, reg, tol=1e-12) < 1e-12
    irrep = C.rep("D4", "irr2")  # the 2-D irrep: rotations by 90° mix the coordinates
    assert irrep.size == 2
    err = check_equivariance(torch.relu, irrep, irrep)
    assert err > 0.1
    with pytest.raises(EquivarianceError, match="exceeds"):
        check_equivariance(torch.relu, irrep, irrep, tol=1e-3)


def test_check_equivariance_several_inputs() -> None:
    # ⟨x, y⟩ is invariant for an orthogonal representation; x ⊙ y is not equivariant on an irrep.
    r, triv = C.rep("O", "std3+irr2"), C.rep("O", "triv")
    inner = check_equivariance(lambda x, y: (x * y).sum(-1, keepdim=True), [r, r], triv, tol=1e-10)
    assert inner < 1e-12
    assert check_equivariance(lambda x, y: x * y, [r, r], r) > 0.1


def test_check_equivariance_options() -> None:
    r = C.rep("D4", "irr2")
    G = r.group
    calls: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x

    check_equivariance(fn, r, r, batch_shape=(2, 5))
    assert set(calls) == {(2, 5, 2)}
    assert len(calls) == 1 + G.order()
    calls.clear()
    elements = group_elements(G)[:3]
    check_equivariance(fn, r, r, elements=elements)
    assert len(calls) == 1 + 3
    x = torch.randn(7, 2, dtype=torch.float64)
    calls.clear()
    check_equivariance(fn, r, r, inputs=[x])
    assert set(calls) == {(7, 2)}
    # Only the identity: every function passes.
    assert check_equivariance(torch.relu, r, r, elements=[G.identity]) == 0.0
    # Reproducible with a generator.
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    e1 = check_equivariance(torch.relu, r, r, generator=gen_a)
    e2 = check_equivariance(torch.relu, r, r, generator=gen_b)
    assert e1 == e2


def test_check_equivariance_nan_is_an_infinite_error() -> None:
    r = C.rep("C5", "reg")
    err = check_equivariance(lambda x: x * math.nan, r, r)
    assert err == math.inf
    with pytest.raises(EquivarianceError):
        check_equivariance(lambda x: x * math.nan, r, r, tol=1.0)


def test_check_equivariance_validation() -> None:
    r = C.rep("D4", "reg")
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)") as info:
        check_equivariance(torch.relu, r, r, inputs=[torch.randn(3, 5)])
    assert "(3, 5)" in str(info.value)
    with pytest.raises(ValueError, match="one input per representation"):
        check_equivariance(torch.add, [r, r], r, inputs=[torch.randn(3, 8)])
    with pytest.raises(ValueError, match="at least one"):
        check_equivariance(torch.relu, [], r)
    other = C.rep("D3", "reg")
    with pytest.raises(ValueError, match="one group") as info:
        check_equivariance(torch.relu, other, r)
    assert other.group.name in str(info.value)
    assert r.group.name in str(info.value)


# --------------------------------------------------------------------------------------------------
# group facts are read once per group (escnn's DirectProductGroup rebuilds its elements per access)


@pytest.mark.parametrize("key", ["Oh", "C4xC2", "C5", "O"])
def test_group_order_and_elements_are_read_from_escnn_once(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    G = C.group(key)
    assert group_order(G) == G.order() == len(list(G.elements))
    cls: Any = type(G)
    calls = []
    original = cls.elements

    def counting(self: object) -> object:
        calls.append(1)
        return original.fget(self)

    monkeypatch.setattr(cls, "elements", property(counting))
    for _ in range(20):
        assert group_order(G) == len(group_elements(G))
    assert calls == []  # served from ereps' memo, not rebuilt by escnn
    els = group_elements(G)
    els.pop()  # the returned list is the caller's: editing it changes nothing
    assert len(group_elements(G)) == group_order(G)


def test_group_order_of_a_continuous_group() -> None:
    with pytest.raises(ValueError, match="finite groups only"):
        group_order(eg.so2_group(2))
