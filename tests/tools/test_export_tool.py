"""Smoke test of tools/export.py at toy sizes: files written, agreement checked, table printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="tools/export.py needs the 'deploy' dependency group")
pytest.importorskip("onnxscript", reason="tools/export.py needs the 'deploy' dependency group")

import export
from _flow import model_config, parse_planar_group
from eregressors import config_from_dict

TINY = ["--repeats", "1", "--warmup", "0", "--batches", "1", "3"]


def test_export_tool_from_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = model_config(
        "equivariant",
        parse_planar_group("C4"),
        in_horizon=6,
        cond_horizon=2,
        embedding_dim=8,
        num_layers=1,
        num_attention_heads=1,
    )
    model = config.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model_config": config.to_dict(), "ema": model.state_dict()}, ckpt)
    out = tmp_path / "out"
    document = export.main(["--checkpoint", str(ckpt), "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert (out / "policy.pt2").stat().st_size > 0
    assert (out / "policy.onnx").stat().st_size > 0
    saved = json.loads((out / "export.json").read_text())
    # JSON turns the tuple fields (down_dims) into lists: compare through from_dict.
    assert config_from_dict(saved["model_config"]) == config
    for name in ("exported eager", "pt2", "onnx"):
        assert document["errors"][name] < 1e-5, name
    assert [row["batch"] for row in saved["latency"]] == [1, 3]
    assert set(saved["latency"][0]["median_ms"]) == {
        "equivariant",
        "frozen()",
        "exported",
        "ONNX Runtime",
        "baseline",
    }
    for step in range(1, 6):
        assert f"[{step}/5]" in printed
    assert "| 1 |" in printed
    assert "| 3 |" in printed


def test_export_tool_demo_model_without_onnx(tmp_path: Path) -> None:
    document = export.main(
        ["--group", "C3", "--embedding-dim", "6", "--layers", "1", "--heads", "1",
         "--in-horizon", "4", "--cond-horizon", "2", "--no-onnx", "--out", str(tmp_path), *TINY]
    )  # fmt: skip
    assert "onnx" not in document["errors"]
    assert document["errors"]["pt2"] < 1e-5
    assert document["form"] == "dense"
    assert not (tmp_path / "policy.onnx").exists()
    with pytest.raises(SystemExit):
        export.parse_args(["--repeats", "0"])


def test_export_tool_spectral_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--form spectral`` writes the trunk in the spectral basis (block products), checked."""
    document = export.main(
        ["--group", "C4", "--embedding-dim", "8", "--layers", "1", "--heads", "1",
         "--in-horizon", "4", "--cond-horizon", "2", "--form", "spectral", "--no-onnx",
         "--out", str(tmp_path), *TINY]
    )  # fmt: skip
    assert document["form"] == "spectral"
    for name in ("exported eager", "pt2"):  # its ONNX file: tests/eregressors (slow)
        assert document["errors"][name] < 1e-5, name
    assert "(spectral form)" in capsys.readouterr().out
    # The program's decoder holds block matrices (the spectral form), not dense projections.
    keys = list(torch.export.load(tmp_path / "policy.pt2").state_dict)
    layer = [k for k in keys if k.startswith("decoder.layers.0.self_attn.")]
    assert "decoder.layers.0.self_attn.in_proj.block_0" in layer, layer
    assert not any(k.endswith("in_proj_weight") for k in keys), keys
    with pytest.raises(SystemExit):
        export.parse_args(["--form", "blocks"])
