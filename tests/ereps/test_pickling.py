"""Groups, representations and elements pickle by reference (pickle, torch.save, deepcopy)."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import escnn.group as eg
import numpy as np
import pytest
import torch

from ereps import Representation, direct_sum, rep_matrices
from tests.ereps import _cases as C

# cyclic, dihedral, octahedral, icosahedral and two direct products (O_h = C2 × O, C4 × C2)
GROUPS = ["C5", "D4", "O", "I", "Oh", "C4xC2"]


def _specs(key: str) -> list[str]:
    """Irreps, a direct sum and a representation with a non-trivial change of basis."""
    specs = ["irr1", "irr1+triv+irr1", "Q:irr1+triv"]
    if key in C.GROUPS_WITH_REGULAR:
        specs += ["reg", "reg+irr1", "N:quot+triv"]
    return specs


CASES = [pytest.param(k, s, id=f"{k}:{s}") for k in GROUPS for s in _specs(k)]


def _torch_round_trip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


ROUND_TRIPS: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "torch.save": _torch_round_trip,
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("key", GROUPS)
def test_groups_come_back_as_escnns_cached_object(key: str, how: str) -> None:
    G = C.group(key)
    assert ROUND_TRIPS[how](G) is G
    for irrep in G.irreps():
        assert ROUND_TRIPS[how](irrep) is irrep
    g = list(G.elements)[-1]
    restored = ROUND_TRIPS[how](g)
    assert restored == g
    assert restored.group is G


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize(("key", "spec"), CASES)
def test_representations_come_back_equal_with_equal_matrices(key: str, spec: str, how: str) -> None:
    rep = C.rep(key, spec)
    restored = ROUND_TRIPS[how](rep)
    assert isinstance(restored, Representation)
    assert restored == rep
    assert restored.group is rep.group
    assert restored.name == rep.name
    np.testing.assert_array_equal(restored.change_of_basis, rep.change_of_basis)
    torch.testing.assert_close(rep_matrices(restored), rep_matrices(rep), atol=1e-13, rtol=0)
    if rep.group.representations.get(rep.name) is rep:
        assert restored is rep  # the group's own named representation (regular, ...)


def test_representations_shared_inside_one_pickle_stay_shared() -> None:
    rep = C.rep("D4", "Q:irr1+triv")
    a, b = pickle.loads(pickle.dumps([rep, rep]))
    assert a is b


def test_registered_representation_is_registered_again_in_a_fresh_group() -> None:
    # A quotient representation is one of the group's named representations: when this process has
    # not built it yet, unpickling registers it under its name, as escnn would have.
    G = eg.direct_product(eg.cyclic_group(6), eg.cyclic_group(2))
    quotient = G.quotient_representation((3, 1))
    data = pickle.dumps(quotient)
    del G.representations[quotient.name]
    restored = pickle.loads(data)
    assert restored == quotient
    assert G.representations[quotient.name] is restored
    assert G.quotient_representation((3, 1)) is restored


def test_a_name_taken_by_another_representation_is_refused() -> None:
    G = eg.cyclic_group(7)  # used by no other test: its registry may be edited here
    mine = eg.change_basis(G.irrep(1), C.random_orthogonal(2, 7), name="ereps-test-rep")
    data = pickle.dumps(mine)
    other = eg.change_basis(G.irrep(2), np.eye(2), name="ereps-test-rep")
    G.representations["ereps-test-rep"] = other
    try:
        with pytest.raises(pickle.UnpicklingError, match="already has a different representation"):
            pickle.loads(data)
    finally:
        del G.representations["ereps-test-rep"]
    assert pickle.loads(data) == mine


_FRESH = textwrap.dedent(
    """
    import json
    import pickle
    import sys

    import ereps

    with open(sys.argv[1], "rb") as f:
        reps = pickle.load(f)
    out = {
        name: ereps.rep_matrices(rep).tolist() for name, rep in reps.items()
    }
    print(json.dumps(out))
    """
)


def test_unpickling_in_a_fresh_process_gives_the_same_matrices(tmp_path: Path) -> None:
    # In one process unpickling could only look objects up; a fresh interpreter has to rebuild them.
    reps = {
        "O:Q:irr1+triv": C.rep("O", "Q:irr1+triv"),
        "Oh:irr6+irr3+triv": C.rep("Oh", "irr6+irr3+triv"),
        "C4xC2:reg+irr1": C.rep("C4xC2", "reg+irr1"),
        "D4:sum": direct_sum([C.group("D4").irrep(1, 1), C.group("D4").regular_representation]),
    }
    path = tmp_path / "reps.pkl"
    path.write_bytes(pickle.dumps(reps))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _FRESH, str(path)],
        cwd=root,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(got) == set(reps)
    for name, rep in reps.items():
        np.testing.assert_allclose(np.asarray(got[name]), rep_matrices(rep).numpy(), atol=1e-13)
