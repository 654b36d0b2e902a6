"""eMultiheadAttention: equivariance, agreement with torch.nn.MultiheadAttention, masks, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from elayers import eMultiheadAttention, valid_head_counts
from tests.elayers import _cases as C

# (group, in_rep spec, num_heads)
MHA_CASES = [("C8", "4reg", 2), ("D3", "4reg", 4), ("O", "2reg", 2), ("I", "2reg", 2)]
MHA_IDS = [f"{k}-{s}-h{h}" for k, s, h in MHA_CASES]


def _mha(
    key: str, spec: str, heads: int, *, bias: bool = True, batch_first: bool = True
) -> eMultiheadAttention:
    module = eMultiheadAttention(C.rep(key, spec), heads, bias=bias, batch_first=batch_first)
    module.double()
    C.perturb_(module, scale=0.1)
    return module.eval()


def _torch_twin(module: eMultiheadAttention) -> nn.MultiheadAttention:
    """torch.nn.MultiheadAttention with the dense weights of ``module``: the reference."""
    twin = nn.MultiheadAttention(
        module.embed_dim,
        module.num_heads,
        bias=module.in_proj.bias is not None,
        batch_first=module.batch_first,
        dtype=torch.float64,
    )
    with torch.no_grad():
        twin.in_proj_weight.copy_(module.in_proj.weight)
        twin.out_proj.weight.copy_(module.out_proj.weight)
        if module.in_proj.bias is not None and module.out_proj.bias is not None:
            assert twin.in_proj_bias is not None
            twin.in_proj_bias.copy_(module.in_proj.bias)
            twin.out_proj.bias.copy_(module.out_proj.bias)
    return twin.train()  # train mode with dropout 0: the reference composite path


def _causal(t_q: int, t_k: int) -> Tensor:
    return torch.ones(t_q, t_k, dtype=torch.bool).triu(1)


def _padding(n: int, t_k: int) -> Tensor:
    mask = torch.zeros(n, t_k, dtype=torch.bool)
    mask[0, -2:] = True
    mask[-1, -1] = True
    return mask


# -------------------------------------------------------------------------------- equivariance


@pytest.mark.parametrize(("key", "spec", "heads"), MHA_CASES, ids=MHA_IDS)
def test_self_attention_is_equivariant(key: str, spec: str, heads: int) -> None:
    module = _mha(key, spec, heads)
    x = C.seeded_randn(2, 5, C.rep(key, spec).size)
    pad = _padding(2, 5)

    def fns() -> list[Callable[[Tensor], Tensor]]:
        return [
            lambda t: module(t, t, t)[0],
            lambda t: module(t, t, t, need_weights=False, is_causal=True)[0],
            lambda t: module(t, t, t, key_padding_mask=pad, attn_mask=_causal(5, 5))[0],
        ]

    for fn in fns():
        assert C.equivariance_error(fn, key, [spec], spec, [x]) < 1e-10
    module.float()
    for fn in fns():
        assert C.equivariance_error(fn, key, [spec], spec, [x.float()]) < 1e-5


@pytest.mark.parametrize(("key", "spec", "heads"), MHA_CASES[:3], ids=MHA_IDS[:3])
def test_cross_attention_is_equivariant(key: str, spec: str, heads: int) -> None:
    module = _mha(key, spec, heads)
    e = C.rep(key, spec).size
    q, k, v = (
        C.seeded_randn(2, 3, e),
        C.seeded_randn(2, 6, e, seed=1),
        C.seeded_randn(2, 6, e, seed=2),
    )
    pad = _padding(2, 6)

    def cross(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        return module(a, b, c, key_padding_mask=pad)[0]

    def memory(a: Tensor, b: Tensor) -> Tensor:
        return module(a, b, b, need_weights=False)[0]

    assert C.equivariance_error(cross, key, [spec] * 3, spec, [q, k, v]) < 1e-10
    assert C.equivariance_error(memory, key, [spec] * 2, spec, [q, k]) < 1e-10


def test_attention_weights_are_invariant() -> None:
    key, spec = "D3", "4reg"
    module = _mha(key, spec, 2)
    x = C.seeded_randn(2, 5, 24)
    _, w = module(x, x, x, average_attn_weights=False)
    assert w is not None
    for i in C.element_indices(key):
        gx = C.act(key, spec, i, x)
        _, gw = module(gx, gx, gx, average_attn_weights=False)
        assert gw is not None
        torch.testing.assert_close(gw, w, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ torch as the reference

MASK_CASES = ["none", "bool2d", "float3d", "padding", "float_padding", "both"]


def _masks(case: str, n: int, heads: int, t_q: int, t_k: int) -> dict[str, Any]:
    attn: Tensor | None = None
    pad: Tensor | None = None
    if case in ("bool2d", "both"):
        attn = _causal(t_q, t_k)
    if case == "float3d":
        attn = C.seeded_randn(n * heads, t_q, t_k, seed=7)
    if case in ("padding", "both"):
        pad = _padding(n, t_k)
    if case == "float_padding":
        pad = torch.zeros(n, t_k, dtype=torch.float64)
        pad[0, 1] = float("-inf")
        pad[1, 2] = -3.0
    return {"attn_mask": attn, "key_padding_mask": pad}


@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("kind", ["self", "kv", "cross"])
def test_matches_torch_multihead_attention(case: str, need_weights: bool, kind: str) -> None:
    module = _mha("C8", "4reg", 2)
    twin = _torch_twin(module)
    n, t_q, t_k = 2, 4, (4 if kind == "self" else 6)
    q = C.seeded_randn(n, t_q, 32)
    k = q if kind == "self" else C.seeded_randn(n, t_k, 32, seed=1)
    v = k if kind != "cross" else C.seeded_randn(n, t_k, 32, seed=2)
    masks = _masks(case, n, 2, t_q, t_k)
    out, w = module(q, k, v, need_weights=need_weights, **masks)
    ref, ref_w = twin(q, k, v, need_weights=need_weights, **masks)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    if need_weights:
        assert w is not None
        assert ref_w is not None
        torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-12)
    else:
        assert w is None


def test_matches_torch_without_bias_unbatched_heads_and_sequence_first() -> None:
    module = _mha("D3", "4reg", 4, bias=False, batch_first=False)
    assert module.in_proj.bias is None
    twin = _torch_twin(module)
    x = C.seeded_randn(5, 2, 24)  # (L, N, E)
    out, w = module(x, x, x, average_attn_weights=False)
    ref, ref_w = twin(x, x, x, average_attn_weights=False)
    assert out.shape == (5, 2, 24)
    assert w is not None
    assert w.shape == (2, 4, 5, 5)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("t_k", [5, 7])
def test_is_causal_equals_explicit_mask(t_k: int) -> None:
    module = _mha("C8", "4reg", 2)
    q = C.seeded_randn(2, 5, 32)
    kv = q if t_k == 5 else C.seeded_randn(2, t_k, 32, seed=1)
    explicit, w_explicit = module(q, kv, kv, attn_mask=_causal(5, t_k))
    for need_weights in (True, False):
        implicit, w = module(q, kv, kv, is_causal=True, need_weights=need_weights)
        torch.testing.assert_close(implicit, explicit, rtol=1e-10, atol=1e-12)
        if need_weights:
            torch.testing.assert_close(w, w_explicit, rtol=0, atol=1e-12)
    # An explicit mask wins over the is_causal hint (as in torch).
    full = torch.zeros(5, t_k, dtype=torch.bool)
    hinted, _ = module(q, kv, kv, attn_mask=full, is_causal=True)
    unmasked, _ = module(q, kv, kv)
    torch.testing.assert_close(hinted, unmasked)


@pytest.mark.parametrize("need_weights", [True, False])
def test_is_causal_with_key_padding_mask(need_weights: bool) -> None:
    # is_causal applies whenever attn_mask is None, also when a key_padding_mask is given.
    module = _mha("C8", "4reg", 2)
    x = C.seeded_randn(2, 5, 32)
    pad = _padding(2, 5)
    explicit, _ = module(x, x, x, attn_mask=_causal(5, 5), key_padding_mask=pad)
    implicit, _ = module(x, x, x, key_padding_mask=pad, is_causal=True, need_weights=need_weights)
    torch.testing.assert_close(implicit, explicit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", MASK_CASES)
def test_need_weights_does_not_change_output(case: str) -> None:
    module = _mha("D3", "4reg", 2)
    q = C.seeded_randn(2, 4, 24)
    kv = C.seeded_randn(2, 6, 24, seed=1)
    masks = _masks(case, 2, 2, 4, 6)
    with_w, w = module(q, kv, kv, need_weights=True, **masks)
    without, none = module(q, kv, kv, need_weights=False, **masks)
    assert none is None
    torch.testing.assert_close(with_w, without, rtol=1e-10, atol=1e-12)
    assert w is not None
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, dtype=torch.float64))
    attn, pad = masks["attn_mask"], masks["key_padding_mask"]
    if attn is not None and attn.dtype == torch.bool:
        assert torch.all(w[:, attn] == 0)
    if pad is not None and pad.dtype == torch.bool:
        for b in range(2):
            assert torch.all(w[b][:, pad[b]] == 0)


def test_bool_and_additive_masks_agree() -> None:
    module = _mha("C8", "4reg", 2)
    x = C.seeded_randn(2, 5, 32)
    bool_mask = _causal(5, 5)
    float_mask = torch.zeros(5, 5, dtype=torch.float64).masked_fill(bool_mask, float("-inf"))
    pad = _padding(2, 5)
    float_pad = torch.zeros(2, 5, dtype=torch.float64).masked_fill(pad, float("-inf"))
    a, _ = module(x, x, x, attn_mask=bool_mask, key_padding_mask=pad)
    b, _ = module(x, x, x, attn_mask=float_mask, key_padding_mask=float_pad)
    c, _ = module(x, x, x, attn_mask=float_mask, key_padding_mask=pad, need_weights=False)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    # Padded keys do not influence the output: change only the padded tokens of batch entry 0.
    x2 = x.clone()
    x2[0, -2:] += 10.0
    ref, _ = module(x, x, x, key_padding_mask=pad)
    d, _ = module(x2, x2, x2, key_padding_mask=pad)
    torch.testing.assert_close(d[0, :3], ref[0, :3])
    torch.testing.assert_close(d[1], ref[1])
    assert not torch.allclose(d[0, 3:], ref[0, 3:])


def test_dropout_only_in_training() -> None:
    module = eMultiheadAttention(C.rep("C8", "2reg"), 2, dropout=0.5)
    x = torch.randn(2, 6, 16)
    module.eval()
    torch.testing.assert_close(module(x, x, x)[0], module(x, x, x)[0])
    module.train()
    assert not torch.equal(module(x, x, x)[0], module(x, x, x)[0])


# ------------------------------------------------------------------------------------- errors


def test_rejects_non_regular_in_rep() -> None:
    for spec in ("irr1+triv", "Q:reg", "P:reg", "quot+quot"):
        with pytest.raises(ValueError, match="regular representation"):
            eMultiheadAttention(C.rep("C8", spec), 1)


def test_rejects_head_count_and_lists_valid_ones() -> None:
    assert valid_head_counts(6) == [1, 2, 3, 6]
    for heads in (4, 5, 0, -2):
        with pytest.raises(ValueError, match=r"\[1, 2, 3, 6\]") as info:
            eMultiheadAttention(C.rep("C8", "6reg"), heads)
        assert str(heads) in str(info.value)


def test_rejects_bad_inputs() -> None:
    module = eMultiheadAttention(C.rep("C8", "2reg"), 2)
    good = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="E = 16") as info:
        module(torch.randn(2, 5, 12), good, good)
    assert "(2, 5, 12)" in str(info.value)
    with pytest.raises(ValueError, match="E = 16"):
        module(torch.randn(5, 16), torch.randn(5, 16), torch.randn(5, 16))
    with pytest.raises(ValueError, match="same shape"):
        module(good, good, torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="batch"):
        module(torch.randn(3, 5, 16), good, good)
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        module(good, good, good, attn_mask=torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(4, 5, 5\)"):
        module(good, good, good, attn_mask=torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        module(good, good, good, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout"):
        eMultiheadAttention(C.rep("C8", "2reg"), 2, dropout=1.0)
    with pytest.raises(ValueError, match="init scheme"):
        eMultiheadAttention(C.rep("C8", "2reg"), 2, init_scheme="zeros")  # type: ignore[arg-type]


def test_reset_parameters_redraws_every_projection() -> None:
    module = eMultiheadAttention(C.rep("D3", "4reg"), 2)
    C.perturb_(module)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    module.reset_parameters("kaiming_uniform")
    for name, p in module.named_parameters():
        assert not torch.equal(before[name], p), name
        if "bias" in name:
            assert torch.count_nonzero(p) == 0, name
    # kaiming_uniform: every entry within sqrt(6 / fan_in).
    bound = (6.0 / 24) ** 0.5
    assert module.in_proj.weight.abs().max().item() <= bound * (1 + 1e-6)
    with pytest.raises(ValueError, match="init scheme"):
        module.reset_parameters("uniform")  # type: ignore[arg-type]
