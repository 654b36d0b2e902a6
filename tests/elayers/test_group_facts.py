"""Forward and backward passes never ask escnn for group facts (order, elements).

escnn's ``DirectProductGroup`` (O_h, C_n × C_2) rebuilds every element on each ``.elements`` access
and so on each ``order()`` call (~34 ms for O_h): one such call per forward made an O_h model train
6-12x slower than an O one. The modules read what they need at construction. Here the property is
replaced by one that raises, after construction, for the whole of a training step and an eval
forward.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from elayers import (
    InvariantBias,
    eAffine,
    eLayerNorm,
    eLinear,
    eMLP,
    eModule,
    eMultiheadAttention,
    eRMSNorm,
    eTransformerDecoderLayer,
    eTransformerEncoderLayer,
)
from ereps import check_equivariance
from tests.elayers import _cases as C

KEY = "C4xC2"


def _builders() -> dict[str, Callable[[], eModule]]:
    return {
        "eLinear-conv": lambda: eLinear(C.rep(KEY, "2reg"), C.rep(KEY, "3reg")),
        "eLinear-basis": lambda: eLinear(C.rep(KEY, "Q:irr2+triv"), C.rep(KEY, "quot+irr1")),
        "InvariantBias": lambda: InvariantBias(C.rep(KEY, "2reg")),
        "eAffine": lambda: eAffine(C.rep(KEY, "quot+irr2")),
        "eRMSNorm-copy": lambda: eRMSNorm(C.rep(KEY, "2reg"), bias=True),
        "eLayerNorm-copy": lambda: eLayerNorm(C.rep(KEY, "2reg")),
        "eLayerNorm-irrep": lambda: eLayerNorm(C.rep(KEY, "Q:quot+irr2")),
        "eMLP": lambda: eMLP(C.rep(KEY, "irr2"), C.rep(KEY, "triv"), [16]),
        "eMultiheadAttention": lambda: eMultiheadAttention(C.rep(KEY, "2reg"), 2),
        "eTransformerEncoderLayer": lambda: eTransformerEncoderLayer(
            C.rep(KEY, "2reg"), 2, 32, dropout=0.1, norm_module="rmsnorm"
        ),
        "eTransformerDecoderLayer": lambda: eTransformerDecoderLayer(
            C.rep(KEY, "2reg"), 2, 32, dropout=0.1
        ),
    }


BUILDERS = _builders()


def _forward(module: nn.Module, x: Tensor) -> Tensor:
    if isinstance(module, eMultiheadAttention):
        out: Tensor = module(x, x, x)[0]
        return out
    if isinstance(module, eTransformerDecoderLayer):
        out = module(x, x.flip(1))
        return out
    out = module(x)
    return out


@pytest.mark.parametrize("name", BUILDERS)
def test_training_step_and_eval_read_no_group_facts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = BUILDERS[name]().double()
    n = module.in_rep.size
    x = C.seeded_randn(2, 3, n)
    module.eval()
    with torch.no_grad():
        before = _forward(module, x)
    group = C.group(KEY)

    def refuse(self: object) -> object:
        raise AssertionError("a forward pass asked escnn for the group's elements")

    monkeypatch.setattr(type(group), "elements", property(refuse))
    with pytest.raises(AssertionError, match="asked escnn"):
        group.order()  # the patch is in force: order() goes through .elements
    module.train()
    C.backward(_forward(module, x).square().sum())
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(_forward(module, x), before)
    # ereps' equivariance check reads the elements from its own memo, not from escnn
    if not isinstance(module, (eMultiheadAttention, eTransformerDecoderLayer)):
        with torch.no_grad():
            assert check_equivariance(module, module.in_rep, module.out_rep, inputs=[x]) < 1e-12
