"""Smoke tests of the demo and the benchmark at toy sizes (the real runs are far larger)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the demo's figure needs the 'tools' dependency group")
pytest.importorskip("tqdm", reason="the demo's progress bar needs the 'tools' dependency group")

import bench
import demo

TINY_DEMO = [
    "--group", "D4", "--steps", "3", "--train-size", "16", "--batch-size", "4",
    "--embedding-dim", "16", "--layers", "1", "--heads", "1", "--eval-every", "2",
    "--ode-steps", "2", "--samples", "2", "--held-out-size", "32", "--no-progress",
]  # fmt: skip


def test_demo_runs_and_is_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = demo.main([*TINY_DEMO, "--out", str(tmp_path / "a")])
    printed = capsys.readouterr().out
    assert first == tmp_path / "a"
    assert (first / "demo.png").stat().st_size > 0
    assert printed.strip().splitlines()[-1].endswith(str(first))
    assert "| eCondTransformerRegressor |" in printed
    assert "| CondTransformerRegressor |" in printed
    metrics = json.loads((first / "metrics.json").read_text())
    equivariant, baseline = metrics["results"]
    assert equivariant["kind"] == "equivariant"
    assert baseline["kind"] == "baseline"
    assert equivariant["model_equivariance_error"] < 1e-5
    assert equivariant["sampler_equivariance_error"] < 1e-5
    assert baseline["model_equivariance_error"] > 1e-3
    assert equivariant["parameters"] < baseline["parameters"]

    second = demo.main([*TINY_DEMO, "--out", str(tmp_path / "b")])
    again = json.loads((second / "metrics.json").read_text())
    for key in (
        "train_loss",
        "eval_loss",
        "held_out_loss",
        "model_equivariance_error",
        "parameters",
    ):
        assert [r[key] for r in again["results"]] == [r[key] for r in metrics["results"]], key


def test_demo_runs_the_unets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = demo.main(
        [*TINY_DEMO, "--arch", "unet", "--down-dims", "8", "16", "--n-groups", "1", "--out",
         str(tmp_path / "u")]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "| eConditionalUnet1D |" in printed
    assert "| ConditionalUnet1D |" in printed
    equivariant, baseline = json.loads((out / "metrics.json").read_text())["results"]
    assert equivariant["model_equivariance_error"] < 1e-5
    assert equivariant["sampler_equivariance_error"] < 1e-5
    assert baseline["model_equivariance_error"] > 1e-3


def test_demo_rejects_bad_options() -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(["--steps", "0"])
    with pytest.raises(ValueError, match="C<N>"):
        demo.main(["--group", "ico", "--steps", "1"])


def test_bench_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    document = bench.main(
        [
            "--device", "cpu", "--groups", "C2", "--embedding-dim", "8", "--heads", "1",
            "--layers", "1", "--batch-size", "2", "--warmup", "0", "--repeats", "1",
            "--layer-configs", "C2:8", "--layer-heads", "1", "--layer-batch", "2",
            "--layer-repeats", "1", "--json", str(out),
            "--unet-dims", "4", "8", "--unet-step-dim", "8", "--unet-batch", "2",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "| C2 | 2 |" in printed
    saved = json.loads(out.read_text())
    assert saved["regressors"][0]["group"] == "C2"
    assert saved["regressors"][0]["train_e"]["median_ms"] > 0
    assert saved["regressors"][0]["peak_mb_e"] > 0
    assert saved["layers"][0]["width"] == 8
    assert saved["unets"][0]["group"] == "C2 (B=2)"
    assert saved["unets"][0]["export_e"]["median_ms"] > 0
    assert "| C2 (B=2) | 2 |" in printed
    assert document["device"] == "cpu"
    with pytest.raises(ValueError, match="group:width"):
        bench.main(["--device", "cpu", "--only", "layers", "--layer-configs", "C8-128"])


def test_bench_spectral_runs(capsys: pytest.CaptureFixture[str]) -> None:
    document = bench.main(
        [
            "--device", "cpu", "--only", "spectral", "--spectral-configs", "C2:8", "--heads", "1",
            "--layers", "1", "--batch-size", "2", "--warmup", "0", "--repeats", "1",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "| C2 | 8 |" in printed
    row = document["spectral"][0]
    assert row["train"]["spec"]["median_ms"] > 0
    assert row["eval"]["base"]["median_ms"] > 0
    # The exports' eval forwards, at the batch size and at batch 1.
    assert row["export_eval"]["spec_export"]["median_ms"] > 0
    assert row["export_eval_1"]["dense_export"]["median_ms"] > 0
    assert "spec export / dense export" in printed
    # C2: Σ d³/e = 2 vs |G|² = 4 per copy pair.
    assert 0 < row["macs_spectral"] < row["macs_dense"]
    with pytest.raises(ValueError, match="group:width"):
        bench.main(["--device", "cpu", "--only", "spectral", "--spectral-configs", "C8"])
