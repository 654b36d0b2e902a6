"""The shared argument checks."""

from __future__ import annotations

import escnn.group as eg
import numpy as np
import pytest

from ereps import check_orthogonal, check_representation, check_same_group
from tests.ereps import _cases as C


def test_check_representation() -> None:
    r = C.rep("D4", "reg")
    assert check_representation(r, "rep") is r
    with pytest.raises(
        TypeError, match=r"my_rep must be an escnn.group.Representation; got ndarray"
    ):
        check_representation(np.eye(8), "my_rep")
    with pytest.raises(ValueError, match="finite group") as info:
        check_representation(eg.so2_group(2).irrep(1), "my_rep")
    assert "my_rep" in str(info.value)


def test_check_same_group() -> None:
    a, b, c = C.rep("D4", "reg"), C.rep("D4", "irr2"), C.rep("D3", "irr2")
    check_same_group([a, b], ["a", "b"])
    with pytest.raises(ValueError, match="same group") as info:
        check_same_group([a, b, c], ["a", "b", "c"])
    message = str(info.value)
    assert a.group.name in message
    assert c.group.name in message
    assert "Rebuild c" in message


@pytest.mark.parametrize("key", C.SMALL_GROUPS)
def test_check_orthogonal(key: str) -> None:
    for spec in ("reg", "quot", "Q:irr1+triv+irr1", "irr1"):
        check_orthogonal(C.rep(key, spec), "rep")
    bad = C.rep(key, "N:irr1+triv")
    Q = np.asarray(bad.change_of_basis)
    assert np.abs(Q.T @ Q - np.eye(bad.size)).max() > 0.1
    with pytest.raises(ValueError, match="orthogonal change of basis") as info:
        check_orthogonal(bad, "in_rep")
    assert "in_rep" in str(info.value)
    assert bad.name in str(info.value)
