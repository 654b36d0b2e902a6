"""ExactBuffersModule: float64 buffers that survive dtype casts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ereps import ExactBuffersModule


class _Module(ExactBuffersModule):
    def __init__(self) -> None:
        super().__init__()
        self.register_exact_buffer("exact", torch.tensor([1.0 / 3.0], dtype=torch.float64))
        self.register_buffer("plain", torch.tensor([1.0 / 3.0], dtype=torch.float64))
        self.weight = nn.Parameter(torch.ones(2, dtype=torch.float64))
        self.exact: torch.Tensor
        self.plain: torch.Tensor


@pytest.mark.parametrize("cast", ["float", "half", "bfloat16", "to_float32"])
def test_exact_buffers_keep_float64(cast: str) -> None:
    m = _Module()
    if cast == "to_float32":
        m.to(torch.float32)
    else:
        getattr(m, cast)()
    assert m.exact.dtype == torch.float64
    assert m.plain.dtype != torch.float64
    assert m.weight.dtype != torch.float64
    m.double()
    # No precision was lost on the round trip, unlike the ordinary buffer.
    assert m.exact.item() == 1.0 / 3.0
    assert m.plain.item() != 1.0 / 3.0


def test_exact_buffers_follow_the_device_and_submodules() -> None:
    outer = nn.Sequential(_Module())
    outer.to("meta")
    inner = outer[0]
    assert isinstance(inner, _Module)
    assert inner.exact.device.type == "meta"
    assert inner.exact.dtype == torch.float64
    assert inner.weight.device.type == "meta"


def test_exact_buffers_are_not_persistent() -> None:
    m = _Module()
    state = m.state_dict()
    assert "exact" not in state
    assert "plain" in state
    # Registering converts to float64 whatever the input dtype.
    m.register_exact_buffer("other", torch.ones(3, dtype=torch.float32))
    assert m.get_buffer("other").dtype == torch.float64
