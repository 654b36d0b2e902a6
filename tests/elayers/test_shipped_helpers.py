"""The layers pass the test helpers that ereps ships to users (ereps.testing).

Each layer, with perturbed parameters, is equivariant for every group element in each float dtype
(assert_equivariant names the worst element if not), and compiles to the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from elayers import eAffine, eLayerNorm, eLinear, eMLP, eRMSNorm, eTransformerEncoderLayer
from ereps.testing import assert_compiles, assert_equivariant, dtype_fixture
from tests.elayers import _cases as C

dtype = dtype_fixture()

# (group, input spec, output spec, builder): each builder makes a module from the two reps.
LAYERS: dict[str, tuple[str, str, str, Callable[..., nn.Module]]] = {
    "linear": ("D3", "Q:quot+irr2", "2reg", eLinear),
    "mlp": ("C8", "irr1+triv", "irr2+irr1", lambda a, b: eMLP(a, b, [16, 24])),
    "rms_norm": ("D3", "Q:irr2+triv+quot", "Q:irr2+triv+quot", lambda a, _: eRMSNorm(a)),
    "layer_norm": ("C8", "2reg", "2reg", lambda a, _: eLayerNorm(a)),
    "affine": ("D3", "irr2+triv+irr2", "irr2+triv+irr2", lambda a, _: eAffine(a)),
    "encoder": (
        "C8",
        "2reg",
        "2reg",
        lambda a, _: eTransformerEncoderLayer(a, 2, 32, dropout=0.0, batch_first=True),
    ),
}


def _layer(name: str, dtype: torch.dtype) -> tuple[nn.Module, str, str, str]:
    key, a, b, build = LAYERS[name]
    module = build(C.rep(key, a), C.rep(key, b)).to(dtype).eval()
    C.perturb_(module, scale=0.2)
    return module, key, a, b


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_is_equivariant_in_each_dtype(name: str, dtype: torch.dtype) -> None:
    module, key, a, b = _layer(name, dtype)
    with torch.no_grad():
        errors = assert_equivariant(module, C.rep(key, a), C.rep(key, b), batch_shape=(2, 5))
    assert len(errors) == C.group(key).order()
    assert all(p.dtype == dtype for p in module.parameters())


@pytest.mark.parametrize("name", ["linear", "encoder"])
def test_layer_compiles_to_the_same_function(name: str) -> None:
    module, key, a, _ = _layer(name, torch.float32)
    x = C.seeded_randn(2, 5, C.rep(key, a).size, dtype=torch.float32)
    with torch.no_grad():
        out = assert_compiles(module, x, fullgraph=True, rtol=1e-5, atol=1e-5)
    assert out.shape[:-1] == x.shape[:-1]
