"""Equivariant temporal U-Net regressor."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from elayers import eConv1d, eConvTranspose1d, eGroupNorm, eLinear, eModule, frozen_twin
from eregressors._base import GenCondRegressor, OptStep
from eregressors._config import check_positive_int, check_scheme, eConditionalUnet1DConfig
from eregressors._econd_transformer import _init_linear
from eregressors._optim import OptimGroup, split_optim_groups
from eregressors._plain_unet import (
    ConditionalResidualBlock1D,
    Conv1dBlock,
    PlainConditionalUnet1D,
    conv_block,
    residual_block,
    unet_forward,
)
from eregressors._sinusoidal import SinusoidalPosEmb, StepEmbedding
from eregressors._unet import check_z_horizon, is_decayed_conv
from ereps import (
    GroupElement,
    InitScheme,
    Representation,
    direct_sum,
    group_order,
    regular_multiplicity,
)

__all__ = ["eConditionalUnet1D"]


def _is_decayed(module: nn.Module, param_name: str) -> bool:
    """Decay the free weights of equivariant maps and the weights of plain ones."""
    if isinstance(module, (eLinear, eConv1d, eConvTranspose1d)):
        return param_name == "weight_params"
    return is_decayed_conv(module, param_name)


class _eConv1dBlock(eModule):
    """``eConv1d → eGroupNorm → Mish`` on regular copies (Mish is pointwise: equivariant there)."""

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        kernel_size: int,
        n_groups: int,
        init_scheme: InitScheme,
    ) -> None:
        super().__init__(in_rep, out_rep)
        self.conv = eConv1d(
            in_rep, out_rep, kernel_size, padding=kernel_size // 2, init_scheme=init_scheme
        )
        self.norm = eGroupNorm(out_rep, n_groups)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, in_rep.size, T) -> (B, out_rep.size, T)``; ``mask``: see ``_plain_unet``."""
        n = self.norm
        weight, bias = n.dense_affine()
        return conv_block(self.conv, n.num_groups, weight, bias, n.eps, x, mask)

    def export(self) -> Conv1dBlock:
        """The plain block with exported convolution and norm."""
        return Conv1dBlock(self.conv.export(), self.norm.export())

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class _eConditionalResidualBlock1D(eModule):
    r"""Two equivariant conv blocks with equivariant FiLM between them.

    The FiLM parameters (a bias, or a scale and a bias, on ``c_film`` regular copies) are
    ``expand(A s + a) + B z``: ``s`` the (activated) invariant step features, ``A s + a`` one
    number per copy spread over the copy (constant functions are the invariant vectors of a regular
    copy), and ``B ∈ Hom_G(ρ_Z^{T_z}, regular^{c_film})`` applied to the flattened conditioning
    ``z``. A scale multiplies the features pointwise: the product of two functions on the group
    commutes with the group action (``ρ_reg(g)`` permutes both alike).
    """

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        step_dim: int,
        cond_rep: Representation,
        kernel_size: int,
        n_groups: int,
        cond_predict_scale: bool,
        init_scheme: InitScheme,
        regular: Callable[[int], Representation],
    ) -> None:
        super().__init__(in_rep, out_rep)
        copies = regular_multiplicity(out_rep)
        if copies is None:  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: built by eConditionalUnet1D from regular copies")
        self.order = out_rep.size // copies
        self.out_channels = out_rep.size
        self.cond_predict_scale = cond_predict_scale
        self.step_dim = step_dim
        film_copies = 2 * copies if cond_predict_scale else copies
        self.blocks = nn.ModuleList(
            [
                _eConv1dBlock(in_rep, out_rep, kernel_size, n_groups, init_scheme),
                _eConv1dBlock(out_rep, out_rep, kernel_size, n_groups, init_scheme),
            ]
        )
        self.cond_step = nn.Linear(step_dim, film_copies)
        self.cond_obs = eLinear(cond_rep, regular(film_copies), bias=False, init_scheme=init_scheme)
        same = in_rep.size == out_rep.size and regular_multiplicity(in_rep) == copies
        self.residual_conv: nn.Module = (
            nn.Identity() if same else eConv1d(in_rep, out_rep, 1, init_scheme=init_scheme)
        )

    def film_embedding(self, cond: Tensor) -> Tensor:
        """FiLM parameters ``(B, c_film·|G|)`` from the global conditioning ``(B, D + T_z d_z)``."""
        step: Tensor = self.cond_step(cond[:, : self.step_dim])
        obs: Tensor = self.cond_obs(cond[:, self.step_dim :])
        return step.repeat_interleave(self.order, dim=-1) + obs

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, in_rep.size, T) -> (B, out_rep.size, T)``."""
        return residual_block(
            self.blocks,
            self.film_embedding(cond),
            self.residual_conv,
            self.out_channels,
            self.cond_predict_scale,
            x,
            mask,
        )

    def export(self) -> ConditionalResidualBlock1D:
        """The plain block: one ``nn.Linear`` holds both parts of the FiLM map."""
        with torch.no_grad():
            step_w = self.cond_step.weight.detach().repeat_interleave(self.order, dim=0)
            step_b = self.cond_step.bias.detach().repeat_interleave(self.order, dim=0)
            obs_w = self.cond_obs.weight.detach()
            weight = torch.cat((step_w, obs_w.to(step_w.dtype)), dim=1)
            linear = nn.Linear(
                weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype
            )
            linear.weight.copy_(weight)
            linear.bias.copy_(step_b)
        residual = self.residual_conv
        exported_res = residual.export() if isinstance(residual, eConv1d) else nn.Identity()
        blocks = [b.export() for b in self.blocks if isinstance(b, _eConv1dBlock)]
        return ConditionalResidualBlock1D(
            blocks, linear, exported_res, self.out_channels, self.cond_predict_scale
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


def _export_module(module: nn.Module) -> nn.Module:
    export = getattr(module, "export", None)
    if isinstance(module, eModule) and callable(export):
        out: nn.Module = export()
        return out
    return copy.deepcopy(module)


class eConditionalUnet1D(GenCondRegressor):
    r"""Equivariant analogue of :class:`ConditionalUnet1D` (Diffusion Policy's temporal U-Net).

    .. math::
        f_\theta(\rho_{\mathcal{X}}(g) X_k,\ \rho_{\mathcal{Z}}(g) Z,\ k)
        = \rho_{\mathcal{Y}}(g)\, f_\theta(X_k, Z, k) \quad \forall g \in G,

    with every representation acting token-wise on the feature axis. Same architecture as the
    baseline, with every width ``C_l`` made of ``C_l / |G|`` copies of the regular representation
    (features are functions on the group, where Mish, the pointwise FiLM scale and group norms over
    whole copies are equivariant):

    * convolutions are :class:`elayers.eConv1d` / :class:`elayers.eConvTranspose1d` (every kernel
      offset in ``Hom_G``), the first from ``in_rep`` and the last 1x1 one to ``out_rep``;
    * group norms are :class:`elayers.eGroupNorm` (``n_groups`` groups of whole copies, one scale
      and bias per copy);
    * the step embedding (sinusoidal features, ``Linear → Mish → Linear``) is invariant; FiLM
      maps it into the channel copies as constants on each copy, plus an equivariant map
      ``Hom_G(ρ_Z^{⊕T_z}, regular^{c})`` of the flattened ``Z``. Mish is applied to the step
      features only (Diffusion Policy also applies it to ``Z``, which is not equivariant unless
      ``ρ_Z`` is a permutation representation).

    Any ``T_x`` is accepted (padding, masks and cropping as in the baseline, so outputs at the
    real positions do not depend on the padding). :meth:`export` returns a plain-torch
    :class:`PlainConditionalUnet1D` with the dense weights (the same module class the baseline
    exports to, so it runs exactly as fast).

    *Configuration.* The arguments are checked once and kept as ``model.config``
    (:class:`eConditionalUnet1DConfig`, JSON through ``to_dict()``);
    ``from_config(model.config)`` or ``model.config.build()`` builds the same architecture again.

    Args:
        in_rep: Representation of the input tokens ``X``.
        cond_rep: Representation of the conditioning tokens ``Z``, of the same group.
        out_rep: Representation of the output tokens (``in_rep`` if ``None``).
        cond_horizon: Number of conditioning tokens ``T_z`` (``Z`` must have exactly that many).
        diffusion_step_embed_dim: Width ``D`` of the (invariant) step embedding (even).
        down_dims: Channel widths of the levels, each a multiple of ``|G|``.
        kernel_size: Odd kernel size of the residual blocks' convolutions.
        n_groups: Groups of every group norm; must divide the number of regular copies
            ``C_l / |G|`` of every width.
        cond_predict_scale: Whether FiLM predicts a scale as well as a bias.
        in_horizon: Optional maximum ``T_x`` (keyword-only).
        init_scheme: Initialization of every linear map and kernel (keyword-only).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the groups differ, a width is not a multiple of ``|G|``, ``n_groups`` does
            not split whole copies, the kernel size is even or a size is not positive.

    Examples:
        >>> import escnn.group as eg
        >>> G = eg.dihedral_group(4)
        >>> plane = G.irrep(1, 1)
        >>> model = eConditionalUnet1D(plane, plane, cond_horizon=2, down_dims=(16, 32), n_groups=2)
        >>> model(torch.randn(5, 13, 2), 10, torch.randn(5, 2, 2)).shape
        torch.Size([5, 13, 2])
    """

    config_type = eConditionalUnet1DConfig
    config: eConditionalUnet1DConfig
    in_rep: Representation
    cond_rep: Representation
    out_rep: Representation
    cond_horizon: int
    down_dims: tuple[int, ...]

    def __init__(
        self,
        in_rep: Representation,
        cond_rep: Representation,
        out_rep: Representation | None = None,
        cond_horizon: int = 1,
        diffusion_step_embed_dim: int = 256,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
        *,
        in_horizon: int | None = None,
        init_scheme: InitScheme = "xavier_normal",
    ) -> None:
        config = eConditionalUnet1DConfig(
            in_rep=in_rep,
            cond_rep=cond_rep,
            out_rep=out_rep,
            cond_horizon=cond_horizon,
            diffusion_step_embed_dim=diffusion_step_embed_dim,
            down_dims=down_dims,  # type: ignore[arg-type]  # any sequence, stored as a tuple
            kernel_size=kernel_size,
            n_groups=n_groups,
            cond_predict_scale=cond_predict_scale,
            in_horizon=in_horizon,
            init_scheme=init_scheme,
        )
        # Checked once, by the configuration.
        out_rep = config.resolved_out_rep
        dims = config.down_dims
        group = in_rep.group
        # Read once: escnn's order() of direct-product groups rebuilds every element.
        order = group_order(group)
        copies = [w // order for w in dims]
        super().__init__(
            in_rep.size,
            out_rep.size,
            cond_rep.size,
            in_horizon=in_horizon,
            cond_horizon=cond_horizon,
        )
        self.config = config
        self.in_rep, self.cond_rep, self.out_rep = in_rep, cond_rep, out_rep
        self.group_order = order
        self.cond_horizon = cond_horizon
        self.diffusion_step_embed_dim = diffusion_step_embed_dim
        self.down_dims = dims
        self.kernel_size = kernel_size
        self.n_groups = n_groups
        self.cond_predict_scale = cond_predict_scale
        self.init_scheme = init_scheme
        D = diffusion_step_embed_dim
        self.cond_flat_rep = direct_sum([cond_rep] * cond_horizon)

        regular: dict[int, Representation] = {}

        def reg(c: int) -> Representation:
            if c not in regular:
                regular[c] = direct_sum([group.regular_representation] * c)
            return regular[c]

        self.diffusion_step_encoder = StepEmbedding(
            SinusoidalPosEmb(D), nn.Linear(D, 4 * D), nn.Mish(), nn.Linear(4 * D, D)
        )

        def block(a: Representation, b: Representation) -> _eConditionalResidualBlock1D:
            return _eConditionalResidualBlock1D(
                a,
                b,
                D,
                self.cond_flat_rep,
                kernel_size,
                n_groups,
                cond_predict_scale,
                init_scheme,
                reg,
            )

        level_reps = [in_rep] + [reg(c) for c in copies]
        levels = list(itertools.pairwise(level_reps))
        self.down_modules = nn.ModuleList(
            nn.ModuleList(
                [
                    block(a, b),
                    block(b, b),
                    eConv1d(b, b, 3, 2, 1, init_scheme=init_scheme)
                    if i < len(levels) - 1
                    else nn.Identity(),
                ]
            )
            for i, (a, b) in enumerate(levels)
        )
        mid = level_reps[-1]
        self.mid_modules = nn.ModuleList([block(mid, mid), block(mid, mid)])
        up: list[nn.ModuleList] = []
        for a, b in reversed(levels[1:]):
            c_b = regular_multiplicity(b)
            if c_b is None:  # an internal invariant (python -O keeps it)
                raise RuntimeError("internal error: expected c_b is not None")
            up.append(
                nn.ModuleList(
                    [
                        block(reg(2 * c_b), a),
                        block(a, a),
                        eConvTranspose1d(a, a, 4, 2, 1, init_scheme=init_scheme),
                    ]
                )
            )
        self.up_modules = nn.ModuleList(up)
        start = level_reps[1]
        self.final_conv = nn.Sequential(
            _eConv1dBlock(start, start, kernel_size, n_groups, init_scheme),
            eConv1d(start, out_rep, 1, init_scheme=init_scheme),
        )
        self.reset_parameters(init_scheme)

    def forward(self, X: Tensor, opt_step: OptStep, Z: Tensor) -> Tensor:
        """Regress ``V_k = f(X_k, Z, k)``.

        Args:
            X: Input tokens of shape ``(B, T_x, in_rep.size)``, any ``T_x >= 1``.
            opt_step: Step ``k``: a Python number, a 0-d tensor or a ``(B,)`` tensor.
            Z: Conditioning tokens of shape ``(B, cond_horizon, cond_rep.size)``.

        Returns:
            Output tokens of shape ``(B, T_x, out_rep.size)``, transforming by ``out_rep``.

        Raises:
            ValueError: If a shape is wrong.
        """
        X, step, Z = self._validate_inputs(X, opt_step, Z)
        check_z_horizon(type(self).__name__, Z, self.cond_horizon)
        twin = frozen_twin(self)
        if twin is not None:  # inside elayers.frozen: the plain model exported on entry
            result: Tensor = twin(X, step, Z)
            return result
        return unet_forward(
            self.diffusion_step_encoder,
            False,
            self.down_modules,
            self.mid_modules,
            self.up_modules,
            self.final_conv,
            X,
            step,
            Z,
        )

    def get_optim_groups(self, weight_decay: float = 1e-3) -> list[OptimGroup]:
        """Split the trainable parameters into a weight-decayed and a non-decayed group.

        Decayed: the free weights of equivariant kernels and linear maps, and the weights of the
        plain linear maps (step MLP, FiLM step part). Not decayed: biases and group norm
        parameters.

        Args:
            weight_decay: Weight decay of the first group.

        Returns:
            ``[{"params": decayed, "weight_decay": weight_decay},
            {"params": others, "weight_decay": 0.0}]``.
        """
        return split_optim_groups(self, weight_decay, _is_decayed)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Re-initialize all parameters.

        Equivariant kernels and linear maps, the step MLP and the FiLM step maps are redrawn with
        ``scheme`` (default: the constructor's ``init_scheme``) and their biases zeroed; group
        norms are reset to the identity.

        Raises:
            ValueError: If ``scheme`` is unknown.
        """
        owner = f"{type(self).__name__}.reset_parameters"
        scheme = check_scheme(owner, "scheme", self.init_scheme if scheme is None else scheme)
        for module in self.modules():
            if isinstance(module, (eConv1d, eConvTranspose1d, eLinear, eGroupNorm)):
                module.reset_parameters(scheme)
            elif isinstance(module, nn.Linear):
                _init_linear(module, scheme)

    def export(self) -> PlainConditionalUnet1D:
        """A new plain-torch module computing the same function with the current weights.

        Every equivariant convolution becomes a ``torch.nn.Conv1d``/``ConvTranspose1d`` with its
        dense kernel, every group norm a ``torch.nn.GroupNorm`` with per-channel parameters, every
        FiLM map one ``torch.nn.Linear``; the result is a :class:`PlainConditionalUnet1D` (the
        baseline's exported class), traceable by ``torch.export`` and ONNX. This model is
        unchanged.
        """

        def level(modules: nn.Module) -> nn.ModuleList:
            return nn.ModuleList(_export_module(m) for m in modules.children())

        return PlainConditionalUnet1D(
            self.diffusion_step_encoder.export(),
            nn.ModuleList(level(m) for m in self.down_modules),
            level(self.mid_modules),
            nn.ModuleList(level(m) for m in self.up_modules),
            nn.Sequential(*(_export_module(m) for m in self.final_conv)),
            cond_mish=False,
        )

    def check_equivariance(
        self,
        X: Tensor | None = None,
        opt_step: OptStep | None = None,
        Z: Tensor | None = None,
        *,
        batch_size: int = 2,
        horizon: int | None = None,
        elements: Sequence[GroupElement] | None = None,
        tol: float | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        r"""Measure the model's equivariance error with :func:`ereps.check_equivariance`.

        .. math::
            e = \max_g \frac{\|f(\rho_X(g) X, \rho_Z(g) Z, k) - \rho_Y(g) f(X, Z, k)\|}
                            {\|\rho_Y(g) f(X, Z, k)\|}.

        Evaluated in eval mode without gradients; the training flag is restored afterwards.

        Args:
            X: Inputs ``(B, T_x, in_rep.size)``; random normal if ``None``.
            opt_step: Step(s); random integers in ``[0, 1000)`` if ``None``.
            Z: Conditioning ``(B, cond_horizon, cond_rep.size)``; random normal if ``None``.
            batch_size: ``B`` of the random inputs.
            horizon: ``T_x`` of random inputs (default: ``in_horizon``, else 16).
            elements: Group elements to test; all of them if ``None``.
            tol: If given, raise :class:`ereps.EquivarianceError` when the error exceeds it.
            generator: Random generator for the random inputs.

        Returns:
            The largest relative error over the tested elements.

        Raises:
            ereps.EquivarianceError: If ``tol`` is given and exceeded.
            ValueError: If the inputs have wrong shapes.
        """
        T = horizon if horizon is not None else (self.in_horizon or 16)
        if X is None:
            check_positive_int(type(self).__name__, "horizon", T)
        X, step, Z = self._equivariance_inputs(
            X, opt_step, Z, batch_size=batch_size, horizon=T, generator=generator
        )
        if Z is None:  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: a U-Net always has conditioning")
        check_z_horizon(type(self).__name__, Z, self.cond_horizon)
        return self._equivariance_error(
            lambda x, z: self(x, step, z),
            [self.in_rep, self.cond_rep],
            self.out_rep,
            [X, Z],
            elements,
            tol,
        )

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_rep={self.in_rep.name}, cond_rep={self.cond_rep.name}, "
            f"out_rep={self.out_rep.name}, group={self.in_rep.group.name}, "
            f"cond_horizon={self.cond_horizon}, down_dims={list(self.down_dims)}, "
            f"kernel_size={self.kernel_size}, n_groups={self.n_groups}, "
            f"cond_predict_scale={self.cond_predict_scale}"
        )
