"""Helpers shared by the eregressors tests."""

from __future__ import annotations

import torch

from eregressors import OptimGroup


def assert_partition(model: torch.nn.Module, groups: list[OptimGroup]) -> None:
    """Every trainable parameter of ``model`` lies in exactly one of ``groups`` (by identity)."""
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter appears twice"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable


def group_names(model: torch.nn.Module, group: OptimGroup) -> set[str]:
    """The qualified names of the parameters of ``group``."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()``, typed."""
    loss.backward()  # type: ignore[no-untyped-call]
