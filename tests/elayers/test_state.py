"""state_dict round trips, and refusing state dicts built for other representations."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from elayers import (
    InvariantBias,
    eAffine,
    eLayerNorm,
    eLinear,
    eMLP,
    eModule,
    eMultiheadAttention,
    eRMSNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    eTransformerEncoder,
    eTransformerEncoderLayer,
)
from tests.elayers import _cases as C

BUILDERS: dict[str, Callable[[], eModule]] = {
    "eLinear": lambda: eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "2reg")),
    "InvariantBias": lambda: InvariantBias(C.rep("D3", "quot+irr2")),
    "eAffine": lambda: eAffine(C.rep("O", "std3+quot")),
    "eRMSNorm": lambda: eRMSNorm(C.rep("C8", "2reg"), bias=True),
    "eLayerNorm": lambda: eLayerNorm(C.rep("D3", "Q:quot+irr2")),
    "eMLP": lambda: eMLP(C.rep("D3", "irr2"), C.rep("D3", "triv"), [12]),
    "eMultiheadAttention": lambda: eMultiheadAttention(C.rep("C8", "2reg"), 2),
    "eTransformerEncoderLayer": lambda: eTransformerEncoderLayer(
        C.rep("C8", "2reg"), 2, 16, dropout=0.0, norm_module="rmsnorm"
    ),
    "eTransformerDecoder": lambda: eTransformerDecoder(
        eTransformerDecoderLayer(C.rep("C8", "2reg"), 2, 16, dropout=0.0), 2
    ),
    "eTransformerEncoder": lambda: eTransformerEncoder(
        eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 16, dropout=0.0),
        2,
        norm=eLayerNorm(C.rep("C8", "2reg")),
    ),
}


def _run(module: eModule) -> Tensor:
    n = module.in_rep.size
    x = C.seeded_randn(2, 3, n, dtype=torch.float32, seed=4)
    with torch.no_grad():
        if isinstance(module, eMultiheadAttention):
            return module(x, x, x)[0]
        if isinstance(module, eTransformerDecoder):
            return module(x, x.flip(1))
        out: Tensor = module(x)
        return out


def _save_load(state: dict[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


@pytest.mark.parametrize("name", list(BUILDERS))
def test_state_dict_round_trip(name: str) -> None:
    source = BUILDERS[name]().eval()
    C.perturb_(source, scale=0.2)
    state = source.state_dict()
    assert any(key.endswith("_extra_state") for key in state)
    target = BUILDERS[name]().eval()
    assert C.rel_err(_run(target), _run(source)) > 1e-3
    target.load_state_dict(_save_load(state))
    torch.testing.assert_close(_run(target), _run(source), rtol=0, atol=0)
    for key, value in target.state_dict().items():
        if isinstance(value, Tensor):
            assert torch.equal(value, state[key]), key


def _load_error(source: nn.Module, target: nn.Module) -> str:
    state = _save_load(source.state_dict())
    with pytest.raises(ValueError, match="Cannot load a state dict") as info:
        target.load_state_dict(state)
    return str(info.value)


def test_same_sizes_other_group_is_refused() -> None:
    # C8 and D4 both have order 8: every tensor has the same shape.
    c8 = eLinear(C.rep("C8", "2reg"), C.rep("C8", "reg"))
    d4 = eLinear(C.rep("D4", "2reg"), C.rep("D4", "reg"))
    message = _load_error(c8, d4)
    assert "C8" in message
    assert "D4" in message
    layer_c8 = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 16)
    layer_d4 = eTransformerEncoderLayer(C.rep("D4", "2reg"), 2, 16)
    message = _load_error(layer_c8, layer_d4)
    assert "C8" in message
    assert "D4" in message


def test_same_sizes_other_basis_is_refused() -> None:
    # The regular representation and a permuted-basis version of it: same sizes, other maps.
    regular = eAffine(C.rep("D3", "reg"))
    permuted = eAffine(C.rep("D3", "P:reg"))
    assert regular.scale.shape == permuted.scale.shape
    message = _load_error(permuted, regular)
    assert "P:reg" in message
    assert "regular" in message
    a = eLinear(C.rep("D3", "P:reg"), C.rep("D3", "triv+irr2"))
    b = eLinear(C.rep("D3", "Q:reg"), C.rep("D3", "triv+irr2"))
    assert a.weight_params.shape == b.weight_params.shape
    message = _load_error(a, b)
    assert "P:reg" in message
    assert "Q:reg" in message


def test_other_sizes_are_refused() -> None:
    small = eLinear(C.rep("C8", "2reg"), C.rep("C8", "reg"))
    large = eLinear(C.rep("C8", "3reg"), C.rep("C8", "reg"))
    with pytest.raises((RuntimeError, ValueError), match=r"size mismatch|3reg|2reg"):
        large.load_state_dict(small.state_dict())


def test_refused_state_dict_leaves_the_module_unchanged() -> None:
    # The refusal must come before any parameter is overwritten (validation before work).
    c8 = eLinear(C.rep("C8", "2reg"), C.rep("C8", "reg"))
    d4 = eLinear(C.rep("D4", "2reg"), C.rep("D4", "reg"))
    before = {name: p.detach().clone() for name, p in d4.named_parameters()}
    _load_error(c8, d4)
    for name, p in d4.named_parameters():
        assert torch.equal(p, before[name]), f"{name} was overwritten by the refused state dict"
