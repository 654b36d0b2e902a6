"""Samplers for diffusion and flow-matching policies that keep the model's equivariance.

A sampler maps ``(Z, noise)`` to a sample ``X``. With an equivariant regressor ``f``
(``f(ρ_X(g) X, ρ_Z(g) Z, k) = ρ_X(g) f(X, Z, k)``) and noise drawn from an isotropic Gaussian, the
sampler is equivariant, ``S(ρ_Z(g) Z, ρ_X(g) n) = ρ_X(g) S(Z, n)``, as long as every operation it
applies to the sample commutes with ``ρ_X(g)``. Linear combinations of the sample, the model output
and fresh noise with scalar coefficients (every DDPM, DDIM, DPM-Solver or Euler update, and any
ODE integrator of a flow) do. Coordinate-wise nonlinear operations do not, unless ``ρ_X`` acts by
signed permutations:

- ``clip_sample=True`` (diffusers' default for DDPM/DDIM, and Diffusion Policy's configuration)
  clamps each coordinate of the predicted clean sample to ``[-r, r]``: a box, which a rotation by
  45° does not map to itself. Groups acting by signed permutations of the coordinates (D4 on the
  plane, the octahedral group on 3-D space in escnn's basis) map the box to itself, and clamping
  then commutes with them.
- ``thresholding=True`` (dynamic thresholding) divides by a percentile of ``|x|`` over the
  coordinates: permutations and sign flips keep the multiset of ``|x_i|``, rotations do not.

Per-coordinate normalizers (Diffusion Policy's min/max ``LinearNormalizer``) break equivariance the
same way; use :class:`EquivariantNormalizer`.

Fresh noise: a stochastic sampler adds noise ``σ_t ε_t`` at every step. The policy is equivariant in
distribution (``ρ(g) ε`` has the law of ``ε``), and pathwise when the per-step noise is transformed
with the initial noise: pass it explicitly (``step_noise``). diffusers' ``DDPMScheduler.step`` draws
its noise internally from a generator and takes none; ``DDIMScheduler.from_config(ddpm.config)``
with ``eta=1.0`` takes it (``variance_noise``) and is the same ancestral sampler.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from ereps import Representation, rep_matrices

__all__ = [
    "DiffusionScheduler",
    "diffusion_sample",
    "flow_matching_sample",
    "unsafe_scheduler_options",
]

#: A denoiser or velocity field called as ``model(X, opt_step, Z)``; ``Z`` may be ``None``.
Denoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]


class DiffusionScheduler(Protocol):
    """The part of a diffusers scheduler (``SchedulerMixin``) that :func:`diffusion_sample` uses.

    ``set_timesteps(num_inference_steps)``, ``scale_model_input(sample, t)`` and
    ``step(model_output, t, sample, **kwargs)`` returning an object with ``prev_sample``; the
    ``timesteps`` tensor and the ``config`` mapping (``clip_sample``, ``thresholding``, ...).
    """

    timesteps: Tensor
    set_timesteps: Callable[..., None]
    scale_model_input: Callable[..., Tensor]
    step: Callable[..., Any]


def _signed_permutation(rep: Representation) -> bool:
    """Whether every ``ρ(g)`` has one entry ±1 per row and column and zeros elsewhere."""
    mats = rep_matrices(rep).abs()
    ones = (mats - 1.0).abs() < 1e-9
    zeros = mats < 1e-9
    rows_ok = bool((ones.sum(dim=-1) == 1).all())
    return rows_ok and bool((ones | zeros).all())


def unsafe_scheduler_options(scheduler: object, rep: Representation) -> list[str]:
    """Name the enabled scheduler options that break equivariance for ``rep``.

    ``clip_sample`` (a per-coordinate box) and ``thresholding`` (per-sample percentiles of
    ``|x_i|``) commute with ``ρ(g)`` only when every ``ρ(g)`` is a signed permutation matrix: D4
    acting on the plane, or the octahedral group acting on 3-D space by the rotations of a cube
    whose faces face the axes (escnn's standard representation). For other representations (C8's
    rotations by 45°, the icosahedral group) they break it. Every other option of diffusers'
    schedulers scales whole samples by numbers and keeps it.

    Args:
        scheduler: A diffusers scheduler, or its ``config`` mapping.
        rep: The representation acting on each token of the sampled sequence.

    Returns:
        The names of the offending options (``[]`` when the sampler is equivariant).

    Raises:
        TypeError: If ``rep`` is not an escnn representation or ``scheduler`` has no config.
    """
    if not isinstance(rep, Representation):
        raise TypeError(
            f"unsafe_scheduler_options expects rep to be an escnn.group.Representation; got "
            f"{type(rep).__name__}."
        )
    config = scheduler if isinstance(scheduler, Mapping) else getattr(scheduler, "config", None)
    if not isinstance(config, Mapping):
        raise TypeError(
            "unsafe_scheduler_options expects a diffusers scheduler (with a config mapping) or its "
            f"config; got {type(scheduler).__name__}."
        )
    enabled = [name for name in ("clip_sample", "thresholding") if bool(config.get(name, False))]
    if not enabled or _signed_permutation(rep):
        return []
    return enabled


def _step_accepts(scheduler: DiffusionScheduler, name: str) -> bool:
    parameters = inspect.signature(scheduler.step).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def diffusion_sample(
    model: Denoiser,
    scheduler: DiffusionScheduler,
    noise: Tensor,
    Z: Tensor | None = None,
    *,
    num_inference_steps: int,
    step_noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    rep: Representation | None = None,
    **step_kwargs: Any,
) -> Tensor:
    r"""Run a diffusers scheduler's reverse process with a regressor: ``X_T = noise -> X_0``.

    .. math::
        X_{k-1} = \mathrm{step}\big(f(X_k, k, Z),\ k,\ X_k\big), \qquad
        X_{k_{\max}} = \sigma_{\mathrm{init}}\, n,

    over ``scheduler.timesteps`` after ``scheduler.set_timesteps(num_inference_steps)``. With an
    equivariant ``f``, no unsafe option (:func:`unsafe_scheduler_options`) and explicit
    ``step_noise`` (or a deterministic sampler: DDIM with ``eta=0``),
    ``diffusion_sample(ρ_Z(g) Z, ρ_X(g) n, ρ_X(g) ε) = ρ_X(g) diffusion_sample(Z, n, ε)`` to
    round-off.

    Args:
        model: Called as ``model(X_k, timestep, Z)`` with ``X_k`` of the shape of ``noise`` and a
            0-d ``timestep`` tensor (e.g. a regressor in eval mode).
        scheduler: A diffusers scheduler (``DDPMScheduler``, ``DDIMScheduler``, ...); its state
            (timesteps) is reset by this call.
        noise: Initial Gaussian noise ``n``, shape ``(B, T_x, d)``.
        Z: Conditioning ``(B, T_z, d_z)``, or ``None`` for a model without conditioning.
        num_inference_steps: Number of reverse steps.
        step_noise: Per-step noise ``ε``, shape ``(num_inference_steps, B, T_x, d)``, passed to the
            scheduler's ``step`` as ``variance_noise`` (DDIM with ``eta > 0``, ...).
        generator: Passed to ``step`` as ``generator`` for schedulers that draw their own noise
            (DDPM): equivariant in distribution, not pathwise.
        rep: When given, the representation of the sample's tokens: raise if the scheduler has an
            option enabled that breaks equivariance for it.
        **step_kwargs: More keyword arguments of ``step`` (e.g. ``eta=1.0`` for DDIM).

    Returns:
        The sample ``X_0``, same shape as ``noise``.

    Raises:
        ValueError: If ``rep`` is given and the scheduler is configured to break equivariance,
            ``num_inference_steps`` is not positive, or ``step_noise`` has the wrong shape.
        TypeError: If ``noise`` is not a floating tensor, or ``step_noise`` is given to a scheduler
            whose ``step`` takes no ``variance_noise``.
    """
    if not isinstance(noise, Tensor) or not noise.is_floating_point():
        raise TypeError(
            f"diffusion_sample expects noise as a floating tensor of shape (B, T_x, d); got "
            f"{type(noise).__name__}."
        )
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        raise TypeError(
            f"diffusion_sample expects num_inference_steps as an int; got "
            f"{type(num_inference_steps).__name__}."
        )
    if num_inference_steps < 1:
        raise ValueError(
            f"diffusion_sample expects num_inference_steps >= 1; got {num_inference_steps}."
        )
    if rep is not None:
        unsafe = unsafe_scheduler_options(scheduler, rep)
        if unsafe:
            options = ", ".join(f"{name}=False" for name in unsafe)
            raise ValueError(
                f"diffusion_sample: the scheduler's {' and '.join(unsafe)} act coordinate by "
                f"coordinate and do not commute with the rotations of {rep.name!r} (only signed "
                f"permutations commute with them), so the policy would not be equivariant. Build "
                f"the scheduler with {options}."
            )
    if step_noise is not None:
        expected = (num_inference_steps, *noise.shape)
        if not isinstance(step_noise, Tensor) or tuple(step_noise.shape) != expected:
            got = tuple(step_noise.shape) if isinstance(step_noise, Tensor) else type(step_noise)
            raise ValueError(
                f"diffusion_sample expects step_noise of shape {expected} (num_inference_steps, "
                f"*noise.shape); got {got}."
            )
        if not _step_accepts(scheduler, "variance_noise"):
            raise TypeError(
                f"diffusion_sample: {type(scheduler).__name__}.step takes no variance_noise, so "
                "step_noise cannot be passed. diffusers' DDPMScheduler draws its noise from a "
                "generator; DDIMScheduler.from_config(ddpm.config) with eta=1.0 is the same "
                "ancestral sampler and takes the noise explicitly."
            )
    scheduler.set_timesteps(num_inference_steps)
    sigma = getattr(scheduler, "init_noise_sigma", 1.0)
    x = noise * sigma
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(x, t)
        output = model(model_input, t, Z)
        kwargs = dict(step_kwargs)
        if step_noise is not None:
            kwargs["variance_noise"] = step_noise[i]
        if generator is not None:
            kwargs["generator"] = generator
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return x


def flow_matching_sample(
    model: Denoiser,
    noise: Tensor,
    Z: Tensor | None = None,
    *,
    steps: int,
    method: Literal["euler", "midpoint"] = "euler",
    time_scale: float = 1.0,
) -> Tensor:
    r"""Integrate a flow-matching velocity field from noise (``t = 0``) to data (``t = 1``).

    .. math::
        \frac{\mathrm{d}X}{\mathrm{d}t} = v(X, s\,t, Z), \qquad X(0) = n,

    on a uniform grid of ``steps`` steps (``euler``: one evaluation per step; ``midpoint``: two),
    with ``s = time_scale`` (the regressors' sinusoidal step embedding expects steps in the
    hundreds: train and sample with e.g. ``time_scale=1000``). Every update is a linear
    combination of the sample and the velocity, so an equivariant ``v`` gives an equivariant
    sampler: ``S(ρ_Z(g) Z, ρ_X(g) n) = ρ_X(g) S(Z, n)``.

    Args:
        model: Called as ``model(X, opt_step, Z)`` with a ``(B,)`` ``opt_step`` tensor.
        noise: Initial points ``n``, shape ``(B, T_x, d)``.
        Z: Conditioning ``(B, T_z, d_z)``, or ``None`` for a model without conditioning.
        steps: Number of integration steps.
        method: ``"euler"`` or ``"midpoint"``.
        time_scale: Factor from flow time ``t`` to the model's ``opt_step``.

    Returns:
        The sample ``X(1)``, same shape as ``noise``.

    Raises:
        TypeError: If ``noise`` is not a floating tensor.
        ValueError: If ``steps`` is not positive or ``method`` is unknown.
    """
    if not isinstance(noise, Tensor) or not noise.is_floating_point():
        raise TypeError(
            f"flow_matching_sample expects noise as a floating tensor of shape (B, T_x, d); got "
            f"{type(noise).__name__}."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"flow_matching_sample expects steps as an int >= 1; got {steps!r}.")
    if method not in ("euler", "midpoint"):
        raise ValueError(
            f"flow_matching_sample expects method 'euler' or 'midpoint'; got {method!r}."
        )
    x, dt = noise, 1.0 / steps
    batch = noise.shape[0]
    for i in range(steps):
        t = torch.full((batch,), i * dt, dtype=noise.dtype, device=noise.device)
        v = model(x, t * time_scale, Z)
        if method == "midpoint":
            v = model(x + 0.5 * dt * v, (t + 0.5 * dt) * time_scale, Z)
        x = x + dt * v
    return x
