"""The weight parametrizations against brute force: group actions, characters, torch's init."""

from __future__ import annotations

import copy
import functools
import math
import pickle
from collections.abc import Callable

import escnn.group as eg
import numpy as np
import pytest
import torch
from torch import Tensor

from elayers import (
    GroupConvParametrization,
    HomBasisParametrization,
    SpectralBlockParametrization,
    WeightParametrization,
    eLinear,
    eSpectralLinear,
    weight_parametrization,
)
from ereps import INIT_SCHEMES, Group, InitScheme, Representation, direct_sum, spectral_rep
from tests.elayers import _cases as C

GROUPS: dict[str, Callable[[], Group]] = {
    "C2": lambda: eg.cyclic_group(2),
    "C5": lambda: eg.cyclic_group(5),
    "D4": lambda: C.group("D4"),
    "O": lambda: C.group("O"),
}


@functools.cache
def _group(key: str) -> Group:
    return GROUPS[key]()


def _reg(key: str, copies: int) -> Representation:
    return direct_sum([_group(key).regular_representation] * copies)


def _irreps(key: str, *indices: int) -> Representation:
    irreps = _group(key).irreps()
    return direct_sum([irreps[i] for i in indices])


# Non-regular pairs for the Hom_G basis: complex-type irreps of C5, D4's irreps with a quotient
# (permutation) representation and a random orthogonal change of basis, and O's standard 3-D irrep
# meeting other representations (the known trap of escnn's own bases).
HOM_CASES: dict[str, str] = {
    "C2-irr1+triv+reg->reg+irr1+irr1": "C2",
    "C5-irr1+triv+reg->irr2+irr1+irr1+reg": "C5",
    "D4-Q:irr1+triv+reg->irr1+quot+reg": "D4",
    "O-std3+triv+reg->quot+std3+reg": "O",
}


def _hom_reps(case: str) -> tuple[Representation, Representation]:
    key = HOM_CASES[case]
    reg = _group(key).regular_representation
    if key == "C2":
        return direct_sum([_irreps(key, 1, 0), reg]), direct_sum([reg, _irreps(key, 1, 1)])
    if key == "C5":
        return direct_sum([_irreps(key, 1, 0), reg]), direct_sum([_irreps(key, 2, 1, 1), reg])
    if key == "D4":
        return C.rep(key, "Q:irr1+triv+reg"), C.rep(key, "irr1+quot+reg")
    return C.rep(key, "std3+triv+reg"), C.rep(key, "quot+std3+reg")


REGULAR_CASES = [("C2", 2, 3), ("C5", 1, 2), ("D4", 2, 1), ("O", 1, 1)]
REGULAR_IDS = [f"{k}-{a}reg->{b}reg" for k, a, b in REGULAR_CASES]


def _parametrization(
    kind: str, case: str
) -> tuple[WeightParametrization, Representation, Representation]:
    """The parametrization under test and the representations its dense matrix maps between."""
    if kind == "hom":
        a, b = _hom_reps(case)
        return HomBasisParametrization(a, b), a, b
    key, c_in, c_out = REGULAR_CASES[REGULAR_IDS.index(case)]
    if kind == "conv":
        a, b = _reg(key, c_in), _reg(key, c_out)
        return GroupConvParametrization(a, b), a, b
    G = _group(key)
    return (
        SpectralBlockParametrization(G, c_in, c_out),
        spectral_rep(G, c_in),
        spectral_rep(G, c_out),
    )


ALL_CASES = (
    [("conv", c) for c in REGULAR_IDS]
    + [("spectral", c) for c in REGULAR_IDS]
    + [("hom", c) for c in HOM_CASES]
)
ALL_IDS = [f"{kind}-{case}" for kind, case in ALL_CASES]


def _matrices(rep: Representation, indices: list[int]) -> Tensor:
    """``ρ(g)`` of the chosen elements, from escnn's matrices: ``(len(indices), n, n)``."""
    elements = list(rep.group.elements)
    return torch.stack(
        [torch.from_numpy(np.asarray(rep(elements[i]), dtype=np.float64)) for i in indices]
    )


def _random_indices(group: Group, count: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return [int(i) for i in torch.randint(0, group.order(), (count,), generator=gen)]


def _random_coefficients(p: WeightParametrization, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in p.shapes]


def _hom_dim(a: Representation, b: Representation) -> int:
    """``(1/|G|) Σ_g χ_a(g) χ_b(g)`` over every element (real characters)."""
    indices = list(range(a.group.order()))
    chi_a = torch.diagonal(_matrices(a, indices), dim1=1, dim2=2).sum(-1)
    chi_b = torch.diagonal(_matrices(b, indices), dim1=1, dim2=2).sum(-1)
    return round(float((chi_a * chi_b).mean()))


@pytest.mark.parametrize(("kind", "case"), ALL_CASES, ids=ALL_IDS)
def test_synthesized_matrix_is_equivariant(kind: str, case: str) -> None:
    p, a, b = _parametrization(kind, case)
    W = p.synthesize(_random_coefficients(p, seed=3))
    assert W.shape == (b.size, a.size) == (p.out_size, p.in_size)
    assert W.dtype == torch.float64
    assert W.abs().max() > 1e-2
    indices = _random_indices(a.group, 6, seed=7)
    m_in, m_out = _matrices(a, indices), _matrices(b, indices)
    # ρ_out(g) W = W ρ_in(g) for random elements.
    err = (m_out @ W - W @ m_in).abs().max().item()
    assert err < 1e-10 * W.abs().max().item()


@pytest.mark.parametrize(("kind", "case"), ALL_CASES, ids=ALL_IDS)
def test_coefficients_span_hom_g_and_invert_synthesis(kind: str, case: str) -> None:
    p, a, b = _parametrization(kind, case)
    dim = _hom_dim(a, b)
    assert p.num_weights == dim == sum(math.prod(s) for s in p.shapes)
    # The images of the unit coefficient vectors are independent: dim of them span Hom_G.
    images = []
    for r in range(dim):
        flat = torch.zeros(dim, dtype=torch.float64)
        flat[r] = 1.0
        parts, offset = [], 0
        for s in p.shapes:
            parts.append(flat[offset : offset + math.prod(s)].view(s))
            offset += math.prod(s)
        images.append(p.synthesize(parts).reshape(-1))
    assert int(torch.linalg.matrix_rank(torch.stack(images), atol=1e-8).item()) == dim
    coefficients = _random_coefficients(p, seed=5)
    recovered = p.coefficients_of(p.synthesize(coefficients))
    assert [tuple(t.shape) for t in recovered] == list(p.shapes)
    for got, expected in zip(recovered, coefficients, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def _torch_init_variance(scheme: InitScheme, fan_in: int, fan_out: int) -> float:
    """The entry variance ``torch.nn.init.<scheme>_`` gives an ``fan_out × fan_in`` weight.

    Xavier: ``gain² · 2 / (fan_in + fan_out)`` with gain 1; Kaiming (torch's defaults ``a = 0``,
    ``mode="fan_in"``, ``nonlinearity="leaky_relu"``): ``gain² / fan_in``.
    """
    if scheme.startswith("xavier"):
        return 2.0 / (fan_in + fan_out)
    gain = torch.nn.init.calculate_gain("leaky_relu", 0)
    return gain**2 / fan_in


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
@pytest.mark.parametrize(("kind", "case"), ALL_CASES, ids=ALL_IDS)
def test_initialize_gives_the_unconstrained_variance(
    kind: str, case: str, scheme: InitScheme
) -> None:
    p, _, _ = _parametrization(kind, case)
    expected = _torch_init_variance(scheme, p.in_size, p.out_size)
    gen = torch.Generator().manual_seed(11)
    # Every parametrization has ‖W‖²_F = β² Σ_r θ_r² for iid θ_r: the mean square entry is a
    # scaled sum of R iid squares, with relative standard deviation √(κ / R) (κ = Var(z²)/E(z²)²:
    # 2 for a normal, 4/5 for a uniform variable). 5 standard deviations at R >= 10000 draws
    # (7% for a normal, 4.5% for a uniform scheme; a wrong scale is off by a factor).
    total_sq, entries, drawn = 0.0, 0, 0
    while drawn < 10_000:
        coefficients = p.initialize(scheme, dtype=torch.float64, generator=gen)
        W = p.synthesize(coefficients)
        total_sq += float((W**2).sum())
        entries += W.numel()
        drawn += p.num_weights
    kappa = 2.0 if scheme.endswith("normal") else 0.8
    tolerance = 5.0 * math.sqrt(kappa / drawn)
    assert abs(total_sq / entries / expected - 1.0) < tolerance


@pytest.mark.parametrize("scheme", ["xavier_uniform", "kaiming_normal"])
def test_uniform_and_normal_draws_have_their_marginal(scheme: InitScheme) -> None:
    # Every entry of a group convolution is a kernel entry: the scheme's marginal, entry by entry.
    p = GroupConvParametrization(_reg("C5", 2), _reg("C5", 3))
    gen = torch.Generator().manual_seed(2)
    draws = torch.stack([p.synthesize(p.initialize(scheme, generator=gen)) for _ in range(400)])
    std = math.sqrt(_torch_init_variance(scheme, p.in_size, p.out_size))
    if scheme == "xavier_uniform":
        assert float(draws.abs().max()) <= math.sqrt(3.0) * std * (1 + 1e-6)
    else:
        assert float(draws.abs().max()) > math.sqrt(3.0) * std  # unbounded tails
    per_entry = draws.double().pow(2).mean(0) / std**2  # 400 draws per entry
    assert float(per_entry.min()) > 0.6
    assert float(per_entry.max()) < 1.5


def _brute_force_group_conv(key: str, kernel: Tensor) -> Tensor:
    """``W[(i, a), (j, b)] = w[i, j, index(g_a⁻¹ g_b)]`` with escnn's group operations."""
    elements = list(_group(key).elements)
    n = len(elements)
    c_out, c_in, _ = kernel.shape
    W = torch.zeros(c_out, n, c_in, n, dtype=kernel.dtype)
    for ia, ga in enumerate(elements):
        for ib, gb in enumerate(elements):
            W[:, ia, :, ib] = kernel[:, :, elements.index(~ga @ gb)]
    return W.reshape(c_out * n, c_in * n)


@pytest.mark.parametrize(("key", "c_in", "c_out"), REGULAR_CASES[:3], ids=REGULAR_IDS[:3])
def test_group_conv_is_the_cayley_gather(key: str, c_in: int, c_out: int) -> None:
    p = GroupConvParametrization(_reg(key, c_in), _reg(key, c_out))
    (kernel,) = _random_coefficients(p, seed=4)
    torch.testing.assert_close(
        p.synthesize([kernel]), _brute_force_group_conv(key, kernel), rtol=0, atol=0
    )


@pytest.mark.parametrize(("key", "c_in", "c_out"), REGULAR_CASES, ids=REGULAR_IDS)
def test_group_conv_and_spectral_blocks_parametrize_the_same_space(
    key: str, c_in: int, c_out: int
) -> None:
    conv = GroupConvParametrization(_reg(key, c_in), _reg(key, c_out))
    spec = SpectralBlockParametrization(_group(key), c_in, c_out)
    assert conv.num_weights == spec.num_weights
    # Regular map -> spectral blocks -> regular map: unchanged, kernel and dense matrix.
    (kernel,) = _random_coefficients(conv, seed=8)
    dense = conv.synthesize([kernel])
    theta = spec.coefficients_of(spec.from_regular_basis(dense))
    back = spec.to_regular_basis(spec.synthesize(theta))
    torch.testing.assert_close(back, dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(conv.coefficients_of(back)[0], kernel, rtol=0, atol=1e-12)
    # And the other way round: every spectral-block map is a group convolution.
    theta = _random_coefficients(spec, seed=9)
    regular = spec.to_regular_basis(spec.synthesize(theta))
    torch.testing.assert_close(
        conv.synthesize(conv.coefficients_of(regular)), regular, rtol=0, atol=1e-12
    )
    # Orthonormal coefficients: w ↦ θ preserves the norm (Plancherel).
    torch.testing.assert_close(
        torch.cat(
            [t.reshape(-1) for t in spec.coefficients_of(spec.from_regular_basis(dense))]
        ).norm(),
        kernel.norm(),
        rtol=1e-12,
        atol=0,
    )


@pytest.mark.parametrize(("key", "c_in", "c_out"), REGULAR_CASES, ids=REGULAR_IDS)
def test_layers_convert_through_their_parametrizations(key: str, c_in: int, c_out: int) -> None:
    linear = eLinear(_reg(key, c_in), _reg(key, c_out)).double()
    C.perturb_(linear)
    spectral = eSpectralLinear.from_regular(linear)
    # The spectral layer's dense matrix is its blocks object's synthesis, in the spectral basis.
    torch.testing.assert_close(
        spectral.dense_spectral_weight(),
        spectral.parametrization.from_regular_basis(linear.weight.detach()),
        rtol=0,
        atol=1e-12,
    )
    back = spectral.to_regular()
    torch.testing.assert_close(back.weight_params, linear.weight_params, rtol=0, atol=1e-12)


def test_layers_pick_their_parametrization_and_keep_their_state_dict() -> None:
    G = _group("C5")
    conv = eLinear(_reg("C5", 1), _reg("C5", 2))
    assert isinstance(conv.parametrization, GroupConvParametrization)
    assert conv.basis is None
    assert conv.flat_index is conv.parametrization.flat_index
    hom = eLinear(_irreps("C5", 1, 0), _reg("C5", 1))
    assert isinstance(hom.parametrization, HomBasisParametrization)
    assert hom.basis is hom.parametrization.basis
    with pytest.raises(AttributeError):
        _ = hom.flat_index
    for layer in (conv, hom):
        assert {k for k in layer.state_dict() if not k.endswith("_extra_state")} == {
            "weight_params",
            "invariant_bias.coeffs",
        }
        assert layer.weight_params.shape == layer.parametrization.shapes[0]
        torch.testing.assert_close(
            layer.weight, layer.parametrization.synthesize([layer.weight_params]), rtol=0, atol=0
        )
    spectral = eSpectralLinear(G, 2, 3)
    keys = [k for k in spectral.state_dict() if not k.endswith("_extra_state")]
    runs = len(spectral.parametrization.shapes)
    assert keys == [f"weight_{i}" for i in range(runs)] + ["bias_coeffs"]
    assert [tuple(p.shape) for p in spectral.weight_blocks] == list(spectral.parametrization.shapes)


@pytest.mark.parametrize(
    ("kind", "case"), ALL_CASES[:: len(REGULAR_IDS)], ids=ALL_IDS[:: len(REGULAR_IDS)]
)
def test_constants_move_with_the_module_and_stay_out_of_its_state(kind: str, case: str) -> None:
    p, _, _ = _parametrization(kind, case)
    assert not p.state_dict()
    assert list(p.buffers()) == []
    assert list(p.parameters()) == []
    constants = dict(p.named_constants())
    assert constants
    dtypes = {name: t.dtype for name, t in constants.items()}
    p.to(torch.float16)  # a cast rounds nothing: indices stay integers, bases float64
    assert {name: t.dtype for name, t in p.named_constants()} == dtypes
    p.to("meta")
    assert all(t.device.type == "meta" for _, t in p.named_constants())


def test_factory_picks_by_representation() -> None:
    assert isinstance(
        weight_parametrization(_reg("D4", 2), _reg("D4", 1)), GroupConvParametrization
    )
    assert isinstance(
        weight_parametrization(C.rep("D4", "P:reg"), _reg("D4", 1)), HomBasisParametrization
    )
    assert isinstance(
        weight_parametrization(_irreps("D4", 1), _reg("D4", 1)), HomBasisParametrization
    )


def test_bad_arguments_raise_naming_them() -> None:
    reg, irr = _reg("C5", 1), _irreps("C5", 1)
    with pytest.raises(ValueError, match="expects in_rep to be copies of the regular"):
        GroupConvParametrization(irr, reg)
    with pytest.raises(ValueError, match="expects out_rep to be copies of the regular"):
        GroupConvParametrization(reg, irr)
    with pytest.raises(TypeError, match="in_rep must be an escnn"):
        GroupConvParametrization(5, reg)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out_rep must be an escnn"):
        HomBasisParametrization(reg, "reg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same group"):
        weight_parametrization(reg, _reg("C2", 1))
    with pytest.raises(TypeError, match="expects group to be an escnn group"):
        SpectralBlockParametrization("C5", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_copies to be an int >= 1; got 0"):
        SpectralBlockParametrization(_group("C5"), 0, 1)
    with pytest.raises(TypeError, match="out_copies to be an int >= 1; got float"):
        SpectralBlockParametrization(_group("C5"), 1, 2.0)  # type: ignore[arg-type]
    p = SpectralBlockParametrization(_group("C5"), 1, 2)
    good = p.initialize("xavier_normal")
    with pytest.raises(TypeError, match="list or tuple"):
        p.synthesize(good[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"expects {len(p.shapes)} coefficient tensor"):
        p.synthesize(good[:-1])
    with pytest.raises(ValueError, match=r"coefficients\[0\] of shape"):
        p.block_matrices([good[0][:, :1], *good[1:]])
    with pytest.raises(TypeError, match=r"coefficients\[1\] to be a torch.Tensor"):
        p.synthesize([good[0], 1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"weight of shape \(10, 5\)"):
        p.coefficients_of(torch.zeros(5, 10))
    with pytest.raises(ValueError, match="Unknown init scheme"):
        p.initialize("xavier")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype to be a floating-point"):
        p.initialize("xavier_normal", dtype=torch.int64)
    with pytest.raises(TypeError, match=r"dtype to be a torch\.dtype"):
        p.initialize("xavier_normal", dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"device to be None, a str or a torch\.device"):
        p.initialize("xavier_normal", device=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"device to be a torch\.device or a device string"):
        p.initialize("xavier_normal", device="gpu-ish")


def test_linear_parametrization_attribute_is_its_submodule() -> None:
    # eLinear also keeps its parametrization in __dict__ (a fast lookup): the two must stay one.
    reps = (_reg("C5", 1), _reg("C5", 2))
    layer = eLinear(*reps)
    assert layer.parametrization is layer.get_submodule("parametrization")
    copied = copy.deepcopy(layer)
    assert copied.parametrization is copied.get_submodule("parametrization")
    assert copied.parametrization is not layer.parametrization
    restored = pickle.loads(pickle.dumps(layer))
    assert restored.parametrization is restored.get_submodule("parametrization")
    torch.testing.assert_close(restored.weight, layer.weight, rtol=0, atol=0)
    other = GroupConvParametrization(*reps)
    layer.parametrization = other
    assert layer.parametrization is other
    assert layer.get_submodule("parametrization") is other
    layer.to("meta")
    assert layer.flat_index.device.type == "meta"
    assert layer.weight.device.type == "meta"
