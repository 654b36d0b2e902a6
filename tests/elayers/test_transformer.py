"""Equivariant transformer layers and stacks: torch twins, equivariance, fused path, errors."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from elayers import (
    NormModule,
    eLayerNorm,
    eRMSNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    eTransformerEncoder,
    eTransformerEncoderLayer,
)
from tests.elayers import _cases as C

CONFIGS = list(itertools.product([False, True], ["layernorm", "rmsnorm"], ["relu", "gelu"]))
CONFIG_IDS = [f"{'pre' if nf else 'post'}-{nm}-{act}" for nf, nm, act in CONFIGS]


def _encoder_layer(
    key: str = "C8",
    spec: str = "2reg",
    nhead: int = 2,
    ff: int = 32,
    *,
    norm_first: bool = False,
    norm_module: NormModule = "layernorm",
    activation: str = "relu",
    dtype: torch.dtype = torch.float64,
    perturb: bool = True,
) -> eTransformerEncoderLayer:
    layer = eTransformerEncoderLayer(
        C.rep(key, spec),
        nhead,
        dim_feedforward=ff,
        dropout=0.0,
        activation=activation,
        norm_first=norm_first,
        norm_module=norm_module,
    ).to(dtype)
    if perturb:
        C.perturb_(layer, scale=0.1)
    return layer


def _decoder_layer(
    key: str = "C8",
    spec: str = "2reg",
    nhead: int = 2,
    ff: int = 32,
    *,
    norm_first: bool = False,
    norm_module: NormModule = "layernorm",
    activation: str = "relu",
) -> eTransformerDecoderLayer:
    layer = eTransformerDecoderLayer(
        C.rep(key, spec),
        nhead,
        dim_feedforward=ff,
        dropout=0.0,
        activation=activation,
        norm_first=norm_first,
        norm_module=norm_module,
    ).double()
    C.perturb_(layer, scale=0.1)
    return layer


@pytest.fixture
def no_fastpath() -> Iterator[None]:
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(enabled)


def _pad(n: int, t: int) -> Tensor:
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[0, -1] = True
    return mask


# -------------------------------------------------------------------------- torch twins


def _copy_norm(dst: nn.Module, src: nn.Module, order: int) -> None:
    assert isinstance(src, (eLayerNorm, eRMSNorm))
    assert src.copy_scale is not None, "regular copies use per-copy affine maps by default"
    weight, bias = getattr(dst, "weight", None), getattr(dst, "bias", None)
    assert isinstance(weight, Tensor)
    with torch.no_grad():
        weight.copy_(src.copy_scale.repeat_interleave(order))
        if src.copy_bias is not None:
            assert isinstance(bias, Tensor)
            bias.copy_(src.copy_bias.repeat_interleave(order))


def _copy_attention(dst: nn.MultiheadAttention, src: Any) -> None:
    with torch.no_grad():
        dst.in_proj_weight.copy_(src.in_proj.weight)
        dst.in_proj_bias.copy_(src.in_proj.bias)
        dst.out_proj.weight.copy_(src.out_proj.weight)
        dst.out_proj.bias.copy_(src.out_proj.bias)


def _copy_ff(dst: nn.Module, src: Any) -> None:
    with torch.no_grad():
        for name in ("linear1", "linear2"):
            getattr(dst, name).weight.copy_(getattr(src.ff, name).weight)
            getattr(dst, name).bias.copy_(getattr(src.ff, name).bias)


def _torch_norm(norm_module: str, size: int, eps: float) -> nn.Module:
    if norm_module == "layernorm":
        return nn.LayerNorm(size, eps=eps, dtype=torch.float64)
    return nn.RMSNorm(size, eps=eps, dtype=torch.float64)


@pytest.mark.parametrize(("norm_first", "norm_module", "activation"), CONFIGS, ids=CONFIG_IDS)
def test_encoder_layer_matches_torch_twin(
    norm_first: bool, norm_module: NormModule, activation: str
) -> None:
    layer = _encoder_layer(norm_first=norm_first, norm_module=norm_module, activation=activation)
    twin = nn.TransformerEncoderLayer(
        16, 2, 32, dropout=0.0, activation=activation, batch_first=True,
        norm_first=norm_first, dtype=torch.float64,
    )  # fmt: skip
    twin.norm1 = _torch_norm(norm_module, 16, layer.norm1.eps)  # type: ignore[assignment]
    twin.norm2 = _torch_norm(norm_module, 16, layer.norm2.eps)  # type: ignore[assignment]
    _copy_attention(twin.self_attn, layer.self_attn)
    _copy_ff(twin, layer)
    _copy_norm(twin.norm1, layer.norm1, 8)
    _copy_norm(twin.norm2, layer.norm2, 8)
    x = C.seeded_randn(2, 5, 16)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    masks: list[dict[str, Any]] = [{}, {"src_mask": causal, "src_key_padding_mask": _pad(2, 5)}]
    for kwargs in masks:
        ref = twin(x, **kwargs)
        torch.testing.assert_close(layer(x, **kwargs), ref, rtol=1e-10, atol=1e-10)
        layer.eval()
        with torch.no_grad():
            torch.testing.assert_close(layer(x, **kwargs), ref, rtol=1e-10, atol=1e-10)
        layer.train()


@pytest.mark.parametrize(
    ("norm_first", "norm_module", "activation"), CONFIGS[::3], ids=CONFIG_IDS[::3]
)
def test_decoder_layer_matches_torch_twin(
    norm_first: bool, norm_module: NormModule, activation: str
) -> None:
    layer = _decoder_layer(norm_first=norm_first, norm_module=norm_module, activation=activation)
    twin = nn.TransformerDecoderLayer(
        16, 2, 32, dropout=0.0, activation=activation, batch_first=True,
        norm_first=norm_first, dtype=torch.float64,
    )  # fmt: skip
    for name in ("norm1", "norm2", "norm3"):
        setattr(twin, name, _torch_norm(norm_module, 16, 1e-5))
        _copy_norm(getattr(twin, name), getattr(layer, name), 8)
    _copy_attention(twin.self_attn, layer.self_attn)
    _copy_attention(twin.multihead_attn, layer.multihead_attn)
    _copy_ff(twin, layer)
    tgt, mem = C.seeded_randn(2, 4, 16), C.seeded_randn(2, 6, 16, seed=1)
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)
    kwargs: dict[str, Any] = {"tgt_mask": causal, "memory_key_padding_mask": _pad(2, 6)}
    torch.testing.assert_close(layer(tgt, mem), twin(tgt, mem), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        layer(tgt, mem, **kwargs), twin(tgt, mem, **kwargs), rtol=1e-10, atol=1e-10
    )
    implicit = layer(tgt, mem, tgt_is_causal=True, memory_key_padding_mask=_pad(2, 6))
    torch.testing.assert_close(implicit, twin(tgt, mem, **kwargs), rtol=1e-10, atol=1e-10)


# -------------------------------------------------------------------------- equivariance


def _check_encoder(
    layer: eTransformerEncoderLayer, key: str, spec: str, x: Tensor, tol: float
) -> None:
    t = x.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).triu(1)
    pad = _pad(x.shape[0], t)
    fns: list[Callable[[Tensor], Tensor]] = [
        layer,
        lambda s: layer(s, src_mask=causal, src_key_padding_mask=pad, is_causal=True),
    ]
    for fn in fns:
        err = C.equivariance_error(fn, key, [spec], spec, [x.to(layer_dtype(layer))])
        assert err < tol, err


def layer_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@pytest.mark.parametrize(("norm_first", "norm_module", "activation"), CONFIGS, ids=CONFIG_IDS)
def test_encoder_layer_is_equivariant(
    norm_first: bool, norm_module: NormModule, activation: str
) -> None:
    layer = _encoder_layer(
        "D3", "4reg", 2, 24, norm_first=norm_first, norm_module=norm_module, activation=activation
    )
    x = C.seeded_randn(2, 5, 24)
    _check_encoder(layer, "D3", "4reg", x, 1e-10)
    layer.eval()
    with torch.no_grad():
        _check_encoder(layer, "D3", "4reg", x, 1e-10)
    layer.float()
    _check_encoder(layer, "D3", "4reg", x, 1e-5)
    layer.train()
    _check_encoder(layer, "D3", "4reg", x, 1e-5)


@pytest.mark.parametrize(
    ("key", "spec", "nhead", "ff"),
    [("C8", "2reg", 2, 16), ("O", "2reg", 2, 48), ("I", "reg", 1, 120)],
)
def test_encoder_layer_is_equivariant_for_larger_groups(
    key: str, spec: str, nhead: int, ff: int
) -> None:
    layer = _encoder_layer(key, spec, nhead, ff, norm_first=True, activation="gelu")
    x = C.seeded_randn(2, 4, C.rep(key, spec).size)
    _check_encoder(layer, key, spec, x, 1e-10)
    layer.float().eval()
    with torch.no_grad():
        _check_encoder(layer, key, spec, x, 1e-5)


@pytest.mark.parametrize(("norm_first", "norm_module", "activation"), CONFIGS, ids=CONFIG_IDS)
def test_decoder_layer_is_equivariant(
    norm_first: bool, norm_module: NormModule, activation: str
) -> None:
    layer = _decoder_layer(
        "D3", "2reg", 2, 12, norm_first=norm_first, norm_module=norm_module, activation=activation
    )
    tgt, mem = C.seeded_randn(2, 4, 12), C.seeded_randn(2, 6, 12, seed=1)
    pad = _pad(2, 6)

    def masked(t: Tensor, m: Tensor) -> Tensor:
        return layer(t, m, tgt_is_causal=True, memory_key_padding_mask=pad)

    assert C.equivariance_error(layer, "D3", ["2reg"] * 2, "2reg", [tgt, mem]) < 1e-10
    assert C.equivariance_error(masked, "D3", ["2reg"] * 2, "2reg", [tgt, mem]) < 1e-10
    layer.float()
    err = C.equivariance_error(masked, "D3", ["2reg"] * 2, "2reg", [tgt.float(), mem.float()])
    assert err < 1e-5


def _stack_input(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return C.seeded_randn(2, 5, 16, dtype=dtype), C.seeded_randn(2, 3, 16, dtype=dtype, seed=1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_of_twelve_layers_are_equivariant(norm_first: bool) -> None:
    enc_layer = _encoder_layer(norm_first=norm_first, norm_module="rmsnorm", activation="gelu")
    dec_layer = _decoder_layer(norm_first=norm_first, activation="relu")
    final = eLayerNorm(C.rep("C8", "2reg")).double() if norm_first else None
    encoder = eTransformerEncoder(enc_layer, 12, norm=final)
    decoder = eTransformerDecoder(dec_layer, 12)
    assert len(encoder.layers) == 12
    assert len(decoder.layers) == 12

    def model(src: Tensor, tgt: Tensor) -> Tensor:
        return decoder(tgt, encoder(src), tgt_is_causal=True)

    x, t = _stack_input(torch.float64)
    assert C.equivariance_error(model, "C8", ["2reg"] * 2, "2reg", [x, t]) < 1e-10
    encoder.float()
    decoder.float()
    assert C.equivariance_error(model, "C8", ["2reg"] * 2, "2reg", [x.float(), t.float()]) < 1e-5


def test_layers_inside_torch_stacks() -> None:
    enc_layer = _encoder_layer()
    dec_layer = _decoder_layer()
    # torch's stubs ask for its own layer classes; any module with their call signature works.
    encoder = nn.TransformerEncoder(enc_layer, 12, enable_nested_tensor=False)  # type: ignore[arg-type]
    decoder = nn.TransformerDecoder(dec_layer, 2)  # type: ignore[arg-type]
    x, t = _stack_input(torch.float64)
    causal = nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.float64)

    def model(src: Tensor, tgt: Tensor) -> Tensor:
        mem = encoder(src, src_key_padding_mask=_pad(2, 5))
        out: Tensor = decoder(tgt, mem, tgt_mask=causal, tgt_is_causal=True)
        return out

    y = model(x, t)
    assert y.shape == t.shape
    assert torch.isfinite(y).all()
    assert C.equivariance_error(model, "C8", ["2reg"] * 2, "2reg", [x, t]) < 1e-10
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        assert C.equivariance_error(model, "C8", ["2reg"] * 2, "2reg", [x, t]) < 1e-10


def test_stacks_initialize_layers_independently() -> None:
    encoder = eTransformerEncoder(_encoder_layer(perturb=False), 3)
    w = []
    for layer in encoder.layers:
        assert isinstance(layer, eTransformerEncoderLayer)
        w.append(layer.self_attn.in_proj.weight_params)
    assert not torch.equal(w[0], w[1])
    assert not torch.equal(w[1], w[2])


@pytest.mark.parametrize("norm_module", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_deep_stacks_train_without_nan(norm_first: bool, norm_module: NormModule) -> None:
    layer = eTransformerEncoderLayer(
        C.rep("C8", "2reg"), 2, 32, dropout=0.1, norm_first=norm_first, norm_module=norm_module
    )
    encoder = eTransformerEncoder(layer, 12)
    opt = torch.optim.AdamW(encoder.parameters(), lr=3e-3)
    x = torch.randn(4, 6, 16) * 5.0
    target = torch.randn(4, 6, 16)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (encoder(x, is_causal=True) - target).pow(2).mean()
        C.backward(loss)
        for p in encoder.parameters():
            assert p.grad is not None
            assert torch.isfinite(p.grad).all()
        opt.step()
        losses.append(loss.item())
    assert torch.isfinite(torch.tensor(losses)).all()
    assert all(torch.isfinite(p).all() for p in encoder.parameters())


# ------------------------------------------------------------------------- fused inference


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_fused_inference_matches_composite_and_train_mode(
    norm_first: bool, activation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = _encoder_layer(
        "C8", "4reg", 2, 64, norm_first=norm_first, activation=activation, dtype=torch.float32
    )
    x = C.seeded_randn(3, 7, 32, dtype=torch.float32)
    train_out = layer(x).detach()
    calls = []
    fused = torch._transformer_encoder_layer_fwd

    def spy(*args: Any) -> Any:
        calls.append(1)
        return fused(*args)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    layer.eval()
    with torch.no_grad():
        fast = layer(x)
        assert calls, "the fused inference path was not taken"
        enabled = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            composite = layer(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(enabled)
    assert len(calls) == 1
    torch.testing.assert_close(fast, composite, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, train_out, rtol=1e-5, atol=1e-5)
    # Masks, gradients and huge inputs take the composite path, with the same results.
    with torch.no_grad():
        masked = layer(x, src_key_padding_mask=torch.zeros(3, 7, dtype=torch.bool))
        torch.testing.assert_close(masked, fast, rtol=1e-5, atol=1e-5)
        huge = layer(x * 1e18)
        assert torch.isfinite(huge).all()
    assert len(calls) == 1


def test_fused_inference_in_float64_and_bfloat16() -> None:
    layer = _encoder_layer("C8", "2reg", 2, 32, dtype=torch.float64)
    x = C.seeded_randn(2, 5, 16)
    ref = layer(x).detach()
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)
        layer.to(torch.bfloat16)
        out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    assert C.rel_err(out, ref) < 5e-2


# ------------------------------------------------------------------------------- errors


def test_transformer_layers_reject_bad_arguments() -> None:
    for cls in (eTransformerEncoderLayer, eTransformerDecoderLayer):
        with pytest.raises(ValueError, match="regular representation"):
            cls(C.rep("C8", "irr1+triv"), 1, 16)
        with pytest.raises(ValueError, match="regular representation"):
            cls(C.rep("C8", "Q:reg"), 1, 16)
        with pytest.raises(ValueError, match=r"\[1, 2, 4\]"):
            cls(C.rep("C8", "4reg"), 3, 16)
        with pytest.raises(ValueError, match="dim_feedforward") as info:
            cls(C.rep("C8", "4reg"), 2, 20)
        assert "|G| = 8" in str(info.value)
        assert "20" in str(info.value)
        with pytest.raises(ValueError, match="norm_module"):
            cls(C.rep("C8", "2reg"), 2, 16, norm_module="batchnorm")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="activation"):
            cls(C.rep("C8", "2reg"), 2, 16, activation="swish")
        with pytest.raises(ValueError, match="dropout"):
            cls(C.rep("C8", "2reg"), 2, 16, dropout=1.0)
        with pytest.raises(ValueError, match="init scheme"):
            cls(C.rep("C8", "2reg"), 2, 16, init_scheme="he")  # type: ignore[arg-type]


def test_transformer_layers_reject_bad_inputs() -> None:
    enc = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 16)
    with pytest.raises(ValueError, match=r"\(\.\.\., 16\)") as info:
        enc(torch.randn(2, 5, 15))
    assert "(2, 5, 15)" in str(info.value)
    dec = eTransformerDecoderLayer(C.rep("C8", "2reg"), 2, 16)
    with pytest.raises(ValueError, match="memory"):
        dec(torch.randn(2, 5, 16), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="tgt"):
        dec(torch.randn(2, 5, 8), torch.randn(2, 5, 16))
    with pytest.raises(TypeError, match="eTransformerEncoderLayer"):
        eTransformerEncoder(dec, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="eTransformerDecoderLayer"):
        eTransformerDecoder(enc, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_layers"):
        eTransformerEncoder(enc, 0)


def test_feedforward_of_one_regular_copy() -> None:
    # dim_feedforward == |G| is a valid multiple of |G| (one regular copy).
    layer = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 8, dropout=0.0).double()
    x = C.seeded_randn(2, 3, 16)
    assert C.equivariance_error(layer, "C8", ["2reg"], "2reg", [x]) < 1e-10


# ---------------------------------------------------------------------------- reset


@pytest.mark.parametrize("cls", [eTransformerEncoderLayer, eTransformerDecoderLayer])
def test_reset_parameters_redraws_everything(cls: type[eTransformerEncoderLayer]) -> None:
    layer = cls(C.rep("C8", "2reg"), 2, 16, dropout=0.0, norm_module="layernorm")
    C.perturb_(layer)
    before = {name: p.detach().clone() for name, p in layer.named_parameters()}
    layer.reset_parameters("xavier_uniform")
    for name, p in layer.named_parameters():
        assert not torch.equal(before[name], p), name
        if name.startswith("norm") and "scale" in name:
            assert torch.all(p == 1), name
        elif "bias" in name:
            assert torch.count_nonzero(p) == 0, name
    with pytest.raises(ValueError, match="init scheme"):
        layer.reset_parameters("normal")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [eTransformerEncoderLayer, eTransformerDecoderLayer])
def test_sequence_first_layout_and_no_bias(cls: type[eTransformerEncoderLayer]) -> None:
    rep = C.rep("C8", "2reg")
    first = cls(rep, 2, 16, dropout=0.0, bias=False).double()
    second = cls(rep, 2, 16, dropout=0.0, bias=False, batch_first=False).double()
    assert not any("bias" in name for name, _ in first.named_parameters())
    C.perturb_(first, scale=0.1)
    second.load_state_dict(first.state_dict())
    x = C.seeded_randn(2, 5, 16)

    def run(module: nn.Module, t: Tensor) -> Tensor:
        if isinstance(module, eTransformerDecoderLayer):
            return module(t, t.tanh())  # a pointwise memory: layout-free, equivariant
        out: Tensor = module(t)
        return out

    torch.testing.assert_close(run(second, x.transpose(0, 1)).transpose(0, 1), run(first, x))
    second.eval()
    with torch.no_grad():
        torch.testing.assert_close(run(second, x.transpose(0, 1)).transpose(0, 1), run(first, x))
    assert C.equivariance_error(lambda t: run(first, t), "C8", ["2reg"], "2reg", [x]) < 1e-10


def test_is_causal_with_padding_masks() -> None:
    # is_causal / tgt_is_causal apply when no explicit mask is given, also together with padding.
    x, mem = C.seeded_randn(2, 5, 16), C.seeded_randn(2, 3, 16, seed=1)
    pad = _pad(2, 5)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    enc = _encoder_layer()
    torch.testing.assert_close(
        enc(x, src_key_padding_mask=pad, is_causal=True),
        enc(x, src_mask=causal, src_key_padding_mask=pad),
    )
    dec = _decoder_layer()
    torch.testing.assert_close(
        dec(x, mem, tgt_key_padding_mask=pad, tgt_is_causal=True),
        dec(x, mem, tgt_mask=causal, tgt_key_padding_mask=pad),
    )


def test_non_integer_feedforward_width_is_rejected_clearly() -> None:
    with pytest.raises((TypeError, ValueError), match="dim_feedforward"):
        eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 32.0)  # type: ignore[arg-type]


# --------------------------------------------------------- inference without autograd


@pytest.mark.parametrize(("norm_first", "norm_module", "activation"), CONFIGS, ids=CONFIG_IDS)
def test_inference_in_place_steps_match_autograd_and_keep_the_inputs(
    norm_first: bool, norm_module: NormModule, activation: str
) -> None:
    # Without autograd, activations and residual sums reuse the memory of fresh block outputs.
    rep = C.rep("D3", "2reg")
    decoder = (
        eTransformerDecoderLayer(
            rep,
            2,
            24,
            dropout=0.0,
            norm_first=norm_first,
            norm_module=norm_module,
            activation=activation,
        )
        .double()
        .eval()
    )
    C.perturb_(decoder, scale=0.2)
    tgt, mem = C.seeded_randn(2, 4, 12), C.seeded_randn(2, 3, 12, seed=2)
    tgt_copy, mem_copy = tgt.clone(), mem.clone()
    reference = decoder(tgt.requires_grad_(True), mem).detach()
    tgt = tgt.detach()
    with torch.no_grad():
        out = decoder(tgt, mem, tgt_is_causal=False)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tgt, tgt_copy, rtol=0, atol=0)
    torch.testing.assert_close(mem, mem_copy, rtol=0, atol=0)


class _PassThroughAttention(nn.Module):
    """Stands in for self-attention and returns its query: the block output aliases the input."""

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, **kwargs: Any
    ) -> tuple[Tensor, None]:
        return query, None


@pytest.mark.parametrize("cls", [eTransformerEncoderLayer, eTransformerDecoderLayer])
def test_replaced_submodules_never_let_inference_edit_the_input(
    cls: type[eTransformerEncoderLayer] | type[eTransformerDecoderLayer],
) -> None:
    layer = cls(C.rep("C8", "2reg"), 2, 32, dropout=0.0, norm_first=True)
    layer.self_attn = _PassThroughAttention()  # type: ignore[assignment]
    layer.norm1 = nn.Identity()  # type: ignore[assignment]
    layer.eval()
    x, mem = C.seeded_randn(2, 4, 16, dtype=torch.float32), C.seeded_randn(2, 3, 16, seed=2)
    args = () if cls is eTransformerEncoderLayer else (mem.float(),)
    x_copy = x.clone()
    reference = layer(x.clone().requires_grad_(True), *args).detach()
    with torch.no_grad():
        out = layer(x, *args)
    torch.testing.assert_close(x, x_copy, rtol=0, atol=0)
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
