"""direct_sum."""

from __future__ import annotations

import numpy as np
import pytest

from ereps import direct_sum
from tests.ereps import _cases as C

SUM_CASES = [
    pytest.param("D4", ["irr2", "triv", "reg"], id="D4"),
    pytest.param("C5", ["irr1", "Q:reg", "irr1"], id="C5"),
    pytest.param("O", ["std3", "quot", "irr2"], id="O"),
    pytest.param("Oh", ["irr6", "Q:irr1+irr5"], id="Oh"),
]


@pytest.mark.parametrize(("key", "parts"), SUM_CASES)
def test_matrices_are_block_diagonal(key: str, parts: list[str]) -> None:
    reps = [C.rep(key, p) for p in parts]
    s = direct_sum(reps)
    assert s.size == sum(r.size for r in reps)
    assert s.group == reps[0].group
    assert s.name == "⊕".join(r.name for r in reps)
    assert [tuple(i) for i in s.irreps] == [tuple(i) for r in reps for i in r.irreps]
    blocks = [C.mats(key, p) for p in parts]
    M = C.matrices(s)
    for i in range(len(M)):
        np.testing.assert_allclose(M[i], C.block_diag([b[i] for b in blocks]), atol=1e-10)
    # The change of basis is orthogonal when the summands' are.
    Q = np.asarray(s.change_of_basis)
    np.testing.assert_allclose(Q.T @ Q, np.eye(s.size), atol=1e-10)


def test_name() -> None:
    r = C.rep("D4", "irr2")
    assert direct_sum([r, r], name="two").name == "two"
    # Building the same sum twice is fine.
    assert direct_sum([r, r]).size == direct_sum([r, r]).size == 4


@pytest.mark.parametrize("spec", ["irr2", "reg", "triv", "quot", "irr1+triv"])
def test_single_summand(spec: str) -> None:
    # escnn registers irreps, the regular and quotient representations in the group under their
    # names; a sum of one of them alone must not collide with that name.
    r = C.rep("D4", spec)
    single = direct_sum([r])
    assert single.size == r.size
    np.testing.assert_allclose(C.matrices(single), C.mats("D4", spec), atol=1e-12)


def test_name_of_a_registered_representation() -> None:
    # Reusing the name of a representation escnn has registered is invalid input: a ValueError
    # naming it, not escnn's bare AssertionError.
    G = C.group("D4")
    reg = G.regular_representation
    assert reg.name in G.representations
    with pytest.raises(ValueError, match=reg.name):
        direct_sum([G.trivial_representation, G.trivial_representation], name=reg.name)


def test_different_groups() -> None:
    a, b = C.rep("C5", "reg"), C.rep("D3", "reg")
    with pytest.raises(ValueError, match="same group") as info:
        direct_sum([a, b])
    assert a.group.name in str(info.value)
    assert b.group.name in str(info.value)


def test_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        direct_sum([])


def test_not_a_representation() -> None:
    with pytest.raises(TypeError, match=r"reps\[1\]"):
        direct_sum([C.rep("C5", "reg"), np.eye(2)])  # type: ignore[list-item]
