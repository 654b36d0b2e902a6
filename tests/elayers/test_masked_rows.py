"""A query whose keys are all masked: one finite value in the source, its export and frozen().

The documented value (``eMultiheadAttention``): a zero attention output, so the row of the
output is the output projection of zero (its bias) and the row of the weights is zero. Torch's
attention returns NaN there on its fused and weight-returning paths; the plain export must not.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import eMultiheadAttention, eTransformerDecoderLayer, eTransformerEncoderLayer
from tests import _exported as X
from tests.elayers import _cases as C

KEY, SPEC = "C8", "4reg"
N, T_Q, T_K, HEADS = 3, 5, 4, 2
POS = [None, "rope", "relative"]
# Which rows are empty: every query of sample 1 (its keys are all padding), query 2 of every
# sample (a 2-D attn_mask), query 2 of head 0 of sample 0 only (a 3-D attn_mask), or, with the
# causal mask, query 0 of the samples whose first key is padding.
MASKS = ["padding", "attn_mask", "per_head", "causal_padding"]


M = TypeVar("M", bound=nn.Module)


def _perturbed(module: M) -> M:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module.eval()


def _masks(kind: str, t_q: int, t_k: int) -> tuple[dict[str, object], Tensor]:
    """Keyword arguments of the attention call and the ``(N, H, L)`` bool map of empty rows."""
    empty = torch.zeros(N, HEADS, t_q, dtype=torch.bool)
    pad = torch.zeros(N, t_k, dtype=torch.bool)
    if kind == "padding":
        pad[1] = True
        empty[1] = True
        return {"key_padding_mask": pad}, empty
    if kind == "attn_mask":
        mask = torch.zeros(t_q, t_k, dtype=torch.bool)
        mask[2] = True
        mask[0, 1] = True  # an ordinary masked entry too
        empty[:, :, 2] = True
        return {"attn_mask": mask}, empty
    if kind == "per_head":
        mask = torch.zeros(N * HEADS, t_q, t_k)
        mask[0, 2] = float("-inf")  # sample 0, head 0, query 2
        mask[3, 1, 0] = float("-inf")
        empty[0, 0, 2] = True
        return {"attn_mask": mask}, empty
    if kind == "causal_padding":
        pad[0, 0] = True
        pad[2, :2] = True
        empty[0, :, 0] = True
        empty[2, :, :2] = True
        return {"key_padding_mask": pad, "is_causal": True}, empty
    raise AssertionError(kind)


def _close(got: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("pos", "kind", "need_weights", "self_attention"),
    list(itertools.product(POS, MASKS, [False, True], [False, True])),
)
def test_attention_empty_rows_agree_with_export(
    pos: str | None, kind: str, need_weights: bool, self_attention: bool
) -> None:
    rep = C.rep(KEY, SPEC)
    source = _perturbed(eMultiheadAttention(rep, HEADS, pos_encoding=pos)).double()  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    t_k = T_Q if self_attention else T_K
    query = torch.randn(N, T_Q, rep.size, generator=gen, dtype=torch.float64)
    kv = query if self_attention else torch.randn(N, t_k, rep.size, generator=gen).double()
    kwargs, empty = _masks(kind, T_Q, t_k)

    def run(module: nn.Module) -> tuple[Tensor, Tensor | None]:
        out, weights = module(
            query, kv, kv, need_weights=need_weights, average_attn_weights=False, **kwargs
        )
        return out, weights

    plain = elayers.export(source)
    X.assert_plain(plain)
    # With autograd on and off: torch's attention takes other kernels without it.
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            expected, expected_w = run(source)
            got, got_w = run(plain)
            with elayers.frozen(source) as same:
                in_scope, in_scope_w = run(same)
        assert torch.isfinite(expected).all()
        _close(got, expected)
        _close(in_scope, expected)
        if need_weights:
            assert expected_w is not None
            assert got_w is not None
            assert in_scope_w is not None
            assert (expected_w[empty] == 0).all()
            _close(got_w, expected_w)
            _close(in_scope_w, expected_w)
    # A row empty for every head is the projection of a zero attention output.
    rows = empty.all(dim=1)
    assert rows.any() or kind == "per_head"
    bias = source.out_proj(torch.zeros(rep.size, dtype=torch.float64))
    _close(expected[rows], bias.expand(int(rows.sum()), -1))


@pytest.mark.parametrize("pos", POS)
def test_empty_rows_have_finite_gradients_in_source_and_export(pos: str | None) -> None:
    rep = C.rep(KEY, SPEC)
    source = _perturbed(eMultiheadAttention(rep, HEADS, pos_encoding=pos)).double()  # type: ignore[arg-type]
    plain = elayers.export(source)
    kwargs, _ = _masks("padding", T_Q, T_K)
    grads = []
    for module in (source, plain):
        gen = torch.Generator().manual_seed(2)
        query = torch.randn(N, T_Q, rep.size, generator=gen, dtype=torch.float64)
        kv = torch.randn(N, T_K, rep.size, generator=gen, dtype=torch.float64)
        query.requires_grad_(True)
        kv.requires_grad_(True)
        out, _ = module(query, kv, kv, **kwargs)
        out.square().sum().backward()
        assert query.grad is not None
        assert kv.grad is not None
        assert torch.isfinite(query.grad).all()
        assert torch.isfinite(kv.grad).all()
        grads.append((query.grad, kv.grad))
    _close(grads[1][0], grads[0][0])
    _close(grads[1][1], grads[0][1])


Layer = Callable[[nn.Module, Tensor, Tensor, Tensor, Tensor], Tensor]


def _run_encoder(module: nn.Module, x: Tensor, memory: Tensor, pad: Tensor, mpad: Tensor) -> Tensor:
    del memory, mpad
    out: Tensor = module(x, src_key_padding_mask=pad)
    return out


def _run_decoder(module: nn.Module, x: Tensor, memory: Tensor, pad: Tensor, mpad: Tensor) -> Tensor:
    out: Tensor = module(x, memory, tgt_key_padding_mask=pad, memory_key_padding_mask=mpad)
    return out


@pytest.mark.parametrize(
    ("pos", "norm_first", "decoder"), list(itertools.product(POS, [False, True], [False, True]))
)
def test_layers_with_an_all_padding_sample_agree_with_export(
    pos: str | None, norm_first: bool, decoder: bool
) -> None:
    # Torch's fused encoder-layer kernel (eval, no autograd) returns NaN for that sample.
    rep = C.rep(KEY, SPEC)
    layer_cls = eTransformerDecoderLayer if decoder else eTransformerEncoderLayer
    source = _perturbed(
        layer_cls(rep, HEADS, 2 * rep.size, dropout=0.0, norm_first=norm_first, pos_encoding=pos)  # type: ignore[arg-type]
    )
    run: Layer = _run_decoder if decoder else _run_encoder
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, T_Q, rep.size, generator=gen)
    memory = torch.randn(N, T_K, rep.size, generator=gen)
    pad = torch.zeros(N, T_Q, dtype=torch.bool)
    pad[1] = True
    pad[2, 3:] = True
    mpad = torch.zeros(N, T_K, dtype=torch.bool)
    mpad[1] = True
    plain = elayers.export(source)
    X.assert_plain(plain)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            expected = run(source, x, memory, pad, mpad)
            got = run(plain, x, memory, pad, mpad)
            with elayers.frozen(source) as same:
                in_scope = run(same, x, memory, pad, mpad)
        assert torch.isfinite(expected).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(in_scope, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pos", POS)
def test_torch_export_keeps_empty_rows_finite_with_a_dynamic_batch(pos: str | None) -> None:
    rep = C.rep(KEY, SPEC)
    source = _perturbed(eMultiheadAttention(rep, HEADS, pos_encoding=pos))  # type: ignore[arg-type]
    plain = elayers.export(source)

    class Call(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, query: Tensor, kv: Tensor, pad: Tensor) -> Tensor:
            out: Tensor = self.inner(query, kv, kv, key_padding_mask=pad, need_weights=False)[0]
            return out

    gen = torch.Generator().manual_seed(4)
    query = torch.randn(N, T_Q, rep.size, generator=gen)
    kv = torch.randn(N, T_K, rep.size, generator=gen)
    pad, _ = _masks("padding", T_Q, T_K)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        Call(plain).eval(),
        (query, kv, pad["key_padding_mask"]),
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
    )
    # Another batch size, with two samples all padding.
    query5 = torch.randn(5, T_Q, rep.size, generator=gen)
    kv5 = torch.randn(5, T_K, rep.size, generator=gen)
    pad5 = torch.rand(5, T_K, generator=gen) < 0.3
    pad5[[0, 3]] = True
    with torch.no_grad():
        expected, _ = source(query5, kv5, kv5, key_padding_mask=pad5)
    got = program.module()(query5, kv5, pad5)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
def test_onnx_of_exported_attention_keeps_empty_rows_finite(tmp_path: Path) -> None:
    # Without pos_encoding the export is torch's MultiheadAttention class: the ONNX program must
    # carry the empty-row value too (the positional attention is covered through the regressors).
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    rep = C.rep(KEY, SPEC)
    source = _perturbed(eMultiheadAttention(rep, HEADS))
    plain = elayers.export(source)

    class Call(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, query: Tensor, kv: Tensor, pad: Tensor) -> Tensor:
            out: Tensor = self.inner(query, kv, kv, key_padding_mask=pad, need_weights=False)[0]
            return out

    gen = torch.Generator().manual_seed(6)
    query = torch.randn(N, T_Q, rep.size, generator=gen)
    kv = torch.randn(N, T_K, rep.size, generator=gen)
    kwargs, _ = _masks("padding", T_Q, T_K)
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "attention.onnx"
    torch.onnx.export(
        Call(plain).eval(),
        (query, kv, kwargs["key_padding_mask"]),
        f=str(path),
        dynamo=True,
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    query5 = torch.randn(5, T_Q, rep.size, generator=gen)
    kv5 = torch.randn(5, T_K, rep.size, generator=gen)
    pad5 = torch.rand(5, T_K, generator=gen) < 0.3
    pad5[[1, 4]] = True
    with torch.no_grad():
        expected, _ = source(query5, kv5, kv5, key_padding_mask=pad5)
    inputs = (query5, kv5, pad5)
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    assert np.isfinite(got).all()
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)
