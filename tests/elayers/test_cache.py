"""The eval-mode dense-weight cache of eLinear is never stale, whatever changes the parameters.

Every case compares the eval output of an edited module with a freshly built module loaded with
the same state dict (which cannot have a cache from before the edit).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from elayers import eLinear, eModule, eTransformerEncoderLayer
from tests.elayers import _cases as C

Factory = Callable[[], eModule]


def _linear_group_conv() -> eLinear:
    return eLinear(C.rep("C8", "2reg"), C.rep("C8", "3reg"))


def _linear_large() -> eLinear:
    # 30·20·8 = 4800 coefficients: past the size where the value check compares bit patterns.
    return eLinear(C.rep("C8", "20reg"), C.rep("C8", "30reg"))


def _linear_isotypic() -> eModule:
    return eLinear(C.rep("D3", "Q:irr2+triv"), C.rep("D3", "quot+irr2"))


def _encoder_layer() -> eModule:
    # Layernorm, relu, even heads: eval + no_grad takes torch's fused kernel with cached weights.
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


def _warm(module: nn.Module, x: Tensor) -> Tensor:
    """Populate the cache (eval + no_grad) and return that output."""
    return _eval_out(module, x)


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


def test_frozen_module_cached_under_inference_mode_then_input_gradients() -> None:
    # A frozen eval model first used under inference_mode, later differentiated w.r.t. its input
    # (saliency, adversarial examples): the cache must not hand out inference tensors to autograd.
    module = _linear_group_conv().eval().requires_grad_(False)
    x = _input(module)
    with torch.inference_mode():
        module(x)
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
