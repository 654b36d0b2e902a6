"""Groups, representations and brute-force references shared by the ereps tests.

Representations are named by short specs so that test ids stay readable and nothing is built at
collection time (the octahedral and icosahedral groups take seconds to build):

* ``reg``, ``triv``, ``quot`` (a permutation-quotient representation ``G/H``), ``irr<i>`` (the i-th
  entry of ``G.irreps()``), ``std3`` (the standard 3-D irrep ``(1,)`` of the octahedral and
  icosahedral groups: the known trap);
* ``a+b+c``: the direct sum of the summands;
* ``Q:<spec>``: ``<spec>`` after a random orthogonal change of basis;
* ``N:<spec>``: ``<spec>`` after a random *non-orthogonal* change of basis.

The references below use only numpy and escnn's matrices ``ρ(g)``, never ereps' own code paths.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import escnn.group as eg
import numpy as np
import numpy.typing as npt

from ereps import Group, GroupElement, Representation, direct_sum

Mat = npt.NDArray[np.float64]

GROUP_FACTORIES: dict[str, Callable[[], Group]] = {
    "C5": lambda: eg.cyclic_group(5),
    "C6": lambda: eg.cyclic_group(6),
    "D3": lambda: eg.dihedral_group(3),
    "D4": lambda: eg.dihedral_group(4),
    "O": eg.octa_group,
    "I": eg.ico_group,
    # Direct products (escnn's DirectProductGroup, whose order() rebuilds every element). The full
    # octahedral group O_h = C2 × O: escnn needs seconds for its regular representation, so only
    # irreps and their sums are used for it; C4 × C2 is small enough for everything.
    "Oh": eg.full_octa_group,
    "C4xC2": lambda: eg.direct_product(eg.cyclic_group(4), eg.cyclic_group(2)),
}

# Number of irreps of each group (pinned so that cases can be listed without building groups).
NUM_IRREPS: dict[str, int] = {
    "C5": 3,
    "C6": 4,
    "D3": 3,
    "D4": 5,
    "O": 5,
    "I": 5,
    "Oh": 10,
    "C4xC2": 6,
}

# A proper, non-trivial subgroup where the group has one (C5 has none: the trivial subgroup then).
QUOTIENT_IDS: dict[str, Any] = {
    "C5": 1,
    "C6": 2,  # C6 / C2: 3 cosets
    "D3": (0, 1),  # D3 / {e, reflection}: the 3 vertices of a triangle
    "D4": (0, 1),  # D4 / {e, reflection}: 4 cosets
    "O": (False, 4),  # O / C4: the 6 faces of a cube
    "I": (False, 5),  # I / C5: the 12 vertices of an icosahedron
    "C4xC2": (2, 1),  # (C4 × C2) / (C2 × {e}): 4 cosets
}

ALL_GROUPS = tuple(GROUP_FACTORIES)
# Groups whose regular and quotient representations are cheap enough to use everywhere.
GROUPS_WITH_REGULAR = ("C5", "C6", "D3", "D4", "O", "I", "C4xC2")
# A faster selection for tests whose cost grows with the group but whose logic does not.
SMALL_GROUPS = ("C5", "D4", "O")


@functools.cache
def group(key: str) -> Group:
    """The escnn group named by ``key`` (escnn caches groups too; this keeps the lookups cheap)."""
    return GROUP_FACTORIES[key]()


def random_orthogonal(n: int, seed: int) -> Mat:
    """A Haar-like random orthogonal matrix with determinant of either sign."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return np.asarray(q * np.sign(np.diag(r)), dtype=np.float64)


def random_non_orthogonal(n: int, seed: int) -> Mat:
    """A well-conditioned invertible matrix that is far from orthogonal."""
    scales = np.linspace(0.5, 2.0, n) if n > 1 else np.array([2.0])
    return random_orthogonal(n, seed) @ np.diag(scales) @ random_orthogonal(n, seed + 1)


def change_matrix(key: str, spec: str, n: int) -> Mat:
    """The change of basis of a ``Q:`` (orthogonal) or ``N:`` (non-orthogonal) spec."""
    seed = zlib.crc32(f"{key}/{spec}".encode())
    return random_orthogonal(n, seed) if spec[0] == "Q" else random_non_orthogonal(n, seed)


@functools.cache
def rep(key: str, spec: str) -> Representation:
    """The representation of group ``key`` described by ``spec`` (see the module docstring)."""
    G = group(key)
    if spec.startswith(("Q:", "N:")):
        base = rep(key, spec[2:])
        return eg.change_basis(base, change_matrix(key, spec, base.size), name=spec)
    parts = spec.split("+")
    if len(parts) > 1:
        return direct_sum([rep(key, p) for p in parts], name=spec)
    if spec == "reg":
        return G.regular_representation
    if spec == "triv":
        return G.trivial_representation
    if spec == "quot":
        return G.quotient_representation(QUOTIENT_IDS[key])
    if spec == "std3":
        irrep = G.irrep(1)
        assert irrep.size == 3, irrep
        return irrep
    if spec.startswith("irr"):
        return G.irreps()[int(spec[3:])]
    raise KeyError(spec)


def irrep_specs(key: str) -> list[str]:
    return [f"irr{i}" for i in range(NUM_IRREPS[key])]


def elements(key: str) -> list[GroupElement]:
    return list(group(key).elements)


def matrices(r: Representation) -> Mat:
    """``ρ(g)`` for all elements in escnn's order, straight from escnn: shape ``(|G|, n, n)``."""
    return np.stack([np.asarray(r(g), dtype=np.float64) for g in r.group.elements])


@functools.cache
def mats(key: str, spec: str) -> Mat:
    """``ρ(g)`` of ``rep(key, spec)`` for all elements, shape ``(|G|, n, n)``; do not mutate.

    Built compositionally and independently of the change of basis escnn stores for sums: escnn's
    matrices for the atoms (regular, trivial, quotient, irreps), block diagonals for direct sums and
    ``Q ρ(g) Q⁻¹`` for changes of basis.
    """
    if spec.startswith(("Q:", "N:")):
        base = mats(key, spec[2:])
        Q = change_matrix(key, spec, base.shape[-1])
        return np.asarray(Q @ base @ np.linalg.inv(Q))
    parts = spec.split("+")
    if len(parts) > 1:
        atoms = [mats(key, p) for p in parts]
        return np.stack([block_diag([m[i] for m in atoms]) for i in range(len(atoms[0]))])
    return matrices(rep(key, spec))


def character_hom_dim(key: str, a: str, b: str) -> float:
    """``(1/|G|) Σ_g χ_a(g) χ_b(g)`` (real characters: conjugation is not needed)."""
    chi_a = np.trace(mats(key, a), axis1=1, axis2=2)
    chi_b = np.trace(mats(key, b), axis1=1, axis2=2)
    return float(np.mean(chi_a * chi_b))


def hom_null_space(key: str, a: str, b: str) -> tuple[Mat, float]:
    """Orthonormal basis (rows) of ``{W : ρ_b(g) W = W ρ_a(g)}``, vectorized row-major.

    Solved over the generators of the group (see ``test_generators_generate_the_group``).

    Also returns the smallest non-zero singular value, to show that the numerical rank is
    unambiguous.
    """
    r_in, r_out = rep(key, a), rep(key, b)
    gens = group(key).generators
    n_in, n_out = r_in.size, r_out.size
    eye_in, eye_out = np.eye(n_in), np.eye(n_out)
    # vec(ρ_out W) = (ρ_out ⊗ I) vec(W);  vec(W ρ_in) = (I ⊗ ρ_inᵀ) vec(W).
    rows = [
        np.kron(np.asarray(r_out(g)), eye_in) - np.kron(eye_out, np.asarray(r_in(g)).T)
        for g in gens
    ]
    _, s, vt = np.linalg.svd(np.concatenate(rows, axis=0), full_matrices=False)
    tol = 1e-8 * max(float(s.max(initial=0.0)), 1.0)
    rank = int((s > tol).sum())
    gap = float(s[rank - 1]) if rank > 0 else np.inf
    return np.asarray(vt[rank:], dtype=np.float64), gap


def faithful_matrices(key: str, gens: Sequence[GroupElement]) -> list[Mat]:
    """Matrices of the elements in the direct sum of all irreps (a faithful representation)."""
    irreps = group(key).irreps()
    return [block_diag([np.asarray(irrep(g)) for irrep in irreps]) for g in gens]


def generated_order(gens: Sequence[Mat], limit: int = 1000) -> int:
    """Order of the matrix group generated by ``gens`` (closure by breadth-first search)."""
    seen = [np.eye(gens[0].shape[0])]
    frontier = list(seen)
    while frontier and len(seen) <= limit:
        nxt = []
        for m in frontier:
            for gm in gens:
                p = gm @ m
                if min(float(np.abs(p - q).max()) for q in seen) > 1e-6:
                    seen.append(p)
                    nxt.append(p)
        frontier = nxt
    return len(seen)


def group_average(key: str, a: str, b: str, W: Mat) -> Mat:
    """``(1/|G|) Σ_g ρ_b(g) W ρ_a(g)ᵀ`` for ``W`` of shape ``(..., b.size, a.size)``."""
    m_in, m_out = mats(key, a), mats(key, b)
    terms = m_out @ np.expand_dims(W, -3) @ m_in.transpose(0, 2, 1)  # (..., |G|, out, in)
    return np.asarray(terms.mean(axis=-3))


def block_diag(blocks: Sequence[Mat]) -> Mat:
    size = sum(b.shape[0] for b in blocks)
    out = np.zeros((size, size))
    offset = 0
    for b in blocks:
        d = b.shape[0]
        out[offset : offset + d, offset : offset + d] = b
        offset += d
    return out
