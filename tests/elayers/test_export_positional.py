"""export() and frozen() of the rotary/relative attention and transformer layers (issue 10 x 13)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import (
    PositionalMultiheadAttention,
    PositionalTransformerDecoder,
    PositionalTransformerDecoderLayer,
    PositionalTransformerEncoder,
    PositionalTransformerEncoderLayer,
    eModule,
    eMultiheadAttention,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    eTransformerEncoder,
    eTransformerEncoderLayer,
)
from ereps import group_order
from tests import _exported as X
from tests.elayers import _cases as C

KEY, SPEC = "C8", "4reg"
T_Q, T_K = 5, 7
POS = ["rope", "relative"]
COMBOS = list(itertools.product(POS, [False, True], [False, True]))  # pos, causal, masked


def _perturbed(module: eModule) -> eModule:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module.eval()


def _inputs(dtype: torch.dtype, masked: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    gen = torch.Generator().manual_seed(1)
    size = C.rep(KEY, SPEC).size
    x = torch.randn(3, T_Q, size, generator=gen, dtype=dtype)
    memory = torch.randn(3, T_K, size, generator=gen, dtype=dtype)
    pad = None
    if masked:  # right padding of different lengths; one row keeps every key
        pad = torch.arange(T_Q) >= torch.tensor([T_Q, 3, 1])[:, None]
    # Positions other than the defaults: a per-sample shift of the queries and later keys.
    pos = torch.arange(T_Q) + torch.tensor([0, 2, 5])[:, None]
    return x, memory, pad, pos


def _close(got: Tensor, expected: Tensor, dtype: torch.dtype) -> None:
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def _agree(source: nn.Module, run: Callable[[nn.Module], Tensor], dtype: torch.dtype) -> nn.Module:
    """Export ``source``, check it is plain and agrees with it, and that frozen() agrees too."""
    source = source.to(dtype)
    with torch.no_grad():
        expected = run(source)
        plain = elayers.export(source)
        X.assert_plain(plain)
        got = run(plain)
        with elayers.frozen(source) as same:
            in_scope = run(same)
    assert torch.isfinite(expected).all()
    scale = expected.abs().max().item()
    assert scale > 0
    _close(got, expected, dtype)
    _close(in_scope, expected, dtype)
    return plain


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("pos", "causal", "masked"), COMBOS)
def test_attention_export(pos: str, causal: bool, masked: bool, dtype: torch.dtype) -> None:
    attn = _perturbed(eMultiheadAttention(C.rep(KEY, SPEC), 2, pos_encoding=pos))  # type: ignore[arg-type]
    x, memory, pad, q_pos = _inputs(dtype, masked)

    def run(module: nn.Module) -> Tensor:
        # Self-attention with explicit positions (and masks), then cross-attention to later keys.
        out, weights = module(
            x,
            x,
            x,
            key_padding_mask=pad,
            is_causal=causal,
            attn_mask=None,
            query_pos=q_pos,
            key_pos=q_pos,
        )
        cross, _ = module(x, memory, memory, query_pos=q_pos, key_pos=torch.arange(T_K) + 3)
        assert weights is not None
        return torch.cat((out.flatten(), weights.flatten(), cross.flatten()))

    plain = _agree(attn, run, dtype)
    assert type(plain) is PositionalMultiheadAttention
    assert plain.pos_encoding == pos


def test_attention_export_keeps_options() -> None:
    attn = eMultiheadAttention(
        C.rep(KEY, SPEC), 1, pos_encoding="relative", max_relative_distance=3
    ).eval()
    plain = attn.export()
    assert isinstance(plain, PositionalMultiheadAttention)
    assert plain.relative_bias is not None
    assert plain.relative_bias.max_distance == 3
    rope = eMultiheadAttention(C.rep(KEY, SPEC), 1, pos_encoding="rope", rope_base=100.0).export()
    assert isinstance(rope, PositionalMultiheadAttention)
    assert rope.rotary is not None
    assert rope.rotary.base == 100.0
    assert rope.rotary.block == group_order(C.group(KEY))
    # Without positions the export stays torch's attention (fused path).
    assert isinstance(eMultiheadAttention(C.rep(KEY, SPEC), 2).export(), nn.MultiheadAttention)


def _enc_layer(pos: str, norm: str = "layernorm", activation: str = "gelu") -> eModule:
    rep = C.rep(KEY, SPEC)
    layer = eTransformerEncoderLayer(
        rep,
        2,
        2 * rep.size,
        dropout=0.0,
        activation=activation,
        norm_module=norm,  # type: ignore[arg-type]
        norm_first=True,
        pos_encoding=pos,  # type: ignore[arg-type]
    )
    return _perturbed(layer)


def _dec_layer(pos: str, norm: str = "layernorm") -> eModule:
    rep = C.rep(KEY, SPEC)
    layer = eTransformerDecoderLayer(
        rep,
        2,
        2 * rep.size,
        dropout=0.0,
        norm_module=norm,  # type: ignore[arg-type]
        pos_encoding=pos,  # type: ignore[arg-type]
    )
    return _perturbed(layer)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("pos", "causal", "masked"), COMBOS)
def test_encoder_layer_and_stack_export(
    pos: str, causal: bool, masked: bool, dtype: torch.dtype
) -> None:
    x, _, pad, src_pos = _inputs(dtype, masked)

    def run(module: nn.Module) -> Tensor:
        out: Tensor = module(x, src_key_padding_mask=pad, is_causal=causal, src_pos=src_pos)
        return out

    norm = "rmsnorm" if causal else "layernorm"  # both norms, the RMS one with a non-torch act
    layer = _agree(_enc_layer(pos, norm, "silu" if causal else "gelu"), run, dtype)
    assert type(layer) is PositionalTransformerEncoderLayer
    rep = C.rep(KEY, SPEC)
    inner = eTransformerEncoderLayer(rep, 2, 2 * rep.size, dropout=0.0, pos_encoding=pos)  # type: ignore[arg-type]
    stack = eTransformerEncoder(inner, 2, norm=elayers.eLayerNorm(rep))
    assert type(_agree(_perturbed(stack), run, dtype)) is PositionalTransformerEncoder


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("pos", "causal", "masked"), COMBOS)
def test_decoder_layer_and_stack_export(
    pos: str, causal: bool, masked: bool, dtype: torch.dtype
) -> None:
    x, memory, pad, tgt_pos = _inputs(dtype, masked)
    mem_pad = (
        None
        if pad is None
        else torch.zeros(3, T_K, dtype=torch.bool).index_fill(1, torch.tensor([0]), True)
    )

    def run(module: nn.Module) -> Tensor:
        out: Tensor = module(
            x,
            memory,
            tgt_key_padding_mask=pad,
            memory_key_padding_mask=mem_pad,
            tgt_is_causal=causal,
            tgt_pos=tgt_pos,
            memory_pos=torch.arange(T_K) - 1,
        )
        return out

    layer = _agree(_dec_layer(pos, "rmsnorm" if causal else "layernorm"), run, dtype)
    assert type(layer) is PositionalTransformerDecoderLayer
    rep = C.rep(KEY, SPEC)
    inner = eTransformerDecoderLayer(rep, 2, 2 * rep.size, dropout=0.0, pos_encoding=pos)  # type: ignore[arg-type]
    stack = eTransformerDecoder(inner, 2)
    assert type(_agree(_perturbed(stack), run, dtype)) is PositionalTransformerDecoder


@pytest.mark.parametrize("pos", POS)
def test_torch_export_of_exported_masked_layer_dynamic_batch(pos: str) -> None:
    plain = elayers.export(_enc_layer(pos))
    x, _, pad, src_pos = _inputs(torch.float32, True)
    assert pad is not None
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        plain,
        (x,),
        {"src_key_padding_mask": pad, "src_pos": src_pos},
        dynamic_shapes={
            "src": {0: batch},
            "src_key_padding_mask": {0: batch},
            "src_pos": {0: batch},
        },
    )
    gen = torch.Generator().manual_seed(5)
    x5 = torch.randn(6, T_Q, x.shape[-1], generator=gen)
    pad5 = torch.rand(6, T_Q, generator=gen) < 0.4
    pad5[:, 0] = False
    pos5 = torch.randint(0, 20, (6, 1), generator=gen) + torch.arange(T_Q)
    with torch.no_grad():
        expected = plain(x5, src_key_padding_mask=pad5, src_pos=pos5)
    got = program.module()(x5, src_key_padding_mask=pad5, src_pos=pos5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_positional_plain_files_import_nothing_but_torch() -> None:
    root = Path(elayers.__file__).parent
    torch_only = {"__future__", "torch", "typing", "collections", "copy"}
    assert X.runtime_imports(root / "_positional.py") <= torch_only
    # The plain layers import the plain attention from its torch-only sibling, nothing else.
    assert X.runtime_imports(root / "_plain_transformer.py") <= torch_only | {"elayers"}
    source = (root / "_plain_transformer.py").read_text()
    assert "from elayers._positional import" in source
    assert source.count("from elayers") == 1
