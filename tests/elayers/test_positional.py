"""Positions in attention: rotary embeddings, relative biases, masked rows, plain twins."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from elayers import (
    PositionalMultiheadAttention,
    PositionalTransformerDecoderLayer,
    PositionalTransformerEncoderLayer,
    RelativePositionBias,
    RotaryEmbedding,
    eMultiheadAttention,
    eTransformerDecoderLayer,
    eTransformerEncoderLayer,
)
from tests.elayers import _cases as C

POS = ["rope", "relative"]


def _rotate_reference(x: Tensor, pos: Tensor, block: int, base: float) -> Tensor:
    """RoPE by explicit 2x2 rotations of (block i, block i + P), coordinate by coordinate."""
    n_blocks = x.shape[-1] // block
    pairs = n_blocks // 2
    out = x.clone()
    for t in range(x.shape[-2]):
        for i in range(pairs):
            angle = float(pos[t]) * base ** (-i / pairs)
            c, s = math.cos(angle), math.sin(angle)
            for a in range(block):
                u = x[..., t, i * block + a]
                v = x[..., t, (i + pairs) * block + a]
                out[..., t, i * block + a] = c * u - s * v
                out[..., t, (i + pairs) * block + a] = s * u + c * v
    return out


@pytest.mark.parametrize(("head_dim", "block"), [(8, 1), (7, 1), (24, 8), (40, 8)])
def test_rotary_matches_explicit_rotations(head_dim: int, block: int) -> None:
    rope = RotaryEmbedding(head_dim, block=block, base=100.0)
    x = C.seeded_randn(2, 3, 5, head_dim)
    pos = torch.tensor([0, 3, -2, 7, 11])
    torch.testing.assert_close(rope(x, pos), _rotate_reference(x, pos, block, 100.0))
    # Per-sample positions: each batch row with its own positions.
    pos_b = torch.stack((pos, pos + 4))
    got = rope(x, pos_b)
    torch.testing.assert_close(got[1], _rotate_reference(x[1], pos + 4, block, 100.0))


def test_rotary_logits_depend_on_relative_positions_only() -> None:
    rope = RotaryEmbedding(16, block=4)
    q, k = C.seeded_randn(1, 2, 6, 16, seed=1), C.seeded_randn(1, 2, 6, 16, seed=2)
    pos = torch.arange(6)
    logits = rope(q, pos) @ rope(k, pos).transpose(-2, -1)
    shifted = rope(q, pos + 9) @ rope(k, pos + 9).transpose(-2, -1)
    torch.testing.assert_close(logits, shifted)
    assert not torch.allclose(logits, q @ k.transpose(-2, -1)), "positions must matter"


@pytest.mark.parametrize("key", ["C8", "D3"])
def test_rotary_commutes_with_the_regular_action(key: str) -> None:
    spec = "4reg"
    order = C.group(key).order()
    rope = RotaryEmbedding(4 * order, block=order)
    x = C.seeded_randn(2, 1, 5, 4 * order)
    pos = torch.arange(5) * 3
    for i in C.element_indices(key):
        torch.testing.assert_close(
            rope(C.act(key, spec, i, x), pos), C.act(key, spec, i, rope(x, pos))
        )


def test_relative_bias_is_a_clipped_table_lookup() -> None:
    rel = RelativePositionBias(3, 2)
    q_pos, k_pos = torch.tensor([0, 1, 5]), torch.tensor([-3, 0, 2, 9])
    bias = rel(q_pos, k_pos)
    assert bias.shape == (1, 3, 3, 4)
    for i, p in enumerate(q_pos.tolist()):
        for j, r in enumerate(k_pos.tolist()):
            offset = max(-2, min(2, r - p))
            torch.testing.assert_close(bias[0, :, i, j], rel.weight[:, offset + 2])
    batched = rel(torch.stack((q_pos, q_pos + 1)), k_pos)
    assert batched.shape == (2, 3, 3, 4)
    torch.testing.assert_close(batched[1], rel(q_pos + 1, k_pos)[0])


# ----------------------------------------------------------------------------- eMultiheadAttention


def _mha(key: str, pos: str, heads: int = 2) -> eMultiheadAttention:
    module = eMultiheadAttention(C.rep(key, "4reg"), heads, pos_encoding=pos)  # type: ignore[arg-type]
    module.double()
    C.perturb_(module, scale=0.1)
    return module.eval()


@pytest.mark.parametrize("key", ["C8", "D3", "I"])
@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("masked", [False, True])
def test_attention_with_positions_is_equivariant(key: str, pos: str, masked: bool) -> None:
    module = _mha(key, pos)
    n, t_q, t_k = 2, 4, 5
    pad = torch.zeros(n, t_k, dtype=torch.bool)
    pad[0, -2:] = True
    q_pos = torch.tensor([[0, 1, 2, 3], [2, 3, 4, 5]])
    k_pos = torch.tensor([-1, 0, 1, 2, 3])
    kw: dict[str, Any] = (
        {"key_padding_mask": pad, "attn_mask": C.seeded_randn(t_q, t_k) > 1.0} if masked else {}
    )

    def cross(a: Tensor, b: Tensor) -> Tensor:
        out, _ = module(a, b, b, need_weights=False, query_pos=q_pos, key_pos=k_pos, **kw)
        return out

    def self_causal(a: Tensor) -> Tensor:
        out, _ = module(
            a, a, a, key_padding_mask=pad if masked else None, is_causal=True, need_weights=True
        )
        return out

    x, m = C.seeded_randn(n, t_q, module.embed_dim), C.seeded_randn(n, t_k, module.embed_dim)
    assert C.equivariance_error(cross, key, ["4reg", "4reg"], "4reg", [x, m]) <= 1e-10
    assert C.equivariance_error(self_causal, key, ["4reg"], "4reg", [m]) <= 1e-10


@pytest.mark.parametrize("pos", POS)
def test_attention_output_is_invariant_to_a_common_shift(pos: str) -> None:
    module = _mha("C8", pos)
    x, m = C.seeded_randn(2, 4, 32), C.seeded_randn(2, 6, 32, seed=3)
    q_pos, k_pos = torch.arange(4), torch.arange(6) - 2
    out, _ = module(x, m, m, query_pos=q_pos, key_pos=k_pos)
    shifted, _ = module(x, m, m, query_pos=q_pos + 5, key_pos=k_pos + 5)
    torch.testing.assert_close(out, shifted)
    other, _ = module(x, m, m, query_pos=q_pos + 1, key_pos=k_pos)
    assert C.rel_err(other, out) > 1e-6, "relative positions must matter"


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("need_weights", [False, True])
def test_plain_twin_computes_the_same_function(pos: str, need_weights: bool) -> None:
    """PositionalMultiheadAttention with the dense weights (rope_block = |G|) is the export."""
    module = _mha("D3", pos, heads=2)
    twin = PositionalMultiheadAttention(
        module.embed_dim,
        2,
        pos_encoding=pos,  # type: ignore[arg-type]
        rope_block=C.group("D3").order(),
        max_relative_distance=32,
    ).double()
    with torch.no_grad():
        twin.in_proj_weight.copy_(module.in_proj.weight)
        assert twin.in_proj_bias is not None
        assert module.in_proj.bias is not None
        twin.in_proj_bias.copy_(module.in_proj.bias)
        twin.out_proj.weight.copy_(module.out_proj.weight)
        assert module.out_proj.bias is not None
        twin.out_proj.bias.copy_(module.out_proj.bias)
        if module.relative_bias is not None:
            assert twin.relative_bias is not None
            twin.relative_bias.weight.copy_(module.relative_bias.weight)
    twin.eval()
    x, m = C.seeded_randn(2, 3, 24), C.seeded_randn(2, 5, 24, seed=4)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, -1] = True
    kw: dict[str, Any] = {
        "key_padding_mask": pad,
        "need_weights": need_weights,
        "key_pos": torch.arange(5) - 1,
    }
    out, w = module(x, m, m, **kw)
    out_t, w_t = twin(x, m, m, **kw)
    torch.testing.assert_close(out, out_t)
    if need_weights:
        assert w is not None
        assert w_t is not None
        torch.testing.assert_close(w, w_t)


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_are_zero_not_nan(need_weights: bool) -> None:
    module = _mha("C8", "rope").train()
    x = C.seeded_randn(2, 4, 32).requires_grad_(True)
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[0, :2] = True  # causal: queries 0 and 1 of sample 0 see only padding
    out, _ = module(x, x, x, key_padding_mask=pad, is_causal=True, need_weights=need_weights)
    assert torch.isfinite(out).all()
    # A dead row's attention output is zero, so the layer returns out_proj's bias there.
    bias = module.out_proj.bias
    assert bias is not None
    torch.testing.assert_close(out[0, :2], bias.expand(2, -1))
    C.backward(out.pow(2).sum())
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    # Rows that see a real key are unaffected by the fix: compare with a float mask of -1e30.
    ref, _ = module(
        x,
        x,
        x,
        key_padding_mask=pad.double().masked_fill(pad, -1e30),
        is_causal=True,
        need_weights=need_weights,
    )
    torch.testing.assert_close(out[0, 2:], ref[0, 2:])
    torch.testing.assert_close(out[1], ref[1])


def test_attention_rejects_bad_positions_and_options() -> None:
    plain = _mha("C8", "rope")
    x = C.seeded_randn(2, 3, 32)
    with pytest.raises(TypeError, match="query_pos must be an integer tensor"):
        plain(x, x, x, query_pos=torch.zeros(3))
    with pytest.raises(ValueError, match=r"key_pos must have shape \(L,\) = \(3,\)"):
        plain(x, x, x, key_pos=torch.arange(4))
    none = eMultiheadAttention(C.rep("C8", "4reg"), 2).double()
    with pytest.raises(ValueError, match="has no pos_encoding"):
        none(x, x, x, query_pos=torch.arange(3))
    with pytest.raises(ValueError, match="pos_encoding to be None or one of"):
        eMultiheadAttention(C.rep("C8", "4reg"), 2, pos_encoding="alibi")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"at least 2 copies per head.*Valid head counts: \[1, 2\]"
    ):
        eMultiheadAttention(C.rep("C8", "4reg"), 4, pos_encoding="rope")


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("norm_module", ["layernorm", "rmsnorm"])
def test_layers_with_positions_are_equivariant(
    pos: str, norm_first: bool, norm_module: str
) -> None:
    rep = C.rep("D3", "4reg")
    kw = {
        "dropout": 0.0,
        "norm_first": norm_first,
        "norm_module": norm_module,
        "pos_encoding": pos,
    }
    enc = eTransformerEncoderLayer(rep, 2, 24, **kw).double().eval()  # type: ignore[arg-type]
    dec = eTransformerDecoderLayer(rep, 2, 24, **kw).double().eval()  # type: ignore[arg-type]
    C.perturb_(enc, 0.1)
    C.perturb_(dec, 0.1)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[0, 0] = True
    src_pos = torch.tensor([[3, 4, 5, 6, 7], [0, 1, 2, 3, 4]])

    def encode(a: Tensor) -> Tensor:
        return enc(a, src_key_padding_mask=pad, is_causal=True, src_pos=src_pos)

    def decode(a: Tensor, b: Tensor) -> Tensor:
        return dec(
            a,
            b,
            tgt_key_padding_mask=pad[:, :4],
            memory_key_padding_mask=pad,
            tgt_is_causal=True,
            tgt_pos=torch.arange(4),
            memory_pos=src_pos,
        )

    x, m = C.seeded_randn(2, 4, 24), C.seeded_randn(2, 5, 24, seed=5)
    assert C.equivariance_error(encode, "D3", ["4reg"], "4reg", [m]) <= 1e-10
    assert C.equivariance_error(decode, "D3", ["4reg", "4reg"], "4reg", [x, m]) <= 1e-10
    # Positions are used: moving the memory relative to the target changes the output.
    moved = dec(x, m, tgt_pos=torch.arange(4), memory_pos=src_pos + 1)
    assert C.rel_err(moved, dec(x, m, tgt_pos=torch.arange(4), memory_pos=src_pos)) > 1e-6


@pytest.mark.parametrize("norm_first", [False, True])
def test_plain_layers_without_positions_match_torch(norm_first: bool) -> None:
    """The plain positional layers are torch's layers (same names) plus positions."""
    torch.manual_seed(0)
    kw = {"dropout": 0.0, "activation": "gelu", "batch_first": True, "norm_first": norm_first}
    ours_e = PositionalTransformerEncoderLayer(16, 2, 32, **kw).double().eval()  # type: ignore[arg-type]
    ref_e = nn.TransformerEncoderLayer(16, 2, 32, **kw).double().train()  # type: ignore[arg-type]
    ours_d = PositionalTransformerDecoderLayer(16, 2, 32, **kw).double().eval()  # type: ignore[arg-type]
    ref_d = nn.TransformerDecoderLayer(16, 2, 32, **kw).double().train()  # type: ignore[arg-type]
    ref_e.load_state_dict(ours_e.state_dict())
    ref_d.load_state_dict(ours_d.state_dict())
    x, m = C.seeded_randn(2, 4, 16), C.seeded_randn(2, 5, 16, seed=6)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, -2:] = True
    torch.testing.assert_close(
        ours_e(m, src_key_padding_mask=pad), ref_e(m, src_key_padding_mask=pad)
    )
    torch.testing.assert_close(
        ours_d(x, m, memory_key_padding_mask=pad), ref_d(x, m, memory_key_padding_mask=pad)
    )
