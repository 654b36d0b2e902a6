"""export() and frozen() of both regressors with padding masks and every pos_encoding."""

from __future__ import annotations

import itertools
from typing import Any

import escnn.group as eg
import pytest
import torch
from torch import Tensor

import elayers
from eregressors import CondTransformerRegressor, PlainCondTransformer, eCondTransformerRegressor
from tests import _exported as X

T_X, T_Z = 6, 3
# (pos_encoding, absolute_table): every valid combination.
POSITIONS = [
    ("absolute", True),
    ("relative", True),
    ("relative", False),
    ("rope", True),
    ("rope", False),
]
CASES = list(itertools.product(["equi", "base"], POSITIONS, [False, True], [0, 1]))


Model = eCondTransformerRegressor | CondTransformerRegressor


def _model(kind: str, pos: str, table: bool, causal: bool, cond_layers: int) -> Model:
    torch.manual_seed(0)
    model: Model
    common: dict[str, Any] = {
        "causal_attn": causal,
        "num_cond_layers": cond_layers,
        "pos_encoding": pos,
        "absolute_table": table,
    }
    if kind == "equi":
        G = eg.dihedral_group(3)
        rho = G.irrep(1, 1)
        model = eCondTransformerRegressor(
            rho, rho + G.trivial_representation, rho, T_X, T_Z, 2, 2, 4 * 6, **common
        )
    else:
        model = CondTransformerRegressor(2, 3, 2, T_X, T_Z, 2, 2, 16, **common)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _data(batch: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(batch, T_X, 2, generator=gen, dtype=dtype)
    z = torch.randn(batch, T_Z, 3, generator=gen, dtype=dtype)
    k = torch.randint(0, 1000, (batch,), generator=gen).to(dtype)
    # Right padding of X, left padding of Z (observation histories before the episode), one
    # sample without padding and one whose Z is all padding.
    xm = torch.arange(T_X) >= torch.tensor([T_X, 4, 2, 1])[:batch, None]
    zm = torch.arange(T_Z) < torch.tensor([0, 1, 2, T_Z])[:batch, None]
    return x, k, z, xm, zm


def _close(got: Tensor, expected: Tensor, dtype: torch.dtype) -> None:
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("kind", "position", "causal", "cond_layers"), CASES)
def test_export_with_masks_and_positions_agrees(
    kind: str, position: tuple[str, bool], causal: bool, cond_layers: int, dtype: torch.dtype
) -> None:
    pos, table = position
    model = _model(kind, pos, table, causal, cond_layers).to(dtype)
    x, k, z, xm, zm = _data(4, dtype)
    plain = model.export()
    assert type(plain) is PlainCondTransformer
    assert plain.pos_encoding == pos
    assert (plain.pos_emb is None) == (not table)
    X.assert_plain(plain)
    with torch.no_grad():
        for masks in ({}, {"X_padding_mask": xm}, {"X_padding_mask": xm, "Z_padding_mask": zm}):
            expected = model(x, k, z, **masks)
            assert torch.isfinite(expected).all()
            _close(plain(x, k, z, **masks), expected, dtype)
            with elayers.frozen(model) as same:
                _close(same(x, k, z, **masks), expected, dtype)
        # The masks matter (a twin that dropped them would not agree with this).
        assert not torch.allclose(model(x, k, z), model(x, k, z, Z_padding_mask=zm))


@pytest.mark.parametrize("kind", ["equi", "base"])
def test_frozen_hands_masks_to_the_twin(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(kind, "rope", True, True, 1)
    x, k, z, xm, zm = _data(4, torch.float32)
    seen: list[tuple[Tensor | None, Tensor | None]] = []
    # The frozen regressor runs its twin's trunk after its own validation.
    original = PlainCondTransformer._run

    def spy(
        self: PlainCondTransformer,
        X: Tensor,
        step: Tensor,
        Z: Tensor | None,
        X_padding_mask: Tensor | None,
        Z_padding_mask: Tensor | None,
    ) -> Tensor:
        seen.append((X_padding_mask, Z_padding_mask))
        return original(self, X, step, Z, X_padding_mask, Z_padding_mask)

    monkeypatch.setattr(PlainCondTransformer, "_run", spy)
    with torch.no_grad():
        expected = model(x, k, z, X_padding_mask=xm, Z_padding_mask=zm)
        with elayers.frozen(model):
            got = model(x, k, z, X_padding_mask=xm, Z_padding_mask=zm)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if kind == "equi":  # the baseline is plain already and has no twin
        assert len(seen) == 1
        assert seen[0][0] is xm
        assert seen[0][1] is zm


def test_unconditional_export_with_mask() -> None:
    G = eg.dihedral_group(3)
    rho = G.irrep(1, 1)
    torch.manual_seed(0)
    model = eCondTransformerRegressor(rho, None, None, T_X, 0, 1, 2, 24, pos_encoding="rope").eval()
    x, k, _, xm, _ = _data(4, torch.float64)
    model = model.double()
    plain = model.export()
    with torch.no_grad():
        expected = model(x, k, X_padding_mask=xm)
        _close(plain(x, k, X_padding_mask=xm), expected, torch.float64)


@pytest.mark.parametrize(
    ("kind", "pos"),
    [("equi", "rope"), ("equi", "relative"), ("base", "rope"), ("equi", "absolute")],
)
def test_torch_export_of_exported_masked_model_dynamic_batch(kind: str, pos: str) -> None:
    model = _model(kind, pos, True, True, 1)
    plain = model.export()
    x, k, z, xm, zm = _data(3, torch.float32)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        plain,
        (x, k, z),
        {"X_padding_mask": xm, "Z_padding_mask": zm},
        dynamic_shapes={
            "X": {0: batch},
            "opt_step": {0: batch},
            "Z": {0: batch},
            "X_padding_mask": {0: batch},
            "Z_padding_mask": {0: batch},
        },
    )
    gen = torch.Generator().manual_seed(7)
    x5 = torch.randn(5, T_X, 2, generator=gen)
    z5 = torch.randn(5, T_Z, 3, generator=gen)
    k5 = torch.rand(5, generator=gen) * 1000
    xm5 = torch.rand(5, T_X, generator=gen) < 0.3
    zm5 = torch.rand(5, T_Z, generator=gen) < 0.3
    with torch.no_grad():
        expected = model(x5, k5, z5, X_padding_mask=xm5, Z_padding_mask=zm5)
    got = program.module()(x5, k5, z5, X_padding_mask=xm5, Z_padding_mask=zm5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
