"""The abstract conditional regressor every model of this package implements."""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, overload

import torch
import torch._dynamo.decorators
from torch import Tensor

from elayers import Exportable
from eregressors._config import RegressorConfig, check_sizes, describe, is_real_number
from eregressors._optim import OptimGroup, default_optim_groups
from ereps import GroupElement, Representation, check_equivariance

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["GenCondRegressor", "OptStep"]

#: What ``forward`` accepts as the optimisation (diffusion / flow) step ``k``: a Python number, a
#: 0-d tensor shared by the whole batch, or one value per sample as a ``(B,)`` tensor.
OptStep = float | int | Tensor


class GenCondRegressor(torch.nn.Module, Exportable, metaclass=abc.ABCMeta):
    r"""Abstract conditional regressor :math:`V_k = f_\theta(X_k, Z, k)` of generative models.

    The network learned by a conditional diffusion or flow-matching model (e.g. a diffusion policy):
    given a noisy sample :math:`X_k` of the target sequence at optimisation step :math:`k` and a
    conditioning sequence :math:`Z` (e.g. an observation history), it regresses

    - the score :math:`\nabla_{X_k}\log p_k(X_k \mid Z)` or, equivalently, the noise
      :math:`\epsilon` added to :math:`X_0` (denoising diffusion, :math:`k` a discrete or continuous
      diffusion time), or
    - the velocity :math:`\mathrm{d}X_k/\mathrm{d}k` of the probability path (flow matching,
      :math:`k \in [0, 1]`),

    .. math::
        f_\theta: \mathcal{X}^{T_x} \times \mathcal{Z}^{T_z} \times \mathbb{R} \to
        \mathcal{V}^{T_x}.

    Shapes (batch first):

    - ``X``: ``(B, T_x, in_dim)``, a sequence of ``T_x`` tokens, ``1 <= T_x <= in_horizon``;
    - ``opt_step``: a Python number, a 0-d tensor (shared by the batch) or a ``(B,)`` tensor;
    - ``Z``: ``(B, T_z, cond_dim)``, ``1 <= T_z <= cond_horizon``, or ``None`` for a model built
      without conditioning (``cond_dim`` ``None`` or ``0``);
    - output ``V``: ``(B, T_x, out_dim)``, one regressed vector per input token.

    A subclass with a configuration dataclass (``model.config``) names it in :attr:`config_type`,
    which gives it :meth:`from_config`. Subclasses implement :meth:`forward` and call
    :meth:`_validate_inputs` first, so that every model rejects bad input with a ``ValueError``
    naming the expected and the received shapes before doing any work. The class is abstract:
    ``GenCondRegressor(...)`` raises ``TypeError``.

    Args:
        in_dim: Feature size ``d_x`` of the input tokens ``X``.
        out_dim: Feature size ``d_v`` of the output tokens ``V``.
        cond_dim: Feature size ``d_z`` of the conditioning tokens ``Z``; ``None`` or ``0`` for a
            model without conditioning tokens (``forward`` then takes ``Z=None``; the attribute
            ``cond_dim`` is ``0``).
        in_horizon: Maximum input length ``T_x`` accepted, or ``None`` for no limit.
        cond_horizon: Maximum conditioning length ``T_z`` accepted, or ``None`` for no limit; must
            be ``None`` or ``0`` without conditioning (the attribute is then ``0``).

    Raises:
        ValueError: If a size is not a positive integer, or a conditioning-free model is given a
            positive ``cond_horizon``.
    """

    #: The configuration dataclass of the model (``model.config``); ``None`` for a subclass
    #: without one (then :meth:`from_config` is not available).
    config_type: ClassVar[type[RegressorConfig] | None] = None
    in_dim: int
    out_dim: int
    cond_dim: int
    in_horizon: int | None
    cond_horizon: int | None

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        cond_dim: int | None,
        *,
        in_horizon: int | None = None,
        cond_horizon: int | None = None,
    ) -> None:
        unconditional = check_sizes(
            type(self).__name__, in_dim, out_dim, cond_dim, in_horizon, cond_horizon
        )
        super().__init__()
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.cond_dim = 0 if unconditional else int(cond_dim)  # type: ignore[arg-type]
        self.in_horizon = None if in_horizon is None else int(in_horizon)
        self.cond_horizon = 0 if unconditional else cond_horizon

    @classmethod
    def from_config(cls, config: RegressorConfig) -> Self:
        """A new model (freshly initialized) of ``config``, e.g. ``model.config`` of another one.

        The constructor is called with the configuration's fields (its arguments), so the model
        is exactly the one the seed's signature builds from them.

        Raises:
            TypeError: If ``config`` is not of this model's :attr:`config_type`.
        """
        expected = cls.config_type
        if expected is None or not isinstance(config, expected):
            wanted = "a configuration class" if expected is None else expected.__name__
            raise TypeError(
                f"{cls.__name__}.from_config expects a configuration of type {wanted}; got "
                f"{type(config).__name__}."
            )
        return cls(**config.kwargs())

    @property
    def is_conditional(self) -> bool:
        """Whether the model takes conditioning tokens ``Z`` (``cond_dim > 0``)."""
        return self.cond_dim > 0

    @abc.abstractmethod
    def forward(self, X: Tensor, opt_step: OptStep, Z: Tensor) -> Tensor:
        """Regress ``V_k = f(X_k, Z, k)``.

        Subclasses that support models without conditioning widen ``Z`` to ``Tensor | None``
        (both transformer regressors do).

        Args:
            X: Noisy input sequence ``X_k`` of shape ``(B, T_x, in_dim)``.
            opt_step: Step ``k``: a Python number, a 0-d tensor or a ``(B,)`` tensor.
            Z: Conditioning sequence of shape ``(B, T_z, cond_dim)``.

        Returns:
            Tensor of shape ``(B, T_x, out_dim)``.
        """

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
    else:
        # Dynamo skips this frame (as torch.compiler.disable(recursive=False) does) but still
        # compiles forward; unlike that decorator, torch.export may call through it.
        @torch._dynamo.decorators.skip
        def __call__(self, *args, **kwargs):
            # A Python number becomes a 0-d tensor here, outside the compiled frame: torch.compile
            # specializes on Python floats (a flow time that changes every call would recompile),
            # never on tensor values. Only this frame is skipped (forward is still compiled), so
            # the conversion is inline: a Python helper called from here would be traced.
            positional = len(args) > 1
            step = args[1] if positional else kwargs.get("opt_step")
            if isinstance(step, numbers.Real) and not isinstance(step, bool):
                step = torch.tensor(float(step), dtype=torch.float64)
                if positional:
                    args = (args[0], step, *args[2:])
                else:
                    kwargs["opt_step"] = step
            return super().__call__(*args, **kwargs)

    def export(self) -> torch.nn.Module:
        """A new plain-PyTorch module computing this model's function with its current weights.

        ``elayers.export`` calls it for every regressor in a module tree. The regressors of this
        package return a :class:`eregressors._plain.PlainCondTransformer` built from ``torch.nn``
        modules only (no escnn, ``ereps``, equivariant or ``GenCondRegressor`` object), for
        ``torch.export``, ONNX and machines without escnn. A subclass overrides this method.

        Raises:
            NotImplementedError: If the subclass does not implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement export(); override it to return a plain "
            "torch.nn.Module computing the same function."
        )

    def get_optim_groups(self, weight_decay: float = 1e-3) -> list[OptimGroup]:
        """Split the trainable parameters into a weight-decayed and a non-decayed group.

        Decayed: the weights of linear maps and of the attention input projections. Not decayed:
        biases, normalisation parameters, positional embeddings and everything else. Every
        trainable parameter lands in exactly one group.

        Args:
            weight_decay: Weight decay of the first group.

        Returns:
            ``[{"params": decayed, "weight_decay": weight_decay},
            {"params": others, "weight_decay": 0.0}]``.
        """
        return default_optim_groups(self, weight_decay)

    def configure_optimizers(
        self,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
    ) -> torch.optim.AdamW:
        """Build an ``AdamW`` optimiser over :meth:`get_optim_groups`.

        Args:
            learning_rate: Learning rate.
            weight_decay: Weight decay of the decayed group (the other group has none).
            betas: Adam's coefficients for the running averages of the gradient and its square.

        Returns:
            The optimiser.
        """
        owner = f"{type(self).__name__}.configure_optimizers"
        if not is_real_number(learning_rate) or not learning_rate > 0:
            raise (ValueError if is_real_number(learning_rate) else TypeError)(
                f"{owner} expects learning_rate to be a float > 0; got {learning_rate!r}."
            )
        if (
            not isinstance(betas, (tuple, list))
            or len(betas) != 2
            or not all(is_real_number(b) and 0.0 <= b < 1.0 for b in betas)
        ):
            raise (TypeError if not isinstance(betas, (tuple, list)) else ValueError)(
                f"{owner} expects betas to be a pair of floats in [0, 1); got {betas!r}."
            )
        return torch.optim.AdamW(self.get_optim_groups(weight_decay), lr=learning_rate, betas=betas)

    def _equivariance_inputs(
        self,
        X: Tensor | None,
        opt_step: OptStep | None,
        Z: Tensor | None,
        *,
        batch_size: int,
        horizon: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The inputs of an equivariance check, validated: the given ones, else random ones.

        Random: normal ``X`` of ``horizon`` tokens, normal ``Z`` of ``cond_horizon`` tokens (for
        a model with conditioning), in the parameters' dtype and device, and integer steps in
        ``[0, 1000)``, drawn in that order from ``generator``.
        """
        param = next(self.parameters())
        dtype, device = param.dtype, param.device
        if X is None:
            X = torch.randn(
                batch_size, horizon, self.in_dim, dtype=dtype, device=device, generator=generator
            )
        if Z is None and self.cond_dim > 0:
            shape = (X.shape[0], self.cond_horizon or 1, self.cond_dim)
            Z = torch.randn(shape, dtype=dtype, device=device, generator=generator)
        X, step, Z = self._validate_inputs(X, opt_step if opt_step is not None else 0, Z)
        if opt_step is None:
            step = torch.randint(0, 1000, step.shape, generator=generator).to(step)
        return X, step, Z

    def _equivariance_error(
        self,
        fn: Callable[..., Tensor],
        in_reps: Sequence[Representation],
        out_rep: Representation,
        inputs: Sequence[Tensor],
        elements: Sequence[GroupElement] | None,
        tol: float | None,
    ) -> float:
        """:func:`ereps.check_equivariance` of ``fn`` in eval mode without gradients.

        The model's training flag is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return check_equivariance(
                    fn, in_reps, out_rep, inputs=inputs, elements=elements, tol=tol
                )
        finally:
            self.train(was_training)

    @overload
    def _validate_inputs(
        self, X: Tensor, opt_step: OptStep, Z: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]: ...

    @overload
    def _validate_inputs(
        self, X: Tensor, opt_step: OptStep, Z: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]: ...

    def _validate_inputs(
        self, X: Tensor, opt_step: OptStep, Z: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Check the inputs of :meth:`forward` and normalise the step to a ``(B,)`` tensor.

        Args:
            X: Expected ``(B, T_x, in_dim)`` floating tensor with ``1 <= T_x <= in_horizon``.
            opt_step: A Python number, a 0-d tensor, a ``(1,)`` or a ``(B,)`` tensor (any real
                dtype).
            Z: Expected ``(B, T_z, cond_dim)`` floating tensor with ``1 <= T_z <= cond_horizon``,
                or ``None`` when the model has no conditioning (``cond_dim == 0``).

        Returns:
            ``(X, step, Z)`` with ``step`` a ``(B,)`` tensor on ``X``'s device, in float64 for
            float64 inputs and in float32 otherwise: steps are embedded in at least single
            precision whatever the model's dtype (in bfloat16 the steps 998 and 999 are equal).
            ``Z`` is ``None`` exactly for a model without conditioning.

        Raises:
            TypeError: If ``X`` or ``Z`` is not a floating-point tensor, their dtypes differ from
                each other or from the model's parameters, or ``opt_step`` is not a real number or
                a real (not bool, not complex) tensor.
            ValueError: If a rank, a feature size, a sequence length, a batch size or a device is
                wrong, or ``Z`` is given to a model without conditioning (or missing for one with
                it).
        """
        name = type(self).__name__
        checks: list[tuple[str, object, int, int | None, str]] = [
            ("X", X, self.in_dim, self.in_horizon, "T_x")
        ]
        if self.cond_dim == 0:
            if Z is not None:
                raise ValueError(
                    f"{name} was built without conditioning (cond_dim=0) and expects Z=None; got "
                    f"{describe(Z)}. Build it with a cond_dim (cond_rep) to condition on Z."
                )
        elif Z is None:
            raise ValueError(
                f"{name} expects Z of shape (B, T_z, {self.cond_dim}); got None. A model that "
                "takes no conditioning is built with cond_dim=None (cond_rep=None) and "
                "cond_horizon=0."
            )
        else:
            checks.append(("Z", Z, self.cond_dim, self.cond_horizon, "T_z"))
        for arg, value, dim, horizon, sym in checks:
            expected = f"(B, {sym}, {dim})"
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{name} expects {arg} to be a tensor of shape {expected}; "
                    f"got {describe(value)}."
                )
            if not value.is_floating_point():
                raise TypeError(
                    f"{name} expects {arg} to be a floating-point tensor; got dtype {value.dtype}."
                )
            if value.dim() != 3:
                raise ValueError(
                    f"{name} expects {arg} of rank 3 and shape {expected}; got rank {value.dim()} "
                    f"and shape {tuple(value.shape)}. Add a batch axis with {arg}.unsqueeze(0) for "
                    "a single sequence."
                )
            if value.shape[-1] != dim:
                raise ValueError(
                    f"{name} expects {arg} of shape {expected} (feature size {dim}); "
                    f"got {tuple(value.shape)}."
                )
            if value.shape[1] < 1:
                raise ValueError(
                    f"{name} expects {arg} with at least one token; got shape {tuple(value.shape)}."
                )
            if horizon is not None and value.shape[1] > horizon:
                raise ValueError(
                    f"{name} expects {arg} of shape {expected} with {sym} <= {horizon} (its "
                    f"horizon); got {tuple(value.shape)}, a sequence of length {value.shape[1]}."
                )
        _check_dtype_and_device(self, X, Z)
        if Z is not None and X.shape[0] != Z.shape[0]:
            raise ValueError(
                f"{name} expects X and Z with the same batch size; got X of shape "
                f"{tuple(X.shape)} and Z of shape {tuple(Z.shape)}."
            )
        batch = X.shape[0]
        step = _normalize_step(name, opt_step, batch, X)
        return X, step, Z


def _step_dtype(X: Tensor) -> torch.dtype:
    """At least float32 for the step, whatever the model's dtype."""
    return torch.float64 if X.dtype == torch.float64 else torch.float32


def _normalize_step(name: str, opt_step: OptStep, batch: int, X: Tensor) -> Tensor:
    """Turn a number, a 0-d or a ``(B,)`` tensor into a ``(B,)`` float tensor on ``X``'s device."""
    dtype = _step_dtype(X)
    if isinstance(opt_step, Tensor):
        if opt_step.dtype == torch.bool or opt_step.is_complex():
            raise TypeError(
                f"{name} expects opt_step as a real number or a tensor of real (integer or "
                f"floating) steps; got a tensor of dtype {opt_step.dtype}."
            )
        if opt_step.dim() == 0:
            return opt_step.to(device=X.device, dtype=dtype).expand(batch)
        if opt_step.dim() == 1 and opt_step.shape[0] == batch:
            return opt_step.to(device=X.device, dtype=dtype)
        if opt_step.dim() == 1 and opt_step.shape[0] == 1:
            return opt_step.to(device=X.device, dtype=dtype).expand(batch)
        raise ValueError(
            f"{name} expects opt_step as a number, a 0-d tensor or a tensor of shape ({batch},) "
            f"(the batch size of X); got a tensor of shape {tuple(opt_step.shape)}."
        )
    if not is_real_number(opt_step):
        raise TypeError(
            f"{name} expects opt_step as a number, a 0-d tensor or a tensor of shape ({batch},); "
            f"got {describe(opt_step)}."
        )
    return torch.full((batch,), float(opt_step), dtype=dtype, device=X.device)


def _first_parameter(module: torch.nn.Module) -> Tensor | None:
    """The first parameter of ``module`` or its submodules (depth first), or ``None``.

    Walks the module dicts directly: ``module.parameters()`` builds generators of generators,
    too slow for every forward.
    """
    for p in module._parameters.values():
        if p is not None:
            return p
    for child in module._modules.values():
        if child is not None:
            found = _first_parameter(child)
            if found is not None:
                return found
    return None


def _check_dtype_and_device(model: torch.nn.Module, X: Tensor, Z: Tensor | None) -> None:
    """Refuse inputs whose dtype or device differ from each other's or from the model's."""
    name = type(model).__name__
    if Z is not None and Z.dtype != X.dtype:
        raise TypeError(
            f"{name} expects X and Z of the same dtype; got X of dtype {X.dtype} and Z of dtype "
            f"{Z.dtype}. Cast Z with Z.to(X.dtype)."
        )
    if Z is not None and Z.device != X.device:
        raise ValueError(
            f"{name} expects X and Z on the same device; got X on {X.device} and Z on {Z.device}."
        )
    param = _first_parameter(model)
    if param is None:
        return
    if X.device != param.device:
        raise ValueError(
            f"{name} expects X on the device of its parameters ({param.device}); got X on "
            f"{X.device}. Move the inputs with X.to({str(param.device)!r}) or the model with "
            f"model.to({str(X.device)!r})."
        )
    # Under autocast the model computes in the autocast dtype whatever its parameters' dtype.
    if (
        param.is_floating_point()
        and X.dtype != param.dtype
        and not torch.is_autocast_enabled(X.device.type)
    ):
        raise TypeError(
            f"{name} expects X of the dtype of its parameters ({param.dtype}); got X of dtype "
            f"{X.dtype}. Cast the inputs with X.to({param.dtype}) or the model with "
            f"model.to({X.dtype})."
        )
