"""Padding masks and positional encodings of both transformer regressors.

Right padding must reproduce the unpadded shorter sequences at every real position; with
``"relative"``/``"rope"`` a common shift of both sequences (left padding) must change nothing;
all-padding rows stay finite; the equivariant model stays equivariant with masks; compile and
export handle masks and every encoding.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import escnn.group as eg
import pytest
import torch
from torch import Tensor

from eregressors import (
    POS_ENCODINGS,
    CondTransformerRegressor,
    GenCondRegressor,
    eCondTransformerRegressor,
)
from ereps import Representation, direct_sum

from ._helpers import assert_partition, backward

T_X, T_Z = 6, 4


@functools.cache
def _reps(name: str) -> tuple[Representation, Representation, Representation, int, int]:
    """(in_rep, cond_rep, out_rep, embedding_dim, heads); two copies per head for "rope"."""
    if name == "C8":
        C8 = eg.cyclic_group(8)
        return (
            direct_sum([C8.irrep(1), C8.trivial_representation]),
            direct_sum([C8.irrep(2), C8.irrep(1), C8.irrep(4)]),
            C8.irrep(3),
            32,
            2,
        )
    if name == "D3":
        D3 = eg.dihedral_group(3)
        return (
            direct_sum([D3.irrep(1, 1), D3.trivial_representation]),
            direct_sum([D3.irrep(1, 1), D3.irrep(1, 0), D3.irrep(1, 1)]),
            D3.irrep(1, 1),
            24,
            2,
        )
    ico = eg.ico_group()
    standard: Representation = ico.standard_representation
    return direct_sum([standard, ico.trivial_representation]), ico.irrep(2), standard, 120, 1


def _model(
    kind: str,
    pos: str,
    causal: bool,
    ncl: int,
    *,
    group: str = "D3",
    norm_module: str = "rmsnorm",
    dtype: torch.dtype = torch.float32,
    table: bool = True,
) -> GenCondRegressor:
    common = {
        "absolute_table": table or pos == "absolute",
        "p_drop_emb": 0.0,
        "p_drop_attn": 0.0,
        "causal_attn": causal,
        "num_cond_layers": ncl,
    }
    model: GenCondRegressor
    if kind == "base":
        model = CondTransformerRegressor(
            3,  # in_dim
            4,  # cond_dim
            3,  # out_dim
            T_X,
            T_Z,
            2,
            2,
            16,
            pos_encoding=pos,  # type: ignore[arg-type]
            **common,  # type: ignore[arg-type]
        )
    else:
        in_rep, cond_rep, out_rep, emb, heads = _reps(group)
        model = eCondTransformerRegressor(
            in_rep,
            cond_rep,
            out_rep,
            T_X,
            T_Z,
            2,
            heads,
            emb,
            norm_module=norm_module,  # type: ignore[arg-type]
            pos_encoding=pos,  # type: ignore[arg-type]
            **common,  # type: ignore[arg-type]
        )
    # Random tables/biases of order one, so that a wrong position shows in the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_emb" in name or "relative_bias" in name:
                p.normal_(0.0, 0.2)
    return model.to(dtype).eval()


def _data(model: GenCondRegressor, batch: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    dtype = next(model.parameters()).dtype
    X = torch.randn(batch, T_X, model.in_dim, dtype=dtype)
    Z = torch.randn(batch, T_Z, model.cond_dim, dtype=dtype)
    return X, torch.rand(batch, dtype=dtype) * 100, Z


def _call(
    model: GenCondRegressor,
    X: Tensor,
    k: Tensor,
    Z: Tensor,
    xm: Tensor | None = None,
    zm: Tensor | None = None,
) -> Tensor:
    # The forward of both models takes the masks keyword-only.
    assert isinstance(model, CondTransformerRegressor | eCondTransformerRegressor)
    return model(X, k, Z, X_padding_mask=xm, Z_padding_mask=zm)


def _close(got: Tensor, expected: Tensor, tol: float = 1e-6) -> None:
    """Relative error ``‖got - expected‖ / ‖expected‖ <= tol`` over all compared positions.

    In float32 that is a few ulps: the batch size alone changes results by about 1e-7 (relative)
    here, through the blocking of matmuls and of the attention kernel.
    """
    assert got.shape == expected.shape
    err = float(torch.linalg.vector_norm((got - expected).double()))
    err /= max(float(torch.linalg.vector_norm(expected.double())), 1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


MODELS = ["base", "equi"]
CONFIGS = [(False, 0), (True, 0), (False, 1), (True, 1)]
CONFIG_IDS = ["plain-mlp", "causal-mlp", "plain-enc", "causal-enc"]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("pos", POS_ENCODINGS)
@pytest.mark.parametrize(("causal", "ncl"), CONFIGS, ids=CONFIG_IDS)
def test_right_padding_equals_the_shorter_sequences(
    kind: str, pos: str, causal: bool, ncl: int
) -> None:
    model = _model(kind, pos, causal, ncl)
    X, k, Z = _data(model)
    x_len, z_len = [6, 3, 1], [4, 1, 2]
    xm = torch.arange(T_X) >= torch.tensor(x_len)[:, None]
    zm = torch.arange(T_Z) >= torch.tensor(z_len)[:, None]
    with torch.no_grad():
        both = _call(model, X, k, Z, xm, zm)
        only_x = _call(model, X, k, Z, xm, None)
        only_z = _call(model, X, k, Z, None, zm)
        got: dict[str, list[Tensor]] = {"both": [], "x": [], "z": []}
        expected: dict[str, list[Tensor]] = {"both": [], "x": [], "z": []}
        for b in range(3):
            lx, lz = x_len[b], z_len[b]
            sl = slice(b, b + 1)
            got["both"].append(both[b, :lx])
            expected["both"].append(_call(model, X[sl, :lx], k[sl], Z[sl, :lz])[0])
            got["x"].append(only_x[b, :lx])
            expected["x"].append(_call(model, X[sl, :lx], k[sl], Z[sl])[0])
            got["z"].append(only_z[b])
            expected["z"].append(_call(model, X[sl], k[sl], Z[sl, :lz])[0])
        for which in got:
            _close(torch.cat(got[which]), torch.cat(expected[which]))
        # Padded positions are zero, and the padding's content is ignored.
        assert (both[xm] == 0).all()
        X2, Z2 = X.clone(), Z.clone()
        X2[xm], Z2[zm] = 1e3, -1e3
        _close(_call(model, X2, k, Z2, xm, zm), both)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(
    ("pos", "table"),
    [("absolute", True), ("relative", True), ("relative", False), ("rope", True), ("rope", False)],
)
@pytest.mark.parametrize(("causal", "ncl"), CONFIGS, ids=CONFIG_IDS)
def test_common_shift_changes_nothing_with_relative_positions(
    kind: str, pos: str, table: bool, causal: bool, ncl: int
) -> None:
    """Left-padding both sequences by the same offset moves every real token (and the step
    token, which sits just before the first real Z token) by that offset; the tables of
    "relative"/"rope" are read from the first real token, so they move along."""
    model = _model(kind, pos, causal, ncl, table=table)
    X, k, Z = _data(model)
    lx, lz = 3, 2
    offsets = [1, 2, 2]
    Xs, Zs = torch.randn_like(X), torch.randn_like(Z)
    xm = torch.ones(3, T_X, dtype=torch.bool)
    zm = torch.ones(3, T_Z, dtype=torch.bool)
    for b, a in enumerate(offsets):
        Xs[b, a : a + lx], xm[b, a : a + lx] = X[b, :lx], False
        Zs[b, a : a + lz], zm[b, a : a + lz] = Z[b, :lz], False
    with torch.no_grad():
        ref = _call(model, X[:, :lx], k, Z[:, :lz])
        shifted = _call(model, Xs, k, Zs, xm, zm)
    got = torch.stack([shifted[b, a : a + lx] for b, a in enumerate(offsets)])
    if pos == "absolute":
        # The tables see the slot: the check can fail.
        assert (got - ref).abs().max() > 1e-3
    else:
        _close(got, ref)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("pos", POS_ENCODINGS)
def test_fully_padded_rows_are_finite_in_forward_and_backward(kind: str, pos: str) -> None:
    model = _model(kind, pos, True, 1).train()
    X, k, Z = _data(model)
    xm = torch.zeros(3, T_X, dtype=torch.bool)
    zm = torch.zeros(3, T_Z, dtype=torch.bool)
    xm[0] = True  # sample 0: no real X
    zm[1] = True  # sample 1: no real Z (the step token is still there)
    xm[2, :2] = True  # sample 2: left padding with causal attention: rows that see only padding
    out = _call(model, X, k, Z, xm, zm)
    assert torch.isfinite(out).all()
    backward(out.pow(2).sum())
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("group", ["C8", "D3"])
@pytest.mark.parametrize("pos", POS_ENCODINGS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm_module", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("masked", [False, True])
def test_equivariance_float64_every_encoding(
    group: str, pos: str, causal: bool, norm_module: str, masked: bool
) -> None:
    ncl = 1 if causal else 0
    model = _model("equi", pos, causal, ncl, group=group, norm_module=norm_module)
    model = model.double()
    assert isinstance(model, eCondTransformerRegressor)
    X, _, Z = _data(model)
    xm = zm = None
    if masked:
        xm = torch.tensor([[True, False, False, False, False, True]] * 3)
        zm = torch.tensor([[True, False, False, True], [False] * 4, [True, True, False, False]])
    err = model.check_equivariance(X, None, Z, X_padding_mask=xm, Z_padding_mask=zm, tol=1e-10)
    assert err <= 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("pos", ["relative", "rope"])
def test_equivariance_icosahedral_with_masks(pos: str) -> None:
    model = _model("equi", pos, True, 1, group="ico", dtype=torch.float64)
    assert isinstance(model, eCondTransformerRegressor)
    X, _, Z = _data(model, batch=2)
    xm = torch.tensor([[False] * 5 + [True], [True] + [False] * 5])
    zm = torch.tensor([[False, False, True, True], [True, False, False, False]])
    elements = random.Random(0).sample(list(eg.ico_group().elements), 6)
    err = model.check_equivariance(
        X, None, Z, X_padding_mask=xm, Z_padding_mask=zm, elements=elements, tol=1e-10
    )
    assert err <= 1e-10


@pytest.mark.parametrize("kind", MODELS)
def test_masks_are_validated(kind: str) -> None:
    model = _model(kind, "rope", False, 0)
    X, k, Z = _data(model)
    name = type(model).__name__
    with pytest.raises(TypeError, match=rf"{name} expects X_padding_mask of dtype torch.bool"):
        _call(model, X, k, Z, torch.zeros(3, T_X))
    with pytest.raises(
        ValueError, match=r"Z_padding_mask of shape \(B, T\) = \(3, 4\).*got \(3, 6\)"
    ):
        _call(model, X, k, Z, None, torch.zeros(3, T_X, dtype=torch.bool))
    with pytest.raises(TypeError, match="X_padding_mask to be None or a bool tensor"):
        _call(model, X, k, Z, [[False] * T_X] * 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on the device of its sequence"):
        _call(model, X, k, Z, torch.zeros(3, T_X, dtype=torch.bool, device="meta"))


def test_pos_encoding_options_are_validated() -> None:
    in_rep, cond_rep, out_rep, _, _ = _reps("D3")
    with pytest.raises(ValueError, match=r"pos_encoding to be one of \['absolute', 'relative'"):
        eCondTransformerRegressor(in_rep, cond_rep, out_rep, 4, 2, 1, 2, 24, pos_encoding="alibi")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"at least 2 copies per head.*Valid head counts: \[1, 2\]"
    ):
        eCondTransformerRegressor(in_rep, cond_rep, out_rep, 4, 2, 1, 4, 24, pos_encoding="rope")
    with pytest.raises(ValueError, match="pos_encoding to be one of"):
        CondTransformerRegressor(3, 3, 3, 4, 2, pos_encoding="sinusoidal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="head width of at least 2"):
        CondTransformerRegressor(3, 3, 3, 4, 2, 1, 4, 4, pos_encoding="rope")


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("pos", ["relative", "rope"])
def test_relative_positions_without_absolute_tables(kind: str, pos: str) -> None:
    in_rep, cond_rep, out_rep, emb, heads = _reps("D3")
    model: GenCondRegressor
    if kind == "base":
        model = CondTransformerRegressor(
            3,
            3,
            3,
            T_X,
            T_Z,
            1,
            2,
            16,
            pos_encoding=pos,  # type: ignore[arg-type]
            absolute_table=False,
        )
    else:
        model = eCondTransformerRegressor(
            in_rep,
            cond_rep,
            out_rep,
            T_X,
            T_Z,
            1,
            heads,
            emb,
            pos_encoding=pos,  # type: ignore[arg-type]
            absolute_table=False,
        )
    names = set(model.state_dict())
    assert not any("pos_emb" in n for n in names), "no tables"
    assert any("relative_bias" in n for n in names) == (pos == "relative")
    default = _model(kind, pos, False, 0)
    assert {"pos_emb", "cond_pos_emb"} <= set(default.state_dict()), "tables by default"
    with pytest.raises(ValueError, match="needs its tables; got absolute_table=False"):
        CondTransformerRegressor(3, 3, 3, 4, 2, absolute_table=False)
    with pytest.raises(TypeError, match="absolute_table to be a bool"):
        CondTransformerRegressor(3, 3, 3, 4, 2, absolute_table=1)  # type: ignore[arg-type]
    _model(kind, pos, False, 0, table=False)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("pos", ["relative", "rope"])
def test_state_and_optim_groups_of_the_positional_models(kind: str, pos: str) -> None:
    model = _model(kind, pos, False, 1, table=False)
    names = set(model.state_dict())
    assert not any("pos_emb" in n for n in names), "no absolute tables"
    rel = [n for n in names if "relative_bias" in n]
    # One table per attention: 1 encoder self-attention + 2 decoder layers x 2 attentions.
    assert len(rel) == (5 if pos == "relative" else 0)
    groups = model.get_optim_groups()
    assert_partition(model, groups)
    decayed = {id(p) for p in groups[0]["params"]}
    for n, p in model.named_parameters():
        if "relative_bias" in n:
            assert id(p) not in decayed, n
    assert pos in repr(model)


_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "pos"),
    [
        ("equi", "rope"),
        ("base", "relative"),
        pytest.param("equi", "relative", marks=_SLOW),
        pytest.param("equi", "absolute", marks=_SLOW),
        pytest.param("base", "rope", marks=_SLOW),
        pytest.param("base", "absolute", marks=_SLOW),
    ],
)
def test_compile_with_masks(kind: str, pos: str) -> None:
    torch._dynamo.reset()
    model = _model(kind, pos, True, 1).train()
    X, k, Z = _data(model)
    xm = torch.arange(T_X) >= torch.tensor([6, 4, 2])[:, None]
    zm = torch.arange(T_Z) < torch.tensor([0, 1, 2])[:, None]
    compiled: Any = torch.compile(model, backend="aot_eager", fullgraph=True)
    got = compiled(X, k, Z, X_padding_mask=xm, Z_padding_mask=zm)
    backward(got.pow(2).sum())
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    eager = _call(model, X, k, Z, xm, zm)
    backward(eager.pow(2).sum())
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        grads, [p.grad for p in model.parameters() if p.grad is not None], rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize(
    ("kind", "pos"),
    [
        ("equi", "rope"),
        ("equi", "relative"),
        ("base", "rope"),
        ("base", "relative"),
        pytest.param("equi", "absolute", marks=_SLOW),
        pytest.param("base", "absolute", marks=_SLOW),
    ],
)
def test_torch_export_with_masks_and_dynamic_batch(kind: str, pos: str) -> None:
    model = _model(kind, pos, True, 1)
    X, k, Z = _data(model, batch=3)
    xm = torch.arange(T_X) >= torch.tensor([6, 4, 2])[:, None]
    zm = torch.arange(T_Z) < torch.tensor([0, 1, 2])[:, None]
    batch = torch.export.Dim("batch", min=1, max=64)
    kwargs = {"X_padding_mask": xm, "Z_padding_mask": zm}
    with torch.no_grad():
        exported = torch.export.export(
            model,
            (X, k, Z),
            kwargs,
            dynamic_shapes={
                "X": {0: batch},
                "opt_step": {0: batch},
                "Z": {0: batch},
                "X_padding_mask": {0: batch},
                "Z_padding_mask": {0: batch},
            },
        )
        X5, k5, Z5 = _data(model, batch=5)
        xm5 = torch.rand(5, T_X) < 0.3
        zm5 = torch.rand(5, T_Z) < 0.3
        got = exported.module()(X5, k5, Z5, X_padding_mask=xm5, Z_padding_mask=zm5)
        torch.testing.assert_close(got, _call(model, X5, k5, Z5, xm5, zm5), rtol=1e-5, atol=1e-6)
