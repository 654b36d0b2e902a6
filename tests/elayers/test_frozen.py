"""frozen(): export once on entry, forwards inside run that plain twin, dropped on exit."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import eLayerNorm, eLinear, eMLP, eTransformerDecoderLayer, eTransformerEncoderLayer
from tests.elayers import _cases as C


def _model() -> nn.Sequential:
    rep = C.rep("C8", "2reg")
    model = nn.Sequential(
        eTransformerEncoderLayer(rep, 2, 32, dropout=0.0, norm_first=True),
        eMLP(rep, rep, [16]),
        eLayerNorm(rep),
    )
    C.perturb_(model, scale=0.2)
    return model.eval()


def _count_synthesis(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = eLinear._synthesize

    def counting(self: eLinear) -> Tensor:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(eLinear, "_synthesize", counting)
    return calls


def test_forwards_inside_run_the_twin_built_on_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    with torch.no_grad():
        expected = model(x)
    calls = _count_synthesis(monkeypatch)
    with torch.no_grad(), elayers.frozen(model) as same:
        assert same is model
        built = len(calls)
        assert built == sum(isinstance(m, eLinear) for m in model.modules())
        outs = [model(x) for _ in range(3)]
        assert len(calls) == built  # no synthesis inside the scope
        assert elayers.frozen_twin(model[0]) is not None
        layer = model[0]
        assert isinstance(layer, eTransformerEncoderLayer)
        assert elayers.frozen_twin(layer.ff.linear1) is None  # only the topmost modules
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Dropped on exit: forwards synthesize again.
    assert elayers.frozen_twin(model[0]) is None
    with torch.no_grad():
        model(x)
    assert len(calls) > built


def test_calls_the_twin_would_not_compute_run_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    with elayers.frozen(model):
        calls = _count_synthesis(monkeypatch)
        # Autograd tracks the parameters: the module itself, so gradients reach them.
        C.backward(model(x).square().sum())
        assert calls
        assert all(p.grad is not None for p in model.parameters())
        # A hook on a submodule must see its call.
        seen: list[int] = []
        mlp = model[1]
        assert isinstance(mlp, eMLP)
        handle = mlp.layers[0].register_forward_hook(lambda *_: seen.append(1))
        with torch.no_grad():
            model(x)
        handle.remove()
        assert seen == [1]
        # Training mode (dropout) is not what the twin was built for.
        model.train()
        calls.clear()
        with torch.no_grad():
            model(x)
        assert calls
        model.eval()
    # Parameters that need no gradient use the twin, with input gradients.
    model.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    with elayers.frozen(model):
        calls.clear()
        C.backward(model(xg).sum())
        assert not calls
    assert xg.grad is not None
    assert torch.isfinite(xg.grad).all()


def test_nested_scopes_and_copies() -> None:
    model = _model()
    with torch.no_grad(), elayers.frozen(model):
        with elayers.frozen(model[1]):
            assert elayers.frozen_twin(model[1]) is not None
        # The inner scope did not own the twin: still frozen here.
        assert elayers.frozen_twin(model[1]) is not None
        clone = copy.deepcopy(model)
        assert elayers.frozen_twin(clone[1]) is None
    assert elayers.frozen_twin(model[1]) is None
    single = model[2]
    with elayers.frozen(single), torch.no_grad():
        assert elayers.frozen_twin(single) is not None
        single(C.seeded_randn(3, 16, dtype=torch.float32))


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_frozen_works_on_any_tree_and_under_vmap() -> None:
    rep = C.rep("C8", "2reg")
    decoder = eTransformerDecoderLayer(rep, 2, 32, dropout=0.0, norm_module="rmsnorm").eval()
    C.perturb_(decoder, scale=0.2)
    tree = nn.ModuleDict({"decoder": decoder, "plain": nn.Linear(16, 16)})
    tgt = C.seeded_randn(2, 4, 16, dtype=torch.float32)
    mem = C.seeded_randn(2, 3, 16, dtype=torch.float32, seed=3)
    with torch.no_grad():
        expected = decoder(tgt, mem)
        with elayers.frozen(tree):
            torch.testing.assert_close(decoder(tgt, mem), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                decoder(tgt, mem, tgt_is_causal=True),
                elayers.export(decoder)(tgt, mem, tgt_is_causal=True),
                rtol=0,
                atol=0,
            )
            batched = torch.func.vmap(lambda t: decoder(t, mem))(torch.stack([tgt, 2 * tgt]))
    torch.testing.assert_close(batched[0], expected, rtol=1e-5, atol=1e-5)


def test_other_threads_see_the_scope_and_errors_name_the_argument() -> None:
    model = _model()
    x = C.seeded_randn(1, 3, 16, dtype=torch.float32)
    seen: list[bool] = []
    with torch.no_grad(), elayers.frozen(model):

        def other() -> None:
            with torch.no_grad():  # grad mode is per thread
                seen.append(elayers.frozen_twin(model[0]) is not None)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        model(x)
    assert seen == [True]
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"), elayers.frozen("model"):  # type: ignore[type-var]
        pass


def test_each_kind_of_edit_alone_is_seen_and_named() -> None:
    """Versions and the first address are polled, assignments are seen as they happen: one edit
    of one kind is enough."""
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    cases = {
        "in_place": r"parameter '{name}' of eLinear changed inside",
        "replaced": r"parameter '{name}' of eLinear changed inside",
        "converted": r"its parameters \(moved or converted: \.to\(\), .*\) changed inside",
    }
    for edit, message in cases.items():
        model = _model()
        layer = model[1]
        assert isinstance(layer, eMLP)
        owner = layer.layers[0]
        with torch.no_grad(), elayers.frozen(model):
            model(x)
            name, param = next(iter(owner.named_parameters(recurse=False)))
            if edit == "in_place":
                param.mul_(1.5)
            elif edit == "replaced":
                # Same values, another Parameter object: neither version nor address of the old
                # one changes.
                setattr(owner, name, nn.Parameter(param.detach().clone()))
            else:
                version = param._version
                model.double()  # moves every parameter: seen at the first one's address
                assert param._version == version  # invisible to the version counter
                x = x.double()
            with pytest.raises(RuntimeError, match=message.format(name=name)):
                model(x)
        x = x.float()


def test_a_pre_hook_registered_inside_the_scope_runs() -> None:
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    seen: list[int] = []
    with torch.no_grad(), elayers.frozen(model):
        model(x)
        layer = model[0]
        assert isinstance(layer, eTransformerEncoderLayer)
        handle = layer.ff.linear1.register_forward_pre_hook(lambda *_: seen.append(1))
        model(x)
        assert seen == [1]
        handle.remove()
        model(x)
    assert seen == [1]


@pytest.mark.parametrize("kind", ["fused", "foreach"])
def test_an_optimizer_step_inside_the_scope_is_seen_fused_ones_included(kind: str) -> None:
    """Fused steps write the parameters without bumping their version counters."""
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    with torch.no_grad():
        expected = model(x)
    other = nn.Parameter(torch.zeros(3))
    with elayers.frozen(model):
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)
        # A step of an optimizer holding none of the model's parameters changes nothing.
        other.grad = torch.ones(3)
        torch.optim.AdamW([other], lr=0.1, **{kind: True}).step()  # type: ignore[arg-type]
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        version = next(model.parameters())._version
        torch.optim.AdamW(model.parameters(), lr=0.1, **{kind: True}).step()  # type: ignore[arg-type]
        if kind == "fused":
            assert next(model.parameters())._version == version  # invisible to the counter
        with (
            torch.no_grad(),
            pytest.raises(RuntimeError, match=r"an optimizer stepped its parameters inside"),
        ):
            model(x)
    with torch.no_grad():
        assert float((model(x) - expected).abs().max()) > 1e-3  # the step did change the model


def test_a_submodule_replaced_inside_the_scope_is_seen() -> None:
    """A layer swapped in holds parameters no entry knew: the twin would run the old layer."""
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    mlp = model[1]
    assert isinstance(mlp, eMLP)
    replacement = copy.deepcopy(mlp.layers[0])
    C.perturb_(replacement, scale=0.5)
    with torch.no_grad(), elayers.frozen(model):
        model(x)
        mlp.layers[0] = replacement  # inside the frozen eMLP
        with pytest.raises(RuntimeError, match=r"a submodule was replaced, added or removed"):
            model(x)
        model[1] = copy.deepcopy(mlp)  # a whole frozen module replaced: it runs itself
        with torch.no_grad():
            model(x)


def test_hooks_are_read_again_only_after_some_hook_was_registered() -> None:
    """The hook dicts are re-read when torch made a hook handle since the last look: a hook
    elsewhere keeps the twin, one on a submodule stops it, its removal plus any later
    registration brings the twin back, and a hook present on entry stops it from the start."""
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    mlp = model[1]
    assert isinstance(mlp, eMLP)
    elsewhere = nn.Linear(2, 2)
    with torch.no_grad(), elayers.frozen(model):
        assert elayers.frozen_twin(mlp) is not None
        unrelated = elsewhere.register_forward_hook(lambda *_: None)
        assert elayers.frozen_twin(mlp) is not None
        handle = mlp.layers[0].register_forward_pre_hook(lambda *_: None)
        assert elayers.frozen_twin(mlp) is None
        assert elayers.frozen_twin(model[0]) is not None  # another subtree: still the twin
        handle.remove()
        elsewhere.register_forward_hook(lambda *_: None).remove()
        assert elayers.frozen_twin(mlp) is not None
        unrelated.remove()
    handle = mlp.layers[0].register_forward_hook(lambda *_: None)
    with torch.no_grad(), elayers.frozen(model):
        assert elayers.frozen_twin(mlp) is None
        model(x)
    handle.remove()
