"""Stored reference values: escnn's representation matrices and lie_learn's Wigner D-matrices.

The files in ``tests/ereps/data/`` were generated once, with escnn and the real ``lie_learn`` on
numpy 1 (Python 3.11, numpy 1.26.4, escnn 1.0.11, lie-learn 0.0.2), by

    uv run --no-sync python -m tests.ereps._reference

in an environment where ``lie_learn`` imports (the workspace drops it; install it with
``uv pip install "numpy<2" lie-learn==0.0.2``). The tests compare the current environment (numpy
2, ereps' own ``wigner_D_matrix`` in place of lie_learn) against them.

To keep the files small, a representation is stored as a *sketch* that depends on every matrix
and on the order of the elements: ``S = Vᵀ (Σ_i w_i ρ(g_i)) U`` with fixed, formula-defined
weights ``w_i`` and matrices ``U, V`` of shape ``(n, k)``, ``k = min(n, 3)`` (``U = V = I`` for
``n <= 5``). Two representations whose matrices differ by ``ε`` have sketches that differ by
``O(ε)``, so a tolerance (not a hash of rounded values) decides.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import escnn.group as eg
import numpy as np
import numpy.typing as npt

from ereps import Group, Representation

Mat = npt.NDArray[np.float64]

DATA = Path(__file__).parent / "data"
REP_FILE = DATA / "rep_reference.json"
WIGNER_FILE = DATA / "wigner_reference.json"

# Every group the project tests: cyclic, dihedral, octahedral, icosahedral and the direct products.
GROUPS: dict[str, Callable[[], Group]] = {
    "C5": lambda: eg.cyclic_group(5),
    "C6": lambda: eg.cyclic_group(6),
    "C8": lambda: eg.cyclic_group(8),
    "D3": lambda: eg.dihedral_group(3),
    "D4": lambda: eg.dihedral_group(4),
    "D6": lambda: eg.dihedral_group(6),
    "O": eg.octa_group,
    "I": eg.ico_group,
    "Oh": eg.full_octa_group,
    "Ih": eg.full_ico_group,
    "C4xC2": lambda: eg.direct_product(eg.cyclic_group(4), eg.cyclic_group(2)),
}
# escnn takes ~12 s for the regular representation of the full icosahedral group: irreps only.
NO_REGULAR = frozenset({"Ih"})

# Wigner D reference: full matrices for l <= 4 at a few angles, a grid of entries for a large l.
WIGNER_ANGLES = ((0.3, 1.1, 2.9), (4.0, 2.5, 0.7), (6.1, 0.05, 3.3))
LARGE_L = 40
LARGE_L_ANGLES = (1.9, 0.8, 5.2)
LARGE_L_STEP = 10


def weights(order: int) -> Mat:
    """The fixed weights ``w_i`` of the sketch (a formula, not a random stream)."""
    i = np.arange(order, dtype=np.float64)
    w: Mat = np.cos(0.7 * i + 0.3) + 0.25 * np.sin(2.3 * i + 1.0)
    return w


def _frames(n: int) -> tuple[Mat, Mat]:
    if n <= 5:
        return np.eye(n), np.eye(n)
    j = np.arange(n, dtype=np.float64)[:, None]
    k = np.arange(3, dtype=np.float64)[None, :]
    return np.cos(1.3 * j + 2.1 * k + 0.5), np.sin(0.9 * j + 1.7 * k + 0.2)


def sketch(rep: Representation) -> Mat:
    """``Vᵀ (Σ_i w_i ρ(g_i)) U`` over the elements in escnn's order (see the module docstring)."""
    elements = list(rep.group.elements)
    w = weights(len(elements))
    total = sum(
        (wi * np.asarray(rep(g), dtype=np.float64) for wi, g in zip(w, elements, strict=True)),
        start=np.zeros((rep.size, rep.size)),
    )
    u, v = _frames(rep.size)
    result: Mat = np.asarray(v.T @ total @ u, dtype=np.float64)
    return result


def representations(key: str, group: Group) -> dict[str, Representation]:
    """The representations recorded for a group: its irreps, regular and standard ones."""
    reps: dict[str, Representation] = {f"irrep{tuple(irrep.id)}": irrep for irrep in group.irreps()}
    if key not in NO_REGULAR:
        reps["regular"] = group.regular_representation
    if key in ("O", "I"):
        reps["standard"] = group.standard_representation  # type: ignore[attr-defined]
    return reps


def _rep_entry(key: str) -> dict[str, Any]:
    group = GROUPS[key]()
    return {
        "order": group.order(),
        "sketches": {
            name: sketch(rep).tolist() for name, rep in representations(key, group).items()
        },
    }


def _wigner_entry(wigner: Callable[..., Any]) -> dict[str, Any]:
    small = {
        str(degree): [np.asarray(wigner(degree, *angles)).tolist() for angles in WIGNER_ANGLES]
        for degree in range(5)
    }
    large = np.asarray(wigner(LARGE_L, *LARGE_L_ANGLES))[::LARGE_L_STEP, ::LARGE_L_STEP]
    return {
        "angles": [list(a) for a in WIGNER_ANGLES],
        "small": small,
        "large_l": LARGE_L,
        "large_angles": list(LARGE_L_ANGLES),
        "large_step": LARGE_L_STEP,
        "large": large.tolist(),
    }


def main() -> int:
    import importlib

    from ereps._wigner import SHIM_MARKER

    # the real lie_learn: the references must not come from ereps' replacement
    lie_learn = importlib.import_module("lie_learn")
    wigner_D_matrix = importlib.import_module(
        "lie_learn.representations.SO3.wigner_d"
    ).wigner_D_matrix
    if getattr(lie_learn, SHIM_MARKER, False):
        sys.stderr.write("lie_learn is ereps' replacement here: install the real lie-learn.\n")
        return 1
    DATA.mkdir(exist_ok=True)
    versions = {"numpy": np.__version__, "python": sys.version.split()[0]}
    reps = {"generated_with": versions, "groups": {k: _rep_entry(k) for k in GROUPS}}
    REP_FILE.write_text(json.dumps(reps, indent=None, separators=(",", ":")) + "\n")
    wig = {"generated_with": versions, **_wigner_entry(wigner_D_matrix)}
    WIGNER_FILE.write_text(json.dumps(wig, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {REP_FILE} and {WIGNER_FILE}")
    return 0


def max_abs(a: Any, b: Any) -> float:
    """``max |a - b|`` of two nested lists or arrays of the same shape."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return math.inf
    return float(np.abs(x - y).max(initial=0.0))


if __name__ == "__main__":
    sys.exit(main())
