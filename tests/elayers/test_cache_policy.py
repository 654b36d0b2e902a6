"""When the eval-mode cache of derived dense tensors is used, and when it must not be.

`test_cache.py` checks that a cached tensor is never stale; this file checks that the cache is
really hit where it pays (eval, no autograd, CPU) and stays out of the way everywhere else
(training, autograd, compile, tracing), and that caches never travel with copies or pickles.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from elayers import eLayerNorm, eLinear, eModule, eTransformerEncoderLayer
from tests.elayers import _cases as C


def _linear() -> eLinear:
    layer = eLinear(C.rep("C8", "2reg"), C.rep("C8", "3reg"))
    C.perturb_(layer)
    return layer.eval()


def _isotypic() -> eLinear:
    layer = eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "quot+irr2"))
    C.perturb_(layer)
    return layer.eval()


def _cache_sizes(module: nn.Module) -> int:
    return sum(len(m._derived) for m in module.modules() if isinstance(m, eModule))


@pytest.mark.parametrize("make", [_linear, _isotypic], ids=["group_conv", "isotypic"])
def test_eval_without_grad_reuses_the_dense_weight_until_a_value_changes(
    make: Callable[[], eLinear],
) -> None:
    layer = make()
    with torch.no_grad():
        w1, b1 = layer.dense_weight(), layer.dense_bias()
        assert layer.dense_weight() is w1
        assert layer.dense_bias() is b1
        torch.testing.assert_close(w1, layer.weight, rtol=0, atol=0)
        # An edit the version counter cannot see: still a miss.
        layer.weight_params.data[..., 0] += 1.0
        w2 = layer.dense_weight()
    assert w2 is not w1
    torch.testing.assert_close(w2, layer.weight.detach(), rtol=0, atol=0)
    assert not torch.equal(w2, w1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("index", [0, 4799, 2400])
def test_one_changed_coefficient_of_a_large_layer_is_seen(dtype: torch.dtype, index: int) -> None:
    # Large parameters are compared by bit pattern through numpy; bfloat16 through int16.
    layer = eLinear(C.rep("C8", "20reg"), C.rep("C8", "30reg")).to(dtype).eval()
    assert layer.weight_params.numel() == 4800
    with torch.no_grad():
        w1 = layer.dense_weight()
        flat = layer.weight_params.data.view(-1)
        flat[index] = flat[index] + 1.0
        w2 = layer.dense_weight()
        assert w2 is not w1
        torch.testing.assert_close(w2, layer.weight, rtol=0, atol=0)
        assert layer.dense_weight() is w2


def test_non_contiguous_parameters_are_compared_too() -> None:
    layer = _linear()
    p = layer.weight_params
    # Same values, transposed storage: the byte comparison cannot apply, torch.equal does.
    p.data = p.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not p.is_contiguous()
    with torch.no_grad():
        w1 = layer.dense_weight()
        assert layer.dense_weight() is w1
        p.data[0, 0, 0] += 1.0
        w2 = layer.dense_weight()
    assert w2 is not w1
    torch.testing.assert_close(w2, layer.weight.detach(), rtol=0, atol=0)


def test_inference_mode_uses_the_cache_too() -> None:
    layer = _linear()
    with torch.inference_mode():
        w = layer.dense_weight()
        assert layer.dense_weight() is w


def test_no_cache_while_autograd_tracks_the_parameters() -> None:
    layer = _linear()
    w1, w2 = layer.dense_weight(), layer.dense_weight()
    assert w1 is not w2
    assert w1.grad_fn is not None
    assert _cache_sizes(layer) == 0


def test_frozen_parameters_are_cached_with_grad_enabled() -> None:
    layer = _linear().requires_grad_(False)
    w = layer.dense_weight()
    assert layer.dense_weight() is w
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32).requires_grad_(True)
    C.backward(layer(x).sum())
    assert x.grad is not None
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand_as(x))


def test_no_cache_in_training_mode() -> None:
    layer = _linear().train()
    with torch.no_grad():
        assert layer.dense_weight() is not layer.dense_weight()
    assert _cache_sizes(layer) == 0


def test_train_and_to_drop_the_cache() -> None:
    layer = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 32, dropout=0.0).eval()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    with torch.no_grad():
        layer(x)
    # The fused kernel's twelve arguments as one entry, built from the parts' own entries.
    assert len(layer._derived) == 1
    assert _cache_sizes(layer) == 11  # + 8 for the linear maps, 1 per norm
    layer.train()
    assert _cache_sizes(layer) == 0
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.to(torch.float64)
    assert _cache_sizes(layer) == 0


def test_public_weight_and_bias_are_fresh_tensors() -> None:
    # Users may scribble on `.weight`; that must not corrupt what forward computes with.
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        before = layer(x)
        weight, bias = layer.weight, layer.bias
        assert bias is not None
        weight.zero_()
        bias.fill_(3.0)
        torch.testing.assert_close(layer(x), before, rtol=0, atol=0)


def test_norm_affine_vectors_are_cached_per_dtype() -> None:
    norm = eLayerNorm(C.rep("C8", "2reg")).eval()
    with torch.no_grad():
        s32, b32 = norm.copy_affine(torch.float32)
        s64, _ = norm.copy_affine(torch.float64)
        assert s32 is not None
        assert s64 is not None
        assert norm.copy_affine(torch.float32)[0] is s32
        assert s64.dtype == torch.float64
        assert norm.copy_affine(torch.float64)[0] is s64
        assert b32 is not None
        norm.copy_scale.data.mul_(2.0)  # type: ignore[union-attr]
        s32_new = norm.copy_affine(torch.float32)[0]
    assert s32_new is not None
    torch.testing.assert_close(s32_new, 2.0 * s32)


def test_copies_and_pickled_state_carry_no_cache() -> None:
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        out = layer(x)
    assert _cache_sizes(layer) == 2
    clone = copy.deepcopy(layer)
    assert _cache_sizes(clone) == 0
    # What pickle (torch.save of a whole module) would store.
    assert layer.__getstate__()["_derived"] == {}
    assert _cache_sizes(layer) == 2
    with torch.no_grad():
        torch.testing.assert_close(clone(x), out, rtol=0, atol=0)


def test_compiled_eval_forward_neither_reads_nor_fills_the_cache() -> None:
    torch._dynamo.reset()
    layer = _linear()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        got = compiled(x)
        assert _cache_sizes(layer) == 0
        torch.testing.assert_close(got, layer(x), rtol=1e-6, atol=1e-6)
        # The eager call filled the cache; the compiled module must still follow edits.
        layer.weight_params.data.mul_(-1.0)
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # shape checks on traced sizes
def test_traced_module_reads_the_parameters_not_a_cached_constant() -> None:
    # TorchScript tracing (still behind ONNX export) must record the synthesis from the
    # parameters, not a dense weight cached by an earlier eager call.
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        layer(x)
        traced = torch.jit.trace(layer, (x,))  # type: ignore[no-untyped-call]
        layer.weight_params.mul_(-1.0)
        expected: Tensor = layer(x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-6, atol=1e-6)


def test_exported_program_lifts_the_parameters_not_a_cached_constant() -> None:
    layer = _linear()
    x = C.seeded_randn(3, layer.in_rep.size, dtype=torch.float32)
    with torch.no_grad():
        out = layer(x)
        program = torch.export.export(layer, (x,))
    assert _cache_sizes(layer) == 2  # the eager call's cache, untouched by export
    # Only the fixed index/basis tensors are constants; the dense weight is computed in the graph.
    assert set(program.constants) <= {name for name, _ in layer.named_constants()}
    assert set(program.graph_signature.parameters) == {name for name, _ in layer.named_parameters()}
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), out, rtol=1e-6, atol=1e-6)
