"""Tests of the weight-decay parameter groups."""

from __future__ import annotations

import pytest
import torch

from eregressors._optim import default_optim_groups, split_optim_groups

from ._helpers import assert_partition, group_names


def test_default_rule_and_sharing() -> None:
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, torch.nn.LayerNorm(4), lin, torch.nn.MultiheadAttention(4, 2))
    model.register_parameter("frozen", torch.nn.Parameter(torch.zeros(1), requires_grad=False))
    decay, no_decay = default_optim_groups(model, 0.5)
    assert_partition(model, [decay, no_decay])
    assert group_names(model, decay) == {"0.weight", "3.in_proj_weight", "3.out_proj.weight"}
    assert group_names(model, no_decay) == {
        "0.bias",
        "1.weight",
        "1.bias",
        "3.in_proj_bias",
        "3.out_proj.bias",
    }


def test_custom_rule() -> None:
    model = torch.nn.Linear(2, 2)
    decay, no_decay = split_optim_groups(model, 0.1, lambda module, name: name == "bias")
    assert group_names(model, decay) == {"bias"}
    assert group_names(model, no_decay) == {"weight"}


def test_negative_decay() -> None:
    with pytest.raises(ValueError, match="weight_decay must be >= 0; got -1"):
        default_optim_groups(torch.nn.Linear(1, 1), -1.0)
