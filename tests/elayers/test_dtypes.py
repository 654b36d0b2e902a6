"""Every module runs in float32, float64 and bfloat16, and keeps exact bases across casts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from elayers import (
    eAffine,
    eLayerNorm,
    eLinear,
    eMLP,
    eModule,
    eMultiheadAttention,
    eRMSNorm,
    eTransformerDecoderLayer,
    eTransformerEncoderLayer,
)
from tests.elayers import _cases as C

BUILDERS: dict[str, Callable[[], eModule]] = {
    "eLinear-group-conv": lambda: eLinear(C.rep("C8", "2reg"), C.rep("C8", "3reg")),
    "eLinear-isotypic": lambda: eLinear(C.rep("O", "Q:std3+triv"), C.rep("O", "quot+std3")),
    "eAffine": lambda: eAffine(C.rep("D3", "Q:quot+irr2")),
    "eRMSNorm-irrep": lambda: eRMSNorm(C.rep("O", "std3+quot"), bias=True),
    "eRMSNorm-copy": lambda: eRMSNorm(C.rep("C8", "2reg"), bias=True),
    "eLayerNorm-irrep": lambda: eLayerNorm(C.rep("D3", "Q:quot+irr2")),
    "eLayerNorm-copy": lambda: eLayerNorm(C.rep("C8", "2reg")),
    "eMLP": lambda: eMLP(C.rep("O", "std3"), C.rep("O", "std3+triv"), [48]),
    "eMultiheadAttention": lambda: eMultiheadAttention(C.rep("C8", "4reg"), 2),
    "eTransformerEncoderLayer": lambda: eTransformerEncoderLayer(
        C.rep("C8", "2reg"), 2, 32, dropout=0.0
    ),
    "eTransformerDecoderLayer": lambda: eTransformerDecoderLayer(
        C.rep("C8", "2reg"), 2, 32, dropout=0.0, norm_module="rmsnorm", norm_first=True
    ),
}


def _call(module: eModule, x: Tensor) -> Tensor:
    if isinstance(module, eMultiheadAttention):
        return module(x, x, x, is_causal=True, need_weights=False)[0]
    if isinstance(module, eTransformerDecoderLayer):
        return module(x, x.flip(1), tgt_is_causal=True)
    out: Tensor = module(x)
    return out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_float32_float64_bfloat16(name: str) -> None:
    module = BUILDERS[name]()
    C.perturb_(module, scale=0.2)
    x = C.seeded_randn(2, 5, module.in_rep.size, dtype=torch.float32, seed=2)
    out32 = _call(module, x)
    assert out32.dtype == torch.float32
    module.double()
    out64 = _call(module, x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-5, atol=1e-5)
    module.to(torch.bfloat16)
    xb = x.to(torch.bfloat16).requires_grad_(True)
    for training in (True, False):
        module.train(training)
        outb = _call(module, xb)
        assert outb.dtype == torch.bfloat16
        assert torch.isfinite(outb).all()
        assert C.rel_err(outb.float(), out32) < 5e-2
    module.train()
    C.backward(_call(module, xb).float().pow(2).sum())
    assert xb.grad is not None
    assert torch.isfinite(xb.grad).all()
    for p in module.parameters():
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
    module.eval()
    with torch.no_grad():
        assert torch.isfinite(_call(module, xb.detach())).all()


@pytest.mark.parametrize("name", ["eLinear-isotypic", "eAffine", "eLayerNorm-irrep"])
def test_bases_stay_exact_across_casts(name: str) -> None:
    # A float64 module that went through float32/bfloat16 on the way must be float64-accurate:
    # equal to a module built in float64 with the same parameters.
    module = BUILDERS[name]()
    C.perturb_(module, scale=0.2)
    module.to(torch.bfloat16).float().double()
    fresh = BUILDERS[name]().double()
    fresh.load_state_dict(module.state_dict())
    x = C.seeded_randn(3, module.in_rep.size)
    torch.testing.assert_close(_call(module, x), _call(fresh, x), rtol=1e-15, atol=1e-15)
