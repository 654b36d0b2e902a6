"""Tests of the spectral basis of the regular representation (ereps._spectral)."""

from __future__ import annotations

import escnn.group as eg
import numpy as np
import pytest
import torch

from ereps import Group, check_equivariance, regular_spectral_basis, rep_matrices, spectral_rep

GROUPS = {
    "C2": lambda: eg.cyclic_group(2),
    "C8": lambda: eg.cyclic_group(8),
    "D6": lambda: eg.dihedral_group(6),
    "O": eg.octa_group,
    "ico": eg.ico_group,
}


def _group(name: str) -> Group:
    group: Group = GROUPS[name]()
    return group


@pytest.mark.parametrize("name", list(GROUPS))
def test_transform_block_diagonalizes_every_element(name: str) -> None:
    """``T^T ρ_reg(g) T`` is block diagonal by irrep block, with ``rows`` equal sub-blocks."""
    group = _group(name)
    basis = regular_spectral_basis(group)
    t = basis.transform
    n = basis.order
    assert torch.allclose(t.T @ t, torch.eye(n, dtype=torch.float64), atol=1e-12)
    spec = t.T @ rep_matrices(group.regular_representation) @ t
    inside = torch.zeros(n, n, dtype=torch.bool)
    for b in basis.blocks:
        inside[b.offset : b.offset + b.size, b.offset : b.offset + b.size] = True
    assert float(spec[:, ~inside].abs().max()) < 1e-12
    # Σ_k m_k d_k = |G| and Σ_k d_k² / e_k = |G| (Plancherel with the endomorphism types).
    assert sum(b.size for b in basis.blocks) == n
    assert sum(b.dim**2 // b.endo_dim for b in basis.blocks) == n


@pytest.mark.parametrize("name", list(GROUPS))
def test_trivial_coordinate_is_the_normalized_constant(name: str) -> None:
    basis = regular_spectral_basis(_group(name))
    column = basis.transform[:, basis.trivial_index]
    expected = torch.full_like(column, 1.0 / basis.order**0.5)
    assert torch.allclose(column, expected, atol=1e-12)


@pytest.mark.parametrize("name", list(GROUPS))
def test_endomorphisms_act_row_by_row(name: str) -> None:
    """Every element of End_G(ρ_reg) (brute force: commutant of all ρ_reg(g)) is, in the
    spectral basis, I_rows ⊗ M per block with M made of left-multiplication blocks."""
    group = _group(name)
    basis = regular_spectral_basis(group)
    mats = rep_matrices(group.regular_representation).numpy()
    n = basis.order
    # A random element of the commutant: the group average of g A g^{-1}.
    a = np.random.default_rng(0).normal(size=(n, n))
    avg = sum(m @ a @ m.T for m in mats) / len(mats)
    spec = basis.transform.numpy().T @ avg @ basis.transform.numpy()
    for b in basis.blocks:
        f, rows = b.features, b.rows
        blk = spec[b.offset : b.offset + b.size, b.offset : b.offset + b.size]
        first = blk[:f, :f]
        np.testing.assert_allclose(blk, np.kron(np.eye(rows), first), atol=1e-10)
        # Each e×e sub-block lies in the span of the left-multiplication matrices.
        left = b.left_mult.numpy()
        for mu in range(b.multiplicity):
            for nu in range(b.multiplicity):
                sub = first[mu * b.endo_dim : (mu + 1) * b.endo_dim][
                    :, nu * b.endo_dim : (nu + 1) * b.endo_dim
                ]
                coeffs = np.einsum("jpq,pq->j", left, sub) / b.endo_dim
                np.testing.assert_allclose(np.einsum("j,jpq->pq", coeffs, left), sub, atol=1e-10)


def test_endomorphism_types_of_cyclic_groups() -> None:
    """C8: trivial and sign real, three rotation irreps of complex type; MACs 14 vs 64."""
    basis = regular_spectral_basis(eg.cyclic_group(8))
    assert sorted((b.dim, b.endo_dim) for b in basis.blocks) == [(1, 1)] * 2 + [(2, 2)] * 3
    assert basis.macs_per_copy_pair() == 14


@pytest.mark.parametrize(("name", "macs"), [("C2", 2), ("D6", 20), ("O", 64), ("ico", 244)])
def test_multiply_adds(name: str, macs: int) -> None:
    assert regular_spectral_basis(_group(name)).macs_per_copy_pair() == macs


@pytest.mark.parametrize("name", ["C8", "D6"])
def test_spectral_rep_matrices(name: str) -> None:
    """spectral_rep(G, c) has the matrices (I ⊗ T)^T (I ⊗ ρ_reg(g)) (I ⊗ T)."""
    group = _group(name)
    t = regular_spectral_basis(group).transform
    reg = rep_matrices(group.regular_representation)
    spec = rep_matrices(spectral_rep(group, 2))
    expected = torch.stack([torch.kron(torch.eye(2, dtype=m.dtype), m) for m in t.T @ reg @ t])
    assert torch.allclose(spec, expected, atol=1e-12)
    # A linear map commuting with it: (I ⊗ T)^T W (I ⊗ T) for a group convolution W.
    assert (
        check_equivariance(lambda x: 2.0 * x, [spectral_rep(group, 2)], spectral_rep(group, 2))
        < 1e-12
    )


@pytest.mark.parametrize("copies", [0, -1, 1.5, True])
def test_spectral_rep_rejects_bad_copies(copies: object) -> None:
    with pytest.raises(ValueError, match="copies to be an int >= 1"):
        spectral_rep(eg.cyclic_group(4), copies)  # type: ignore[arg-type]
