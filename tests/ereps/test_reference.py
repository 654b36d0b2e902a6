"""Same matrices on numpy 1 with lie_learn and on numpy 2 without it.

The stored values (``tests/ereps/data``, see ``tests/ereps/_reference.py``) were computed once by
escnn with the real ``lie_learn`` on numpy 1. Here they are compared with the environment the tests
run in: where ``lie_learn`` cannot load (Python 3.13+, numpy 2) escnn runs on ereps' own
``wigner_D_matrix``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ereps._wigner import SHIM_MARKER, wigner_D_matrix
from tests.ereps import _reference as R


def _load(path: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


REPS = _load(R.REP_FILE)
WIGNER = _load(R.WIGNER_FILE)
# The full icosahedral group takes ~12 s to build (the others are built by other tests anyway).
SLOW_GROUPS = {"Ih"}


def _real_lie_learn() -> Any:
    """lie_learn's ``wigner_D_matrix`` if the real package is what escnn uses here, else None."""
    module = importlib.import_module("lie_learn")
    if getattr(module, SHIM_MARKER, False):
        return None
    return importlib.import_module("lie_learn.representations.SO3.wigner_d").wigner_D_matrix


def test_reference_files_come_from_numpy_1() -> None:
    assert REPS["generated_with"]["numpy"].startswith("1.")
    assert WIGNER["generated_with"]["numpy"].startswith("1.")
    assert set(REPS["groups"]) == set(R.GROUPS)


@pytest.mark.parametrize("degree", range(5))
def test_wigner_matches_stored_lie_learn_values(degree: int) -> None:
    for angles, expected in zip(WIGNER["angles"], WIGNER["small"][str(degree)], strict=True):
        got = wigner_D_matrix(degree, *angles)
        assert got.shape == (2 * degree + 1, 2 * degree + 1)
        assert R.max_abs(got, expected) < 1e-13


def test_wigner_matches_stored_values_at_a_large_degree() -> None:
    degree, step = WIGNER["large_l"], WIGNER["large_step"]
    got = wigner_D_matrix(degree, *WIGNER["large_angles"])
    assert R.max_abs(got[::step, ::step], WIGNER["large"]) < 1e-12
    # and the whole matrix is orthogonal (a representation of SO(3) in a real basis)
    assert np.abs(got @ got.T - np.eye(2 * degree + 1)).max() < 1e-12


def test_wigner_is_a_homomorphism() -> None:
    # D(R1 R2) = D(R1) D(R2): compose two ZYZ rotations with scipy and compare.
    Rotation: Any = importlib.import_module("scipy.spatial.transform").Rotation

    rng = np.random.default_rng(3)
    for degree in (1, 2, 5):
        r1, r2 = Rotation.random(random_state=rng), Rotation.random(random_state=rng)
        d = [wigner_D_matrix(degree, *r.as_euler("ZYZ")) for r in (r1, r2, r1 * r2)]
        assert np.abs(d[0] @ d[1] - d[2]).max() < 1e-12


def test_wigner_matches_lie_learn_where_installed() -> None:
    reference = _real_lie_learn()
    if reference is None:
        pytest.skip("the real lie_learn is not installed (or does not load with this numpy)")
    rng = np.random.default_rng(0)
    for degree in (*range(9), 30, 100):
        angles = rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        assert R.max_abs(wigner_D_matrix(degree, *angles), reference(degree, *angles)) < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l": -1}, "degree l >= 0"),
        ({"l": 1.5}, "degree l >= 0"),
        ({"l": 2, "field": "complex"}, "supports only the basis"),
        ({"l": 2, "normalization": "seismology"}, "supports only the basis"),
        ({"l": 2, "beta": np.zeros(3)}, "beta to be a real scalar"),
    ],
)
def test_wigner_rejects_what_it_does_not_implement(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"alpha": 0.1, "beta": 0.2, "gamma": 0.3, **kwargs}
    with pytest.raises(ValueError, match=match):
        wigner_D_matrix(**args)


@pytest.mark.parametrize(
    "key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_GROUPS else k for k in R.GROUPS]
)
def test_escnn_matrices_match_the_numpy_1_reference(key: str) -> None:
    group = R.GROUPS[key]()
    stored = REPS["groups"][key]
    assert group.order() == stored["order"]
    reps = R.representations(key, group)
    assert set(reps) == set(stored["sketches"])
    for name, rep in reps.items():
        scale = max(1.0, float(np.abs(np.asarray(stored["sketches"][name])).max()))
        err = R.max_abs(R.sketch(rep), stored["sketches"][name])
        assert err < 1e-9 * scale, (key, name, err)


_SHIM_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    if sys.argv[1] == "absent":
        sys.modules["lie_learn"] = None  # as on Python 3.13: lie_learn cannot be imported
    # "broken": a lie_learn on PYTHONPATH fails like a numpy-1 build under numpy 2

    import ereps
    import ereps._wigner as wigner
    import escnn.group.groups.so3_utils as so3_utils

    assert getattr(sys.modules["lie_learn"], wigner.SHIM_MARKER, False)
    calls = []
    def counted(*args, **kwargs):
        calls.append(args[0])
        return wigner.wigner_D_matrix(*args, **kwargs)
    assert so3_utils.wigner_D_matrix is wigner.wigner_D_matrix
    so3_utils.wigner_D_matrix = counted

    from tests.ereps import _reference as R

    stored = json.loads(R.REP_FILE.read_text())["groups"]["O"]["sketches"]
    group = R.GROUPS["O"]()
    worst = max(
        R.max_abs(R.sketch(rep), stored[name])
        for name, rep in R.representations("O", group).items()
    )
    print(json.dumps({"worst": worst, "calls": len(calls)}))
    """
)


_BROKEN_WIGNER = textwrap.dedent(
    """
    import sys

    sys.stderr.write("A module that was compiled using NumPy 1.x cannot be run in NumPy 2.x\\n")
    raise AttributeError("_ARRAY_API not found")
    """
)


@pytest.mark.parametrize("mode", ["absent", "broken"])
def test_replacement_is_installed_when_lie_learn_fails_and_gives_the_same_matrices(
    mode: str, tmp_path: Path
) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    if mode == "broken":
        package = tmp_path / "lie_learn" / "representations" / "SO3"
        package.mkdir(parents=True)
        for folder in (package, package.parent, package.parent.parent):
            (folder / "__init__.py").write_text("")
        (package / "wigner_d.py").write_text(_BROKEN_WIGNER)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), root])
    done = subprocess.run(
        [sys.executable, "-c", _SHIM_SCRIPT, mode],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "compiled using NumPy 1.x" not in done.stderr  # the failed probe stays quiet
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] > 0  # escnn evaluated the octahedral irreps through the replacement
    assert result["worst"] < 1e-9
