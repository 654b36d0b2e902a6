"""Shared code of the demo and the training script: a symmetric planar task and flow matching on it.

The task: a planar agent observed at its last ``cond_horizon`` positions ``Z`` moves towards one of
several goals placed on the orbit of one goal under a planar group ``G`` (cyclic ``C_N`` or
dihedral ``D_N``), chosen at random with probabilities that depend on where the agent is heading.
Its next ``in_horizon`` positions ``X`` are therefore a multi-modal function of ``Z``. Every step of
the generator is built from vector operations that commute with rotations and reflections (sums,
Euclidean distances, isotropic Gaussian noise) and the goal set is ``G``-invariant, so the
conditional law is ``G``-equivariant:

    p(ρ(g) X | ρ(g) Z) = p(X | Z)  for all g in G,

where ρ is the 2-D representation of ``G`` on the plane, acting on every token (position) of ``X``
and ``Z``.

Flow matching (linear path): with noise ``x0 ~ N(0, I)``, data ``x1 = X`` and ``t ~ U(0, 1)``,
``x_t = (1 - t) x0 + t x1`` and the velocity field ``v(x_t, t, Z)`` regresses ``x1 - x0``. Samples
come from integrating ``dx/dt = v(x, t, Z)`` from ``t = 0`` (noise) to ``t = 1``. If ``v`` is
equivariant and the noise law is isotropic, the sampler is equivariant: integrating from ``ρ(g) n``
given ``ρ(g) Z`` gives ``ρ(g)`` times the sample from ``n`` given ``Z``.

The regressors take the step as ``opt_step = TIME_SCALE * t``: their sinusoidal step embedding is
designed for diffusion step indices in ``[0, 1000)`` (its fastest frequency is one radian per unit),
so ``t`` in ``[0, 1]`` is stretched to that range.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from eregressors import (
    ConditionalUnet1DConfig,
    CondTransformerRegressorConfig,
    PosEncoding,
    RegressorConfig,
    eConditionalUnet1DConfig,
    eCondTransformerRegressorConfig,
)
from ereps import Group, Representation, cyclic_group, dihedral_group

__all__ = [
    "ARCHS",
    "TIME_SCALE",
    "Arch",
    "FloatArray",
    "ModelKind",
    "PlanarGroup",
    "TaskConfig",
    "TrajectoryData",
    "add_arch_arguments",
    "baseline_config",
    "cosine_lr",
    "count_parameters",
    "default_unet_dims",
    "default_width",
    "describe_config",
    "flow_matching_loss",
    "generate_data",
    "goal_orbit",
    "goal_probabilities",
    "model_config",
    "model_equivariance_error",
    "observed_history",
    "parse_planar_group",
    "rollout",
    "sample_trajectories",
    "sampler_equivariance_error",
    "transform",
]

TIME_SCALE = 1000.0
"""Factor from flow time ``t`` in ``[0, 1]`` to the regressors' ``opt_step`` (module docstring)."""

_GROUP_NAME = re.compile(r"^([CD])(\d+)$")

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class PlanarGroup:
    """A finite group acting on the plane through a faithful 2-D orthogonal representation.

    Attributes:
        name: Short name, ``"C<N>"`` (rotations by multiples of 2π/N) or ``"D<N>"`` (those and N
            reflections).
        group: The escnn group.
        rep: The escnn 2-D representation ρ (frequency-1 irrep), acting on one planar position.
        matrices: ρ(g) for every element of ``group``, in ``group.elements`` order, shape ``(|G|, 2,
            2)``.
        element_labels: A readable label per element (``"rot 90°"``, ``"refl 45°"``), same order.
    """

    name: str
    group: Group
    rep: Representation
    matrices: FloatArray
    element_labels: tuple[str, ...]

    @property
    def order(self) -> int:
        """The number of elements |G|."""
        return int(self.matrices.shape[0])

    def matrices_tensor(
        self, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """ρ(g) for every element as a tensor of shape ``(|G|, 2, 2)``."""
        return torch.as_tensor(self.matrices, dtype=dtype, device=device)


def parse_planar_group(name: str) -> PlanarGroup:
    """Build a planar group from its short name.

    Args:
        name: ``"C<N>"`` for the cyclic group of rotations by multiples of 2π/N, or ``"D<N>"`` for
            the dihedral group (those rotations and N reflections), with N >= 3 so that the
            frequency-1 irrep is the faithful 2-D representation of the group on the plane.

    Returns:
        The group, its 2-D representation and the matrices of all elements.

    Raises:
        ValueError: If the name is not of that form.
    """
    match = _GROUP_NAME.match(name.strip().upper())
    if match is None or int(match.group(2)) < 3:
        raise ValueError(
            "The planar task needs a group 'C<N>' or 'D<N>' with N >= 3 (e.g. 'D4', 'C8', 'D6'); "
            f"got {name!r}. "
            "Smaller groups have no faithful 2-D irreducible representation on the plane."
        )
    kind, order = match.group(1), int(match.group(2))
    group: Group
    rep: Representation
    if kind == "C":
        cyclic = cyclic_group(order)
        group, rep = cyclic, cyclic.irrep(1)
    else:
        dihedral = dihedral_group(order)
        group, rep = dihedral, dihedral.irrep(1, 1)
    elements = list(group.elements)
    matrices = np.stack([np.asarray(rep(g), dtype=np.float64) for g in elements])
    if not np.allclose(matrices @ matrices.transpose(0, 2, 1), np.eye(2)[None], atol=1e-10):
        raise ValueError(
            f"Expected an orthogonal representation for {name}; escnn returned another one."
        )
    labels = tuple(_element_label(m) for m in matrices)
    return PlanarGroup(
        name=f"{kind}{order}", group=group, rep=rep, matrices=matrices, element_labels=labels
    )


def _element_label(matrix: FloatArray) -> str:
    """Describe a 2x2 orthogonal matrix as a rotation angle or a reflection axis, in degrees."""
    if np.linalg.det(matrix) > 0:
        angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])) % 360.0
        return "identity" if abs(angle) < 1e-6 or abs(angle - 360.0) < 1e-6 else f"rot {angle:.0f}°"
    # A reflection x -> [[cos 2a, sin 2a], [sin 2a, -cos 2a]] x fixes the line at angle a.
    axis = (math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])) / 2.0) % 180.0
    return f"refl {axis:.0f}°"


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Parameters of the planar goal-reaching task (lengths in units of the goal radius).

    Attributes:
        in_horizon: Number of predicted future positions T_x (tokens of ``X``).
        cond_horizon: Number of observed past positions T_z (tokens of ``Z``), the last one being
            the current one.
        goal_radius: Distance of the goals from the origin.
        start_radius: The current position is uniform in the disc of this radius.
        speed_range: The current speed is uniform in this range (distance per step).
        lookahead: Goals are chosen with probability ∝ exp(-|p + lookahead·v - goal|² /
            temperature).
        temperature: See ``lookahead``; larger values make the choice of goal more uniform.
        stiffness: Spring constant pulling the agent towards its goal.
        damping: Velocity damping per step.
        process_noise: Standard deviation of the isotropic noise added to the velocity at every
            step.
    """

    in_horizon: int = 16
    cond_horizon: int = 4
    goal_radius: float = 1.0
    start_radius: float = 0.5
    speed_range: tuple[float, float] = (0.02, 0.06)
    lookahead: float = 4.0
    temperature: float = 0.3
    stiffness: float = 0.03
    damping: float = 0.12
    process_noise: float = 0.003


@dataclasses.dataclass(frozen=True)
class TrajectoryData:
    """A set of trajectories of the planar task.

    Attributes:
        X: Future positions, shape ``(n, in_horizon, 2)``.
        Z: Observed past positions (oldest first, current last), shape ``(n, cond_horizon, 2)``.
        goal_index: Index of the goal each trajectory heads to, shape ``(n,)``.
        goal_probs: Probability of each goal given ``Z`` (from which ``goal_index`` was drawn),
            shape ``(n, K)``.
        goals: The goal positions, the orbit of ``(goal_radius, 0)`` under the group, shape ``(K,
            2)``.
    """

    X: FloatArray
    Z: FloatArray
    goal_index: npt.NDArray[np.int64]
    goal_probs: FloatArray
    goals: FloatArray

    def __len__(self) -> int:
        """The number of trajectories."""
        return int(self.X.shape[0])

    def tensors(
        self, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, Z)`` as tensors of shapes ``(n, T_x, 2)`` and ``(n, T_z, 2)``."""
        return (
            torch.as_tensor(self.X, dtype=dtype, device=device),
            torch.as_tensor(self.Z, dtype=dtype, device=device),
        )


def goal_orbit(group: PlanarGroup, radius: float) -> FloatArray:
    """The orbit {ρ(g) (radius, 0) : g in G} without duplicates, sorted by angle: ``(K, 2)``."""
    points = group.matrices @ np.array([radius, 0.0])
    unique: list[FloatArray] = []
    for point in points:
        if all(np.linalg.norm(point - other) > 1e-9 for other in unique):
            unique.append(point)
    unique.sort(key=lambda p: math.atan2(p[1], p[0]) % (2 * math.pi))
    return np.stack(unique)


def observed_history(
    position: FloatArray, velocity: FloatArray, acceleration: FloatArray, config: TaskConfig
) -> FloatArray:
    """Past positions ``p - k v + k² a / 2`` for ``k = T_z - 1, ..., 0``, shape ``(n, T_z, 2)``.

    Equivariant: rotating/reflecting ``p``, ``v`` and ``a`` by ρ(g) transforms every position by
        ρ(g).
    """
    lags = np.arange(config.cond_horizon - 1, -1, -1, dtype=np.float64)[None, :, None]
    history: FloatArray = (
        position[:, None] - lags * velocity[:, None] + 0.5 * lags**2 * acceleration[:, None]
    )
    return history


def goal_probabilities(
    position: FloatArray, velocity: FloatArray, goals: FloatArray, config: TaskConfig
) -> FloatArray:
    """P(goal j | p, v) ∝ exp(-|p + lookahead·v - goal_j|² / temperature), shape ``(n, K)``.

    Equivariant: transforming ``p`` and ``v`` by ρ(g) permutes the columns as ρ(g) permutes the
        goals.
    """
    ahead = position + config.lookahead * velocity
    logits = -((ahead[:, None, :] - goals[None]) ** 2).sum(-1) / config.temperature
    probs: FloatArray = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def rollout(
    position: FloatArray,
    velocity: FloatArray,
    goal: FloatArray,
    noise: FloatArray,
    config: TaskConfig,
) -> FloatArray:
    """Future positions of a damped spring towards ``goal`` with velocity noise, ``(n, T_x, 2)``.

    ``v ← v + stiffness (goal - p) - damping v + noise_t``, ``p ← p + v``. Equivariant in all its
    vector arguments.

    Args:
        position: Current positions, shape ``(n, d)`` (``d = 2`` on the plane).
        velocity: Current velocities, shape ``(n, d)``.
        goal: Goal of each trajectory, shape ``(n, d)``.
        noise: Velocity noise, shape ``(n, T_x, d)``.
        config: Task parameters.

    Returns:
        The positions after each of the ``T_x`` steps.
    """
    # Any dimension d (the planar task uses 2; tools/sample_efficiency.py also a 3-D task).
    future = np.empty((position.shape[0], config.in_horizon, position.shape[1]))
    p, v = position.copy(), velocity.copy()
    for step in range(config.in_horizon):
        v = v + config.stiffness * (goal - p) - config.damping * v + noise[:, step]
        p = p + v
        future[:, step] = p
    return future


def generate_data(
    num: int, group: PlanarGroup, config: TaskConfig, rng: np.random.Generator
) -> TrajectoryData:
    """Draw ``num`` independent trajectories of the planar task.

    The current position ``p`` is uniform in a disc, the current velocity ``v`` has a uniform
    direction and a speed in ``config.speed_range``; the observed history is ``p - k v + k² a / 2``
    for ``k = T_z - 1, ..., 0`` with a small isotropic acceleration ``a``. A goal is drawn with
    probability ∝ exp(-|p + lookahead·v - goal|² / temperature), and the future follows a damped
    spring towards it with isotropic velocity noise. All the laws drawn from are invariant under
    rotations and reflections about the origin and the goal set is ``G``-invariant, so the joint law
    of ``(X, Z)`` is ``G``-invariant. Deterministic given ``rng``.

    Args:
        num: Number of trajectories.
        group: The planar group whose orbit of a goal gives the goals.
        config: Task parameters.
        rng: Source of randomness.

    Returns:
        The trajectories, with ``X`` of shape ``(num, in_horizon, 2)`` and ``Z`` of shape ``(num,
        cond_horizon, 2)``.
    """
    if num < 1:
        raise ValueError(f"generate_data needs num >= 1; got {num}.")
    goals = goal_orbit(group, config.goal_radius)
    radius = config.start_radius * np.sqrt(rng.uniform(size=num))
    angle = rng.uniform(0.0, 2.0 * math.pi, size=num)
    position = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    speed = rng.uniform(*config.speed_range, size=num)
    heading = rng.uniform(0.0, 2.0 * math.pi, size=num)
    velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)
    acceleration = rng.normal(scale=0.004, size=(num, 2))
    history = observed_history(position, velocity, acceleration, config)
    probs = goal_probabilities(position, velocity, goals, config)
    u = rng.uniform(size=(num, 1))
    goal_index = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), len(goals) - 1).astype(np.int64)
    noise = rng.normal(scale=config.process_noise, size=(num, config.in_horizon, 2))
    future = rollout(position, velocity, goals[goal_index], noise, config)
    return TrajectoryData(X=future, Z=history, goal_index=goal_index, goal_probs=probs, goals=goals)


def transform(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply ρ(g) to every planar token: ``(..., T, 2) -> (..., T, 2)`` with ``y = x ρ(g)ᵀ``.

    Args:
        matrix: ρ(g), shape ``(2, 2)`` (or ``(d, d)`` for tokens of size d).
        x: Tokens, shape ``(..., d)``.

    Returns:
        The transformed tokens, same shape as ``x``.
    """
    return x @ matrix.to(x.dtype).T


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

ModelKind = Literal["equivariant", "baseline"]
Arch = Literal["transformer", "unet"]
ARCHS: tuple[str, ...] = ("transformer", "unet")


def add_arch_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options of the architecture shared by the demo and the training script."""
    parser.add_argument(
        "--arch",
        choices=ARCHS,
        default="transformer",
        help="transformer regressors or temporal U-Nets (default: transformer)",
    )
    parser.add_argument(
        "--down-dims",
        type=int,
        nargs="+",
        default=None,
        help="U-Net widths (default: w, 2w, 4w with w the least multiple of |G| x n_groups >= 16)",
    )
    parser.add_argument("--kernel-size", type=int, default=5, help="U-Net kernel (default: 5)")
    parser.add_argument("--n-groups", type=int, default=2, help="U-Net norm groups (default: 2)")


def model_config(
    kind: ModelKind,
    group: PlanarGroup,
    *,
    in_horizon: int,
    cond_horizon: int,
    embedding_dim: int,
    num_layers: int,
    num_attention_heads: int,
    num_cond_layers: int = 0,
    p_drop_emb: float = 0.0,
    p_drop_attn: float = 0.0,
    arch: Arch = "transformer",
    down_dims: tuple[int, ...] = (),
    kernel_size: int = 5,
    n_groups: int = 2,
    diffusion_step_embed_dim: int = 64,
    cond_predict_scale: bool = True,
    pos_encoding: PosEncoding = "absolute",
    absolute_table: bool = True,
) -> RegressorConfig:
    """The library configuration of the planar task's velocity network ``v(X, k, Z)``.

    The tools' options in one place, so that the equivariant model and its baseline get the same
    width, depth and heads; the result is the model's own configuration (``model.config``), the
    one checkpoints store (``config.to_dict()``) and rebuild from
    (``eregressors.config_from_dict(d).build()``).

    Args:
        kind: ``"equivariant"`` (the planar ρ on input, conditioning and output tokens) or
            ``"baseline"`` (2-D tokens).
        group: The planar group.
        in_horizon: T_x.
        cond_horizon: T_z.
        embedding_dim: Width of the transformers (a multiple of |G| for the equivariant one).
        num_layers: Decoder layers.
        num_attention_heads: Attention heads.
        num_cond_layers: Encoder layers over the conditioning tokens (0: an MLP).
        p_drop_emb: Dropout on embeddings.
        p_drop_attn: Dropout in attention blocks.
        arch: ``"transformer"`` (the fields above) or ``"unet"`` (the fields below;
            ``embedding_dim`` and the attention fields are then unused).
        down_dims: U-Net channel widths; ``()`` for :func:`default_unet_dims`.
        kernel_size: U-Net kernel size (odd).
        n_groups: U-Net group norm groups (they must split whole regular copies).
        diffusion_step_embed_dim: U-Net step embedding width (even).
        cond_predict_scale: Whether the U-Net's FiLM predicts a scale as well as a bias.
        pos_encoding: ``"absolute"`` (learned tables), ``"relative"`` or ``"rope"``.
        absolute_table: Whether ``"relative"``/``"rope"`` keep the learned tables too.

    Returns:
        An ``eCondTransformerRegressorConfig``, ``CondTransformerRegressorConfig``,
        ``eConditionalUnet1DConfig`` or ``ConditionalUnet1DConfig``.

    Raises:
        ValueError: If ``kind`` or ``arch`` is unknown (and the configurations' own errors).
    """
    if kind not in ("equivariant", "baseline"):
        raise ValueError(f"kind must be 'equivariant' or 'baseline'; got {kind!r}.")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}; got {arch!r}.")
    rep = group.rep
    if arch == "unet":
        dims = down_dims or default_unet_dims(group.order, n_groups)
        unet: dict[str, Any] = dict(
            cond_horizon=cond_horizon,
            diffusion_step_embed_dim=diffusion_step_embed_dim,
            down_dims=tuple(dims),
            kernel_size=kernel_size,
            n_groups=n_groups,
            cond_predict_scale=cond_predict_scale,
        )
        if kind == "equivariant":
            return eConditionalUnet1DConfig(in_rep=rep, cond_rep=rep, out_rep=rep, **unet)
        return ConditionalUnet1DConfig(in_dim=2, cond_dim=2, out_dim=2, **unet)
    shared: dict[str, Any] = dict(
        in_horizon=in_horizon,
        cond_horizon=cond_horizon,
        num_layers=num_layers,
        num_attention_heads=num_attention_heads,
        embedding_dim=embedding_dim,
        p_drop_emb=p_drop_emb,
        p_drop_attn=p_drop_attn,
        num_cond_layers=num_cond_layers,
        pos_encoding=pos_encoding,
        absolute_table=absolute_table,
    )
    if kind == "equivariant":
        return eCondTransformerRegressorConfig(in_rep=rep, cond_rep=rep, out_rep=rep, **shared)
    return CondTransformerRegressorConfig(in_dim=2, cond_dim=2, out_dim=2, **shared)


def baseline_config(config: RegressorConfig) -> RegressorConfig:
    """The unconstrained twin of ``config``: the same architecture on the representations' sizes.

    A baseline configuration is returned as it is; the equivariant ones lose only what the
    baselines do not have (``norm_module``, ``init_scheme``, ``step_emb_dim``).
    """
    twin: type[CondTransformerRegressorConfig | ConditionalUnet1DConfig]
    if isinstance(config, eCondTransformerRegressorConfig):
        twin = CondTransformerRegressorConfig
    elif isinstance(config, eConditionalUnet1DConfig):
        twin = ConditionalUnet1DConfig
    else:
        return config
    sizes = {"in_dim": config.in_rep, "cond_dim": config.cond_rep, "out_dim": config.out_rep}
    kept = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(twin) if f.name not in sizes
    }
    # out_rep None (in_rep's) gives out_dim None (in_dim's).
    dims: dict[str, Any] = {k: None if rep is None else rep.size for k, rep in sizes.items()}
    return twin(**dims, **kept)


def describe_config(config: RegressorConfig) -> str:
    """One line for logs: the model, and its width, depth and heads (or the U-Net's widths)."""
    name = config.model_name
    if isinstance(config, (eConditionalUnet1DConfig, ConditionalUnet1DConfig)):
        return f"{name}, down_dims {list(config.down_dims)}"
    return (
        f"{name}, width {config.embedding_dim}, {config.num_layers} layers, "
        f"{config.num_attention_heads} heads"
    )


def default_unet_dims(
    order: int, n_groups: int, target: int = 16, levels: int = 3
) -> tuple[int, ...]:
    """U-Net widths ``(w, 2w, 4w, ...)``, ``w`` the least multiple of ``order × n_groups`` ≥ target.

    Valid for both U-Nets: whole regular copies at every level, as many as a multiple of the group
    norm's groups (e.g. (16, 32, 64) for D4 or C8 with 2 groups, (24, 48, 96) for D6).
    """
    unit = order * n_groups
    width = unit * math.ceil(target / unit)
    return tuple(width << level for level in range(levels))


def default_width(order: int, heads: int, target: int = 64) -> int:
    """The smallest multiple of ``order × heads`` that is >= ``target``.

    A valid ``embedding_dim`` for both models: whole regular copies of the group, as many as a
    multiple of the head count (e.g. 64 for D4 or C8 with 2 heads, 72 for D6).
    """
    unit = order * heads
    return unit * math.ceil(target / unit)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cosine_lr(step: int, total: int, base: float, *, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor * base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------------------------------
# Flow matching
# --------------------------------------------------------------------------------------------------


def flow_matching_loss(
    model: torch.nn.Module,
    x1: torch.Tensor,
    z: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error of the velocity on the linear path, E |v(x_t, t, Z) - (x1 - x0)|².

    Args:
        model: The velocity network.
        x1: Data ``X``, shape ``(B, T_x, 2)``.
        z: Conditioning ``Z``, shape ``(B, T_z, 2)``.
        x0: Noise, shape ``(B, T_x, 2)``.
        t: Flow times in ``[0, 1]``, shape ``(B,)``.

    Returns:
        The loss, a 0-d tensor (mean over batch, tokens and coordinates).
    """
    tb = t.to(x1.dtype)[:, None, None]
    xt = (1.0 - tb) * x0 + tb * x1
    prediction = model(xt, t * TIME_SCALE, z)
    return torch.mean((prediction - (x1 - x0)) ** 2)


def sample_trajectories(
    model: torch.nn.Module,
    z: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int = 10,
    method: Literal["euler", "midpoint"] = "midpoint",
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t, Z) from ``x(0) = noise`` to ``t = 1`` on a uniform grid.

    Args:
        model: The velocity network (put it in eval mode first).
        z: Conditioning, shape ``(B, T_z, 2)``.
        noise: Initial points, shape ``(B, T_x, 2)``.
        steps: Number of integration steps (the midpoint rule evaluates the model twice per step).
        method: ``"euler"`` or ``"midpoint"``.

    Returns:
        Samples of ``X``, shape ``(B, T_x, 2)``.
    """
    if steps < 1:
        raise ValueError(f"sample_trajectories needs steps >= 1; got {steps}.")
    x = noise
    dt = 1.0 / steps
    batch = noise.shape[0]
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((batch,), i * dt, dtype=noise.dtype, device=noise.device)
            v = model(x, t * TIME_SCALE, z)
            if method == "euler":
                x = x + dt * v
            elif method == "midpoint":
                v_mid = model(x + 0.5 * dt * v, (t + 0.5 * dt) * TIME_SCALE, z)
                x = x + dt * v_mid
            else:
                raise ValueError(f"method must be 'euler' or 'midpoint'; got {method!r}.")
    return x


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / max(|b|, tiny), with Frobenius norms over everything."""
    denominator = max(float(torch.linalg.vector_norm(b)), 1e-30)
    return float(torch.linalg.vector_norm(a - b)) / denominator


def model_equivariance_error(
    model: torch.nn.Module,
    matrices: torch.Tensor,
    x: torch.Tensor,
    t: torch.Tensor,
    z: torch.Tensor,
) -> float:
    """max over g of |v(ρ(g)X, t, ρ(g)Z) - ρ(g) v(X, t, Z)| / |v(X, t, Z)| (0 if v is equivariant).

    Args:
        model: The velocity network (in eval mode, so that dropout is off).
        matrices: ρ(g) for the elements to test, shape ``(n, 2, 2)``.
        x: Inputs ``X``, shape ``(B, T_x, 2)``.
        t: Flow times, shape ``(B,)``.
        z: Conditioning ``Z``, shape ``(B, T_z, 2)``.

    Returns:
        The largest relative error over the elements.
    """
    with torch.no_grad():
        reference = model(x, t * TIME_SCALE, z)
        errors = [
            _relative_error(
                model(transform(m, x), t * TIME_SCALE, transform(m, z)), transform(m, reference)
            )
            for m in matrices
        ]
    return max(errors)


def sampler_equivariance_error(
    model: torch.nn.Module,
    matrices: torch.Tensor,
    z: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int = 10,
    method: Literal["euler", "midpoint"] = "midpoint",
) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    """max over g of |S(ρ(g)n, ρ(g)Z) - ρ(g) S(n, Z)| / |S(n, Z)| for the ODE sampler S.

    Args:
        model: The velocity network (in eval mode).
        matrices: ρ(g) for the elements to test, shape ``(n, 2, 2)``.
        z: Conditioning, shape ``(B, T_z, 2)``.
        noise: Initial points, shape ``(B, T_x, 2)``.
        steps: Integration steps.
        method: Integration rule.

    Returns:
        The largest relative error, the samples ``S(n, Z)`` of shape ``(B, T_x, 2)``, and per
        element the samples ``S(ρ(g)n, ρ(g)Z)`` (same shape).
    """
    reference = sample_trajectories(model, z, noise, steps=steps, method=method)
    transformed = [
        sample_trajectories(model, transform(m, z), transform(m, noise), steps=steps, method=method)
        for m in matrices
    ]
    error = max(
        _relative_error(s, transform(m, reference))
        for m, s in zip(matrices, transformed, strict=True)
    )
    return error, reference, transformed
