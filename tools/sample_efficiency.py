"""Sample efficiency: equivariant model vs baseline vs baseline with random group augmentation.

Run it with::

    uv run --group tools python tools/sample_efficiency.py --quick      # < 5 min on 2 CPU cores
    uv run --group tools python tools/sample_efficiency.py --out outputs/sample-efficiency

For each task (a planar dihedral one, D4 acting on the plane, and a 3-D octahedral one, the 24
rotations of a cube acting on space), each training-set size and each seed, three flow-matching
velocity fields are trained on the same data, with the same steps, batches, noise, flow times and
width: ``eCondTransformerRegressor``, ``CondTransformerRegressor``, and ``CondTransformerRegressor``
trained with random group augmentation (every sample of every batch transformed by a uniformly
drawn ``ρ(g)``: ``X``, ``Z`` and the noise together, which leaves the flow-matching target
consistent). The held-out flow-matching loss (fixed held-out set, noise and times, the same for
every model and seed) is written to ``results.json``, plotted against the training-set size
(log axes, median over seeds with the min-max band) in ``sample_efficiency.png`` and printed as a
table. Training sets of different sizes are nested prefixes of one draw per seed.

The tasks (see ``_flow.py``): an agent observed at its last ``T_z`` positions heads to one of the
goals on the orbit of one goal under the group (4 for D4 on the plane, the 6 face centres of a cube
for the octahedral group), chosen with probabilities that depend on where it is heading; the
generator uses only rotation-invariant laws, so ``p(ρ(g) X | ρ(g) Z) = p(X | Z)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _flow import (
    FloatArray,
    TaskConfig,
    cosine_lr,
    count_parameters,
    flow_matching_loss,
    goal_probabilities,
    observed_history,
    parse_planar_group,
    rollout,
)
from eregressors import CondTransformerRegressor, GenCondRegressor, eCondTransformerRegressor
from ereps import Representation, rep_matrices

MODELS = ("equivariant", "baseline", "augmented")
LABELS = {
    "equivariant": "eCondTransformerRegressor",
    "baseline": "CondTransformerRegressor",
    "augmented": "CondTransformerRegressor + augmentation",
}


@dataclasses.dataclass(frozen=True)
class Task:
    """A symmetric goal-reaching task in ``dim`` dimensions."""

    name: str
    rep: Representation
    matrices: torch.Tensor  # ρ(g) for every element, (|G|, d, d), float32
    goals: FloatArray  # (K, d)

    @property
    def dim(self) -> int:
        return int(self.rep.size)

    @property
    def order(self) -> int:
        return int(self.matrices.shape[0])


def _orbit(matrices: FloatArray, point: FloatArray) -> FloatArray:
    points = matrices @ point
    unique: list[FloatArray] = []
    for p in points:
        if all(np.linalg.norm(p - q) > 1e-9 for q in unique):
            unique.append(p)
    return np.stack(unique)


def make_task(name: str, radius: float) -> Task:
    """``"D4"`` (planar, any ``C<N>``/``D<N>`` works) or ``"O"`` (octahedral, 3-D)."""
    if name.upper() in ("O", "OCTA"):
        from ereps import octa_group

        rep = octa_group().standard_representation
        label = "O"
    else:
        planar = parse_planar_group(name)
        rep, label = planar.rep, planar.name
    mats64 = rep_matrices(rep).numpy()
    if not np.allclose(mats64 @ mats64.transpose(0, 2, 1), np.eye(rep.size), atol=1e-10):
        raise ValueError(f"the task needs an orthogonal representation; {name} is not.")
    first = np.zeros(rep.size)
    first[0] = radius
    return Task(label, rep, torch.as_tensor(mats64, dtype=torch.float32), _orbit(mats64, first))


def _isotropic_unit(rng: np.random.Generator, n: int, dim: int) -> FloatArray:
    v = rng.normal(size=(n, dim))
    unit: FloatArray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def generate(
    num: int, task: Task, config: TaskConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` trajectories ``(X, Z)`` of shapes ``(num, T_x, d)`` and ``(num, T_z, d)``.

    The current position is uniform in the ball of radius ``start_radius``, the velocity has a
    uniform direction and a speed in ``speed_range``; the history is ``p - k v + k² a / 2`` with an
    isotropic acceleration ``a``; a goal is drawn with probability
    ∝ exp(-|p + lookahead·v - goal|² / temperature); the future follows a damped spring towards
    it with isotropic velocity noise.
    Every law is rotation invariant and the goal set is G-invariant, so the task is G-symmetric.
    """
    d = task.dim
    radius = config.start_radius * rng.uniform(size=(num, 1)) ** (1.0 / d)
    position = radius * _isotropic_unit(rng, num, d)
    speed = rng.uniform(*config.speed_range, size=(num, 1))
    velocity = speed * _isotropic_unit(rng, num, d)
    acceleration = rng.normal(scale=0.004, size=(num, d))
    history = observed_history(position, velocity, acceleration, config)
    probs = goal_probabilities(position, velocity, task.goals, config)
    u = rng.uniform(size=(num, 1))
    goal_index = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), len(task.goals) - 1)
    noise = rng.normal(scale=config.process_noise, size=(num, config.in_horizon, d))
    future = rollout(position, velocity, task.goals[goal_index], noise, config)
    return (
        torch.as_tensor(future, dtype=torch.float32),
        torch.as_tensor(history, dtype=torch.float32),
    )


def build(kind: str, task: Task, args: argparse.Namespace, config: TaskConfig) -> GenCondRegressor:
    """The model of ``kind`` at the shared width, depth, heads and horizons."""
    shared: dict[str, Any] = {
        "num_layers": args.layers,
        "num_attention_heads": args.heads,
        "embedding_dim": args.width,
        "p_drop_emb": 0.0,
        "p_drop_attn": 0.0,
    }
    if kind == "equivariant":
        return eCondTransformerRegressor(
            task.rep, task.rep, task.rep, config.in_horizon, config.cond_horizon, **shared
        )
    return CondTransformerRegressor(
        task.dim, task.dim, task.dim, config.in_horizon, config.cond_horizon, **shared
    )


def held_out_loss(model: torch.nn.Module, held: tuple[torch.Tensor, ...]) -> float:
    x1, z, x0, t = held
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, x1.shape[0], 512):
            end = min(start + 512, x1.shape[0])
            loss = flow_matching_loss(
                model, x1[start:end], z[start:end], x0[start:end], t[start:end]
            )
            total += float(loss) * (end - start)
    model.train()
    return total / x1.shape[0]


def train_one(
    kind: str,
    task: Task,
    x_train: torch.Tensor,
    z_train: torch.Tensor,
    held: tuple[torch.Tensor, ...],
    seed: int,
    args: argparse.Namespace,
    config: TaskConfig,
) -> dict[str, Any]:
    """Train one model; batches, noise, times (and group elements) are fixed by ``seed``."""
    torch.manual_seed(seed)
    model = build(kind, task, args, config)
    optimizer = model.configure_optimizers(learning_rate=args.lr, weight_decay=1e-3)
    # The same stream of batches, noise and times for every model (the augmentation draws its
    # group elements from a separate generator, so it does not shift that stream).
    data_gen = torch.Generator().manual_seed(seed + 1)
    aug_gen = torch.Generator().manual_seed(seed + 2)
    warmup = max(1, args.steps // 20)
    n, start = x_train.shape[0], time.perf_counter()
    model.train()
    for step in range(args.steps):
        index = torch.randint(n, (args.batch_size,), generator=data_gen)
        noise = torch.randn((args.batch_size, *x_train.shape[1:]), generator=data_gen)
        t = torch.rand((args.batch_size,), generator=data_gen)
        x1, z = x_train[index], z_train[index]
        if kind == "augmented":
            g = task.matrices[torch.randint(task.order, (args.batch_size,), generator=aug_gen)]
            x1, z, noise = (torch.einsum("bij,btj->bti", g, v) for v in (x1, z, noise))
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, warmup=warmup)
        loss = flow_matching_loss(model, x1, z, noise, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - start
    return {
        "group": task.name,
        "model": kind,
        "train_size": int(n),
        "seed": seed,
        "held_out_loss": held_out_loss(model, held),
        "parameters": count_parameters(model),
        "train_seconds": seconds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small configuration (< 5 min)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (3; quick: 2)")
    parser.add_argument("--groups", default="D4,O", help="tasks, comma-separated (default: D4,O)")
    parser.add_argument(
        "--sizes",
        default=None,
        help="training-set sizes (default 16,64,256,1024; quick 16,128,1024)",
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per model (1000; quick 80)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=48, help="embedding_dim of all models")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--held-out-size", type=int, default=None, help="(1024; quick 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.seeds is None:
        args.seeds = 2 if quick else 3
    if args.steps is None:
        args.steps = 80 if quick else 1000
    if args.held_out_size is None:
        args.held_out_size = 256 if quick else 1024
    sizes = args.sizes or ("16,128,1024" if quick else "16,64,256,1024")
    args.size_list = sorted({int(s) for s in sizes.split(",")})
    args.group_list = [g.strip() for g in args.groups.split(",") if g.strip()]
    for name in ("seeds", "steps", "batch_size", "width", "layers", "heads", "held_out_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if min(args.size_list) < 1:
        parser.error(f"--sizes must be positive; got {sizes}")
    return args


def _summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown table: median [min, max] held-out loss over seeds, per group and size."""
    lines = [
        "| group | train size | " + " | ".join(LABELS[m] for m in MODELS) + " | aug / equi |",
        "|---|---:|" + "---:|" * (len(MODELS) + 1),
    ]
    groups = sorted({r["group"] for r in results}, key=[r["group"] for r in results].index)
    for group in groups:
        for size in sorted({r["train_size"] for r in results if r["group"] == group}):
            cells, medians = [], {}
            for kind in MODELS:
                values = [
                    r["held_out_loss"]
                    for r in results
                    if (r["group"], r["train_size"], r["model"]) == (group, size, kind)
                ]
                med, lo, hi = _summary(values)
                medians[kind] = med
                cells.append(f"{med:.4f} [{lo:.4f}, {hi:.4f}]")
            ratio = medians["augmented"] / medians["equivariant"]
            lines.append(f"| {group} | {size} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


def save_plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in results}, key=[r["group"] for r in results].index)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    colors = {"equivariant": "tab:blue", "baseline": "tab:red", "augmented": "tab:orange"}
    for ax, group in zip(axes[0], groups, strict=True):
        for kind in MODELS:
            sizes = sorted({r["train_size"] for r in results if r["group"] == group})
            stats = [
                _summary(
                    [
                        r["held_out_loss"]
                        for r in results
                        if (r["group"], r["train_size"], r["model"]) == (group, s, kind)
                    ]
                )
                for s in sizes
            ]
            med = [s[0] for s in stats]
            ax.plot(sizes, med, "o-", color=colors[kind], label=LABELS[kind])
            ax.fill_between(
                sizes, [s[1] for s in stats], [s[2] for s in stats], color=colors[kind], alpha=0.2
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training trajectories")
        ax.set_ylabel("held-out flow-matching loss")
        ax.set_title(f"{group}: median over seeds, band = min-max")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study; returns the JSON document (also written to ``<out>/results.json``)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = TaskConfig()
    tasks = [make_task(name, config.goal_radius) for name in args.group_list]
    for task in tasks:  # checked before any work
        if args.width % (task.order * args.heads) != 0:
            raise ValueError(
                f"--width must be a multiple of |G| x heads = {task.order} x {args.heads} for the "
                f"{task.name} task; got {args.width}."
            )
    default_out = "sample-efficiency-quick" if args.quick else "sample-efficiency"
    out = args.out if args.out is not None else Path("outputs") / default_out
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    results: list[dict[str, Any]] = []
    for task in tasks:
        # One held-out set, noise and times per task, shared by every model, size and seed.
        x_held, z_held = generate(
            args.held_out_size, task, config, np.random.default_rng([args.seed, 99])
        )
        gen = torch.Generator().manual_seed(args.seed + 99)
        held = (
            x_held,
            z_held,
            torch.randn(x_held.shape, generator=gen),
            torch.rand((x_held.shape[0],), generator=gen),
        )
        for seed in range(args.seed, args.seed + args.seeds):
            x_all, z_all = generate(
                max(args.size_list), task, config, np.random.default_rng([seed, 0])
            )
            for size in args.size_list:
                for kind in MODELS:
                    result = train_one(
                        kind, task, x_all[:size], z_all[:size], held, seed, args, config
                    )
                    results.append(result)
                    # Written after every run, so an interrupted study keeps what it measured.
                    (out / "partial_results.json").write_text(json.dumps(results, indent=1))
                    log(
                        f"{task.name} n={size:5d} seed={seed} {kind:>11}: held-out "
                        f"{result['held_out_loss']:.4f} ({result['train_seconds']:.1f} s)"
                    )
    document = {
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("size_list", "group_list")
        }
        | {"sizes": args.size_list, "groups": args.group_list, "task": dataclasses.asdict(config)},
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "wall_seconds": time.perf_counter() - wall,
        },
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(document, indent=1))
    save_plot(results, out / "sample_efficiency.png")
    log(format_table(results))
    log(f"Wall time {time.perf_counter() - wall:.0f} s. Results in {out}")
    return document


if __name__ == "__main__":
    main()
