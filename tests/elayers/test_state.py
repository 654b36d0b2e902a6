"""state_dict round trips, and refusing state dicts built for other representations."""

from __future__ import annotations

import io
from collections.abc import Callable

import escnn.group as eg
import numpy as np
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
from elayers._records import _legacy_signature
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


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, Tensor)}


def _assert_unchanged(module: nn.Module, before: dict[str, Tensor]) -> None:
    after = _snapshot(module)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"a refused load overwrote {changed}"


def _c8_then(spec: str) -> nn.Sequential:
    # A plain container: the eModule that refuses is the last one torch reaches.
    return nn.Sequential(
        eLinear(C.rep("C8", "2reg"), C.rep("C8", "reg")),
        nn.Linear(8, 8),
        nn.ModuleDict({"inner": nn.Sequential(eRMSNorm(C.rep("C8", "reg"), bias=True))}),
        eAffine(C.rep("D4" if spec == "D4" else "C8", "reg")),
    )


@pytest.mark.parametrize("other", ["D4", "shape"])
def test_refused_load_into_a_plain_container_changes_nothing(other: str) -> None:
    source = _c8_then(other)
    target = _c8_then("C8")
    if other == "shape":
        source[1] = nn.Linear(7, 8)
    C.perturb_(source, scale=0.3)
    before = _snapshot(target)
    state = _save_load(source.state_dict())
    if other == "D4":
        with pytest.raises(ValueError, match="Cannot load a state dict into Sequential") as info:
            target.load_state_dict(state)
        assert "3: the state dict has in_rep" in str(info.value)
        assert "D4" in str(info.value)
    else:
        with pytest.raises(RuntimeError, match=r"size mismatch for 1\.weight"):
            target.load_state_dict(state)
    _assert_unchanged(target, before)
    # A container that was built before its eModule child was added is guarded too.
    late = nn.Sequential(nn.Linear(8, 8))
    outer = nn.Sequential(late)
    late.append(eAffine(C.rep("C8", "reg")))
    late_source = nn.Sequential(nn.Sequential(nn.Linear(8, 8), eAffine(C.rep("D4", "reg"))))
    before = _snapshot(outer)
    with pytest.raises(ValueError, match="Cannot load a state dict"):
        outer.load_state_dict(late_source.state_dict())
    _assert_unchanged(outer, before)


def test_every_refused_module_is_listed_and_a_matching_load_works() -> None:
    a = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 16, dropout=0.0)
    b = eTransformerEncoderLayer(C.rep("D4", "2reg"), 2, 16, dropout=0.0)
    before = _snapshot(b)
    with pytest.raises(ValueError, match="Cannot load a state dict") as info:
        b.load_state_dict(a.state_dict())
    message = str(info.value)
    for where in (
        "eTransformerEncoderLayer: the state dict has in_rep",
        "self_attn.in_proj: in_rep",
    ):
        assert where in message
    assert "nothing was loaded" in message
    _assert_unchanged(b, before)
    # strict=False does not weaken the check.
    with pytest.raises(ValueError, match="Cannot load a state dict"):
        b.load_state_dict(a.state_dict(), strict=False)
    _assert_unchanged(b, before)
    c = eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 16, dropout=0.0)
    c.load_state_dict(a.state_dict())
    x = C.seeded_randn(2, 3, 16, dtype=torch.float32)
    torch.testing.assert_close(c.eval()(x), a.eval()(x), rtol=0, atol=0)


def _rotated(theta: float, name: str) -> eg.Representation:
    base = C.rep("D3", "triv+irr2")
    q = np.eye(3)
    q[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    return eg.change_basis(base, q, name=name)


def test_records_compare_bases_with_a_tolerance_and_ignore_names() -> None:
    # cos θ just below and just above 0.123456785: the bases agree to 1e-12, but rounded to 8
    # decimals (the old record) they differ.
    theta_lo = float(np.arccos(0.123456785 - 1e-12))
    theta_hi = float(np.arccos(0.123456785 + 1e-12))
    lo, hi = _rotated(theta_lo, "basis-a"), _rotated(theta_hi, "renamed")
    assert _legacy_signature(lo)[3] != _legacy_signature(hi)[3]
    source = eLinear(lo, C.rep("D3", "2reg"))
    target = eLinear(hi, C.rep("D3", "2reg"))
    C.perturb_(source)
    target.load_state_dict(_save_load(source.state_dict()))
    assert torch.equal(target.weight_params, source.weight_params)
    # A rotation by 1e-3 is another basis: refused, and named as such.
    other = eLinear(_rotated(theta_lo + 1e-3, "other"), C.rep("D3", "2reg"))
    with pytest.raises(ValueError, match="in another basis"):
        other.load_state_dict(source.state_dict())


def _plain_types(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_types(v) for v in value)
    return isinstance(value, (str, int, float, bool))


def test_records_are_plain_containers() -> None:
    layer = eLinear(C.rep("O", "std3+quot"), C.rep("O", "reg"))
    record = layer.state_dict()["_extra_state"]
    assert _plain_types(record)
    assert record["format"] == 2
    assert record["in_rep"]["group"] == layer.in_rep.group.name


def _legacy_state(module: eModule) -> dict[str, object]:
    state: dict[str, object] = dict(module.state_dict())
    for key in [k for k in state if k.endswith("_extra_state")]:
        owner = module.get_submodule(key.rsplit(".", 1)[0]) if "." in key else module
        assert isinstance(owner, eModule)
        state[key] = {
            which: "|".join([*_legacy_signature(rep)[:1], rep.name, *_legacy_signature(rep)[1:]])
            for which, rep in (("in_rep", owner.in_rep), ("out_rep", owner.out_rep))
        }
    return state


def test_records_of_the_old_format_load_or_are_refused_clearly() -> None:
    source = eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "2reg"))
    C.perturb_(source)
    target = eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "2reg"))
    target.load_state_dict(_save_load(_legacy_state(source)))
    assert torch.equal(target.weight_params, source.weight_params)
    other_group = eLinear(C.rep("C8", "2reg"), C.rep("C8", "reg"))
    wrong = eLinear(C.rep("D4", "2reg"), C.rep("D4", "reg"))
    with pytest.raises(ValueError, match="format 1"):
        wrong.load_state_dict(_legacy_state(other_group))
    other_basis = eAffine(C.rep("D3", "P:reg"))
    regular = eAffine(C.rep("D3", "reg"))
    with pytest.raises(ValueError, match="cannot be compared with a tolerance"):
        regular.load_state_dict(_legacy_state(other_basis))
