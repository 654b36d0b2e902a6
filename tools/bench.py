"""Benchmark: equivariant models against their unconstrained counterparts, side by side.

Run it with::

    uv run --group tools python tools/bench.py --quick  # about 2 minutes on a 2-core CPU
    uv run --group tools python tools/bench.py --json bench.json  # full run (CUDA if available)

Two benchmarks, each printed as a Markdown table with ratios (equivariant / baseline; lower is
better):

1. ``eregressors``: ``eCondTransformerRegressor`` against ``CondTransformerRegressor`` for C2, C8,
   D6 and the icosahedral group, at equal ``embedding_dim``, layers, heads, batch and horizons
   (both models from the seed's defaults otherwise). The tokens are two copies of the group's
   "standard" representation (C2: its regular representation, i.e. a reflection of the line; C8
   and D6: the rotation (and reflection) of the plane; icosahedral: the rotation of space) for
   ``X`` and the output, four copies for ``Z``; the baseline sees the same sizes. A training step
   is ``zero_grad`` + forward + MSE loss + backward + AdamW step (from ``configure_optimizers``);
   an eval forward is ``model.eval()`` under ``torch.no_grad()``. Training steps of the two models
   are interleaved; eval forwards are interleaved in a second phase, at every ``--eval-batches``
   size (default 1 and 64: robot inference runs at batch 1; eval mode set once, not per call),
   with four contenders: the equivariant
   model as is (it synthesizes its dense weights on every forward), the same inside
   ``elayers.frozen`` (weights built once), its ``elayers.export`` (plain PyTorch), and the
   baseline. Both models use ``--norm-module`` (default ``layernorm``, the baseline's norm).
2. ``elayers``: ``eTransformerEncoderLayer`` on copies of the regular representation against
   ``torch.nn.TransformerEncoderLayer`` with the same width, feed-forward size, heads, dropout,
   activation and ``norm_first``, batch 64 x sequence 16: C8 at width 128 and the icosahedral group
   at width 240. "train" is forward + backward of a sum of the outputs; "eval" is a forward in eval
   mode without gradients (where the torch layer takes its fused inference fast path when it
   applies).

3. ``spectral`` (``--only spectral``, not part of ``all``): the equivariant regressor in its
   regular execution, the same weights in ``execution="spectral"`` (trunk tokens in the isotypic
   basis, block-diagonal maps; see ``elayers._spectral``) and the baseline, interleaved, per
   ``--spectral-configs`` group and width: training steps, eval forwards (batch ``--batch-size``),
   peak memory, and the trunk's multiply-adds per input token of each execution (dense: the
   baseline's and the regular execution's matrix products; spectral: the block products plus the
   feed-forward's two changes of basis), so that the gap to the arithmetic limit is visible; then
   eval forwards of the two exports of the same weights (``export_spectral()``, the trunk in the
   spectral basis in plain torch, and the dense ``export()``) beside the spectral execution and
   the baseline, at batch ``--batch-size`` and at batch 1.

Peak memory is the peak tensor memory of one training step: the parameters, gradients and optimizer
state held between steps plus the peak of what the step allocates on top (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the torch profiler's memory events at operator
granularity). It counts tensor bytes only.

Times are medians over interleaved rounds after warm-up, ratios the medians of the per-round ratios
(see ``_timing.py``); absolute times on a shared machine are noise, the ratios are the result.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import elayers
import ereps
from _bench_unet import add_unet_arguments, bench_unets, unet_table
from _timing import (
    Timing,
    cpu_name,
    interleaved_timings,
    paired_ratio,
    peak_step_memory,
    ratio_text,
    regressor_eval,
    regressor_step,
    resident_bytes,
    trainable_count,
)
from elayers import eTransformerEncoderLayer
from eregressors import CondTransformerRegressor, GenCondRegressor, eCondTransformerRegressor
from ereps import Group, Representation, cyclic_group, dihedral_group, ico_group

GROUPS = ("C2", "C8", "D6", "ico")


def make_group(name: str) -> tuple[Group, Representation]:
    """The group and its "standard" representation (see the module docstring)."""
    if name == "C2":
        c2 = cyclic_group(2)
        return c2, c2.regular_representation
    if name == "C8":
        c8 = cyclic_group(8)
        return c8, c8.irrep(1)
    if name == "D6":
        d6 = dihedral_group(6)
        return d6, d6.irrep(1, 1)
    if name == "ico":
        ico = ico_group()
        return ico, ico.irrep(1)
    raise ValueError(f"Unknown group {name!r}; expected one of {', '.join(GROUPS)}.")


@dataclasses.dataclass
class RegressorRow:
    """One line of the regressor table."""

    group: str
    order: int
    params_e: int
    params_base: int
    train_e: Timing
    train_base: Timing
    eval_e: Timing
    eval_base: Timing
    peak_mb_e: float
    peak_mb_base: float
    build_s_e: float
    build_s_base: float
    evals: list[EvalRow] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EvalRow:
    """Eval forwards of one regressor configuration at one batch size."""

    batch: int
    eager: Timing
    frozen: Timing
    exported: Timing
    base: Timing


@dataclasses.dataclass
class LayerRow:
    """One line of the layer table."""

    group: str
    order: int
    width: int
    norm_first: bool
    params_e: int
    params_base: int
    train_e: Timing
    train_base: Timing
    eval_e: Timing
    eval_base: Timing


def regressor_setup(
    args: argparse.Namespace, name: str
) -> tuple[Group, Representation, Representation, dict[str, Any]]:
    """The group, the token representations and the shared transformer options of a suite.

    ``X`` and the output are two copies of the group's standard representation, each token of
    ``Z`` four; both models get the same depth, heads, width and conditioning layers.
    """
    group, standard = make_group(name)
    shared: dict[str, Any] = dict(
        num_layers=args.layers,
        num_attention_heads=args.heads,
        embedding_dim=args.embedding_dim,
        num_cond_layers=args.cond_layers,
    )
    return group, ereps.direct_sum([standard] * 2), ereps.direct_sum([standard] * 4), shared


def bench_inference(
    args: argparse.Namespace,
    device: torch.device,
    model_e: eCondTransformerRegressor,
    model_b: CondTransformerRegressor,
    in_size: int,
    cond_size: int,
) -> list[EvalRow]:
    """Eval forwards at each ``--eval-batches`` size: eager, frozen(), exported, baseline."""
    # Inference sets eval mode once, not per forward (model.eval() walks every submodule, and the
    # equivariant tree has more of them: timing it would charge a training-loop habit).
    model_e.eval()
    model_b.eval()
    exported = elayers.export(model_e).eval()
    # A copy of its own stays inside one frozen scope for the whole phase, so that the eager
    # contender (the same weights) is measured outside any scope.
    frozen_e = copy.deepcopy(model_e).eval()
    rows: list[EvalRow] = []
    with elayers.frozen(frozen_e):
        for b in args.eval_batches:
            generator = torch.Generator().manual_seed(2)
            x = torch.randn(b, args.in_horizon, in_size, generator=generator).to(device)
            z = torch.randn(b, args.cond_horizon, cond_size, generator=generator).to(device)
            k = torch.randint(0, 1000, (b,), generator=generator).to(device, torch.float32)
            t = interleaved_timings(
                {
                    "eager": no_grad_forward(model_e, x, k, z),
                    "frozen": no_grad_forward(frozen_e, x, k, z),
                    "exported": no_grad_forward(exported, x, k, z),
                    "base": no_grad_forward(model_b, x, k, z),
                },
                device=device,
                warmup=args.warmup,
                repeats=args.repeats,
                # Inference runs one model back to back (the denoising loop): time each contender
                # after a call of its own, not after whichever ran before it.
                warm_calls=1,
            )
            rows.append(EvalRow(b, t["eager"], t["frozen"], t["exported"], t["base"]))
    return rows


def no_grad_forward(
    model: torch.nn.Module, x: torch.Tensor, k: torch.Tensor, z: torch.Tensor
) -> Callable[[], None]:
    """One forward under ``torch.no_grad()`` of a model already in eval mode."""

    def forward() -> None:
        with torch.no_grad():
            model(x, k, z)

    return forward


def optimizer_tensors(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> list[torch.Tensor]:
    """Parameters, gradients and optimizer state (what a model holds between training steps)."""
    tensors: list[torch.Tensor] = [p.detach() for p in model.parameters()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def bench_regressors(args: argparse.Namespace, device: torch.device) -> list[RegressorRow]:
    """The regressor benchmark, one row per group."""
    rows: list[RegressorRow] = []
    for name in args.groups:
        group, in_rep, cond_rep, shared = regressor_setup(args, name)
        torch.manual_seed(0)
        start = time.perf_counter()
        model_e = eCondTransformerRegressor(
            in_rep,
            cond_rep,
            in_rep,
            args.in_horizon,
            args.cond_horizon,
            **shared,
            norm_module=args.norm_module,
        ).to(device)
        build_e = time.perf_counter() - start
        start = time.perf_counter()
        model_b = CondTransformerRegressor(
            in_rep.size, cond_rep.size, in_rep.size, args.in_horizon, args.cond_horizon, **shared
        ).to(device)
        build_b = time.perf_counter() - start

        generator = torch.Generator().manual_seed(1)
        b = args.batch_size
        x = torch.randn(b, args.in_horizon, in_rep.size, generator=generator).to(device)
        z = torch.randn(b, args.cond_horizon, cond_rep.size, generator=generator).to(device)
        target = torch.randn(b, args.in_horizon, in_rep.size, generator=generator).to(device)
        k = torch.randint(0, 1000, (b,), generator=generator).to(device, torch.float32)

        opt_e = model_e.configure_optimizers(learning_rate=1e-4)
        opt_b = model_b.configure_optimizers(learning_rate=1e-4)
        step_e = regressor_step(model_e, opt_e, x, k, z, target)
        step_b = regressor_step(model_b, opt_b, x, k, z, target)
        train = interleaved_timings(
            {"e": step_e, "base": step_b}, device=device, warmup=args.warmup, repeats=args.repeats
        )
        peak_e = peak_step_memory(step_e, resident_bytes(optimizer_tensors(model_e, opt_e)), device)
        peak_b = peak_step_memory(step_b, resident_bytes(optimizer_tensors(model_b, opt_b)), device)
        evals = interleaved_timings(
            {"e": regressor_eval(model_e, x, k, z), "base": regressor_eval(model_b, x, k, z)},
            device=device,
            warmup=args.warmup,
            repeats=args.repeats,
        )
        eval_rows = bench_inference(args, device, model_e, model_b, in_rep.size, cond_rep.size)
        rows.append(
            RegressorRow(
                group=name,
                order=group.order(),
                params_e=trainable_count(model_e),
                params_base=trainable_count(model_b),
                train_e=train["e"],
                train_base=train["base"],
                eval_e=evals["e"],
                eval_base=evals["base"],
                peak_mb_e=peak_e / 2**20,
                peak_mb_base=peak_b / 2**20,
                build_s_e=build_e,
                build_s_base=build_b,
                evals=eval_rows,
            )
        )
        print(f"  regressors {name}: done", flush=True)
        del model_e, model_b, opt_e, opt_b
    return rows


@dataclasses.dataclass
class SpectralRow:
    """One line of the spectral-execution table."""

    group: str
    order: int
    width: int
    train: dict[str, Timing]
    eval: dict[str, Timing]
    peak_mb: dict[str, float]
    macs_dense: int
    macs_spectral: int
    # Eval forwards of the plain exports (spectral and dense forms) beside the spectral
    # execution and the baseline, at batch --batch-size and at batch 1.
    export_eval: dict[str, Timing]
    export_eval_1: dict[str, Timing]


def trunk_macs_per_token(
    group: Group, copies: int, layers: int, in_horizon: int, cond_horizon: int
) -> tuple[int, int]:
    """Multiply-adds of the decoder trunk per input token: ``(dense, spectral)``.

    Per layer: self-attention ``3c²`` + ``c²`` copy pairs, cross-attention queries and output
    ``2c²`` (keys and values ``2c²`` per memory token, counted per input token by
    ``(T_z + 1) / T_x``), feed-forward ``8c²``; times ``|G|²`` (dense) or ``Σ_k d_k³/e_k``
    (spectral), plus the spectral feed-forward's two changes of basis, ``2 · 4c · |G|²``.
    """
    memory = 2 * copies * copies * (cond_horizon + 1) / in_horizon
    pairs = 14 * copies * copies + memory
    spectral_pair, dense_pair = elayers.spectral_macs_per_token(group, 1, 1)
    dense = layers * pairs * dense_pair
    spectral = layers * (pairs * spectral_pair + 8 * copies * dense_pair)
    return round(dense), round(spectral)


def bench_spectral(args: argparse.Namespace, device: torch.device) -> list[SpectralRow]:
    """Regular and spectral executions of the same weights against the baseline."""
    rows: list[SpectralRow] = []
    for config in args.spectral_configs:
        name, _, width_text = config.partition(":")
        if name not in GROUPS or not width_text.isdigit():
            raise ValueError(
                f"--spectral-configs entries look like 'C8:128' (group:width); got {config!r}."
            )
        width = int(width_text)
        group, standard = make_group(name)
        in_rep = ereps.direct_sum([standard] * 2)
        cond_rep = ereps.direct_sum([standard] * 4)
        shared: dict[str, Any] = dict(
            num_layers=args.layers,
            num_attention_heads=args.heads,
            embedding_dim=width,
            num_cond_layers=args.cond_layers,
        )
        torch.manual_seed(0)
        regular = eCondTransformerRegressor(
            in_rep,
            cond_rep,
            in_rep,
            args.in_horizon,
            args.cond_horizon,
            **shared,
            norm_module=args.norm_module,
        ).to(device)
        spectral = regular.with_execution("spectral")
        base = CondTransformerRegressor(
            in_rep.size, cond_rep.size, in_rep.size, args.in_horizon, args.cond_horizon, **shared
        ).to(device)
        models: dict[str, GenCondRegressor] = {"reg": regular, "spec": spectral, "base": base}
        generator = torch.Generator().manual_seed(1)
        b = args.batch_size
        x = torch.randn(b, args.in_horizon, in_rep.size, generator=generator).to(device)
        z = torch.randn(b, args.cond_horizon, cond_rep.size, generator=generator).to(device)
        target = torch.randn(b, args.in_horizon, in_rep.size, generator=generator).to(device)
        k = torch.randint(0, 1000, (b,), generator=generator).to(device, torch.float32)
        optimizers = {key: m.configure_optimizers(learning_rate=1e-4) for key, m in models.items()}
        steps = {
            key: regressor_step(m, optimizers[key], x, k, z, target) for key, m in models.items()
        }
        train = interleaved_timings(steps, device=device, warmup=args.warmup, repeats=args.repeats)
        peak = {
            key: peak_step_memory(
                steps[key], resident_bytes(optimizer_tensors(m, optimizers[key])), device
            )
            / 2**20
            for key, m in models.items()
        }
        evals = interleaved_timings(
            {key: regressor_eval(m, x, k, z) for key, m in models.items()},
            device=device,
            warmup=args.warmup,
            repeats=args.repeats,
        )
        # The exports: the spectral form (block products in plain torch) and the dense one.
        exported = {
            "spec": spectral,
            "spec_export": spectral.export_spectral().eval(),
            "dense_export": regular.export().eval(),
            "base": base,
        }
        export_evals = [
            interleaved_timings(
                {
                    key: regressor_eval(m, x[:size], k[:size], z[:size])
                    for key, m in exported.items()
                },
                device=device,
                warmup=args.warmup,
                repeats=args.repeats,
            )
            for size in (b, 1)
        ]
        dense, spec = trunk_macs_per_token(
            group, width // group.order(), args.layers, args.in_horizon, args.cond_horizon
        )
        rows.append(
            SpectralRow(name, group.order(), width, train, evals, peak, dense, spec, *export_evals)
        )
        print(f"  spectral {name}:{width}: done", flush=True)
        del regular, spectral, base, models, optimizers, steps, exported
    return rows


def spectral_export_table(rows: list[SpectralRow], batch: int) -> str:
    """Markdown table of the exports' eval forwards (ratios to the baseline, lower is better)."""
    lines = [
        f"| group | width | eval ms b{batch}: spec / spec export / dense export / base "
        "| spec export/base | dense export/base "
        "| eval ms b1: spec / spec export / dense export / base | spec export/base | "
        "dense export/base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for e in (r.export_eval, r.export_eval_1):
            cells.append(
                f"{e['spec'].median_ms:.2f} / {e['spec_export'].median_ms:.2f} / "
                f"{e['dense_export'].median_ms:.2f} / {e['base'].median_ms:.2f} | "
                f"{ratio_text(e['spec_export'], e['base'])} | "
                f"{ratio_text(e['dense_export'], e['base'])}"
            )
        lines.append(f"| {r.group} | {r.width} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def spectral_table(rows: list[SpectralRow]) -> str:
    """Markdown table of the spectral benchmark (ratios to the baseline, lower is better)."""
    lines = [
        "| group | width | train ms reg / spec / base | train spec/base | train reg/base "
        "| eval ms reg / spec / base | eval spec/base | eval reg/base | peak MB reg / spec / base "
        "| trunk MACs/token dense / spectral |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, e, p = r.train, r.eval, r.peak_mb
        lines.append(
            f"| {r.group} | {r.width} | {t['reg'].median_ms:.1f} / {t['spec'].median_ms:.1f} / "
            f"{t['base'].median_ms:.1f} | {ratio_text(t['spec'], t['base'])} | "
            f"{ratio_text(t['reg'], t['base'])} | {e['reg'].median_ms:.1f} / "
            f"{e['spec'].median_ms:.1f} / {e['base'].median_ms:.1f} | "
            f"{ratio_text(e['spec'], e['base'])} | {ratio_text(e['reg'], e['base'])} | "
            f"{p['reg']:.1f} / {p['spec']:.1f} / {p['base']:.1f} | "
            f"{r.macs_dense:,} / {r.macs_spectral:,} ({r.macs_spectral / r.macs_dense:.2f}×) |"
        )
    return "\n".join(lines)


@dataclasses.dataclass
class PositionRow:
    """One line of the positional-encoding table: one model family, one group, one encoding."""

    model: str
    group: str
    pos_encoding: str
    train: Timing
    eval: Timing
    train_ratio: float
    eval_ratio: float


def bench_positions(args: argparse.Namespace, device: torch.device) -> list[PositionRow]:
    """``"relative"``/``"rope"`` against ``"absolute"``: the same regressor, interleaved.

    For each group and model family the three encodings are built from the same seed and their
    training steps (then eval forwards) alternate call by call; ratios are against "absolute".
    """
    rows: list[PositionRow] = []
    encodings = ("absolute", "relative", "rope")
    for name in args.groups:
        _, in_rep, cond_rep, shared = regressor_setup(args, name)
        generator = torch.Generator().manual_seed(1)
        b = args.batch_size
        x = torch.randn(b, args.in_horizon, in_rep.size, generator=generator).to(device)
        z = torch.randn(b, args.cond_horizon, cond_rep.size, generator=generator).to(device)
        target = torch.randn(b, args.in_horizon, in_rep.size, generator=generator).to(device)
        k = torch.randint(0, 1000, (b,), generator=generator).to(device, torch.float32)
        for family in ("equivariant", "baseline"):
            models: dict[str, GenCondRegressor] = {}
            for pos in encodings:
                torch.manual_seed(0)
                if family == "equivariant":
                    models[pos] = eCondTransformerRegressor(
                        in_rep,
                        cond_rep,
                        in_rep,
                        args.in_horizon,
                        args.cond_horizon,
                        **shared,
                        norm_module=args.norm_module,
                        pos_encoding=pos,  # type: ignore[arg-type]
                    ).to(device)
                else:
                    models[pos] = CondTransformerRegressor(
                        in_rep.size,  # in_dim
                        cond_rep.size,  # cond_dim
                        in_rep.size,  # out_dim
                        args.in_horizon,
                        args.cond_horizon,
                        **shared,
                        pos_encoding=pos,  # type: ignore[arg-type]
                    ).to(device)
            steps = {
                pos: regressor_step(m, m.configure_optimizers(learning_rate=1e-4), x, k, z, target)
                for pos, m in models.items()
            }
            train = interleaved_timings(
                steps, device=device, warmup=args.warmup, repeats=args.repeats
            )
            evals = interleaved_timings(
                {pos: regressor_eval(m, x, k, z) for pos, m in models.items()},
                device=device,
                warmup=args.warmup,
                repeats=args.repeats,
            )
            for pos in encodings:
                rows.append(
                    PositionRow(
                        model=family,
                        group=name,
                        pos_encoding=pos,
                        train=train[pos],
                        eval=evals[pos],
                        train_ratio=paired_ratio(train[pos], train["absolute"]),
                        eval_ratio=paired_ratio(evals[pos], evals["absolute"]),
                    )
                )
            print(f"  positions {name} {family}: done", flush=True)
            del models, steps
    return rows


def position_table(rows: list[PositionRow]) -> str:
    """Markdown table of the positional-encoding benchmark."""
    lines = [
        "| model | group | pos_encoding | train ms | train ratio | eval ms | eval ratio |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.group} | {r.pos_encoding} | {r.train.median_ms:.1f} | "
            f"{r.train_ratio:.2f}x | {r.eval.median_ms:.2f} | {r.eval_ratio:.2f}x |"
        )
    return "\n".join(lines)


def layer_closures(
    layer: torch.nn.Module, src: torch.Tensor
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward + backward, eval forward) closures for an encoder layer."""

    def train() -> None:
        layer.train()
        layer.zero_grad(set_to_none=True)
        layer(src).sum().backward()

    def evaluate() -> None:
        layer.eval()
        with torch.no_grad():
            layer(src)

    return train, evaluate


def bench_layers(args: argparse.Namespace, device: torch.device) -> list[LayerRow]:
    """The encoder-layer benchmark (default: C8 at width 128, icosahedral at width 240)."""
    rows: list[LayerRow] = []
    configs: list[tuple[str, int]] = []
    for spec in args.layer_configs:
        name, _, width = spec.partition(":")
        if name not in GROUPS or not width.isdigit():
            raise ValueError(
                f"--layer-configs entries look like 'C8:128' (group:width); got {spec!r}."
            )
        configs.append((name, int(width)))
    norm_firsts = [True] if args.quick else [True, False]
    for name, width in configs:
        group, _ = make_group(name)
        if width % group.order() != 0:
            raise ValueError(
                f"The layer width must be a multiple of |G| = {group.order()} for {name}; "
                f"got {width}."
            )
        rep = ereps.direct_sum([group.regular_representation] * (width // group.order()))
        for norm_first in norm_firsts:
            torch.manual_seed(0)
            common: dict[str, Any] = dict(
                dim_feedforward=4 * width,
                dropout=args.layer_dropout,
                activation="relu",
                batch_first=True,
                norm_first=norm_first,
            )
            layer_e = eTransformerEncoderLayer(
                rep, args.layer_heads, **common, norm_module="layernorm"
            ).to(device)
            layer_b = torch.nn.TransformerEncoderLayer(width, args.layer_heads, **common).to(device)
            src = torch.randn(
                args.layer_batch, 16, width, generator=torch.Generator().manual_seed(2)
            ).to(device)
            train_e, eval_e = layer_closures(layer_e, src)
            train_b, eval_b = layer_closures(layer_b, src)
            train = interleaved_timings(
                {"e": train_e, "base": train_b},
                device=device,
                warmup=args.warmup,
                repeats=args.layer_repeats,
            )
            evals = interleaved_timings(
                {"e": eval_e, "base": eval_b},
                device=device,
                warmup=args.warmup,
                repeats=args.layer_repeats,
            )
            rows.append(
                LayerRow(
                    group=name,
                    order=group.order(),
                    width=width,
                    norm_first=norm_first,
                    params_e=trainable_count(layer_e),
                    params_base=trainable_count(layer_b),
                    train_e=train["e"],
                    train_base=train["base"],
                    eval_e=evals["e"],
                    eval_base=evals["base"],
                )
            )
        print(f"  layers {name}: done", flush=True)
    return rows


def regressor_table(rows: list[RegressorRow]) -> str:
    """Markdown table of the regressor benchmark."""
    lines = [
        "| group | \\|G\\| | params e / base | train ms e / base | train ratio "
        "| eval ms e / base | eval ratio | peak MB e / base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.group} | {r.order} | {r.params_e:,} / {r.params_base:,} | "
            f"{r.train_e.median_ms:.1f} / {r.train_base.median_ms:.1f} | "
            f"{ratio_text(r.train_e, r.train_base)} | "
            f"{r.eval_e.median_ms:.1f} / {r.eval_base.median_ms:.1f} | "
            f"{ratio_text(r.eval_e, r.eval_base)} | "
            f"{r.peak_mb_e:.1f} / {r.peak_mb_base:.1f} |"
        )
    return "\n".join(lines)


def inference_table(rows: list[RegressorRow]) -> str:
    """Markdown table of the eval forwards: eager, frozen(), exported, against the baseline."""
    lines = [
        "| group | batch | eager ms | frozen() ms | exported ms | baseline ms "
        "| eager ratio | frozen() ratio | exported ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for e in r.evals:
            lines.append(
                f"| {r.group} | {e.batch} | {e.eager.median_ms:.2f} | {e.frozen.median_ms:.2f} | "
                f"{e.exported.median_ms:.2f} | {e.base.median_ms:.2f} | "
                f"{ratio_text(e.eager, e.base)} | {ratio_text(e.frozen, e.base)} | "
                f"{ratio_text(e.exported, e.base)} |"
            )
    return "\n".join(lines)


def layer_table(rows: list[LayerRow]) -> str:
    """Markdown table of the layer benchmark."""
    lines = [
        "| group | \\|G\\| | width | norm_first | params e / torch | train ms e / torch "
        "| train ratio | eval ms e / torch | eval ratio |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.group} | {r.order} | {r.width} | {r.norm_first} | "
            f"{r.params_e:,} / {r.params_base:,} | "
            f"{r.train_e.median_ms:.2f} / {r.train_base.median_ms:.2f} | "
            f"{ratio_text(r.train_e, r.train_base)} | "
            f"{r.eval_e.median_ms:.2f} / {r.eval_base.median_ms:.2f} | "
            f"{ratio_text(r.eval_e, r.eval_base)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the defaults of everything not given explicitly."""
    parser = argparse.ArgumentParser(
        description="Benchmark equivariant models against their baselines."
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few repeats (about 2 min on 2 cores)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results to this JSON file"
    )
    parser.add_argument(
        "--only",
        choices=("all", "regressors", "layers", "unet", "positions", "spectral"),
        default="all",
        help="which benchmark (unet: the U-Net suite, see _bench_unet.py; positions: "
        "relative/rope vs absolute; spectral: regular vs spectral execution vs baseline; the "
        "last two not part of all)",
    )
    parser.add_argument(
        "--groups", nargs="+", choices=GROUPS, default=list(GROUPS), help="regressor groups"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--embedding-dim", type=int, default=240, help="width of both regressors (default: 240)"
    )
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers (default: 4; quick: 2)"
    )
    parser.add_argument(
        "--cond-layers", type=int, default=0, help="conditioning encoder layers (default: 0)"
    )
    parser.add_argument(
        "--heads", type=int, default=2, help="attention heads of the regressors (default: 2)"
    )
    parser.add_argument(
        "--norm-module",
        choices=("rmsnorm", "layernorm"),
        default="layernorm",
        help="norm of the equivariant regressor (default: layernorm, as the baseline's)",
    )
    parser.add_argument(
        "--eval-batches",
        type=int,
        nargs="+",
        default=[1, 64],
        help="batch sizes of the eval-forward comparison (default: 1 64)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="regressor batch (default: 64; quick: 16)"
    )
    parser.add_argument("--in-horizon", type=int, default=16, help="T_x (default: 16)")
    parser.add_argument("--cond-horizon", type=int, default=4, help="T_z (default: 4)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls per contender (default: 3; quick: 2)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed regressor rounds (default: 15; quick: 5)"
    )
    parser.add_argument(
        "--layer-configs",
        nargs="+",
        default=["C8:128", "ico:240"],
        metavar="GROUP:WIDTH",
        help="encoder-layer cases (default: C8:128 ico:240)",
    )
    parser.add_argument(
        "--spectral-configs",
        nargs="+",
        default=["C2:240", "C8:128", "C8:240", "D6:192", "D6:240", "ico:240"],
        metavar="GROUP:WIDTH",
        help="regressor cases of --only spectral (default: C2:240 C8:128 C8:240 D6:192 D6:240 "
        "ico:240)",
    )
    parser.add_argument(
        "--layer-batch", type=int, default=64, help="encoder-layer batch (default: 64)"
    )
    parser.add_argument(
        "--layer-heads", type=int, default=4, help="heads of the encoder layers (default: 4)"
    )
    parser.add_argument(
        "--layer-dropout",
        type=float,
        default=0.1,
        help="dropout of the encoder layers (default 0.1)",
    )
    parser.add_argument(
        "--layer-repeats",
        type=int,
        default=None,
        help="timed layer rounds (default: 30; quick: 10)",
    )
    add_unet_arguments(parser)
    args = parser.parse_args(argv)
    defaults = {
        "layers": (4, 2),
        "batch_size": (64, 16),
        "warmup": (3, 2),
        "repeats": (15, 5),
        "layer_repeats": (30, 10),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, print the tables, optionally write JSON; returns the JSON document."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_name()} ({os.cpu_count()} cores), {torch.get_num_threads()} torch threads"
    )
    print(f"Benchmark on {device} ({machine}), torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    document: dict[str, Any] = {
        "device": str(device),
        "machine": machine,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    if args.only in ("all", "regressors"):
        rows = bench_regressors(args, device)
        document["regressors"] = [dataclasses.asdict(r) for r in rows]
        print(
            f"\neCondTransformerRegressor vs CondTransformerRegressor: width {args.embedding_dim}, "
            f"{args.layers} layers, {args.heads} heads, batch {args.batch_size}, "
            f"T_x = {args.in_horizon}, T_z = {args.cond_horizon} "
            f"(ms: medians of {args.repeats} rounds; ratio: median of the per-round ratios "
            "equivariant / baseline)\n"
        )
        print(regressor_table(rows), flush=True)
        print(
            f"\nEval forwards (no_grad) at batch {', '.join(map(str, args.eval_batches))}: the "
            "equivariant model as is, inside elayers.frozen(), exported with elayers.export(), "
            "and the baseline (ratios: medians of per-round ratios to the baseline)\n"
        )
        print(inference_table(rows), flush=True)
    if args.only in ("all", "layers"):
        layer_rows = bench_layers(args, device)
        document["layers"] = [dataclasses.asdict(r) for r in layer_rows]
        print(
            "\neTransformerEncoderLayer vs torch.nn.TransformerEncoderLayer: "
            f"batch {args.layer_batch} × seq 16, ffn 4×width, {args.layer_heads} heads "
            f"(ms: medians of {args.layer_repeats} rounds; ratio: median of the per-round ratios "
            "equivariant / torch)\n"
        )
        print(layer_table(layer_rows), flush=True)
    if args.only in ("all", "unet"):
        unet_rows = bench_unets(args, device, make_group)
        document["unets"] = [dataclasses.asdict(r) for r in unet_rows]
        print(
            f"\neConditionalUnet1D vs ConditionalUnet1D: down_dims {args.unet_dims}, kernel "
            f"{args.unet_kernel}, step embedding {args.unet_step_dim}, T_x = {args.unet_horizon}, "
            f"T_z = {args.unet_cond_horizon}, FiLM scale and bias (ms: medians of {args.repeats} "
            "rounds; ratio: median of the per-round ratios equivariant / baseline)\n"
        )
        print(unet_table(unet_rows), flush=True)
    if args.only == "spectral":
        spectral_rows = bench_spectral(args, device)
        document["spectral"] = [dataclasses.asdict(r) for r in spectral_rows]
        print(
            f"\neCondTransformerRegressor regular vs spectral execution (same weights) vs "
            f"CondTransformerRegressor: {args.layers} layers, {args.heads} heads, batch "
            f"{args.batch_size}, T_x = {args.in_horizon}, T_z = {args.cond_horizon}, norm "
            f"{args.norm_module} (ms: medians of {args.repeats} interleaved rounds; ratios: "
            "medians of the per-round ratios to the baseline)\n"
        )
        print(spectral_table(spectral_rows), flush=True)
        print(
            "\nEval forwards of the exports: export_spectral() (trunk in the spectral basis, plain "
            "torch) and export() (dense), same weights:",
            flush=True,
        )
        print(spectral_export_table(spectral_rows, args.batch_size), flush=True)
    if args.only == "positions":
        position_rows = bench_positions(args, device)
        document["positions"] = [dataclasses.asdict(r) for r in position_rows]
        print(
            f"\npos_encoding relative/rope vs absolute: width {args.embedding_dim}, "
            f"{args.layers} layers, {args.heads} heads, batch {args.batch_size}, "
            f"T_x = {args.in_horizon}, T_z = {args.cond_horizon} (ms: medians of {args.repeats} "
            "rounds; ratio: median of the per-round ratios to absolute)\n"
        )
        print(position_table(position_rows), flush=True)
    document["wall_seconds"] = time.perf_counter() - start
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1))
        print(f"\nResults written to {args.json}")
    print(f"Total {document['wall_seconds']:.0f} s")
    return document


if __name__ == "__main__":
    main()
