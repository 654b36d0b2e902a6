"""Equivariant temporal convolutions and group normalization over whole regular copies.

Layout: these modules follow ``torch.nn.Conv1d``, ``ConvTranspose1d`` and ``GroupNorm``, channels
first: inputs are ``(B, rep.size, T)`` (or ``(rep.size, T)`` unbatched), and the group acts on the
channel axis (axis ``-2``) identically at every time step. They are drop-in replacements for the
torch layers (same arguments after the representations, same output lengths) and ``export()`` to
exactly those layers. Sequence models that keep tokens on the last axis (``(B, T, rep.size)``, the
rest of the library) transpose once around a stack of them, as Diffusion Policy's U-Net does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elayers._linear import InvariantBias, invariant_bias_or_none
from elayers._module import eModule, frozen_twin
from ereps import (
    GroupHomomorphismBasis,
    InitScheme,
    Representation,
    cayley_index,
    check_init_scheme,
    check_orthogonal,
    check_representation,
    check_same_group,
    group_order,
    init_std,
    regular_multiplicity,
    sample_init,
)

__all__ = ["PaddingMode", "eConv1d", "eConvTranspose1d", "eGroupNorm"]

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _positive_int(owner: str, name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} expects {name} to be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{owner} expects {name} to be an int >= {minimum}; got {value}.")
    return value


def _conv_index(cayley: Tensor, c_out: int, c_in: int, kernel: int) -> Tensor:
    """Flat index ``I`` with ``W = w.reshape(-1)[I].view(c_out·|G|, c_in·|G|, K)``.

    For parameters ``w`` of shape ``(c_out, c_in, |G|, K)``:
    ``W[(i, a), (j, b), k] = w[i, j, T[a, b], k]`` with ``T[a, b] = index(g_a⁻¹ g_b)``, so that
    every offset ``W[:, :, k]`` is a group convolution (an element of ``Hom_G``).
    """
    n = cayley.shape[0]
    i = torch.arange(c_out).view(c_out, 1, 1, 1, 1)
    j = torch.arange(c_in).view(1, 1, c_in, 1, 1)
    k = torch.arange(kernel).view(1, 1, 1, 1, kernel)
    index = ((i * c_in + j) * n + cayley.view(1, n, 1, n, 1)) * kernel + k
    return index.reshape(-1)


class _eTemporalConv(eModule):
    """Shared part of :class:`eConv1d` and :class:`eConvTranspose1d`: the kernel in ``Hom_G``."""

    transposed: bool = False

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        kernel_size: int,
        stride: int,
        dilation: int,
        bias: bool,
        init_scheme: InitScheme,
    ) -> None:
        name = type(self).__name__
        check_representation(in_rep, "in_rep")
        check_representation(out_rep, "out_rep")
        check_same_group([in_rep, out_rep], ["in_rep", "out_rep"])
        check_orthogonal(in_rep, "in_rep")
        check_orthogonal(out_rep, "out_rep")
        self.kernel_size = _positive_int(name, "kernel_size", kernel_size)
        self.stride = _positive_int(name, "stride", stride)
        self.dilation = _positive_int(name, "dilation", dilation)
        if not isinstance(bias, bool):
            raise TypeError(f"{name} expects bias to be a bool; got {bias!r}.")
        self.init_scheme = check_init_scheme(init_scheme)
        super().__init__(in_rep, out_rep)
        c_in, c_out = regular_multiplicity(in_rep), regular_multiplicity(out_rep)
        self.basis: GroupHomomorphismBasis | None = None
        K = self.kernel_size
        if c_in is not None and c_out is not None:
            self.order = group_order(in_rep.group)
            index = _conv_index(cayley_index(in_rep.group), c_out, c_in, K)
            if self.transposed:
                # torch's transposed kernels are (in, out, K): the same maps, transposed.
                shape = (out_rep.size, in_rep.size, K)
                index = index.view(shape).transpose(0, 1).reshape(-1)
            # int32 halves the index's memory (it has as many entries as the dense kernel) and
            # the traffic of the gather; index_select and its backward accept it.
            if index.numel() < 2**31:
                index = index.to(torch.int32)
            self.register_buffer("flat_index", index, persistent=False)
            self.flat_index: Tensor
            self.weight_params = nn.Parameter(torch.empty(c_out, c_in, self.order, K))
        else:
            self.basis = GroupHomomorphismBasis(in_rep, out_rep)
            if self.basis.dim == 0:
                raise ValueError(
                    f"{name}: Hom_G({in_rep.name}, {out_rep.name}) is zero-dimensional (the two "
                    f"representations share no irrep: in {in_rep.irreps}, out {out_rep.irreps}), "
                    "so the only equivariant kernel is 0."
                )
            # One set of coefficients per time offset.
            self.weight_params = nn.Parameter(torch.empty(K, self.basis.dim))
        self.invariant_bias: InvariantBias | None = invariant_bias_or_none(out_rep, bias)

    @property
    def num_weights(self) -> int:
        """Number of free parameters of the kernel (``K · dim Hom_G(in_rep, out_rep)``)."""
        return self.weight_params.numel()

    def dense_weight(self) -> Tensor:
        """The dense kernel in torch's layout, synthesized from the free parameters.

        ``(out_rep.size, in_rep.size, K)`` for :class:`eConv1d`, ``(in_rep.size, out_rep.size,
        K)`` for :class:`eConvTranspose1d` (as ``torch.nn.Conv1d.weight`` and
        ``torch.nn.ConvTranspose1d.weight``). Every offset satisfies
        ``ρ_out(g) W_k = W_k ρ_in(g)``. A new tensor on every call, differentiable with respect
        to the parameters: between copies of the regular representation one gather from the
        Cayley table, otherwise the isotypic basis of :class:`ereps.GroupHomomorphismBasis`.
        """
        K = self.kernel_size
        if self.basis is None:
            w = self.weight_params.reshape(-1).index_select(0, self.flat_index)
            if self.transposed:
                return w.view(self.in_rep.size, self.out_rep.size, K)
            return w.view(self.out_rep.size, self.in_rep.size, K)
        maps = self.basis(self.weight_params)  # (K, out, in)
        dims = (2, 1, 0) if self.transposed else (1, 2, 0)
        return maps.permute(*dims).contiguous()

    @property
    def weight(self) -> Tensor:
        """The dense kernel (see :meth:`dense_weight`)."""
        return self.dense_weight()

    def dense_bias(self) -> Tensor | None:
        """The invariant bias, shape ``(out_rep.size,)``, or ``None``."""
        return None if self.invariant_bias is None else self.invariant_bias.dense()

    @property
    def bias(self) -> Tensor | None:
        """The invariant bias (see :meth:`dense_bias`)."""
        return self.dense_bias()

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Redraw the kernel with ``scheme`` (default: the constructor's) and zero the bias.

        The dense kernel gets the variance the unconstrained scheme gives a torch kernel, with
        ``fan_in = in_rep.size · K`` and ``fan_out = out_rep.size · K``.
        """
        scheme = check_init_scheme(scheme or self.init_scheme)
        K = self.kernel_size
        fan_in, fan_out = self.in_rep.size * K, self.out_rep.size * K
        std = init_std(scheme, fan_in, fan_out)
        p = self.weight_params
        if self.basis is not None:
            # Orthonormal basis: E‖W_k‖² = dim σ_c², so σ_c² = σ² out·in / dim per offset.
            std *= (self.in_rep.size * self.out_rep.size / self.basis.dim) ** 0.5
        with torch.no_grad():
            p.copy_(sample_init(scheme, tuple(p.shape), std, dtype=p.dtype, device=p.device))
        if self.invariant_bias is not None:
            self.invariant_bias.reset_parameters()

    def _check_conv_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a torch.Tensor; got {type(x).__name__}.")
        n = self.in_rep.size
        if x.ndim not in (2, 3) or x.shape[-2] != n:
            raise ValueError(
                f"{name} expects input of shape (B, {n}, T) or ({n}, T) (channels first, like "
                f"torch.nn.{name[1:]}) for in_rep {self.in_rep.name!r}; got {tuple(x.shape)}."
            )

    def _export_tensors(self) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            weight = self.dense_weight().detach().clone()
            bias = self.dense_bias()
            return weight, None if bias is None else bias.detach().clone()

    def _kind(self) -> str:
        return "group conv" if self.basis is None else "isotypic basis"


class eConv1d(_eTemporalConv):
    r"""Equivariant 1-D convolution over time: every kernel offset is a map in ``Hom_G``.

    .. math::
        y_t = b + \sum_{k=0}^{K-1} W_k\, x_{s t + d k - p}, \qquad
        \rho_{out}(g) W_k = W_k \rho_{in}(g), \quad \rho_{out}(g) b = b,

    so ``f(ρ_in(g) x) = ρ_out(g) f(x)`` with the group acting on the channels of every time step.
    Zero, reflect, replicate and circular padding commute with that action (they only copy or
    zero time steps). Between copies of the regular representation each ``W_k`` is a group
    convolution read from the Cayley table (the whole kernel is one gather,
    ``c_out · c_in · |G| · K`` parameters); otherwise ``W_k`` is synthesized in the isotypic basis
    of :class:`ereps.GroupHomomorphismBasis` (``K · dim Hom_G`` parameters).

    Channels first, like :class:`torch.nn.Conv1d`: ``forward(x) == F.conv1d(x, weight, bias,
    stride, padding, dilation)`` (after the explicit padding of a non-zero ``padding_mode``).

    Args:
        in_rep: Representation of the input channels.
        out_rep: Representation of the output channels, of the same group.
        kernel_size: Number of time offsets ``K``.
        stride: Stride over time.
        padding: Zero padding on both sides (an int), or ``"same"`` (stride 1 only) or
            ``"valid"``, as in torch.
        bias: Whether to add a learnable invariant bias (ignored if ``out_rep`` has no trivial
            irrep).
        dilation: Spacing between kernel offsets (keyword-only).
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``
            (keyword-only).
        init_scheme: Initialization of the kernel (keyword-only; see :class:`elayers.eLinear`).

    Raises:
        TypeError: If a representation or a size has the wrong type.
        ValueError: If the groups differ, ``Hom_G(in_rep, out_rep) = 0``, a size is not positive,
            ``padding`` is invalid or ``"same"`` is combined with a stride.

    Examples:
        >>> import torch, escnn.group as eg
        >>> G = eg.cyclic_group(4)
        >>> conv = eConv1d(G.regular_representation, G.regular_representation, 3, padding=1)
        >>> conv(torch.randn(2, 4, 10)).shape
        torch.Size([2, 4, 10])
    """

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        kernel_size: int,
        stride: int = 1,
        padding: int | Literal["same", "valid"] = 0,
        bias: bool = True,
        *,
        dilation: int = 1,
        padding_mode: PaddingMode = "zeros",
        init_scheme: InitScheme = "xavier_normal",
    ) -> None:
        name = type(self).__name__
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"{name} expects padding to be an int >= 0, 'same' or 'valid'; got {padding!r}."
                )
            if padding == "same" and stride != 1:
                raise ValueError(
                    f"{name}: padding='same' needs stride=1 (as in torch); got stride={stride}."
                )
        else:
            _positive_int(name, "padding", padding, minimum=0)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{name} expects padding_mode to be one of {list(_PADDING_MODES)}; got "
                f"{padding_mode!r}."
            )
        super().__init__(in_rep, out_rep, kernel_size, stride, dilation, bias, init_scheme)
        self.padding: int | str = padding
        self.padding_mode: PaddingMode = padding_mode
        # Explicit (left, right) padding for the non-zero modes, as torch computes it.
        total = (
            0
            if padding == "valid"
            else self.dilation * (self.kernel_size - 1)
            if padding == "same"
            else 2 * int(padding)
        )
        left = total // 2
        self._pad = (left, total - left)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Convolve over time.

        Args:
            x: Tensor of shape ``(B, in_rep.size, T)`` or ``(in_rep.size, T)``.

        Returns:
            Tensor of shape ``(B, out_rep.size, T_out)`` (or ``(out_rep.size, T_out)``), with
            ``T_out`` as in :class:`torch.nn.Conv1d`.
        """
        self._check_conv_input(x)
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        weight, bias = self.dense_weight(), self.dense_bias()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad, mode=self.padding_mode)
            return F.conv1d(x, weight, bias, self.stride, 0, self.dilation)
        return F.conv1d(x, weight, bias, self.stride, self.padding, self.dilation)

    def export(self) -> nn.Conv1d:
        """A new :class:`torch.nn.Conv1d` computing the same map with the current weights.

        The weights are detached copies (same dtype and device); this module is unchanged.
        """
        weight, bias = self._export_tensors()
        conv = nn.Conv1d(
            self.in_rep.size,
            self.out_rep.size,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=bias is not None,
            padding_mode=self.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None and conv.bias is not None:
                conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_rep.name} -> {self.out_rep.name}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
            f"padding_mode={self.padding_mode!r} | {self.num_weights} weights, {self._kind()}, "
            f"bias={self.invariant_bias is not None}"
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class eConvTranspose1d(_eTemporalConv):
    r"""Equivariant transposed 1-D convolution over time (the adjoint of :class:`eConv1d`).

    .. math::
        y_{s u + d k - p} \mathrel{+}= M_k\, x_u, \qquad y \mathrel{+}= b, \qquad
        \rho_{out}(g) M_k = M_k \rho_{in}(g), \quad \rho_{out}(g) b = b,

    so ``f(ρ_in(g) x) = ρ_out(g) f(x)``. Used to upsample in time (``stride=2``). Channels first,
    like :class:`torch.nn.ConvTranspose1d`: ``forward(x) == F.conv_transpose1d(x, weight, bias,
    stride, padding, output_padding, 1, dilation)`` with ``weight[:, :, k] = M_kᵀ`` of shape
    ``(in_rep.size, out_rep.size, K)``.

    Args:
        in_rep: Representation of the input channels.
        out_rep: Representation of the output channels, of the same group.
        kernel_size: Number of time offsets ``K``.
        stride: Stride over time (the upsampling factor).
        padding: Implicit zero padding removed from both ends of the output, as in torch.
        output_padding: Extra length added to one side of the output, as in torch.
        bias: Whether to add a learnable invariant bias (ignored if ``out_rep`` has no trivial
            irrep).
        dilation: Spacing between kernel offsets (keyword-only).
        init_scheme: Initialization of the kernel (keyword-only).

    Raises:
        TypeError: If a representation or a size has the wrong type.
        ValueError: If the groups differ, ``Hom_G(in_rep, out_rep) = 0``, a size is not positive
            or ``output_padding`` is not smaller than ``stride`` or ``dilation``.

    Examples:
        >>> import torch, escnn.group as eg
        >>> G = eg.dihedral_group(3)
        >>> up = eConvTranspose1d(G.regular_representation, G.regular_representation, 4, 2, 1)
        >>> up(torch.randn(2, 6, 5)).shape
        torch.Size([2, 6, 10])
    """

    transposed = True

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        output_padding: int = 0,
        bias: bool = True,
        *,
        dilation: int = 1,
        init_scheme: InitScheme = "xavier_normal",
    ) -> None:
        name = type(self).__name__
        _positive_int(name, "padding", padding, minimum=0)
        _positive_int(name, "output_padding", output_padding, minimum=0)
        super().__init__(in_rep, out_rep, kernel_size, stride, dilation, bias, init_scheme)
        if output_padding >= max(self.stride, self.dilation):
            raise ValueError(
                f"{name} expects output_padding < max(stride, dilation) = "
                f"{max(self.stride, self.dilation)} (as in torch); got {output_padding}."
            )
        self.padding = padding
        self.output_padding = output_padding
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the transposed convolution over time.

        Args:
            x: Tensor of shape ``(B, in_rep.size, T)`` or ``(in_rep.size, T)``.

        Returns:
            Tensor of shape ``(B, out_rep.size, T_out)`` (or unbatched), ``T_out = (T - 1) s - 2p
            + d (K - 1) + output_padding + 1`` as in :class:`torch.nn.ConvTranspose1d`.
        """
        self._check_conv_input(x)
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        return F.conv_transpose1d(
            x,
            self.dense_weight(),
            self.dense_bias(),
            self.stride,
            self.padding,
            self.output_padding,
            1,
            self.dilation,
        )

    def export(self) -> nn.ConvTranspose1d:
        """A new :class:`torch.nn.ConvTranspose1d` computing the same map with the current weights.

        The weights are detached copies (same dtype and device); this module is unchanged.
        """
        weight, bias = self._export_tensors()
        conv = nn.ConvTranspose1d(
            self.in_rep.size,
            self.out_rep.size,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            bias=bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None and conv.bias is not None:
                conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_rep.name} -> {self.out_rep.name}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding}, dilation={self.dilation} | "
            f"{self.num_weights} weights, {self._kind()}, bias={self.invariant_bias is not None}"
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class eGroupNorm(eModule):
    r"""Group normalization whose groups are whole copies of the regular representation.

    For ``rep`` = ``c`` regular copies (features are ``c`` functions on the group, each stored as
    ``|G|`` consecutive channels) and ``num_groups`` dividing ``c``, group ``γ`` holds copies
    ``γ c/G, …, (γ+1) c/G - 1`` and

    .. math::
        y_{(i, a), t} = s_i \frac{x_{(i, a), t} - \mu_\gamma}{\sqrt{\sigma^2_\gamma + \epsilon}}
        + b_i, \qquad
        \mu_\gamma = \operatorname{mean}_{i \in \gamma,\, a \in G,\, t} x_{(i,a),t},

    with ``σ²_γ`` the matching (biased) variance. ``ρ(g)`` permutes the channels inside each
    copy, so the statistics are invariant, and the affine scale ``s_i`` and bias ``b_i`` are
    constant on each copy (one each per copy), so the map is equivariant. It is exactly
    :class:`torch.nn.GroupNorm` with per-channel weights ``s_i`` and biases ``b_i`` repeated
    ``|G|`` times, and :meth:`export` returns that module.

    Channels first, like :class:`torch.nn.GroupNorm`: inputs ``(B, rep.size, *)``.

    Args:
        rep: ``c`` copies of the regular representation of a finite group.
        num_groups: Number of groups; must divide ``c`` so that every group holds whole copies.
        eps: Added to the variance.
        affine: Whether to learn the per-copy scale and bias.

    Raises:
        ValueError: If ``rep`` is not copies of the regular representation, ``num_groups`` does
            not divide the number of copies or ``eps`` is not positive.

    Examples:
        >>> import torch, escnn.group as eg
        >>> from ereps import direct_sum
        >>> G = eg.cyclic_group(4)
        >>> norm = eGroupNorm(direct_sum([G.regular_representation] * 4), 2)
        >>> norm(torch.randn(3, 16, 7)).shape
        torch.Size([3, 16, 7])
    """

    def __init__(
        self, rep: Representation, num_groups: int, eps: float = 1e-5, affine: bool = True
    ) -> None:
        name = type(self).__name__
        check_representation(rep, "rep")
        copies = regular_multiplicity(rep)
        if copies is None:
            raise ValueError(
                f"{name} normalizes whole copies of the regular representation; got {rep.name!r} "
                f"(irreps {rep.irreps}), which is not of that form. Use eLayerNorm or eRMSNorm "
                "for other representations."
            )
        if isinstance(num_groups, bool) or not isinstance(num_groups, int):
            raise TypeError(f"{name} expects num_groups to be an int; got {num_groups!r}.")
        if num_groups < 1 or copies % num_groups != 0:
            valid = [g for g in range(1, copies + 1) if copies % g == 0]
            raise ValueError(
                f"{name} expects num_groups to divide the {copies} regular copies of {rep.name!r} "
                f"(rep.size / |G| = {rep.size} / {rep.size // copies}) so that every group holds "
                f"whole copies; got num_groups={num_groups}. Valid values: {valid}."
            )
        if not eps > 0:
            raise ValueError(f"{name} expects eps > 0; got {eps}.")
        super().__init__(rep, rep)
        self.num_groups = num_groups
        self.copies = copies
        self.order = rep.size // copies
        self.eps = float(eps)
        self.affine = bool(affine)
        self.copy_scale: nn.Parameter | None = None
        self.copy_bias: nn.Parameter | None = None
        if self.affine:
            self.copy_scale = nn.Parameter(torch.ones(copies))
            self.copy_bias = nn.Parameter(torch.zeros(copies))

    def dense_affine(self) -> tuple[Tensor | None, Tensor | None]:
        """Per-channel weight and bias ``(rep.size,)`` (each copy's value repeated ``|G|`` times).

        ``(None, None)`` without ``affine``. New tensors on every call, differentiable.
        """
        if self.copy_scale is None or self.copy_bias is None:
            return None, None
        n = self.order
        return self.copy_scale.repeat_interleave(n), self.copy_bias.repeat_interleave(n)

    @property
    def weight(self) -> Tensor | None:
        """Per-channel scale, as ``torch.nn.GroupNorm.weight`` (see :meth:`dense_affine`)."""
        return self.dense_affine()[0]

    @property
    def bias(self) -> Tensor | None:
        """Per-channel bias, as ``torch.nn.GroupNorm.bias`` (see :meth:`dense_affine`)."""
        return self.dense_affine()[1]

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Scales to one, biases to zero."""
        with torch.no_grad():
            if self.copy_scale is not None:
                self.copy_scale.fill_(1.0)
            if self.copy_bias is not None:
                self.copy_bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Normalize.

        Args:
            x: Tensor of shape ``(B, rep.size, *)``.

        Returns:
            Tensor of the same shape.
        """
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a torch.Tensor; got {type(x).__name__}.")
        n = self.in_rep.size
        if x.ndim < 2 or x.shape[1] != n:
            raise ValueError(
                f"{name} expects input of shape (B, {n}, *) (channels first, like "
                f"torch.nn.GroupNorm) for rep {self.in_rep.name!r}; got {tuple(x.shape)}."
            )
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        weight, bias = self.dense_affine()
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)

    def export(self) -> nn.GroupNorm:
        """A new :class:`torch.nn.GroupNorm` computing the same map with the current parameters."""
        weight, bias = self.dense_affine()
        ref = weight if weight is not None else torch.empty(0)
        norm = nn.GroupNorm(
            self.num_groups,
            self.in_rep.size,
            eps=self.eps,
            affine=self.affine,
            device=ref.device,
            dtype=ref.dtype if weight is not None else None,
        )
        if weight is not None and bias is not None:
            with torch.no_grad():
                norm.weight.copy_(weight)
                norm.bias.copy_(bias)
        return norm

    def extra_repr(self) -> str:
        return (
            f"{self.in_rep.name}, num_groups={self.num_groups} ({self.copies} copies), "
            f"eps={self.eps}, affine={self.affine}"
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
