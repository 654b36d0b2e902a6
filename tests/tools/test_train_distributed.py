"""Acceptance check of ``tools/train.py``: 2 CPU processes under torchrun, checkpoint, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ereps
from _flow import parse_planar_group
from eregressors import config_from_dict, eCondTransformerRegressorConfig

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "tools" / "train.py"
TIMEOUT_S = 300

TINY = [
    "--group", "C4", "--model", "equivariant", "--embedding-dim", "16", "--layers", "1",
    "--heads", "1", "--batch-size", "4", "--train-size", "24", "--log-every", "1",
    "--save-every", "100", "--device", "cpu",
]  # fmt: skip


def torchrun(out: Path, *extra: str, nproc: int = 2) -> str:
    """Run ``tools/train.py`` on ``nproc`` local CPU processes; returns the combined output."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(nproc), str(TRAIN), *TINY, "--out", str(out),
        "--dump-params", str(out / "rank{rank}.json"), *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{output[-4000:]}"
    return output


def digests(out: Path, nproc: int = 2) -> list[dict[str, object]]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(nproc)]


@pytest.mark.slow
def test_two_process_training_checkpoint_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"

    # 1. Three of five steps on two processes (then an "interruption"): the ranks end with
    #    identical weights and EMA.
    log = torchrun(out, "--steps", "5", "--stop-after", "3")
    first = digests(out)
    assert [d["world_size"] for d in first] == [2, 2]
    assert [d["step"] for d in first] == [3, 3]
    assert first[0]["model"] == first[1]["model"], log
    assert first[0]["ema"] == first[1]["ema"], log
    assert "step      3/5" in log

    # 2. The checkpoint loads with weights_only=True and holds an equivariant model.
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3
    config = config_from_dict(checkpoint["model_config"])
    assert isinstance(config, eCondTransformerRegressorConfig)
    group = parse_planar_group(checkpoint["group"])
    k = torch.full((5,), 321.0, dtype=torch.float64)
    for key in ("model", "ema"):
        model = config.build()
        model.load_state_dict(checkpoint[key])
        model = model.double().eval()
        error = ereps.check_equivariance(
            lambda X, Z, m=model: m(X, k, Z),
            [group.rep, group.rep],
            group.rep,
            inputs=[torch.randn(5, config.in_horizon, 2, dtype=torch.float64),
                    torch.randn(5, config.cond_horizon, 2, dtype=torch.float64)],
        )  # fmt: skip
        assert error < 1e-10, (key, error)
    # Training moved the weights away from the initialization that the EMA started from.
    tensors = [n for n, v in checkpoint["model"].items() if isinstance(v, torch.Tensor)]
    assert any(not torch.equal(checkpoint["model"][n], checkpoint["ema"][n]) for n in tensors)

    # 3. Resume to step 5: the step count continues and the ranks still agree.
    log = torchrun(out, "--steps", "5", "--resume")
    assert "Resumed from" in log, log
    assert "at step 3" in log, log
    assert "step      4/5" in log, log
    assert "step      1/5" not in log, log
    second = digests(out)
    assert [d["step"] for d in second] == [5, 5]
    assert second[0]["model"] == second[1]["model"]
    assert second[0]["model"] != first[0]["model"]
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 5
    assert resumed["ema_updates"] == 5
