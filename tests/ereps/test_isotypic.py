"""isotypic_decomp_rep and isotypic_slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ereps import GroupHomomorphismBasis, isotypic_decomp_rep, isotypic_slices
from ereps.testing import assert_equivariant
from tests.ereps import _cases as C


def _specs(key: str) -> list[str]:
    if key == "Oh":
        return ["irr6+triv+irr6+irr3", "Q:irr1+irr5+irr1"]
    specs = ["reg", "quot", "irr1+triv+irr1+reg", "Q:irr1+triv+irr1", "triv+irr1+irr1"]
    if key in ("O", "I"):
        specs.append("std3+irr2+std3+triv")
    return specs


ISO_CASES = [pytest.param(key, s, id=f"{key}:{s}") for key in C.ALL_GROUPS for s in _specs(key)]


@pytest.mark.parametrize(("key", "spec"), ISO_CASES)
def test_isotypic_decomposition(key: str, spec: str) -> None:
    r = C.rep(key, spec)
    G = r.group
    iso = isotypic_decomp_rep(r)
    assert iso.group == G
    assert iso.size == r.size
    # Same matrices ρ(g) for every g.
    np.testing.assert_allclose(C.matrices(iso), C.mats(key, spec), atol=1e-10)
    # Same irreps with the same multiplicities, grouped by type in the order of G.irreps().
    order = [tuple(irrep.id) for irrep in G.irreps()]
    iso_ids = [tuple(i) for i in iso.irreps]
    assert sorted(iso_ids, key=order.index) == iso_ids
    assert sorted(map(tuple, r.irreps), key=order.index) == iso_ids
    # The change of basis stays orthogonal (so the result can be used with GroupHomomorphismBasis).
    Q = np.asarray(iso.change_of_basis)
    np.testing.assert_allclose(Q.T @ Q, np.eye(r.size), atol=1e-10)
    np.testing.assert_allclose(np.asarray(iso.change_of_basis_inv), Q.T, atol=1e-10)
    # In the spectral coordinates Q⁻¹x, ρ(g) is the block diagonal of the irreps in iso.irreps.
    irreps = [G.irrep(*i) for i in iso_ids]
    for i, g in enumerate(list(G.elements)[:6]):
        spectral = Q.T @ C.mats(key, spec)[i] @ Q
        expected = C.block_diag([np.asarray(irrep(g)) for irrep in irreps])
        np.testing.assert_allclose(spectral, expected, atol=1e-10)
    # One contiguous slice per type, in order, covering the space, of size multiplicity × dim.
    slices = isotypic_slices(iso)
    assert list(slices) == list(dict.fromkeys(iso_ids))
    offset = 0
    for irrep_id, sl in slices.items():
        assert sl.start == offset
        assert sl.step is None
        m = sum(1 for i in r.irreps if tuple(i) == irrep_id)
        assert sl.stop - sl.start == m * G.irrep(*irrep_id).size
        offset = sl.stop
    assert offset == r.size
    assert iso.attributes["isotypic_slices"] == slices


@pytest.mark.parametrize("key", C.SMALL_GROUPS)
def test_isotypic_rep_is_equivalent_to_the_original(key: str) -> None:
    # The identity map is equivariant from rep to its isotypic version (equal matrices).
    r = C.rep(key, "Q:irr1+triv+irr1")
    iso = isotypic_decomp_rep(r)
    basis = GroupHomomorphismBasis(r, iso)
    eye = np.eye(r.size)
    projected = basis.orthogonal_projection(torch.from_numpy(eye)).numpy()
    np.testing.assert_allclose(projected, eye, atol=1e-10)
    # The same through the shipped helper, for every element (it names the worst if not).
    assert_equivariant(lambda x: x, r, iso, tol=1e-12)


def test_isotypic_slices_of_a_grouped_representation_without_cache() -> None:
    r = C.rep("D4", "triv+irr2+irr2+irr4")
    assert isotypic_slices(r) == {(0, 0): slice(0, 1), (1, 1): slice(1, 5), (0, 2): slice(5, 6)}


def test_isotypic_slices_of_an_ungrouped_representation() -> None:
    r = C.rep("D4", "irr2+triv+irr2")
    with pytest.raises(ValueError, match="isotypic_decomp_rep") as info:
        isotypic_slices(r)
    assert r.name in str(info.value)


def test_isotypic_decomp_rep_twice_and_of_its_own_result() -> None:
    r = C.rep("O", "std3+triv+std3")
    first = isotypic_decomp_rep(r)
    second = isotypic_decomp_rep(r)
    assert first.irreps == second.irreps
    again = isotypic_decomp_rep(first)
    assert [tuple(i) for i in again.irreps] == [tuple(i) for i in first.irreps]
    assert isotypic_slices(again) == isotypic_slices(first)


def test_not_a_representation() -> None:
    with pytest.raises(TypeError, match="Representation"):
        isotypic_decomp_rep(np.eye(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Representation"):
        isotypic_slices("regular")  # type: ignore[arg-type]
