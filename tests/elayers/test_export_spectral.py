"""torch.export and ONNX of the spectral modules' plain exports (elayers._plain_spectral).

Each spectral module exports a torch-only module (``Conjugated``/``ConjugatedDecoder`` around
the regular twin's export, or ``nn.Linear``); these tests trace it with a dynamic batch, run the
program (and the ONNX graph in onnxruntime) on other batch sizes, and compare with the source
spectral module in float32 to 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import escnn.group as eg
import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import (
    eLayerNorm,
    eMLP,
    eModule,
    eSpectralDecoder,
    eSpectralLinear,
    eSpectralMLP,
    eSpectralNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
)
from ereps import Group, Representation, direct_sum, regular_spectral_basis

Inputs = Callable[[int], tuple[Tensor, ...]]


def _regular(group: Group, copies: int) -> Representation:
    return direct_sum([group.regular_representation] * copies)


def _randomize(module: nn.Module) -> None:
    """Random norm scales and biases (as the other spectral tests), so every term is checked."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "coeffs" in name or "copy_" in name:
                p.normal_()


def _seeded(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _build(name: str) -> tuple[eModule, Inputs]:
    """A float32 spectral module in eval mode and a function of the batch size giving inputs."""
    group: Group
    if name == "linear":
        group = eg.cyclic_group(8)
        linear = eSpectralLinear(group, 3, 2)
        _randomize(linear)
        return linear.eval(), lambda b: (_seeded(b, 24, seed=b),)
    if name == "norm":
        group = eg.dihedral_group(6)
        norm = eSpectralNorm.from_regular(eLayerNorm(_regular(group, 2)))
        _randomize(norm)
        return norm.eval(), lambda b: (_seeded(b, 5, 24, seed=b),)
    if name == "mlp":
        group = eg.cyclic_group(8)
        mlp = eSpectralMLP(eMLP(_regular(group, 2), _regular(group, 3), [32]))
        _randomize(mlp)
        return mlp.eval(), lambda b: (_seeded(b, 4, 16, seed=b),)
    if name == "decoder":
        group = eg.dihedral_group(6)
        n = regular_spectral_basis(group).order
        layer = eTransformerDecoderLayer(
            _regular(group, 2), 2, dim_feedforward=8 * n, batch_first=True, norm_first=True
        )
        decoder = eSpectralDecoder(eTransformerDecoder(layer, 2))
        _randomize(decoder)
        return decoder.eval(), lambda b: (
            _seeded(b, 5, 2 * n, seed=b),
            _seeded(b, 3, 2 * n, seed=b + 100),
        )
    raise AssertionError(name)


NAMES = ["linear", "norm", "mlp", "decoder"]


def _dynamic(inputs: tuple[Tensor, ...]) -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1, max=64)
    return tuple({0: batch} for _ in inputs)


def _check_plain(module: eModule) -> nn.Module:
    plain = elayers.export(module)
    assert not any(isinstance(m, eModule) for m in plain.modules())
    return plain


@pytest.mark.parametrize("name", NAMES)
def test_spectral_export_torch_export_dynamic_batch(name: str) -> None:
    module, inputs = _build(name)
    plain = _check_plain(module)
    program = torch.export.export(plain, inputs(2), dynamic_shapes=_dynamic(inputs(2)))
    for batch in (1, 7):
        args = inputs(batch)
        with torch.no_grad():
            expected = module(*args)
            got = program.module()(*args)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# Inputs sharing the batch axis share its name: the exporter says so and keeps one.
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
@pytest.mark.parametrize("name", NAMES)
def test_spectral_export_runs_in_onnx_runtime(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    module, inputs = _build(name)
    plain = _check_plain(module)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        plain,
        inputs(2),
        f=str(path),
        dynamo=True,
        dynamic_shapes=_dynamic(inputs(2)),
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch in (1, 7):
        args = inputs(batch)
        (got,) = session.run(None, dict(zip(names, (a.numpy() for a in args), strict=True)))
        with torch.no_grad():
            expected = module(*args)
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)
