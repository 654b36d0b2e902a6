"""Unconstrained temporal U-Net regressor: the baseline of the equivariant U-Net."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from eregressors._base import GenCondRegressor, OptStep
from eregressors._config import ConditionalUnet1DConfig
from eregressors._optim import OptimGroup, is_decayed_default, split_optim_groups
from eregressors._plain_unet import (
    ConditionalResidualBlock1D,
    Conv1dBlock,
    PlainConditionalUnet1D,
    unet_forward,
)
from eregressors._sinusoidal import SinusoidalPosEmb, StepEmbedding

__all__ = ["ConditionalUnet1D", "check_z_horizon", "is_decayed_conv"]


def is_decayed_conv(module: nn.Module, param_name: str) -> bool:
    """Decay the weights of linear maps and convolutions (``torch.nn``), nothing else."""
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        return param_name == "weight"
    return is_decayed_default(module, param_name)


def check_z_horizon(owner: str, Z: Tensor, cond_horizon: int) -> None:
    """The U-Nets flatten exactly ``cond_horizon`` tokens of ``Z`` into the global conditioning."""
    if Z.shape[1] != cond_horizon:
        raise ValueError(
            f"{owner} expects Z with exactly cond_horizon = {cond_horizon} tokens (they are "
            f"flattened into the global conditioning); got shape {tuple(Z.shape)}."
        )


def _block(
    c_in: int, c_out: int, cond_dim: int, kernel: int, n_groups: int, predict_scale: bool
) -> ConditionalResidualBlock1D:
    def conv_block(a: int, b: int) -> Conv1dBlock:
        return Conv1dBlock(nn.Conv1d(a, b, kernel, padding=kernel // 2), nn.GroupNorm(n_groups, b))

    film = c_out * 2 if predict_scale else c_out
    residual: nn.Module = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
    return ConditionalResidualBlock1D(
        [conv_block(c_in, c_out), conv_block(c_out, c_out)],
        nn.Linear(cond_dim, film),
        residual,
        c_out,
        predict_scale,
    )


class ConditionalUnet1D(GenCondRegressor):
    r"""Temporal convolutional U-Net with FiLM conditioning, in the design of Diffusion Policy's.

    .. math::
        f_\theta: \mathbb{R}^{T_x \times d_x} \times \mathbb{R}^{T_z \times d_z} \times \mathbb{R}
        \to \mathbb{R}^{T_x \times d_v}, \qquad (X_k, Z, k) \mapsto V_k.

    Architecture (``D = diffusion_step_embed_dim``, widths ``down_dims = (C_0, ..., C_{L-1})``):

    1. *Global conditioning.* ``k`` goes through ``SinusoidalPosEmb(D)``, ``Linear(D, 4D)``, Mish,
       ``Linear(4D, D)``; the ``T_z = cond_horizon`` tokens of ``Z`` are flattened; the vector
       ``c = Mish([step features, Z])`` conditions every residual block.
    2. *Residual blocks* (``ConditionalResidualBlock1D``): ``Conv1d → GroupNorm(n_groups) → Mish``
       twice, with FiLM between them: ``Linear(c)`` gives a per-channel bias, or a scale and a
       bias (``cond_predict_scale``); a 1x1 convolution on the skip path when widths differ.
    3. *U-Net.* Level ``l`` has two residual blocks at width ``C_l``, then a stride-2
       ``Conv1d(C_l, C_l, 3, 2, 1)`` (not at the last level); two middle blocks at ``C_{L-1}``;
       going up, each level concatenates the skip of the same resolution, applies two blocks and
       a ``ConvTranspose1d(·, ·, 4, 2, 1)``; finally a conv block at ``C_0`` and a 1x1 convolution
       to ``d_v``.

    ``T_x`` may be any length: it is padded at the end to a multiple of ``2^(L-1)``, the padded
    positions are masked (convolutions see zeros there, group norms count only real positions)
    and the output is cropped, so outputs at the real positions do not depend on the padding.
    Parameters start with torch's default initialization (as in Diffusion Policy).

    *Configuration.* The arguments are checked once and kept as ``model.config``
    (:class:`ConditionalUnet1DConfig`, JSON through ``to_dict()``);
    ``from_config(model.config)`` or ``model.config.build()`` builds the same architecture again.

    Args:
        in_dim: Feature size ``d_x`` of the input tokens.
        cond_dim: Feature size ``d_z`` of the conditioning tokens.
        out_dim: Feature size ``d_v`` of the output tokens (``in_dim`` if ``None``).
        cond_horizon: Number of conditioning tokens ``T_z`` (``Z`` must have exactly that many).
        diffusion_step_embed_dim: Width ``D`` of the step embedding (even).
        down_dims: Channel widths of the levels.
        kernel_size: Odd kernel size of the residual blocks' convolutions.
        n_groups: Groups of every group norm; must divide every width.
        cond_predict_scale: Whether FiLM predicts a scale as well as a bias.
        in_horizon: Optional maximum ``T_x`` (keyword-only; no limit by default).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a size is not positive, the kernel size is even, the step width odd or
            ``n_groups`` does not divide every width.

    Examples:
        >>> import torch
        >>> model = ConditionalUnet1D(2, 3, cond_horizon=2, down_dims=(16, 32), n_groups=4)
        >>> model(torch.randn(5, 13, 2), 10, torch.randn(5, 2, 3)).shape
        torch.Size([5, 13, 2])
    """

    config_type = ConditionalUnet1DConfig
    config: ConditionalUnet1DConfig
    cond_horizon: int
    down_dims: tuple[int, ...]

    def __init__(
        self,
        in_dim: int,
        cond_dim: int,
        out_dim: int | None = None,
        cond_horizon: int = 1,
        diffusion_step_embed_dim: int = 256,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
        *,
        in_horizon: int | None = None,
    ) -> None:
        config = ConditionalUnet1DConfig(
            in_dim=in_dim,
            cond_dim=cond_dim,
            out_dim=out_dim,
            cond_horizon=cond_horizon,
            diffusion_step_embed_dim=diffusion_step_embed_dim,
            down_dims=down_dims,  # type: ignore[arg-type]  # any sequence, stored as a tuple
            kernel_size=kernel_size,
            n_groups=n_groups,
            cond_predict_scale=cond_predict_scale,
            in_horizon=in_horizon,
        )
        # Checked once, by the configuration.
        out_dim = config.resolved_out_dim
        dims = config.down_dims
        super().__init__(
            in_dim, out_dim, cond_dim, in_horizon=in_horizon, cond_horizon=cond_horizon
        )
        self.config = config
        self.cond_horizon = cond_horizon
        self.diffusion_step_embed_dim = diffusion_step_embed_dim
        self.down_dims = dims
        self.kernel_size = kernel_size
        self.n_groups = n_groups
        self.cond_predict_scale = cond_predict_scale
        D = diffusion_step_embed_dim
        global_dim = D + cond_horizon * cond_dim
        self.diffusion_step_encoder = StepEmbedding(
            SinusoidalPosEmb(D), nn.Linear(D, 4 * D), nn.Mish(), nn.Linear(4 * D, D)
        )

        def block(a: int, b: int) -> ConditionalResidualBlock1D:
            return _block(a, b, global_dim, kernel_size, n_groups, cond_predict_scale)

        all_dims = (in_dim, *dims)
        levels = list(itertools.pairwise(all_dims))
        self.down_modules = nn.ModuleList(
            nn.ModuleList(
                [
                    block(a, b),
                    block(b, b),
                    nn.Conv1d(b, b, 3, 2, 1) if i < len(levels) - 1 else nn.Identity(),
                ]
            )
            for i, (a, b) in enumerate(levels)
        )
        self.mid_modules = nn.ModuleList([block(dims[-1], dims[-1]), block(dims[-1], dims[-1])])
        self.up_modules = nn.ModuleList(
            nn.ModuleList([block(2 * b, a), block(a, a), nn.ConvTranspose1d(a, a, 4, 2, 1)])
            for a, b in reversed(levels[1:])
        )
        start = dims[0]
        self.final_conv = nn.Sequential(
            Conv1dBlock(
                nn.Conv1d(start, start, kernel_size, padding=kernel_size // 2),
                nn.GroupNorm(n_groups, start),
            ),
            nn.Conv1d(start, out_dim, 1),
        )

    def forward(self, X: Tensor, opt_step: OptStep, Z: Tensor) -> Tensor:
        """Regress ``V_k = f(X_k, Z, k)``.

        Args:
            X: Input tokens of shape ``(B, T_x, in_dim)``, any ``T_x >= 1``.
            opt_step: Step ``k``: a Python number, a 0-d tensor or a ``(B,)`` tensor.
            Z: Conditioning tokens of shape ``(B, cond_horizon, cond_dim)``.

        Returns:
            Output tokens of shape ``(B, T_x, out_dim)``.

        Raises:
            ValueError: If a shape is wrong.
        """
        X, step, Z = self._validate_inputs(X, opt_step, Z)
        check_z_horizon(type(self).__name__, Z, self.cond_horizon)
        return unet_forward(
            self.diffusion_step_encoder,
            True,
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

        Decayed: the weights of linear maps and convolutions. Not decayed: biases and group norm
        parameters.

        Args:
            weight_decay: Weight decay of the first group.

        Returns:
            ``[{"params": decayed, "weight_decay": weight_decay},
            {"params": others, "weight_decay": 0.0}]``.
        """
        return split_optim_groups(self, weight_decay, is_decayed_conv)

    def reset_parameters(self) -> None:
        """Re-draw every parameter with torch's default initialization of its layer."""
        for module in self.modules():
            if module is not self and isinstance(
                module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d, nn.GroupNorm)
            ):
                module.reset_parameters()

    def export(self) -> PlainConditionalUnet1D:
        """A new plain-torch module computing the same function with the current weights.

        Copies of the submodules (the same classes, but for the step embedding's torch-only
        twin), in a
        :class:`PlainConditionalUnet1D` without input validation, traceable by ``torch.export``
        and ONNX. This model is unchanged.
        """
        parts = copy.deepcopy(
            (self.down_modules, self.mid_modules, self.up_modules, self.final_conv)
        )
        return PlainConditionalUnet1D(self.diffusion_step_encoder.export(), *parts, cond_mish=True)

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_dim={self.in_dim}, cond_dim={self.cond_dim}, out_dim={self.out_dim}, "
            f"cond_horizon={self.cond_horizon}, down_dims={list(self.down_dims)}, "
            f"kernel_size={self.kernel_size}, n_groups={self.n_groups}, "
            f"cond_predict_scale={self.cond_predict_scale}"
        )
