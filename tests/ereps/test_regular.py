"""regular_multiplicity, is_permutation_representation and cayley_index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ereps import cayley_index, is_permutation_representation, regular_multiplicity
from tests.ereps import _cases as C


def _expected_multiplicity(key: str, spec: str) -> int | None:
    """c if ρ(g) = I_c ⊗ ρ_reg(g) for all g (brute force on the matrices), else None."""
    M, R = C.mats(key, spec), C.mats(key, "reg")
    order = R.shape[-1]
    if M.shape[-1] % order:
        return None
    c = M.shape[-1] // order
    expected = np.stack([np.kron(np.eye(c), m) for m in R])
    return c if np.allclose(M, expected, atol=1e-9) else None


MULTIPLICITY_CASES = [
    ("reg", 1),
    ("reg+reg+reg", 3),
    ("triv", None),
    ("irr1", None),
    ("quot", None),
    ("reg+triv", None),
    ("Q:reg", None),
    ("irr1+reg", None),
]


@pytest.mark.parametrize("key", C.GROUPS_WITH_REGULAR)
@pytest.mark.parametrize(("spec", "expected"), MULTIPLICITY_CASES)
def test_regular_multiplicity(key: str, spec: str, expected: int | None) -> None:
    if key == "C5" and spec == "quot":
        expected = 1  # C5 has no proper non-trivial subgroup: C5/{e} is the regular permutation
    assert _expected_multiplicity(key, spec) == expected
    r = C.rep(key, spec)
    assert regular_multiplicity(r) == expected
    assert regular_multiplicity(r) == expected  # cached answer is the same


def test_regular_multiplicity_of_the_trivial_rep_of_the_trivial_group() -> None:
    # |G| = 1: the trivial representation *is* the regular one.
    G = C.group("C5").subgroup(1)[0]
    assert G.order() == 1
    assert regular_multiplicity(G.trivial_representation) == 1


PERMUTATION_CASES = [
    ("reg", True),
    ("quot", True),
    ("triv", True),
    ("reg+quot+triv", True),
    ("irr1", False),
    ("Q:reg", False),
    ("reg+irr1", False),
]


@pytest.mark.parametrize("key", C.GROUPS_WITH_REGULAR)
@pytest.mark.parametrize(("spec", "expected"), PERMUTATION_CASES)
def test_is_permutation_representation(key: str, spec: str, expected: bool) -> None:
    M = C.mats(key, spec)
    brute = bool(
        np.all(np.isclose(M, 0) | np.isclose(M, 1))
        and np.allclose(M.sum(axis=1), 1)
        and np.allclose(M.sum(axis=2), 1)
    )
    assert brute == expected
    assert is_permutation_representation(C.rep(key, spec)) is expected


def test_sign_representation_is_not_a_permutation() -> None:
    # D4's irrep (1, 0) is ±1: entries of absolute value 1 that are not a permutation.
    r = C.group("D4").irrep(1, 0)
    assert is_permutation_representation(r) is False


@pytest.mark.parametrize("key", C.SMALL_GROUPS)
def test_cayley_index(key: str) -> None:
    G = C.group(key)
    T = cayley_index(G)
    n = G.order()
    assert T.shape == (n, n)
    assert T.dtype == torch.int64
    # ρ_reg(g_a) e_k = e_{g_a g_k}, so g_a g_k = g_b  <=>  k = index(g_a⁻¹ g_b).
    R = C.mats(key, "reg")
    expected = np.argmax(R, axis=2)  # expected[a, b] = k with R[a][b, k] = 1
    np.testing.assert_array_equal(T.numpy(), expected)
    # Each row and column is a permutation of the group; T[a, a] is the identity.
    assert all(sorted(row) == list(range(n)) for row in T.tolist())
    assert all(sorted(col) == list(range(n)) for col in T.T.tolist())
    assert len(set(T.diagonal().tolist())) == 1
    # w[T] commutes with the regular representation for every w, and spans Hom_G(reg, reg).
    w = torch.randn(5, n, dtype=torch.float64)
    W = w[:, T]  # (5, n, n)
    Rt = torch.from_numpy(R)
    Wg = W.unsqueeze(1)
    assert float((Rt @ Wg - Wg @ Rt).abs().max()) < 1e-12
    basis = torch.eye(n, dtype=torch.float64)[:, T].reshape(n, n * n)
    assert (
        int(torch.linalg.matrix_rank(basis)) == n == round(C.character_hom_dim(key, "reg", "reg"))
    )


def test_cayley_index_entries_match_the_group_law() -> None:
    G = C.group("D4")
    els = list(G.elements)
    T = cayley_index(G)
    for a, ga in enumerate(els):
        for b, gb in enumerate(els):
            assert els[int(T[a, b])] == (~ga) @ gb
