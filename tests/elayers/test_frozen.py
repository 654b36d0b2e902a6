"""frozen(): dense weights built once on entry, used by every forward inside, dropped on exit."""

from __future__ import annotations

import copy
import pickle
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


def test_forwards_inside_use_the_weights_built_on_entry(monkeypatch: pytest.MonkeyPatch) -> None:
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
        linear = model[1].layers[0]
        assert linear.dense_weight() is linear.dense_weight()
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # Dropped on exit: forwards synthesize again, and see new values.
    with torch.no_grad():
        model(x)
        assert len(calls) > built
        assert linear.dense_weight() is not linear.dense_weight()


def test_forward_needing_parameter_gradients_synthesizes_inside() -> None:
    model = _model()
    x = C.seeded_randn(2, 5, 16, dtype=torch.float32)
    with elayers.frozen(model):
        out = model(x)
        C.backward(out.square().sum())
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    # Frozen parameters (requires_grad=False) do use the frozen tensors, with input gradients.
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    with elayers.frozen(model):
        linear = model[1].layers[0]
        assert linear.dense_weight() is linear.dense_weight()
        C.backward(model(xg).sum())
    assert xg.grad is not None
    assert torch.isfinite(xg.grad).all()


def test_nested_scopes_and_copies() -> None:
    model = _model()
    linear = model[1].layers[0]
    with torch.no_grad(), elayers.frozen(model):
        with elayers.frozen(model[1]):
            assert linear.dense_weight() is linear.dense_weight()
        # The inner scope did not own the frozen weights: still frozen here.
        assert linear.dense_weight() is linear.dense_weight()
        clone = copy.deepcopy(model)
        restored = pickle.loads(pickle.dumps(clone[1].layers[0].weight_params))
        assert restored.shape == linear.weight_params.shape
        clone_linear = clone[1].layers[0]
        assert clone_linear.dense_weight() is not clone_linear.dense_weight()
    assert linear.dense_weight() is not linear.dense_weight()


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
            torch.testing.assert_close(decoder(tgt, mem), expected, rtol=0, atol=0)
            batched = torch.func.vmap(lambda t: decoder(t, mem))(torch.stack([tgt, 2 * tgt]))
    torch.testing.assert_close(batched[0], expected, rtol=1e-5, atol=1e-5)


def test_other_threads_see_the_scope_and_errors_name_the_argument() -> None:
    model = _model()
    x = C.seeded_randn(1, 3, 16, dtype=torch.float32)
    linear = model[1].layers[0]
    seen: list[bool] = []
    with torch.no_grad(), elayers.frozen(model):

        def other() -> None:
            with torch.no_grad():  # grad mode is per thread
                seen.append(linear.dense_weight() is linear.dense_weight())

        t = threading.Thread(target=other)
        t.start()
        t.join()
        model(x)
    assert seen == [True]
    with pytest.raises(TypeError, match="torch.nn.Module"), elayers.frozen("model"):  # type: ignore[type-var]
        pass
