"""``tools/train.py --resume`` refuses a checkpoint of another run (one process, in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train
from eregressors import config_from_dict, eCondTransformerRegressorConfig

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


def test_resume_refuses_another_model_and_the_checkpoint_rebuilds_its_model(
    tmp_path: Path,
) -> None:
    out = ["--out", str(tmp_path)]
    train.main([*TINY, *out, "--steps", "2"])
    path = tmp_path / train.CHECKPOINT_NAME
    checkpoint = torch.load(path, weights_only=True)
    # The checkpoint's configuration is the model's own: it alone rebuilds the trained model.
    config = config_from_dict(checkpoint["model_config"])
    assert isinstance(config, eCondTransformerRegressorConfig)
    assert (config.num_layers, config.embedding_dim, config.num_attention_heads) == (1, 8, 1)
    model = config.build()
    model.load_state_dict(checkpoint["model"])
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, checkpoint["model"][name]), name
    before = path.read_bytes()
    with pytest.raises(ValueError, match="Resume with the same model options"):
        train.main([*TINY, *out, "--steps", "3", "--resume", "--layers", "2"])
    assert path.read_bytes() == before
