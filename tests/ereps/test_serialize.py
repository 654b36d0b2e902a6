"""Groups and representations as JSON dictionaries: they come back equal, with equal matrices."""

from __future__ import annotations

import json
from typing import Any

import escnn.group as eg
import numpy as np
import pytest
import torch

from ereps import (
    Representation,
    group_from_dict,
    group_to_dict,
    rep_matrices,
    representation_from_dict,
    representation_to_dict,
)
from tests.ereps import _cases as C

GROUPS = ["C5", "D4", "O", "I", "Oh", "C4xC2"]


def _specs(key: str) -> list[str]:
    specs = ["irr1", "irr1+triv+irr1", "Q:irr1+triv"]
    if key in C.GROUPS_WITH_REGULAR:
        specs += ["reg", "reg+irr1"]
    return specs


CASES = [pytest.param(k, s, id=f"{k}:{s}") for k in GROUPS for s in _specs(k)]


def _json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("key", GROUPS)
def test_groups_come_back_as_escnns_cached_object(key: str) -> None:
    G = C.group(key)
    assert group_from_dict(_json(group_to_dict(G))) is G


@pytest.mark.parametrize(("key", "spec"), CASES)
def test_representations_come_back_equal_with_equal_matrices(key: str, spec: str) -> None:
    rep = C.rep(key, spec)
    restored = representation_from_dict(_json(representation_to_dict(rep)))
    assert isinstance(restored, Representation)
    assert restored == rep
    assert restored.group is rep.group
    np.testing.assert_array_equal(restored.change_of_basis, rep.change_of_basis)
    np.testing.assert_array_equal(restored.change_of_basis_inv, rep.change_of_basis_inv)
    torch.testing.assert_close(rep_matrices(restored), rep_matrices(rep), atol=0.0, rtol=0.0)
    if rep.group.representations.get(rep.name) is rep:
        assert restored is rep  # the group's own named representation (regular, ...)


def test_a_name_taken_by_another_representation_is_refused() -> None:
    G = eg.cyclic_group(11)  # used by no other test: its registry may be edited here
    mine = eg.change_basis(G.irrep(1), C.random_orthogonal(2, 3), name="ereps-serialize-rep")
    data = _json(representation_to_dict(mine))
    G.representations["ereps-serialize-rep"] = eg.change_basis(
        G.irrep(2), np.eye(2), name="ereps-serialize-rep"
    )
    try:
        with pytest.raises(ValueError, match="already has a different representation"):
            representation_from_dict(data)
    finally:
        del G.representations["ereps-serialize-rep"]


def test_bad_input_is_refused_naming_what_was_expected() -> None:
    with pytest.raises(TypeError, match="expects an escnn group; got int"):
        group_to_dict(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expects an escnn\.group\.Representation; got str"):
        representation_to_dict("regular")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expects the keys 'group' and 'keys'"):
        group_from_dict({"name": "C4"})
    with pytest.raises(ValueError, match=r"expects the keys \['group', 'name'"):
        representation_from_dict({"name": "regular"})
    with pytest.raises(ValueError, match="cyclic, dihedral, octahedral or icosahedral"):
        group_to_dict(eg.so2_group())


def _c4_irrep_dict() -> dict[str, Any]:
    data: dict[str, Any] = _json(representation_to_dict(eg.cyclic_group(4).irrep(1)))
    return data


def _edit(path: tuple[str, ...], value: Any) -> Any:
    data = _c4_irrep_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


# Each was answered by escnn with a KeyError, a TypeError or a bare assert (stripped by python -O,
# which then built a wrong representation): refused here with a ValueError naming the key.
BAD_REPRESENTATIONS = [
    pytest.param(("group", "group"), "Foo", r"'group' to be one of \['CyclicGroup'", id="family"),
    pytest.param(("group", "keys"), {"M": 4}, r"'keys' of a CyclicGroup to be \{'N'", id="keys"),
    pytest.param(("group", "keys"), 4, r"'keys' of a CyclicGroup", id="keys-int"),
    pytest.param(("group", "keys", "N"), "4", "'N' to be a positive int; got '4'", id="N-str"),
    pytest.param(("group", "keys", "N"), -1, "'N' to be a positive int; got -1", id="N-neg"),
    pytest.param(
        ("group",),
        {"direct_product": [{"group": "CyclicGroup", "keys": {"N": 2}}]},
        "'direct_product' to be a list of two",
        id="product-of-one",
    ),
    pytest.param(
        ("irreps",), [[5]], r"irrep ids of C4 \(one of \[\[0\], \[1\], \[2\]\]\)", id="id"
    ),
    pytest.param(("irreps",), 3, "'irreps' to be a non-empty list", id="irreps-int"),
    pytest.param(
        ("change_of_basis",), [[1.0]], r"finite 2x2 matrix .* shape \(1, 1\)", id="Q-shape"
    ),
    pytest.param(("change_of_basis",), "abc", "'change_of_basis' to be a 2x2 matrix", id="Q-str"),
    pytest.param(
        ("change_of_basis",), [[2.0, 0.0], [0.0, 1.0]], "inverse of 'change_of_basis'", id="Q-inv"
    ),
    pytest.param(("supported_nonlinearities",), 5, "list of str; got 5", id="nonlinearities"),
    pytest.param(("registered",), "no", "'registered' to be a bool; got 'no'", id="registered"),
    pytest.param(("name",), 5, "'name' to be a str; got 5", id="name"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_REPRESENTATIONS)
def test_bad_dictionaries_are_refused_with_a_value_error_naming_the_key(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    data = _edit(path, value)
    if path[0] != "group" and path != ("name",):
        data["name"] = "ereps-serialize-bad"  # no clash with the group's own irrep_1
    with pytest.raises(ValueError, match=message):
        representation_from_dict(data)
