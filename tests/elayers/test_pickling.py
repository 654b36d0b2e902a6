"""Whole modules pickle: ``pickle`` and ``torch.save(model)``/``torch.load(weights_only=False)``."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from elayers import eLinear, eMLP, eModule, eTransformerEncoderLayer
from tests.elayers import _cases as C
from tests.elayers.test_state import BUILDERS
from tests.elayers.test_state import _run as run_module


def _torch_round_trip(module: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded: nn.Module = torch.load(buffer, weights_only=False)
    return loaded


ROUND_TRIPS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "torch.save": _torch_round_trip,
}


def _check(module: eModule, run: Callable[[nn.Module], Tensor], how: str) -> None:
    C.perturb_(module, scale=0.2)
    module.eval()
    expected = run(module)
    loaded = ROUND_TRIPS[how](module)
    assert type(loaded) is type(module)
    assert isinstance(loaded, eModule)
    assert loaded.in_rep == module.in_rep
    assert loaded.out_rep == module.out_rep
    assert loaded.in_rep.group is module.in_rep.group
    assert not loaded.training
    torch.testing.assert_close(run(loaded), expected, atol=0, rtol=0)
    # the copy is independent: editing it leaves the original as it was
    with torch.no_grad():
        for p in loaded.parameters():
            p.add_(1.0)
    torch.testing.assert_close(run(module), expected, atol=0, rtol=0)


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("name", BUILDERS)
def test_every_module_round_trips(name: str, how: str) -> None:
    _check(BUILDERS[name](), run_module, how)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ROUND_TRIPS)
def test_mlp_with_the_identity_activation_round_trips(how: str) -> None:
    # The named "identity" activation was a lambda, which pickle cannot store.
    module = eMLP(C.rep("D3", "reg"), C.rep("D3", "reg"), [12], activation="identity")
    _check(module, run_module, how)  # type: ignore[arg-type]


LINEAR_GROUPS = [
    pytest.param("C8", "reg", "Q:irr1+triv"),
    pytest.param("D3", "Q:irr2+triv", "2reg"),
    pytest.param("O", "std3+quot", "reg"),
    pytest.param("I", "std3", "std3+triv", marks=pytest.mark.slow),
    pytest.param("Oh", "Q:irr6+triv", "quot+irr6"),
    pytest.param("C4xC2", "reg+irr2", "quot"),
]


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize(("key", "a", "b"), LINEAR_GROUPS)
def test_linear_round_trips_for_every_kind_of_group(key: str, a: str, b: str, how: str) -> None:
    module = eLinear(C.rep(key, a), C.rep(key, b)).double()
    _check(module, lambda m: m(C.seeded_randn(3, module.in_rep.size)), how)


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("key", ["C8", "D6", "O", "C4xC2"])
def test_transformer_layer_round_trips(key: str, how: str) -> None:
    tokens = C.rep(key, "2reg")
    layer = eTransformerEncoderLayer(tokens, 2, 2 * tokens.size, dropout=0.0).double()
    _check(layer, lambda m: m(C.seeded_randn(2, 4, tokens.size)), how)
