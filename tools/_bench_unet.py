"""The U-Net suite of ``tools/bench.py``: ``eConditionalUnet1D`` against ``ConditionalUnet1D``.

Both models get the same channel widths (``--unet-dims``), kernel size, step embedding, group
norm groups and FiLM mode; the tokens are those of the regressor suite (two copies of the group's
standard representation for ``X`` and the output, four for each of the ``cond_horizon`` tokens of
``Z``; the baseline sees the same sizes). ``n_groups`` is the largest divisor of the number of
regular copies of every width that is at most ``--unet-groups`` (group norm groups must hold whole
copies), the same for both models.

Rows: a training step (``zero_grad`` + forward + MSE + backward + AdamW step), an eval forward of
the models themselves (``model.eval()`` under ``torch.no_grad()``; the equivariant one synthesizes
its kernels on every call), and an eval forward of their ``export()`` (plain torch modules with the
dense weights: the deployment path), all four eval contenders interleaved in the same rounds.
Batch 64 and batch 1 (robot inference); ``conv MMAC`` is the multiply-adds of the convolutions of
one sample's forward (the same dense network for both models). Kept in its own file so that
``bench.py`` only gains a few lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

import ereps
from _timing import (
    Timing,
    interleaved_timings,
    ratio_text,
    regressor_eval,
    regressor_step,
    trainable_count,
)
from eregressors import ConditionalUnet1D, GenCondRegressor, eConditionalUnet1D
from ereps import Group, Representation

__all__ = ["UnetRow", "add_unet_arguments", "bench_unets", "unet_table"]


@dataclasses.dataclass
class UnetRow:
    """One line of the U-Net table."""

    group: str
    order: int
    dims: tuple[int, ...]
    n_groups: int
    params_e: int
    params_base: int
    train_e: Timing
    train_base: Timing
    eval_e: Timing
    eval_base: Timing
    export_e: Timing
    export_base: Timing
    macs: int


def add_unet_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options (``--unet-*``)."""
    parser.add_argument(
        "--unet-dims",
        type=int,
        nargs="+",
        default=[120, 240, 480],
        help="channel widths of both U-Nets, multiples of every |G| (default: 120 240 480)",
    )
    parser.add_argument(
        "--unet-groups", type=int, default=8, help="upper bound of n_groups (default: 8)"
    )
    parser.add_argument("--unet-kernel", type=int, default=5, help="kernel size (default: 5)")
    parser.add_argument(
        "--unet-step-dim", type=int, default=256, help="diffusion_step_embed_dim (default: 256)"
    )
    parser.add_argument("--unet-horizon", type=int, default=16, help="T_x (default: 16)")
    parser.add_argument("--unet-cond-horizon", type=int, default=2, help="T_z (default: 2)")
    parser.add_argument(
        "--unet-batch", type=int, nargs="+", default=None, help="batch sizes (default: 64 and 1)"
    )


def _n_groups(dims: Sequence[int], order: int, bound: int) -> int:
    copies = [d // order for d in dims]
    common = math.gcd(*copies)
    return max(g for g in range(1, bound + 1) if common % g == 0)


def _conv_macs(model: GenCondRegressor, length: int, cond_horizon: int) -> int:
    """Multiply-adds of the convolutions of one forward of one sample (the dense network)."""
    counts: list[int] = []

    def hook(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
            counts.append(output.shape[-1] * module.weight.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        x = torch.zeros(1, length, model.in_dim)
        z = torch.zeros(1, cond_horizon, model.cond_dim)
        with torch.no_grad():
            model(x, torch.zeros(1), z)
    finally:
        for h in handles:
            h.remove()
    return sum(counts)


def bench_unets(
    args: argparse.Namespace,
    device: torch.device,
    make_group: Callable[[str], tuple[Group, Representation]],
) -> list[UnetRow]:
    """The U-Net benchmark: one row per group and batch size."""
    rows: list[UnetRow] = []
    batches = args.unet_batch or ([16, 1] if args.quick else [64, 1])
    dims = tuple(args.unet_dims)
    for name in args.groups:
        group, standard = make_group(name)
        order = group.order()
        if any(d % order for d in dims):
            print(f"  unet {name}: skipped, --unet-dims {dims} are not multiples of |G| = {order}")
            continue
        n_groups = _n_groups(dims, order, args.unet_groups)
        in_rep = ereps.direct_sum([standard] * 2)
        cond_rep = ereps.direct_sum([standard] * 4)
        shared: dict[str, Any] = dict(
            cond_horizon=args.unet_cond_horizon,
            diffusion_step_embed_dim=args.unet_step_dim,
            down_dims=dims,
            kernel_size=args.unet_kernel,
            n_groups=n_groups,
            cond_predict_scale=True,
        )
        torch.manual_seed(0)
        model_e = eConditionalUnet1D(in_rep, cond_rep, in_rep, **shared).to(device)
        model_b = ConditionalUnet1D(in_rep.size, cond_rep.size, in_rep.size, **shared).to(device)
        macs = _conv_macs(model_b.cpu(), args.unet_horizon, args.unet_cond_horizon)
        model_b.to(device)
        for batch in batches:
            gen = torch.Generator().manual_seed(1)
            T, Tz = args.unet_horizon, args.unet_cond_horizon
            x = torch.randn(batch, T, in_rep.size, generator=gen).to(device)
            z = torch.randn(batch, Tz, cond_rep.size, generator=gen).to(device)
            target = torch.randn(batch, T, in_rep.size, generator=gen).to(device)
            k = torch.randint(0, 1000, (batch,), generator=gen).to(device, torch.float32)
            opt_e = model_e.configure_optimizers(learning_rate=1e-4)
            opt_b = model_b.configure_optimizers(learning_rate=1e-4)
            train = interleaved_timings(
                {
                    "e": regressor_step(model_e, opt_e, x, k, z, target),
                    "base": regressor_step(model_b, opt_b, x, k, z, target),
                },
                device=device,
                warmup=args.warmup,
                repeats=args.repeats,
            )
            plain_e, plain_b = model_e.export().eval(), model_b.export().eval()
            evals = interleaved_timings(
                {
                    "e": regressor_eval(model_e, x, k, z),
                    "base": regressor_eval(model_b, x, k, z),
                    "export_e": regressor_eval(plain_e, x, k, z),
                    "export_base": regressor_eval(plain_b, x, k, z),
                },
                device=device,
                warmup=args.warmup,
                repeats=args.repeats,
            )
            rows.append(
                UnetRow(
                    group=f"{name} (B={batch})",
                    order=order,
                    dims=dims,
                    n_groups=n_groups,
                    params_e=trainable_count(model_e),
                    params_base=trainable_count(model_b),
                    train_e=train["e"],
                    train_base=train["base"],
                    eval_e=evals["e"],
                    eval_base=evals["base"],
                    export_e=evals["export_e"],
                    export_base=evals["export_base"],
                    macs=macs,
                )
            )
            print(f"  unet {name} batch {batch}: done", flush=True)
        del model_e, model_b
    return rows


def unet_table(rows: list[UnetRow]) -> str:
    """Markdown table of the U-Net benchmark.

    "exported" is the equivariant model's ``export()`` against the baseline model itself (what a
    user of the baseline runs); the two exports are the same plain network, so their ratio is the
    noise of the measurement (kept in the JSON).
    """
    lines = [
        "| group | \\|G\\| | n_groups | params e / base | conv MMAC | train ms e / base "
        "| train ratio | eval ms e / base | eval ratio | exported e ms | exported / base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.group} | {r.order} | {r.n_groups} | {r.params_e:,} / {r.params_base:,} | "
            f"{r.macs / 1e6:.1f} | "
            f"{r.train_e.median_ms:.1f} / {r.train_base.median_ms:.1f} | "
            f"{ratio_text(r.train_e, r.train_base)} | "
            f"{r.eval_e.median_ms:.2f} / {r.eval_base.median_ms:.2f} | "
            f"{ratio_text(r.eval_e, r.eval_base)} | "
            f"{r.export_e.median_ms:.2f} | {ratio_text(r.export_e, r.eval_base)} |"
        )
    return "\n".join(lines)
