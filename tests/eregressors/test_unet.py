"""Tests of the temporal U-Nets: ConditionalUnet1D (baseline) and eConditionalUnet1D."""

from __future__ import annotations

import ast
import functools
import inspect
import io
from collections.abc import Callable
from pathlib import Path

import escnn.group as eg
import pytest
import torch
from torch import Tensor, nn

import eregressors._plain_unet as plain_unet
from eregressors import (
    ConditionalUnet1D,
    GenCondRegressor,
    PlainConditionalUnet1D,
    eConditionalUnet1D,
)
from eregressors._plain_unet import global_conditioning, run_trunk
from ereps import EquivarianceError, Group, Representation, direct_sum

from ._helpers import assert_partition, backward, group_names

Unet = ConditionalUnet1D | eConditionalUnet1D


@functools.cache
def _group(name: str) -> Group:
    factories: dict[str, Callable[[], Group]] = {
        "C2": lambda: eg.cyclic_group(2),
        "C8": lambda: eg.cyclic_group(8),
        "D6": lambda: eg.dihedral_group(6),
        "O": eg.octa_group,
        "I": eg.ico_group,
        "Oh": eg.full_octa_group,
        "C4xC2": lambda: eg.direct_product(eg.cyclic_group(4), eg.cyclic_group(2)),
    }
    return factories[name]()


def _irreps_of_size(G: Group, size: int) -> list[Representation]:
    return [r for r in G.irreps() if r.size == size]


@functools.cache
def _case(name: str) -> tuple[Representation, Representation, Representation, tuple[int, ...]]:
    """(in_rep, cond_rep, out_rep, down_dims) with small widths (a few regular copies)."""
    G = _group(name)
    triv = G.trivial_representation
    if name == "C2":  # regular representations everywhere
        reg = G.regular_representation
        return reg, direct_sum([reg, reg]), reg, (4, 8, 16)
    if name == "C8":  # three different non-regular representations
        return (
            direct_sum([G.irrep(1), triv]),
            direct_sum([G.irrep(2), G.irrep(1), G.irrep(4)]),
            G.irrep(3),
            (8, 16, 32),
        )
    if name == "D6":
        return (
            direct_sum([G.irrep(1, 1), triv]),
            direct_sum([G.irrep(1, 2), G.irrep(1, 0), G.irrep(1, 1)]),
            G.irrep(1, 1),
            (12, 24, 48),
        )
    if name in ("O", "I"):
        # The standard 3-D representation (a permuted basis of irrep 1) meeting others.
        standard: Representation = G.standard_representation  # type: ignore[attr-defined]
        cond = (
            direct_sum([G.irrep(2), triv]) if name == "I" else G.quotient_representation((False, 4))
        )
        order = G.order()
        return direct_sum([standard, triv]), cond, standard, (order, 2 * order)
    # Direct products: two irreps of dimension 3 (Oh) or 1 and the regular one (C4 x C2).
    if name == "Oh":
        three = _irreps_of_size(G, 3)
        return direct_sum([three[0], triv]), direct_sum([three[1], three[2]]), three[3], (48, 96)
    ones = G.irreps()
    return direct_sum([ones[1], ones[2], triv]), G.regular_representation, ones[3], (8, 16)


def _emodel(
    name: str, cond_predict_scale: bool = False, kernel_size: int = 3, cond_horizon: int = 2
) -> eConditionalUnet1D:
    in_rep, cond_rep, out_rep, dims = _case(name)
    return eConditionalUnet1D(
        in_rep,
        cond_rep,
        out_rep,
        cond_horizon=cond_horizon,
        diffusion_step_embed_dim=8,
        down_dims=dims,
        kernel_size=kernel_size,
        n_groups=1,
        cond_predict_scale=cond_predict_scale,
    )


def _perturb(model: nn.Module, scale: float = 0.3) -> None:
    """Noise on every parameter, so that zero biases and identity norms are exercised."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def _inputs(model: Unet, T: int, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    dtype = next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, T, model.in_dim, generator=gen, dtype=torch.float64).to(dtype)
    Z = torch.randn(batch, model.cond_horizon, model.cond_dim, generator=gen).to(dtype)
    k = torch.randint(0, 1000, (batch,), generator=gen).to(dtype)
    return X, k, Z


def _baseline(
    dims: tuple[int, ...] = (8, 16, 32), cond_predict_scale: bool = False
) -> ConditionalUnet1D:
    return ConditionalUnet1D(
        3,
        4,
        2,
        cond_horizon=2,
        diffusion_step_embed_dim=8,
        down_dims=dims,
        kernel_size=5,
        n_groups=4,
        cond_predict_scale=cond_predict_scale,
    )


# --------------------------------------------------------------------------------------------
# Equivariance


@pytest.mark.parametrize("T", [16, 13, 7])
@pytest.mark.parametrize("cond_predict_scale", [False, True])
@pytest.mark.parametrize("name", ["C2", "C8", "D6"])
def test_equivariant_in_float64(name: str, cond_predict_scale: bool, T: int) -> None:
    model = _emodel(name, cond_predict_scale, kernel_size=5).double()
    _perturb(model)
    assert model.check_equivariance(horizon=T) < 1e-10


@pytest.mark.parametrize(
    ("name", "T", "cond_predict_scale"),
    [
        ("O", 13, True),
        ("O", 7, False),
        ("C4xC2", 16, True),
        ("C4xC2", 7, False),
        pytest.param("I", 13, True, marks=pytest.mark.slow),
        pytest.param("I", 16, False, marks=pytest.mark.slow),
        pytest.param("Oh", 13, True, marks=pytest.mark.slow),
    ],
)
def test_equivariant_larger_and_product_groups(name: str, T: int, cond_predict_scale: bool) -> None:
    model = _emodel(name, cond_predict_scale).double()
    _perturb(model)
    G = _group(name)
    elements = [*G.generators, list(G.elements)[5]]
    assert model.check_equivariance(horizon=T, elements=elements) < 1e-10


@pytest.mark.parametrize("name", ["C8", "D6"])
def test_equivariant_in_float32_eval(name: str) -> None:
    model = _emodel(name, cond_predict_scale=True)
    _perturb(model, 0.1)
    assert model.check_equivariance(horizon=13) < 1e-5


def test_check_equivariance_detects_a_broken_model() -> None:
    """The check is not vacuous: a plain (unconstrained) last layer breaks equivariance."""
    model = _emodel("C8").double()
    _perturb(model)
    model.final_conv[1] = nn.Conv1d(8, model.out_dim, 1).double()
    assert model.check_equivariance(horizon=8) > 1e-2
    with pytest.raises(EquivarianceError):
        model.check_equivariance(horizon=8, tol=1e-10)


# --------------------------------------------------------------------------------------------
# Any horizon: padding is masked


@pytest.mark.parametrize("kind", ["equivariant", "baseline"])
@pytest.mark.parametrize("T", [13, 7, 5])
def test_outputs_at_real_positions_do_not_depend_on_the_padding(kind: str, T: int) -> None:
    model: Unet = _emodel("C8", True, kernel_size=5) if kind == "equivariant" else _baseline()
    model = model.double()
    _perturb(model)
    X, k, Z = _inputs(model, T)
    torch.set_grad_enabled(False)
    try:
        _check_padding(model, kind, X, k, Z, T)
    finally:
        torch.set_grad_enabled(True)


def _check_padding(model: Unet, kind: str, X: Tensor, k: Tensor, Z: Tensor, T: int) -> None:
    y = model(X, k, Z)
    assert y.shape == (2, T, model.out_dim)
    cond = global_conditioning(model.diffusion_step_encoder, kind == "baseline", k, Z)
    padded = -(-T // 4) * 4  # three levels: multiples of 4
    garbage = 100.0 * torch.randn(2, model.in_dim, padded - T, dtype=torch.float64)
    x = torch.cat((X.transpose(1, 2), garbage), dim=-1)
    parts = (model.down_modules, model.mid_modules, model.up_modules, model.final_conv)
    masked = run_trunk(x, cond, *parts, length=T).transpose(1, 2)
    torch.testing.assert_close(masked, y, rtol=0, atol=1e-10)
    # Without the masks the same padding reaches the real positions (so the test can fail).
    unmasked = run_trunk(x, cond, *parts)[..., :T].transpose(1, 2)
    assert float((unmasked - y).abs().max()) > 1e-3


def test_multiple_of_the_levels_runs_without_masks() -> None:
    model = _baseline().double()
    X, k, Z = _inputs(model, 16)
    cond = global_conditioning(model.diffusion_step_encoder, True, k, Z)
    parts = (model.down_modules, model.mid_modules, model.up_modules, model.final_conv)
    torch.testing.assert_close(
        run_trunk(X.transpose(1, 2), cond, *parts).transpose(1, 2), model(X, k, Z)
    )


def test_single_step_horizon() -> None:
    model = _emodel("D6").double()
    _perturb(model)
    assert model.check_equivariance(horizon=1) < 1e-10


# --------------------------------------------------------------------------------------------
# Architecture (Diffusion Policy's design) and API


def test_baseline_structure_follows_diffusion_policy() -> None:
    model = _baseline((8, 16, 32))
    blocks = [m for m in model.modules() if isinstance(m, plain_unet.ConditionalResidualBlock1D)]
    assert len(blocks) == 2 * 3 + 2 + 2 * 2
    downs = [m for m in model.modules() if isinstance(m, nn.Conv1d) and m.stride == (2,)]
    assert [(d.in_channels, d.kernel_size, d.padding) for d in downs] == [
        (8, (3,), (1,)),
        (16, (3,), (1,)),
    ]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose1d)]
    assert [(u.in_channels, u.kernel_size, u.stride, u.padding) for u in ups] == [
        (16, (4,), (2,), (1,)),
        (8, (4,), (2,), (1,)),
    ]
    # Up blocks take the concatenated skip: 2·32 -> 16, then 2·16 -> 8.
    up_in = [m[0].blocks[0].conv.in_channels for m in model.up_modules]  # type: ignore[index]
    assert up_in == [64, 32]
    encoder = model.diffusion_step_encoder
    assert [type(m).__name__ for m in encoder] == ["SinusoidalPosEmb", "Linear", "Mish", "Linear"]
    film = model.down_modules[0][0].cond_encoder  # type: ignore[index]
    assert (film.in_features, film.out_features) == (8 + 2 * 4, 8)
    # Resolutions 16 -> 8 -> 4 and back.
    seen: list[int] = []
    for block in (model.down_modules[0][0], model.down_modules[2][0], model.up_modules[1][0]):  # type: ignore[index]
        block.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1]))
    model(*_inputs(model, 16))
    assert seen == [16, 4, 8]


def test_exports_of_both_models_have_the_same_modules_and_shapes() -> None:
    """Equal widths give the same plain network: the exported models run equally fast."""
    G = _group("D6")
    rho = direct_sum([G.irrep(1, 1), G.trivial_representation])
    e = eConditionalUnet1D(rho, rho, rho, 2, 8, (24, 48), 5, 2, True)
    b = ConditionalUnet1D(3, 3, 3, 2, 8, (24, 48), 5, 2, True)
    se, sb = e.export().state_dict(), b.export().state_dict()
    assert {k: v.shape for k, v in se.items()} == {k: v.shape for k, v in sb.items()}


def test_signatures_match_in_position() -> None:
    names = [
        "cond_horizon",
        "diffusion_step_embed_dim",
        "down_dims",
        "kernel_size",
        "n_groups",
        "cond_predict_scale",
    ]
    e = list(inspect.signature(eConditionalUnet1D.__init__).parameters)[1:]
    b = list(inspect.signature(ConditionalUnet1D.__init__).parameters)[1:]
    assert e[:9] == ["in_rep", "cond_rep", "out_rep", *names]
    assert b[:9] == ["in_dim", "cond_dim", "out_dim", *names]
    assert isinstance(_baseline(), GenCondRegressor)
    assert issubclass(eConditionalUnet1D, GenCondRegressor)


def test_out_rep_defaults_to_in_rep() -> None:
    G = _group("C8")
    model = eConditionalUnet1D(G.irrep(1), G.irrep(1), down_dims=(8, 16), n_groups=1)
    assert model.out_rep is model.in_rep
    assert ConditionalUnet1D(3, 2, down_dims=(8,), n_groups=1).out_dim == 3


def test_optim_groups_partition_and_decay_only_weights() -> None:
    for model in (_emodel("C8"), _baseline()):
        groups = model.get_optim_groups(1e-2)
        assert_partition(model, groups)
        decayed = group_names(model, groups[0])
        assert decayed
        assert not any("bias" in n or "norm" in n for n in decayed)
        assert all(n.endswith(("weight", "weight_params")) for n in decayed)
        assert isinstance(model.configure_optimizers(1e-3), torch.optim.AdamW)
    model_e = _emodel("C8")
    decayed_e = group_names(model_e, model_e.get_optim_groups()[0])
    assert "down_modules.0.0.blocks.0.conv.weight_params" in decayed_e
    assert "down_modules.0.2.weight_params" in decayed_e  # the downsampling kernel


def test_reset_parameters() -> None:
    model = _emodel("C8")
    _perturb(model)
    model.reset_parameters("kaiming_uniform")
    norm = model.down_modules[0][0].blocks[0].norm  # type: ignore[index]
    assert torch.equal(norm.copy_scale, torch.ones_like(norm.copy_scale))
    assert float(norm.copy_bias.detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match="scheme to be one of"):
        model.reset_parameters("orthogonal")  # type: ignore[arg-type]
    baseline = _baseline()
    _perturb(baseline)
    conv = baseline.down_modules[0][0].blocks[0].conv  # type: ignore[index]
    before = conv.weight.detach().clone()
    baseline.reset_parameters()
    assert not torch.equal(before, conv.weight)
    for module in baseline.modules():
        if isinstance(module, nn.GroupNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))


# --------------------------------------------------------------------------------------------
# Validation


def test_equivariant_validation_messages() -> None:
    G = _group("C8")
    rho = G.irrep(1)
    with pytest.raises(
        ValueError,
        match=r"multiple of the group order \|G\| = 8.*down_dims\[1\] = 20.*Try 16 or 24",
    ):
        eConditionalUnet1D(rho, rho, down_dims=(16, 20), n_groups=1)
    with pytest.raises(
        ValueError,
        match=r"n_groups to divide the number of regular copies.*\[2, 4\].*Valid values: \[1, 2\]",
    ):
        eConditionalUnet1D(rho, rho, down_dims=(16, 32), n_groups=4)
    with pytest.raises(ValueError, match="odd kernel_size"):
        eConditionalUnet1D(rho, rho, down_dims=(16,), n_groups=1, kernel_size=4)
    with pytest.raises(ValueError, match="even diffusion_step_embed_dim"):
        eConditionalUnet1D(rho, rho, diffusion_step_embed_dim=7, down_dims=(16,), n_groups=1)
    with pytest.raises(ValueError, match="at least one level"):
        eConditionalUnet1D(rho, rho, down_dims=(), n_groups=1)
    with pytest.raises(TypeError, match="down_dims"):
        eConditionalUnet1D(rho, rho, down_dims=16, n_groups=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same group"):
        eConditionalUnet1D(rho, _group("D6").irrep(1, 1), down_dims=(16,), n_groups=1)
    with pytest.raises(TypeError, match="cond_rep"):
        eConditionalUnet1D(rho, 2, down_dims=(16,), n_groups=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cond_predict_scale"):
        eConditionalUnet1D(rho, rho, down_dims=(16,), n_groups=1, cond_predict_scale=1)  # type: ignore[arg-type]


def test_input_validation_messages() -> None:
    model = _emodel("C8")
    X, k, Z = _inputs(model, 8)
    with pytest.raises(ValueError, match=r"exactly cond_horizon = 2 tokens.*\(2, 1, 5\)"):
        model(X, k, Z[:, :1])
    with pytest.raises(ValueError, match=r"\(B, T_x, 3\)"):
        model(X[..., :2], k, Z)
    with pytest.raises(ValueError, match="rank 3"):
        model(X[0], k, Z)
    with pytest.raises(ValueError, match="opt_step"):
        model(X, torch.zeros(3), Z)
    baseline = _baseline()
    with pytest.raises(
        ValueError, match=r"n_groups to divide every width.*Valid values: \[1, 2, 4\]"
    ):
        ConditionalUnet1D(2, 2, down_dims=(12, 16), n_groups=3)
    with pytest.raises(ValueError, match="T_z <= 2"):
        baseline(X, k, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="exactly cond_horizon"):
        baseline(X, k, torch.zeros(2, 1, 4))


# --------------------------------------------------------------------------------------------
# Export


def _allowed_module(module: nn.Module) -> bool:
    name = type(module).__module__
    return name.startswith("torch.nn.") or name in (
        "eregressors._plain_unet",
        "eregressors._plain",
    )


def test_plain_file_imports_only_torch() -> None:
    for module in (plain_unet, __import__("eregressors._plain").__dict__["_plain"]):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots.add((node.module or "").split(".")[0])
        assert roots <= {"__future__", "collections", "typing", "math", "torch"}, roots


@pytest.mark.parametrize("kind", ["equivariant", "baseline"])
@pytest.mark.parametrize("T", [16, 13])
def test_export_agrees_and_is_plain_torch(kind: str, T: int) -> None:
    model: Unet = _emodel("D6", True, kernel_size=5) if kind == "equivariant" else _baseline()
    _perturb(model, 0.2)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        model = model.to(dtype)
        before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, Tensor)}
        exported = model.export()
        assert isinstance(exported, PlainConditionalUnet1D)
        assert all(_allowed_module(m) for m in exported.modules())
        assert all(p.dtype == dtype for p in exported.parameters())
        X, k, Z = _inputs(model, T, batch=3)
        with torch.no_grad():
            reference = model(X, k, Z)
            out = exported(X, k, Z)
        scale = float(reference.abs().max())
        assert float((out - reference).abs().max()) <= tol * max(scale, 1.0)
        # Detached copies: the source is unchanged, and editing it does not reach the export.
        for key, value in model.state_dict().items():
            if isinstance(value, Tensor):
                assert torch.equal(value, before[key])
        with torch.no_grad():
            next(model.parameters()).mul_(3.0)
            torch.testing.assert_close(exported(X, k, Z), out)
            next(model.parameters()).div_(3.0)


@pytest.mark.parametrize("kind", ["equivariant", pytest.param("baseline", marks=pytest.mark.slow)])
def test_torch_export_with_dynamic_batch(kind: str) -> None:
    model: Unet = _emodel("C8", True) if kind == "equivariant" else _baseline()
    _perturb(model, 0.1)
    plain = model.export().eval()
    X, k, Z = _inputs(model, 13, batch=3)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        plain, (X, k, Z), dynamic_shapes=({0: batch}, {0: batch}, {0: batch})
    )
    for size in (1, 5):
        X2, k2, Z2 = _inputs(model, 13, batch=size, seed=size)
        with torch.no_grad():
            torch.testing.assert_close(
                program.module()(X2, k2, Z2), model(X2, k2, Z2), atol=1e-5, rtol=1e-5
            )


# --------------------------------------------------------------------------------------------
# Training, dtypes, compile, EMA, checkpoints


def _flow_matching_losses(model: Unet, steps: int = 40) -> list[float]:
    gen = torch.Generator().manual_seed(3)
    Z = torch.randn(64, model.cond_horizon, model.cond_dim, generator=gen)
    ramp = torch.linspace(0.2, 1.0, 8).view(1, 8, 1)
    # An equivariant target for the equivariant cases below (in_dim == cond_dim copies of ρ).
    X1 = ramp * Z[:, -1:, : model.in_dim]
    optimizer = model.configure_optimizers(learning_rate=3e-3, weight_decay=0.0)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, 64, (16,), generator=gen)
        x0 = torch.randn(16, 8, model.in_dim, generator=gen)
        t = torch.rand(16, generator=gen)
        xt = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * X1[idx]
        loss = torch.mean((model(xt, 1000 * t, Z[idx]) - (X1[idx] - x0)) ** 2)
        optimizer.zero_grad()
        backward(loss)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("kind", ["equivariant", "baseline"])
def test_trains_on_a_short_flow_matching_run(kind: str) -> None:
    G = _group("C8")
    if kind == "equivariant":
        rho = G.irrep(1)
        model: Unet = eConditionalUnet1D(rho, rho, rho, 2, 16, (16, 32), 3, 2, True)
    else:
        model = ConditionalUnet1D(2, 2, 2, 2, 16, (16, 32), 3, 2, True)
    losses = _flow_matching_losses(model)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_bfloat16_autocast_forward_and_backward() -> None:
    model = _emodel("C8", True)
    X, k, Z = _inputs(model, 13)
    with torch.no_grad():
        reference = model(X, k, Z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(X, k, Z)
    assert torch.isfinite(out).all()
    assert float((out.detach().float() - reference).norm() / reference.norm()) < 5e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(X, k, Z).float().square().mean()
    backward(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_ema_of_an_equivariant_model_is_equivariant() -> None:
    model = _emodel("D6", True).double()
    ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)  # type: ignore[no-untyped-call]
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_fn)
    optimizer = model.configure_optimizers(1e-2)
    for seed in range(3):
        X, k, Z = _inputs(model, 7, seed=seed)
        optimizer.zero_grad()
        backward(model(X, k, Z).square().mean())
        optimizer.step()
        ema.update_parameters(model)
    averaged = ema.module
    assert isinstance(averaged, eConditionalUnet1D)
    assert not torch.equal(next(averaged.parameters()), next(model.parameters()))
    assert averaged.check_equivariance(horizon=7) < 1e-10


def test_state_dict_round_trip_with_weights_only() -> None:
    model = _emodel("C8", True)
    _perturb(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = _emodel("C8", True)
    fresh.load_state_dict(state)
    X, k, Z = _inputs(model, 13)
    torch.testing.assert_close(fresh(X, k, Z), model(X, k, Z))
    # A checkpoint built for other representations is refused.
    G = _group("C8")
    other = eConditionalUnet1D(
        direct_sum([G.irrep(2), G.trivial_representation]),
        _case("C8")[1],
        _case("C8")[2],
        cond_horizon=2,
        diffusion_step_embed_dim=8,
        down_dims=(8, 16, 32),
        n_groups=1,
        cond_predict_scale=True,
    )
    with pytest.raises(ValueError, match="in_rep"):
        other.load_state_dict(state)


@pytest.mark.slow
def test_compile_matches_eager_without_graph_breaks() -> None:
    torch._dynamo.reset()
    G = _group("C8")
    rho = direct_sum([G.irrep(1), G.trivial_representation])
    model = eConditionalUnet1D(rho, G.irrep(2), G.irrep(1), 2, 8, (8, 16), 3, 1, True)
    _perturb(model, 0.1)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    X, k, Z = _inputs(model, 13)
    eager_loss = model(X, k, Z).square().mean()
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled_loss = compiled(X, k, Z).square().mean()
    compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-4)
    for g_c, g_e in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(g_c, g_e, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_compile_with_inductor_matches_eager() -> None:
    # One level (no resampling) keeps inductor's C++ build of the graph within minutes.
    torch._dynamo.reset()
    G = _group("D6")
    rho = direct_sum([G.irrep(1, 1), G.trivial_representation])
    model = eConditionalUnet1D(rho, rho, rho, 2, 8, (24,), 3, 2, True)
    compiled = torch.compile(model)
    X, k, Z = _inputs(model, 7)
    torch.testing.assert_close(compiled(X, k, Z), model(X, k, Z), atol=1e-5, rtol=1e-4)


def test_masked_group_norm_matches_group_norm_of_the_real_steps() -> None:
    """Against torch: the statistics of the masked norm are those of the real steps alone."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, 7, generator=gen, dtype=torch.float64)
    weight = torch.randn(8, generator=gen, dtype=torch.float64)
    bias = torch.randn(8, generator=gen, dtype=torch.float64)
    mask = (torch.arange(7) < 5).to(torch.float64)
    y = plain_unet.masked_group_norm(x, 2, weight, bias, 1e-5, mask)
    expected = torch.nn.functional.group_norm(x[..., :5], 2, weight, bias, 1e-5)
    torch.testing.assert_close(y[..., :5], expected)
    half = plain_unet.masked_group_norm(x.bfloat16(), 2, weight, bias, 1e-5, mask)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half[..., :5].double(), expected, atol=5e-2, rtol=5e-2)


def test_bfloat16_autocast_with_padding_and_float64_model() -> None:
    model = _emodel("D6", True)
    X, k, Z = _inputs(model, 13)
    with torch.no_grad():
        reference = model(X, k, Z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(X, k, Z)
    assert float((out.float() - reference).norm() / reference.norm()) < 5e-2
    double = _emodel("D6", True).double()
    X, k, Z = _inputs(double, 13)
    assert double(X, k, Z).dtype == torch.float64
