"""A refused load_state_dict leaves a regressor exactly as it was."""

from __future__ import annotations

import escnn.group as eg
import pytest
import torch

from eregressors import eCondTransformerRegressor
from ereps import Representation


def _model(rep: Representation) -> eCondTransformerRegressor:
    return eCondTransformerRegressor(
        rep,
        rep,
        rep,
        in_horizon=4,
        cond_horizon=2,
        num_layers=1,
        num_attention_heads=1,
        embedding_dim=16,
        p_drop_emb=0.0,
        p_drop_attn=0.0,
    )


def test_a_state_dict_of_another_group_changes_nothing() -> None:
    # C8 and D4 have the same order and 2-D planes: every tensor has the same shape.
    source = _model(eg.cyclic_group(8).irrep(1))
    target = _model(eg.dihedral_group(4).irrep(1, 1))
    state = source.state_dict()
    assert all(
        state[k].shape == v.shape for k, v in target.state_dict().items() if torch.is_tensor(v)
    )
    before = {k: v.clone() for k, v in target.state_dict().items() if torch.is_tensor(v)}
    X, Z = torch.randn(2, 4, 2), torch.randn(2, 2, 2)
    target.eval()
    with torch.no_grad():
        out = target(X, 3.0, Z)
    with pytest.raises(ValueError, match="Cannot load a state dict into eCondTransformerRegressor"):
        target.load_state_dict(state)
    after = target.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    with torch.no_grad():
        assert torch.equal(target(X, 3.0, Z), out)
    # A wrapper of the model (here a DDP-like plain holder) is as atomic.
    holder = torch.nn.ModuleDict({"model": target})
    with pytest.raises(ValueError, match="Cannot load a state dict into ModuleDict"):
        holder.load_state_dict({f"model.{k}": v for k, v in state.items()})
    assert [k for k in before if not torch.equal(before[k], target.state_dict()[k])] == []
