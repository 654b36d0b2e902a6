"""The spectral form of the export: ``export_spectral()`` and ``elayers.export(form="spectral")``.

Every spectral module's spectral plain module (``elayers._plain_spectral``: block products,
norms, attention, decoder layer and stack, MLP) against its source in eval mode, float64 to
1e-12 and float32 to 1e-5, causal or not, with padding masks and every attention positional
encoding; the exported trees hold only torch classes and the torch-only plain classes, and the
plain files import nothing but torch; ``torch.export`` with a dynamic batch, saved and loaded in a
process that cannot import escnn or the project, and ONNX Runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import escnn.group as eg
import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import (
    PlainSpectralDecoder,
    PlainSpectralDecoderLayer,
    PlainSpectralLinear,
    PlainSpectralMLP,
    PlainSpectralMultiheadAttention,
    PlainSpectralNorm,
    eLayerNorm,
    eLinear,
    eMLP,
    eModule,
    eMultiheadAttention,
    eRMSNorm,
    eSpectralDecoder,
    eSpectralDecoderLayer,
    eSpectralLinear,
    eSpectralMLP,
    eSpectralMultiheadAttention,
    eSpectralNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
)
from ereps import Group, Representation, direct_sum
from tests import _exported as X

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
DTYPES = [torch.float64, torch.float32]


@functools.cache
def _group(name: str) -> Group:
    factories: dict[str, Callable[[], Group]] = {
        "C2": lambda: eg.cyclic_group(2),
        "C8": lambda: eg.cyclic_group(8),
        "D6": lambda: eg.dihedral_group(6),
        "ico": eg.ico_group,
    }
    return factories[name]()


GROUPS = ["C2", "C8", "D6", pytest.param("ico", marks=pytest.mark.slow)]


def _regular(group: Group, copies: int) -> Representation:
    return direct_sum([group.regular_representation] * copies)


def _randomize(module: nn.Module) -> None:
    """Random biases, norm scales and relative biases, so that every term is checked."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "coeffs" in name or "copy_" in name or "relative_bias" in name:
                p.normal_()


def _seeded(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _decoder_layer(
    group: Group, pos: str | None, norm_first: bool, norm: str
) -> eTransformerDecoderLayer:
    n = group.order()
    return eTransformerDecoderLayer(
        _regular(group, 4),
        2,
        dim_feedforward=8 * n,
        batch_first=True,
        norm_first=norm_first,
        norm_module=norm,  # type: ignore[arg-type]
        pos_encoding=pos,  # type: ignore[arg-type]
    )


def _masks(batch: int, t: int, s: int) -> tuple[Tensor, Tensor]:
    """Padding masks of the queries and of the keys: one row padded late, one early."""
    tgt = torch.zeros(batch, t, dtype=torch.bool)
    tgt[1, t - 2 :] = True
    mem = torch.zeros(batch, s, dtype=torch.bool)
    mem[-1, :2] = True
    return tgt, mem


def _check_plain_tree(plain: nn.Module) -> None:
    X.assert_plain(plain)
    assert not any(isinstance(m, eModule) for m in plain.modules())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", GROUPS)
def test_spectral_linear_exports_its_blocks(name: str, dtype: torch.dtype) -> None:
    group = _group(name)
    for bias in (True, False):
        linear = eSpectralLinear(group, 3, 2, bias=bias).to(dtype).eval()
        _randomize(linear)
        plain = linear.export_spectral()
        assert type(plain) is PlainSpectralLinear
        _check_plain_tree(plain)
        # The blocks, not a dense matrix: c_in c_out |G| numbers, as the equivariant map has.
        blocks = sum(b.numel() for b in plain.block_matrices())
        assert blocks == sum(b.numel() for b in linear.block_matrices())
        x = _seeded(4, 5, 3 * group.order(), seed=1, dtype=dtype)
        with torch.no_grad():
            assert X.relative_error(plain(x), linear(x)) <= TOL[dtype]
            # Against brute force: the whole block-sparse matrix and the spectral bias.
            dense = x @ linear.dense_spectral_weight().T
            b = linear.spectral_bias(dtype)
            assert X.relative_error(plain(x), dense if b is None else dense + b) <= TOL[dtype]
    endo = {e for *_, e in linear.groups}
    # C8's irreps of frequency 1..3 are of complex type (2-D blocks of the algebra); C2, D6 and
    # the icosahedral group's are real. (escnn builds no finite group with quaternionic irreps.)
    assert endo == ({1, 2} if name == "C8" else {1})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("name", GROUPS)
def test_spectral_norm_exports_its_statistics(name: str, kind: str, dtype: torch.dtype) -> None:
    group = _group(name)
    source = (eRMSNorm if kind == "rms" else eLayerNorm)(_regular(group, 3))
    norm = eSpectralNorm.from_regular(source).to(dtype).eval()
    _randomize(norm)
    plain = elayers.export(norm, form="spectral")
    assert type(plain) is PlainSpectralNorm
    _check_plain_tree(plain)
    x = _seeded(2, 7, 3 * group.order(), seed=2, dtype=dtype) + 0.5
    with torch.no_grad():
        assert X.relative_error(plain(x), norm(x)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos", [None, "rope", "relative"])
@pytest.mark.parametrize("name", ["C8", "D6"])
def test_spectral_attention_exports_with_masks_and_positions(
    name: str, pos: str | None, dtype: torch.dtype
) -> None:
    group = _group(name)
    attention = eMultiheadAttention(
        _regular(group, 4),
        2,
        batch_first=True,
        pos_encoding=pos,  # type: ignore[arg-type]
    )
    spectral = eSpectralMultiheadAttention(attention).to(dtype).eval()
    _randomize(spectral)
    plain = spectral.export_spectral()
    assert type(plain) is PlainSpectralMultiheadAttention
    _check_plain_tree(plain)
    e = 4 * group.order()
    q = _seeded(3, 5, e, seed=3, dtype=dtype)
    kv = _seeded(3, 6, e, seed=4, dtype=dtype)
    q_pad, k_pad = _masks(3, 5, 6)
    with torch.no_grad():
        for causal in (False, True):
            # Self-attention (the same tensor: one packed projection), causal or not, padded.
            got = plain(q, q, key_padding_mask=q_pad, is_causal=causal)
            assert X.relative_error(got, spectral(q, q, q_pad, None, causal)) <= TOL[dtype]
        # Cross-attention with positions of their own and an explicit mask.
        q_pos, k_pos = torch.arange(5) + 2, torch.arange(6)
        mask = torch.ones(5, 6, dtype=torch.bool).triu(2)
        got = plain(q, kv, k_pad, mask, False, q_pos, k_pos)
        expected = spectral(q, kv, k_pad, mask, False, q_pos, k_pos)
        assert X.relative_error(got, expected) <= TOL[dtype]
        # On its own, the default (dense) form of elayers.export is the same plain module.
        default = elayers.export(spectral)
        _check_plain_tree(default)
        assert (
            X.relative_error(default(q, kv, k_pad, mask, False, q_pos, k_pos), expected)
            <= (TOL[dtype])
        )


def _decoder_inputs(
    group: Group, dtype: torch.dtype, batch: int = 3, t: int = 5, s: int = 4
) -> tuple[Tensor, Tensor]:
    e = 4 * group.order()
    return _seeded(batch, t, e, seed=5, dtype=dtype), _seeded(batch, s, e, seed=6, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos", [None, "rope", "relative"])
@pytest.mark.parametrize("name", GROUPS)
def test_spectral_decoder_stack_exports_with_masks_and_positions(
    name: str, pos: str | None, dtype: torch.dtype
) -> None:
    group = _group(name)
    decoder = eSpectralDecoder(eTransformerDecoder(_decoder_layer(group, pos, True, "rmsnorm"), 2))
    decoder = decoder.to(dtype).eval()
    _randomize(decoder)
    plain = elayers.export(decoder, form="spectral")
    assert type(plain) is PlainSpectralDecoder
    assert all(type(layer) is PlainSpectralDecoderLayer for layer in plain.layers)
    _check_plain_tree(plain)
    tgt, memory = _decoder_inputs(group, dtype)
    tgt_pad, mem_pad = _masks(3, 5, 4)
    memory_mask = torch.ones(5, 4, dtype=torch.bool).triu(2)
    tgt_pos, mem_pos = torch.arange(5), torch.arange(4) - 1
    with torch.no_grad():
        for causal in (False, True):
            args = (tgt, memory, memory_mask, tgt_pad, mem_pad, causal, tgt_pos, mem_pos)
            assert X.relative_error(plain(*args), decoder(*args)) <= TOL[dtype]
        bare = (tgt, memory)
        assert X.relative_error(plain(*bare), decoder(*bare)) <= TOL[dtype]
        # torch's call: an explicit self-attention mask instead of is_causal.
        causal_mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
        got = plain(tgt, memory, tgt_mask=causal_mask, memory_is_causal=False)
        assert X.relative_error(got, decoder(tgt, memory, None, None, None, True)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_spectral_decoder_layer_exports_pre_and_post_norm(
    norm: str, norm_first: bool, dtype: torch.dtype
) -> None:
    group = _group("C8")
    layer = eSpectralDecoderLayer(_decoder_layer(group, None, norm_first, norm)).to(dtype).eval()
    _randomize(layer)
    plain = layer.export_spectral()
    assert type(plain) is PlainSpectralDecoderLayer
    _check_plain_tree(plain)
    tgt, memory = _decoder_inputs(group, dtype)
    tgt_pad, mem_pad = _masks(3, 5, 4)
    with torch.no_grad():
        args = (tgt, memory, None, tgt_pad, mem_pad, True)
        assert X.relative_error(plain(*args), layer(*args)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", GROUPS)
def test_spectral_mlp_exports(name: str, dtype: torch.dtype) -> None:
    group = _group(name)
    for activation in ("gelu", "relu"):
        mlp = eSpectralMLP(
            eMLP(
                _regular(group, 2),
                _regular(group, 3),
                [4 * group.order()] * 2,
                activation=activation,
            )
        )
        mlp = mlp.to(dtype).eval()
        _randomize(mlp)
        plain = mlp.export_spectral()
        assert type(plain) is PlainSpectralMLP
        _check_plain_tree(plain)
        x = _seeded(2, 4, 2 * group.order(), seed=7, dtype=dtype)
        with torch.no_grad():
            assert X.relative_error(plain(x), mlp(x)) <= TOL[dtype]


def test_export_form_spectral_replaces_only_spectral_modules_in_a_user_tree() -> None:
    group = _group("C8")
    regular = eLinear(_regular(group, 2), _regular(group, 3))
    spectral = eSpectralLinear(group, 3, 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = regular, nn.Tanh(), spectral

        def forward(self, x: Tensor) -> Tensor:
            # Regular coordinates into the spectral map: a function like any other.
            out: Tensor = self.c(self.b(self.a(x)))
            return out

    net = Net().eval()
    _randomize(net)
    before = {k: v.clone() for k, v in net.state_dict().items() if torch.is_tensor(v)}
    plain = elayers.export(net, form="spectral")
    dense = elayers.export(net)
    assert type(plain.get_submodule("a")) is nn.Linear
    assert type(plain.get_submodule("c")) is PlainSpectralLinear
    assert type(dense.get_submodule("c")) is nn.Linear
    for child in plain.children():
        X.assert_plain(child)
    x = _seeded(4, 16, seed=8)
    with torch.no_grad():
        assert X.relative_error(plain(x), net(x)) <= 1e-5
        assert X.relative_error(dense(x), net(x)) <= 1e-5
    # The source is unchanged and shares no tensor with the export.
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        next(plain.get_submodule("c").parameters()).add_(1.0)
        assert X.relative_error(plain(x), net(x)) > 1e-3


@pytest.mark.parametrize("form", ["sparse", "Dense", None, 1])
def test_an_unknown_form_is_refused_naming_the_allowed_ones(form: Any) -> None:
    linear = eSpectralLinear(_group("C2"), 1, 1)
    with pytest.raises(ValueError, match=r"form to be one of \['dense', 'spectral'\]; got"):
        elayers.export(linear, form=form)


def test_training_mode_is_kept_and_copy_dropout_runs() -> None:
    group = _group("D6")
    layer = eTransformerDecoderLayer(
        _regular(group, 4), 2, dim_feedforward=8 * 12, batch_first=True, dropout=0.5
    )
    spectral = eSpectralDecoder(eTransformerDecoder(layer, 1)).train()
    plain = spectral.export_spectral()
    assert all(m.training for m in plain.modules())
    tgt, memory = _decoder_inputs(group, torch.float32)
    with torch.no_grad():
        torch.manual_seed(0)
        a = plain(tgt, memory)
        torch.manual_seed(0)
        b = spectral(tgt, memory)
        # The same dropout draws in the same order: the same function in training mode too.
        assert X.relative_error(a, b) <= 1e-5
        # And dropout is active (another draw gives another output).
        assert X.relative_error(plain(tgt, memory), b) > 1e-3
        plain.eval()
        assert X.relative_error(plain(tgt, memory), spectral.eval()(tgt, memory)) <= 1e-5


def test_memory_is_causal_is_refused() -> None:
    group = _group("C2")
    decoder = eSpectralDecoder(eTransformerDecoder(_decoder_layer(group, None, True, "rmsnorm"), 1))
    plain = decoder.export_spectral()
    tgt, memory = _decoder_inputs(group, torch.float32)
    with pytest.raises(ValueError, match="memory_is_causal=True"):
        plain(tgt, memory, memory_is_causal=True)


def test_an_empty_batch_gives_an_empty_output() -> None:
    group = _group("C8")
    decoder = eSpectralDecoder(
        eTransformerDecoder(_decoder_layer(group, "rope", True, "rmsnorm"), 1)
    )
    plain = decoder.eval().export_spectral()
    tgt, memory = _decoder_inputs(group, torch.float32)
    with torch.no_grad():
        assert plain(tgt[:0], memory[:0]).shape == (0, *tgt.shape[1:])


def test_spectral_plain_files_import_nothing_but_torch() -> None:
    root = Path(elayers.__file__).parent
    torch_only = {"__future__", "torch", "typing", "collections", "copy", "math"}
    assert X.runtime_imports(root / "_spectral_ops.py") <= torch_only | {"elayers"}
    assert X.runtime_imports(root / "_plain_spectral.py") <= torch_only | {"elayers"}
    # Their imports from the package are their torch-only siblings, nothing else.
    for name, allowed in (
        ("_spectral_ops.py", {"elayers._positional"}),
        ("_plain_spectral.py", {"elayers._positional", "elayers._spectral_ops"}),
    ):
        source = (root / name).read_text()
        found = {line.split()[1] for line in source.splitlines() if line.startswith("from elayers")}
        assert found == allowed, (name, found)


def _traceable(name: str) -> tuple[nn.Module, nn.Module, Callable[[int], tuple[Tensor, ...]]]:
    """A float32 spectral source in eval mode, its spectral export, inputs by batch size."""
    if name == "mlp":
        group = _group("C8")
        source: nn.Module = eSpectralMLP(eMLP(_regular(group, 2), _regular(group, 2), [32]))
        _randomize(source)
        return (
            source.eval(),
            elayers.export(source, form="spectral"),
            lambda b: (_seeded(b, 5, 16, seed=b),),
        )
    group = _group("D6")
    source = eSpectralDecoder(
        eTransformerDecoder(_decoder_layer(group, "rope", True, "rmsnorm"), 2)
    )
    _randomize(source)
    e = 4 * group.order()

    def inputs(b: int) -> tuple[Tensor, ...]:
        pad = torch.zeros(b, 5, dtype=torch.bool)
        pad[0, 3:] = True
        return (_seeded(b, 5, e, seed=b), _seeded(b, 4, e, seed=b + 50), pad)

    return source.eval(), elayers.export(source, form="spectral"), inputs


class _Padded(nn.Module):
    """A spectral decoder called with a padding mask and causal attention (positions inside)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tgt: Tensor, memory: Tensor, pad: Tensor) -> Tensor:
        out: Tensor = self.inner(tgt, memory, None, pad, None, True)
        return out


def _wrapped(name: str, module: nn.Module) -> nn.Module:
    return module if name == "mlp" else _Padded(module).train(module.training)


@pytest.mark.slow  # 10-15 s each (tracing, a fresh interpreter)
@pytest.mark.parametrize("name", ["mlp", "decoder"])
def test_spectral_export_through_torch_export_saved_and_loaded_without_the_project(
    name: str, tmp_path: Path
) -> None:
    source, plain, inputs = _traceable(name)
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = tuple({0: batch} for _ in inputs(2))
    program = torch.export.export(_wrapped(name, plain), inputs(2), dynamic_shapes=shapes)
    for b in (1, 7):
        with torch.no_grad():
            expected = _wrapped(name, source)(*inputs(b))
            assert X.relative_error(program.module()(*inputs(b)), expected) <= 1e-5
    path = tmp_path / "program.pt2"
    torch.export.save(program, path)
    torch.save(inputs(5), tmp_path / "inputs.pt")
    X.run_blocked(
        f"""
        import torch
        program = torch.export.load({str(path)!r})
        args = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(program.module()(*args), {str(tmp_path / "out.pt")!r})
        """
    )
    with torch.no_grad():
        expected = _wrapped(name, source)(*inputs(5))
    assert X.relative_error(torch.load(tmp_path / "out.pt"), expected) <= 1e-5


@pytest.mark.slow  # 5-35 s each (the ONNX exporter)
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
@pytest.mark.parametrize("name", ["mlp", "decoder"])
def test_spectral_export_runs_in_onnx_runtime(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'deploy' dependency group")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'deploy' dependency group")
    source, plain, inputs = _traceable(name)
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = tuple({0: batch} for _ in inputs(2))
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        _wrapped(name, plain),
        inputs(2),
        f=str(path),
        dynamo=True,
        dynamic_shapes=shapes,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for b in (1, 7):
        args = inputs(b)
        (got,) = session.run(None, dict(zip(names, (a.numpy() for a in args), strict=True)))
        with torch.no_grad():
            expected = _wrapped(name, source)(*args)
        assert X.relative_error(torch.from_numpy(got), expected) <= 1e-5


def test_bad_inputs_of_the_plain_modules_are_refused_naming_the_argument() -> None:
    group = _group("C8")
    linear = eSpectralLinear(group, 3, 2).export_spectral()
    with pytest.raises(
        ValueError, match=r"PlainSpectralLinear expects x of shape \(\.\.\., 24\); got \(4, 16\)"
    ):
        linear(torch.randn(4, 16))
    blocks = linear.block_matrices()
    with pytest.raises(ValueError, match=r"blocks\[1\] of shape"):
        PlainSpectralLinear(linear.groups, 3, 2, 8, [blocks[0], blocks[1][:, :-1]], None)
    with pytest.raises(ValueError, match="one block tensor per run"):
        PlainSpectralLinear(linear.groups, 3, 2, 8, blocks[:1], None)
    with pytest.raises(ValueError, match=r"bias of shape \(2,\); got \(3,\)"):
        PlainSpectralLinear(linear.groups, 3, 2, 8, blocks, torch.zeros(3))
    with pytest.raises(ValueError, match=r"scale of shape \(3,\)"):
        PlainSpectralNorm("rms", 1e-5, 3, 8, 0, torch.ones(2), None)
    with pytest.raises(ValueError, match="kind 'rms' or 'layer'"):
        PlainSpectralNorm("batch", 1e-5, 3, 8, 0, torch.ones(3), None)
    decoder = eSpectralDecoder(eTransformerDecoder(_decoder_layer(group, None, True, "rmsnorm"), 1))
    plain = decoder.export_spectral()
    tgt, memory = _decoder_inputs(group, torch.float32)
    with pytest.raises(ValueError, match=r"memory of shape \(B, T, 32\); got \(3, 4, 31\)"):
        plain(tgt, memory[..., :-1])
    with pytest.raises(ValueError, match=r"tgt of shape \(B, T, 32\); got \(5, 32\)"):
        plain(tgt[0], memory)
    mlp = eSpectralMLP(eMLP(_regular(group, 2), _regular(group, 2), [32])).export_spectral()
    with pytest.raises(ValueError, match=r"PlainSpectralMLP expects x of shape \(\.\.\., 16\)"):
        mlp(torch.randn(2, 8))
