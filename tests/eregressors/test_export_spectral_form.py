"""``eCondTransformerRegressor.export_spectral()``: the plain regressor whose trunk is spectral.

Against the source model and against the dense export, float64 (1e-12) and float32 (1e-5), for
C2, C8 (complex-type blocks), D6 and the icosahedral group (both slow), every ``pos_encoding``,
causal or not, ``num_cond_layers`` 0 and 1, padding masks, ``T_x <= in_horizon``; a
regular-execution model converted on the way; the tree plain; ``torch.export`` with a dynamic
batch loaded in a process that cannot import escnn or the project; ONNX Runtime.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import escnn.group as eg
import numpy as np
import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import ChangeOfBasis, PlainSpectralDecoder, PlainSpectralMLP, PlainSpectralNorm
from eregressors import PlainCondTransformer, eCondTransformerRegressor
from ereps import Group, Representation, direct_sum, group_elements, rep_matrix
from tests import _exported as X

T_X, T_Z = 6, 3
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@functools.cache
def _group(name: str) -> Group:
    factories: dict[str, Any] = {
        "C2": lambda: eg.cyclic_group(2),
        "C8": lambda: eg.cyclic_group(8),
        "D6": lambda: eg.dihedral_group(6),
        "ico": eg.ico_group,
    }
    group: Group = factories[name]()
    return group


def _reps(name: str) -> tuple[Representation, Representation]:
    G = _group(name)
    if name == "C2":
        return G.regular_representation, direct_sum([G.regular_representation] * 2)
    if name == "ico":
        standard: Representation = G.standard_representation  # type: ignore[attr-defined]
        return direct_sum([standard, G.trivial_representation]), direct_sum([standard] * 2)
    two_d = G.irrep(1) if name == "C8" else G.irrep(1, 1)
    return direct_sum([two_d, G.trivial_representation]), direct_sum([two_d, two_d])


def _model(name: str, dtype: torch.dtype = torch.float64, **kw: Any) -> eCondTransformerRegressor:
    torch.manual_seed(0)
    rep, cond = _reps(name)
    order = _group(name).order()
    copies = 2 if name == "ico" else 4
    heads = 1 if name == "ico" else 2
    kw.setdefault("execution", "spectral")
    model = eCondTransformerRegressor(rep, cond, None, T_X, T_Z, 2, heads, copies * order, **kw).to(
        dtype
    )
    with torch.no_grad():  # random norms, biases and tables, so that every term is checked
        for pname, p in model.named_parameters():
            if "coeffs" in pname or "copy_" in pname or "pos_emb" in pname:
                p.normal_()
    return model.eval()


def _data(
    model: eCondTransformerRegressor, batch: int, dtype: torch.dtype, t_x: int = T_X, seed: int = 3
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    assert model.cond_dim is not None
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, t_x, model.in_dim, generator=gen, dtype=dtype)
    z = torch.randn(batch, T_Z, model.cond_dim, generator=gen, dtype=dtype)
    k = torch.randint(0, 1000, (batch,), generator=gen).to(dtype)
    # Right padding of X, left padding of Z (one sample with no observation at all).
    xm = torch.zeros(batch, t_x, dtype=torch.bool)
    xm[0, t_x - 2 :] = True
    zm = torch.zeros(batch, T_Z, dtype=torch.bool)
    zm[-1, :1] = True
    if batch > 2:
        zm[1] = True
    return x, k, z, xm, zm


# (pos_encoding, absolute_table, causal, num_cond_layers, norm_module)
CONFIGS = [
    ("absolute", True, False, 0, "rmsnorm"),
    ("absolute", True, True, 1, "layernorm"),
    ("relative", True, True, 0, "rmsnorm"),
    ("relative", False, False, 1, "rmsnorm"),
    ("rope", True, True, 0, "layernorm"),
    ("rope", False, True, 1, "rmsnorm"),
]
# D6 and ico in the full run only (CI's time budget): C2 and C8 cover real and complex blocks.
NAMES = [
    "C2",
    "C8",
    pytest.param("D6", marks=pytest.mark.slow),
    pytest.param("ico", marks=pytest.mark.slow),
]


def _kw(config: tuple[str, bool, bool, int, str]) -> dict[str, Any]:
    pos, table, causal, cond_layers, norm = config
    return {
        "pos_encoding": pos,
        "absolute_table": table,
        "causal_attn": causal,
        "num_cond_layers": cond_layers,
        "norm_module": norm,
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("name", NAMES)
def test_spectral_export_agrees_with_the_source_and_the_dense_export(
    name: str, config: tuple[str, bool, bool, int, str], dtype: torch.dtype
) -> None:
    model = _model(name, dtype, **_kw(config))
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    plain = model.export_spectral()
    assert type(plain) is PlainCondTransformer
    assert type(plain.decoder) is PlainSpectralDecoder
    assert type(plain.ln_f) is PlainSpectralNorm
    if config[3] == 0:
        assert isinstance(plain.cond_encoder, nn.Sequential)
        assert [type(m) for m in plain.cond_encoder] == [ChangeOfBasis, PlainSpectralMLP]
    X.assert_plain(plain)
    dense = model.export()
    assert not any(type(m) is PlainSpectralDecoder for m in dense.modules())
    with torch.no_grad():
        for t_x in (T_X, 3):  # T_x <= in_horizon
            x, k, z, xm, zm = _data(model, 3, dtype, t_x)
            for masks in ({}, {"X_padding_mask": xm, "Z_padding_mask": zm}):
                expected = model(x, k, z, **masks)
                got = plain(x, k, z, **masks)
                assert torch.isfinite(got).all()
                assert X.relative_error(got, expected) <= TOL[dtype]
                assert X.relative_error(got, dense(x, k, z, **masks)) <= TOL[dtype]
    # The source is unchanged.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_spectral_export_is_equivariant_and_its_trunk_needs_fewer_weights() -> None:
    model = _model("C8")
    plain = model.export_spectral()
    x, k, z, xm, zm = _data(model, 2, torch.float64)
    with torch.no_grad():
        # Random group elements on inputs and outputs (the plain model knows no group).
        elements = group_elements(model.in_rep.group)
        assert model.cond_rep is not None
        for i in torch.randint(1, len(elements), (3,)).tolist():
            g = elements[i]
            rho_in, rho_out = rep_matrix(model.in_rep, g), rep_matrix(model.out_rep, g)
            rho_cond = rep_matrix(model.cond_rep, g)
            out = plain(x, k, z, X_padding_mask=xm, Z_padding_mask=zm)
            moved = plain(x @ rho_in.T, k, z @ rho_cond.T, X_padding_mask=xm, Z_padding_mask=zm)
            assert X.relative_error(moved, out @ rho_out.T) <= 1e-12
    spectral_trunk = sum(p.numel() for p in plain.decoder.parameters())
    dense_trunk = sum(p.numel() for p in model.export().decoder.parameters())
    assert spectral_trunk < dense_trunk / 4  # blocks, not dense |G| x |G| matrices


def test_a_regular_model_is_converted_for_the_spectral_form() -> None:
    regular = _model("D6", execution="regular", causal_attn=True)
    plain = elayers.export(regular, form="spectral")
    assert type(plain) is PlainCondTransformer
    assert type(plain.decoder) is PlainSpectralDecoder
    assert regular.execution == "regular"  # unchanged
    x, k, z, xm, zm = _data(regular, 3, torch.float64)
    with torch.no_grad():
        expected = regular(x, k, z, X_padding_mask=xm, Z_padding_mask=zm)
        got = plain(x, k, z, X_padding_mask=xm, Z_padding_mask=zm)
    assert X.relative_error(got, expected) <= 1e-12
    # And the dense form of a spectral model is still the dense model.
    assert not any(
        type(m) is PlainSpectralDecoder
        for m in elayers.export(regular.with_execution("spectral")).modules()
    )


def test_a_user_container_gets_the_spectral_regressor() -> None:
    model = _model("C2")

    class Policy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

        def forward(self, x: Tensor, k: Tensor, z: Tensor) -> Tensor:
            out: Tensor = self.net(x, k, z) * self.scale
            return out

    policy = Policy().eval()
    plain = elayers.export(policy, form="spectral")
    assert type(plain.get_submodule("net")) is PlainCondTransformer
    assert type(plain.get_submodule("net.decoder")) is PlainSpectralDecoder
    x, k, z, _, _ = _data(model, 2, torch.float64)
    with torch.no_grad():
        assert X.relative_error(plain(x, k, z), policy(x, k, z)) <= 1e-12


NAMES_IO = ("X", "opt_step", "Z", "X_padding_mask", "Z_padding_mask")


def _float32_rope_model() -> eCondTransformerRegressor:
    return _model("C8", torch.float32, pos_encoding="rope", causal_attn=True, num_cond_layers=0)


@pytest.mark.slow  # about 20 s here (tracing, a fresh interpreter)
def test_torch_export_of_the_spectral_form_loads_without_the_project(tmp_path: Path) -> None:
    model = _float32_rope_model()
    plain = model.export_spectral()
    x, k, z, xm, zm = _data(model, 3, torch.float32)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        plain,
        (x, k, z),
        {"X_padding_mask": xm, "Z_padding_mask": zm},
        dynamic_shapes={name: {0: batch} for name in NAMES_IO},
    )
    with torch.no_grad():
        for size in (1, 5):
            args = _data(model, size, torch.float32, seed=size)
            got = program.module()(*args[:3], X_padding_mask=args[3], Z_padding_mask=args[4])
            expected = model(*args[:3], X_padding_mask=args[3], Z_padding_mask=args[4])
            assert X.relative_error(got, expected) <= 1e-5
    path = tmp_path / "policy.pt2"
    torch.export.save(program, path)
    args = _data(model, 4, torch.float32, seed=9)
    torch.save(args, tmp_path / "inputs.pt")
    X.run_blocked(
        f"""
        import torch
        program = torch.export.load({str(path)!r})
        x, k, z, xm, zm = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            out = program.module()(x, k, z, X_padding_mask=xm, Z_padding_mask=zm)
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    with torch.no_grad():
        expected = model(*args[:3], X_padding_mask=args[3], Z_padding_mask=args[4])
    assert X.relative_error(torch.load(tmp_path / "out.pt"), expected) <= 1e-5


# Inputs sharing the batch axis share its name: the exporter says so and keeps one.
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
@pytest.mark.slow  # about 50 s here (the ONNX exporter)
def test_onnx_of_the_spectral_form_agrees_in_onnx_runtime(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    model = _float32_rope_model()
    plain = model.export_spectral()
    x, k, z, xm, zm = _data(model, 3, torch.float32)
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "policy.onnx"
    torch.onnx.export(
        plain,
        (x, k, z),
        f=str(path),
        kwargs={"X_padding_mask": xm, "Z_padding_mask": zm},
        dynamo=True,
        dynamic_shapes={name: {0: batch} for name in NAMES_IO},
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(NAMES_IO)
    for size in (1, 5):
        args = _data(model, size, torch.float32, seed=size + 20)
        (got,) = session.run(None, {n: t.numpy() for n, t in zip(names, args, strict=True)})
        assert np.isfinite(got).all()
        with torch.no_grad():
            expected = model(*args[:3], X_padding_mask=args[3], Z_padding_mask=args[4])
        assert X.relative_error(torch.from_numpy(got), expected) <= 1e-5
