"""export() of both regressors: same function in plain PyTorch, torch.export, ONNX Runtime."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import escnn.group as eg
import pytest
import torch
from torch import Tensor, nn

import elayers
from eregressors import CondTransformerRegressor, GenCondRegressor, eCondTransformerRegressor
from eregressors._plain import PlainCondTransformer
from ereps import Group
from tests import _exported as X

IN_HORIZON, COND_HORIZON = 6, 3


def _equivariant(
    causal: bool, cond_layers: int, norm: str, key: str = "D3"
) -> eCondTransformerRegressor:
    G: Group
    if key == "D3":
        G = eg.dihedral_group(3)
        rho = G.irrep(1, 1)
    else:
        G = eg.cyclic_group(4)
        rho = G.irrep(1)
    torch.manual_seed(0)
    model = eCondTransformerRegressor(
        rho,
        rho + G.trivial_representation,
        rho,
        IN_HORIZON,
        COND_HORIZON,
        num_layers=2,
        num_attention_heads=2,
        embedding_dim=4 * G.order(),
        causal_attn=causal,
        num_cond_layers=cond_layers,
        norm_module=norm,  # type: ignore[arg-type]
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _baseline(causal: bool, cond_layers: int) -> CondTransformerRegressor:
    torch.manual_seed(0)
    model = CondTransformerRegressor(
        2, 3, 2, IN_HORIZON, COND_HORIZON, 2, 2, 16, causal_attn=causal, num_cond_layers=cond_layers
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _inputs(batch: int, t_x: int, t_z: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(batch, t_x, 2, generator=gen, dtype=dtype)
    z = torch.randn(batch, t_z, 3, generator=gen, dtype=dtype)
    k = torch.randint(0, 1000, (batch,), generator=gen).to(dtype)
    return x, k, z


CONFIGS = list(itertools.product([False, True], [0, 2]))


@pytest.mark.parametrize(("causal", "cond_layers"), CONFIGS)
@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_equivariant_regressor_export_agrees(causal: bool, cond_layers: int, norm: str) -> None:
    model = _equivariant(causal, cond_layers, norm)
    assert isinstance(model.export(), PlainCondTransformer)
    X.assert_plain(model.export())
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        model.to(dtype)
        plain = elayers.export(model)
        for t_x, t_z in ((IN_HORIZON, COND_HORIZON), (2, 1)):
            x, k, z = _inputs(4, t_x, t_z, dtype)
            with torch.no_grad():
                expected = model(x, k, z)
                assert X.relative_error(plain(x, k, z), expected) <= tol
                assert X.relative_error(plain(x, 17.0, z), model(x, 17.0, z)) <= tol


@pytest.mark.parametrize(("causal", "cond_layers"), CONFIGS)
def test_baseline_export_agrees(causal: bool, cond_layers: int) -> None:
    model = _baseline(causal, cond_layers)
    plain = elayers.export(model)
    X.assert_plain(plain)
    x, k, z = _inputs(3, 4, 2, torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x, k, z), model(x, k, z), rtol=1e-6, atol=1e-6)


def test_regressor_inside_a_user_module_and_pickling() -> None:
    model = _equivariant(True, 1, "layernorm", key="C4")
    tree = nn.ModuleDict({"policy": model, "obs_proj": nn.Linear(3, 3)})
    plain = elayers.export(tree)
    assert isinstance(plain["policy"], PlainCondTransformer)  # type: ignore[index]
    assert not any(isinstance(m, (GenCondRegressor, elayers.eModule)) for m in plain.modules())
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x, k, z = _inputs(2, IN_HORIZON, COND_HORIZON, torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(loaded["policy"](x, k, z), model(x, k, z), rtol=1e-5, atol=1e-5)


def test_empty_batch_in_eval_under_no_grad() -> None:
    for model in (
        _equivariant(True, 1, "rmsnorm"),
        _equivariant(False, 0, "layernorm"),
        _baseline(True, 1),
    ):
        plain = elayers.export(model)
        x, k, z = _inputs(0, 4, 2, torch.float32)
        with torch.no_grad():
            out = model(x, k, z)
            assert out.shape == (0, 4, 2)
            assert plain(x, k, z).shape == (0, 4, 2)
            assert model(x, 3, z).shape == (0, 4, 2)
        with torch.inference_mode():
            assert model(x, k, z).shape == (0, 4, 2)


def test_frozen_regressor_agrees_and_follows_edits_after_the_scope() -> None:
    model = _equivariant(True, 1, "layernorm")
    x, k, z = _inputs(3, IN_HORIZON, COND_HORIZON, torch.float32)
    with torch.no_grad():
        expected = model(x, k, z)
        with elayers.frozen(model):
            for _ in range(2):
                torch.testing.assert_close(model(x, k, z), expected, rtol=1e-5, atol=1e-5)
        for p in model.parameters():
            p.data.mul_(0.9)
        changed = model(x, k, z)
        plain = elayers.export(model)
    assert not torch.allclose(changed, expected)
    with torch.no_grad():
        torch.testing.assert_close(plain(x, k, z), changed, rtol=1e-5, atol=1e-5)


def _dynamic_shapes(with_length: bool) -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1, max=512)
    if not with_length:
        return ({0: batch}, {0: batch}, {0: batch})
    length = torch.export.Dim("t_x", min=1, max=IN_HORIZON)
    return ({0: batch, 1: length}, {0: batch}, {0: batch})


def test_torch_export_dynamic_batch_and_length_reloads_without_escnn(tmp_path: Path) -> None:
    model = _equivariant(True, 1, "rmsnorm")
    plain = elayers.export(model)
    x, k, z = _inputs(3, IN_HORIZON, COND_HORIZON, torch.float32)
    program = torch.export.export(plain, (x, k, z), dynamic_shapes=_dynamic_shapes(True))
    x2, k2, z2 = _inputs(5, 4, COND_HORIZON, torch.float32)
    with torch.no_grad():
        expected = model(x2, k2, z2)
    torch.testing.assert_close(program.module()(x2, k2, z2), expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "policy.pt2"
    torch.export.save(program, path)
    torch.save((x2, k2, z2), tmp_path / "inputs.pt")
    X.run_blocked(
        f"""
        import torch
        program = torch.export.load({str(path)!r})
        x, k, z = torch.load({str(tmp_path / "inputs.pt")!r})
        torch.save(program.module()(x, k, z), {str(tmp_path / "out.pt")!r})
        """
    )
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
@pytest.mark.parametrize("kind", ["equivariant", "baseline"])
def test_onnx_export_runs_in_onnx_runtime(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    model: GenCondRegressor = (
        _equivariant(False, 1, "layernorm") if kind == "equivariant" else _baseline(True, 0)
    )
    plain = elayers.export(model)
    x, k, z = _inputs(2, IN_HORIZON, COND_HORIZON, torch.float32)
    path = tmp_path / "policy.onnx"
    torch.onnx.export(
        plain,
        (x, k, z),
        f=str(path),
        dynamo=True,
        dynamic_shapes=_dynamic_shapes(False),
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch in (1, 7):
        xb, kb, zb = _inputs(batch, IN_HORIZON, COND_HORIZON, torch.float32)
        (got,) = session.run(
            None, dict(zip(names, (xb.numpy(), kb.numpy(), zb.numpy()), strict=True))
        )
        with torch.no_grad():
            expected = model(xb, kb, zb)
        assert X.relative_error(torch.from_numpy(got), expected) <= 1e-5
