"""Groups, representations and brute-force references shared by the elayers tests.

Representations are named by short specs so that test ids stay readable and nothing is built at
collection time (the octahedral and icosahedral groups take seconds to build):

* ``reg``, ``<c>reg`` (``c`` copies of the regular representation), ``triv``, ``quot`` (the
  permutation representation on the cosets of a subgroup), ``irr<i>`` (the i-th entry of
  ``G.irreps()``), ``std3`` (the standard 3-D irrep of the octahedral/icosahedral group);
* ``a+b+c``: the direct sum of the summands;
* ``Q:<spec>``: ``<spec>`` after a random orthogonal change of basis;
* ``P:<spec>``: ``<spec>`` after a random permutation of its basis (same size, other rep).

``mats`` builds the matrices ``ρ(g)`` compositionally from escnn's matrices of the atoms (block
diagonals for sums, ``Q ρ(g) Qᵀ`` for changes of basis), never through the code under test.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence

import escnn.group as eg
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ereps import Group, GroupElement, Representation, direct_sum

Mat = npt.NDArray[np.float64]

GROUP_FACTORIES: dict[str, Callable[[], Group]] = {
    "C8": lambda: eg.cyclic_group(8),
    "D3": lambda: eg.dihedral_group(3),
    "D4": lambda: eg.dihedral_group(4),  # the order of C8: same sizes, other representations
    "D6": lambda: eg.dihedral_group(6),
    "O": eg.octa_group,
    "I": eg.ico_group,
    # Direct products: escnn's DirectProductGroup rebuilds its elements on every order() call.
    "Oh": eg.full_octa_group,  # C2 × O; it has no standard_representation
    "C4xC2": lambda: eg.direct_product(eg.cyclic_group(4), eg.cyclic_group(2)),
}

QUOTIENT_IDS: dict[str, object] = {
    "C8": 2,  # C8 / C2: 4 cosets
    "D3": (0, 1),  # D3 / {e, reflection}: 3 cosets
    "D4": (0, 1),
    "D6": (0, 1),
    "O": (False, 4),  # O / C4: the 6 faces of a cube
    "I": (False, 5),  # I / C5: the 12 vertices of an icosahedron
    "Oh": (1, (False, 4)),  # O_h / ({e} × C4): 12 cosets
    "C4xC2": (2, 1),  # (C4 × C2) / (C2 × {e}): 4 cosets
}

ALL_GROUPS = ("C8", "D3", "O", "I", "Oh", "C4xC2")
# Groups for cases whose logic does not depend on the group but whose cost grows with it.
SMALL_GROUPS = ("C8", "D3")


@functools.cache
def group(key: str) -> Group:
    return GROUP_FACTORIES[key]()


def random_orthogonal(n: int, seed: int) -> Mat:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return np.asarray(q * np.sign(np.diag(r)), dtype=np.float64)


def random_permutation(n: int, seed: int) -> Mat:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    while n > 1 and np.all(perm == np.arange(n)):
        perm = rng.permutation(n)
    return np.asarray(np.eye(n)[perm], dtype=np.float64)


def change_matrix(key: str, spec: str, n: int) -> Mat:
    seed = zlib.crc32(f"{key}/{spec}".encode())
    return random_orthogonal(n, seed) if spec[0] == "Q" else random_permutation(n, seed)


@functools.cache
def rep(key: str, spec: str) -> Representation:
    """The representation described by ``spec`` for the group ``key``."""
    G = group(key)
    if spec.startswith(("Q:", "P:")):
        base = rep(key, spec[2:])
        return eg.change_basis(base, change_matrix(key, spec, base.size), name=spec)
    parts = spec.split("+")
    if len(parts) > 1:
        return direct_sum([rep(key, p) for p in parts], name=spec)
    if spec == "reg":
        return G.regular_representation
    if spec.endswith("reg"):
        return direct_sum([G.regular_representation] * int(spec[:-3]), name=spec)
    if spec == "triv":
        return G.trivial_representation
    if spec == "quot":
        return G.quotient_representation(QUOTIENT_IDS[key])
    if spec == "std3":
        irrep = G.irrep(1)
        if irrep.size != 3:
            raise KeyError(f"{key} has no standard 3-D irrep")
        return irrep
    if spec.startswith("irr"):
        return G.irreps()[int(spec[3:])]
    raise KeyError(spec)


def _block_diag(blocks: Sequence[Mat]) -> Mat:
    size = sum(b.shape[0] for b in blocks)
    out = np.zeros((size, size))
    offset = 0
    for b in blocks:
        d = b.shape[0]
        out[offset : offset + d, offset : offset + d] = b
        offset += d
    return out


@functools.cache
def mats(key: str, spec: str) -> Mat:
    """``ρ(g)`` of ``rep(key, spec)`` for every element in escnn's order: ``(|G|, n, n)``."""
    if spec.startswith(("Q:", "P:")):
        base = mats(key, spec[2:])
        Q = change_matrix(key, spec, base.shape[-1])
        return np.asarray(Q @ base @ Q.T)
    parts = spec.split("+")
    if len(parts) > 1:
        atoms = [mats(key, p) for p in parts]
        return np.stack([_block_diag([m[i] for m in atoms]) for i in range(len(atoms[0]))])
    if spec.endswith("reg") and spec != "reg":
        base = mats(key, "reg")
        c = int(spec[:-3])
        return np.stack([_block_diag([m] * c) for m in base])
    r = rep(key, spec)
    return np.stack([np.asarray(r(g), dtype=np.float64) for g in r.group.elements])


def mats_t(key: str, spec: str, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.from_numpy(mats(key, spec)).to(dtype)


def hom_dim(key: str, a: str, b: str) -> int:
    """``dim Hom_G(a, b) = (1/|G|) Σ_g χ_a(g) χ_b(g)`` (real characters)."""
    chi_a = np.trace(mats(key, a), axis1=1, axis2=2)
    chi_b = np.trace(mats(key, b), axis1=1, axis2=2)
    return round(float(np.mean(chi_a * chi_b)))


def sample_elements(key: str, extra: int = 2) -> list[GroupElement]:
    """The generators of the group and a few fixed other elements (enough to prove equivariance)."""
    G = group(key)
    elements = list(G.elements)
    picked = list(G.generators)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    for i in rng.choice(len(elements), size=extra, replace=False):
        picked.append(elements[int(i)])
    return picked


def act(key: str, spec: str, index: int, x: Tensor) -> Tensor:
    """Act with ``ρ(g_index)`` (compositional matrices) on the last axis of ``x``."""
    m = mats_t(key, spec, x.dtype)[index].to(x.device)
    return x @ m.T


def rel_err(a: Tensor, b: Tensor) -> float:
    num = float(torch.linalg.vector_norm((a - b).detach().double()))
    den = max(float(torch.linalg.vector_norm(b.detach().double())), 1e-30)
    return num / den


def backward(loss: Tensor) -> None:
    """``loss.backward()`` (untyped in torch's stubs)."""
    loss.backward()  # type: ignore[no-untyped-call]


def equivariance_error(
    fn: Callable[..., Tensor],
    key: str,
    in_specs: Sequence[str],
    out_spec: str,
    inputs: Sequence[Tensor],
    indices: Sequence[int] | None = None,
) -> float:
    """``max_g ‖f(ρ_in(g) x) − ρ_out(g) f(x)‖ / ‖ρ_out(g) f(x)‖`` with compositional matrices."""
    n = group(key).order()
    if indices is None:
        indices = element_indices(key)
    y = fn(*inputs)
    worst = 0.0
    for i in indices:
        assert 0 <= i < n
        expected = act(key, out_spec, i, y)
        got = fn(*(act(key, s, i, x) for s, x in zip(in_specs, inputs, strict=True)))
        worst = max(worst, rel_err(got, expected))
    return worst


@functools.cache
def element_indices(key: str, extra: int = 2) -> tuple[int, ...]:
    elements = list(group(key).elements)
    return tuple(elements.index(g) for g in sample_elements(key, extra))


def seeded_randn(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype)


def perturb_(module: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    """Add noise to every parameter (so that identity scales and zero biases are exercised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.add_(scale * noise.to(p.dtype))
