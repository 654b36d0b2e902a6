"""No edit of the parameters ever makes a forward use old weights.

Nothing is cached implicitly: every eval forward synthesizes its dense tensors. Every case warms the
module up (eval forwards, plain or inside an ``elayers.frozen`` scope that is then left), edits the
parameters the way optimizers, EMA helpers and users do, and compares the next eval output with a
freshly built module loaded with the same state dict. Edits inside a frozen scope that the
parameters' version counters can see raise instead of using the weights built on entry.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

import elayers
from elayers import eLinear, eModule, eTransformerEncoderLayer
from tests.elayers import _cases as C

Factory = Callable[[], eModule]


def _linear_group_conv() -> eLinear:
    return eLinear(C.rep("C8", "2reg"), C.rep("C8", "3reg"))


def _linear_large() -> eLinear:
    # 30·20·8 = 4800 coefficients, a weight far larger than the other cases'.
    return eLinear(C.rep("C8", "20reg"), C.rep("C8", "30reg"))


def _linear_isotypic() -> eModule:
    return eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "quot+irr2"))


def _encoder_layer() -> eModule:
    # Layernorm, relu, even heads: eval + no_grad takes torch's fused kernel.
    return eTransformerEncoderLayer(C.rep("C8", "2reg"), 2, 32, dropout=0.0)


FACTORIES: dict[str, Factory] = {
    "group_conv": _linear_group_conv,
    "large_group_conv": _linear_large,
    "isotypic": _linear_isotypic,
    "encoder_layer": _encoder_layer,
}


def _input(module: eModule, dtype: torch.dtype = torch.float32) -> Tensor:
    n = module.in_rep.size
    shape = (2, 5, n) if isinstance(module, eTransformerEncoderLayer) else (4, n)
    return C.seeded_randn(*shape, dtype=dtype, seed=11)


def _eval_out(module: nn.Module, x: Tensor) -> Tensor:
    module.eval()
    with torch.no_grad():
        out: Tensor = module(x)
    return out


def _reference(factory: Factory, module: nn.Module, x: Tensor) -> Tensor:
    fresh = factory().to(x.dtype)
    fresh.load_state_dict(module.state_dict())
    return _eval_out(fresh, x)


def _assert_fresh(factory: Factory, module: nn.Module, x: Tensor) -> None:
    got = _eval_out(module, x)
    torch.testing.assert_close(got, _reference(factory, module, x), rtol=1e-6, atol=1e-6)


WARM_MODES = ("eval", "frozen")
_WARM_MODE = {"mode": "eval"}


def _warm(module: nn.Module, x: Tensor) -> Tensor:
    """Eval forwards before an edit: plain, or twice inside a frozen scope that is then left."""
    if _WARM_MODE["mode"] == "eval":
        return _eval_out(module, x)
    with elayers.frozen(module):
        _eval_out(module, x)
        return _eval_out(module, x)


@pytest.fixture(autouse=True, params=WARM_MODES)
def warm_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    _WARM_MODE["mode"] = str(request.param)
    yield str(request.param)
    _WARM_MODE["mode"] = "eval"


def _other_params(module: nn.Module) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {
        name: torch.randn(p.shape, generator=gen, dtype=p.dtype)
        for name, p in module.named_parameters()
    }


@pytest.fixture(params=list(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[str(request.param)]


def test_optimizer_step_in_train_mode_then_eval(factory: Factory) -> None:
    module = factory()
    x = _input(module)
    before = _warm(module, x)
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    C.backward(module(x).pow(2).sum())
    opt.step()
    after = _eval_out(module, x)
    assert not torch.allclose(after, before)
    _assert_fresh(factory, module, x)


def test_load_state_dict_into_eval_copy(factory: Factory) -> None:
    module = factory()
    x = _input(module)
    target = factory()
    C.perturb_(target)
    _warm(module, x)
    module.load_state_dict(target.state_dict())
    torch.testing.assert_close(_eval_out(module, x), _eval_out(target, x), rtol=1e-6, atol=1e-6)
    module.load_state_dict(target.state_dict(), assign=True)
    torch.testing.assert_close(_eval_out(module, x), _eval_out(target, x), rtol=1e-6, atol=1e-6)


def test_ema_edits_under_no_grad_on_eval_copy(factory: Factory) -> None:
    model = factory()
    ema = copy.deepcopy(model).eval()
    x = _input(model)
    _warm(ema, x)
    C.perturb_(model)
    for _ in range(2):
        with torch.no_grad():
            for p, q in zip(ema.parameters(), model.parameters(), strict=True):
                p.mul_(0.9).add_(0.1 * q)
        _assert_fresh(factory, ema, x)
    # State-dict EMA (as timm's helpers do): in-place on the detached tensors of state_dict().
    with torch.no_grad():
        source = model.state_dict()
        for name, value in ema.state_dict().items():
            if isinstance(value, Tensor) and value.is_floating_point():
                value.lerp_(source[name], 0.5)
    _assert_fresh(factory, ema, x)


def test_inference_mode_edits(factory: Factory) -> None:
    module = factory()
    x = _input(module)
    _warm(module, x)
    with torch.inference_mode():
        for p in module.parameters():
            p.add_(0.1)
        module(x)
    _assert_fresh(factory, module, x)


def test_dtype_round_trip(factory: Factory) -> None:
    module = factory()
    x = _input(module)
    out32 = _warm(module, x)
    module.to(torch.float64)
    x64 = x.double()
    out64 = _eval_out(module, x64)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, _reference(factory, module, x64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out64.float(), out32, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5)
    module.to(torch.float32)
    _assert_fresh(factory, module, x)


def test_deepcopy_then_edit(factory: Factory) -> None:
    module = factory()
    x = _input(module)
    original = _warm(module, x)
    clone = copy.deepcopy(module)
    C.perturb_(clone)
    _assert_fresh(factory, clone, x)
    torch.testing.assert_close(_eval_out(module, x), original, rtol=0, atol=0)
    C.perturb_(module, seed=7)
    _assert_fresh(factory, module, x)


def test_param_data_reassignment(factory: Factory) -> None:
    module = factory()
    x = _input(module)
    _warm(module, x)
    for name, value in _other_params(module).items():
        module.get_parameter(name).data = value
    _assert_fresh(factory, module, x)
    # Same with torch.nn.utils.vector_to_parameters (assigns .data slices of one vector).
    vec = torch.nn.utils.parameters_to_vector(module.parameters())
    torch.nn.utils.vector_to_parameters(vec * 0.5, module.parameters())
    _assert_fresh(factory, module, x)


def test_in_place_edit_through_data(factory: Factory) -> None:
    # `p.data` does not share the version counter of `p`; classic EMA code edits it in place.
    module = factory()
    x = _input(module)
    _warm(module, x)
    for p in module.parameters():
        p.data.mul_(0.5).add_(0.25)
    _assert_fresh(factory, module, x)


def test_frozen_module_under_inference_mode_then_input_gradients() -> None:
    # A frozen eval model first used under inference_mode, later differentiated w.r.t. its input
    # (saliency, adversarial examples): no inference tensor may reach autograd.
    module = _linear_group_conv().eval().requires_grad_(False)
    x = _input(module)
    with torch.inference_mode(), elayers.frozen(module):
        module(x)
    with elayers.frozen(module):
        xg = x.clone().requires_grad_(True)
        C.backward(module(xg).sum())
    assert xg.grad is not None
    torch.testing.assert_close(xg.grad, module.weight.sum(0).expand_as(x))


def test_vmap_over_functional_call_under_no_grad() -> None:
    # Model ensembling with torch.func: parameters are batched tensors without storage.
    module = _linear_group_conv().eval()
    x = _input(module)
    params = {
        name: torch.stack([p.detach(), 2 * p.detach()]) for name, p in module.named_parameters()
    }

    def run(p: dict[str, Tensor], inp: Tensor) -> Tensor:
        out: Tensor = torch.func.functional_call(module, p, (inp,))
        return out

    with torch.no_grad():
        out = torch.func.vmap(run, in_dims=(0, None))(params, x)
        torch.testing.assert_close(out[1], 2 * module(x))


def test_concurrent_in_place_writer_never_leaves_stale_outputs() -> None:
    # The reliability issue's race: readers evaluate while a writer updates in place. Once the
    # writer is done, every reader's next output must be the fresh one (no snapshot can be stale,
    # because nothing is snapshotted).
    module = _encoder_layer().eval()
    x = _input(module)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                with torch.no_grad():
                    module(x)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for step in range(20):
            with torch.no_grad():
                for p in module.parameters():
                    p.mul_(0.97).add_(0.01 * (step % 3))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    _assert_fresh(_encoder_layer, module, x)


def test_edits_inside_frozen_raise_and_the_scope_is_left_clean(factory: Factory) -> None:
    module = factory().eval()
    x = _input(module)
    with elayers.frozen(module):
        _eval_out(module, x)
        # An optimizer-style in-place step: seen by the version counter.
        with torch.no_grad():
            next(module.parameters()).add_(1.0)
        with pytest.raises(RuntimeError, match=r"changed inside elayers\.frozen\(\)"):
            _eval_out(module, x)
    _assert_fresh(factory, module, x)
    target = factory()
    C.perturb_(target)
    with elayers.frozen(module):
        module.load_state_dict(target.state_dict())
        with pytest.raises(RuntimeError, match="changed inside"):
            _eval_out(module, x)
        module.load_state_dict(target.state_dict(), assign=True)
        with pytest.raises(RuntimeError, match="changed inside"):
            _eval_out(module, x)
    torch.testing.assert_close(_eval_out(module, x), _eval_out(target, x), rtol=1e-6, atol=1e-6)
    with elayers.frozen(module):
        module.to(torch.float64)
        with pytest.raises(RuntimeError, match="changed inside"):
            _eval_out(module, x.double())
    _assert_fresh(factory, module, x.double())
