"""Symmetric statistics: brute force over the augmented data set, equivariance, degenerate data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ereps import group_average, symmetric_covariance, symmetric_mean, whitening_transform
from tests.ereps import _cases as C

# (group, representation): complex-type irreps (cyclic), real-type ones (dihedral), multiplicities
# (regular, repeated irreps), a permutation quotient, a random orthogonal change of basis, the 3-D
# standard irrep of the octahedral group next to others, and a direct-product group (O × C2).
CASES = [
    ("C5", "irr1+irr1+triv+irr2"),
    ("C6", "reg"),
    ("D3", "Q:reg+triv"),
    ("D4", "quot+irr2+irr4"),
    ("O", "std3+irr2+triv+std3"),
    ("Oh", "irr6+triv+irr5+irr5"),
]
IDS = [f"{k}:{s}" for k, s in CASES]


def skewed_data(n: int, size: int, seed: int) -> C.Mat:
    """Anisotropic, off-centre, heavy-tailed samples: nothing about them is symmetric."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((size, size)) * np.linspace(0.1, 3.0, size)
    base = rng.exponential(size=(n, size)) ** 2
    return np.asarray(base @ mixing + rng.standard_normal(size) * 4.0, dtype=np.float64)


def augmented(x: C.Mat, mats: C.Mat) -> C.Mat:
    """Every sample transformed by every group element: shape (|G| * N, size)."""
    return np.asarray(np.einsum("gij,nj->gni", mats, x).reshape(-1, x.shape[-1]))


@pytest.mark.parametrize(("key", "spec"), CASES, ids=IDS)
def test_moments_are_those_of_the_augmented_data(key: str, spec: str) -> None:
    r, M = C.rep(key, spec), C.mats(key, spec)
    x = skewed_data(64, r.size, seed=1)
    aug = augmented(x, M)
    mean = symmetric_mean(torch.from_numpy(x), r).numpy()
    cov = symmetric_covariance(torch.from_numpy(x).reshape(8, 8, r.size), r).numpy()
    np.testing.assert_allclose(mean, aug.mean(axis=0), atol=1e-10)
    np.testing.assert_allclose(cov, np.cov(aug.T, bias=True), atol=1e-9, rtol=1e-9)
    # Both are equivariant objects: ρ(g) μ = μ and ρ(g) Σ = Σ ρ(g).
    np.testing.assert_allclose(M @ mean, np.broadcast_to(mean, (len(M), r.size)), atol=1e-10)
    np.testing.assert_allclose(M @ cov, cov @ M, atol=1e-9)


@pytest.mark.parametrize(("key", "spec"), CASES, ids=IDS)
@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_whitening_commutes_and_inverts(key: str, spec: str, diagonal: bool) -> None:
    r, M = C.rep(key, spec), C.mats(key, spec)
    x = torch.from_numpy(skewed_data(200, r.size, seed=2))
    cov = symmetric_covariance(x, r)
    S, S_inv = whitening_transform(cov, r, diagonal=diagonal)
    s, s_inv = S.numpy(), S_inv.numpy()
    np.testing.assert_allclose(s, s.T, atol=1e-12)
    np.testing.assert_allclose(s @ s_inv, np.eye(r.size), atol=1e-9)
    np.testing.assert_allclose(M @ s, s @ M, atol=1e-9)
    np.testing.assert_allclose(M @ s_inv, s_inv @ M, atol=1e-9)
    assert np.linalg.eigvalsh(s).min() > 0
    white = s @ cov.numpy() @ s
    if diagonal:
        # One unit variance per irreducible copy: the trace of each copy's diagonal block.
        q = np.asarray(r.change_of_basis)
        spectral = np.diagonal(q.T @ white @ q)
        offset = 0
        for irrep_id in r.irreps:
            d = r.group.irrep(*irrep_id).size
            np.testing.assert_allclose(spectral[offset : offset + d].mean(), 1.0, rtol=1e-9)
            offset += d
    else:
        np.testing.assert_allclose(white, np.eye(r.size), atol=1e-8)


def test_group_average_projects_onto_the_commutant() -> None:
    r, M = C.rep("C6", "irr1+irr1+triv"), C.mats("C6", "irr1+irr1+triv")
    m = torch.randn(r.size, r.size, dtype=torch.float64)
    avg = group_average(m, r).numpy()
    np.testing.assert_allclose(M @ avg, avg @ M, atol=1e-12)
    # Idempotent, and the brute-force average.
    np.testing.assert_allclose(group_average(torch.from_numpy(avg), r).numpy(), avg, atol=1e-12)
    brute = np.mean([g @ m.numpy() @ g.T for g in M], axis=0)
    np.testing.assert_allclose(avg, brute, atol=1e-12)
    # The commutant of two copies of a complex-type 2-D irrep is 8-dimensional (2·2·2), not the
    # 4·1 that a real-type irrep would give: the projection is not just per-block scalars.
    images = np.stack(
        [
            group_average(torch.from_numpy(e.reshape(r.size, r.size)), r).numpy().ravel()
            for e in np.eye(r.size * r.size)
        ]
    )
    assert np.linalg.matrix_rank(images, tol=1e-9) == 2 * 2 * 2 + 1


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_degenerate_directions_are_left_unscaled(diagonal: bool) -> None:
    key, spec = "D4", "irr1+triv+irr2+reg"
    r, M = C.rep(key, spec), C.mats(key, spec)
    x = skewed_data(100, r.size, seed=3)
    # Zero variance in G-invariant subspaces: the sign irrep's coordinate is constant zero, the
    # trivial one constant 5, and the 2-D irrep's copy constant zero.
    x[:, 0] = 0.0
    x[:, 1] = 5.0
    x[:, 2:4] = 0.0
    cov = symmetric_covariance(torch.from_numpy(x), r)
    S, S_inv = whitening_transform(cov, r, diagonal=diagonal)
    s = S.numpy()
    assert np.isfinite(s).all()
    assert np.isfinite(S_inv.numpy()).all()
    np.testing.assert_allclose(s[:4, :4], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(s[:4, 4:], 0.0, atol=1e-12)
    # The other directions are whitened.
    white = s @ cov.numpy() @ s
    if not diagonal:
        np.testing.assert_allclose(white[4:, 4:], np.eye(r.size - 4), atol=1e-8)
    np.testing.assert_allclose(M @ s, s @ M, atol=1e-9)
    np.testing.assert_allclose(s @ S_inv.numpy(), np.eye(r.size), atol=1e-9)


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_constant_and_single_samples(diagonal: bool) -> None:
    r = C.rep("C5", "irr1+triv")
    constant = torch.full((10, r.size), 2.0, dtype=torch.float64)
    S, S_inv = whitening_transform(symmetric_covariance(constant, r), r, diagonal=diagonal)
    # The orbit of (2, 2) under C5 is spread in the plane: that irrep gets a finite scale; the
    # trivial coordinate has zero variance and is left unscaled.
    assert torch.isfinite(S).all()
    assert S[2, 2].item() == pytest.approx(1.0)
    one = symmetric_covariance(torch.zeros(1, r.size, dtype=torch.float64), r)
    assert torch.equal(one, torch.zeros_like(one))
    S, S_inv = whitening_transform(one, r, diagonal=diagonal)
    torch.testing.assert_close(S, torch.eye(r.size, dtype=torch.float64))
    torch.testing.assert_close(S_inv, torch.eye(r.size, dtype=torch.float64))


def test_invariant_mean_of_a_planar_cloud_is_the_origin() -> None:
    # The rotation irrep has no invariant vector: the symmetric mean is zero however far off the
    # data is, while a per-coordinate mean would not be.
    r = C.rep("C5", "irr1")
    x = torch.randn(50, 2, dtype=torch.float64) + torch.tensor([7.0, -3.0], dtype=torch.float64)
    torch.testing.assert_close(symmetric_mean(x, r), torch.zeros(2, dtype=torch.float64))


def test_float32_data_is_accumulated_in_float64() -> None:
    r = C.rep("D4", "triv")
    x = torch.full((100_000, 1), 1e4, dtype=torch.float32)
    x[::2] += 1.0
    assert symmetric_covariance(x, r).item() == pytest.approx(0.25, rel=1e-6)


def test_errors() -> None:
    r = C.rep("C5", "irr1+triv")
    good = torch.randn(4, r.size, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"samples as a torch.Tensor of shape \(\.\.\., 3\)"):
        symmetric_mean(good.numpy(), r)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"floating-point samples; got dtype torch\.int64"):
        symmetric_mean(torch.ones(4, 3, dtype=torch.long), r)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\) .* got \(4, 2\)"):
        symmetric_covariance(torch.randn(4, 2), r)
    with pytest.raises(ValueError, match="at least one sample"):
        symmetric_mean(torch.randn(0, 3), r)
    bad = good.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite samples; got 1 of 4"):
        symmetric_covariance(bad, r)
    with pytest.raises(ValueError, match=r"mean of shape \(3,\); got \(2,\)"):
        symmetric_covariance(good, r, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"cov of shape \(3, 3\) .* got \(2, 2\)"):
        whitening_transform(torch.eye(2), r)
    with pytest.raises(ValueError, match="rtol in"):
        whitening_transform(torch.eye(3), r, rtol=1.5)
    with pytest.raises(ValueError, match="positive semidefinite"):
        whitening_transform(-torch.eye(3), r)
    with pytest.raises(TypeError, match="Representation"):
        group_average(torch.eye(3), "irr1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="orthogonal change of basis"):
        symmetric_mean(good, C.rep("C5", "N:irr1+triv"))
