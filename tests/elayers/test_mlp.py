"""eMLP: equivariance on general input/output representations, hidden-representation checks."""

from __future__ import annotations

import pytest
import torch

from elayers import eLinear, eMLP
from tests.elayers import _cases as C

MLP_CASES = [
    ("C8", "irr1+triv", "2reg", (16, 24), "gelu"),
    ("C8", "2reg", "irr2+irr1", (16,), "relu"),
    ("D3", "Q:quot+irr2", "triv+irr2", (12, 18), "silu"),
    ("O", "std3", "std3+triv", (48,), "gelu"),
    ("O", "Q:std3+irr2", "irr2+std3", (48, 48), "tanh"),
    ("I", "std3+triv", "std3", (120,), "relu"),
]
MLP_IDS = [f"{k}-{a}->{b}-{act}" for k, a, b, _, act in MLP_CASES]


@pytest.mark.parametrize(("key", "a", "b", "hidden", "activation"), MLP_CASES, ids=MLP_IDS)
def test_mlp_is_equivariant(
    key: str, a: str, b: str, hidden: tuple[int, ...], activation: str
) -> None:
    mlp = eMLP(C.rep(key, a), C.rep(key, b), list(hidden), activation=activation).double()
    assert len(mlp.layers) == len(hidden) + 1
    assert [layer.out_rep.size for layer in mlp.layers] == [*hidden, C.rep(key, b).size]
    C.perturb_(mlp, scale=0.2)
    x = C.seeded_randn(2, 3, C.rep(key, a).size)
    y = mlp(x)
    assert y.shape == (2, 3, C.rep(key, b).size)
    assert C.equivariance_error(mlp, key, [a], b, [x]) < 1e-10
    assert C.equivariance_error(mlp.float(), key, [a], b, [x.float()]) < 1e-5


def test_mlp_hidden_width_of_one_regular_copy() -> None:
    # A hidden width equal to |G| is one copy of the regular representation.
    rho = C.rep("C8", "irr1+triv")
    mlp = eMLP(rho, rho, [8]).double()
    assert mlp.layers[0].out_rep.size == 8
    x = C.seeded_randn(3, rho.size)
    assert C.equivariance_error(mlp, "C8", ["irr1+triv"], "irr1+triv", [x]) < 1e-10


def test_mlp_forward_is_the_composition_of_its_layers() -> None:
    mlp = eMLP(C.rep("D3", "irr2"), C.rep("D3", "irr2"), [12, 18], activation="relu").double()
    C.perturb_(mlp, scale=0.2)
    x = C.seeded_randn(5, 2)
    h = x
    for i, layer in enumerate(mlp.layers):
        assert isinstance(layer, eLinear)
        h = layer(h)
        if i < len(mlp.layers) - 1:
            h = torch.relu(h)
    torch.testing.assert_close(mlp(x), h)


@pytest.mark.parametrize("spec", ["quot", "P:reg", "quot+reg"])
def test_mlp_accepts_permutation_hidden_reps(spec: str) -> None:
    rho = C.rep("D3", spec)
    mlp = eMLP(C.rep("D3", "irr2"), C.rep("D3", "triv+irr2"), hidden_reps=[rho, rho]).double()
    C.perturb_(mlp, scale=0.2)
    x = C.seeded_randn(4, 2)
    assert C.equivariance_error(mlp, "D3", ["irr2"], "triv+irr2", [x]) < 1e-10


@pytest.mark.parametrize("spec", ["irr1", "Q:reg", "reg+irr1"])
def test_mlp_rejects_non_permutation_hidden_reps(spec: str) -> None:
    with pytest.raises(ValueError, match="permutation"):
        eMLP(C.rep("C8", "reg"), C.rep("C8", "reg"), hidden_reps=[C.rep("C8", spec)])


def test_mlp_rejects_bad_arguments() -> None:
    rho = C.rep("C8", "reg")
    with pytest.raises(ValueError, match=r"\|G\| = 8") as info:
        eMLP(rho, rho, [12])
    assert "12" in str(info.value)
    with pytest.raises(ValueError, match="multiple"):
        eMLP(rho, rho, [16, 0])
    with pytest.raises(ValueError, match="exactly one"):
        eMLP(rho, rho)
    with pytest.raises(ValueError, match="exactly one"):
        eMLP(rho, rho, [16], hidden_reps=[C.rep("C8", "2reg")])
    with pytest.raises(ValueError, match="activation"):
        eMLP(rho, rho, [16], activation="swishy")
    with pytest.raises(TypeError, match="activation"):
        eMLP(rho, rho, [16], activation=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same group"):
        eMLP(rho, C.rep("D3", "reg"), [16])
    with pytest.raises(ValueError, match="same group"):
        eMLP(rho, rho, hidden_reps=[C.rep("D3", "reg")])
    with pytest.raises(ValueError, match="dropout"):
        eMLP(rho, rho, [16], dropout=1.5)
    mlp = eMLP(rho, rho, [16])
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        mlp(torch.randn(3, 16))


def test_mlp_dropout_only_in_training() -> None:
    rho = C.rep("C8", "reg")
    mlp = eMLP(rho, rho, [64], dropout=0.5)
    x = torch.randn(8, 8)
    mlp.eval()
    torch.testing.assert_close(mlp(x), mlp(x))
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))


def test_non_integer_widths_are_rejected() -> None:
    # A width of 16.7 must not be silently truncated to 16 regular features.
    rho = C.rep("C8", "reg")
    with pytest.raises((TypeError, ValueError), match="hidden_units"):
        eMLP(rho, rho, [16.7])  # type: ignore[list-item]
