"""``tools/train.py --resume`` refuses a checkpoint of another run (one process, in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train

TINY = [
    "--group", "C4", "--model", "equivariant", "--embedding-dim", "8", "--layers", "1",
    "--heads", "1", "--batch-size", "4", "--train-size", "8", "--log-every", "1",
    "--save-every", "100", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", "1"), ("--batch-size", "2"), ("--train-size", "12"), ("processes", "2")],
)
def test_resume_refuses_another_run(tmp_path: Path, option: str, value: str) -> None:
    out = ["--out", str(tmp_path)]
    assert train.main([*TINY, *out, "--steps", "2"]) == 2
    path = tmp_path / train.CHECKPOINT_NAME
    before = path.read_bytes()
    if option == "processes":
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["world_size"] = int(value)
        torch.save(checkpoint, path)
        before = path.read_bytes()
        argv = [*TINY, *out, "--steps", "3", "--resume"]
        expected = "2 processes (command line: 1 processes)"
    else:
        argv = [*TINY, *out, "--steps", "3", "--resume", option, value]
        expected = f"{option} "
    with pytest.raises(ValueError, match="belongs to another run") as info:
        train.main(argv)
    assert expected in str(info.value)
    assert path.read_bytes() == before  # nothing was trained or written


def test_resume_of_the_same_run_continues(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path)]
    train.main([*TINY, *out, "--steps", "3", "--stop-after", "1"])
    assert train.main([*TINY, *out, "--steps", "3", "--resume"]) == 3
    assert torch.load(tmp_path / train.CHECKPOINT_NAME, weights_only=True)["step"] == 3
