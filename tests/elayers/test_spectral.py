"""Tests of the spectral-basis layers (elayers._spectral) against the regular-basis ones."""

from __future__ import annotations

import escnn.group as eg
import pytest
import torch
from torch import Tensor

from elayers import (
    eLayerNorm,
    eLinear,
    eRMSNorm,
    eSpectralDecoder,
    eSpectralDecoderLayer,
    eSpectralLinear,
    eSpectralNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    export,
    spectral_macs_per_token,
    to_regular_basis,
    to_spectral_basis,
)
from ereps import (
    Group,
    InitScheme,
    Representation,
    check_equivariance,
    direct_sum,
    init_std,
    regular_spectral_basis,
    rep_matrices,
    spectral_rep,
)

GROUPS = {
    "C2": lambda: eg.cyclic_group(2),
    "C3": lambda: eg.cyclic_group(3),
    "C8": lambda: eg.cyclic_group(8),
    "D6": lambda: eg.dihedral_group(6),
    "O": eg.octa_group,
    "ico": eg.ico_group,
}
FAST = ["C2", "C3", "C8", "D6"]


def _group(name: str) -> Group:
    group: Group = GROUPS[name]()
    return group


def _regular(group: Group, copies: int) -> Representation:
    return direct_sum([group.regular_representation] * copies)


def _t(group: Group) -> Tensor:
    return regular_spectral_basis(group).transform


@pytest.mark.parametrize(
    "name",
    [*FAST, pytest.param("O", marks=pytest.mark.slow), pytest.param("ico", marks=pytest.mark.slow)],
)
def test_synthesized_weight_commutes_with_the_action(name: str) -> None:
    """Brute force: the regular-basis matrix of the spectral map commutes with every ρ(g)."""
    group = _group(name)
    layer = eSpectralLinear(group, 2, 3).double()
    w = layer.dense_regular_weight().detach()
    reg = rep_matrices(group.regular_representation)
    rho_in = torch.stack([torch.kron(torch.eye(2, dtype=m.dtype), m) for m in reg])
    rho_out = torch.stack([torch.kron(torch.eye(3, dtype=m.dtype), m) for m in reg])
    assert float((rho_out @ w - w @ rho_in).abs().max()) < 1e-12
    assert float(w.abs().max()) > 1e-3  # not the zero map
    # Its own forward commutes with the spectral representation.
    assert check_equivariance(layer, [spectral_rep(group, 2)], spectral_rep(group, 3)) < 1e-12


@pytest.mark.parametrize("name", FAST)
def test_forward_matches_dense_spectral_matrix(name: str) -> None:
    group = _group(name)
    n = regular_spectral_basis(group).order
    layer = eSpectralLinear(group, 2, 3).double()
    with torch.no_grad():
        assert layer.bias_coeffs is not None
        layer.bias_coeffs.normal_()
    x = torch.randn(4, 5, 2 * n, dtype=torch.float64)
    bias = layer.spectral_bias(torch.float64)
    assert bias is not None
    expected = x @ layer.dense_spectral_weight().T + bias
    assert torch.allclose(layer(x), expected, atol=1e-12)
    plain = layer.export()
    assert type(plain) is torch.nn.Linear
    assert torch.allclose(plain(x), expected, atol=1e-12)


@pytest.mark.parametrize("name", [*FAST, pytest.param("ico", marks=pytest.mark.slow)])
def test_conversion_from_and_to_regular_is_exact(name: str) -> None:
    """A random group convolution converts to the same function (the blocks span all of Hom_G:
    c_in·c_out·|G| coefficients, as many as the kernel) and back to the same kernel."""
    group = _group(name)
    n = regular_spectral_basis(group).order
    regular = eLinear(_regular(group, 2), _regular(group, 3)).double()
    with torch.no_grad():
        assert regular.invariant_bias is not None
        regular.invariant_bias.coeffs.normal_()
    spectral = eSpectralLinear.from_regular(regular)
    assert spectral.num_weights == regular.num_weights == 2 * 3 * n
    x = torch.randn(7, 2 * n, dtype=torch.float64)
    t = _t(group)
    got = to_regular_basis(spectral(to_spectral_basis(x, t)), t)
    assert torch.allclose(got, regular(x), atol=1e-12)
    back = spectral.to_regular()
    assert torch.allclose(back.weight_params, regular.weight_params, atol=1e-12)
    assert back.invariant_bias is not None
    assert torch.equal(back.invariant_bias.coeffs, regular.invariant_bias.coeffs)


@pytest.mark.parametrize("name", ["C8", "D6"])
@pytest.mark.parametrize("scheme", ["xavier_normal", "kaiming_uniform"])
def test_initialization_variance_matches_the_regular_scheme(name: str, scheme: InitScheme) -> None:
    """The synthesized dense entries have the variance of the regular eLinear's (σ² of the
    unconstrained scheme), per block type too (Plancherel: σ²|G|/d_k per coefficient)."""
    group = _group(name)
    n = regular_spectral_basis(group).order
    c_in, c_out = 6, 10
    sigma2 = init_std(scheme, c_in * n, c_out * n) ** 2
    spectral, regular = [], []
    for seed in range(30):
        torch.manual_seed(seed)
        spectral.append(
            eSpectralLinear(group, c_in, c_out, init_scheme=scheme).dense_regular_weight().detach()
        )
        regular.append(
            eLinear(
                _regular(group, c_in), _regular(group, c_out), init_scheme=scheme
            ).weight.detach()
        )
    var_s = float(torch.stack(spectral).double().var())
    var_r = float(torch.stack(regular).double().var())
    # 30 · c_in c_out |G| independent coefficients: a relative error of a few percent at most.
    assert abs(var_s / sigma2 - 1) < 0.08
    assert abs(var_r / sigma2 - 1) < 0.08


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_matches_the_regular_norm(name: str, kind: str) -> None:
    group = _group(name)
    n = regular_spectral_basis(group).order
    rep = _regular(group, 3)
    regular = (eRMSNorm(rep, bias=True) if kind == "rms" else eLayerNorm(rep)).double()
    with torch.no_grad():
        for p in regular.parameters():
            p.normal_()
    spectral = eSpectralNorm.from_regular(regular)
    x = 3.0 * torch.randn(4, 6, 3 * n, dtype=torch.float64) + 1.0
    t = _t(group)
    got = to_regular_basis(spectral(to_spectral_basis(x, t)), t)
    assert torch.allclose(got, regular(x), atol=1e-12)
    back = spectral.to_regular()
    assert torch.allclose(back(x), regular(x), atol=1e-12)
    plain = spectral.export()
    assert torch.allclose(
        plain(to_spectral_basis(x, t)), spectral(to_spectral_basis(x, t)), atol=1e-12
    )


def test_norm_rejects_irrep_affine() -> None:
    rep = _regular(eg.cyclic_group(4), 2)
    with pytest.raises(ValueError, match="affine='copy'"):
        eSpectralNorm.from_regular(eRMSNorm(rep, affine="irrep"))


def _decoder_layer(group: Group, copies: int, heads: int, **kw: object) -> eTransformerDecoderLayer:
    n = regular_spectral_basis(group).order
    layer = eTransformerDecoderLayer(
        _regular(group, copies),
        heads,
        dim_feedforward=4 * copies * n,
        dropout=0.1,
        activation="gelu",
        norm_first=True,
        **kw,  # type: ignore[arg-type]
    ).double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "coeffs" in name or "copy_" in name or "table" in name:
                p.normal_()
    return layer.eval()


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"norm_module": "rmsnorm"},
        {"pos_encoding": "rope"},
        {"pos_encoding": "relative", "max_relative_distance": 3},
    ],
    ids=["layernorm", "rmsnorm", "rope", "relative"],
)
def test_decoder_layer_matches_the_regular_layer(name: str, kw: dict[str, object]) -> None:
    """Same weights, same function (eval), with padding, a memory mask and causal attention."""
    group = _group(name)
    n = regular_spectral_basis(group).order
    regular = _decoder_layer(group, 4, 2, **kw)
    spectral = eSpectralDecoderLayer(regular).eval()
    tgt = torch.randn(3, 5, 4 * n, dtype=torch.float64)
    mem = torch.randn(3, 4, 4 * n, dtype=torch.float64)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[1, 3:] = True
    mem_mask = torch.ones(5, 4, dtype=torch.bool).triu(2)
    t = _t(group)
    expected = regular(tgt, mem, memory_mask=mem_mask, tgt_key_padding_mask=pad, tgt_is_causal=True)
    got = spectral(
        to_spectral_basis(tgt, t),
        to_spectral_basis(mem, t),
        memory_mask=mem_mask,
        tgt_key_padding_mask=pad,
        tgt_is_causal=True,
    )
    assert torch.allclose(to_regular_basis(got, t), expected, atol=1e-10)
    like = _decoder_layer(group, 4, 2, **kw)
    back = spectral.to_regular(like).eval()
    assert torch.allclose(
        back(tgt, mem, memory_mask=mem_mask, tgt_key_padding_mask=pad, tgt_is_causal=True),
        expected,
        atol=1e-10,
    )


@pytest.mark.parametrize("name", FAST)
def test_decoder_layer_inference_path_matches_the_autograd_path(name: str) -> None:
    """The no-grad feed-forward (reused buffers, in-place activation) computes the same values."""
    group = _group(name)
    n = regular_spectral_basis(group).order
    spectral = eSpectralDecoderLayer(_decoder_layer(group, 3, 1)).eval()
    tgt = torch.randn(2, 5, 3 * n, dtype=torch.float64)
    mem = torch.randn(2, 4, 3 * n, dtype=torch.float64)
    recorded = spectral(tgt, mem)
    assert recorded.requires_grad  # the autograd path ran
    with torch.no_grad():
        inferred = spectral(tgt, mem)
    assert not inferred.requires_grad
    assert torch.allclose(inferred, recorded.detach(), atol=1e-12)


@pytest.mark.parametrize("name", ["C8", "D6"])
def test_decoder_stack_matches_and_is_equivariant(name: str) -> None:
    group = _group(name)
    n = regular_spectral_basis(group).order
    regular = eTransformerDecoder(_decoder_layer(group, 2, 1), 2).double().eval()
    spectral = eSpectralDecoder(regular).eval()
    tgt = torch.randn(2, 4, 2 * n, dtype=torch.float64)
    mem = torch.randn(2, 3, 2 * n, dtype=torch.float64)
    t = _t(group)
    got = to_regular_basis(spectral(to_spectral_basis(tgt, t), to_spectral_basis(mem, t)), t)
    assert torch.allclose(got, regular(tgt, mem), atol=1e-10)
    rep = spectral_rep(group, 2)
    err = check_equivariance(lambda a, b: spectral(a, b), [rep, rep], rep)
    assert err < 1e-10


def test_training_gradients_agree_through_the_conversion() -> None:
    """Gradients with respect to the inputs are the same function's (dropout off)."""
    group = eg.dihedral_group(3)
    n = 6
    regular = _decoder_layer(group, 2, 2)
    spectral = eSpectralDecoderLayer(regular)
    t = _t(group)
    tgt = torch.randn(2, 3, 2 * n, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(2, 2, 2 * n, dtype=torch.float64)
    regular(tgt, mem).square().sum().backward()  # type: ignore[no-untyped-call]
    grad_regular = tgt.grad
    assert grad_regular is not None
    tgt_s = to_spectral_basis(tgt.detach(), t).requires_grad_(True)
    to_regular_basis(spectral(tgt_s, to_spectral_basis(mem, t)), t).square().sum().backward()  # type: ignore[no-untyped-call]
    assert tgt_s.grad is not None
    assert torch.allclose(to_regular_basis(tgt_s.grad, t), grad_regular, atol=1e-10)
    # Every block parameter receives a gradient.
    assert all(p.grad is not None for p in spectral.parameters() if p.requires_grad)


def test_copy_dropout_is_equivariant_in_distribution() -> None:
    """Training-mode residual dropout drops whole copies: the same mask for x and ρ(g)x gives
    ρ(g) of the output (the mask is invariant), so the layer is equivariant sample by sample."""
    group = eg.cyclic_group(4)
    regular = _decoder_layer(group, 2, 2)
    spectral = eSpectralDecoderLayer(regular)
    spectral.train()
    spectral.self_attn.dropout = 0.0
    spectral.multihead_attn.dropout = 0.0
    spectral.ff_dropout = 0.0
    rep = spectral_rep(group, 2)
    mats = rep_matrices(rep)
    tgt = torch.randn(2, 3, 8, dtype=torch.float64)
    mem = torch.randn(2, 2, 8, dtype=torch.float64)
    for g in range(4):
        torch.manual_seed(5)
        out = spectral(tgt, mem)
        torch.manual_seed(5)
        moved = spectral(tgt @ mats[g].T, mem @ mats[g].T)
        assert torch.allclose(moved, out @ mats[g].T, atol=1e-12)


def test_macs_per_token() -> None:
    assert spectral_macs_per_token(eg.cyclic_group(8), 16, 64) == (16 * 64 * 14, 16 * 64 * 64)


def test_export_of_spectral_modules_is_plain() -> None:
    group = eg.cyclic_group(4)
    norm = eSpectralNorm.from_regular(eLayerNorm(_regular(group, 2)))
    plain = export(torch.nn.Sequential(eSpectralLinear(group, 2, 2), norm))
    from elayers import eModule

    assert not any(isinstance(m, eModule) for m in plain.modules())


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 2), "in_copies to be an int >= 1"), ((2, True), "out_copies to be an int >= 1")],
)
def test_linear_rejects_bad_copies(args: tuple[object, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        eSpectralLinear(eg.cyclic_group(4), *args)  # type: ignore[arg-type]


def test_linear_rejects_wrong_input_size() -> None:
    layer = eSpectralLinear(eg.cyclic_group(4), 2, 2)
    with pytest.raises(ValueError, match=r"expects input of shape \(\.\.\., 8\)"):
        layer(torch.randn(3, 7))


@pytest.mark.parametrize("kw", [{}, {"pos_encoding": "rope"}], ids=["plain", "rope"])
def test_decoder_export_is_plain_and_agrees(kw: dict[str, object]) -> None:
    """export() of a spectral layer and stack: torch-only modules, the same function."""
    from elayers import eModule

    group = eg.dihedral_group(3)
    regular = eTransformerDecoder(_decoder_layer(group, 4, 2, **kw), 2).double().eval()
    spectral = eSpectralDecoder(regular).eval()
    t = _t(group)
    tgt = to_spectral_basis(torch.randn(2, 4, 24, dtype=torch.float64), t)
    mem = to_spectral_basis(torch.randn(2, 3, 24, dtype=torch.float64), t)
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[1, 2:] = True
    first = spectral.layers[0]
    assert isinstance(first, eSpectralDecoderLayer)
    modules: list[eSpectralDecoder | eSpectralDecoderLayer] = [spectral, first]
    for module in modules:
        plain = module.export()
        assert not any(isinstance(m, eModule) for m in plain.modules())
        with torch.no_grad():
            expected = module(tgt, mem, None, pad, None, True)
            assert torch.allclose(plain(tgt, mem, None, pad, None, True), expected, atol=1e-10)
    # The regular twin rebuilt from the spectral stack alone is the original function.
    twin = spectral.regular_twin().eval()
    x = torch.randn(2, 4, 24, dtype=torch.float64)
    m = torch.randn(2, 3, 24, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(twin(x, m), regular(x, m), atol=1e-10)


@pytest.mark.parametrize("name", ["C8", "D6"])
def test_mlp_matches_the_regular_mlp(name: str) -> None:
    from elayers import eMLP, eModule, eSpectralMLP

    group = _group(name)
    n = regular_spectral_basis(group).order
    regular = eMLP(_regular(group, 2), _regular(group, 3), [4 * n, 2 * n]).double().eval()
    spectral = eSpectralMLP(regular).eval()
    t = _t(group)
    x = torch.randn(5, 2 * n, dtype=torch.float64)
    with torch.no_grad():
        expected = regular(x)
        got = to_regular_basis(spectral(to_spectral_basis(x, t)), t)
        assert torch.allclose(got, expected, atol=1e-10)
        assert torch.allclose(spectral.to_regular()(x), expected, atol=1e-10)
        plain = spectral.export()
        assert not any(isinstance(m, eModule) for m in plain.modules())
        assert torch.allclose(
            plain(to_spectral_basis(x, t)), spectral(to_spectral_basis(x, t)), atol=1e-10
        )


@pytest.mark.parametrize("name", ["C8", "D6"])
def test_coefficients_are_orthonormal_to_the_kernel(name: str) -> None:
    """‖θ‖ = ‖w‖ for the kernel w of the same map, and gradients correspond: a gradient step on
    θ is the step on w (the map w ↦ θ is orthogonal)."""
    group = _group(name)
    regular = eLinear(_regular(group, 2), _regular(group, 3), bias=False).double()
    spectral = eSpectralLinear.from_regular(regular)
    theta = torch.cat([p.reshape(-1) for p in spectral.weight_blocks])
    assert torch.allclose(theta.norm(), regular.weight_params.norm(), rtol=1e-12)
    n = regular_spectral_basis(group).order
    x = torch.randn(6, 2 * n, dtype=torch.float64)
    target = torch.randn(6, 3 * n, dtype=torch.float64)
    t = _t(group)
    (regular(x) - target).square().sum().backward()  # type: ignore[no-untyped-call]
    loss = (to_regular_basis(spectral(to_spectral_basis(x, t)), t) - target).square().sum()
    loss.backward()  # type: ignore[no-untyped-call]
    grad_w = regular.weight_params.grad
    assert grad_w is not None
    grads = [p.grad for p in spectral.weight_blocks]
    assert all(g is not None for g in grads)
    grad_theta = torch.cat([g.reshape(-1) for g in grads if g is not None])
    assert torch.allclose(grad_theta.norm(), grad_w.norm(), rtol=1e-10)
    with torch.no_grad():
        regular.weight_params.sub_(0.01 * grad_w)
        for p in spectral.weight_blocks:
            assert p.grad is not None
            p.sub_(0.01 * p.grad)
    assert torch.allclose(spectral.to_regular().weight_params, regular.weight_params, atol=1e-12)
