"""The step ``k``: embedded in at least float32, and a tensor before torch.compile sees it."""

from __future__ import annotations

from typing import Any

import escnn.group as eg
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from eregressors import CondTransformerRegressor, GenCondRegressor, eCondTransformerRegressor


def _model(kind: str) -> GenCondRegressor:
    if kind == "baseline":
        return CondTransformerRegressor(
            2, 2, 2, in_horizon=4, cond_horizon=2, num_layers=1, num_attention_heads=2,
            embedding_dim=16, p_drop_emb=0.0, p_drop_attn=0.0,
        )  # fmt: skip
    rep = eg.dihedral_group(4).irrep(1, 1)
    return eCondTransformerRegressor(
        rep, rep, rep, in_horizon=4, cond_horizon=2, num_layers=1, num_attention_heads=2,
        embedding_dim=16, p_drop_emb=0.0, p_drop_attn=0.0,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["baseline", "equivariant"])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_neighbouring_steps_differ_in_bfloat16(kind: str, as_tensor: bool) -> None:
    model = _model(kind).eval().to(torch.bfloat16)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # weights of the size training gives them (the init's are tiny)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen).to(p.dtype))
    X = torch.randn(1, 4, 2).to(torch.bfloat16)
    Z = torch.randn(1, 2, 2).to(torch.bfloat16)
    outputs = []
    with torch.no_grad():
        for k in (998, 999, 1000):
            step = torch.tensor([k]) if as_tensor else k
            out = model(X, step, Z)
            assert out.dtype == torch.bfloat16
            outputs.append(out)
    assert not torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[1], outputs[2])
    # A bfloat16 step tensor is taken as it is (rounded by the caller): 999 is then 1000.
    with torch.no_grad():
        rounded = model(X, torch.tensor([999.0], dtype=torch.bfloat16), Z)
    assert torch.equal(rounded, outputs[2])


@pytest.mark.parametrize(
    ("kind", "how"),
    [("baseline", "torch.compile"), ("equivariant", "torch.compile"), ("equivariant", "method")],
)
def test_float_steps_do_not_recompile(kind: str, how: str) -> None:
    torch._dynamo.reset()
    model = _model(kind).eval()
    counter = CompileCounter()
    compiled: Any
    if how == "method":  # Module.compile(): the module itself calls the compiled forward
        compiled = _model(kind).eval()
        compiled.load_state_dict(model.state_dict())
        compiled.compile(backend=counter)
    else:
        compiled = torch.compile(model, backend=counter)
    X, Z = torch.randn(2, 4, 2), torch.randn(2, 2, 2)
    with torch.no_grad():
        first = compiled(X, 0.25, Z)
        frames = counter.frame_count
        assert frames >= 1
        for k in (0.5, 17.125, 999.0):
            out = compiled(X, k, Z)
            torch.testing.assert_close(out, model(X, k, Z))
        by_keyword = compiled(X, opt_step=3.5, Z=Z)
    assert counter.frame_count == frames
    torch.testing.assert_close(first, model(X, 0.25, Z))
    torch.testing.assert_close(by_keyword, model(X, 3.5, Z))
    torch._dynamo.reset()
