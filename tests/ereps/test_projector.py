"""invariant_orthogonal_projector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ereps import invariant_orthogonal_projector
from ereps.testing import assert_equivariant
from tests.ereps import _cases as C


def _specs(key: str) -> list[str]:
    if key == "Oh":
        return ["irr6+triv+triv", "Q:irr1+triv+irr5", "irr5"]
    specs = ["reg", "triv", "irr1", "quot", "irr1+triv+triv+reg", "Q:quot+triv", "reg+reg"]
    if key in ("O", "I"):
        specs.append("std3+reg")
    return specs


PROJECTOR_CASES = [
    pytest.param(key, s, id=f"{key}:{s}") for key in C.ALL_GROUPS for s in _specs(key)
]


@pytest.mark.parametrize(("key", "spec"), PROJECTOR_CASES)
def test_invariant_projector(key: str, spec: str) -> None:
    r = C.rep(key, spec)
    P = invariant_orthogonal_projector(r)
    assert P.shape == (r.size, r.size)
    assert P.dtype == torch.float64
    p = P.numpy()
    M = C.mats(key, spec)
    np.testing.assert_allclose(p, p.T, atol=1e-12)
    np.testing.assert_allclose(p @ p, p, atol=1e-10)
    # Commutes with every ρ(g), and its image is fixed: ρ(g) P = P.
    np.testing.assert_allclose(M @ p, p @ M, atol=1e-10)
    np.testing.assert_allclose(M @ p, np.broadcast_to(p, M.shape), atol=1e-10)
    # Rank = multiplicity of the trivial irrep = dimension of the brute-force fixed space.
    trivial_id = tuple(r.group.trivial_representation.id)
    multiplicity = sum(1 for i in r.irreps if tuple(i) == trivial_id)
    assert int(np.linalg.matrix_rank(p, tol=1e-8)) == multiplicity
    assert float(np.trace(p)) == pytest.approx(multiplicity, abs=1e-10)
    # As a map, x ↦ P x is equivariant (default float64 tolerance, every element). The error is
    # relative: skipped where P = 0 up to round-off.
    if multiplicity > 0:
        assert_equivariant(lambda x: x @ P.T, r, r)
    assert round(C.character_hom_dim(key, "triv", spec)) == multiplicity
    # Every fixed vector is in the image: P x = x for x with ρ(g) x = x for all g.
    _, _, vt = np.linalg.svd(np.concatenate(list(M - np.eye(r.size))), full_matrices=False)
    fixed = vt[r.size - multiplicity :]
    np.testing.assert_allclose(fixed @ p, fixed, atol=1e-8)


def test_dtype_and_device() -> None:
    r = C.rep("D4", "reg+triv")
    P32 = invariant_orthogonal_projector(r, dtype=torch.float32)
    assert P32.dtype == torch.float32
    torch.testing.assert_close(P32.double(), invariant_orthogonal_projector(r), atol=1e-7, rtol=0)
    assert invariant_orthogonal_projector(r, device="meta").device.type == "meta"


def test_regular_projector_is_the_group_mean() -> None:
    # On a regular copy the invariant subspace is the constant functions: P = 11ᵀ / |G|.
    for key in C.SMALL_GROUPS:
        n = C.group(key).order()
        P = invariant_orthogonal_projector(C.rep(key, "reg"))
        torch.testing.assert_close(P, torch.full((n, n), 1.0 / n, dtype=torch.float64))


def test_non_orthogonal_change_of_basis() -> None:
    r = C.rep("D4", "N:triv+irr2")
    with pytest.raises(ValueError, match="orthogonal") as info:
        invariant_orthogonal_projector(r)
    assert r.name in str(info.value)


def test_not_a_representation() -> None:
    with pytest.raises(TypeError, match="Representation"):
        invariant_orthogonal_projector(np.eye(3))  # type: ignore[arg-type]
