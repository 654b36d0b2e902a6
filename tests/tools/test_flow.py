"""The planar task and the flow-matching helpers shared by the demo and the training script."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
import torch

import ereps
from _flow import (
    TaskConfig,
    baseline_config,
    cosine_lr,
    default_unet_dims,
    default_width,
    flow_matching_loss,
    generate_data,
    goal_orbit,
    goal_probabilities,
    model_config,
    model_equivariance_error,
    observed_history,
    parse_planar_group,
    rollout,
    sample_trajectories,
    sampler_equivariance_error,
    transform,
)
from eregressors import RegressorConfig, config_from_dict


class ConstantField(torch.nn.Module):
    """v(X, k, Z) = c for every token."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = c

    def forward(self, X: torch.Tensor, opt_step: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        return self.c.expand_as(X)


class ToyEquivariantField(torch.nn.Module):
    """v = cos(k) X + |m|² m with m the mean of Z: equivariant for orthogonal actions."""

    def forward(self, X: torch.Tensor, opt_step: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        scale = torch.cos(opt_step / 1000.0)[:, None, None]
        m = Z.mean(dim=1, keepdim=True)
        shift: torch.Tensor = m * (m**2).sum(dim=-1, keepdim=True)
        return scale * X + shift


@pytest.mark.parametrize(("name", "order"), [("C3", 3), ("C8", 8), ("D4", 8), ("d6", 12)])
def test_parse_planar_group(name: str, order: int) -> None:
    group = parse_planar_group(name)
    assert group.order == order
    assert group.matrices.shape == (order, 2, 2)
    eye = np.broadcast_to(np.eye(2), (order, 2, 2))
    np.testing.assert_allclose(group.matrices @ group.matrices.transpose(0, 2, 1), eye, atol=1e-12)
    assert "identity" in group.element_labels
    reflections = sum(label.startswith("refl") for label in group.element_labels)
    assert reflections == (order // 2 if name.upper().startswith("D") else 0)
    # Faithful: all matrices distinct.
    assert len({tuple(np.round(m, 8).ravel()) for m in group.matrices}) == order


@pytest.mark.parametrize("name", ["C2", "D2", "D1", "ico", "O3", "", "C"])
def test_parse_planar_group_rejects(name: str) -> None:
    with pytest.raises(ValueError, match=r"'C<N>' or 'D<N>' with N >= 3"):
        parse_planar_group(name)


@pytest.mark.parametrize("name", ["C5", "D4"])
def test_goal_orbit(name: str) -> None:
    group = parse_planar_group(name)
    goals = goal_orbit(group, 2.0)
    n = int(name[1:])
    assert goals.shape == (n, 2)
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 2.0)
    # G-invariant set: every ρ(g) permutes the goals.
    for matrix in group.matrices:
        moved = goals @ matrix.T
        distances = np.linalg.norm(moved[:, None] - goals[None], axis=-1)
        assert np.all(distances.min(axis=1) < 1e-9)


def test_generate_data_is_deterministic() -> None:
    group = parse_planar_group("D4")
    task = TaskConfig()
    a = generate_data(32, group, task, np.random.default_rng(5))
    b = generate_data(32, group, task, np.random.default_rng(5))
    c = generate_data(32, group, task, np.random.default_rng(6))
    assert a.X.shape == (32, task.in_horizon, 2)
    assert a.Z.shape == (32, task.cond_horizon, 2)
    assert len(a) == 32
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Z, b.Z)
    assert not np.allclose(a.X, c.X)
    np.testing.assert_allclose(a.goal_probs.sum(axis=1), 1.0)
    # Multi-modal on average: more than one goal is likely for a typical observation.
    assert float(np.mean(a.goal_probs.max(axis=1))) < 0.9


def test_generate_data_rejects_empty() -> None:
    with pytest.raises(ValueError, match="num >= 1"):
        generate_data(0, parse_planar_group("C4"), TaskConfig(), np.random.default_rng(0))


@pytest.mark.parametrize("name", ["D4", "C8"])
def test_generator_steps_are_equivariant(name: str) -> None:
    group = parse_planar_group(name)
    task = TaskConfig()
    rng = np.random.default_rng(0)
    p, v, a = rng.normal(size=(3, 10, 2))
    noise = rng.normal(size=(10, task.in_horizon, 2))
    goals = goal_orbit(group, task.goal_radius)
    goal = goals[rng.integers(len(goals), size=10)]
    history = observed_history(p, v, a, task)
    probs = goal_probabilities(p, v, goals, task)
    future = rollout(p, v, goal, noise, task)
    for m in group.matrices:
        np.testing.assert_allclose(
            observed_history(p @ m.T, v @ m.T, a @ m.T, task), history @ m.T, atol=1e-12
        )
        np.testing.assert_allclose(
            rollout(p @ m.T, v @ m.T, goal @ m.T, noise @ m.T, task), future @ m.T, atol=1e-12
        )
        # ρ(g) sends goal j to goal perm[j]; the probability of goal j given (p, v) is that of
        # perm[j] given ρ(g)(p, v).
        perm = np.argmin(np.linalg.norm((goals @ m.T)[:, None] - goals[None], axis=-1), axis=1)
        np.testing.assert_allclose(
            goal_probabilities(p @ m.T, v @ m.T, goals, task)[:, perm], probs, atol=1e-12
        )


def test_flow_matching_loss_of_a_constant_field() -> None:
    x1, x0 = torch.randn(2, 4, 6, 2)
    z = torch.randn(4, 3, 2)
    t = torch.rand(4)
    c = torch.tensor([0.5, -1.0])
    loss = flow_matching_loss(ConstantField(c), x1, z, x0, t)
    torch.testing.assert_close(loss, torch.mean((c - (x1 - x0)) ** 2))


@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_sampler_integrates_a_constant_field(method: str) -> None:
    noise = torch.randn(3, 5, 2)
    c = torch.tensor([1.0, 2.0])
    samples = sample_trajectories(
        ConstantField(c),
        torch.zeros(3, 2, 2),
        noise,
        steps=7,
        method=method,  # type: ignore[arg-type]
    )
    torch.testing.assert_close(samples, noise + c)


def test_sampler_rejects_bad_options() -> None:
    model = ConstantField(torch.zeros(2))
    with pytest.raises(ValueError, match="steps >= 1"):
        sample_trajectories(model, torch.zeros(1, 2, 2), torch.zeros(1, 3, 2), steps=0)
    with pytest.raises(ValueError, match="'euler' or 'midpoint'"):
        sample_trajectories(model, torch.zeros(1, 2, 2), torch.zeros(1, 3, 2), method="rk4")  # type: ignore[arg-type]


def test_equivariance_errors_tell_equivariant_from_not() -> None:
    group = parse_planar_group("D4")
    matrices = group.matrices_tensor(dtype=torch.float64)
    x, z = torch.randn(2, 4, 5, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    noise = torch.randn(4, 5, 2, dtype=torch.float64)
    equivariant = ToyEquivariantField()
    assert model_equivariance_error(equivariant, matrices, x, t, z) < 1e-12
    error, reference, transformed = sampler_equivariance_error(
        equivariant, matrices, z, noise, steps=3
    )
    assert error < 1e-12
    assert len(transformed) == group.order
    torch.testing.assert_close(transformed[1], transform(matrices[1], reference))
    biased = ConstantField(torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert model_equivariance_error(biased, matrices, x, t, z) > 0.5
    assert sampler_equivariance_error(biased, matrices, z, noise, steps=3)[0] > 0.1


def test_cosine_lr() -> None:
    assert cosine_lr(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, warmup=10, floor=0.1) == pytest.approx(0.1)
    values = [cosine_lr(s, 100, 1.0, warmup=10) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    ("order", "heads", "width"), [(8, 2, 64), (12, 2, 72), (5, 2, 70), (60, 4, 240)]
)
def test_default_width(order: int, heads: int, width: int) -> None:
    assert default_width(order, heads) == width
    assert (default_width(order, heads) // order) % heads == 0


def _config(kind: str, group: str, *args: int, **kwargs: Any) -> RegressorConfig:
    """``model_config`` with the positional order of the tools' former ``ModelConfig``."""
    names = ("in_horizon", "cond_horizon", "embedding_dim", "num_layers", "num_attention_heads")
    sizes: dict[str, Any] = dict(zip(names, args, strict=True))
    return model_config(kind, parse_planar_group(group), **sizes, **kwargs)  # type: ignore[arg-type]


def test_model_config_round_trip() -> None:
    config = _config("equivariant", "D4", 16, 4, 16, 1, 1)
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_built_models_equivariance() -> None:
    group = parse_planar_group("C4")
    common = (6, 2, 8, 1, 1)
    equivariant = _config("equivariant", "C4", *common).build().double().eval()
    baseline = _config("baseline", "C4", *common).build().double().eval()
    k = torch.full((3,), 250.0, dtype=torch.float64)
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    z = torch.randn(3, 2, 2, dtype=torch.float64)
    error = ereps.check_equivariance(
        lambda X, Z: equivariant(X, k, Z), [group.rep, group.rep], group.rep, inputs=[x, z]
    )
    assert error < 1e-10
    matrices = group.matrices_tensor(dtype=torch.float64)
    assert model_equivariance_error(equivariant, matrices, x, k / 1000.0, z) < 1e-10
    assert model_equivariance_error(baseline, matrices, x, k / 1000.0, z) > 1e-3
    with pytest.raises(ValueError, match="'equivariant' or 'baseline'"):
        _config("other", "C4", *common)
    loss = flow_matching_loss(equivariant, x, z, torch.randn_like(x), k / 1000.0)
    assert math.isfinite(loss.detach().item())


def test_unet_config_round_trip_and_models() -> None:
    group = parse_planar_group("D4")
    config = _config(
        "equivariant", "D4", 16, 2, 16, 1, 1, arch="unet", down_dims=(16, 32), n_groups=2
    )
    assert config_from_dict(config.to_dict()) == config
    as_json = {**config.to_dict(), "down_dims": [16, 32]}  # JSON turns tuples into lists
    assert config_from_dict(as_json) == config
    equivariant = config.build().double().eval()
    assert type(equivariant).__name__ == "eConditionalUnet1D"
    baseline = baseline_config(config).build().double().eval()
    assert type(baseline).__name__ == "ConditionalUnet1D"
    k = torch.full((3,), 250.0, dtype=torch.float64)
    x = torch.randn(3, 13, 2, dtype=torch.float64)  # not a multiple of 2^levels
    z = torch.randn(3, 2, 2, dtype=torch.float64)
    matrices = group.matrices_tensor(dtype=torch.float64)
    assert model_equivariance_error(equivariant, matrices, x, k / 1000.0, z) < 1e-10
    assert model_equivariance_error(baseline, matrices, x, k / 1000.0, z) > 1e-3
    default = _config("equivariant", "D4", 16, 2, 16, 1, 1, arch="unet", n_groups=2).build()
    assert default.down_dims == default_unet_dims(8, 2) == (16, 32, 64)
    with pytest.raises(ValueError, match="arch must be one of"):
        _config("equivariant", "D4", 16, 2, 16, 1, 1, arch="mlp")


@pytest.mark.parametrize("pos", ["relative", "rope"])
def test_model_config_pos_encoding(pos: str) -> None:
    old = _config("equivariant", "D4", 16, 4, 16, 1, 1).to_dict()
    del old["pos_encoding"], old["absolute_table"]
    assert config_from_dict(old).pos_encoding == "absolute", "older configs still load"  # type: ignore[union-attr]
    for kind in ("equivariant", "baseline"):
        for table in (False, True):
            config = _config(kind, "D4", 6, 2, 16, 1, 1, pos_encoding=pos, absolute_table=table)
            model = config.build()
            assert getattr(model, "pos_encoding") == pos  # noqa: B009
            assert (getattr(model, "pos_emb") is not None) == bool(table)  # noqa: B009
