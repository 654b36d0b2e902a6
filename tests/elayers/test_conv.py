"""eConv1d, eConvTranspose1d and eGroupNorm: equivariance, torch twins, export, validation."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elayers import eConv1d, eConvTranspose1d, eGroupNorm
from tests.elayers import _cases as C

# (group, in spec, out spec): regular -> regular (group convolution), general -> regular,
# regular -> general, general -> general, including the standard 3-D irreps of O and I meeting
# other representations (the known trap of the library the seed API comes from).
CONV_CASES = [
    ("C8", "2reg", "reg"),
    ("C8", "Q:irr1+triv", "2reg"),
    ("D3", "2reg", "Q:irr2+triv+quot"),
    ("D3", "P:quot+irr1", "irr2+quot"),
    ("O", "std3+quot", "reg"),
    ("O", "reg", "std3+triv"),
    ("I", "std3+triv", "Q:quot+std3"),
]


def _ids(case: tuple[str, str, str]) -> str:
    return "-".join(case)


def _act_channels(key: str, spec: str, index: int, x: Tensor) -> Tensor:
    """``ρ(g)`` on the channel axis (-2) of a channels-first tensor."""
    m = C.mats_t(key, spec, x.dtype)[index]
    return torch.einsum("ij,...jt->...it", m, x)


def _conv_equivariance_error(
    module: nn.Module, key: str, in_spec: str, out_spec: str, x: Tensor
) -> float:
    y = module(x)
    worst = 0.0
    for i in C.element_indices(key):
        got = module(_act_channels(key, in_spec, i, x))
        worst = max(worst, C.rel_err(got, _act_channels(key, out_spec, i, y)))
    return worst


def _build(
    cls: type[eConv1d] | type[eConvTranspose1d], key: str, a: str, b: str, **kwargs: Any
) -> eConv1d | eConvTranspose1d:
    module = cls(C.rep(key, a), C.rep(key, b), **kwargs)
    C.perturb_(module, scale=0.3)  # non-zero biases
    return module


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids)
@pytest.mark.parametrize("cls", [eConv1d, eConvTranspose1d])
def test_equivariant_in_float64(
    case: tuple[str, str, str], cls: type[eConv1d] | type[eConvTranspose1d]
) -> None:
    key, a, b = case
    module = _build(cls, key, a, b, kernel_size=3, stride=2, padding=1).double()
    x = C.seeded_randn(2, C.rep(key, a).size, 9)
    assert _conv_equivariance_error(module, key, a, b, x) < 1e-12


@pytest.mark.parametrize("case", CONV_CASES[:4], ids=_ids)
def test_equivariant_in_float32(case: tuple[str, str, str]) -> None:
    key, a, b = case
    module = _build(eConv1d, key, a, b, kernel_size=5, padding="same")
    x = C.seeded_randn(3, C.rep(key, a).size, 11, dtype=torch.float32)
    assert _conv_equivariance_error(module, key, a, b, x) < 1e-5


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids)
@pytest.mark.parametrize("transposed", [False, True])
def test_every_offset_is_in_hom_and_the_kernels_span_it(
    case: tuple[str, str, str], transposed: bool
) -> None:
    """ρ_out(g) W_k = W_k ρ_in(g) for all g (brute force), and all of K·Hom_G is reachable."""
    key, a, b = case
    K = 2
    cls = eConvTranspose1d if transposed else eConv1d
    module = cls(C.rep(key, a), C.rep(key, b), K).double()
    weight = module.dense_weight().detach()
    maps = weight.permute(2, 1, 0) if transposed else weight.permute(2, 0, 1)  # (K, out, in)
    m_in, m_out = C.mats_t(key, a), C.mats_t(key, b)
    for k in range(K):
        lhs = m_out @ maps[k]
        rhs = maps[k] @ m_in
        assert float((lhs - rhs).abs().max()) < 1e-11
    expected_dim = K * C.hom_dim(key, a, b)
    assert module.num_weights == expected_dim
    # The synthesis is linear in the parameters: its rank is the dimension it spans.
    with torch.no_grad():
        columns = []
        for i in range(module.num_weights):
            module.weight_params.zero_()
            module.weight_params.view(-1)[i] = 1.0
            columns.append(module.dense_weight().reshape(-1).clone())
    rank = int(torch.linalg.matrix_rank(torch.stack(columns, dim=1)))
    assert rank == expected_dim


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=5, stride=2, padding=2, dilation=1),
        dict(kernel_size=3, padding=2, dilation=2),
        dict(kernel_size=5, padding="same"),
        dict(kernel_size=4, padding="same", padding_mode="reflect"),
        dict(kernel_size=3, padding="valid", bias=False),
        dict(kernel_size=3, padding=1, padding_mode="reflect"),
        dict(kernel_size=5, padding="same", padding_mode="replicate"),
        dict(kernel_size=3, stride=2, padding=1, padding_mode="circular"),
    ],
    ids=str,
)
def test_conv_matches_torch_conv1d(kwargs: dict[str, Any]) -> None:
    """Same output as torch.nn.Conv1d holding the dense kernel (also the export), any options."""
    conv = _build(eConv1d, "D3", "2reg", "irr2+quot", **kwargs).double()
    torch_conv = nn.Conv1d(12, 5, **kwargs).double()
    with torch.no_grad():
        torch_conv.weight.copy_(conv.dense_weight())
        if torch_conv.bias is not None:
            bias = conv.dense_bias()
            assert bias is not None
            torch_conv.bias.copy_(bias)
    x = C.seeded_randn(2, 12, 10)
    y = conv(x)
    torch.testing.assert_close(y, torch_conv(x), rtol=0, atol=1e-12)
    exported = conv.export()
    assert type(exported) is nn.Conv1d
    torch.testing.assert_close(exported(x), y, rtol=0, atol=1e-12)
    # Unbatched input, as torch accepts it.
    torch.testing.assert_close(conv(x[0]), y[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=4, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, output_padding=1),
        dict(kernel_size=3, stride=1, padding=0, dilation=2, bias=False),
    ],
    ids=str,
)
def test_transposed_conv_matches_torch(kwargs: dict[str, Any]) -> None:
    conv = _build(eConvTranspose1d, "C8", "Q:irr1+triv", "2reg", **kwargs).double()
    torch_conv = nn.ConvTranspose1d(3, 16, **kwargs).double()
    with torch.no_grad():
        torch_conv.weight.copy_(conv.dense_weight())
        if torch_conv.bias is not None:
            bias = conv.dense_bias()
            assert bias is not None
            torch_conv.bias.copy_(bias)
    x = C.seeded_randn(2, 3, 7)
    y = conv(x)
    torch.testing.assert_close(y, torch_conv(x), rtol=0, atol=1e-12)
    exported = conv.export()
    assert type(exported) is nn.ConvTranspose1d
    torch.testing.assert_close(exported(x), y, rtol=0, atol=1e-12)


def test_transposed_conv_is_the_adjoint_of_conv() -> None:
    """⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ when both hold the same maps (no bias)."""
    conv = eConv1d(C.rep("D3", "2reg"), C.rep("D3", "reg"), 3, stride=2, padding=1, bias=False)
    tconv = eConvTranspose1d(C.rep("D3", "reg"), C.rep("D3", "2reg"), 3, 2, 1, bias=False)
    conv.double()
    tconv.double()
    with torch.no_grad():
        # conv's maps are reg^2 -> reg; tconv's kernel (in=reg, out=reg^2) holds their transposes.
        w = conv.dense_weight()  # (6, 12, K)
        assert tconv.dense_weight().shape == w.shape
        x = C.seeded_randn(2, 12, 9, seed=1)
        y = C.seeded_randn(2, 6, 5, seed=2)
        lhs = (F.conv1d(x, w, None, 2, 1) * y).sum()
        rhs = (x * F.conv_transpose1d(y, w, None, 2, 1)).sum()
        torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize(("a", "b"), [("Q:irr2+triv", "2reg"), ("2reg", "reg")])
@pytest.mark.parametrize("cls", [eConv1d, eConvTranspose1d])
def test_gradients_match_finite_differences(
    a: str, b: str, cls: type[eConv1d] | type[eConvTranspose1d]
) -> None:
    conv = _build(cls, "D3", a, b, kernel_size=3, padding=1).double()
    x = C.seeded_randn(2, C.rep("D3", a).size, 6).requires_grad_(True)
    names = [n for n, _ in conv.named_parameters()]

    def fn(x: Tensor, *ps: Tensor) -> Tensor:
        out: Tensor = torch.func.functional_call(conv, dict(zip(names, ps, strict=True)), (x,))
        return out

    assert torch.autograd.gradcheck(fn, (x, *conv.parameters()))


def test_init_gives_the_variance_of_the_dense_scheme() -> None:
    torch.manual_seed(3)
    for a, b in (("4reg", "4reg"), ("Q:irr2+triv+quot", "4reg")):
        conv = eConv1d(C.rep("D3", a), C.rep("D3", b), 5, init_scheme="kaiming_normal")
        fan_in = C.rep("D3", a).size * 5
        std = float(conv.dense_weight().detach().std())
        assert abs(std / (2.0 / fan_in) ** 0.5 - 1.0) < 0.2, (a, std)


def test_reset_parameters_zeroes_the_bias_and_redraws_the_kernel() -> None:
    conv = _build(eConv1d, "C8", "2reg", "2reg", kernel_size=3)
    before = conv.weight_params.detach().clone()
    conv.reset_parameters()
    bias = conv.dense_bias()
    assert bias is not None
    assert float(bias.detach().abs().max()) == 0.0
    assert not torch.equal(before, conv.weight_params)


def test_export_copies_the_weights_and_leaves_the_module_unchanged() -> None:
    conv = _build(eConv1d, "C8", "2reg", "reg", kernel_size=3, padding=1)
    before = {k: v.clone() for k, v in conv.state_dict().items() if isinstance(v, Tensor)}
    exported = conv.export()
    x = C.seeded_randn(2, 16, 5, dtype=torch.float32)
    y = exported(x)
    with torch.no_grad():
        conv.weight_params.mul_(2.0)
    torch.testing.assert_close(exported(x), y)  # detached copies, not views
    with torch.no_grad():
        conv.weight_params.mul_(0.5)
    for k, v in conv.state_dict().items():
        if isinstance(v, Tensor):
            torch.testing.assert_close(v, before[k])
    assert all(p.dtype == torch.float32 for p in exported.parameters())


def test_state_dict_round_trip_with_weights_only() -> None:
    conv = _build(eConvTranspose1d, "D3", "2reg", "Q:irr2+triv", kernel_size=4, stride=2)
    buffer = io.BytesIO()
    torch.save(conv.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = eConvTranspose1d(C.rep("D3", "2reg"), C.rep("D3", "Q:irr2+triv"), 4, 2)
    fresh.load_state_dict(state)
    x = C.seeded_randn(2, 12, 4, dtype=torch.float32)
    torch.testing.assert_close(fresh(x), conv(x))
    other = eConvTranspose1d(C.rep("D3", "2reg"), C.rep("D3", "P:irr2+triv"), 4, 2)
    with pytest.raises(ValueError, match="out_rep"):
        other.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# eGroupNorm


@pytest.mark.parametrize("key", ["C8", "D3", "O"])
@pytest.mark.parametrize("num_groups", [1, 2])
def test_group_norm_is_equivariant_and_is_torch_group_norm(key: str, num_groups: int) -> None:
    spec = "4reg"
    norm = eGroupNorm(C.rep(key, spec), num_groups).double()
    C.perturb_(norm)
    x = C.seeded_randn(3, C.rep(key, spec).size, 5) * 3 + 1
    assert _conv_equivariance_error(norm, key, spec, spec, x) < 1e-12
    weight, bias = norm.dense_affine()
    assert weight is not None
    assert bias is not None
    expected = F.group_norm(x, num_groups, weight, bias, 1e-5)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-12)
    exported = norm.export()
    assert type(exported) is nn.GroupNorm
    torch.testing.assert_close(exported(x), expected, rtol=0, atol=1e-12)
    # Per-copy affine: constant on each copy.
    n = C.group(key).order()
    assert torch.equal(weight.view(4, n), weight.view(4, n)[:, :1].expand(4, n))


def test_group_norm_groups_are_whole_copies() -> None:
    """The statistics of group γ are those of its copies alone (not of a split copy)."""
    norm = eGroupNorm(C.rep("C8", "4reg"), 2, affine=False).double()
    x = C.seeded_randn(2, 32, 3)
    y = norm(x)
    first = x[:, :16]
    expected = (first - first.mean(dim=(1, 2), keepdim=True)) / torch.sqrt(
        first.var(dim=(1, 2), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(y[:, :16], expected)


def test_group_norm_validation() -> None:
    with pytest.raises(ValueError, match=r"divide the 4 regular copies.*Valid values: \[1, 2, 4\]"):
        eGroupNorm(C.rep("C8", "4reg"), 3)
    with pytest.raises(ValueError, match="whole copies of the regular representation"):
        eGroupNorm(C.rep("C8", "Q:irr1+triv"), 1)
    with pytest.raises(TypeError, match="num_groups"):
        eGroupNorm(C.rep("C8", "2reg"), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps > 0"):
        eGroupNorm(C.rep("C8", "2reg"), 1, eps=0.0)
    norm = eGroupNorm(C.rep("C8", "2reg"), 2)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 16, \*\).*got \(2, 5, 16\)"):
        norm(torch.zeros(2, 5, 16))


# --------------------------------------------------------------------------------------------
# Validation of the convolutions


def test_conv_validation_messages() -> None:
    reg2, reg = C.rep("C8", "2reg"), C.rep("C8", "reg")
    conv = eConv1d(reg2, reg, 3)
    with pytest.raises(
        ValueError,
        match=r"eConv1d expects input of shape \(B, 16, T\) or \(16, T\) \(channels first.*"
        r"got \(2, 7, 16\)",
    ):
        conv(torch.zeros(2, 7, 16))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        conv(np.zeros((2, 16, 7)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel_size to be an int >= 1; got 0"):
        eConv1d(reg2, reg, 0)
    with pytest.raises(TypeError, match="kernel_size"):
        eConv1d(reg2, reg, 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding='same' needs stride=1"):
        eConv1d(reg2, reg, 3, 2, "same")
    with pytest.raises(ValueError, match="'same' or 'valid'; got 'full'"):
        eConv1d(reg2, reg, 3, padding="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding_mode"):
        eConv1d(reg2, reg, 3, padding_mode="mirror")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_padding < max"):
        eConvTranspose1d(reg2, reg, 3, 2, output_padding=2)
    with pytest.raises(ValueError, match="zero-dimensional"):
        eConv1d(C.rep("C8", "irr1"), C.rep("C8", "irr2"), 3)
    with pytest.raises(ValueError, match="same group"):
        eConv1d(reg2, C.rep("D4", "reg"), 3)
    with pytest.raises(TypeError, match=r"in_rep must be an escnn\.group\.Representation"):
        eConv1d(16, reg, 3)  # type: ignore[arg-type]


def test_repr_names_the_maps() -> None:
    text = repr(eConv1d(C.rep("C8", "2reg"), C.rep("C8", "reg"), 3, padding=1))
    assert "kernel_size=3" in text
    assert "group conv" in text
    assert "48 weights" in text  # 1 · 2 · 8 · 3
