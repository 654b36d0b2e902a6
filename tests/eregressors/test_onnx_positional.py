"""ONNX of the exported regressors with rotary/relative positions and padding masks.

``torch.onnx.export(..., dynamo=True)`` of ``model.export()`` with a dynamic batch, run in ONNX
Runtime at other batch sizes and masks (an all-padding ``Z`` sample, an all-padding ``X`` sample)
and compared with the source model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eregressors import PlainCondTransformer
from tests import _exported as X
from tests.eregressors.test_export_positional import T_X, T_Z, _data, _model

NAMES = ("X", "opt_step", "Z", "X_padding_mask", "Z_padding_mask")


@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
@pytest.mark.parametrize("pos", ["relative", "rope"])
@pytest.mark.parametrize("kind", ["equi", "base"])
def test_onnx_of_masked_positional_model_agrees_in_onnx_runtime(
    kind: str, pos: str, tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    # Causal, a transformer conditioning encoder, the learned tables read by anchored rows.
    model = _model(kind, pos, True, True, 1)
    plain = model.export()
    assert type(plain) is PlainCondTransformer
    x, k, z, xm, zm = _data(3, torch.float32)
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "policy.onnx"
    torch.onnx.export(
        plain,
        (x, k, z),
        f=str(path),
        kwargs={"X_padding_mask": xm, "Z_padding_mask": zm},
        dynamo=True,
        dynamic_shapes={name: {0: batch} for name in NAMES},
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(NAMES)
    gen = torch.Generator().manual_seed(11)
    for size in (1, 5):
        xb = torch.randn(size, T_X, 2, generator=gen)
        zb = torch.randn(size, T_Z, 3, generator=gen)
        kb = torch.rand(size, generator=gen) * 1000
        xmb = torch.rand(size, T_X, generator=gen) < 0.3
        zmb = torch.rand(size, T_Z, generator=gen) < 0.3
        zmb[0] = True  # no observation at all
        if size > 1:
            xmb[1] = True  # nothing to predict
        with torch.no_grad():
            expected = model(xb, kb, zb, X_padding_mask=xmb, Z_padding_mask=zmb)
        inputs = (xb, kb, zb, xmb, zmb)
        (got,) = session.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
        assert np.isfinite(got).all()
        assert X.relative_error(torch.from_numpy(got), expected) <= 1e-5
        # The masks reach the program (without them the outputs differ).
        with torch.no_grad():
            unmasked = model(xb, kb, zb)
        assert X.relative_error(unmasked, expected) > 1e-3
