"""Smoke test of tools/sample_efficiency.py at a toy size, and the symmetry of its 3-D task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="the figure needs the 'tools' dependency group")

import sample_efficiency as se
from _flow import TaskConfig

TINY = [
    "--groups", "D4,O", "--sizes", "8,4", "--seeds", "1", "--steps", "3", "--batch-size", "4",
    "--width", "48", "--layers", "1", "--heads", "1", "--held-out-size", "8",
]  # fmt: skip


def test_runs_all_models_groups_and_sizes(tmp_path: Path) -> None:
    lines: list[str] = []
    document = se.main([*TINY, "--out", str(tmp_path)], log=lines.append)
    results = document["results"]
    keys = {(r["group"], r["train_size"], r["model"]) for r in results}
    assert keys == {(g, n, m) for g in ("D4", "O") for n in (4, 8) for m in se.MODELS}
    assert all(np.isfinite(r["held_out_loss"]) and r["held_out_loss"] > 0 for r in results)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == results
    assert saved["config"]["sizes"] == [4, 8]
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 0
    table = lines[-2]
    assert "| O | 8 |" in table
    assert "CondTransformerRegressor + augmentation" in table
    # Same seed, same data and batches: the baseline with and without augmentation differ only
    # by the augmentation, and both have the same parameter count.
    by = {(r["group"], r["train_size"], r["model"]): r for r in results}
    base, aug = by[("O", 8, "baseline")], by[("O", 8, "augmented")]
    assert base["parameters"] == aug["parameters"]
    assert base["held_out_loss"] != aug["held_out_loss"]
    assert by[("O", 8, "equivariant")]["parameters"] < base["parameters"]


def test_three_dimensional_task_is_symmetric() -> None:
    task = se.make_task("O", 1.0)
    assert (task.dim, task.order, len(task.goals)) == (3, 24, 6)
    mats = task.matrices.double().numpy()
    for m in mats:
        moved = task.goals @ m.T
        # ρ(g) permutes the goals: the goal set is invariant.
        distances = np.linalg.norm(moved[:, None] - task.goals[None], axis=-1)
        assert np.allclose(distances.min(axis=1), 0.0, atol=1e-9)
    x, z = se.generate(32, task, TaskConfig(), np.random.default_rng(0))
    assert x.shape == (32, 16, 3)
    assert z.shape == (32, 4, 3)
    assert x.dtype == torch.float32


def test_rejects_bad_options() -> None:
    with pytest.raises(SystemExit):
        se.parse_args(["--steps", "0"])
    with pytest.raises(ValueError, match="multiple of"):
        se.main(["--groups", "O", "--width", "40", "--sizes", "4"], log=lambda _: None)
