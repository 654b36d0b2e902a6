"""CUDA: both regressors match the CPU, stay equivariant and train (skipped without a GPU)."""

from __future__ import annotations

import copy

import escnn.group as eg
import pytest
import torch

from eregressors import CondTransformerRegressor, eCondTransformerRegressor
from ereps import direct_sum

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model(norm_module: str) -> eCondTransformerRegressor:
    G = eg.dihedral_group(6)
    in_rep = direct_sum([G.irrep(1, 1), G.trivial_representation])
    cond_rep = direct_sum([G.irrep(1, 2), G.irrep(1, 1)])
    torch.manual_seed(0)
    return eCondTransformerRegressor(
        in_rep,
        cond_rep,
        G.irrep(1, 1),
        5,
        3,
        2,
        2,
        24,
        causal_attn=True,
        num_cond_layers=1,
        norm_module=norm_module,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("norm_module", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_equivariant_regressor_on_cuda_matches_cpu(norm_module: str, dtype: torch.dtype) -> None:
    model = _model(norm_module).double().eval()
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(4, 5, model.in_dim, generator=gen, dtype=torch.float64)
    Z = torch.randn(4, 3, model.cond_dim, generator=gen, dtype=torch.float64)
    k = torch.tensor([0.0, 3.0, 10.0, 99.0], dtype=torch.float64)
    with torch.no_grad():
        reference = model(X, k, Z)
        model.to(device="cuda", dtype=dtype)
        out = model(X.to("cuda", dtype), k.to("cuda"), Z.to("cuda", dtype))
    assert out.device.type == "cuda"
    tol = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 1e-1}[dtype]
    scale = reference.abs().max().item()
    assert (out.double().cpu() - reference).abs().max().item() <= tol * scale
    assert model.check_equivariance(tol=max(tol, 1e-5)) <= max(tol, 1e-5)


def test_training_steps_and_ema_on_cuda() -> None:
    model = _model("rmsnorm").cuda()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = model.configure_optimizers(learning_rate=1e-3)
    gen = torch.Generator(device="cuda").manual_seed(2)
    X = torch.randn(8, 5, model.in_dim, device="cuda", generator=gen)
    Z = torch.randn(8, 3, model.cond_dim, device="cuda", generator=gen)
    k = torch.randint(0, 100, (8,), device="cuda", generator=gen).float()
    target = torch.randn(8, 5, model.out_dim, device="cuda", generator=gen)
    losses = []
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(X, k, Z), target)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())
        with torch.no_grad():
            for p, q in zip(ema.parameters(), model.parameters(), strict=True):
                p.lerp_(q, 0.5)
    assert losses[-1] < losses[0]
    fresh = copy.deepcopy(ema)
    fresh.load_state_dict(ema.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ema(X, k, Z), fresh(X, k, Z))
    assert ema.check_equivariance(tol=1e-4) <= 1e-4


def test_baseline_runs_on_cuda() -> None:
    model = (
        CondTransformerRegressor(
            3, 4, 2, 5, 3, num_layers=2, num_attention_heads=2, embedding_dim=16
        )
        .cuda()
        .eval()
    )
    with torch.no_grad():
        out = model(torch.randn(2, 5, 3, device="cuda"), 7, torch.randn(2, 3, 4, device="cuda"))
    assert out.shape == (2, 5, 2)
    assert torch.isfinite(out).all()
