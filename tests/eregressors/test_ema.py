"""EMA with AveragedModel(use_buffers=True): constants (index tables, bases) are not state."""

from __future__ import annotations

import escnn.group as eg
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from eregressors import eCondTransformerRegressor
from ereps import ExactBuffersModule, direct_sum


def _wide_model() -> eCondTransformerRegressor:
    G = eg.cyclic_group(8)
    rho = direct_sum([G.irrep(1), G.trivial_representation])
    # Width 256: the feed-forward gather index has 262,144 entries with values up to 32,767.
    return eCondTransformerRegressor(
        rho,
        rho,
        rho,
        in_horizon=4,
        cond_horizon=2,
        num_layers=1,
        num_attention_heads=2,
        embedding_dim=256,
        p_drop_emb=0.0,
        p_drop_attn=0.0,
        num_cond_layers=1,
        norm_module="layernorm",
    )


def test_constants_are_neither_buffers_nor_state() -> None:
    model = _wide_model()
    assert list(model.buffers()) == []
    assert all(
        isinstance(v, torch.Tensor) and v.is_floating_point()
        for v in model.state_dict().values()
        if isinstance(v, torch.Tensor)
    )
    constants = [
        (f"{name}.{c}", t)
        for name, m in model.named_modules()
        if isinstance(m, ExactBuffersModule)
        for c, t in m.named_constants(recurse=False)
    ]
    assert any(t.dtype == torch.int64 and int(t.max()) > 30_000 for _, t in constants)
    model.to(torch.bfloat16)
    for name, t in constants:
        module_name, attr = name.rsplit(".", 1)
        moved = getattr(model.get_submodule(module_name), attr)
        assert moved.dtype == t.dtype, name


@pytest.mark.parametrize("decay", [0.9, 0.999, 0.9999])
def test_ema_module_equals_a_fresh_model_loaded_with_its_weights(decay: float) -> None:
    torch.manual_seed(0)
    model = _wide_model()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)  # type: ignore[no-untyped-call]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        ema.update_parameters(model)
    fresh = _wide_model()
    fresh.load_state_dict(ema.module.state_dict())
    X = torch.randn(3, 4, 3, generator=gen)
    Z = torch.randn(3, 2, 3, generator=gen)
    k = torch.tensor([1.0, 500.0, 999.0])
    ema.module.eval()
    fresh.eval()
    with torch.no_grad():
        got = ema.module(X, k, Z)
        expected = fresh(X, k, Z)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # The EMA moved: it is neither the initial nor the current weights.
    with torch.no_grad():
        assert not torch.allclose(got, model.eval()(X, k, Z))
