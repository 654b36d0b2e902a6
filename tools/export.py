"""Deploy a trained policy: export to plain PyTorch, torch.export (.pt2) and ONNX, check, time.

Run it with::

    uv run python tools/export.py                          # the demo's model (random weights)
    uv run python tools/export.py --checkpoint outputs/train-D4-equivariant/checkpoint.pt

It loads a ``tools/train.py`` checkpoint (its EMA weights by default) or builds the demo's model,
then

1. exports it with ``elayers.export`` (plain ``torch.nn`` modules, no escnn at run time; with
   ``--form spectral`` the equivariant regressor's trunk stays in the spectral basis, block
   products in plain torch, see ``eCondTransformerRegressor.export_spectral``),
2. writes ``<out>/policy.pt2`` (``torch.export`` with a dynamic batch) and ``<out>/policy.onnx``
   (``torch.onnx.export(..., dynamo=True)``, dynamic batch), reloads both and checks that they
   agree with the equivariant model (ONNX Runtime for the ``.onnx`` file),
3. prints a latency table at batch 1 and batch 64 (``T_x`` = the model's horizon, 16 by default):
   the eager equivariant model, the same inside ``elayers.frozen``, the exported model in eager
   PyTorch, the ONNX file in ONNX Runtime, and the unconstrained baseline of the same size. The
   contenders are interleaved call by call after warm-up; times are medians, ratios the medians of
   the per-round ratios against the baseline (see ``_timing.py``).

``<out>/export.json`` holds the agreement errors and the timings. ONNX needs the ``deploy``
dependency group (onnx, onnxscript, onnxruntime), installed by default with ``uv sync``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import elayers
from _flow import baseline_config, default_width, describe_config, model_config, parse_planar_group
from _timing import Timing, cpu_name, interleaved_timings, paired_ratio
from eregressors import GenCondRegressor, RegressorConfig, config_from_dict


def log(message: str) -> None:
    """Progress output (flushed, so that it shows while the tool works)."""
    print(message, flush=True)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` in float64."""
    den = max(float(torch.linalg.vector_norm(b.double())), 1e-30)
    return float(torch.linalg.vector_norm((a - b).double())) / den


def load_model(args: argparse.Namespace) -> tuple[GenCondRegressor, RegressorConfig, str]:
    """The policy to deploy, its configuration and where it came from."""
    if args.checkpoint is not None:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        config = config_from_dict(ckpt["model_config"])
        model = config.build()
        model.load_state_dict(ckpt[args.weights])
        return model, config, f"{args.checkpoint} ({args.weights} weights)"
    group = parse_planar_group(args.group)
    width = args.embedding_dim or default_width(group.order, args.heads)
    config = model_config(
        "equivariant",
        group,
        in_horizon=args.in_horizon,
        cond_horizon=args.cond_horizon,
        embedding_dim=width,
        num_layers=args.layers,
        num_attention_heads=args.heads,
        num_cond_layers=args.cond_layers,
    )
    torch.manual_seed(args.seed)
    return config.build(), config, "the demo's model with random weights"


def inputs(model: GenCondRegressor, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``(X, opt_step, Z)`` of the model's shapes at ``batch`` (full horizons)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_horizon or 16, model.in_dim, generator=gen)
    k = torch.rand(batch, generator=gen) * 1000.0
    z = torch.randn(batch, model.cond_horizon or 1, model.cond_dim, generator=gen)
    return x, k, z


def dynamic_batch() -> tuple[dict[int, Any], ...]:
    """``dynamic_shapes`` of ``(X, opt_step, Z)``: the batch axis is dynamic."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return ({0: batch}, {0: batch}, {0: batch})


def write_pt2(plain: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    program = torch.export.export(plain, example, dynamic_shapes=dynamic_batch())
    torch.export.save(program, path)


def write_onnx(plain: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        # The exporter notes that all inputs share the batch axis, which is what we declare.
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        torch.onnx.export(
            plain, example, f=str(path), dynamo=True, dynamic_shapes=dynamic_batch(), verbose=False
        )


def onnx_runner(path: Path, threads: int) -> Callable[[tuple[torch.Tensor, ...]], Any]:
    """A call running the ONNX file in ONNX Runtime (CPU) on ``(X, opt_step, Z)``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(args: tuple[torch.Tensor, ...]) -> Any:
        return session.run(None, dict(zip(names, (a.numpy() for a in args), strict=True)))[0]

    return run


def bound(
    run: Callable[[tuple[torch.Tensor, ...]], Any], args: tuple[torch.Tensor, ...]
) -> Callable[[], object]:
    return lambda: run(args)


def no_grad_call(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            model(*args)

    return call


def latency_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per batch size, ms and ratio to the baseline per contender."""
    names = [name for name in rows[0]["timings"] if name != "baseline"]
    header = "| batch | " + " | ".join(f"{n} ms (× base)" for n in names) + " | baseline ms |"
    lines = [header, "|---:|" + "---:|" * (len(names) + 1)]
    for row in rows:
        base: Timing = row["timings"]["baseline"]
        cells = [
            f"{row['timings'][n].median_ms:.2f} ({paired_ratio(row['timings'][n], base):.2f}×)"
            for n in names
        ]
        lines.append(f"| {row['batch']} | " + " | ".join(cells) + f" | {base.median_ms:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export a policy to .pt2 and .onnx and time it.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a tools/train.py checkpoint")
    parser.add_argument(
        "--weights", choices=("ema", "model"), default="ema", help="which weights of the checkpoint"
    )
    parser.add_argument("--group", default="D4", help="demo model's group (default: D4)")
    parser.add_argument("--embedding-dim", type=int, default=None, help="demo model's width")
    parser.add_argument("--layers", type=int, default=2, help="demo model's decoder layers")
    parser.add_argument("--heads", type=int, default=2, help="demo model's attention heads")
    parser.add_argument("--cond-layers", type=int, default=0, help="demo model's encoder layers")
    parser.add_argument("--in-horizon", type=int, default=16, help="demo model's T_x (default 16)")
    parser.add_argument("--cond-horizon", type=int, default=4, help="demo model's T_z (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="demo model's weights")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/export-<group>")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per contender")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX file and its timing")
    parser.add_argument(
        "--form",
        choices=elayers.EXPORT_FORMS,
        default="dense",
        help="dense (torch's layers, the fastest at batch 1) or spectral (the trunk's block "
        "products in the spectral basis); default: dense",
    )
    args = parser.parse_args(argv)
    for name in ("warmup", "threads"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name} is out of range: {getattr(args, name)}")
    if args.repeats < 1 or any(b < 1 for b in args.batches):
        parser.error("--repeats and --batches must be positive")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the export, the checks and the timings; returns what ``export.json`` holds."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, config, source = load_model(args)
    model.eval()
    rep = getattr(config, "in_rep", None)  # the equivariant models' group names the folder
    out: Path = args.out or Path("outputs") / f"export-{'plain' if rep is None else rep.group.name}"
    out.mkdir(parents=True, exist_ok=True)
    log(f"[1/5] model: {type(model).__name__} from {source}")

    plain = elayers.export(model, form=args.form).eval()
    example = inputs(model, 2, seed=1)
    check = inputs(model, 5, seed=2)
    with torch.no_grad():
        reference = model(*check)
        errors: dict[str, float] = {"exported eager": relative_error(plain(*check), reference)}
    log(
        f"[2/5] exported to plain PyTorch ({args.form} form): relative error "
        f"{errors['exported eager']:.1e}"
    )

    pt2 = out / "policy.pt2"
    write_pt2(plain, example, pt2)
    with torch.no_grad():
        errors["pt2"] = relative_error(torch.export.load(pt2).module()(*check), reference)
    log(f"[3/5] wrote {pt2} (dynamic batch): relative error {errors['pt2']:.1e}")

    run_onnx = None
    if not args.no_onnx:
        onnx_path = out / "policy.onnx"
        write_onnx(plain, example, onnx_path)
        run_onnx = onnx_runner(onnx_path, args.threads)
        errors["onnx"] = relative_error(torch.from_numpy(run_onnx(check)), reference)
        log(f"[4/5] wrote {onnx_path}: ONNX Runtime relative error {errors['onnx']:.1e}")
    else:
        log("[4/5] ONNX skipped (--no-onnx)")

    torch.manual_seed(args.seed)
    baseline = baseline_config(config).build().eval()
    frozen_model = copy.deepcopy(model).eval()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(elayers.frozen(frozen_model))
        for batch in args.batches:
            data = inputs(model, batch, seed=3)
            contenders: dict[str, Callable[[], object]] = {
                "equivariant": no_grad_call(model, data),
                "frozen()": no_grad_call(frozen_model, data),
                "exported": no_grad_call(plain, data),
            }
            if run_onnx is not None:
                contenders["ONNX Runtime"] = bound(run_onnx, data)
            contenders["baseline"] = no_grad_call(baseline, data)
            # Each timed forward follows one of the same model (a denoising loop's steady state).
            timings = interleaved_timings(
                contenders,
                device=torch.device("cpu"),
                warmup=args.warmup,
                repeats=args.repeats,
                warm_calls=1,
            )
            rows.append({"batch": batch, "timings": timings})
            log(f"[5/5] timed batch {batch}")
    machine = f"{cpu_name()} ({os.cpu_count()} cores), {args.threads} thread(s)"
    log(
        f"\nLatency of one forward, T_x = {model.in_horizon}, T_z = {model.cond_horizon}, "
        f"{describe_config(config)}; torch {torch.__version__} on {machine} "
        f"(medians of {args.repeats} interleaved rounds; × base: median per-round ratio to the "
        "baseline CondTransformerRegressor of the same size)\n"
    )
    log(latency_table(rows))
    document: dict[str, Any] = {
        "source": source,
        "form": args.form,
        "model_config": config.to_dict(),
        "machine": machine,
        "torch": torch.__version__,
        "errors": errors,
        "latency": [
            {
                "batch": row["batch"],
                "median_ms": {k: t.median_ms for k, t in row["timings"].items()},
                "ratio_to_baseline": {
                    k: paired_ratio(t, row["timings"]["baseline"])
                    for k, t in row["timings"].items()
                },
            }
            for row in rows
        ],
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "export.json").write_text(json.dumps(document, indent=1))
    log(f"\nWall time {document['wall_seconds']:.0f} s. Files in {out}")
    return document


if __name__ == "__main__":
    main()
