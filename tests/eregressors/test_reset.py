"""reset_parameters() without an argument uses the scheme the model was built with."""

from __future__ import annotations

import escnn.group as eg
import pytest
import torch

from eregressors import eCondTransformerRegressor
from ereps import INIT_SCHEMES, InitScheme


def _model(scheme: InitScheme) -> eCondTransformerRegressor:
    rep = eg.cyclic_group(4).irrep(1)
    return eCondTransformerRegressor(
        rep, rep, rep, in_horizon=4, cond_horizon=2, num_layers=1, num_attention_heads=1,
        embedding_dim=16, init_scheme=scheme,
    )  # fmt: skip


def _reset(model: eCondTransformerRegressor, scheme: InitScheme | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    model.reset_parameters() if scheme is None else model.reset_parameters(scheme)
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("scheme", ["kaiming_normal", "xavier_normal", "kaiming_uniform"])
def test_default_reset_uses_the_construction_scheme(scheme: InitScheme) -> None:
    model = _model(scheme)
    default = _reset(model, None)
    explicit = _reset(model, scheme)
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    other = _reset(model, "xavier_uniform")
    assert any(not torch.equal(default[k], other[k]) for k in default)
    # The model keeps its scheme after an explicit reset with another one.
    assert model.init_scheme == scheme
    assert all(torch.equal(default[k], v) for k, v in _reset(model, None).items())


def test_reset_refuses_unknown_schemes() -> None:
    model = _model("xavier_uniform")
    assert "xavier_uniform" in INIT_SCHEMES
    with pytest.raises(ValueError, match="expects scheme to be one of"):
        model.reset_parameters("orthogonal")  # type: ignore[arg-type]
