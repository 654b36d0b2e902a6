"""GroupHomomorphismBasis, endomorphism_basis and initialization, against brute force."""

from __future__ import annotations

import functools
import math

import escnn.group as eg
import numpy as np
import pytest
import torch

from ereps import (
    INIT_SCHEMES,
    ExactBuffersModule,
    GroupHomomorphismBasis,
    InitScheme,
    endomorphism_basis,
    init_std,
)
from tests.ereps import _cases as C


def _hom_cases(key: str) -> list[tuple[str, str]]:
    n = C.NUM_IRREPS[key]
    cases = [(f"irr{k}", f"irr{k}") for k in range(n)]
    cases.append(("irr1", f"irr{n - 1}"))
    if key == "Oh":
        # irr6 = ((1,), (1,), 0): the vector representation of O_h (inversion acts by -1).
        return [
            *cases,
            ("irr1+irr6", "irr6+triv+irr1"),
            ("Q:irr1+irr2+irr3", "irr1+irr1+irr2+irr6"),
            ("irr6+irr6+irr3", "Q:irr6+triv+irr6"),
        ]
    cases += [
        ("triv", "reg"),
        ("reg", "triv"),
        ("reg", "reg"),
        ("irr1+triv+irr1", "reg+irr1"),
        ("quot", "reg"),
        ("quot", "quot"),
        ("quot+irr1", "triv+irr1+quot"),
        ("Q:irr1+reg", "Q:irr1+triv+irr1"),
        ("Q:quot", "irr1+quot"),
    ]
    if key in ("O", "I"):
        # The standard 3-D irrep meeting the regular, the other 3-D irrep (irr2 of O, irr3 of I)
        # and itself: where the library the seed API comes from gets the bases wrong.
        other3 = "irr2" if key == "O" else "irr3"
        cases += [
            ("std3", "std3+reg"),
            ("std3+std3", f"std3+{other3}+triv"),
            ("reg", "std3+std3"),
            (f"Q:std3+triv+{other3}", f"{other3}+std3+std3"),
            ("quot", "std3+triv"),
        ]
    return cases


HOM_CASES = [
    pytest.param(key, a, b, id=f"{key}:{a}->{b}")
    for key in C.ALL_GROUPS
    for a, b in _hom_cases(key)
]

# Above this many unknowns the SVD reference gets slow; another reference is used there.
MAX_SVD_UNKNOWNS = 1500


@functools.cache
def _basis(key: str, a: str, b: str) -> GroupHomomorphismBasis:
    return GroupHomomorphismBasis(C.rep(key, a), C.rep(key, b))


@functools.cache
def _dense_basis(key: str, a: str, b: str) -> torch.Tensor:
    """All basis maps, shape (dim, out, in), float64."""
    basis = _basis(key, a, b)
    return basis(torch.eye(basis.dim, dtype=torch.float64))


def _equivariance_errors(key: str, a: str, b: str, W: torch.Tensor) -> torch.Tensor:
    """max_g ‖ρ_out(g) W − W ρ_in(g)‖_F / ‖W‖_F for each map in the batch ``W`` (..., out, in)."""
    m_in = torch.from_numpy(C.mats(key, a))
    m_out = torch.from_numpy(C.mats(key, b))
    Wg = W.unsqueeze(-3)  # (..., 1, out, in)
    diff = m_out @ Wg - Wg @ m_in
    num = torch.linalg.matrix_norm(diff).amax(dim=-1)
    errors: torch.Tensor = num / torch.linalg.matrix_norm(W)
    return errors


# --------------------------------------------------------------------------------------------------
# The basis against brute force


def test_generators_generate_the_group() -> None:
    # The null-space reference below uses G.generators; check that they generate G, so that
    # commuting with them is the same as commuting with every element.
    for key in C.ALL_GROUPS:
        G = C.group(key)
        assert len(G.irreps()) == C.NUM_IRREPS[key]
        assert C.generated_order(C.faithful_matrices(key, G.generators)) == G.order(), key


@pytest.mark.parametrize(("key", "a", "b"), HOM_CASES)
def test_dim_matches_character_formula(key: str, a: str, b: str) -> None:
    r_in, r_out = C.rep(key, a), C.rep(key, b)
    expected = C.character_hom_dim(key, a, b)
    assert abs(expected - round(expected)) < 1e-9
    basis = _basis(key, a, b)
    assert basis.dim == round(expected)
    # The same count through the multiplicities: Σ_k m_in,k m_out,k dim End(ρ_k).
    G = r_in.group
    by_type = 0
    for irrep in G.irreps():
        m_in = sum(1 for i in r_in.irreps if tuple(i) == tuple(irrep.id))
        m_out = sum(1 for i in r_out.irreps if tuple(i) == tuple(irrep.id))
        by_type += m_in * m_out * irrep.sum_of_squares_constituents
    assert basis.dim == by_type


@pytest.mark.parametrize(("key", "a", "b"), HOM_CASES)
def test_span_equals_brute_force_null_space(key: str, a: str, b: str) -> None:
    r_in, r_out = C.rep(key, a), C.rep(key, b)
    n = r_in.size * r_out.size
    B = _dense_basis(key, a, b).reshape(-1, n).numpy()
    if n <= MAX_SVD_UNKNOWNS:
        null, gap = C.hom_null_space(key, a, b)
        assert gap > 1e-4, "numerical rank of the reference is ambiguous"
        assert null.shape[0] == B.shape[0]
        # Equal orthogonal projectors onto the two subspaces.
        np.testing.assert_allclose(B.T @ B, null.T @ null, atol=1e-9)
        return
    # Too large for the SVD: only regular -> regular is listed that large. Its commutant is spanned
    # by the permutation matrices 1[g_a⁻¹ g_b = g_k], read off the regular matrices themselves:
    # ρ_reg(g_a) e_k = e_b  <=>  g_a g_k = g_b.
    assert a == b == "reg", (a, b)
    R = C.mats(key, "reg")
    order = R.shape[0]
    table = np.argmax(R, axis=2)
    E = np.stack([(table == k).reshape(-1) for k in range(order)]).astype(np.float64)
    E /= np.sqrt(order)  # orthonormal rows (disjoint supports of size |G|)
    np.testing.assert_allclose(E @ E.T, np.eye(order), atol=1e-12)
    assert B.shape[0] == order
    # Both orthonormal, same dimension, and B inside span(E): the spans are equal.
    np.testing.assert_allclose((B @ E.T) @ E, B, atol=1e-9)


@pytest.mark.parametrize(("key", "a", "b"), HOM_CASES)
def test_basis_maps_are_equivariant(key: str, a: str, b: str) -> None:
    dense = _dense_basis(key, a, b)
    if dense.shape[0] == 0:
        return
    assert dense.dtype == torch.float64
    assert float(_equivariance_errors(key, a, b, dense).max()) <= 1e-10
    # A random combination too (the module's forward on a batch of coefficients).
    basis = _basis(key, a, b)
    W = basis(torch.randn(4, basis.dim, dtype=torch.float64))
    assert W.shape == (4, basis.out_rep.size, basis.in_rep.size)
    assert float(_equivariance_errors(key, a, b, W).max()) <= 1e-10


@pytest.mark.parametrize(("key", "a", "b"), HOM_CASES)
def test_basis_is_frobenius_orthonormal(key: str, a: str, b: str) -> None:
    dense = _dense_basis(key, a, b)
    B = dense.reshape(dense.shape[0], basis_size := dense.shape[1] * dense.shape[2])
    assert B.shape == (_basis(key, a, b).dim, basis_size)
    torch.testing.assert_close(
        B @ B.T, torch.eye(B.shape[0], dtype=torch.float64), atol=1e-10, rtol=0
    )


@pytest.mark.parametrize(("key", "a", "b"), HOM_CASES)
def test_orthogonal_projection(key: str, a: str, b: str) -> None:
    basis = _basis(key, a, b)
    r_in, r_out = basis.in_rep, basis.out_rep
    X = torch.randn(3, r_out.size, r_in.size, dtype=torch.float64)
    Y = torch.randn(3, r_out.size, r_in.size, dtype=torch.float64)
    PX, PY = basis.orthogonal_projection(X), basis.orthogonal_projection(Y)
    assert PX.shape == X.shape
    # Equals the group average (1/|G|) Σ_g ρ_out(g) X ρ_in(g)ᵀ.
    np.testing.assert_allclose(PX.numpy(), C.group_average(key, a, b, X.numpy()), atol=1e-10)
    # Idempotent.
    torch.testing.assert_close(basis.orthogonal_projection(PX), PX, atol=1e-10, rtol=0)
    # Self-adjoint: ⟨ΠX, Y⟩ = ⟨X, ΠY⟩.
    torch.testing.assert_close(
        (PX * Y).sum(dim=(-2, -1)), (X * PY).sum(dim=(-2, -1)), atol=1e-10, rtol=0
    )
    # Fixes equivariant maps, and the coefficients of a synthesized map are the ones used.
    c = torch.randn(2, basis.dim, dtype=torch.float64)
    W = basis(c)
    torch.testing.assert_close(basis.orthogonal_projection(W), W, atol=1e-10, rtol=0)
    torch.testing.assert_close(basis.coefficients(W), c, atol=1e-10, rtol=0)


def test_reg_to_reg_is_the_group_convolution_space() -> None:
    # Hom_G(reg, reg) has dimension |G| (one weight per group element).
    for key in C.GROUPS_WITH_REGULAR:
        assert _basis(key, "reg", "reg").dim == C.group(key).order()


def test_complex_irrep_endomorphisms_are_not_just_scalars() -> None:
    # End_G of a complex-type irrep is 2-D: scalars and a rotation by 90°. A basis that only held
    # multiples of the identity would give dim 1.
    dense = _dense_basis("C5", "irr1", "irr1")
    assert dense.shape == (2, 2, 2)
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    span = dense.reshape(2, 4)
    for target in (torch.eye(2, dtype=torch.float64), J):
        t = target.reshape(4) / math.sqrt(2.0)
        residual = t - span.T @ (span @ t)
        assert float(residual.norm()) < 1e-10


# --------------------------------------------------------------------------------------------------
# endomorphism_basis


ENDO_CASES = [
    pytest.param(key, i, id=f"{key}:irr{i}")
    for key in C.ALL_GROUPS
    for i in range(C.NUM_IRREPS[key])
]
_END_DIM = {"R": 1, "C": 2, "H": 4}


@pytest.mark.parametrize(("key", "i"), ENDO_CASES)
def test_endomorphism_basis(key: str, i: int) -> None:
    G = C.group(key)
    irrep = G.irreps()[i]
    basis = endomorphism_basis(G, irrep.id)
    d = irrep.size
    # dim End_G = Σ_g χ(g)² / |G| for a real representation.
    frobenius_schur = C.character_hom_dim(key, f"irr{i}", f"irr{i}")
    assert basis.shape == (_END_DIM[irrep.type], d, d)
    assert basis.shape[0] == round(frobenius_schur) == irrep.sum_of_squares_constituents
    assert basis.dtype == torch.float64
    flat = basis.reshape(basis.shape[0], d * d)
    torch.testing.assert_close(flat @ flat.T, torch.eye(basis.shape[0], dtype=torch.float64))
    mats = torch.from_numpy(C.mats(key, f"irr{i}"))
    Xs = basis.unsqueeze(1)
    assert float((mats @ Xs - Xs @ mats).abs().max()) < 1e-10


def test_cyclic_complex_type_irrep_has_two_dimensional_endomorphisms() -> None:
    G = C.group("C5")
    assert G.irrep(1).type == "C"
    assert endomorphism_basis(G, (1,)).shape == (2, 2, 2)
    assert endomorphism_basis(G, (0,)).shape == (1, 1, 1)


def test_quaternionic_type_irreps() -> None:
    # escnn builds quaternionic-type ('H') irreps only as products of 'H' irreps, and none of its
    # finite groups (cyclic, dihedral, (full) octahedral, (full) icosahedral, products) has one.
    found = [
        (key, irrep.id)
        for key in C.ALL_GROUPS
        for irrep in C.group(key).irreps()
        if irrep.type == "H"
    ]
    if not found:
        pytest.skip("no escnn finite group has a quaternionic-type irrep (End_G of dimension 4)")
    for key, irrep_id in found:  # pragma: no cover - kept for a future escnn
        assert endomorphism_basis(C.group(key), irrep_id).shape[0] == 4


# --------------------------------------------------------------------------------------------------
# initialize_params

INIT_CASES = [
    pytest.param("C5", "reg", "reg", id="C5:reg->reg"),
    pytest.param("C5", "irr1+triv", "irr1+irr1+reg", id="C5:irr1+triv->irr1+irr1+reg"),
    pytest.param("D4", "irr1+triv+irr2", "reg+irr2", id="D4:mixed"),
    pytest.param("O", "std3", "std3+reg", id="O:std3->std3+reg"),
    pytest.param("I", "reg+reg", "reg", id="I:2reg->reg"),
]


@pytest.mark.parametrize(("key", "a", "b"), INIT_CASES)
@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_initialize_params_matches_unconstrained_variance(
    key: str, a: str, b: str, scheme: InitScheme
) -> None:
    basis = GroupHomomorphismBasis(C.rep(key, a), C.rep(key, b))
    fan_in, fan_out = basis.in_rep.size, basis.out_rep.size
    expected_var = 2.0 / (fan_in + fan_out) if scheme.startswith("xavier") else 2.0 / fan_in
    assert init_std(scheme, fan_in, fan_out) == pytest.approx(math.sqrt(expected_var))
    # ≥ 4000 coefficient samples: the estimate's relative spread is ≈ √(2/4000) ≈ 2%.
    draws = max(1, math.ceil(4000 / basis.dim))
    gen = torch.Generator().manual_seed(1234)
    coeffs = torch.stack(
        [basis.initialize_params(scheme, dtype=torch.float64, generator=gen) for _ in range(draws)]
    )
    assert coeffs.shape == (draws, basis.dim)
    W = basis(coeffs)
    assert float(W.pow(2).mean()) == pytest.approx(expected_var, rel=0.1)
    # The coefficients themselves: zero mean, the shape of the named distribution.
    sigma_c = math.sqrt(expected_var * fan_in * fan_out / basis.dim)
    z = coeffs.flatten() / sigma_c
    assert abs(float(z.mean())) < 0.1
    kurtosis = float(z.pow(4).mean() / z.pow(2).mean() ** 2)
    if scheme.endswith("uniform"):
        assert float(z.abs().max()) <= math.sqrt(3.0) + 1e-9
        assert kurtosis == pytest.approx(1.8, abs=0.25)
    else:
        assert float(z.abs().max()) > math.sqrt(3.0)
        assert kurtosis == pytest.approx(3.0, abs=0.5)


def test_initialize_params_options() -> None:
    basis = _basis("D4", "irr1+triv+irr1", "reg+irr1")
    default = basis.initialize_params()
    assert default.shape == (basis.dim,)
    assert default.dtype == torch.float32
    a = basis.initialize_params(
        "kaiming_uniform", dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    b = basis.initialize_params(
        "kaiming_uniform", dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_initialize_params_of_an_empty_hom_space() -> None:
    basis = _basis("D4", "irr1", "irr2")
    assert basis.dim == 0
    coeffs = basis.initialize_params("xavier_uniform")
    assert coeffs.shape == (0,)
    W = basis(coeffs)
    assert W.shape == (basis.out_rep.size, basis.in_rep.size)
    assert float(W.abs().max()) == 0.0
    assert basis.orthogonal_projection(torch.randn(2, *W.shape)).abs().max() == 0.0


def test_initialize_params_unknown_scheme() -> None:
    basis = _basis("C5", "reg", "reg")
    with pytest.raises(ValueError, match="orthogonal") as info:
        basis.initialize_params("orthogonal")  # type: ignore[arg-type]
    for name in INIT_SCHEMES:
        assert name in str(info.value)


# --------------------------------------------------------------------------------------------------
# The module: dtypes, devices, validation


def test_float_then_double_keeps_float64_accuracy() -> None:
    a, b = "Q:std3+triv+irr2", "irr2+std3+std3"
    basis = GroupHomomorphismBasis(C.rep("O", a), C.rep("O", b))
    c = torch.randn(basis.dim, dtype=torch.float64)
    before = basis(c)
    basis.float()
    W32 = basis(c.float())
    assert W32.dtype == torch.float32
    assert float(_equivariance_errors("O", a, b, W32.double())) < 1e-5
    basis.double()
    after = basis(c)
    assert after.dtype == torch.float64
    assert float(_equivariance_errors("O", a, b, after)) <= 1e-10
    torch.testing.assert_close(after, before, atol=1e-14, rtol=0)
    assert list(basis.buffers()) == []
    for const in _constants(basis):
        assert const.dtype == torch.float64


def _constants(module: torch.nn.Module) -> list[torch.Tensor]:
    return [
        const
        for m in module.modules()
        if isinstance(m, ExactBuffersModule)
        for _, const in m.named_constants(recurse=False)
    ]


def test_constants_follow_the_device_and_are_not_state() -> None:
    basis = GroupHomomorphismBasis(C.rep("D4", "reg"), C.rep("D4", "irr1+irr3"))
    assert basis.state_dict() == {}
    assert list(basis.buffers()) == []
    basis.to("meta")
    constants = _constants(basis)
    assert constants
    assert all(c.device.type == "meta" and c.dtype == torch.float64 for c in constants)
    W = basis(torch.randn(basis.dim, device="meta"))
    assert W.device.type == "meta"
    assert W.shape == (basis.out_rep.size, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda() -> None:  # pragma: no cover - exercised on a GPU machine
    a, b = "Q:irr1+reg", "Q:irr1+triv+irr1"
    basis = GroupHomomorphismBasis(C.rep("O", a), C.rep("O", b)).cuda()
    c = torch.randn(5, basis.dim, dtype=torch.float64, device="cuda")
    W = basis(c)
    assert W.device.type == "cuda"
    assert float(_equivariance_errors("O", a, b, W.cpu()).max()) <= 1e-10
    torch.testing.assert_close(basis.orthogonal_projection(W), W, atol=1e-10, rtol=0)


def test_bad_coefficient_shape() -> None:
    basis = _basis("D4", "irr1+triv+irr1", "reg+irr1")
    with pytest.raises(ValueError, match=rf"\(\.\.\., {basis.dim}\)") as info:
        basis(torch.randn(2, basis.dim + 1))
    assert str((2, basis.dim + 1)) in str(info.value)
    with pytest.raises(ValueError, match=rf"\(\.\.\., {basis.dim}\)"):
        basis(torch.tensor(1.0))
    with pytest.raises(TypeError, match="Tensor"):
        basis(np.zeros(basis.dim))  # type: ignore[arg-type]


def test_bad_weight_shape() -> None:
    basis = _basis("D4", "irr2+triv+irr2", "reg+irr1")
    n_out, n_in = basis.out_rep.size, basis.in_rep.size
    assert (n_out, n_in) == (9, 5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 9, 5\)") as info:
        basis.orthogonal_projection(torch.randn(5, 9))
    assert "(5, 9)" in str(info.value)
    with pytest.raises(ValueError, match=r"\(\.\.\., 9, 5\)"):
        basis.coefficients(torch.randn(9))


def test_representations_of_different_groups() -> None:
    a, b = C.group("C5"), C.group("D4")
    with pytest.raises(ValueError, match="same group") as info:
        GroupHomomorphismBasis(a.regular_representation, b.regular_representation)
    assert a.name in str(info.value)
    assert b.name in str(info.value)


def test_not_a_representation() -> None:
    G = C.group("C5")
    with pytest.raises(TypeError, match="in_rep"):
        GroupHomomorphismBasis(np.eye(5), G.regular_representation)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out_rep"):
        GroupHomomorphismBasis(G.regular_representation, "regular")  # type: ignore[arg-type]


def test_non_orthogonal_change_of_basis() -> None:
    with pytest.raises(ValueError, match="orthogonal"):
        GroupHomomorphismBasis(C.rep("D4", "N:irr2+reg"), C.rep("D4", "reg"))


def test_continuous_group() -> None:
    G = eg.so2_group(2)
    with pytest.raises(ValueError, match="finite"):
        GroupHomomorphismBasis(G.irrep(1), G.irrep(1))


def test_repr_mentions_the_reps_and_the_dimension() -> None:
    basis = _basis("D4", "irr1+triv+irr1", "reg+irr1")
    text = repr(basis)
    assert "irr1+triv+irr1" in text
    assert f"dim={basis.dim}" in text
