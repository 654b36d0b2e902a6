"""Bad arguments and inputs fail before any work, naming the argument (also under python -O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    eTransformerEncoder,
    eTransformerEncoderLayer,
)
from tests.elayers import _cases as C

REG = ("C8", "2reg")

MODULES: dict[str, Callable[[], eModule]] = {
    "eLinear": lambda: eLinear(C.rep("C8", "irr1+triv"), C.rep(*REG)),
    "InvariantBias": lambda: InvariantBias(C.rep(*REG)),
    "eAffine": lambda: eAffine(C.rep("D3", "Q:irr2+triv")),
    "eRMSNorm": lambda: eRMSNorm(C.rep(*REG)),
    "eRMSNorm-no-affine": lambda: eRMSNorm(C.rep(*REG), equiv_affine=False),
    "eLayerNorm": lambda: eLayerNorm(C.rep("D3", "Q:irr2+triv")),
    "eLayerNorm-no-affine": lambda: eLayerNorm(C.rep("D3", "Q:quot+irr2"), equiv_affine=False),
    "eMLP": lambda: eMLP(C.rep("D3", "irr2"), C.rep("D3", "triv"), [12]),
    "eMultiheadAttention": lambda: eMultiheadAttention(C.rep(*REG), 2),
    "eTransformerEncoderLayer": lambda: eTransformerEncoderLayer(C.rep(*REG), 2, 16),
    "eTransformerDecoderLayer": lambda: eTransformerDecoderLayer(C.rep(*REG), 2, 16),
    "eTransformerEncoder": lambda: eTransformerEncoder(
        eTransformerEncoderLayer(C.rep(*REG), 2, 16), 2
    ),
}


def _call(module: eModule, x: Any, memory: Any = None) -> object:
    if isinstance(module, eMultiheadAttention):
        return module(x, x, x)
    if isinstance(module, eTransformerDecoderLayer):
        return module(x, x if memory is None else memory)
    return module(x)


def _input(module: eModule, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Tensor:
    shape = (2, 3, module.in_rep.size)
    return torch.randn(shape).to(dtype=dtype, device=device)


@pytest.mark.parametrize("name", list(MODULES))
def test_inputs_of_another_dtype_device_or_kind_are_refused(name: str) -> None:
    module = MODULES[name]().eval()
    no_params = not list(module.parameters())
    if not no_params:
        with pytest.raises(TypeError, match=r"of the dtype of its parameters \(torch\.float32\)"):
            _call(module, _input(module, torch.float64))
    if not (no_params and name.startswith("eRMSNorm")):  # nothing to compare the device with
        with pytest.raises(ValueError, match=r"on the device of its parameters \(cpu\); got"):
            _call(module, _input(module, device="meta"))
    with pytest.raises(TypeError, match=r"floating-point tensor; got dtype torch\.int64"):
        _call(module, _input(module).to(torch.int64))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        _call(module, _input(module).tolist())
    with torch.no_grad():  # the same module accepts well-formed input
        _call(module, _input(module))
        if no_params:  # no parameters: any floating dtype is computed with
            _call(module, _input(module, torch.float64))


def test_decoder_memory_is_checked_under_its_name() -> None:
    layer = MODULES["eTransformerDecoderLayer"]()
    x = _input(layer)
    with pytest.raises(TypeError, match="expects memory of the dtype"):
        layer(x, x.double())
    with pytest.raises(ValueError, match="expects memory on the device"):
        layer(x, x.to("meta"))


def test_autocast_inputs_are_accepted() -> None:
    layer = eTransformerEncoderLayer(C.rep(*REG), 2, 16, dropout=0.0).eval()
    x = torch.randn(2, 3, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.to(torch.bfloat16))
    assert out.shape == x.shape


def test_attention_call_arguments() -> None:
    mha = eMultiheadAttention(C.rep(*REG), 2)
    x = torch.randn(2, 3, 16)
    with pytest.raises(TypeError, match=r"expects key to be a torch\.Tensor; got"):
        mha(x, [[0.0] * 16] * 3, x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects value of the dtype of its parameters"):
        mha(x, x, x.double())
    with pytest.raises(TypeError, match="expects is_causal to be a bool"):
        mha(x, x, x, is_causal="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects need_weights to be a bool"):
        mha(x, x, x, need_weights=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects attn_mask of dtype bool"):
        mha(x, x, x, attn_mask=torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="expects key_padding_mask to be None or"):
        mha(x, x, x, key_padding_mask=[[False] * 3] * 2)  # type: ignore[arg-type]
    layer = eTransformerEncoderLayer(C.rep(*REG), 2, 16)
    with pytest.raises(TypeError, match="eTransformerEncoderLayer expects is_causal to be a bool"):
        layer(x, is_causal=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects src_mask of dtype bool"):
        layer(x, src_mask=torch.zeros(3, 3, dtype=torch.int32))
    decoder = eTransformerDecoderLayer(C.rep(*REG), 2, 16)
    with pytest.raises(TypeError, match="expects tgt_is_causal to be a bool"):
        decoder(x, x, tgt_is_causal="yes")  # type: ignore[arg-type]


def _reg() -> Any:
    return C.rep(*REG)


def _enc() -> Any:
    return eTransformerEncoderLayer(C.rep(*REG), 2, 16)


# (id, constructor, positional arguments, keyword arguments, error, argument named). Arguments
# are built lazily (callables) so that nothing is constructed at collection time.
Case = tuple[str, Callable[..., object], Callable[[], tuple[Any, ...]], dict[str, Any], type, str]
MHA, ENC, DEC = eMultiheadAttention, eTransformerEncoderLayer, eTransformerDecoderLayer
T, V = TypeError, ValueError
CONSTRUCTORS: list[Case] = [
    ("heads-bool", MHA, lambda: (_reg(), True), {}, T, "num_heads"),
    ("heads-float", MHA, lambda: (_reg(), 2.0), {}, T, "num_heads"),
    ("heads-list", MHA, lambda: ([_reg()], 2), {}, T, "in_rep"),
    ("mha-dropout-str", MHA, lambda: (_reg(), 2, "0.1"), {}, T, "dropout"),
    ("mha-bias-str", MHA, lambda: (_reg(), 2), {"bias": "no"}, T, "bias"),
    ("mha-batch-first-int", MHA, lambda: (_reg(), 2), {"batch_first": 1}, T, "batch_first"),
    ("linear-bias-str", eLinear, lambda: (_reg(), _reg()), {"bias": "no"}, T, "bias"),
    ("linear-list", eLinear, lambda: ([_reg()], _reg()), {}, T, "in_rep"),
    ("affine-bias-int", eAffine, lambda: (_reg(),), {"bias": 1}, T, "bias"),
    ("rms-eps-str", eRMSNorm, lambda: (_reg(),), {"eps": "1e-6"}, T, "eps"),
    ("rms-eps-zero", eRMSNorm, lambda: (_reg(),), {"eps": 0.0}, V, "eps"),
    ("rms-eps-nan", eRMSNorm, lambda: (_reg(),), {"eps": float("nan")}, V, "eps"),
    ("ln-affine-none", eLayerNorm, lambda: (_reg(),), {"equiv_affine": None}, T, "equiv_affine"),
    ("ln-affine-list", eLayerNorm, lambda: (_reg(),), {"affine": ["copy"]}, V, "affine"),
    ("mlp-units-int", eMLP, lambda: (_reg(), _reg(), 16), {}, T, "hidden_units"),
    ("mlp-unit-bool", eMLP, lambda: (_reg(), _reg(), [True]), {}, T, "hidden_units[0]"),
    ("mlp-dropout-bool", eMLP, lambda: (_reg(), _reg(), [16]), {"dropout": True}, T, "dropout"),
    ("enc-nhead-bool", ENC, lambda: (_reg(), True), {}, T, "nhead"),
    ("enc-nhead-3", ENC, lambda: (_reg(), 3), {}, V, "nhead"),
    ("enc-ff-float", ENC, lambda: (_reg(), 2, 32.0), {}, T, "dim_feedforward"),
    ("enc-eps-str", ENC, lambda: (_reg(), 2, 16), {"layer_norm_eps": "1e-5"}, T, "layer_norm_eps"),
    ("enc-norm-first-str", ENC, lambda: (_reg(), 2, 16), {"norm_first": "no"}, T, "norm_first"),
    ("enc-dropout-str", ENC, lambda: (_reg(), 2, 16), {"dropout": "0"}, T, "dropout"),
    ("dec-batch-first-none", DEC, lambda: (_reg(), 2, 16), {"batch_first": None}, T, "batch_first"),
    ("dec-norm-list", DEC, lambda: (_reg(), 2, 16), {"norm_module": ["rmsnorm"]}, V, "norm_module"),
    ("stack-layers-bool", eTransformerEncoder, lambda: (_enc(), True), {}, T, "num_layers"),
    ("stack-norm-torch", eTransformerEncoder, lambda: (_enc(), 1, nn.LayerNorm(16)), {}, T, "norm"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "args", "kwargs", "error", "argument"),
    [c[1:] for c in CONSTRUCTORS],
    ids=[c[0] for c in CONSTRUCTORS],
)
def test_constructor_arguments_of_the_wrong_kind_are_refused(
    build: Callable[..., object],
    args: Callable[[], tuple[Any, ...]],
    kwargs: dict[str, Any],
    error: type[Exception],
    argument: str,
) -> None:
    positional = args()
    with pytest.raises(error) as info:
        build(*positional, **kwargs)
    assert argument in str(info.value)
