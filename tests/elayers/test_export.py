"""export(): every equivariant module becomes plain PyTorch computing the same function."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import (
    InvariantBias,
    eAffine,
    eLayerNorm,
    eLinear,
    eMLP,
    eModule,
    eMultiheadAttention,
    eRMSNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    eTransformerEncoder,
    eTransformerEncoderLayer,
)
from tests import _exported as X
from tests.elayers import _cases as C

Run = Callable[[nn.Module, Tensor], Tensor]


def _plain_call(module: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = module(x)
    return out


def _attention_call(causal: bool, cross: bool) -> Run:
    def run(module: nn.Module, x: Tensor) -> Tensor:
        kv = torch.cat((x, x.flip(1)), dim=1) if cross else x
        out, _ = module(x, kv, kv, need_weights=False, is_causal=causal)
        result: Tensor = out
        return result

    return run


def _masked_attention_call(module: nn.Module, x: Tensor) -> Tensor:
    n, t, _ = x.shape
    padding = torch.zeros(n, t, dtype=torch.bool)
    padding[:1, -2:] = True
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    out, weights = module(x, x, x, key_padding_mask=padding, attn_mask=mask)
    if weights is None:  # torch's fast path returns no weights for an empty batch
        assert n == 0
        flat: Tensor = out.flatten()
        return flat
    return torch.cat((out.flatten(), weights.flatten()))


def _encoder_call(causal: bool) -> Run:
    def run(module: nn.Module, x: Tensor) -> Tensor:
        out: Tensor = module(x, is_causal=causal)
        return out

    return run


def _decoder_call(causal: bool) -> Run:
    def run(module: nn.Module, x: Tensor) -> Tensor:
        memory = x[:, :3].flip(-1) * 0.5 + 0.1
        out: Tensor = module(x, memory, tgt_is_causal=causal)
        return out

    return run


def _layer(cls: type, key: str = "C8", spec: str = "4reg", **kw: object) -> Callable[[], eModule]:
    def make() -> eModule:
        module: eModule = cls(C.rep(key, spec), 2, 4 * C.group(key).order(), dropout=0.0, **kw)
        return module

    return make


# name -> (factory, input feature spec (key, rep spec), call)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[str, str], Run]] = {
    "linear-group-conv": (
        lambda: eLinear(C.rep("C8", "2reg"), C.rep("C8", "3reg")),
        ("C8", "2reg"),
        _plain_call,
    ),
    "linear-isotypic": (
        lambda: eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "quot+irr2")),
        ("D3", "Q:irr2+triv"),
        _plain_call,
    ),
    "linear-no-bias": (
        lambda: eLinear(C.rep("D3", "irr1+irr2"), C.rep("D3", "irr2"), bias=False),
        ("D3", "irr1+irr2"),
        _plain_call,
    ),
    "invariant-bias": (lambda: InvariantBias(C.rep("D3", "Q:reg")), ("D3", "Q:reg"), _plain_call),
    "affine-regular": (lambda: eAffine(C.rep("C8", "2reg")), ("C8", "2reg"), _plain_call),
    "affine-basis": (
        lambda: eAffine(C.rep("D3", "Q:irr2+triv")),
        ("D3", "Q:irr2+triv"),
        _plain_call,
    ),
    "affine-elementwise": (
        lambda: eAffine(C.rep("D3", "irr2+triv")),
        ("D3", "irr2+triv"),
        _plain_call,
    ),
    "rmsnorm-copy": (lambda: eRMSNorm(C.rep("C8", "2reg")), ("C8", "2reg"), _plain_call),
    "rmsnorm-copy-bias": (
        lambda: eRMSNorm(C.rep("C8", "2reg"), bias=True),
        ("C8", "2reg"),
        _plain_call,
    ),
    "rmsnorm-irrep": (
        lambda: eRMSNorm(C.rep("D3", "Q:irr2+triv")),
        ("D3", "Q:irr2+triv"),
        _plain_call,
    ),
    "rmsnorm-no-affine": (
        lambda: eRMSNorm(C.rep("C8", "2reg"), equiv_affine=False),
        ("C8", "2reg"),
        _plain_call,
    ),
    "layernorm-copy": (lambda: eLayerNorm(C.rep("D3", "3reg")), ("D3", "3reg"), _plain_call),
    "layernorm-copy-no-bias": (
        lambda: eLayerNorm(C.rep("D3", "3reg"), bias=False),
        ("D3", "3reg"),
        _plain_call,
    ),
    "layernorm-irrep-affine": (
        lambda: eLayerNorm(C.rep("C8", "2reg"), affine="irrep"),
        ("C8", "2reg"),
        _plain_call,
    ),
    "layernorm-centred-direction": (
        lambda: eLayerNorm(C.rep("D3", "Q:irr2+triv+triv")),
        ("D3", "Q:irr2+triv+triv"),
        _plain_call,
    ),
    "layernorm-nothing-to-centre": (
        lambda: eLayerNorm(C.rep("D3", "irr2+irr1")),
        ("D3", "irr2+irr1"),
        _plain_call,
    ),
    "mlp-gelu": (
        lambda: eMLP(C.rep("D3", "irr2+triv"), C.rep("D3", "irr2"), [12, 18]),
        ("D3", "irr2+triv"),
        _plain_call,
    ),
    "mlp-callable": (
        lambda: eMLP(C.rep("C8", "reg"), C.rep("C8", "reg"), [16], activation=torch.tanh),
        ("C8", "reg"),
        _plain_call,
    ),
    "mlp-module-activation": (
        lambda: eMLP(C.rep("C8", "reg"), C.rep("C8", "reg"), [16], activation=nn.SiLU()),
        ("C8", "reg"),
        _plain_call,
    ),
    "attention-self": (
        lambda: eMultiheadAttention(C.rep("C8", "4reg"), 2),
        ("C8", "4reg"),
        _attention_call(False, False),
    ),
    "attention-causal": (
        lambda: eMultiheadAttention(C.rep("C8", "4reg"), 4),
        ("C8", "4reg"),
        _attention_call(True, False),
    ),
    "attention-cross": (
        lambda: eMultiheadAttention(C.rep("D3", "2reg"), 1),
        ("D3", "2reg"),
        _attention_call(False, True),
    ),
    "attention-masks-weights": (
        lambda: eMultiheadAttention(C.rep("C8", "2reg"), 2),
        ("C8", "2reg"),
        _masked_attention_call,
    ),
    "encoder-post-layernorm-relu": (
        _layer(eTransformerEncoderLayer),
        ("C8", "4reg"),
        _encoder_call(False),
    ),
    "encoder-pre-layernorm-gelu-causal": (
        _layer(eTransformerEncoderLayer, norm_first=True, activation="gelu"),
        ("C8", "4reg"),
        _encoder_call(True),
    ),
    "encoder-pre-rmsnorm": (
        _layer(eTransformerEncoderLayer, norm_first=True, norm_module="rmsnorm"),
        ("C8", "4reg"),
        _encoder_call(False),
    ),
    "encoder-post-rmsnorm-silu-causal": (
        _layer(eTransformerEncoderLayer, "D3", "4reg", norm_module="rmsnorm", activation="silu"),
        ("D3", "4reg"),
        _encoder_call(True),
    ),
    "decoder-post-layernorm": (
        _layer(eTransformerDecoderLayer),
        ("C8", "4reg"),
        _decoder_call(False),
    ),
    "decoder-pre-rmsnorm-causal": (
        _layer(eTransformerDecoderLayer, norm_first=True, norm_module="rmsnorm", activation="gelu"),
        ("C8", "4reg"),
        _decoder_call(True),
    ),
    "encoder-stack-norm": (
        lambda: eTransformerEncoder(
            _layer(eTransformerEncoderLayer, norm_first=True)(),  # type: ignore[arg-type]
            2,
            norm=eRMSNorm(C.rep("C8", "4reg")),
        ),
        ("C8", "4reg"),
        _encoder_call(True),
    ),
    "decoder-stack": (
        lambda: eTransformerDecoder(
            _layer(eTransformerDecoderLayer, norm_first=True)(),  # type: ignore[arg-type]
            2,
            norm=eLayerNorm(C.rep("C8", "4reg")),
        ),
        ("C8", "4reg"),
        _decoder_call(False),
    ),
}


def _build(name: str, dtype: torch.dtype) -> tuple[nn.Module, Tensor, Run]:
    factory, (key, spec), run = CASES[name]
    torch.manual_seed(0)
    module = factory().to(dtype)
    C.perturb_(module, scale=0.3)
    module.eval()
    x = C.seeded_randn(3, 6, C.rep(key, spec).size, dtype=dtype, seed=4)
    return module, x, run


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_export_agrees_and_is_plain(name: str, dtype: torch.dtype, tol: float) -> None:
    module, x, run = _build(name, dtype)
    before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, Tensor)}
    plain = elayers.export(module)
    X.assert_plain(plain)
    assert not plain.training
    with torch.no_grad():
        expected = run(module, x)
        got = run(plain, x)
    assert got.dtype == dtype
    assert X.relative_error(got, expected) <= tol
    # The source is unchanged and shares no tensor with the copy.
    for k, v in module.state_dict().items():
        if isinstance(v, Tensor):
            torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    ptrs = {p.data_ptr() for p in module.parameters()}
    assert not ptrs & {p.data_ptr() for p in plain.parameters()}
    # Method and walker give the same module kind.
    assert type(module.export()) is type(plain)  # type: ignore[operator]


def test_export_of_equivariant_modules_maps_to_torch_classes() -> None:
    kinds = {
        "linear-group-conv": nn.Linear,
        "rmsnorm-copy": nn.RMSNorm,
        "layernorm-copy": nn.LayerNorm,
        "attention-self": nn.MultiheadAttention,
        "encoder-post-layernorm-relu": nn.TransformerEncoderLayer,
        "decoder-post-layernorm": nn.TransformerDecoderLayer,
        "encoder-stack-norm": nn.TransformerEncoder,
        "decoder-stack": nn.TransformerDecoder,
    }
    for name, cls in kinds.items():
        module, _, _ = _build(name, torch.float32)
        assert isinstance(elayers.export(module), cls), name


@pytest.mark.parametrize("key", ["C8", "D6", "O", pytest.param("I", marks=pytest.mark.slow)])
def test_export_of_layers_over_other_groups(key: str) -> None:
    order = C.group(key).order()
    rep = C.rep(key, "2reg")
    layer = eTransformerEncoderLayer(rep, 2, 2 * order, dropout=0.0, norm_first=True)
    linear = eLinear(rep, C.rep(key, "triv+reg") if key != "O" else rep)
    model = nn.Sequential(layer, linear).double()
    C.perturb_(model, scale=0.2)
    model.eval()
    x = C.seeded_randn(2, 5, rep.size)
    plain = elayers.export(model)
    X.assert_plain(plain)
    with torch.no_grad():
        assert X.relative_error(plain(x), model(x)) <= 1e-12


class _UserModel(nn.Module):
    """A user's own container: plain layers around equivariant ones, one of them shared."""

    def __init__(self) -> None:
        super().__init__()
        rep = C.rep("C8", "2reg")
        self.pre = nn.Linear(16, 16)
        self.block = eTransformerEncoderLayer(rep, 2, 32, dropout=0.0)
        self.shared = eLinear(rep, rep)
        self.heads = nn.ModuleDict({"a": self.shared, "b": nn.Sequential(self.shared, nn.Tanh())})
        self.register_buffer("offset", torch.full((16,), 0.25))
        self.scale = 2.0

    def forward(self, x: Tensor) -> Tensor:
        h = self.block(self.pre(x) + self.offset)
        out: Tensor = self.heads["a"](h) * self.scale + self.heads["b"](h)
        return out


def test_export_walks_a_user_container_and_keeps_sharing() -> None:
    model = _UserModel().double()
    C.perturb_(model, scale=0.2)
    model.eval()
    calls: list[int] = []
    model.pre.register_forward_hook(lambda *_: calls.append(1))
    plain = elayers.export(model)
    assert isinstance(plain, _UserModel)
    for name, sub in plain.named_modules():
        if name:  # the root is the user's own class
            owner = type(sub).__module__
            assert owner.startswith("torch.") or owner in X.PLAIN_MODULES, (name, type(sub))
    assert not any(isinstance(m, eModule) for m in plain.modules())
    assert plain.heads["a"] is plain.shared
    assert plain.heads["b"][0] is plain.shared  # type: ignore[index]
    assert plain.scale == 2.0
    assert plain.offset is not model.offset
    x = C.seeded_randn(3, 4, 16)
    with torch.no_grad():
        assert X.relative_error(plain(x), model(x)) <= 1e-12
    assert len(calls) == 2  # the copied hook ran once per forward of each model
    assert isinstance(model.block, eTransformerEncoderLayer)  # the source is untouched


def test_exported_container_refers_to_no_project_code() -> None:
    # A container of eModules carries elayers' loading guard (a pre-hook); its exported copy
    # must not, or unpickling it would need elayers where the plain model is deployed.
    rep = C.rep("C8", "reg")
    model = nn.Sequential(nn.Sequential(eLinear(rep, rep)), nn.ReLU())
    assert model._load_state_dict_pre_hooks
    assert model[0]._load_state_dict_pre_hooks
    plain = elayers.export(model)
    for sub in plain.modules():
        assert not sub._load_state_dict_pre_hooks, type(sub)
    payload = pickle.dumps(plain)
    for name in (b"elayers", b"ereps", b"escnn"):
        assert name not in payload
    assert model[0]._load_state_dict_pre_hooks  # the source keeps its guard


def test_export_keeps_the_training_flag_and_rejects_non_modules() -> None:
    layer = eLinear(C.rep("C8", "reg"), C.rep("C8", "reg"))
    assert elayers.export(layer).training
    assert not elayers.export(layer.eval()).training
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        elayers.export(lambda x: x)  # type: ignore[arg-type]


def test_module_without_export_says_so() -> None:
    class Mine(eModule):
        def forward(self, x: Tensor) -> Tensor:
            return x

    rep = C.rep("C8", "reg")
    with pytest.raises(NotImplementedError, match="Mine does not implement export"):
        elayers.export(nn.Sequential(Mine(rep, rep)))


def test_exported_module_pickles_and_reloads() -> None:
    module, x, run = _build("encoder-pre-layernorm-gelu-causal", torch.float32)
    plain = elayers.export(nn.ModuleList([module]))
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(run(loaded[0], x), run(module, x), rtol=1e-5, atol=1e-5)
    clone = copy.deepcopy(plain)
    with torch.no_grad():
        torch.testing.assert_close(run(clone[0], x), run(module, x), rtol=1e-5, atol=1e-5)  # type: ignore[index]


def test_exported_layer_runs_torch_fused_inference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    module, x, run = _build("encoder-post-layernorm-relu", torch.float32)
    plain = elayers.export(module)
    calls: list[int] = []
    fused = torch._transformer_encoder_layer_fwd

    def spy(*args: Any) -> Tensor:
        calls.append(1)
        out: Tensor = fused(*args)
        return out

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    with torch.no_grad():
        got = run(plain, x)
    assert calls
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(got, run(module, x), rtol=1e-5, atol=1e-5)
    # With RMS norms the kernel (which computes layer norms) must not run.
    rms, x, run = _build("encoder-pre-rmsnorm", torch.float32)
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    calls.clear()
    with torch.no_grad():
        got = run(elayers.export(rms), x)
    assert not calls
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(got, run(rms, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["encoder-stack-norm", "mlp-gelu"])
def test_torch_export_with_dynamic_batch_and_blocked_reload(name: str, tmp_path: Path) -> None:
    module, x, run = _build(name, torch.float32)
    plain = elayers.export(module)
    batch = torch.export.Dim("batch", min=1, max=64)
    length = torch.export.Dim("length", min=1, max=6)
    if name == "mlp-gelu":
        program = torch.export.export(plain, (x,), dynamic_shapes=({0: batch, 1: length},))
    else:

        class Causal(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, src: Tensor) -> Tensor:
                return run(self.inner, src)

        program = torch.export.export(
            Causal(plain).eval(), (x,), dynamic_shapes=({0: batch, 1: length},)
        )
    other = C.seeded_randn(5, 4, x.shape[-1], dtype=torch.float32, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(
            program.module()(other), run(module, other), rtol=1e-5, atol=1e-5
        )
    path = tmp_path / "program.pt2"
    torch.export.save(program, path)
    torch.save(other, tmp_path / "input.pt")
    X.run_blocked(
        f"""
        import torch
        program = torch.export.load({str(path)!r})
        x = torch.load({str(tmp_path / "input.pt")!r})
        torch.save(program.module()(x), {str(tmp_path / "out.pt")!r})
        """
    )
    with torch.no_grad():
        expected = run(module, other)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=1e-5, atol=1e-5)


def test_plain_files_import_nothing_but_torch() -> None:
    root = Path(elayers.__file__).parent
    assert X.runtime_imports(root / "_plain.py") <= {"__future__", "torch", "typing", "elayers"}
    # Its one import from the package is the torch-only attention (checked in
    # test_export_positional.py).
    source = (root / "_plain.py").read_text()
    assert source.count("from elayers") == 1
    assert "from elayers._positional import multihead_attention" in source
