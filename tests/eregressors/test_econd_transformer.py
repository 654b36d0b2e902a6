"""Tests of the equivariant eCondTransformerRegressor."""

from __future__ import annotations

import copy
import functools
import inspect
import io
import random
import re
from typing import Any

import escnn.group as eg
import pytest
import torch
from torch import Tensor

from eregressors import GenCondRegressor, SinusoidalPosEmb, eCondTransformerRegressor
from ereps import EquivarianceError, Group, Representation, act, direct_sum

from ._helpers import assert_partition, backward, group_names

Case = tuple[Representation, Representation, Representation, int, int]


@functools.cache
def _group(name: str) -> Group:
    if name == "C2":
        return eg.cyclic_group(2)
    if name == "C8":
        return eg.cyclic_group(8)
    if name == "D6":
        return eg.dihedral_group(6)
    if name == "ico":
        return eg.ico_group()
    # Direct products (escnn's DirectProductGroup rebuilds its elements on every order() call).
    if name == "C4xC2":
        return eg.direct_product(eg.cyclic_group(4), eg.cyclic_group(2))
    if name == "Oh":
        return eg.full_octa_group()
    raise KeyError(name)


@functools.cache
def _case(name: str) -> Case:
    """(in_rep, cond_rep, out_rep, embedding_dim, heads), small: embedding_dim = 2|G| or so."""
    G = _group(name)
    if name == "C2":  # regular representations everywhere
        reg = G.regular_representation
        return reg, direct_sum([reg, reg]), reg, 8, 2
    if name == "C8":  # non-regular, three different representations
        return (
            direct_sum([G.irrep(1), G.trivial_representation]),
            direct_sum([G.irrep(2), G.irrep(1), G.irrep(4)]),
            G.irrep(3),
            16,
            2,
        )
    if name == "D6":  # the 2-D irrep ⊕ trivial, and others
        return (
            direct_sum([G.irrep(1, 1), G.trivial_representation]),
            direct_sum([G.irrep(1, 2), G.irrep(1, 0), G.irrep(1, 1)]),
            G.irrep(1, 1),
            24,
            2,
        )
    if name == "C4xC2":  # irreps are (C4 irrep, C2 irrep, 0): 2-D ones meeting 1-D ones
        return (
            direct_sum([G.irrep((1,), (0,), 0), G.trivial_representation]),
            direct_sum([G.irrep((1,), (1,), 0), G.irrep((0,), (1,), 0)]),
            G.irrep((1,), (0,), 0),
            16,
            2,
        )
    if name == "Oh":  # the 3-D vector representation (inversion acts by -1); no standard rep
        vector = G.irrep((1,), (1,), 0)
        return (
            direct_sum([vector, G.trivial_representation]),
            direct_sum([vector, G.irrep((0,), (2,), 0)]),
            vector,
            96,
            2,
        )
    # Icosahedral: the standard 3-D representation (irrep 1 in a permuted basis) meeting others.
    standard: Representation = G.standard_representation  # type: ignore[attr-defined]
    return (
        direct_sum([standard, G.trivial_representation]),
        direct_sum([G.irrep(2), G.irrep(3)]),
        standard,
        120,
        2,
    )


def _model(
    name: str = "C8",
    causal: bool = False,
    num_cond_layers: int = 0,
    norm_module: str = "rmsnorm",
    *,
    dtype: torch.dtype = torch.float64,
    in_horizon: int = 5,
    cond_horizon: int = 3,
    num_layers: int = 2,
    p_drop: float = 0.1,
) -> eCondTransformerRegressor:
    in_rep, cond_rep, out_rep, embedding_dim, heads = _case(name)
    return eCondTransformerRegressor(
        in_rep,
        cond_rep,
        out_rep,
        in_horizon,
        cond_horizon,
        num_layers,
        heads,
        embedding_dim,
        p_drop_emb=p_drop,
        p_drop_attn=p_drop,
        causal_attn=causal,
        num_cond_layers=num_cond_layers,
        norm_module=norm_module,  # type: ignore[arg-type]
    ).to(dtype)


def _inputs(
    model: eCondTransformerRegressor, batch: int = 2, t_x: int | None = None, t_z: int | None = None
) -> tuple[Tensor, Tensor]:
    dtype = next(model.parameters()).dtype
    t_x = model.in_horizon if t_x is None else t_x
    t_z = model.cond_horizon if t_z is None else t_z
    assert t_x is not None
    assert t_z is not None
    X = torch.randn(batch, t_x, model.in_dim, dtype=dtype)
    Z = torch.randn(batch, t_z, model.cond_dim, dtype=dtype)
    return X, Z


def _differs(a: Tensor, b: Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-9)


# --------------------------------------------------------------------------------------------
# API


def test_seed_signature() -> None:
    params = list(inspect.signature(eCondTransformerRegressor.__init__).parameters.values())[1:]
    seed = [
        ("in_rep", inspect.Parameter.empty),
        ("cond_rep", inspect.Parameter.empty),
        ("out_rep", inspect.Parameter.empty),
        ("in_horizon", inspect.Parameter.empty),
        ("cond_horizon", inspect.Parameter.empty),
        ("num_layers", inspect.Parameter.empty),
        ("num_attention_heads", inspect.Parameter.empty),
        ("embedding_dim", inspect.Parameter.empty),
        ("p_drop_emb", 0.1),
        ("p_drop_attn", 0.1),
        ("causal_attn", False),
        ("num_cond_layers", 0),
        ("norm_module", "rmsnorm"),
        ("init_scheme", "xavier_uniform"),
    ]
    assert [(p.name, p.default) for p in params[: len(seed)]] == seed
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params[: len(seed)])
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(seed) :])
    forward = inspect.signature(eCondTransformerRegressor.forward).parameters
    assert [(n, p.kind) for n, p in forward.items()] == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("X", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("opt_step", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("Z", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("X_padding_mask", inspect.Parameter.KEYWORD_ONLY),
        ("Z_padding_mask", inspect.Parameter.KEYWORD_ONLY),
    ]
    wd = inspect.signature(eCondTransformerRegressor.get_optim_groups).parameters["weight_decay"]
    assert wd.default == 0.001
    scheme = inspect.signature(eCondTransformerRegressor.reset_parameters).parameters["scheme"]
    # None: the scheme the model was built with (the seed's "xavier_uniform" ignored it).
    assert scheme.default is None


def test_positional_seed_call_and_defaults() -> None:
    in_rep, cond_rep, _, embedding_dim, heads = _case("C8")
    model = eCondTransformerRegressor(in_rep, cond_rep, None, 4, 2, 1, heads, embedding_dim)
    assert isinstance(model, GenCondRegressor)
    assert model.out_rep is in_rep
    assert model.norm_module == "rmsnorm"
    assert model.init_scheme == "xavier_uniform"
    assert not model.causal_attn
    assert (model.in_dim, model.cond_dim, model.out_dim) == (3, 5, 3)
    assert "C8" in repr(model)


# --------------------------------------------------------------------------------------------
# Equivariance


@pytest.mark.parametrize("name", ["C2", "C8", "D6", "C4xC2"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_cond_layers", [0, 1])
@pytest.mark.parametrize("norm_module", ["rmsnorm", "layernorm"])
def test_equivariance_float64(
    name: str, causal: bool, num_cond_layers: int, norm_module: str
) -> None:
    model = _model(name, causal, num_cond_layers, norm_module).train()
    err = model.check_equivariance(tol=1e-10)
    assert err <= 1e-10
    assert model.training, "check_equivariance restores the training flag"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("causal", "num_cond_layers", "norm_module"), [(False, 0, "rmsnorm"), (True, 1, "layernorm")]
)
def test_equivariance_icosahedral(causal: bool, num_cond_layers: int, norm_module: str) -> None:
    model = _model("ico", causal, num_cond_layers, norm_module, num_layers=1, in_horizon=3)
    elements = random.Random(0).sample(list(_group("ico").elements), 8)
    assert model.check_equivariance(elements=elements, tol=1e-10) <= 1e-10


@pytest.mark.slow
def test_equivariance_full_octahedral() -> None:
    model = _model("Oh", True, 1, "layernorm", num_layers=1, in_horizon=3)
    elements = random.Random(0).sample(list(_group("Oh").elements), 8)
    assert model.check_equivariance(elements=elements, tol=1e-10) <= 1e-10


@pytest.mark.parametrize("name", ["C8", "D6", "C4xC2"])
def test_equivariance_float32(name: str) -> None:
    model = _model(name, True, 1, "layernorm", dtype=torch.float32)
    assert model.check_equivariance(tol=1e-5) <= 1e-5


@pytest.mark.parametrize(("t_x", "t_z"), [(1, 1), (3, 2), (2, 3)])
def test_equivariance_shorter_sequences(t_x: int, t_z: int) -> None:
    model = _model("D6", causal=True, num_cond_layers=1)
    X, Z = _inputs(model, t_x=t_x, t_z=t_z)
    assert model.check_equivariance(X, torch.tensor([3, 700]), Z, tol=1e-10) <= 1e-10


def test_check_equivariance_detects_a_broken_model() -> None:
    model = _model("C8")
    offset = torch.randn(model.embedding_dim, dtype=torch.float64)

    def _break(module: torch.nn.Module, args: Any, output: Tensor) -> Tensor:
        return output + offset  # not invariant: breaks equivariance

    model.input_emb.register_forward_hook(_break)
    assert model.check_equivariance() > 1e-3
    with pytest.raises(EquivarianceError, match="exceeds the tolerance"):
        model.check_equivariance(tol=1e-6)


def test_equivariance_by_hand() -> None:
    """Direct check, independent of check_equivariance: f(gX, gZ) = g f(X, Z) for every g."""
    model = _model("D6", causal=True, num_cond_layers=1).eval()
    X, Z = _inputs(model)
    assert model.cond_rep is not None
    with torch.no_grad():
        y = model(X, 17, Z)
        for g in _group("D6").elements:
            gy = model(act(model.in_rep, g, X), 17, act(model.cond_rep, g, Z))
            torch.testing.assert_close(gy, act(model.out_rep, g, y), atol=1e-12, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Embeddings


def test_positional_and_step_embeddings_are_invariant_and_informative() -> None:
    model = _model("D6")
    copies = model.embedding_dim // 12
    assert model.pos_emb is not None
    assert model.cond_pos_emb is not None
    assert model.pos_emb.shape == (1, 5, copies)
    assert model.cond_pos_emb.shape == (1, 4, copies)
    assert float(model.pos_emb.detach().std()) > 0.005, "random, not zero"
    expanded = model._expand_invariant(model.pos_emb.detach())
    reg = model.embedding_rep
    for g in _group("D6").elements:
        torch.testing.assert_close(act(reg, g, expanded), expanded)
    # Neighbouring steps stay distinguishable after the learned map, unlike a projection of the
    # fixed sinusoid onto the invariant subspace (a mean over each copy's |G| frequencies).
    assert isinstance(model.step_emb[0], SinusoidalPosEmb)
    steps = torch.tensor([1.0, 10.0, 100.0, 500.0], dtype=torch.float64)
    with torch.no_grad():
        ours = [model.step_emb(steps + d) for d in (0.0, 1.0)]
        sines = [SinusoidalPosEmb(model.embedding_dim)(steps + d) for d in (0.0, 1.0)]
    projected = [s.reshape(4, copies, 12).mean(dim=-1) for s in sines]
    assert ours[0].shape == (4, copies)
    cos_ours = torch.nn.functional.cosine_similarity(ours[0], ours[1], dim=-1).mean()
    cos_projected = torch.nn.functional.cosine_similarity(projected[0], projected[1], dim=-1).mean()
    assert cos_ours < 0.995
    assert cos_ours < cos_projected


def test_step_changes_output() -> None:
    model = _model("C8").eval()
    X, Z = _inputs(model)
    with torch.no_grad():
        assert _differs(model(X, 1, Z), model(X, 2, Z))


# --------------------------------------------------------------------------------------------
# Causality and shapes


@pytest.mark.parametrize("num_cond_layers", [0, 1])
@pytest.mark.parametrize(("t_x", "t_z"), [(5, 3), (4, 2), (2, 3), (1, 1)])
def test_causality(num_cond_layers: int, t_x: int, t_z: int) -> None:
    model = _model("C8", causal=True, num_cond_layers=num_cond_layers).eval()
    X, Z = _inputs(model, t_x=t_x, t_z=t_z)
    with torch.no_grad():
        ref = model(X, 7, Z)
        for t in range(t_x):
            X2, Z2 = X.clone(), Z.clone()
            X2[:, t + 1 :] += torch.randn_like(X2[:, t + 1 :])
            Z2[:, t + 1 :] += torch.randn_like(Z2[:, t + 1 :])
            torch.testing.assert_close(
                model(X2, 7, Z2)[:, : t + 1], ref[:, : t + 1], atol=1e-12, rtol=0
            )
            X3 = X.clone()
            X3[:, t] += 1.0
            assert _differs(model(X3, 7, Z)[:, t], ref[:, t])
            if t < t_z:
                Z3 = Z.clone()
                Z3[:, t] += 1.0
                assert _differs(model(X, 7, Z3)[:, t], ref[:, t])


def test_non_causal_sees_the_future() -> None:
    model = _model("C8", causal=False, num_cond_layers=1).eval()
    X, Z = _inputs(model)
    with torch.no_grad():
        ref = model(X, 7, Z)
        X2, Z2 = X.clone(), Z.clone()
        X2[:, -1] += 1.0
        Z2[:, -1] += 1.0
        assert _differs(model(X2, 7, Z)[:, 0], ref[:, 0])
        assert _differs(model(X, 7, Z2)[:, 0], ref[:, 0])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("t_x", "t_z"), [(5, 3), (1, 1), (3, 2)])
def test_shapes_train_mode(causal: bool, t_x: int, t_z: int) -> None:
    model = _model("C8", causal, 1, dtype=torch.float32).train()
    X, Z = _inputs(model, batch=3, t_x=t_x, t_z=t_z)
    for step in (4, 4.5, torch.tensor(4), torch.tensor([1, 2, 3])):
        out = model(X, step, Z)
        assert out.shape == (3, t_x, model.out_dim)
        assert out.isfinite().all()


# --------------------------------------------------------------------------------------------
# Validation


def _seed_args(**overrides: Any) -> dict[str, Any]:
    in_rep, cond_rep, out_rep, embedding_dim, heads = _case("C8")
    args: dict[str, Any] = {
        "in_rep": in_rep,
        "cond_rep": cond_rep,
        "out_rep": out_rep,
        "in_horizon": 4,
        "cond_horizon": 2,
        "num_layers": 1,
        "num_attention_heads": heads,
        "embedding_dim": embedding_dim,
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"cond_rep": eg.cyclic_group(4).regular_representation},
            "in_rep, cond_rep and out_rep of the same group; got in_rep: 'C8', cond_rep: 'C4'",
        ),
        (
            {"embedding_dim": 20},
            "embedding_dim to be a multiple of the group order |G| = 8 (C8) so that tokens are "
            "whole copies of the regular representation; got 20. Try 16 or 24.",
        ),
        (
            {"embedding_dim": 48, "num_attention_heads": 4},
            "num_attention_heads to divide the 6 regular copies of the embedding "
            "(embedding_dim / |G| = 48 / 8) so that every head takes whole copies; got "
            "num_attention_heads=4. Valid head counts: [1, 2, 3, 6].",
        ),
        (
            {"norm_module": "batchnorm"},
            "norm_module to be one of ['rmsnorm', 'layernorm']; got 'batchnorm'",
        ),
        ({"init_scheme": "orthogonal"}, "init_scheme to be one of"),
        ({"embedding_dim": 0}, "embedding_dim to be a positive int; got 0"),
        ({"in_horizon": 0}, "in_horizon to be a positive int; got 0"),
        ({"num_cond_layers": -1}, "num_cond_layers to be an int >= 0; got -1"),
        ({"p_drop_attn": 1.0}, "p_drop_attn in [0, 1); got 1.0"),
        ({"step_emb_dim": 7}, "even step_emb_dim; got 7"),
    ],
)
def test_bad_construction(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        eCondTransformerRegressor(**_seed_args(**overrides))


def test_bad_construction_types() -> None:
    with pytest.raises(TypeError, match=r"in_rep to be an escnn\.group\.Representation; got int"):
        eCondTransformerRegressor(**_seed_args(in_rep=3))


@pytest.mark.parametrize(
    ("X_shape", "Z_shape", "message"),
    [
        (
            (2, 6, 3),
            (2, 3, 5),
            "with T_x <= 5 (its horizon); got (2, 6, 3), a sequence of length 6",
        ),
        (
            (2, 5, 3),
            (2, 4, 5),
            "with T_z <= 3 (its horizon); got (2, 4, 5), a sequence of length 4",
        ),
        ((2, 5, 4), (2, 3, 5), "expects X of shape (B, T_x, 3) (feature size 3); got (2, 5, 4)"),
        ((2, 5, 3), (2, 3, 2), "expects Z of shape (B, T_z, 5) (feature size 5); got (2, 3, 2)"),
        (
            (5, 3),
            (2, 3, 5),
            "expects X of rank 3 and shape (B, T_x, 3); got rank 2 and shape (5, 3)",
        ),
        (
            (2, 5, 3),
            (3, 3, 5),
            "same batch size; got X of shape (2, 5, 3) and Z of shape (3, 3, 5)",
        ),
    ],
)
def test_bad_inputs(X_shape: tuple[int, ...], Z_shape: tuple[int, ...], message: str) -> None:
    model = _model("C8")
    X = torch.randn(X_shape, dtype=torch.float64)
    Z = torch.randn(Z_shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=re.escape(message)):
        model(X, 0, Z)


def test_bad_step_batch() -> None:
    model = _model("C8")
    X, Z = _inputs(model)
    with pytest.raises(ValueError, match=re.escape("got a tensor of shape (3,)")):
        model(X, torch.zeros(3), Z)


# --------------------------------------------------------------------------------------------
# Parameters and optimisation


@pytest.mark.parametrize("num_cond_layers", [0, 1])
def test_optim_groups(num_cond_layers: int) -> None:
    model = _model("D6", num_cond_layers=num_cond_layers)
    groups = model.get_optim_groups()
    assert_partition(model, groups)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.001
    assert no_decay["weight_decay"] == 0.0
    decay_names, no_decay_names = group_names(model, decay), group_names(model, no_decay)
    assert {
        "input_emb.weight_params",
        "cond_emb.weight_params",
        "head.weight_params",
        "decoder.layers.0.self_attn.in_proj.weight_params",
        "decoder.layers.0.multihead_attn.out_proj.weight_params",
        "step_emb.1.weight",
        "step_emb.3.weight",
    } <= decay_names
    assert all(n.endswith(("weight_params", "weight")) for n in decay_names)
    assert {"pos_emb", "cond_pos_emb", "step_emb.1.bias"} <= no_decay_names
    assert any(n.endswith("invariant_bias.coeffs") for n in no_decay_names)
    assert any(n.startswith("ln_f") for n in no_decay_names)
    assert not any("norm" in n or n.startswith("ln_f") for n in decay_names)
    opt = model.configure_optimizers(learning_rate=2e-4, weight_decay=0.01, betas=(0.9, 0.999))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(g["lr"] == 2e-4 and g["betas"] == (0.9, 0.999) for g in opt.param_groups)


@pytest.mark.parametrize(
    "scheme", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
)
def test_reset_parameters_redraws_everything(scheme: str) -> None:
    model = _model("C8", num_cond_layers=1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.25)
    model.reset_parameters(scheme)  # type: ignore[arg-type]
    for name, p in model.named_parameters():
        assert not bool((p == 3.25).any()), name
    assert model.check_equivariance() < 1e-10
    with pytest.raises(ValueError, match="scheme to be one of"):
        model.reset_parameters("zeros")  # type: ignore[arg-type]


def test_state_dict_round_trip() -> None:
    model = _model("D6", causal=True, num_cond_layers=1).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = _model("D6", causal=True, num_cond_layers=1).eval()
    X, Z = _inputs(model)
    with torch.no_grad():
        assert _differs(other(X, 3, Z), model(X, 3, Z))
        other.load_state_dict(state)
        torch.testing.assert_close(other(X, 3, Z), model(X, 3, Z), atol=0, rtol=0)


@pytest.mark.parametrize("norm_module", ["rmsnorm", "layernorm"])
def test_training_lowers_loss_on_a_symmetric_toy(norm_module: str) -> None:
    """Regress the equivariant target V = X + mean(Z), D6 acting on both by its 2-D irrep."""
    G = _group("D6")
    rho = G.irrep(1, 1)
    model = eCondTransformerRegressor(
        rho,
        rho,
        rho,
        4,
        2,
        2,
        2,
        24,
        p_drop_emb=0.0,
        p_drop_attn=0.0,
        norm_module=norm_module,  # type: ignore[arg-type]
    ).float()
    opt = model.configure_optimizers(learning_rate=3e-3)
    X, Z = torch.randn(32, 4, 2), torch.randn(32, 2, 2)
    target = X + Z.mean(dim=1, keepdim=True)
    losses = []
    for _ in range(40):
        loss = (model(X, torch.rand(32), Z) - target).square().mean()
        opt.zero_grad()
        backward(loss)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert model.check_equivariance() < 1e-5


def test_ema_updated_in_place_matches_fresh_model() -> None:
    model = _model("C8", num_cond_layers=1, dtype=torch.float32)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    X, Z = _inputs(model)
    with torch.no_grad():
        before = ema(X, 5, Z)
    opt = model.configure_optimizers(learning_rate=1e-2)
    for _ in range(3):
        loss = model(X, torch.rand(2), Z).square().mean()
        opt.zero_grad()
        backward(loss)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 0.5)
    fresh = _model("C8", num_cond_layers=1, dtype=torch.float32).eval()
    fresh.load_state_dict(ema.state_dict())
    with torch.no_grad():
        after = ema(X, 5, Z)
        assert _differs(after.double(), before.double()), "no stale cache after in-place updates"
        torch.testing.assert_close(after, fresh(X, 5, Z), atol=0, rtol=0)


def test_deepcopy_and_averaged_model_after_training_forward() -> None:
    model = _model("D6", causal=True, num_cond_layers=1, dtype=torch.float32).train()
    X, Z = _inputs(model)
    loss = model(X, torch.tensor([1, 2]), Z).square().mean()
    clone = copy.deepcopy(model)
    ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)  # type: ignore[no-untyped-call]
    averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_fn)
    backward(loss)
    model.configure_optimizers(learning_rate=1e-2).step()
    averaged.update_parameters(model)
    for m in (clone, averaged, model):
        m.eval()
    with torch.no_grad():
        assert clone(X, 1, Z).shape == averaged(X, 1, Z).shape == (2, 5, model.out_dim)
    assert clone.check_equivariance() < 1e-5
    averaged_model = averaged.module
    assert isinstance(averaged_model, eCondTransformerRegressor)
    assert averaged_model.check_equivariance() < 1e-5


def test_bfloat16_autocast() -> None:
    model = _model("C8", causal=True, num_cond_layers=1, dtype=torch.float32)
    X, Z = _inputs(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(X, torch.tensor([3, 4]), Z)
    assert out.shape == (2, 5, model.out_dim)
    assert out.isfinite().all()
    backward(out.float().square().mean())
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(X, 3, Z).float()
    with torch.no_grad():
        exact = model(X, 3, Z)
    assert float((ref - exact).abs().max()) < 0.1 * float(exact.abs().max()) + 1e-2


def test_pure_bfloat16_model() -> None:
    model = _model("D6", causal=True, num_cond_layers=1).to(torch.bfloat16)
    X, Z = _inputs(model)
    out = model(X, torch.tensor([999, 3]), Z)
    assert out.dtype == torch.bfloat16
    assert out.isfinite().all()
    assert model.check_equivariance() < 0.05


def test_float64_parameters() -> None:
    model = _model("C8")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    X, Z = _inputs(model)
    assert model(X, 1, Z).dtype == torch.float64


@pytest.mark.slow
def test_compile_matches_eager() -> None:
    """A compiled training step and eval forward match eager (tiny sizes: compiling is slow)."""
    model = _model(
        "C8", causal=True, num_cond_layers=1, dtype=torch.float32, num_layers=1, p_drop=0.0
    )
    compiled = torch.compile(model)
    X, Z = _inputs(model)
    k = torch.tensor([3.0, 4.0])
    eager_loss = model(X, k, Z).square().mean()
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled_loss = compiled(X, k, Z).square().mean()
    compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-4)
    for g_c, g_e in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(g_c, g_e, atol=1e-5, rtol=1e-4)
    model.eval()
    with torch.no_grad():
        X2, Z2 = X[:, :3], Z[:, :2]
        torch.testing.assert_close(compiled(X2, k, Z2), model(X2, k, Z2), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Whole-model persistence: pickle and torch.save(model) / torch.load(weights_only=False)


def _torch_round_trip(model: torch.nn.Module) -> Any:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize(
    "name", ["C2", "C8", "D6", "C4xC2", pytest.param("ico", marks=pytest.mark.slow)]
)
def test_whole_model_round_trips(name: str, how: str) -> None:
    import pickle

    kwargs: dict[str, Any] = {"num_layers": 1, "in_horizon": 3} if name == "ico" else {}
    model = _model(name, True, 1, "layernorm", **kwargs).eval()
    X, Z = _inputs(model)
    step = torch.tensor([3.0, 700.0], dtype=X.dtype)
    with torch.no_grad():
        expected = model(X, step, Z)
    loaded = pickle.loads(pickle.dumps(model)) if how == "pickle" else _torch_round_trip(model)
    assert type(loaded) is eCondTransformerRegressor
    assert loaded.in_rep == model.in_rep
    assert loaded.in_rep.group is model.in_rep.group
    with torch.no_grad():
        torch.testing.assert_close(loaded(X, step, Z), expected, atol=0, rtol=0)
    assert loaded.check_equivariance(elements=list(model.in_rep.group.generators)) < 1e-10
