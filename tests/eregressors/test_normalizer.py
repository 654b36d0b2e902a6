"""EquivariantNormalizer: equivariance for every element, exact inversion, state dict, errors."""

from __future__ import annotations

import io
from pathlib import Path

import escnn.group as eg
import numpy as np
import pytest
import torch

import elayers
from eregressors import EquivariantNormalizer, PlainNormalizer, eCondTransformerRegressor
from ereps import Representation, act, direct_sum, group_elements
from tests import _exported as X
from tests.ereps import _cases as C

CASES = [
    ("C8", lambda: eg.cyclic_group(8).irrep(1)),  # the planar rotations: complex type
    ("C6:reg", lambda: eg.cyclic_group(6).regular_representation),  # multiplicities
    ("D4:plane+triv", lambda: direct_sum([eg.dihedral_group(4).irrep(1, 1)] * 2)),
    ("D3:Q", lambda: C.rep("D3", "Q:reg+triv")),  # a random orthogonal change of basis
    ("O:std3+irr2", lambda: C.rep("O", "std3+irr2+triv+std3")),
    ("Oh:product", lambda: C.rep("Oh", "irr6+triv+irr5+irr5")),  # a direct product O × C2
]


def skewed(shape: tuple[int, ...], size: int, seed: int) -> torch.Tensor:
    """Anisotropic, off-centre, heavy-tailed data (float64)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(size, size, generator=g, dtype=torch.float64)
    mixing *= torch.linspace(0.05, 4.0, size, dtype=torch.float64)
    base = torch.empty(*shape, size, dtype=torch.float64).exponential_(generator=g) ** 2
    return base @ mixing + 3.0 * torch.randn(size, generator=g, dtype=torch.float64)


def equivariance_error(fn: object, rep: Representation, x: torch.Tensor) -> float:
    assert callable(fn)
    y = fn(x)
    worst = 0.0
    for g in group_elements(rep.group):
        diff = fn(act(rep, g, x)) - act(rep, g, y)
        worst = max(worst, float(diff.abs().max() / y.abs().max()))
    return worst


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_equivariant_for_every_element_and_exactly_invertible(
    name: str, make: object, diagonal: bool
) -> None:
    assert callable(make)
    rep = make()
    normalizer = EquivariantNormalizer(rep, diagonal=diagonal).fit(skewed((50, 4), rep.size, 1))
    assert normalizer.is_fitted
    x = skewed((3, 5), rep.size, 2)
    assert equivariance_error(normalizer.normalize, rep, x) < 1e-10
    assert equivariance_error(normalizer.unnormalize, rep, x) < 1e-10
    round_trip = normalizer.unnormalize(normalizer.normalize(x))
    torch.testing.assert_close(round_trip, x, rtol=0, atol=1e-9)
    round_trip = normalizer.normalize(normalizer.unnormalize(x))
    torch.testing.assert_close(round_trip, x, rtol=0, atol=1e-9)
    # float32 in, float32 out, inverse to float32 round-off.
    x32 = x.float()
    y32 = normalizer(x32)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(normalizer.unnormalize(y32), x32, rtol=1e-5, atol=1e-4)
    assert equivariance_error(normalizer.normalize, rep, x32) < 1e-5


def test_normalized_augmented_data_is_standard() -> None:
    # The augmented training set (all group images) is mapped to zero mean and identity covariance.
    rep = eg.dihedral_group(6).irrep(1, 1) + eg.dihedral_group(6).trivial_representation
    data = skewed((300,), rep.size, 3)
    normalizer = EquivariantNormalizer(rep).fit(data)
    images = torch.cat([act(rep, g, data) for g in group_elements(rep.group)])
    y = normalizer(images).numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(rep.size), atol=1e-9)


def test_per_coordinate_normalization_is_the_trap() -> None:
    # What Diffusion Policy's normalizers do (mean/std or min/max per coordinate) on C8 planar data
    # stretched along one axis: not equivariant. The equivariant normalizer on the same data is.
    rep = eg.cyclic_group(8).irrep(1)
    data = torch.randn(500, 2, dtype=torch.float64) * torch.tensor([3.0, 0.2], dtype=torch.float64)
    data += torch.tensor([1.0, 2.0], dtype=torch.float64)
    lo, hi = data.min(0).values, data.max(0).values

    def per_coordinate(x: torch.Tensor) -> torch.Tensor:
        return 2.0 * (x - lo) / (hi - lo) - 1.0

    x = torch.randn(16, 2, dtype=torch.float64)
    assert equivariance_error(per_coordinate, rep, x) > 0.1
    assert equivariance_error(EquivariantNormalizer(rep).fit(data).normalize, rep, x) < 1e-12


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_degenerate_data_gives_no_nan(diagonal: bool) -> None:
    G = eg.dihedral_group(4)
    rep = direct_sum([G.irrep(1, 0), G.trivial_representation, G.irrep(1, 1)])
    data = skewed((64,), rep.size, 4)
    data[:, 0] = 0.0  # zero variance in the sign irrep
    data[:, 1] = -2.0  # and in the trivial one
    normalizer = EquivariantNormalizer(rep, diagonal=diagonal).fit(data)
    y = normalizer(data)
    assert torch.isfinite(y).all()
    # Degenerate coordinates are centred, not scaled: the constant -2 becomes 0.
    torch.testing.assert_close(y[:, :2], torch.zeros(64, 2, dtype=torch.float64))
    torch.testing.assert_close(normalizer.unnormalize(y), data)
    assert equivariance_error(normalizer.normalize, rep, skewed((8,), rep.size, 5)) < 1e-10
    # All-constant data and a single sample: identity scale, still invertible.
    for sample in (torch.zeros(10, rep.size, dtype=torch.float64), data[:1]):
        fitted = EquivariantNormalizer(rep, diagonal=diagonal).fit(sample)
        assert torch.isfinite(fitted.scale).all()
        torch.testing.assert_close(fitted.unnormalize(fitted(data)), data)


def test_state_dict_round_trip_with_weights_only() -> None:
    rep = C.rep("O", "std3+irr2+triv+std3")
    source = EquivariantNormalizer(rep).fit(skewed((40,), rep.size, 6))
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"mean", "scale", "inverse_scale", "fitted"}
    target = EquivariantNormalizer(rep)
    assert not target.is_fitted
    target.load_state_dict(state)
    assert target.is_fitted
    x = skewed((7,), rep.size, 7)
    assert torch.equal(target(x), source(x))
    assert torch.equal(target.unnormalize(x), source.unnormalize(x))
    # As part of a policy module: the statistics travel with the model's weights.
    policy = torch.nn.ModuleDict({"x_norm": source})
    assert "x_norm.scale" in policy.state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        EquivariantNormalizer(eg.cyclic_group(3).irrep(1)).load_state_dict(state)


def test_refit_replaces_the_statistics() -> None:
    rep = eg.cyclic_group(4).regular_representation
    normalizer = EquivariantNormalizer(rep)
    first = normalizer.fit(skewed((30,), 4, 8)).scale.clone()
    second = normalizer.fit(10.0 * skewed((30,), 4, 8)).scale
    torch.testing.assert_close(second, first / 10.0)


def test_errors() -> None:
    rep = eg.cyclic_group(8).irrep(1)
    with pytest.raises(TypeError, match=r"rep to be an escnn\.group\.Representation; got int"):
        EquivariantNormalizer(2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rtol in"):
        EquivariantNormalizer(rep, rtol=-1.0)
    with pytest.raises(ValueError, match="orthogonal change of basis"):
        EquivariantNormalizer(C.rep("C5", "N:irr1+triv"))
    normalizer = EquivariantNormalizer(rep)
    with pytest.raises(RuntimeError, match=r"normalize needs statistics: call fit\(data\) first"):
        normalizer.normalize(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"fit expects data of shape \(\.\.\., 2\) .*\(5, 3\)"):
        normalizer.fit(torch.randn(5, 3))
    with pytest.raises(TypeError, match="fit expects data to be a floating-point tensor"):
        normalizer.fit(torch.ones(5, 2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor of shape"):
        normalizer.fit(np.zeros((5, 2)))  # type: ignore[arg-type]
    bad = torch.randn(5, 2)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="finite samples"):
        normalizer.fit(bad)
    with pytest.raises(ValueError, match="at least one sample"):
        normalizer.fit(torch.randn(0, 2))
    normalizer.fit(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"unnormalize expects y of shape \(\.\.\., 2\)"):
        normalizer.unnormalize(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"got \(\)"):
        normalizer.normalize(torch.tensor(1.0))


class _Policy(torch.nn.Module):
    """What a user deploys: normalizers around the denoiser, in one module."""

    def __init__(self, rep: Representation, cond: Representation) -> None:
        super().__init__()
        self.x_norm = EquivariantNormalizer(rep).fit(skewed((40, 3), rep.size, 5))
        self.z_norm = EquivariantNormalizer(cond, diagonal=True).fit(skewed((40, 2), cond.size, 6))
        self.model = eCondTransformerRegressor(
            rep, cond, rep, 4, 2, num_layers=1, num_attention_heads=1, embedding_dim=12
        )

    def forward(self, x: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self.model(self.x_norm(x), k, self.z_norm(z))
        result: torch.Tensor = self.x_norm.unnormalize(out)
        return result


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_export_is_plain_and_computes_the_same(diagonal: bool) -> None:
    rep = C.rep("D3", "Q:reg+triv")
    normalizer = EquivariantNormalizer(rep, diagonal=diagonal).fit(skewed((50, 4), rep.size, 1))
    plain = normalizer.export()
    assert isinstance(plain, PlainNormalizer)
    X.assert_plain(plain)
    for dtype in (torch.float64, torch.float32):
        x = skewed((3, 5), rep.size, 2).to(dtype)
        # The same operations on copies of the same statistics: bit-equal.
        assert torch.equal(plain(x), normalizer.normalize(x))
        assert torch.equal(plain.normalize(x), normalizer.normalize(x))
        assert torch.equal(plain.unnormalize(x), normalizer.unnormalize(x))
    # Copies: refitting the source leaves the export as it was.
    before = plain.normalize(skewed((2,), rep.size, 3))
    normalizer.fit(skewed((50, 4), rep.size, 4))
    assert torch.equal(plain.normalize(skewed((2,), rep.size, 3)), before)
    with pytest.raises(ValueError, match=r"PlainNormalizer\.unnormalize expects y of shape"):
        plain.unnormalize(torch.zeros(3, rep.size + 1))
    with pytest.raises(TypeError, match=r"PlainNormalizer\.normalize expects x"):
        plain.normalize(torch.zeros(3, rep.size, dtype=torch.int64))


def test_unfitted_normalizer_refuses_export() -> None:
    normalizer = EquivariantNormalizer(C.rep("D3", "Q:reg+triv"))
    with pytest.raises(RuntimeError, match=r"EquivariantNormalizer\.export needs statistics"):
        normalizer.export()


def test_a_policy_tree_exports_whole_and_runs_without_the_project(tmp_path: Path) -> None:
    rep = C.rep("D3", "Q:reg+triv")
    cond = direct_sum([rep, rep])
    policy = _Policy(rep, cond).eval()
    plain = elayers.export(policy).eval()
    for child in plain.children():  # the root is the user's own class
        X.assert_plain(child)
    assert isinstance(plain.x_norm, PlainNormalizer)
    assert isinstance(plain.z_norm, PlainNormalizer)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, rep.size, generator=g)
    z = torch.randn(3, 2, cond.size, generator=g)
    k = torch.tensor([1.0, 10.0, 100.0])
    with torch.no_grad():
        expected = policy(x, k, z)
        assert X.relative_error(plain(x, k, z), expected) <= 1e-5
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        plain, (x, k, z), dynamic_shapes=({0: batch}, {0: batch}, {0: batch})
    )
    path = tmp_path / "policy.pt2"
    torch.export.save(program, path)
    torch.save((x[:2], k[:2], z[:2]), tmp_path / "inputs.pt")
    X.run_blocked(
        f"""
        import torch
        program = torch.export.load({str(path)!r})
        x, k, z = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(program.module()(x, k, z), {str(tmp_path / "out.pt")!r})
        """
    )
    with torch.no_grad():
        expected = policy(x[:2], k[:2], z[:2])
    assert X.relative_error(torch.load(tmp_path / "out.pt"), expected) <= 1e-5
