"""Demo: an equivariant flow-matching policy beside its unconstrained baseline on a symmetric task.

Run it with::

    uv run --group tools python tools/demo.py  # D4; at most 3 minutes on a 2-core CPU
    uv run --group tools python tools/demo.py --group C8 --steps 2000 --device cuda
    uv run --group tools python tools/demo.py --arch unet  # the temporal U-Nets instead

A planar agent observed at its last few positions ``Z`` heads to one of several goals placed
symmetrically (the orbit of one goal under the group), so its future ``X`` is multi-modal (see
``_flow.py`` for the generator). Both ``eCondTransformerRegressor`` and ``CondTransformerRegressor``
(same width, depth, heads and horizons; with ``--arch unet``: ``eConditionalUnet1D`` and
``ConditionalUnet1D`` with the same channel widths) are trained as flow-matching velocity fields
on the same small training set with the same batches, noise and flow times. The demo then prints,
for both models: the flow-matching loss on a held-out set (fixed noise and times), the equivariance
error of the network and of the whole ODE sampler, the parameter count and the time per training
step. It
samples trajectories for one held-out observation and for its rotated and reflected copies and saves
a figure with the learning curves and the samples, plus the numbers as JSON, to the output folder
named on the last line. Same seed, same numbers (on the same machine, device and thread count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from _flow import (
    FloatArray,
    PlanarGroup,
    TaskConfig,
    TrajectoryData,
    add_arch_arguments,
    cosine_lr,
    count_parameters,
    default_unet_dims,
    default_width,
    flow_matching_loss,
    generate_data,
    model_config,
    model_equivariance_error,
    parse_planar_group,
    sampler_equivariance_error,
    transform,
)
from eregressors import GenCondRegressor


@dataclasses.dataclass
class RunResult:
    """What one model's training produced."""

    kind: str
    parameters: int
    train_steps: list[int]
    train_loss: list[float]
    eval_steps: list[int]
    eval_loss: list[float]
    ms_per_step: float
    held_out_loss: float = math.nan
    model_equivariance_error: float = math.nan
    sampler_equivariance_error: float = math.nan
    model_name: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--group", default="D4", help="planar group: C<N> or D<N>, N >= 3 (default: D4)"
    )
    parser.add_argument(
        "--steps", type=int, default=1000, help="training steps per model (default: 1000)"
    )
    parser.add_argument(
        "--train-size", type=int, default=256, help="training trajectories (default: 256)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of data, initialization and batches (default: 0)"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: outputs/demo-<group>-<seed>)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument(
        "--embedding-dim",
        type=int,
        default=None,
        help="width of both models (default: the smallest multiple of |G| x heads >= 64, e.g. 64 "
        "for D4, 72 for D6)",
    )
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default: 2)")
    parser.add_argument("--heads", type=int, default=2, help="attention heads (default: 2)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    parser.add_argument(
        "--weight-decay", type=float, default=1e-3, help="AdamW weight decay (default: 1e-3)"
    )
    parser.add_argument(
        "--held-out-size",
        type=int,
        default=1024,
        help="held-out trajectories, each with fixed noise and time (default: 1024)",
    )
    parser.add_argument(
        "--eval-every", type=int, default=100, help="held-out evaluation period (default: 100)"
    )
    parser.add_argument(
        "--ode-steps", type=int, default=10, help="midpoint steps of the sampler (default: 10)"
    )
    parser.add_argument(
        "--samples", type=int, default=24, help="trajectories drawn per panel (default: 24)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, 0 for torch's default (default: 1, the fastest for "
        "this small model on a busy or 2-core machine)",
    )
    parser.add_argument(
        "--pos-encoding",
        choices=["absolute", "relative", "rope"],
        default="absolute",
        help="positional encoding of both models (default: absolute)",
    )
    parser.add_argument(
        "--no-absolute-table",
        action="store_true",
        help="with --pos-encoding relative/rope: drop the learned tables (positions only in the "
        "attentions)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_arch_arguments(parser)
    args = parser.parse_args(argv)
    for name in (
        "steps",
        "train_size",
        "held_out_size",
        "batch_size",
        "eval_every",
        "ode_steps",
        "samples",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    return args


def held_out_loss(
    model: torch.nn.Module,
    x1: torch.Tensor,
    z: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    chunk: int = 256,
) -> float:
    """Flow-matching loss on the held-out set with its fixed noise ``x0`` and times ``t``."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, x1.shape[0], chunk):
            end = min(start + chunk, x1.shape[0])
            loss = flow_matching_loss(
                model, x1[start:end], z[start:end], x0[start:end], t[start:end]
            )
            total += float(loss) * (end - start)
    model.train(was_training)
    return total / x1.shape[0]


def make_optimizer(
    model: GenCondRegressor, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW through the model's ``configure_optimizers`` (decay on weights only)."""
    return model.configure_optimizers(
        learning_rate=lr, weight_decay=weight_decay, betas=(0.9, 0.95)
    )


def train(
    model: GenCondRegressor,
    kind: str,
    train_set: tuple[torch.Tensor, torch.Tensor],
    held_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
) -> RunResult:
    """Train one model; batches, noise and times come from a generator seeded by ``args.seed``."""
    device = torch.device(args.device)
    x_train, z_train = train_set
    generator = torch.Generator().manual_seed(args.seed + 1)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    warmup = max(1, args.steps // 20)
    result = RunResult(kind, count_parameters(model), [], [], [], [], math.nan)
    train_seconds = 0.0
    model.train()
    bar = tqdm(
        range(args.steps),
        desc=f"{kind:>11}",
        disable=args.no_progress,
        leave=True,
        dynamic_ncols=True,
    )
    for step in bar:
        index = torch.randint(x_train.shape[0], (args.batch_size,), generator=generator)
        noise = torch.randn((args.batch_size, *x_train.shape[1:]), generator=generator)
        t = torch.rand((args.batch_size,), generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, warmup=warmup)
        loss = flow_matching_loss(
            model, x_train[index], z_train[index], noise.to(device), t.to(device)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.detach().item()  # synchronizes
        train_seconds += time.perf_counter() - start
        result.train_steps.append(step + 1)
        result.train_loss.append(value)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            result.eval_steps.append(step + 1)
            result.eval_loss.append(held_out_loss(model, *held_out))
            bar.set_postfix(
                train=f"{np.mean(result.train_loss[-50:]):.4f}",
                held_out=f"{result.eval_loss[-1]:.4f}",
            )
    bar.close()
    result.ms_per_step = 1000.0 * train_seconds / args.steps
    result.held_out_loss = result.eval_loss[-1]
    return result


def pick_observation(data: TrajectoryData) -> int:
    """A held-out observation with a clearly multi-modal future (highest goal entropy among 64)."""
    probs = data.goal_probs[:64]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1)
    return int(np.argmax(entropy))


def figure_elements(group: PlanarGroup) -> list[int]:
    """Four elements to show: identity, the smallest rotation, two reflections or rotations."""
    labels = group.element_labels
    rotations = [i for i, label in enumerate(labels) if label.startswith("rot")]
    reflections = [i for i, label in enumerate(labels) if label.startswith("refl")]
    chosen = [labels.index("identity"), rotations[0]]
    extra = reflections[:2] if reflections else rotations[1:3]
    return (chosen + extra)[:4]


def save_figure(
    path: Path,
    results: list[RunResult],
    samples: dict[str, list[FloatArray]],
    references: dict[str, list[FloatArray]],
    observations: list[FloatArray],
    goals: list[FloatArray],
    titles: list[str],
    group_name: str,
) -> None:
    """Learning curves (left); samples and goals per model (row) and group element (column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(titles)
    fig = plt.figure(figsize=(4.2 + 3.0 * columns, 6.4), constrained_layout=True)
    grid = fig.add_gridspec(2, columns + 1, width_ratios=[1.5] + [1.0] * columns)
    colors = {"equivariant": "tab:blue", "baseline": "tab:orange"}

    curve = fig.add_subplot(grid[:, 0])
    for result in results:
        color = colors.get(result.kind, "gray")
        steps = np.asarray(result.train_steps)
        loss = np.asarray(result.train_loss)
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        curve.plot(
            steps[window - 1 :],
            smooth,
            color=color,
            alpha=0.45,
            lw=1.0,
            label=f"{result.kind} (train)",
        )
        curve.plot(
            result.eval_steps,
            result.eval_loss,
            color=color,
            lw=2.0,
            marker="o",
            ms=3,
            label=f"{result.kind} (held-out)",
        )
    curve.set_yscale("log")
    curve.set_xlabel("training step")
    curve.set_ylabel("flow-matching loss")
    curve.set_title(f"learning curves ({group_name})")
    curve.legend(fontsize=8)
    curve.grid(alpha=0.3)

    for row, kind in enumerate(("equivariant", "baseline")):
        for col in range(columns):
            ax = fig.add_subplot(grid[row, col + 1])
            for trajectory in references[kind][col]:
                ax.plot(
                    trajectory[:, 0], trajectory[:, 1], color="gray", lw=1.2, ls="--", alpha=0.5
                )
            for trajectory in samples[kind][col]:
                ax.plot(trajectory[:, 0], trajectory[:, 1], color=colors[kind], lw=0.9, alpha=0.8)
            obs = observations[col]
            ax.plot(obs[:, 0], obs[:, 1], color="black", marker=".", lw=2.0)
            ax.scatter(
                goals[col][:, 0], goals[col][:, 1], marker="*", s=90, color="crimson", zorder=5
            )
            ax.set_xlim(-1.35, 1.35)
            ax.set_ylim(-1.35, 1.35)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{kind}: {titles[col]}", fontsize=9)
    fig.suptitle(
        "Samples for one observation (black) and its transformed copies. Dashed: the identity "
        "column's samples transformed by the same element (what an equivariant sampler draws)",
        fontsize=9,
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(results: list[RunResult]) -> str:
    """Markdown table of the results."""
    rows = [
        "| model | parameters | held-out FM loss | equiv. error (model) | equiv. error (sampler) "
        "| ms / step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"equivariant": "eCondTransformerRegressor", "baseline": "CondTransformerRegressor"}
    for r in results:
        rows.append(
            f"| {r.model_name or names.get(r.kind, r.kind)} | {r.parameters:,} | "
            f"{r.held_out_loss:.4f} | "
            f"{r.model_equivariance_error:.1e} | {r.sampler_equivariance_error:.1e} | "
            f"{r.ms_per_step:.1f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> Path:
    """Run the demo; returns the output folder."""
    args = parse_args(argv)
    wall_start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    group = parse_planar_group(args.group)
    out = args.out if args.out is not None else Path("outputs") / f"demo-{group.name}-{args.seed}"
    if args.embedding_dim is None:
        args.embedding_dim = default_width(group.order, args.heads)
    out.mkdir(parents=True, exist_ok=True)
    task = TaskConfig()

    # Data: a small training set and a fixed held-out set with fixed noise and flow times.
    train_data = generate_data(args.train_size, group, task, np.random.default_rng([args.seed, 0]))
    held_data = generate_data(
        args.held_out_size, group, task, np.random.default_rng([args.seed, 1])
    )
    held_generator = torch.Generator().manual_seed(args.seed + 2)
    held_noise = torch.randn((args.held_out_size, task.in_horizon, 2), generator=held_generator)
    held_t = torch.rand((args.held_out_size,), generator=held_generator)
    x_train, z_train = train_data.tensors(device=device)
    x_held, z_held = held_data.tensors(device=device)
    held_out = (x_held, z_held, held_noise.to(device), held_t.to(device))

    # What is tested and drawn after training.
    matrices = group.matrices_tensor(device=device)
    check_generator = torch.Generator().manual_seed(args.seed + 3)
    checked = min(16, args.held_out_size)
    check_index = torch.arange(checked)
    check_t = torch.rand((checked,), generator=check_generator).to(device)
    check_noise = torch.randn((checked, task.in_horizon, 2), generator=check_generator).to(device)
    check_x = (1.0 - check_t[:, None, None]) * check_noise + check_t[:, None, None] * x_held[
        check_index
    ]
    observation = pick_observation(held_data)
    shown = figure_elements(group)
    figure_noise = torch.randn((args.samples, task.in_horizon, 2), generator=check_generator).to(
        device
    )
    figure_z = z_held[observation : observation + 1].expand(args.samples, -1, -1)

    if args.arch == "unet":
        dims = tuple(args.down_dims or default_unet_dims(group.order, args.n_groups))
        architecture = f"U-Nets of widths {list(dims)}, kernel {args.kernel_size}"
    else:
        architecture = f"width {args.embedding_dim}, {args.layers} layers, {args.heads} heads"
    print(
        f"Planar {group.name} task (|G| = {group.order}, {len(train_data.goals)} goals): "
        f"{args.train_size} training trajectories, {args.held_out_size} held out, "
        f"T_x = {task.in_horizon}, T_z = {task.cond_horizon}; {architecture}, {args.steps} steps "
        f"of batch {args.batch_size} on {device} ({torch.get_num_threads()} threads).",
        flush=True,
    )
    results: list[RunResult] = []
    samples: dict[str, list[FloatArray]] = {}
    references: dict[str, list[FloatArray]] = {}
    for kind in ("equivariant", "baseline"):
        torch.manual_seed(args.seed)
        config = model_config(
            kind,
            group,
            in_horizon=task.in_horizon,
            cond_horizon=task.cond_horizon,
            embedding_dim=args.embedding_dim,
            num_layers=args.layers,
            num_attention_heads=args.heads,
            arch=args.arch,
            down_dims=tuple(args.down_dims or ()),
            kernel_size=args.kernel_size,
            n_groups=args.n_groups,
            pos_encoding=args.pos_encoding,
            absolute_table=not args.no_absolute_table,
        )
        model = config.build().to(device)
        result = train(model, kind, (x_train, z_train), held_out, args)
        result.model_name = type(model).__name__
        model.eval()
        result.model_equivariance_error = model_equivariance_error(
            model, matrices, check_x, check_t, z_held[check_index]
        )
        error, _, _ = sampler_equivariance_error(
            model, matrices, z_held[check_index], check_noise, steps=args.ode_steps
        )
        result.sampler_equivariance_error = error
        _, reference, transformed = sampler_equivariance_error(
            model, matrices[shown], figure_z, figure_noise, steps=args.ode_steps
        )
        samples[kind] = [s.cpu().numpy() for s in transformed]
        references[kind] = [transform(matrices[i], reference).cpu().numpy() for i in shown]
        results.append(result)

    observations = [transform(matrices[i], z_held[observation]).cpu().numpy() for i in shown]
    goals = [train_data.goals @ group.matrices[i].T for i in shown]
    save_figure(
        out / "demo.png",
        results,
        samples,
        references,
        observations,
        goals,
        [group.element_labels[i] for i in shown],
        group.name,
    )
    wall = time.perf_counter() - wall_start
    metrics: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "task": dataclasses.asdict(task),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds": wall,
        "results": [dataclasses.asdict(r) for r in results],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    print()
    print(format_table(results))
    equivariant, baseline = results
    verdict = "lower" if equivariant.held_out_loss < baseline.held_out_loss else "NOT lower"
    print(
        f"\nHeld-out loss of the equivariant model is {verdict} than the baseline's "
        f"({equivariant.held_out_loss:.4f} vs {baseline.held_out_loss:.4f}); "
        f"the figure shows samples for {', '.join(group.element_labels[i] for i in shown)}. "
        f"Wall time {wall:.0f} s."
    )
    print(f"Figure and metrics saved in {out}")
    return out


if __name__ == "__main__":
    main()
