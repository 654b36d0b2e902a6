"""Full policies (normalizer -> diffusers sampler -> model -> unnormalize) stay equivariant.

The policy maps an observation ``Z`` and all the noise it uses (initial and per step) to a sample:
``policy(ρ_Z(g) Z, ρ_X(g) noise) = ρ_X(g) policy(Z, noise)`` for every ``g`` to float32 round-off,
unless the scheduler clips or thresholds coordinates (the trap: C8's rotations do not preserve a
box; D4's coordinate flips and swaps do).
"""

from __future__ import annotations

from collections.abc import Callable

import escnn.group as eg
import pytest
import torch
from torch import Tensor

from eregressors import (
    DiffusionScheduler,
    EquivariantNormalizer,
    diffusion_sample,
    eCondTransformerRegressor,
    flow_matching_sample,
    unsafe_scheduler_options,
)
from ereps import Representation, act, group_elements

diffusers = pytest.importorskip(
    "diffusers", reason="the sampling recipe runs diffusers' schedulers"
)
DDIMScheduler = diffusers.DDIMScheduler
DDPMScheduler = diffusers.DDPMScheduler

T_X, T_Z, STEPS, BATCH = 8, 2, 10, 3
GROUPS = {"C8": lambda: eg.cyclic_group(8).irrep(1), "D4": lambda: eg.dihedral_group(4).irrep(1, 1)}

Policy = Callable[[Tensor, Tensor, Tensor], Tensor]


def _normalizer(rep: Representation, seed: int) -> EquivariantNormalizer:
    # Fitted on deliberately asymmetric data: equivariance must not depend on the data.
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(200, T_X, rep.size, generator=g) * torch.tensor([3.0, 0.3]) + 1.5
    return EquivariantNormalizer(rep).fit(data)


def _parts(name: str) -> tuple[Representation, eCondTransformerRegressor, EquivariantNormalizer,
                                EquivariantNormalizer]:  # fmt: skip
    rep = GROUPS[name]()
    torch.manual_seed(0)
    model = eCondTransformerRegressor(rep, rep, rep, T_X, T_Z, 1, 1, 16, causal_attn=True).eval()
    return rep, model, _normalizer(rep, 1), _normalizer(rep, 2)


def _diffusion_policy(
    name: str, scheduler: DiffusionScheduler, dtype: torch.dtype = torch.float32, eta: float = 0.0
) -> tuple[Representation, Policy]:
    rep, model, x_norm, z_norm = _parts(name)
    model.to(dtype)

    def policy(Z: Tensor, noise: Tensor, step_noise: Tensor) -> Tensor:
        with torch.no_grad():
            x = diffusion_sample(
                model, scheduler, noise, z_norm.normalize(Z),
                num_inference_steps=STEPS, step_noise=step_noise, eta=eta,
            )  # fmt: skip
            return x_norm.unnormalize(x)

    return rep, policy


def _error(rep: Representation, policy: Policy, dtype: torch.dtype = torch.float32) -> float:
    gen = torch.Generator().manual_seed(3)
    Z = torch.randn(BATCH, T_Z, rep.size, generator=gen, dtype=dtype) * 2.0 + 1.0
    noise = torch.randn(BATCH, T_X, rep.size, generator=gen, dtype=dtype)
    step_noise = torch.randn(STEPS, BATCH, T_X, rep.size, generator=gen, dtype=dtype)
    reference = policy(Z, noise, step_noise)
    worst = 0.0
    for g in group_elements(rep.group):
        got = policy(act(rep, g, Z), act(rep, g, noise), act(rep, g, step_noise))
        expected = act(rep, g, reference)
        worst = max(worst, float((got - expected).norm() / expected.norm()))
    return worst


def _ddim(**config: object) -> DiffusionScheduler:
    # Diffusion Policy's training schedule (100 steps, squared cosine betas).
    scheduler: DiffusionScheduler = DDIMScheduler(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", **config
    )
    return scheduler


@pytest.mark.parametrize("name", ["C8", "D4"])
@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ancestral"])
def test_diffusers_policy_is_equivariant(name: str, eta: float) -> None:
    scheduler = _ddim(clip_sample=False)
    rep, policy = _diffusion_policy(name, scheduler, eta=eta)
    assert _error(rep, policy) < 2e-5


@pytest.mark.parametrize("name", ["C8", "D4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_flow_matching_policy_is_equivariant(name: str, dtype: torch.dtype) -> None:
    rep, model, x_norm, z_norm = _parts(name)
    model.to(dtype)

    def policy(Z: Tensor, noise: Tensor, step_noise: Tensor) -> Tensor:
        with torch.no_grad():
            x = flow_matching_sample(
                model, noise, z_norm(Z), steps=STEPS, method="midpoint", time_scale=1000.0,
            )  # fmt: skip
            return x_norm.unnormalize(x)

    # Exact up to round-off: 1e-13 in float64. In float32 the 20 evaluations of this untrained
    # (strongly expanding) velocity field amplify the model's 2e-7 round-off to about 1e-4.
    assert _error(rep, policy, dtype) < (1e-10 if dtype == torch.float64 else 1e-3)


def test_clipping_trap_breaks_c8_but_not_d4() -> None:
    # diffusers' default (and Diffusion Policy's): clip_sample=True. Measured in float64, where the
    # D4 policy is exact to 1e-13 (in float32 the clamps' kinks amplify round-off to ~1e-4).
    f64 = torch.float64
    for config in ({"clip_sample": True}, {"clip_sample": False, "thresholding": True}):
        rep, policy = _diffusion_policy("C8", _ddim(**config), f64, eta=1.0)
        assert _error(rep, policy, f64) > 1e-2, config
        rep, policy = _diffusion_policy("D4", _ddim(**config), f64, eta=1.0)
        assert _error(rep, policy, f64) < 1e-10, config
    # The same C8 policy without clipping is exact.
    rep, policy = _diffusion_policy("C8", _ddim(clip_sample=False), f64, eta=1.0)
    assert _error(rep, policy, f64) < 1e-10


def test_unsafe_options_are_named_and_refused() -> None:
    c8, d4 = GROUPS["C8"](), GROUPS["D4"]()
    default = DDPMScheduler()
    assert unsafe_scheduler_options(default, c8) == ["clip_sample"]
    assert unsafe_scheduler_options(default, d4) == []
    assert unsafe_scheduler_options(DDPMScheduler(clip_sample=False), c8) == []
    assert unsafe_scheduler_options({"thresholding": True, "clip_sample": True}, c8) == [
        "clip_sample",
        "thresholding",
    ]
    # The cube's rotations permute the axes and flip signs: the box is preserved.
    octa = eg.octa_group().standard_representation
    assert unsafe_scheduler_options(default, octa) == []
    # A 2-D rotation by 60° does not.
    assert unsafe_scheduler_options(default, eg.dihedral_group(6).irrep(1, 1)) == ["clip_sample"]
    rep, model, _, _ = _parts("C8")
    noise = torch.randn(1, T_X, 2)
    with pytest.raises(ValueError, match="Build the scheduler with clip_sample=False"):
        diffusion_sample(model, default, noise, torch.randn(1, T_Z, 2), num_inference_steps=2,
                         rep=rep)  # fmt: skip
    with pytest.raises(TypeError, match=r"escnn\.group\.Representation"):
        unsafe_scheduler_options(default, "C8")  # type: ignore[arg-type]


def test_ddpm_is_ddim_with_eta_one_and_explicit_noise() -> None:
    # The recipe for DDPM's ancestral sampler with explicit (transformable) noise: DDIM with the
    # same config and eta=1 gives the same samples as DDPMScheduler fed the same noise.
    _, model, _, _ = _parts("C8")
    ddpm = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                         clip_sample=False)  # fmt: skip
    ddim = DDIMScheduler.from_config(ddpm.config)
    Z, noise = torch.randn(2, T_Z, 2), torch.randn(2, T_X, 2)
    with torch.no_grad():
        x_ddpm = diffusion_sample(model, ddpm, noise, Z, num_inference_steps=STEPS,
                                  generator=torch.Generator().manual_seed(5))  # fmt: skip
        # DDPM draws one noise tensor per step but the last (t = 0), in order.
        gen = torch.Generator().manual_seed(5)
        drawn = [torch.randn(noise.shape, generator=gen) for _ in range(STEPS - 1)]
        step_noise = torch.stack([*drawn, torch.zeros_like(noise)])
        x_ddim = diffusion_sample(model, ddim, noise, Z, num_inference_steps=STEPS,
                                  step_noise=step_noise, eta=1.0)  # fmt: skip
    torch.testing.assert_close(x_ddim, x_ddpm, rtol=1e-4, atol=1e-4)


def test_errors() -> None:
    _, model, _, _ = _parts("D4")
    noise, Z = torch.randn(1, T_X, 2), torch.randn(1, T_Z, 2)
    with pytest.raises(TypeError, match="DDPMScheduler draws its noise from a generator"):
        diffusion_sample(model, DDPMScheduler(), noise, Z, num_inference_steps=2,
                         step_noise=torch.randn(2, 1, T_X, 2))  # fmt: skip
    with pytest.raises(ValueError, match=r"step_noise of shape \(3, 1, 8, 2\)"):
        diffusion_sample(model, _ddim(), noise, Z, num_inference_steps=3,
                         step_noise=torch.randn(2, 1, T_X, 2))  # fmt: skip
    with pytest.raises(ValueError, match="num_inference_steps >= 1"):
        diffusion_sample(model, _ddim(), noise, Z, num_inference_steps=0)
    with pytest.raises(ValueError, match="steps as an int >= 1"):
        flow_matching_sample(model, noise, Z, steps=0)
    with pytest.raises(ValueError, match="'euler' or 'midpoint'"):
        flow_matching_sample(model, noise, Z, steps=1, method="rk4")  # type: ignore[arg-type]
