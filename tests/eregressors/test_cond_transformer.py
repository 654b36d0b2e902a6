"""Tests of the unconstrained baseline CondTransformerRegressor."""

from __future__ import annotations

import copy
import io
import re
import time

import pytest
import torch

from eregressors import CondTransformerRegressor, GenCondRegressor

from ._helpers import assert_partition, backward, group_names

IN, OUT, COND, T_X, T_Z = 3, 2, 5, 6, 4


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two float64 tensors differ by more than round-off."""
    return bool((a - b).abs().max() > 1e-9)


def _model(
    causal: bool = False,
    num_cond_layers: int = 0,
    dtype: torch.dtype = torch.float64,
    num_layers: int = 2,
    p_drop: float = 0.1,
) -> CondTransformerRegressor:
    return CondTransformerRegressor(
        IN,
        COND,
        OUT,
        in_horizon=T_X,
        cond_horizon=T_Z,
        num_layers=num_layers,
        p_drop_emb=p_drop,
        p_drop_attn=p_drop,
        num_attention_heads=2,
        embedding_dim=16,
        causal_attn=causal,
        num_cond_layers=num_cond_layers,
    ).to(dtype)


def test_is_gen_cond_regressor_and_defaults() -> None:
    model = CondTransformerRegressor(IN, COND, OUT, T_X, T_Z)
    assert isinstance(model, GenCondRegressor)
    assert (model.num_layers, model.num_attention_heads, model.embedding_dim) == (6, 6, 768)
    assert not model.causal_attn
    assert model.num_cond_layers == 0


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_cond_layers", [0, 1])
@pytest.mark.parametrize(("t_x", "t_z"), [(T_X, T_Z), (1, 1), (3, 2), (2, T_Z)])
def test_shapes(causal: bool, num_cond_layers: int, t_x: int, t_z: int) -> None:
    model = _model(causal, num_cond_layers, torch.float32)
    X, Z = torch.randn(3, t_x, IN), torch.randn(3, t_z, COND)
    out = model(X, torch.tensor([1, 5, 9]), Z)
    assert out.shape == (3, t_x, OUT)
    assert out.isfinite().all()
    model.eval()
    with torch.no_grad():
        assert model(X, 3.0, Z).shape == (3, t_x, OUT)


def test_step_changes_output() -> None:
    model = _model().eval()
    X, Z = (
        torch.randn(2, T_X, IN, dtype=torch.float64),
        torch.randn(2, T_Z, COND, dtype=torch.float64),
    )
    assert _differs(model(X, 1, Z), model(X, 2, Z))


@pytest.mark.parametrize("num_cond_layers", [0, 1])
@pytest.mark.parametrize(("t_x", "t_z"), [(T_X, T_Z), (4, 2), (2, 3), (1, 1)])
def test_causality(num_cond_layers: int, t_x: int, t_z: int) -> None:
    """Outputs at positions <= t ignore inputs (X and Z) after t, and see X_t and Z_t."""
    model = _model(True, num_cond_layers).eval()
    X, Z = (
        torch.randn(2, t_x, IN, dtype=torch.float64),
        torch.randn(2, t_z, COND, dtype=torch.float64),
    )
    with torch.no_grad():
        ref = model(X, 7, Z)
        for t in range(t_x):
            X2, Z2 = X.clone(), Z.clone()
            X2[:, t + 1 :] += torch.randn_like(X2[:, t + 1 :])
            Z2[:, t + 1 :] += torch.randn_like(Z2[:, t + 1 :])
            out = model(X2, 7, Z2)
            torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], atol=1e-12, rtol=0)
            # Inputs at t itself are visible at t.
            X3, Z3 = X.clone(), Z.clone()
            X3[:, t] += 1.0
            assert _differs(model(X3, 7, Z)[:, t], ref[:, t])
            if t < t_z:
                Z3[:, t] += 1.0
                assert _differs(model(X, 7, Z3)[:, t], ref[:, t])


@pytest.mark.parametrize("num_cond_layers", [0, 1])
def test_non_causal_sees_the_future(num_cond_layers: int) -> None:
    model = _model(False, num_cond_layers).eval()
    X, Z = (
        torch.randn(2, T_X, IN, dtype=torch.float64),
        torch.randn(2, T_Z, COND, dtype=torch.float64),
    )
    with torch.no_grad():
        ref = model(X, 7, Z)
        X2, Z2 = X.clone(), Z.clone()
        X2[:, -1] += 1.0
        Z2[:, -1] += 1.0
        assert _differs(model(X2, 7, Z)[:, 0], ref[:, 0])
        assert _differs(model(X, 7, Z2)[:, 0], ref[:, 0])


@pytest.mark.parametrize("num_cond_layers", [0, 1])
def test_optim_groups(num_cond_layers: int) -> None:
    model = _model(num_cond_layers=num_cond_layers)
    groups = model.get_optim_groups(weight_decay=0.05)
    assert_partition(model, groups)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05
    assert no_decay["weight_decay"] == 0.0
    decay_names, no_decay_names = group_names(model, decay), group_names(model, no_decay)
    assert {"pos_emb", "cond_pos_emb", "ln_f.weight", "ln_f.bias", "head.bias"} <= no_decay_names
    assert {
        "head.weight",
        "input_emb.weight",
        "decoder.layers.0.self_attn.in_proj_weight",
    } <= decay_names
    assert all(n.endswith("weight") for n in decay_names)
    assert not any("norm" in n for n in decay_names)
    assert all(
        n.endswith("bias") or "norm" in n or "pos_emb" in n or "ln_f" in n for n in no_decay_names
    )

    opt = model.configure_optimizers(learning_rate=3e-4, weight_decay=0.05, betas=(0.9, 0.99))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.9, 0.99) for g in opt.param_groups)
    default = _model().configure_optimizers()
    assert default.param_groups[0]["lr"] == 1e-4
    assert default.param_groups[0]["weight_decay"] == 1e-3
    assert default.param_groups[0]["betas"] == (0.9, 0.95)


def test_reset_parameters_redraws_everything() -> None:
    model = _model(num_cond_layers=1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.25)
    model.reset_parameters()
    for name, p in model.named_parameters():
        assert not bool((p == 3.25).any()), name
    assert model.pos_emb is not None
    assert 0.01 < float(model.pos_emb.detach().std()) < 0.03


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"num_attention_heads": 3},
            "to divide embedding_dim=16; got num_attention_heads=3. Valid head counts",
        ),
        ({"embedding_dim": 0}, "embedding_dim to be a positive int; got 0"),
        ({"in_horizon": 0}, "in_horizon to be a positive int; got 0"),
        ({"num_cond_layers": -1}, "num_cond_layers to be an int >= 0; got -1"),
        ({"p_drop_emb": 1.5}, "p_drop_emb in [0, 1]; got 1.5"),
    ],
)
def test_bad_construction(kwargs: dict[str, int | float], message: str) -> None:
    args: dict[str, int | float] = {
        "in_horizon": T_X,
        "cond_horizon": T_Z,
        "num_layers": 1,
        "num_attention_heads": 2,
        "embedding_dim": 16,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        CondTransformerRegressor(IN, COND, OUT, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("X_shape", "Z_shape", "message"),
    [
        (
            (2, T_X + 1, IN),
            (2, T_Z, COND),
            f"with T_x <= {T_X} (its horizon); got (2, {T_X + 1}, {IN})",
        ),
        (
            (2, T_X, IN),
            (2, T_Z + 1, COND),
            f"with T_z <= {T_Z} (its horizon); got (2, {T_Z + 1}, {COND})",
        ),
        (
            (2, T_X, IN + 1),
            (2, T_Z, COND),
            f"expects X of shape (B, T_x, {IN}) (feature size {IN}); got",
        ),
        ((T_X, IN), (2, T_Z, COND), f"expects X of rank 3 and shape (B, T_x, {IN}); got rank 2"),
        ((2, T_X, IN), (3, T_Z, COND), "same batch size; got X of shape"),
    ],
)
def test_bad_inputs(X_shape: tuple[int, ...], Z_shape: tuple[int, ...], message: str) -> None:
    model = _model(causal=True)
    with pytest.raises(ValueError, match=re.escape(message)):
        model(
            torch.randn(X_shape, dtype=torch.float64), 0, torch.randn(Z_shape, dtype=torch.float64)
        )
    with pytest.raises(ValueError, match=re.escape("got a tensor of shape (3,)")):
        model(
            torch.randn(2, T_X, IN, dtype=torch.float64),
            torch.zeros(3),
            torch.randn(2, T_Z, COND, dtype=torch.float64),
        )


def test_state_dict_round_trip() -> None:
    model = _model(causal=True, num_cond_layers=1).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = _model(causal=True, num_cond_layers=1).eval()
    other.load_state_dict(state)
    X, Z = (
        torch.randn(2, T_X, IN, dtype=torch.float64),
        torch.randn(2, T_Z, COND, dtype=torch.float64),
    )
    torch.testing.assert_close(other(X, 3, Z), model(X, 3, Z), atol=0, rtol=0)


def test_deepcopy_and_averaged_model_after_training_forward() -> None:
    model = _model(causal=True, num_cond_layers=1, dtype=torch.float32).train()
    X, Z = torch.randn(2, T_X, IN), torch.randn(2, T_Z, COND)
    loss = model(X, torch.tensor([1, 2]), Z).square().mean()
    clone = copy.deepcopy(model)
    ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)  # type: ignore[no-untyped-call]
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_fn)
    backward(loss)
    model.configure_optimizers(learning_rate=1e-2).step()
    ema.update_parameters(model)
    model.eval()
    clone.eval()
    ema.eval()
    with torch.no_grad():
        assert clone(X, 1, Z).shape == ema(X, 1, Z).shape == (2, T_X, OUT)


def test_training_lowers_loss() -> None:
    model = _model(num_cond_layers=1, dtype=torch.float32)
    opt = model.configure_optimizers(learning_rate=3e-3)
    X, Z = torch.randn(16, T_X, IN), torch.randn(16, T_Z, COND)
    target = X[..., :OUT] + Z[:, :1, :OUT]
    losses = []
    for _ in range(60):
        loss = (model(X, torch.rand(16), Z) - target).square().mean()
        opt.zero_grad()
        backward(loss)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_compile_matches_eager() -> None:
    """A compiled training step and eval forward match eager (tiny sizes: compiling is slow)."""
    start = time.perf_counter()
    model = _model(causal=True, num_cond_layers=1, dtype=torch.float32, num_layers=1, p_drop=0.0)
    compiled = torch.compile(model)
    X, Z, k = torch.randn(2, T_X, IN), torch.randn(2, T_Z, COND), torch.tensor([3.0, 4.0])
    # Training step: gradients agree.
    eager_loss = model(X, k, Z).square().mean()
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled_loss = compiled(X, k, Z).square().mean()
    compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-4)
    for g_c, g_e in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(g_c, g_e, atol=1e-5, rtol=1e-4)
    # Eval, shorter sequences.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(X[:, :3], k, Z[:, :2]), model(X[:, :3], k, Z[:, :2]), atol=1e-5, rtol=1e-4
        )
    elapsed = time.perf_counter() - start
    assert elapsed < 600
