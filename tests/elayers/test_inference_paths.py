"""Eval forwards without an implicit cache: what they compute from, and the fused encoder path.

Nothing derived from the parameters is kept between forwards (an explicit ``elayers.frozen`` scope
aside), so compiled, traced and exported programs record the synthesis from the parameters. The
fused encoder path follows torch's own rules: it declines when hooks are attached and under
``torch.func`` transforms. Empty batches work in eval everywhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import eLinear, eTransformerEncoderLayer
from tests.elayers import _cases as C
from tests.elayers.test_export import CASES, _build


def _linear() -> eLinear:
    layer = eLinear(C.rep("C8", "2reg"), C.rep("C8", "3reg"))
    C.perturb_(layer)
    return layer.eval()


def _fused_layer() -> eTransformerEncoderLayer:
    layer = eTransformerEncoderLayer(C.rep("C8", "4reg"), 2, 64, dropout=0.0)
    C.perturb_(layer, scale=0.1)
    return layer.eval()


def _spy_fused(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    fused = torch._transformer_encoder_layer_fwd

    def spy(*args: Any) -> Any:
        calls.append(1)
        return fused(*args)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    return calls


def test_eval_forwards_synthesize_every_time() -> None:
    layer = _linear()
    with torch.no_grad():
        w1, w2 = layer.dense_weight(), layer.dense_weight()
    assert w1 is not w2
    torch.testing.assert_close(w1, w2, rtol=0, atol=0)


def test_public_weight_and_bias_are_fresh_tensors() -> None:
    # Users may scribble on `.weight`; that must not change what forward computes with.
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        before = layer(x)
        weight, bias = layer.weight, layer.bias
        assert bias is not None
        weight.zero_()
        bias.fill_(3.0)
        torch.testing.assert_close(layer(x), before, rtol=0, atol=0)


def test_fused_path_declines_when_hooks_are_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _fused_layer()
    x = C.seeded_randn(2, 5, 32, dtype=torch.float32)
    calls = _spy_fused(monkeypatch)
    with torch.no_grad():
        fast = layer(x)
    assert len(calls) == 1
    seen: list[tuple[int, ...]] = []
    handle = layer.ff.linear1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        hooked = layer(x)
    handle.remove()
    assert len(calls) == 1  # declined: the hook of the submodule ran instead
    assert seen == [(2, 5, 64)]
    torch.testing.assert_close(hooked, fast, rtol=1e-5, atol=1e-5)
    pre = layer.self_attn.register_forward_pre_hook(lambda m, a: None)
    with torch.no_grad():
        layer(x)
    pre.remove()
    glob = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        with torch.no_grad():
            layer(x)
    finally:
        glob.remove()
    assert len(calls) == 1
    with torch.no_grad():
        layer(x)
    assert len(calls) == 2


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_fused_path_declines_under_vmap(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _fused_layer()
    x = C.seeded_randn(2, 5, 32, dtype=torch.float32)
    calls = _spy_fused(monkeypatch)
    with torch.no_grad():
        expected = layer(x)
        batched = torch.func.vmap(layer)(torch.stack([x, -x]))
    assert len(calls) == 1  # only the plain call
    torch.testing.assert_close(batched[0], expected, rtol=1e-5, atol=1e-5)
    # Ensembling over parameters with functional_call, also under vmap.
    params = {n: torch.stack([p.detach(), p.detach()]) for n, p in layer.named_parameters()}
    with torch.no_grad():
        out = torch.func.vmap(
            lambda p: torch.func.functional_call(layer, p, (x,)),
        )(params)
    torch.testing.assert_close(out[1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_empty_batch_in_eval_under_no_grad(name: str) -> None:
    module, x, run = _build(name, torch.float32)
    empty = x[:0]
    with torch.no_grad():
        full = run(module, x)
        out = run(module, empty)
        plain = run(elayers.export(module), empty)
    assert out.numel() == 0
    assert plain.shape == out.shape
    if not name.startswith("attention-masks"):  # that case returns a flat concatenation
        assert out.shape == (0, *full.shape[1:])
    with torch.inference_mode():
        assert run(module, empty).shape == out.shape


def test_compiled_eval_forward_follows_edits() -> None:
    torch._dynamo.reset()
    layer = _linear()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-6, atol=1e-6)
        layer.weight_params.data.mul_(-1.0)
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-6, atol=1e-6)
        with elayers.frozen(layer):
            torch.testing.assert_close(compiled(x), layer(x), rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # shape checks on traced sizes
def test_traced_module_reads_the_parameters() -> None:
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad(), elayers.frozen(layer):
        traced = torch.jit.trace(layer, (x,))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        layer.weight_params.mul_(-1.0)
        expected: Tensor = layer(x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-6, atol=1e-6)


def test_exported_program_of_the_equivariant_module_lifts_the_parameters() -> None:
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad(), elayers.frozen(layer):
        out = layer(x)
        program = torch.export.export(layer, (x,))
    # Only the fixed index/basis tensors (buffers, or constants since they left the buffers) are
    # constants of the program; the dense weight is computed in the graph.
    fixed = {name for name, _ in layer.named_buffers()} | {n for n, _ in layer.named_constants()}
    assert set(program.constants) <= fixed
    assert set(program.graph_signature.parameters) == {name for name, _ in layer.named_parameters()}
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), out, rtol=1e-6, atol=1e-6)
