"""CUDA: same results as on the CPU, exact bases, moving devices, export and frozen on CUDA."""

from __future__ import annotations

import pytest
import torch

import elayers
from elayers import eLinear, eTransformerEncoderLayer
from tests.elayers import _cases as C

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_encoder_layer_on_cuda_matches_cpu(dtype: torch.dtype) -> None:
    layer = eTransformerEncoderLayer(C.rep("D3", "4reg"), 2, 24, dropout=0.0).double()
    C.perturb_(layer, scale=0.1)
    x = C.seeded_randn(2, 5, 24)
    reference = layer(x).detach()
    layer.to(device="cuda", dtype=dtype)
    xc = x.to(device="cuda", dtype=dtype)
    tol = {torch.float32: 1e-5, torch.float64: 1e-10, torch.bfloat16: 5e-2}[dtype]
    assert C.rel_err(layer(xc).cpu(), reference) < tol
    assert C.equivariance_error(layer, "D3", ["4reg"], "4reg", [xc]) < tol
    layer.eval()
    with torch.no_grad():
        assert C.rel_err(layer(xc).cpu(), reference) < tol
        assert C.equivariance_error(layer, "D3", ["4reg"], "4reg", [xc]) < tol


def test_linear_follows_the_device_and_exports_on_cuda() -> None:
    layer = eLinear(C.rep("O", "std3+triv"), C.rep("O", "quot+std3")).eval()
    x = C.seeded_randn(3, 4, dtype=torch.float32)
    with torch.no_grad():
        cpu = layer(x)
        layer.cuda()
        on_cuda = layer(x.cuda())
        assert on_cuda.device.type == "cuda"
        torch.testing.assert_close(on_cuda.cpu(), cpu)
        for p in layer.parameters():
            p.mul_(2.0)
        layer.cpu()
        torch.testing.assert_close(layer(x), 2 * cpu)
        layer.cuda()
        plain = elayers.export(layer)
        assert plain.weight.device.type == "cuda"
        torch.testing.assert_close(plain(x.cuda()).cpu(), 2 * cpu)
        with elayers.frozen(layer):
            torch.testing.assert_close(layer(x.cuda()).cpu(), 2 * cpu)
