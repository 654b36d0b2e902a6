"""No conditioning tokens (Z=None) in both regressors, and their positional argument order."""

from __future__ import annotations

import inspect
import re

import escnn.group as eg
import pytest
import torch

from eregressors import CondTransformerRegressor, GenCondRegressor, eCondTransformerRegressor
from ereps import act, direct_sum, group_elements

G = eg.cyclic_group(8)
PLANE = G.irrep(1)
REP = direct_sum([PLANE, G.trivial_representation])  # 3-D


def _equivariant(causal: bool = False, num_cond_layers: int = 0) -> eCondTransformerRegressor:
    return eCondTransformerRegressor(
        REP, None, PLANE, 6, 0, 2, 2, 32, causal_attn=causal, num_cond_layers=num_cond_layers
    ).to(torch.float64)


def test_positional_sizes_correspond_between_baseline_and_equivariant_model() -> None:
    # Swapping one model for the other in a positional configuration must not swap dimensions.
    def split(cls: type) -> tuple[list[str], set[str]]:
        params = list(inspect.signature(cls).parameters.values())  # __init__'s, without self
        keyword = inspect.Parameter.KEYWORD_ONLY
        return [p.name for p in params if p.kind != keyword], {
            p.name for p in params if p.kind == keyword
        }

    base, base_kw = split(CondTransformerRegressor)
    equi, equi_kw = split(eCondTransformerRegressor)
    renamed = [p.replace("_rep", "_dim") for p in equi[: len(base)]]
    assert base == renamed
    # Keyword-only options (positions) cannot be swapped by position; the shared ones match.
    assert base_kw <= equi_kw
    assert {"pos_encoding", "absolute_table", "max_relative_distance"} <= base_kw
    assert base[:5] == ["in_dim", "cond_dim", "out_dim", "in_horizon", "cond_horizon"]
    sizes = (3, 5, 2, 6, 4, 1, 2, 16)
    model = CondTransformerRegressor(*sizes)
    assert (model.in_dim, model.cond_dim, model.out_dim) == (3, 5, 2)
    assert (model.in_horizon, model.cond_horizon, model.num_layers) == (6, 4, 1)
    out = model(torch.randn(2, 6, 3), 1, torch.randn(2, 4, 5))
    assert out.shape == (2, 6, 2)
    # out_dim=None means "same as in_dim", as out_rep=None does for the equivariant model.
    assert CondTransformerRegressor(3, 5, None, 6, 4, 1, 2, 16).out_dim == 3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_cond_layers", [0, 1])
def test_equivariant_model_without_conditioning(causal: bool, num_cond_layers: int) -> None:
    model = _equivariant(causal, num_cond_layers).eval()
    assert not model.is_conditional
    assert (model.cond_dim, model.cond_horizon, model.cond_rep, model.cond_emb) == (
        0,
        0,
        None,
        None,
    )
    X = torch.randn(4, 6, REP.size, dtype=torch.float64)
    with torch.no_grad():
        out = model(X, torch.tensor([3.0, 100.0, 7.0, 0.0], dtype=torch.float64))
        assert out.shape == (4, 6, PLANE.size)
        assert torch.equal(model(X, 5), model(X, 5, None))
        # The step still matters, and equivariance holds for every element.
        assert not torch.allclose(model(X, 5), model(X, 500))
        for g in group_elements(G):
            torch.testing.assert_close(model(act(REP, g, X), 5), act(PLANE, g, model(X, 5)))
    assert model.check_equivariance(tol=1e-10) < 1e-10
    if causal:
        # Output t depends on X_0..X_t only.
        edited = X.clone()
        edited[:, 4:] += 1.0
        with torch.no_grad():
            torch.testing.assert_close(model(edited, 5)[:, :4], model(X, 5)[:, :4])
    assert "cond_rep=None" in repr(model)


@pytest.mark.parametrize("cond_dim", [None, 0])
@pytest.mark.parametrize("causal", [False, True])
def test_baseline_without_conditioning(cond_dim: int | None, causal: bool) -> None:
    model = CondTransformerRegressor(
        3, cond_dim, 2, 6, 0, num_layers=1, num_attention_heads=2, embedding_dim=16,
        causal_attn=causal, num_cond_layers=1,
    ).eval()  # fmt: skip
    assert isinstance(model, GenCondRegressor)
    assert (model.cond_dim, model.cond_horizon, model.is_conditional) == (0, 0, False)
    assert model.cond_emb is None
    with torch.no_grad():
        out = model(torch.randn(2, 6, 3), torch.tensor(4))
    assert out.shape == (2, 6, 2)
    # Every parameter is used (a dangling conditioning embedding would get no gradient).
    model.train()
    model(torch.randn(2, 6, 3), 4).square().sum().backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is not None for p in model.parameters())


def test_conditioning_mismatches_are_reported() -> None:
    unconditional = _equivariant()
    conditional = eCondTransformerRegressor(REP, REP, None, 6, 2, 1, 2, 32)
    X = torch.randn(2, 6, REP.size, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"built without conditioning \(cond_dim=0\) and expects "):
        unconditional(X, 1, torch.randn(2, 2, REP.size, dtype=torch.float64))
    with pytest.raises(ValueError, match=re.escape("expects Z of shape (B, T_z, 3); got None")):
        conditional(X.float(), 1)
    with pytest.raises(ValueError, match="expected cond_horizon=0; got 2"):
        eCondTransformerRegressor(REP, None, None, 6, 2, 1, 2, 32)
    with pytest.raises(ValueError, match="cond_horizon to be a positive int; got 0"):
        eCondTransformerRegressor(REP, REP, None, 6, 0, 1, 2, 32)
    with pytest.raises(ValueError, match="expected cond_horizon=0; got 4"):
        CondTransformerRegressor(3, None, 3, 6, 4)
    with pytest.raises(ValueError, match="cond_horizon to be a positive int; got 0"):
        CondTransformerRegressor(3, 5, 3, 6, 0)
    with pytest.raises(ValueError, match="cond_dim to be a positive int; got -1"):
        CondTransformerRegressor(3, -1, 3, 6, 2)


def test_state_dict_has_no_conditioning_weights() -> None:
    keys = set(_equivariant().state_dict())
    assert not any(k.startswith("cond_emb") for k in keys)
    assert _equivariant().state_dict()["cond_pos_emb"].shape == (1, 1, 32 // 8)
