"""eLinear and InvariantBias against brute force: characters, group actions, torch's init."""

from __future__ import annotations

import escnn.group as eg
import pytest
import torch
import torch.nn.functional as F

from elayers import InvariantBias, eLinear
from ereps import INIT_SCHEMES, InitScheme
from tests.elayers import _cases as C


def _linear_cases(key: str) -> list[tuple[str, str]]:
    if key == "Oh":
        # O_h = C2 × O: each new representation costs escnn ~1 s of matrices; irr6 is its 3-D
        # vector representation (the inversion acts by -1), meeting regular and quotient copies.
        return [("reg", "2reg"), ("irr6", "irr6+reg"), ("Q:irr6+triv", "quot+irr6")]
    if key == "I":
        # The icosahedral group is costly: its regular representation and the standard 3-D irrep
        # meeting others (the known trap) only.
        return [
            ("reg", "2reg"),
            ("std3", "std3+reg"),
            ("Q:std3+triv+irr3", "irr3+std3+std3"),
            ("quot", "std3+triv"),
        ]
    cases = [
        ("reg", "reg"),
        ("2reg", "3reg"),
        ("irr1", "2reg"),
        ("2reg", "irr1+triv"),
        ("Q:irr1+triv", "irr1+quot"),
        ("quot", "Q:quot"),
        ("P:reg", "reg"),
        ("triv", "reg+irr1"),
    ]
    if key == "O":
        # The standard 3-D irrep meeting other representations: the known trap.
        cases += [
            ("std3", "std3+reg"),
            ("std3+triv", "quot+std3"),
            ("reg", "std3+std3"),
            ("Q:std3+triv+irr2", "irr2+std3+std3"),
        ]
    return cases


LINEAR_CASES = [(key, a, b) for key in C.ALL_GROUPS for a, b in _linear_cases(key)]
LINEAR_IDS = [f"{k}-{a}->{b}" for k, a, b in LINEAR_CASES]


def _build(key: str, a: str, b: str, bias: bool = True) -> eLinear:
    layer = eLinear(C.rep(key, a), C.rep(key, b), bias=bias).double()
    C.perturb_(layer, scale=0.3)
    return layer


@pytest.mark.parametrize(("key", "a", "b"), LINEAR_CASES, ids=LINEAR_IDS)
def test_weight_commutes_and_bias_is_invariant(key: str, a: str, b: str) -> None:
    layer = _build(key, a, b)
    W = layer.weight.detach()
    m_in, m_out = C.mats_t(key, a), C.mats_t(key, b)
    assert W.shape == (m_out.shape[-1], m_in.shape[-1])
    assert W.abs().max() > 1e-3
    # ρ_out(g) W = W ρ_in(g) for every element.
    err = (m_out @ W - W @ m_in).abs().max().item()
    assert err < 1e-10 * max(1.0, W.abs().max().item())
    b_dense = layer.bias
    if C.hom_dim(key, "triv", b) == 0:
        assert b_dense is None
        return
    assert b_dense is not None
    b_dense = b_dense.detach()
    assert b_dense.abs().max() > 1e-3
    assert (m_out @ b_dense - b_dense).abs().max().item() < 1e-12


@pytest.mark.parametrize(("key", "a", "b"), LINEAR_CASES, ids=LINEAR_IDS)
def test_forward_is_f_linear_and_equivariant(key: str, a: str, b: str) -> None:
    layer = _build(key, a, b)
    x = C.seeded_randn(2, 3, C.rep(key, a).size)
    y = layer(x)
    bias = layer.bias
    torch.testing.assert_close(y, F.linear(x, layer.weight, bias), rtol=0, atol=1e-13)
    assert C.equivariance_error(layer, key, [a], b, [x]) < 1e-10
    layer32 = layer.float()
    err32 = C.equivariance_error(layer32, key, [a], b, [x.float()])
    assert err32 < 1e-5


@pytest.mark.parametrize(("key", "a", "b"), LINEAR_CASES, ids=LINEAR_IDS)
def test_parameters_span_the_whole_hom_space(key: str, a: str, b: str) -> None:
    layer = eLinear(C.rep(key, a), C.rep(key, b), bias=False).double()
    dim = C.hom_dim(key, a, b)
    assert layer.num_weights == dim
    if dim > 100:
        return
    p = layer.weight_params
    weights = []
    for i in range(dim):
        with torch.no_grad():
            p.zero_()
            p.view(-1)[i] = 1.0
        weights.append(layer.weight.detach().reshape(-1).clone())
    stacked = torch.stack(weights)
    assert int(torch.linalg.matrix_rank(stacked, atol=1e-8).item()) == dim


@pytest.mark.parametrize("bias", [True, False])
def test_bias_absent_without_trivial_irrep_or_when_disabled(bias: bool) -> None:
    layer = eLinear(C.rep("C8", "reg"), C.rep("C8", "irr1+irr1"), bias=bias)
    assert layer.bias is None
    assert layer.invariant_bias is None
    with_trivial = eLinear(C.rep("C8", "reg"), C.rep("C8", "2reg"), bias=bias)
    assert (with_trivial.bias is not None) == bias
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer(x), x @ layer.weight.T)


@pytest.mark.parametrize(
    ("key", "a", "b"),
    [
        ("C8", "irr1", "irr2"),
        ("D3", "irr1", "irr2+irr2"),
        ("O", "std3", "irr2"),
        ("I", "std3", "irr3"),
    ],
)
def test_zero_hom_space_raises(key: str, a: str, b: str) -> None:
    assert C.hom_dim(key, a, b) == 0
    with pytest.raises(ValueError, match="zero"):
        eLinear(C.rep(key, a), C.rep(key, b))


def test_different_groups_raise() -> None:
    with pytest.raises(ValueError, match="same group"):
        eLinear(C.rep("C8", "reg"), C.rep("D3", "reg"))


def test_non_representation_raises_type_error() -> None:
    with pytest.raises(TypeError, match="in_rep"):
        eLinear(12, C.rep("C8", "reg"))  # type: ignore[arg-type]


def test_unknown_init_scheme_raises() -> None:
    with pytest.raises(ValueError, match="xavier_normal"):
        eLinear(C.rep("C8", "reg"), C.rep("C8", "reg"), init_scheme="orthogonal")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((3, 10), "(..., 16)"), ((16, 3), "(..., 16)"), ((), "(..., 16)")],
)
def test_wrong_input_shape_raises_with_expected_shape(
    shape: tuple[int, ...], expected: str
) -> None:
    layer = eLinear(C.rep("C8", "2reg"), C.rep("C8", "reg"))
    with pytest.raises(ValueError, match="expects input of shape") as info:
        layer(torch.randn(shape))
    assert expected in str(info.value)
    assert str(tuple(shape)) in str(info.value)


def test_non_tensor_input_raises_type_error() -> None:
    layer = eLinear(C.rep("C8", "reg"), C.rep("C8", "reg"))
    with pytest.raises(TypeError, match="Tensor"):
        layer([0.0] * 8)  # type: ignore[arg-type]


def _expected_variance(scheme: InitScheme, fan_in: int, fan_out: int) -> float:
    if scheme.startswith("xavier"):
        return 2.0 / (fan_in + fan_out)
    return 2.0 / fan_in


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
@pytest.mark.parametrize(
    ("key", "a", "b"),
    [("C8", "2reg", "3reg"), ("D3", "Q:irr1+triv", "irr1+quot"), ("O", "std3+triv", "quot+std3")],
)
def test_init_variance_matches_torch(scheme: InitScheme, key: str, a: str, b: str) -> None:
    layer = eLinear(C.rep(key, a), C.rep(key, b), init_scheme=scheme)
    fan_in, fan_out = layer.in_rep.size, layer.out_rep.size
    draws = []
    for _ in range(200):
        layer.reset_parameters()
        draws.append(layer.weight.detach().double().pow(2).mean())
    variance = torch.stack(draws).mean().item()
    expected = _expected_variance(scheme, fan_in, fan_out)
    assert abs(variance / expected - 1.0) < 0.15, (variance, expected)
    # A freshly reset bias is zero, as torch users expect.
    assert layer.bias is not None
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("scheme", ["xavier_uniform", "kaiming_uniform"])
def test_uniform_schemes_respect_the_bound(scheme: InitScheme) -> None:
    layer = eLinear(C.rep("C8", "4reg"), C.rep("C8", "4reg"))
    layer.reset_parameters(scheme)
    n = layer.in_rep.size
    bound = (3.0 * _expected_variance(scheme, n, n)) ** 0.5
    w = layer.weight.detach()
    assert w.abs().max().item() <= bound * (1 + 1e-6)
    assert w.abs().max().item() > 0.8 * bound


def test_reset_parameters_redraws_and_rejects_unknown_scheme() -> None:
    layer = eLinear(C.rep("D3", "Q:irr1+triv"), C.rep("D3", "irr1+quot"))
    before = layer.weight_params.detach().clone()
    layer.reset_parameters("kaiming_normal")
    assert not torch.equal(before, layer.weight_params)
    kept = layer.weight_params.detach().clone()
    with pytest.raises(ValueError, match="init scheme"):
        layer.reset_parameters("bogus")  # type: ignore[arg-type]
    assert torch.equal(kept, layer.weight_params)


# --------------------------------------------------------------------------------------- bias


@pytest.mark.parametrize("key", C.ALL_GROUPS)
@pytest.mark.parametrize("spec", ["2reg", "Q:irr1+triv+triv", "quot+irr1"])
def test_invariant_bias_is_invariant(key: str, spec: str) -> None:
    module = InvariantBias(C.rep(key, spec)).double()
    with torch.no_grad():
        module.coeffs.normal_()
    b = module.bias.detach()
    m = C.mats_t(key, spec)
    assert (m @ b - b).abs().max().item() < 1e-12
    x = C.seeded_randn(4, b.shape[0])
    torch.testing.assert_close(module(x), x + b)
    assert C.equivariance_error(module, key, [spec], spec, [x]) < 1e-12
    # One parameter per copy of the trivial irrep.
    trivial = C.group(key).trivial_representation.irreps[0]
    assert module.coeffs.numel() == sum(1 for i in C.rep(key, spec).irreps if i == trivial)


def test_invariant_bias_without_trivial_irrep_raises() -> None:
    with pytest.raises(ValueError, match="trivial"):
        InvariantBias(C.rep("O", "std3+irr2"))


def test_non_orthogonal_change_of_basis_is_rejected() -> None:
    rho = C.rep("C8", "irr1+triv")
    skew = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 1.0]]).numpy()
    bad = eg.change_basis(rho, skew, name="skewed")
    with pytest.raises(ValueError, match="orthogonal"):
        InvariantBias(bad)
