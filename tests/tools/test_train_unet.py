"""``tools/train.py --arch unet``: two CPU processes, identical ranks, an equivariant checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ereps
from _flow import parse_planar_group
from eregressors import config_from_dict, eConditionalUnet1DConfig
from tests.tools.test_train_distributed import digests, torchrun

UNET = ["--arch", "unet", "--down-dims", "8", "16", "--n-groups", "1", "--kernel-size", "3"]


@pytest.mark.slow
def test_two_process_unet_training_and_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "unet"
    log = torchrun(out, *UNET, "--steps", "3")
    ranks = digests(out)
    assert [d["step"] for d in ranks] == [3, 3]
    assert ranks[0]["model"] == ranks[1]["model"], log
    assert ranks[0]["ema"] == ranks[1]["ema"], log
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    config = config_from_dict(checkpoint["model_config"])
    assert isinstance(config, eConditionalUnet1DConfig)  # the U-Net
    assert config.down_dims == (8, 16)
    group = parse_planar_group(checkpoint["group"])
    model = config.build()
    assert type(model).__name__ == "eConditionalUnet1D"
    model.load_state_dict(checkpoint["ema"])
    model = model.double().eval()
    k = torch.full((4,), 123.0, dtype=torch.float64)
    error = ereps.check_equivariance(
        lambda X, Z: model(X, k, Z),
        [group.rep, group.rep],
        group.rep,
        inputs=[
            torch.randn(4, 13, 2, dtype=torch.float64),  # any horizon
            torch.randn(4, config.cond_horizon, 2, dtype=torch.float64),
        ],
    )
    assert error < 1e-10
