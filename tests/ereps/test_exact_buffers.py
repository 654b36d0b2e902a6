"""ExactBuffersModule: constants that follow the device, keep their dtype and are not state."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from ereps import ExactBuffersModule


class _Module(ExactBuffersModule):
    def __init__(self) -> None:
        super().__init__()
        self.register_exact_buffer("exact", torch.tensor([1.0 / 3.0], dtype=torch.float64))
        self.register_constant("index", torch.arange(70_000, dtype=torch.int64))
        self.register_buffer("plain", torch.tensor([1.0 / 3.0], dtype=torch.float64))
        self.weight = nn.Parameter(torch.ones(2, dtype=torch.float64))
        self.exact: torch.Tensor
        self.index: torch.Tensor
        self.plain: torch.Tensor


@pytest.mark.parametrize("cast", ["float", "half", "bfloat16", "to_float32"])
def test_constants_keep_their_dtype(cast: str) -> None:
    m = _Module()
    if cast == "to_float32":
        m.to(torch.float32)
    else:
        getattr(m, cast)()
    assert m.exact.dtype == torch.float64
    assert m.index.dtype == torch.int64
    assert torch.equal(m.index, torch.arange(70_000))
    assert m.plain.dtype != torch.float64
    m.double()
    # No precision was lost on the round trip, unlike the ordinary buffer.
    assert m.exact.item() == 1.0 / 3.0
    assert m.plain.item() != 1.0 / 3.0


def test_constants_follow_the_device_and_submodules() -> None:
    outer = nn.Sequential(_Module())
    outer.to("meta")
    inner = outer[0]
    assert isinstance(inner, _Module)
    assert inner.exact.device.type == "meta"
    assert inner.exact.dtype == torch.float64
    assert inner.index.device.type == "meta"
    assert inner.index.dtype == torch.int64
    assert inner.weight.device.type == "meta"
    # to_empty allocates new storage for state; constants keep their values.
    cpu = nn.Sequential(_Module()).to_empty(device="cpu")[0]
    assert isinstance(cpu, _Module)
    assert torch.equal(cpu.index, torch.arange(70_000))


def test_constants_are_not_state() -> None:
    m = _Module()
    assert set(m.state_dict()) == {"plain", "weight"}
    assert [name for name, _ in m.named_buffers()] == ["plain"]
    assert dict(m.named_constants()).keys() == {"exact", "index"}
    outer = nn.Sequential(m)
    assert {n for n, _ in m.named_constants()} == {"exact", "index"}
    assert [n for n, _ in outer.named_buffers()] == ["0.plain"]
    # Registering an exact constant converts to float64 whatever the input dtype.
    m.register_exact_buffer("other", torch.ones(3, dtype=torch.float32))
    assert m.__dict__["other"].dtype == torch.float64
    with pytest.raises(KeyError, match="already"):
        m.register_constant("weight", torch.ones(2))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        m.register_constant("bad", [1.0])  # type: ignore[arg-type]


def test_constants_survive_deepcopy_and_pickle() -> None:
    m = _Module()
    for copied in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert isinstance(copied, _Module)
        assert torch.equal(copied.index, m.index)
        assert copied.index.data_ptr() != m.index.data_ptr()
        assert dict(copied.named_constants()).keys() == {"exact", "index"}
