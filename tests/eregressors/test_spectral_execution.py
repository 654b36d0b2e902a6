"""The spectral execution of eCondTransformerRegressor against the regular one."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import escnn.group as eg
import pytest
import torch

import elayers
from elayers import eModule, eSpectralDecoder, eTransformerDecoder
from eregressors import PlainCondTransformer, eCondTransformerRegressor
from ereps import Group, Representation, direct_sum


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


def _model(name: str, randomize: bool = True, **kw: Any) -> eCondTransformerRegressor:
    rep, cond = _reps(name)
    order = 60 if name == "ico" else {"C2": 2, "C8": 8, "D6": 12}[name]
    model = eCondTransformerRegressor(
        rep,
        cond,
        None,
        5,
        3,
        2,
        1 if name == "ico" else 2,
        2 * order if name == "ico" else 4 * order,
        **kw,
    ).double()
    if not randomize:
        return model.eval()
    with torch.no_grad():  # random norms and biases, so that every term is tested
        for pname, p in model.named_parameters():
            if "coeffs" in pname or "copy_" in pname:
                p.normal_()
    return model.eval()


def _inputs(model: eCondTransformerRegressor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    assert model.cond_dim is not None
    X = torch.randn(3, 5, model.in_dim, dtype=torch.float64)
    Z = torch.randn(3, 3, model.cond_dim, dtype=torch.float64)
    k = torch.tensor([3.0, 70.0, 900.0], dtype=torch.float64)
    return X, k, Z


CONFIGS: list[dict[str, Any]] = [
    {},
    {"norm_module": "layernorm", "causal_attn": True},
    {"pos_encoding": "rope", "num_cond_layers": 1},
    {"pos_encoding": "relative", "absolute_table": False},
]
NAMES = ["C2", "C8", "D6", pytest.param("ico", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kw", CONFIGS, ids=["default", "layernorm-causal", "rope", "relative"])
@torch.no_grad()
def test_spectral_execution_computes_the_regular_function(name: str, kw: dict[str, Any]) -> None:
    """Converted weights: outputs agree to 1e-10 (float64), padding included; equivariant."""
    regular = _model(name, **kw)
    spectral = regular.with_execution("spectral")
    assert isinstance(spectral.decoder, eSpectralDecoder)
    assert spectral.execution == "spectral"
    assert regular.execution == "regular"
    X, k, Z = _inputs(regular)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    expected = regular(X, k, Z, X_padding_mask=pad)
    got = spectral(X, k, Z, X_padding_mask=pad)
    assert float((got - expected).abs().max()) < 1e-10 * max(1.0, float(expected.abs().max()))
    assert spectral.check_equivariance(X, k, Z) < 1e-10
    # Back to the regular execution: the same function again, a regular state dict.
    back = spectral.with_execution("regular")
    assert isinstance(back.decoder, eTransformerDecoder)
    assert float((back(X, k, Z, X_padding_mask=pad) - expected).abs().max()) < 1e-10
    assert back.state_dict().keys() == regular.state_dict().keys()


@pytest.mark.parametrize("name", ["C2", "C8", "D6"])
@torch.no_grad()
def test_built_spectral_is_equivariant_and_exports(name: str) -> None:
    torch.manual_seed(1)
    model = _model(name, execution="spectral")
    X, k, Z = _inputs(model)
    assert model.check_equivariance(X, k, Z) < 1e-10
    plain = elayers.export(model)
    assert isinstance(plain, PlainCondTransformer)
    assert not any(isinstance(m, eModule) for m in plain.modules())
    assert torch.allclose(plain(X, k, Z), model(X, k, Z), atol=1e-10)
    with elayers.frozen(model):
        assert torch.allclose(model(X, k, Z), plain(X, k, Z), atol=1e-10)
    # The source model is left unchanged by export.
    assert isinstance(model.decoder, eSpectralDecoder)


@torch.no_grad()
def test_spectral_initialization_matches_the_regular_distribution() -> None:
    """Built spectral, the model is its regular draw converted: same seed, same function."""
    torch.set_default_dtype(torch.float64)  # converted in float64 (the fixture restores it)
    torch.manual_seed(3)
    regular = _model("C8", randomize=False)
    torch.manual_seed(3)
    spectral = _model("C8", randomize=False, execution="spectral")
    X, k, Z = _inputs(regular)
    assert torch.allclose(spectral(X, k, Z), regular(X, k, Z), atol=1e-10)


def test_default_execution_state_dict_is_unchanged() -> None:
    """The default (regular) model has the seed's parameter names; the spectral one differs only
    in the trunk (decoder, final norm) and the conditioning MLP."""
    regular = _model("C8")
    spectral = regular.with_execution("spectral")
    reg_keys = set(regular.state_dict())
    assert not any("weight_0" in key for key in reg_keys)
    outside = {k for k in reg_keys if not k.startswith(("decoder.", "ln_f.", "cond_encoder."))}
    assert outside <= set(spectral.state_dict())
    assert regular.execution == "regular"


def test_training_step_runs_and_is_decayed() -> None:
    """Gradients reach every spectral block; the optimizer groups decay the block weights."""
    model = _model("D6", execution="spectral").train()
    X, k, Z = _inputs(model)
    loss = model(X, k, Z).square().mean()
    loss.backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    groups = model.get_optim_groups(0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    blocks = [p for n, p in model.named_parameters() if n.split(".")[-1].startswith("weight_")]
    assert blocks
    assert all(id(p) in decayed for p in blocks)


@pytest.mark.parametrize("value", ["fast", None, 1])
def test_unknown_execution_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="execution to be one of"):
        _model("C2", execution=value)
    with pytest.raises(ValueError, match="with_execution expects one of"):
        _model("C2").with_execution(value)  # type: ignore[arg-type]


def test_the_configuration_records_the_execution_and_rebuilds_it() -> None:
    model = _model("C8")
    spectral = model.with_execution("spectral")
    assert model.config.execution == "regular"
    assert spectral.config.execution == "spectral"
    assert spectral.with_execution("regular").config == model.config
    rebuilt = eCondTransformerRegressor.from_config(spectral.config).double().eval()
    assert rebuilt.execution == "spectral"
    assert isinstance(rebuilt.decoder, eSpectralDecoder)
    # Same state-dict layout: a spectral checkpoint loads into the rebuilt spectral model.
    rebuilt.load_state_dict(spectral.state_dict())
    x, k, z = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, k, z), spectral(x, k, z), rtol=0, atol=0)


@pytest.mark.parametrize("kw", CONFIGS, ids=["default", "layernorm-causal", "rope", "relative"])
def test_an_empty_batch_gives_an_empty_output_as_the_regular_execution_does(
    kw: dict[str, Any],
) -> None:
    """B = 0 (with masks, in training too): the run layout merges B and T, and used to fail."""
    spectral = _model("D6", execution="spectral", **kw).train()
    X, k, Z = (v[:0] for v in _inputs(spectral))
    masks = {
        "X_padding_mask": torch.zeros(0, 5, dtype=torch.bool),
        "Z_padding_mask": torch.zeros(0, 3, dtype=torch.bool),
    }
    out = spectral(X, k, Z, **masks)
    expected = spectral.with_execution("regular").train()(X, k, Z, **masks)
    assert out.shape == expected.shape == (0, 5, spectral.out_dim)
    out.sum().backward()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        assert spectral.eval()(X, k, Z).shape == (0, 5, spectral.out_dim)


# Inputs sharing the batch axis share its name: the exporter says so and keeps one.
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
def test_spectral_model_export_traces_and_runs_in_onnx_runtime(tmp_path: Path) -> None:
    """A spectral-execution model's plain export through torch.export and ONNX (float32, 1e-5)."""
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    torch.manual_seed(2)
    model = _model("C8", execution="spectral").float()
    plain = elayers.export(model)

    def inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(batch)
        assert model.cond_dim is not None
        x = torch.randn(batch, 5, model.in_dim, generator=g)
        z = torch.randn(batch, 3, model.cond_dim, generator=g)
        return x, torch.randint(0, 1000, (batch,), generator=g).float(), z

    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = ({0: batch}, {0: batch}, {0: batch})
    program = torch.export.export(plain, inputs(2), dynamic_shapes=shapes)
    path = tmp_path / "spectral.onnx"
    torch.onnx.export(plain, inputs(2), f=str(path), dynamo=True, dynamic_shapes=shapes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for b in (1, 7):
        args = inputs(b)
        with torch.no_grad():
            expected = model(*args)
            traced = program.module()(*args)
        (got,) = session.run(None, dict(zip(names, (a.numpy() for a in args), strict=True)))
        torch.testing.assert_close(traced, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_a_state_dict_of_the_other_execution_is_refused_saying_how_to_convert() -> None:
    regular = _model("C8")
    spectral = regular.with_execution("spectral")
    before = {k: v.clone() for k, v in spectral.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(ValueError, match=r"saved from a model with execution='regular'.*"):
        spectral.load_state_dict(regular.state_dict())
    after = spectral.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was loaded
    with pytest.raises(ValueError, match=r"with_execution\('regular'\)"):
        regular.load_state_dict(spectral.state_dict())
    # The path the message names.
    rebuilt = _model("C8", randomize=False)
    rebuilt.load_state_dict(regular.state_dict())
    x, k, z = _inputs(regular)
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.with_execution("spectral")(x, k, z), spectral(x, k, z), rtol=1e-10, atol=1e-10
        )


def test_with_execution_keeps_frozen_parts_frozen_and_refuses_partly_frozen_ones() -> None:
    model = _model("C8")
    model.decoder.requires_grad_(False)
    spectral = model.with_execution("spectral")
    assert not any(p.requires_grad for p in spectral.decoder.parameters())
    assert all(p.requires_grad for p in spectral.ln_f.parameters())
    back = spectral.with_execution("regular")
    assert not any(p.requires_grad for p in back.decoder.parameters())
    assert all(p.requires_grad for p in back.head.parameters())
    model.decoder.requires_grad_(True)
    next(model.decoder.parameters()).requires_grad_(False)
    with pytest.raises(ValueError, match="partly frozen 'decoder'"):
        model.with_execution("spectral")
