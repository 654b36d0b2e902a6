"""Distributed flow-matching training on the demo's planar task: DDP, EMA, checkpoints, resume.

Launch on N processes (gloo on CPU, NCCL on CUDA, one GPU per process)::

    uv run --group tools torchrun --standalone --nproc-per-node 2 tools/train.py --steps 2000
    uv run --group tools torchrun --standalone --nproc-per-node 2 tools/train.py --steps 4000 \
        --resume

or on one process without torchrun (``uv run --group tools python tools/train.py``). Every process
generates the same dataset from ``--seed``; a ``DistributedSampler`` gives each process its share of
every epoch, so the global batch is ``nproc × --batch-size``. The model is wrapped in
``DistributedDataParallel`` (gradients all-reduced, so every process keeps identical parameters);
each process keeps an identical exponential moving average (EMA) of the weights
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``). Rank 0 writes
``<out>/checkpoint.pt`` every ``--save-every`` steps and at the end: plain ``state_dict``s of the
model, the EMA and the optimizer, the step and the model's configuration, loadable with
``torch.load(path, weights_only=True)``; the configuration is the model's own
(``model.config.to_dict()``, representations included), so rebuilding needs nothing else::

    ckpt = torch.load("outputs/train-D4-equivariant/checkpoint.pt", weights_only=True)
    model = eregressors.config_from_dict(ckpt["model_config"]).build()
    model.load_state_dict(ckpt["ema"])  # or ckpt["model"] for the raw weights

``--resume`` continues from that checkpoint with the step count, data order, noise and
learning-rate schedule of an uninterrupted run with the same ``--steps`` and number of processes
(on one CPU process, the resumed run ends bit for bit where the uninterrupted one does). A larger
``--steps`` extends training; the cosine schedule is then stretched to the new total from the
resumed step on. ``--stop-after`` simulates an interruption. A checkpoint of another run (other
``--seed``, ``--batch-size``, ``--train-size`` or number of processes) is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from _flow import (
    PlanarGroup,
    TaskConfig,
    add_arch_arguments,
    cosine_lr,
    count_parameters,
    default_width,
    describe_config,
    flow_matching_loss,
    generate_data,
    model_config,
    model_equivariance_error,
    parse_planar_group,
)
from eregressors import config_from_dict

CHECKPOINT_NAME = "checkpoint.pt"
EVAL_SIZE = 512


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Distributed flow-matching training on the planar task."
    )
    parser.add_argument(
        "--group", default="D4", help="planar group C<N> or D<N>, N >= 3 (default: D4)"
    )
    parser.add_argument(
        "--model",
        choices=("equivariant", "baseline"),
        default="equivariant",
        help="which regressor",
    )
    add_arch_arguments(parser)
    parser.add_argument(
        "--steps", type=int, default=2000, help="total optimizer steps (default: 2000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="batch per process (default: 64)"
    )
    parser.add_argument(
        "--train-size", type=int, default=4096, help="training trajectories (default: 4096)"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    parser.add_argument(
        "--weight-decay", type=float, default=1e-3, help="AdamW weight decay (default: 1e-3)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up steps (default: 5%% of --steps)"
    )
    parser.add_argument(
        "--embedding-dim",
        type=int,
        default=None,
        help="model width (default: the smallest multiple of |G| x heads >= 64)",
    )
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default: 2)")
    parser.add_argument("--heads", type=int, default=2, help="attention heads (default: 2)")
    parser.add_argument(
        "--cond-layers", type=int, default=0, help="conditioning encoder layers (default: 0)"
    )
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="embedding and attention dropout (default: 0)"
    )
    parser.add_argument(
        "--ema-decay", type=float, default=0.999, help="EMA decay per step (default: 0.999)"
    )
    parser.add_argument(
        "--save-every", type=int, default=500, help="checkpoint period in steps (default: 500)"
    )
    parser.add_argument(
        "--log-every", type=int, default=100, help="logging period in steps (default: 100)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder (default: outputs/train-<group>-<model>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="continue from CKPT (default: <out>/checkpoint.pt)",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="save and exit after STEP (an interruption: the schedule still spans --steps)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of data, init, batches and noise (default: 0)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--dump-params",
        default=None,
        metavar="PATH",
        help="each rank writes a digest of its weights to PATH ({rank}: the rank)",
    )
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "train_size", "save_every", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if not 0.0 <= args.ema_decay < 1.0:
        parser.error(f"--ema-decay must be in [0, 1); got {args.ema_decay}")
    return args


def setup_distributed(device_arg: str | None) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` set), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind.startswith("cuda"):
        device = torch.device(
            "cuda", local_rank if kind == "cuda" else torch.device(kind).index or 0
        )
        torch.cuda.set_device(device)
    else:
        device = torch.device(kind)
    if world_size > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, device_id=device if device.type == "cuda" else None
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def log(info: DistInfo, message: str) -> None:
    """Print from rank 0 only."""
    if info.is_main:
        print(message, flush=True)


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a state dict: tensors by name, dtype, shape and bytes; extra state by ``repr``."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{name}:{value!r}".encode())
    return digest.hexdigest()


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A generator for the noise and flow times of one (rank, step): the same after a resume."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batches(
    loader: DataLoader[tuple[torch.Tensor, ...]], sampler: DistributedSampler[Any], start_step: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches in epoch order from global step ``start_step`` (the sampler reshuffles)."""
    per_epoch = len(loader)
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        yield from itertools.islice(loader, offset, None)
        epoch, offset = epoch + 1, 0


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


# Options that fix the data, its order and the noise: a resumed run must use the checkpoint's.
RUN_OPTIONS = ("seed", "batch_size", "train_size")


def check_same_run(
    checkpoint: dict[str, Any], args: argparse.Namespace, world_size: int, path: Path
) -> None:
    """Refuse to resume another run: other data, batches, noise or number of processes.

    ``--steps`` may grow (the schedule is stretched); ``--seed``, ``--batch-size``,
    ``--train-size`` and the process count decide which run the checkpoint belongs to.

    Raises:
        ValueError: Naming every option that differs, with the checkpoint's and the command
            line's values.
    """
    saved = checkpoint.get("args")
    if not isinstance(saved, dict) or "world_size" not in checkpoint:
        raise ValueError(
            f"Checkpoint {path} does not record the options of its run (--seed, --batch-size, "
            "--train-size, process count), so resuming it cannot be checked; start a new run."
        )
    differ = [
        f"--{name.replace('_', '-')} {saved.get(name)!r} (command line: {getattr(args, name)!r})"
        for name in RUN_OPTIONS
        if saved.get(name) != getattr(args, name)
    ]
    if checkpoint["world_size"] != world_size:
        differ.append(
            f"{checkpoint['world_size']!r} processes (command line: {world_size} processes)"
        )
    if differ:
        raise ValueError(
            f"Checkpoint {path} belongs to another run: it was written with "
            + "; ".join(differ)
            + ". Resume with the same options and number of processes, or train without "
            "--resume (another --out)."
        )


def main(argv: list[str] | None = None) -> int:
    """Train; returns the last step."""
    args = parse_args(argv)
    info = setup_distributed(args.device)
    try:
        return train(args, info)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args: argparse.Namespace, info: DistInfo) -> int:
    """The training loop (see the module docstring)."""
    device = info.device
    group = parse_planar_group(args.group)
    suffix = "-unet" if args.arch == "unet" else ""
    default_out = Path("outputs") / f"train-{group.name}-{args.model}{suffix}"
    out = args.out if args.out is not None else default_out
    task = TaskConfig()
    config = model_config(
        args.model,
        group,
        in_horizon=task.in_horizon,
        cond_horizon=task.cond_horizon,
        embedding_dim=default_width(group.order, args.heads)
        if args.embedding_dim is None
        else args.embedding_dim,
        num_layers=args.layers,
        num_attention_heads=args.heads,
        num_cond_layers=args.cond_layers,
        p_drop_emb=args.dropout,
        p_drop_attn=args.dropout,
        arch=args.arch,
        down_dims=tuple(args.down_dims or ()),
        kernel_size=args.kernel_size,
        n_groups=args.n_groups,
    )

    data = generate_data(args.train_size, group, task, np.random.default_rng([args.seed, 0]))
    x_all, z_all = data.tensors()
    dataset = TensorDataset(x_all, z_all)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=args.seed,
        drop_last=True,
    )
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    if len(loader) == 0:
        raise ValueError(
            f"--train-size {args.train_size} is too small for {info.world_size} processes × "
            f"--batch-size {args.batch_size}: each process needs at least one full batch per epoch."
        )

    start_step = 0
    checkpoint_path = out / CHECKPOINT_NAME
    checkpoint: dict[str, Any] | None = None
    if args.resume is not None:
        resume_path = checkpoint_path if args.resume == "auto" else Path(args.resume)
        checkpoint = torch.load(resume_path, map_location=device, weights_only=True)
        check_same_run(checkpoint, args, info.world_size, resume_path)
        saved = config_from_dict(checkpoint["model_config"])
        if saved != config:
            raise ValueError(
                f"Checkpoint {resume_path} was written for model {describe_config(saved)} "
                f"({saved}); the command line asks for {describe_config(config)} ({config}). "
                "Resume with the same model options."
            )
        config = saved  # the model is rebuilt from the checkpoint's configuration

    torch.manual_seed(
        args.seed
    )  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    raw_model = config.build().to(device)
    optimizer = raw_model.configure_optimizers(
        learning_rate=args.lr, weight_decay=args.weight_decay
    )
    ema_fn = get_ema_multi_avg_fn(args.ema_decay)  # type: ignore[no-untyped-call]
    # use_buffers=True averages real buffers too (none today); the models' constants (gather
    # indices, float64 bases) are not buffers, so they are copied, never averaged.
    ema = AveragedModel(raw_model, multi_avg_fn=ema_fn, use_buffers=True)

    if checkpoint is not None:
        raw_model.load_state_dict(checkpoint["model"])
        ema.module.load_state_dict(checkpoint["ema"])
        ema.n_averaged.fill_(int(checkpoint["ema_updates"]))
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_step = int(checkpoint["step"])
        log(info, f"Resumed from {resume_path} at step {start_step}.")

    model: torch.nn.Module = raw_model
    if info.world_size > 1:
        model = DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)
    log(
        info,
        f"Training {type(raw_model).__name__} ({count_parameters(raw_model):,} parameters) on the "
        f"{group.name} task: {info.world_size} process(es) on {device}, batch {args.batch_size} "
        f"per process, {args.train_size} trajectories, steps {start_step} -> {args.steps}; "
        f"checkpoints in {out}",
    )

    def checkpoint_payload(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "model": raw_model.state_dict(),
            "ema": ema.module.state_dict(),
            "ema_updates": int(ema.n_averaged),
            "optimizer": optimizer.state_dict(),
            "model_config": raw_model.config.to_dict(),
            "group": group.name,
            "world_size": info.world_size,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }

    model.train()
    stream = batches(loader, sampler, start_step)
    running = torch.zeros((), device=device)
    running_count = 0
    started = time.perf_counter()
    step = start_step
    last = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    while step < last:
        x1, z = next(stream)
        x1, z = x1.to(device), z.to(device)
        generator = step_generator(args.seed, info.rank, step)
        noise = torch.randn(x1.shape, generator=generator).to(device)
        t = torch.rand((x1.shape[0],), generator=generator).to(device)
        for param_group in optimizer.param_groups:
            param_group["lr"] = cosine_lr(step, args.steps, args.lr, warmup=warmup)
        loss = flow_matching_loss(model, x1, z, noise, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), 1.0)
        optimizer.step()
        ema.update_parameters(raw_model)
        step += 1
        running += loss.detach()
        running_count += 1
        if step % args.log_every == 0 or step == last:
            if info.world_size > 1:
                dist.all_reduce(running)
            mean = float(running) / (running_count * info.world_size)
            rate = (step - start_step) / (time.perf_counter() - started)
            lr = optimizer.param_groups[0]["lr"]
            log(info, f"step {step:>6}/{args.steps}  loss {mean:.4f}  lr {lr:.2e}  {rate:.1f} it/s")
            running.zero_()
            running_count = 0
        if info.is_main and (step % args.save_every == 0 or step == last):
            save_checkpoint(checkpoint_path, checkpoint_payload(step))

    if info.is_main:
        evaluate(ema.module, group, task, args.seed, device, info)
        log(info, f"Checkpoint: {checkpoint_path}")
    if args.dump_params is not None:
        dump = Path(str(args.dump_params).replace("{rank}", str(info.rank)))
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_text(
            json.dumps(
                {
                    "rank": info.rank,
                    "world_size": info.world_size,
                    "step": step,
                    "model": state_digest(raw_model.state_dict()),
                    "ema": state_digest(ema.module.state_dict()),
                }
            )
        )
    if info.world_size > 1:
        dist.barrier()
    return step


def evaluate(
    model: torch.nn.Module,
    group: PlanarGroup,
    task: TaskConfig,
    seed: int,
    device: torch.device,
    info: DistInfo,
) -> None:
    """Held-out loss and equivariance error of the EMA model (rank 0)."""
    held = generate_data(EVAL_SIZE, group, task, np.random.default_rng([seed, 1]))
    x1, z = held.tensors(device=device)
    generator = torch.Generator().manual_seed(seed + 2)
    noise = torch.randn(x1.shape, generator=generator).to(device)
    t = torch.rand((x1.shape[0],), generator=generator).to(device)
    model.eval()
    with torch.no_grad():
        loss = float(flow_matching_loss(model, x1, z, noise, t))
    tb = t[:16, None, None]
    error = model_equivariance_error(
        model,
        group.matrices_tensor(device=device),
        (1 - tb) * noise[:16] + tb * x1[:16],
        t[:16],
        z[:16],
    )
    log(info, f"EMA model: held-out flow-matching loss {loss:.4f}, equivariance error {error:.1e}")
    if not math.isfinite(loss):
        raise RuntimeError("The held-out loss is not finite.")


if __name__ == "__main__":
    main()
