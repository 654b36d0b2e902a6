r"""Equivariant layers executed in the spectral (isotypic) basis of copies of the regular rep.

Features are ``c`` regular copies written copy by copy in the basis of
:func:`ereps.regular_spectral_basis`: ``x_spec = (I_c ⊗ T)^T x_reg`` with an orthogonal ``T``
(``|G| × |G|``). There

* an equivariant linear map is block diagonal by irrep type, one shared matrix ``M_k`` per type
  applied to ``d_k / e_k`` rows (:class:`eSpectralLinear`): ``c_in c_out Σ_k d_k³/e_k``
  multiply-adds per token instead of ``c_in c_out |G|²``;
* inner products (attention logits) and norms (RMS/LayerNorm statistics) are unchanged, because
  ``T`` is orthogonal; LayerNorm's mean over all ``c|G|`` features is a combination of the
  trivial coordinates (one per copy, basis vector ``1/√|G|``), and per-copy scales and biases act
  on the copy and on its trivial coordinate;
* rotary embeddings rotate pairs of copies coordinate by coordinate, which commutes with a change
  of basis inside copies: they apply unchanged;
* only the pointwise activation of the feed-forward block needs the regular basis: one
  ``|G| × |G|`` product per copy on each side of it.

Every module here converts from and to its regular-basis counterpart (``from_regular`` /
``to_regular``) with the same function, so a spectral model is built from a regular one's weights
(and initialization distribution) and exported through it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from elayers._activation import apply_activation, plain_activation
from elayers._attention import eMultiheadAttention
from elayers._linear import eLinear
from elayers._mlp import eMLP
from elayers._module import eModule
from elayers._norm import eLayerNorm, eRMSNorm
from elayers._parametrization import SpectralBlockParametrization
from elayers._plain_spectral import (
    PlainSpectralDecoder,
    PlainSpectralDecoderLayer,
    PlainSpectralLinear,
    PlainSpectralMLP,
    PlainSpectralMultiheadAttention,
    PlainSpectralNorm,
)
from elayers._spectral_ops import (
    AttentionRuns,
    DecoderLayerRuns,
    apply_runs,
    coord_major_to_runs,
    coord_outer_to_runs,
    copy_dropout,
    decoder_stack_tokens,
    feedforward_runs,
    from_runs,
    head_runs_to_heads,
    heads_to_head_runs,
    heads_to_runs,
    linear_tokens,
    mlp_tokens,
    norm_runs,
    norm_tokens,
    runs_to_coord_major,
    runs_to_coord_outer,
    runs_to_heads,
    to_regular_basis,
    to_runs,
    to_spectral_basis,
)
from elayers._transformer import eTransformerDecoder, eTransformerDecoderLayer
from ereps import (
    Group,
    InitScheme,
    check_init_scheme,
    group_order,
    regular_multiplicity,
    regular_spectral_basis,
    spectral_rep,
)

__all__ = [
    "coord_major_to_runs",
    "coord_outer_to_runs",
    "copy_dropout",
    "eSpectralDecoder",
    "eSpectralDecoderLayer",
    "eSpectralLinear",
    "eSpectralMLP",
    "eSpectralMultiheadAttention",
    "eSpectralNorm",
    "from_runs",
    "head_runs_to_heads",
    "heads_to_head_runs",
    "heads_to_runs",
    "runs_to_coord_major",
    "runs_to_coord_outer",
    "runs_to_heads",
    "spectral_macs_per_token",
    "to_regular_basis",
    "to_runs",
    "to_spectral_basis",
]


def _check_copies(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} expects {name} to be an int >= 1; got {value!r}.")
    return value


class eSpectralLinear(eModule):
    r"""An equivariant affine map between ``c_in`` and ``c_out`` regular copies, spectral basis.

    In the spectral basis (see the module docstring) the map is, for every irrep type ``k`` and
    row ``b < d_k/e_k``, ``y_k[b] = M_k x_k[b]`` with
    :math:`M_k = \big[\textstyle\sum_j a^{(k)}_{o i j} L^{(k)}_j\big]_{o,i}`, ``o < c_out m_k``,
    ``i < c_in m_k``: ``c_in c_out Σ_k m_k² e_k = c_in c_out |G|`` parameters (as many as the
    group convolution), and ``c_in c_out Σ_k d_k³/e_k`` multiply-adds per token. Blocks of equal
    shape run as one batched product. The invariant bias ``β`` (one number per output copy) sits
    on the trivial coordinate of each copy.

    The coefficients and their synthesis are those of :class:`elayers.SpectralBlockParametrization`
    (``self.parametrization``); the parameters ``weight_<run>`` hold them. They are orthonormal
    coefficients ``θ_k = √(d_k/|G|) a_k``: by Plancherel
    ``‖w‖² = Σ_k (d_k/|G|) ‖a_k‖² = ‖θ‖²`` for the group-convolution kernel ``w`` of the same map,
    so ``w ↦ θ`` is orthogonal. Hence gradient steps and weight decay on ``θ`` are those on ``w``
    (up to rounding; Adam's per-coordinate scaling is not rotation invariant), and iid draws of
    variance ``σ²`` (``σ`` from ``init_scheme`` and the dense fan-in/fan-out, as the regular
    :class:`eLinear` draws ``w``) give the synthesized matrix the regular scheme's moments
    (the same distribution for the normal schemes).

    Args:
        group: A finite escnn group.
        in_copies: ``c_in``.
        out_copies: ``c_out``.
        bias: Whether to add the invariant bias.
        init_scheme: ``xavier_uniform``, ``xavier_normal``, ``kaiming_uniform`` or
            ``kaiming_normal``.

    Raises:
        ValueError: If a copy count is not a positive int or the scheme is unknown.
    """

    def __init__(
        self,
        group: Group,
        in_copies: int,
        out_copies: int,
        bias: bool = True,
        init_scheme: InitScheme = "xavier_normal",
    ) -> None:
        owner = type(self).__name__
        c_in = _check_copies(owner, "in_copies", in_copies)
        c_out = _check_copies(owner, "out_copies", out_copies)
        self.init_scheme = check_init_scheme(init_scheme)
        parametrization = SpectralBlockParametrization(group, c_in, c_out)
        super().__init__(spectral_rep(group, c_in), spectral_rep(group, c_out))
        self.parametrization = parametrization
        self.c_in, self.c_out, self.order = c_in, c_out, parametrization.order
        self.trivial_index = parametrization.trivial_index
        # The runs of equal blocks, in the order of the parameters (read by the forward paths).
        self.groups = parametrization.runs
        self.run_scales = parametrization.run_scales
        # Parameters named weight_<run> on this module (decayed by the regressors' optimizer
        # groups as eLinear.weight_params are).
        for i, shape in enumerate(parametrization.shapes):
            self.register_parameter(f"weight_{i}", nn.Parameter(torch.empty(shape)))
        self.bias_coeffs = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.reset_parameters()

    @property
    def weight_blocks(self) -> list[nn.Parameter]:
        """The block coefficients per run of equal blocks: ``(count, c_out m, c_in m, e)``."""
        return [getattr(self, f"weight_{i}") for i in range(len(self.groups))]

    @property
    def num_weights(self) -> int:
        """Number of free parameters of the linear map (``c_in · c_out · |G|``)."""
        return sum(p.numel() for p in self.weight_blocks)

    def block_matrices(self) -> list[Tensor]:
        """Per run of equal blocks: ``(count, f c_in, f c_out)``, transposed ``M_k`` (``x M``).

        Rows ``(μ, q, i)`` and columns ``(ν, p, o)``: multiplicity copy, algebra coordinate, then
        regular copy (innermost, as in the run layout). See
        :meth:`SpectralBlockParametrization.block_matrices`.
        """
        return self.parametrization.block_matrices(self.weight_blocks)

    def dense_spectral_weight(self) -> Tensor:
        """The whole map in the spectral basis, ``(c_out |G|, c_in |G|)`` (block sparse)."""
        return self.parametrization.synthesize(self.weight_blocks)

    def dense_regular_weight(self) -> Tensor:
        """The same map in the regular basis: ``(I ⊗ T) W_spec (I ⊗ T)^T``."""
        return self.parametrization.to_regular_basis(self.dense_spectral_weight())

    def transform_matrix(self) -> Tensor:
        """``T`` (float64 ``(|G|, |G|)``), spectral basis vectors in regular coordinates."""
        return regular_spectral_basis(self.in_rep.group).transform

    def spectral_bias(self, dtype: torch.dtype) -> Tensor | None:
        """The bias in the spectral basis ``(c_out |G|,)``: ``β_i`` on trivial coordinates."""
        if self.bias_coeffs is None:
            return None
        out = torch.zeros(self.c_out, self.order, dtype=dtype, device=self.bias_coeffs.device)
        out[:, self.trivial_index] = self.bias_coeffs.to(dtype)
        return out.reshape(-1)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Redraw the coefficients with the scheme's ``σ`` (see the class docstring); zero bias."""
        scheme = check_init_scheme(scheme or self.init_scheme)
        blocks = self.weight_blocks
        ref = blocks[0]
        with torch.no_grad():
            drawn = self.parametrization.initialize(scheme, dtype=ref.dtype, device=ref.device)
            for p, value in zip(blocks, drawn, strict=True):
                p.copy_(value)
            if self.bias_coeffs is not None:
                self.bias_coeffs.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the map on the last axis.

        Args:
            x: ``(..., c_in |G|)`` in the spectral basis.

        Returns:
            ``(..., c_out |G|)`` in the spectral basis.
        """
        self._check_input(x)
        return linear_tokens(self, x, self.block_matrices(), self.order)

    def apply_runs(
        self,
        parts: list[Tensor],
        mats: list[Tensor],
        start: int,
        stop: int,
        *,
        in_heads: int | None = None,
        out_heads: tuple[int, int] | None = None,
    ) -> list[Tensor]:
        """Output copies ``start:stop`` of the map on run-layout features (see :func:`to_runs`).

        :func:`elayers._spectral_ops.apply_runs` with this map's runs and bias: ``mats`` from
        :meth:`block_matrices`, ``(count, N, rows, f, c_in)`` in, ``(count, N, rows, f,
        stop - start)`` out (head-major layouts with ``in_heads``/``out_heads``).
        """
        return apply_runs(self, parts, mats, start, stop, in_heads=in_heads, out_heads=out_heads)

    @classmethod
    def from_regular(cls, linear: eLinear) -> eSpectralLinear:
        """The same map as ``linear`` (between regular copies), parametrized spectrally."""
        c_in = regular_multiplicity(linear.in_rep)
        c_out = regular_multiplicity(linear.out_rep)
        if c_in is None or c_out is None:
            raise ValueError(
                "eSpectralLinear.from_regular expects an eLinear between copies of the regular "
                f"representation; got {linear.in_rep.name!r} -> {linear.out_rep.name!r}."
            )
        ref = linear.weight_params
        new = cls(
            linear.in_rep.group,
            c_in,
            c_out,
            bias=linear.invariant_bias is not None,
            init_scheme=linear.init_scheme,
        ).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            new.set_from_regular_weight(linear.weight)
            if new.bias_coeffs is not None and linear.invariant_bias is not None:
                new.bias_coeffs.copy_(linear.invariant_bias.coeffs)
        return new.train(linear.training)

    def set_from_regular_weight(self, weight: Tensor) -> None:
        """Set the blocks from an equivariant ``(c_out |G|, c_in |G|)`` regular-basis matrix.

        The projection ``a_{oij} = ⟨L_j, B_{oi}⟩_F / e`` of each ``e × e`` block onto the algebra
        (exact for an equivariant matrix).
        """
        spectral = self.parametrization.from_regular_basis(weight)
        coefficients = self.parametrization.coefficients_of(spectral)
        with torch.no_grad():
            for p, value in zip(self.weight_blocks, coefficients, strict=True):
                p.copy_(value)

    def to_regular(self) -> eLinear:
        """An :class:`eLinear` (group convolution) computing the same map in the regular basis."""
        group = self.in_rep.group
        reg = group.regular_representation
        from ereps import direct_sum

        ref = self.weight_blocks[0]
        lin = eLinear(
            direct_sum([reg] * self.c_in),
            direct_sum([reg] * self.c_out),
            bias=self.bias_coeffs is not None,
            init_scheme=self.init_scheme,
        ).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            # Every kernel entry appears |G| times in the dense matrix; they are equal.
            (kernel,) = lin.parametrization.coefficients_of(self.dense_regular_weight())
            lin.weight_params.copy_(kernel)
            if lin.invariant_bias is not None and self.bias_coeffs is not None:
                lin.invariant_bias.coeffs.copy_(self.bias_coeffs)
        return lin.train(self.training)

    def export(self) -> nn.Linear:
        """``torch.nn.Linear`` with the dense spectral-basis matrix (same function, same basis)."""
        with torch.no_grad():
            w = self.dense_spectral_weight()
            layer = nn.Linear(
                w.shape[1],
                w.shape[0],
                bias=self.bias_coeffs is not None,
                dtype=w.dtype,
                device=w.device,
            )
            layer.weight.copy_(w)
            b = self.spectral_bias(w.dtype)
            if b is not None and layer.bias is not None:
                layer.bias.copy_(b)
        return layer.train(self.training)

    def export_spectral(self) -> PlainSpectralLinear:
        """The spectral plain form: a :class:`PlainSpectralLinear` holding this map's blocks.

        The blocks of :meth:`block_matrices` (detached copies) applied by the same batched
        products as :meth:`forward`: the same function in the same basis, ``c_in c_out Σ_k
        d_k³/e_k`` multiply-adds per token (:meth:`export` gives the dense ``torch.nn.Linear``).
        """
        with torch.no_grad():
            plain = PlainSpectralLinear(
                self.groups,
                self.c_in,
                self.c_out,
                self.order,
                self.block_matrices(),
                self.bias_coeffs,
            )
        return plain.train(self.training)

    def extra_repr(self) -> str:
        return (
            f"{self.c_in} -> {self.c_out} copies of {self.in_rep.group.name} (spectral) | "
            f"{self.num_weights} weights, bias={self.bias_coeffs is not None}"
        )

    if TYPE_CHECKING:
        __call__ = forward


class eSpectralNorm(eModule):
    r"""RMS or layer normalization of ``c`` regular copies in the spectral basis.

    ``rms``: :math:`y = x / \sqrt{\overline{x^2} + \epsilon}` (the mean square over all ``c|G|``
    coordinates is basis-free). ``layer``: first the mean over all regular coordinates is removed;
    it is :math:`\mu = \tfrac{\sqrt{|G|}}{c|G|} \sum_i t_i` of the trivial coordinates ``t_i``,
    and removing ``μ·1`` subtracts ``√|G| μ`` from every ``t_i``. Then a scale per copy (all its
    coordinates) and a bias per copy (``√|G| β_i`` on its trivial coordinate, the constant
    ``β_i`` in the regular basis), as the per-copy affine map of :class:`eRMSNorm` and
    :class:`eLayerNorm`.

    Args:
        group: A finite escnn group.
        copies: ``c``.
        kind: ``"rms"`` or ``"layer"``.
        eps: Added to the mean square.
        bias: Whether the per-copy bias exists.
    """

    def __init__(self, group: Group, copies: int, kind: str, eps: float, bias: bool) -> None:
        owner = type(self).__name__
        c = _check_copies(owner, "copies", copies)
        if kind not in ("rms", "layer"):
            raise ValueError(f"{owner} expects kind 'rms' or 'layer'; got {kind!r}.")
        rep = spectral_rep(group, c)
        super().__init__(rep, rep)
        self.kind, self.eps, self.copies = kind, float(eps), c
        self.order = group_order(group)
        self.trivial_index = regular_spectral_basis(group).trivial_index
        self.copy_scale = nn.Parameter(torch.ones(c))
        self.copy_bias = nn.Parameter(torch.zeros(c)) if bias else None

    @classmethod
    def from_regular(cls, norm: eModule) -> eSpectralNorm:
        """The spectral twin of an :class:`eRMSNorm`/:class:`eLayerNorm` with per-copy affine."""
        if not isinstance(norm, eRMSNorm | eLayerNorm) or norm.copy_scale is None:
            raise ValueError(
                "eSpectralNorm.from_regular expects an eRMSNorm or eLayerNorm on regular copies "
                f"with affine='copy'; got {type(norm).__name__} ({norm!r})."
            )
        if isinstance(norm, eLayerNorm) and not norm.mean_centering:
            raise ValueError("eSpectralNorm.from_regular: eLayerNorm must centre by the mean.")
        kind = "layer" if isinstance(norm, eLayerNorm) else "rms"
        new = cls(
            norm.in_rep.group, norm.copy_scale.numel(), kind, norm.eps, norm.copy_bias is not None
        )
        new = new.to(device=norm.copy_scale.device, dtype=norm.copy_scale.dtype)
        with torch.no_grad():
            new.copy_scale.copy_(norm.copy_scale)
            if new.copy_bias is not None and norm.copy_bias is not None:
                new.copy_bias.copy_(norm.copy_bias)
        return new.train(norm.training)

    def to_regular(self) -> eRMSNorm | eLayerNorm:
        """The regular-basis norm computing the same function."""
        from ereps import direct_sum

        rep = direct_sum([self.in_rep.group.regular_representation] * self.copies)
        norm: eRMSNorm | eLayerNorm
        if self.kind == "rms":
            norm = eRMSNorm(rep, eps=self.eps, bias=self.copy_bias is not None)
        else:
            norm = eLayerNorm(rep, eps=self.eps, bias=self.copy_bias is not None)
        norm = norm.to(device=self.copy_scale.device, dtype=self.copy_scale.dtype)
        with torch.no_grad():
            if norm.copy_scale is None:  # an internal invariant (python -O keeps it)
                raise RuntimeError("internal error: regular copies get the per-copy affine map")
            norm.copy_scale.copy_(self.copy_scale)
            if norm.copy_bias is not None and self.copy_bias is not None:
                norm.copy_bias.copy_(self.copy_bias)
        return norm.train(self.training)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Reset the per-copy affine map to the identity."""
        with torch.no_grad():
            self.copy_scale.fill_(1.0)
            if self.copy_bias is not None:
                self.copy_bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``(..., c|G|)`` spectral features; same shape out."""
        self._check_input(x)
        return norm_tokens(
            x,
            kind=self.kind,
            eps=self.eps,
            copies=self.copies,
            order=self.order,
            trivial_index=self.trivial_index,
            scale=self.copy_scale,
            bias=self.copy_bias,
        )

    def forward_runs(self, parts: list[Tensor]) -> list[Tensor]:
        """The norm on run-layout features (see :func:`elayers._spectral_ops.norm_runs`)."""
        return norm_runs(
            parts,
            kind=self.kind,
            eps=self.eps,
            copies=self.copies,
            order=self.order,
            scale=self.copy_scale,
            bias=self.copy_bias,
        )

    def export(self) -> nn.Module:
        """A plain module computing this norm in the spectral basis (through the regular one)."""
        from elayers._plain_spectral import Conjugated

        return Conjugated(self.to_regular().export(), self.transform_matrix()).train(self.training)

    def export_spectral(self) -> PlainSpectralNorm:
        """The spectral plain form: a :class:`PlainSpectralNorm` with this norm's affine map."""
        with torch.no_grad():
            plain = PlainSpectralNorm(
                self.kind,
                self.eps,
                self.copies,
                self.order,
                self.trivial_index,
                self.copy_scale,
                self.copy_bias,
            )
        return plain.train(self.training)

    def transform_matrix(self) -> Tensor:
        """``T`` (float64)."""
        return regular_spectral_basis(self.in_rep.group).transform

    if TYPE_CHECKING:
        __call__ = forward


class eSpectralMultiheadAttention(AttentionRuns, eModule):
    """Multi-head attention of :class:`eMultiheadAttention` on spectral-basis tokens.

    Heads take whole copies (contiguous in both bases), logits are inner products, hence equal in
    both bases; rotary embeddings rotate pairs of copies coordinate by coordinate and relative
    biases act on logits, both unchanged. Batch-first only.

    Args:
        attention: The regular-basis attention whose weights (and positional modules) to take.
    """

    in_proj: eSpectralLinear
    out_proj: eSpectralLinear

    def __init__(self, attention: eMultiheadAttention) -> None:
        copies = regular_multiplicity(attention.in_rep)
        if copies is None or not attention.batch_first:
            raise ValueError(
                "eSpectralMultiheadAttention expects a batch-first eMultiheadAttention on regular "
                "copies."
            )
        group = attention.in_rep.group
        rep = spectral_rep(group, copies)
        super().__init__(rep, rep)
        self.copies = copies
        self.num_heads = attention.num_heads
        self.embed_dim = attention.embed_dim
        self.head_dim = attention.head_dim
        self.dropout = attention.dropout
        self.pos_encoding = attention.pos_encoding
        self.in_proj = eSpectralLinear.from_regular(attention.in_proj)
        self.out_proj = eSpectralLinear.from_regular(attention.out_proj)
        self.rotary = copy.deepcopy(attention.rotary)
        self.relative_bias = copy.deepcopy(attention.relative_bias)
        self.train(attention.training)

    def to_regular(self, like: eMultiheadAttention) -> eMultiheadAttention:
        """A copy of ``like`` (same structure) with this module's weights."""
        out = copy.deepcopy(like)
        out.in_proj = self.in_proj.to_regular()
        out.out_proj = self.out_proj.to_regular()
        out.rotary = copy.deepcopy(self.rotary)
        out.relative_bias = copy.deepcopy(self.relative_bias)
        return out.train(self.training)

    def export(self) -> PlainSpectralMultiheadAttention:
        """The plain form of this module alone: its :meth:`export_spectral`.

        The layers and stacks that hold it export a dense form (torch's attention between two
        changes of basis); on its own, with its own call (``key`` = value), the spectral form is
        the plain module computing the same function in the same basis.
        """
        return self.export_spectral()

    def export_spectral(self) -> PlainSpectralMultiheadAttention:
        """The spectral plain form: block-diagonal projections, the same heads and positions."""
        with torch.no_grad():
            plain = PlainSpectralMultiheadAttention(
                self.in_proj.export_spectral(),
                self.out_proj.export_spectral(),
                self.num_heads,
                self.dropout,
                self.rotary,
                self.relative_bias,
            )
        return plain.train(self.training)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``query`` ``(B, L, E)`` to ``key`` (= value) ``(B, S, E)``; ``(B, L, E)``.

        Spectral copy-major tokens; masks and positions as :class:`eMultiheadAttention`.
        """
        self._check_input(query, "query")
        self._check_input(key, "key")
        return self.attend_tokens(
            query, key, key_padding_mask, attn_mask, is_causal, query_pos, key_pos
        )

    if TYPE_CHECKING:
        __call__ = forward


class eSpectralDecoderLayer(DecoderLayerRuns, eModule):
    """:class:`eTransformerDecoderLayer` executed on spectral-basis tokens.

    Self-attention, cross-attention and the feed-forward block with :class:`eSpectralLinear`
    maps; the feed-forward's hidden features go to the regular basis (one ``|G| × |G|`` product
    per copy) only around the pointwise activation and its dropout (elementwise there, as in the
    regular layer). Residual dropout drops whole copies (see :func:`copy_dropout`); in eval the
    layer computes exactly the regular layer's function in the spectral basis.

    Args:
        layer: The regular-basis layer whose weights to take.
    """

    self_attn: eSpectralMultiheadAttention
    multihead_attn: eSpectralMultiheadAttention
    linear1: eSpectralLinear
    linear2: eSpectralLinear
    norm1: eSpectralNorm
    norm2: eSpectralNorm
    norm3: eSpectralNorm

    def __init__(self, layer: eTransformerDecoderLayer) -> None:
        copies = regular_multiplicity(layer.in_rep)
        if copies is None:
            raise ValueError("eSpectralDecoderLayer expects a layer on regular copies.")
        group = layer.in_rep.group
        rep = spectral_rep(group, copies)
        super().__init__(rep, rep)
        self.copies = copies
        self.order = group_order(group)
        self.norm_first = layer.norm_first
        self.pos_encoding = layer.pos_encoding
        self.self_attn = eSpectralMultiheadAttention(layer.self_attn)
        self.multihead_attn = eSpectralMultiheadAttention(layer.multihead_attn)
        self.linear1 = eSpectralLinear.from_regular(layer.ff.linear1)
        self.linear2 = eSpectralLinear.from_regular(layer.ff.linear2)
        self.activation = layer.ff.activation
        self.activation_name = layer.ff.activation_name
        self.ff_dropout = layer.ff.dropout.p
        self.norm1 = eSpectralNorm.from_regular(layer.norm1)
        self.norm2 = eSpectralNorm.from_regular(layer.norm2)
        self.norm3 = eSpectralNorm.from_regular(layer.norm3)
        self.p_residual = (layer.dropout1.p, layer.dropout2.p, layer.dropout3.p)
        self.register_exact_buffer("transform", regular_spectral_basis(group).transform)
        self.transform: Tensor
        attn = layer.self_attn
        # The regular layer's constructor arguments, to rebuild its structure (regular_twin).
        self._regular_kwargs: dict[str, object] = {
            "nhead": attn.num_heads,
            "dim_feedforward": layer.ff.linear1.out_rep.size,
            "dropout": layer.dropout1.p,
            "activation": layer.ff.activation_name or layer.ff.activation,
            "layer_norm_eps": layer.norm1.eps,
            "batch_first": True,
            "norm_first": layer.norm_first,
            "norm_module": "layernorm" if isinstance(layer.norm1, eLayerNorm) else "rmsnorm",
            "bias": attn.in_proj.invariant_bias is not None,
            "init_scheme": attn.in_proj.init_scheme,
            "pos_encoding": layer.pos_encoding,
            "max_relative_distance": (
                32 if attn.relative_bias is None else attn.relative_bias.max_distance
            ),
            "rope_base": 10000.0 if attn.rotary is None else attn.rotary.base,
        }
        self.train(layer.training)

    def regular_like(self) -> eTransformerDecoderLayer:
        """A freshly built regular layer of this layer's structure (the global RNG untouched)."""
        from ereps import direct_sum

        rep = direct_sum([self.in_rep.group.regular_representation] * self.copies)
        with torch.random.fork_rng(devices=[]):
            layer = eTransformerDecoderLayer(rep, **self._regular_kwargs)  # type: ignore[arg-type]
        ref = self.linear1.weight_blocks[0]
        return layer.to(device=ref.device, dtype=ref.dtype)

    def regular_twin(self) -> eTransformerDecoderLayer:
        """The regular-basis layer computing this layer's function (new weights, same values)."""
        return self.to_regular(self.regular_like())

    def export(self) -> nn.Module:
        """A plain module: the regular twin's export between two changes of basis per copy."""
        from elayers._plain_spectral import ConjugatedDecoder

        with torch.no_grad():
            inner = self.regular_twin().export()
            plain = ConjugatedDecoder(inner, self.transform, self.pos_encoding is not None)
        return plain.train(self.training)

    def export_spectral(self) -> PlainSpectralDecoderLayer:
        """The spectral plain form: a :class:`PlainSpectralDecoderLayer` with this layer's blocks.

        It runs the same functions as :meth:`forward` (block products, the feed-forward's two
        constant changes of basis), with the activation as a ``torch.nn`` module.
        """
        with torch.no_grad():
            plain = PlainSpectralDecoderLayer(
                self.self_attn.export_spectral(),
                self.multihead_attn.export_spectral(),
                self.linear1.export_spectral(),
                self.linear2.export_spectral(),
                (
                    self.norm1.export_spectral(),
                    self.norm2.export_spectral(),
                    self.norm3.export_spectral(),
                ),
                plain_activation(self.activation, self.activation_name),
                self.ff_dropout,
                self.p_residual,
                self.norm_first,
                self.transform,
            )
        return plain.train(self.training)

    def to_regular(self, like: eTransformerDecoderLayer) -> eTransformerDecoderLayer:
        """A copy of ``like`` (same structure) with this layer's weights."""
        out = copy.deepcopy(like)
        out.self_attn = self.self_attn.to_regular(like.self_attn)
        out.multihead_attn = self.multihead_attn.to_regular(like.multihead_attn)
        out.ff.linear1 = self.linear1.to_regular()
        out.ff.linear2 = self.linear2.to_regular()
        out.norm1 = self.norm1.to_regular()
        out.norm2 = self.norm2.to_regular()
        out.norm3 = self.norm3.to_regular()
        return out.train(self.training)

    def _ff_runs(self, x: list[Tensor]) -> list[Tensor]:
        return feedforward_runs(
            x,
            self.linear1,
            self.linear1.block_matrices(),
            self.linear2,
            self.linear2.block_matrices(),
            order=self.order,
            transform=self.transform,
            activation=self._activate,
            dropout_p=self.ff_dropout,
            training=self.training,
        )

    def _activate(self, fresh: Tensor) -> Tensor:
        return apply_activation(self.activation, self.activation_name, fresh)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
    ) -> Tensor:
        """Run the layer on spectral tokens ``tgt`` ``(B, T, E)`` and ``memory`` ``(B, S, E)``.

        Masks and positions as :class:`eTransformerDecoderLayer` (batch first; no ``tgt_mask``,
        the regressors' self-attention masks are padding and ``tgt_is_causal``).
        """
        self._check_input(tgt, "tgt")
        self._check_input(memory, "memory")
        return decoder_stack_tokens(
            [self],
            tgt,
            memory,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            tgt_pos,
            memory_pos,
        )

    if TYPE_CHECKING:
        __call__ = forward


class eSpectralDecoder(eModule):
    """A stack of :class:`eSpectralDecoderLayer` converted from an :class:`eTransformerDecoder`.

    Args:
        decoder: The regular-basis stack (without a final norm) whose weights to take.

    Raises:
        ValueError: If the stack has a final norm (the regressors keep theirs outside).
    """

    def __init__(self, decoder: eTransformerDecoder) -> None:
        if decoder.norm is not None:
            raise ValueError("eSpectralDecoder converts stacks without a final norm.")
        first = decoder.layers[0]
        if not isinstance(first, eTransformerDecoderLayer):  # an internal invariant
            raise RuntimeError("internal error: eTransformerDecoder holds decoder layers")
        copies = regular_multiplicity(first.in_rep)
        if copies is None:
            raise ValueError("eSpectralDecoder expects layers on regular copies.")
        rep = spectral_rep(first.in_rep.group, copies)
        super().__init__(rep, rep)
        self.layers = nn.ModuleList(
            [eSpectralDecoderLayer(layer) for layer in decoder.layers]  # type: ignore[arg-type]
        )
        self.train(decoder.training)

    def transform_matrix(self) -> Tensor:
        """``T`` (float64, on the module's device): spectral basis vectors, regular coordinates."""
        first = self.layers[0]
        if not isinstance(first, eSpectralDecoderLayer):  # an internal invariant
            raise RuntimeError("internal error: built from decoder layers")
        return first.transform

    def regular_twin(self) -> eTransformerDecoder:
        """The regular-basis stack computing this stack's function (new weights, same values)."""
        first = self.layers[0]
        if not isinstance(first, eSpectralDecoderLayer):  # an internal invariant
            raise RuntimeError("internal error: built from decoder layers")
        with torch.random.fork_rng(devices=[]):
            like = eTransformerDecoder(first.regular_like(), len(self.layers))
        return self.to_regular(like)

    def export(self) -> nn.Module:
        """A plain module: the regular twin's export between two changes of basis per copy."""
        from elayers._plain_spectral import ConjugatedDecoder

        first = self.layers[0]
        if not isinstance(first, eSpectralDecoderLayer):  # an internal invariant
            raise RuntimeError("internal error: built from decoder layers")
        with torch.no_grad():
            inner = self.regular_twin().export()
            plain = ConjugatedDecoder(inner, first.transform, first.pos_encoding is not None)
        return plain.train(self.training)

    def export_spectral(self) -> PlainSpectralDecoder:
        """The spectral plain form: a :class:`PlainSpectralDecoder` of the layers' exports."""
        layers = [_spectral_layer(layer).export_spectral() for layer in self.layers]
        return PlainSpectralDecoder(layers).train(self.training)

    def to_regular(self, like: eTransformerDecoder) -> eTransformerDecoder:
        """A copy of ``like`` (same structure) with this stack's weights."""
        out = copy.deepcopy(like)
        out.layers = nn.ModuleList(
            [
                _layer_to_regular(spec, reg)
                for spec, reg in zip(self.layers, like.layers, strict=True)
            ]
        )
        return out.train(self.training)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
    ) -> Tensor:
        """Run every layer (arguments as :meth:`eSpectralDecoderLayer.forward`).

        The tokens enter the run layout once and leave it once (see :func:`to_runs`).
        """
        self._check_input(tgt, "tgt")
        self._check_input(memory, "memory")
        return decoder_stack_tokens(
            [_spectral_layer(layer) for layer in self.layers],
            tgt,
            memory,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            tgt_pos,
            memory_pos,
        )

    if TYPE_CHECKING:
        __call__ = forward


class eSpectralMLP(eModule):
    """:class:`eMLP` between regular copies, executed on spectral-basis features.

    Block-diagonal maps; each hidden layer goes to the regular basis (one ``|G| × |G|`` product
    per copy) around its pointwise activation and dropout.

    Args:
        mlp: The regular-basis MLP (on copies of the regular representation) to convert.

    Raises:
        ValueError: If a representation of ``mlp`` is not copies of the regular one.
    """

    def __init__(self, mlp: eMLP) -> None:
        layers = [layer for layer in mlp.layers if isinstance(layer, eLinear)]
        copies = [regular_multiplicity(layers[0].in_rep)]
        copies += [regular_multiplicity(layer.out_rep) for layer in layers]
        if any(c is None for c in copies) or len(layers) != len(mlp.layers):
            raise ValueError("eSpectralMLP expects an eMLP between copies of the regular rep.")
        group = mlp.in_rep.group
        c_in, c_out = copies[0], copies[-1]
        if c_in is None or c_out is None:  # an internal invariant
            raise RuntimeError("internal error: checked above")
        super().__init__(spectral_rep(group, c_in), spectral_rep(group, c_out))
        self.layers = nn.ModuleList([eSpectralLinear.from_regular(layer) for layer in layers])
        self.activation = mlp.activation
        self.activation_name = mlp.activation_name
        self.dropout = mlp.dropout.p
        self.register_exact_buffer("transform", regular_spectral_basis(group).transform)
        self.transform: Tensor
        self.train(mlp.training)

    def to_regular(self) -> eMLP:
        """The regular-basis MLP computing this module's function (new weights, same values)."""
        from ereps import direct_sum

        lins = [_spectral_linear(layer) for layer in self.layers]
        reg = self.in_rep.group.regular_representation
        n = lins[0].order
        with torch.random.fork_rng(devices=[]):
            out = eMLP(
                direct_sum([reg] * lins[0].c_in),
                direct_sum([reg] * lins[-1].c_out),
                hidden_units=[layer.c_out * n for layer in lins[:-1]],
                activation=self.activation_name or self.activation,
                bias=lins[0].bias_coeffs is not None,
                dropout=self.dropout,
                init_scheme=lins[0].init_scheme,
            )
        out.layers = nn.ModuleList([layer.to_regular() for layer in lins])
        return out.train(self.training)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to ``(..., c_in |G|)`` spectral features; ``(..., c_out |G|)`` out."""
        self._check_input(x)
        layers = [_spectral_linear(layer) for layer in self.layers]
        return mlp_tokens(
            x,
            list(layers),
            [layer.block_matrices() for layer in layers],
            order=layers[0].order,
            transform=self.transform,
            activation=self._activate,
            dropout_p=self.dropout,
            training=self.training,
        )

    def _activate(self, fresh: Tensor) -> Tensor:
        return apply_activation(self.activation, self.activation_name, fresh)

    def export(self) -> nn.Module:
        """A plain module: the regular twin's export between two changes of basis per copy."""
        from elayers._plain_spectral import Conjugated

        with torch.no_grad():
            plain = Conjugated(self.to_regular().export(), self.transform)
        return plain.train(self.training)

    def export_spectral(self) -> PlainSpectralMLP:
        """The spectral plain form: a :class:`PlainSpectralMLP` with this MLP's blocks."""
        with torch.no_grad():
            plain = PlainSpectralMLP(
                [_spectral_linear(layer).export_spectral() for layer in self.layers],
                plain_activation(self.activation, self.activation_name),
                self.dropout,
                self.transform,
            )
        return plain.train(self.training)

    if TYPE_CHECKING:
        __call__ = forward


def _spectral_linear(layer: nn.Module) -> eSpectralLinear:
    if not isinstance(layer, eSpectralLinear):  # an internal invariant
        raise RuntimeError("internal error: built from eSpectralLinear layers")
    return layer


def _spectral_layer(layer: nn.Module) -> eSpectralDecoderLayer:
    if not isinstance(layer, eSpectralDecoderLayer):  # an internal invariant
        raise RuntimeError("internal error: built from decoder layers")
    return layer


def _layer_to_regular(spec: nn.Module, reg: nn.Module) -> eTransformerDecoderLayer:
    if not isinstance(spec, eSpectralDecoderLayer) or not isinstance(
        reg, eTransformerDecoderLayer
    ):  # an internal invariant
        raise RuntimeError("internal error: stacks of decoder layers")
    return spec.to_regular(reg)


def spectral_macs_per_token(group: Group, copies_in: int, copies_out: int) -> tuple[int, int]:
    """Multiply-adds per token of an equivariant map: ``(spectral, dense)``.

    ``c_in c_out Σ_k d_k³/e_k`` and ``c_in c_out |G|²``.
    """
    basis = regular_spectral_basis(group)
    pair = copies_in * copies_out
    return pair * basis.macs_per_copy_pair(), pair * basis.order**2
