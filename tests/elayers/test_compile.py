"""torch.compile runs the modules and matches eager, in train mode (with backward) and eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from elayers import eLinear, eTransformerEncoderLayer
from tests.elayers import _cases as C


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_linear_matches_eager() -> None:
    # The default backend (inductor, a C++ build on CPU): the slowest case of this folder.
    layer = eLinear(C.rep("D3", "2reg"), C.rep("D3", "Q:irr2+triv+quot"))
    C.perturb_(layer, scale=0.2)
    compiled = torch.compile(layer)
    x = C.seeded_randn(4, 12, dtype=torch.float32).requires_grad_(True)
    y = compiled(x)
    C.backward(y.pow(2).sum())
    grads = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
    assert x.grad is not None
    x_grad = x.grad.clone()
    layer.zero_grad()
    x.grad = None
    eager = layer(x)
    C.backward(eager.pow(2).sum())
    torch.testing.assert_close(y, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_grad, x.grad)
    torch.testing.assert_close(grads, [p.grad for p in layer.parameters() if p.grad is not None])
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-6)
        # An edit after compilation is seen by the compiled module too (no stale weights).
        for p in layer.parameters():
            p.mul_(-0.5)
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-6)


def test_compiled_encoder_layer_matches_eager_without_graph_breaks() -> None:
    layer = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 32, dropout=0.0)
    C.perturb_(layer, scale=0.1)
    # fullgraph: any graph break (e.g. state mutated inside forward) is an error.
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, -1] = True

    def grads_of(out: Tensor) -> list[Tensor]:
        layer.zero_grad()
        C.backward(out.pow(2).sum())
        return [p.grad.clone() for p in layer.parameters() if p.grad is not None]

    y = compiled(x, src_key_padding_mask=mask, is_causal=True)
    g = grads_of(y)
    eager = layer(x, src_key_padding_mask=mask, is_causal=True)
    torch.testing.assert_close(y, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, grads_of(eager), rtol=1e-5, atol=1e-6)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
