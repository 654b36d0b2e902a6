"""Plain (torch-only) modules of the spectral execution's exports.

This file imports nothing but torch and its torch-only siblings ``elayers._spectral_ops`` and
``elayers._positional`` at run time (a test checks it). Two forms:

* ``form="dense"`` (``export()``): :class:`Conjugated`/:class:`ConjugatedDecoder` move the
  regular twin's dense export into the spectral basis (two changes of basis per copy);
* ``form="spectral"`` (``export_spectral()``): :class:`PlainSpectralLinear`,
  :class:`PlainSpectralNorm`, :class:`PlainSpectralMultiheadAttention`,
  :class:`PlainSpectralDecoderLayer`, :class:`PlainSpectralDecoder` and
  :class:`PlainSpectralMLP` compute in the spectral basis with the source's synthesized blocks
  (batched block products, constant ``|G| × |G|`` transforms around pointwise activations),
  running the very functions of ``elayers._spectral_ops`` that the equivariant spectral modules
  run, so they agree with them to rounding.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from elayers._positional import RelativePositionBias, RotaryEmbedding
from elayers._spectral_ops import (
    AttentionRuns,
    DecoderLayerRuns,
    Run,
    decoder_stack_tokens,
    feedforward_runs,
    linear_tokens,
    mlp_tokens,
    norm_runs,
    norm_tokens,
    to_spectral_basis,
)

__all__ = [
    "ChangeOfBasis",
    "Conjugated",
    "ConjugatedDecoder",
    "PlainSpectralDecoder",
    "PlainSpectralDecoderLayer",
    "PlainSpectralLinear",
    "PlainSpectralMLP",
    "PlainSpectralMultiheadAttention",
    "PlainSpectralNorm",
    "ThenChangeOfBasis",
]


class Conjugated(nn.Module):
    """``x ↦ B^T f(B x)`` copy by copy: a plain module ``f`` moved into another basis.

    ``B`` (``(n, n)``, orthogonal) maps one copy's coordinates in this module's basis to the basis
    of ``f``; features ``(..., c·n)`` are ``c`` copies of ``n`` coordinates.

    Args:
        inner: The plain module, acting on ``(..., c·n)``.
        transform: ``B``, shape ``(n, n)``.
    """

    def __init__(self, inner: nn.Module, transform: Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("transform", transform.detach().clone())
        self.transform: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """Apply ``f`` in its basis; ``(..., c·n)`` in and out."""
        n = self.transform.shape[0]
        t = self.transform.to(x.dtype)
        shape = x.shape
        y = self.inner((x.reshape(-1, n) @ t.T).reshape(shape))
        out: Tensor = (y.reshape(-1, n) @ t).reshape(y.shape)
        return out

    if TYPE_CHECKING:
        __call__ = forward


def _change(x: Tensor, t: Tensor) -> Tensor:
    n = t.shape[0]
    out: Tensor = (x.reshape(-1, n) @ t.to(x.dtype)).reshape(x.shape)
    return out


class ConjugatedDecoder(nn.Module):
    """A plain decoder layer or stack moved into a per-copy orthogonal basis.

    ``tgt`` and ``memory`` ``(B, L, c·n)`` go to the inner module's basis (``x ↦ T x`` per copy),
    the inner module runs, and its output comes back (``y ↦ T^T y``).

    Args:
        inner: A plain decoder (``torch.nn.TransformerDecoder(Layer)`` or the positional ones).
        transform: ``T``, shape ``(n, n)``: its columns are this basis' vectors in the inner
            module's coordinates (``x_inner = T x`` per copy).
        positional: Whether ``inner`` takes ``tgt_pos``/``memory_pos``.
    """

    def __init__(self, inner: nn.Module, transform: Tensor, positional: bool) -> None:
        super().__init__()
        self.inner = inner
        self.positional = positional
        self.register_buffer("transform", transform.detach().clone())
        self.transform: Tensor

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
        """Run the inner decoder in its basis; arguments as the spectral decoder's."""
        t_inv = self.transform.T
        extra = {"tgt_pos": tgt_pos, "memory_pos": memory_pos} if self.positional else {}
        y = self.inner(
            _change(tgt, t_inv),
            _change(memory, t_inv),
            tgt_mask=None,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            **extra,
        )
        return _change(y, self.transform)

    if TYPE_CHECKING:
        __call__ = forward


def _check_features(owner: str, name: str, x: Tensor, size: int) -> None:
    """Raise unless ``x`` is a tensor of at least one axis whose last axis has ``size`` entries."""
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != size:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner} expects {name} of shape (..., {size}); got {got}.")


def _check_shape(owner: str, name: str, t: Tensor | None, shape: tuple[int, ...]) -> None:
    if t is not None and tuple(t.shape) != shape:
        raise ValueError(f"{owner} expects {name} of shape {shape}; got {tuple(t.shape)}.")


def _check_tokens(owner: str, name: str, x: Tensor, size: int) -> None:
    """Raise unless ``x`` is batch-first tokens ``(B, T, size)``."""
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != size:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner} expects {name} of shape (B, T, {size}); got {got}.")


def _tensor_clone(t: Tensor) -> Tensor:
    # Contiguous copies: a synthesized block can be a permuted view, and torch.export.save
    # warns about (and may mis-store) parameters that do not cover their storage.
    return t.detach().clone(memory_format=torch.contiguous_format)


class PlainSpectralLinear(nn.Module):
    r"""A block-diagonal linear map on spectral-basis copies, in plain torch.

    What :meth:`elayers.eSpectralLinear.export_spectral` returns: the synthesized blocks of the
    source map, one parameter per run of equal blocks (``block_<r>``, ``(count, f c_in,
    f c_out)``, the transposed ``M_k`` of ``y_k[b] = M_k x_k[b]``), applied by batched products
    (:func:`elayers._spectral_ops.apply_runs`); ``c_in c_out Σ_k d_k³/e_k`` multiply-adds per
    token instead of the dense ``c_in c_out |G|²``. The invariant bias ``β`` ``(c_out,)`` sits
    on the trivial coordinate of each output copy.

    Args:
        groups: The runs of equal blocks, ``(offset, count, rows, multiplicity, endo_dim)``.
        c_in: Input copies.
        c_out: Output copies.
        order: ``|G|``.
        blocks: Per run ``(count, f c_in, f c_out)`` (copied into parameters).
        bias: ``(c_out,)`` or ``None`` (copied).
    """

    def __init__(
        self,
        groups: list[Run],
        c_in: int,
        c_out: int,
        order: int,
        blocks: list[Tensor],
        bias: Tensor | None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if len(blocks) != len(groups):
            raise ValueError(
                f"{owner} expects one block tensor per run ({len(groups)}); got {len(blocks)}."
            )
        for i, ((_off, count, _rows, m, e), block) in enumerate(zip(groups, blocks, strict=True)):
            _check_shape(owner, f"blocks[{i}]", block, (count, m * e * c_in, m * e * c_out))
        _check_shape(owner, "bias", bias, (c_out,))
        self.groups: list[Run] = list(groups)
        self.c_in, self.c_out, self.order = c_in, c_out, order
        for i, block in enumerate(blocks):
            self.register_parameter(f"block_{i}", nn.Parameter(_tensor_clone(block)))
        self.bias_coeffs = None if bias is None else nn.Parameter(_tensor_clone(bias))

    def block_matrices(self) -> list[Tensor]:
        """The blocks per run, ``(count, f c_in, f c_out)``."""
        return [getattr(self, f"block_{i}") for i in range(len(self.groups))]

    def forward(self, x: Tensor) -> Tensor:
        """``(..., c_in |G|)`` spectral features to ``(..., c_out |G|)``.

        Raises:
            ValueError: If the last axis of ``x`` is not ``c_in |G|``.
        """
        _check_features(type(self).__name__, "x", x, self.c_in * self.order)
        return linear_tokens(self, x, self.block_matrices(), self.order)

    def extra_repr(self) -> str:
        return f"{self.c_in} -> {self.c_out} copies of order {self.order}, {len(self.groups)} runs"

    if TYPE_CHECKING:
        __call__ = forward


class PlainSpectralNorm(nn.Module):
    r"""RMS or layer norm of spectral-basis copies, in plain torch.

    What :meth:`elayers.eSpectralNorm.export_spectral` returns (see
    :func:`elayers._spectral_ops.norm_tokens`): the statistics over all ``c|G|`` coordinates
    (basis-free), layer norm's centring on the trivial coordinates, a scale per copy and
    ``√|G| β_i`` on the trivial coordinate of copy ``i``.

    Args:
        kind: ``"rms"`` or ``"layer"``.
        eps: Added to the mean square.
        copies: ``c``.
        order: ``|G|``.
        trivial_index: The trivial coordinate inside a copy.
        scale: ``(c,)`` (copied).
        bias: ``(c,)`` or ``None`` (copied).
    """

    def __init__(
        self,
        kind: str,
        eps: float,
        copies: int,
        order: int,
        trivial_index: int,
        scale: Tensor,
        bias: Tensor | None,
    ) -> None:
        super().__init__()
        if kind not in ("rms", "layer"):
            raise ValueError(f"PlainSpectralNorm expects kind 'rms' or 'layer'; got {kind!r}.")
        _check_shape("PlainSpectralNorm", "scale", scale, (copies,))
        _check_shape("PlainSpectralNorm", "bias", bias, (copies,))
        self.kind, self.eps = kind, float(eps)
        self.copies, self.order, self.trivial_index = copies, order, trivial_index
        self.copy_scale = nn.Parameter(_tensor_clone(scale))
        self.copy_bias = None if bias is None else nn.Parameter(_tensor_clone(bias))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``(..., c|G|)`` spectral features; same shape out.

        Raises:
            ValueError: If the last axis of ``x`` is not ``c |G|``.
        """
        _check_features(type(self).__name__, "x", x, self.copies * self.order)
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
        """The norm on run-layout features (:func:`elayers._spectral_ops.norm_runs`)."""
        return norm_runs(
            parts,
            kind=self.kind,
            eps=self.eps,
            copies=self.copies,
            order=self.order,
            scale=self.copy_scale,
            bias=self.copy_bias,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, copies={self.copies}, order={self.order}, eps={self.eps}"

    if TYPE_CHECKING:
        __call__ = forward


class PlainSpectralMultiheadAttention(AttentionRuns, nn.Module):
    """Multi-head attention on spectral-basis copies, in plain torch (batch first).

    What :meth:`elayers.eSpectralMultiheadAttention.export_spectral` returns: block-diagonal
    projections (:class:`PlainSpectralLinear`, the packed ``q, k, v`` one ``c -> 3c`` copies),
    heads of whole copies, torch's scaled dot-product attention with the masks and positions of
    :func:`elayers._positional.attend` (see :func:`elayers._spectral_ops.attention_runs`).

    Args:
        in_proj: The packed projection.
        out_proj: The output projection.
        num_heads: ``H``.
        dropout: Dropout probability of the attention weights (training only).
        rotary: Rotary embedding (copied), or ``None``.
        relative_bias: Relative-position bias (copied), or ``None``.
    """

    def __init__(
        self,
        in_proj: PlainSpectralLinear,
        out_proj: PlainSpectralLinear,
        num_heads: int,
        dropout: float,
        rotary: RotaryEmbedding | None,
        relative_bias: RelativePositionBias | None,
    ) -> None:
        super().__init__()
        self.in_proj, self.out_proj = in_proj, out_proj
        self.num_heads, self.dropout = num_heads, dropout
        self.copies, self.order = in_proj.c_in, in_proj.order
        self.rotary = copy.deepcopy(rotary)
        self.relative_bias = copy.deepcopy(relative_bias)

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

        Masks (``True`` or ``-inf`` forbids) and positions as
        :class:`elayers.eSpectralMultiheadAttention`: ``key_padding_mask`` ``(B, S)``,
        ``attn_mask`` ``(L, S)`` or ``(B·H, L, S)``, integer positions ``(L,)``/``(B, L)``.

        Raises:
            ValueError: If ``query`` or ``key`` is not ``(B, T, c |G|)``.
        """
        for name, t in (("query", query), ("key", key)):
            _check_tokens(type(self).__name__, name, t, self.copies * self.order)
        return self.attend_tokens(
            query, key, key_padding_mask, attn_mask, is_causal, query_pos, key_pos
        )

    if TYPE_CHECKING:
        __call__ = forward


class PlainSpectralDecoderLayer(DecoderLayerRuns, nn.Module):
    """A transformer decoder layer on spectral-basis copies, in plain torch (batch first).

    What :meth:`elayers.eSpectralDecoderLayer.export_spectral` returns: self- and
    cross-attention (:class:`PlainSpectralMultiheadAttention`), the feed-forward block of two
    :class:`PlainSpectralLinear` maps with its activation in the regular basis (one constant
    ``|G| × |G|`` product per copy on each side, ``T`` a buffer), three
    :class:`PlainSpectralNorm`; see :func:`elayers._spectral_ops.decoder_layer_runs`. In training
    mode residual dropout drops whole copies, as the source.

    Args:
        self_attn: Self-attention.
        multihead_attn: Cross-attention.
        linear1: Feed-forward ``c -> c_hidden``.
        linear2: Feed-forward ``c_hidden -> c``.
        norms: ``(norm1, norm2, norm3)``.
        activation: The pointwise activation (a module).
        ff_dropout: Dropout of the hidden features.
        p_residual: Residual dropout of the three blocks.
        norm_first: Pre-norm (else post-norm).
        transform: ``T`` ``(|G|, |G|)``: spectral basis vectors in regular coordinates.
    """

    def __init__(
        self,
        self_attn: PlainSpectralMultiheadAttention,
        multihead_attn: PlainSpectralMultiheadAttention,
        linear1: PlainSpectralLinear,
        linear2: PlainSpectralLinear,
        norms: tuple[PlainSpectralNorm, PlainSpectralNorm, PlainSpectralNorm],
        activation: nn.Module,
        ff_dropout: float,
        p_residual: tuple[float, float, float],
        norm_first: bool,
        transform: Tensor,
    ) -> None:
        super().__init__()
        self.self_attn, self.multihead_attn = self_attn, multihead_attn
        self.linear1, self.linear2 = linear1, linear2
        self.norm1, self.norm2, self.norm3 = norms
        self.activation = activation
        self.ff_dropout, self.p_residual, self.norm_first = ff_dropout, p_residual, norm_first
        self.copies, self.order = linear1.c_in, linear1.order
        self.register_buffer("transform", _tensor_clone(transform))
        self.transform: Tensor

    def _ff_runs(self, x: list[Tensor]) -> list[Tensor]:
        return feedforward_runs(
            x,
            self.linear1,
            self.linear1.block_matrices(),
            self.linear2,
            self.linear2.block_matrices(),
            order=self.order,
            transform=self.transform,
            activation=self.activation,
            dropout_p=self.ff_dropout,
            training=self.training,
        )

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
        *,
        tgt_mask: Tensor | None = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Run the layer on spectral tokens ``tgt`` ``(B, T, E)`` and ``memory`` ``(B, S, E)``.

        The positional arguments are those of :class:`elayers.eSpectralDecoderLayer`; the
        keyword-only ``tgt_mask`` (``(T, T)`` or ``(B·H, T, T)``, ``True`` or ``-inf`` forbids,
        merged with ``tgt_key_padding_mask``; ``tgt_is_causal`` then only as a hint, as in torch)
        and ``memory_is_causal`` (must be ``False``) accept the call of ``torch.nn``'s decoders.

        Raises:
            ValueError: If ``memory_is_causal`` is ``True`` or a token tensor is not
                ``(B, T, c |G|)``.
        """
        return _decoder_forward(
            [self],
            tgt,
            memory,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            tgt_pos,
            memory_pos,
            tgt_mask,
            memory_is_causal,
        )

    if TYPE_CHECKING:
        __call__ = forward


def _decoder_forward(
    layers: list[PlainSpectralDecoderLayer],
    tgt: Tensor,
    memory: Tensor,
    memory_mask: Tensor | None,
    tgt_key_padding_mask: Tensor | None,
    memory_key_padding_mask: Tensor | None,
    tgt_is_causal: bool,
    tgt_pos: Tensor | None,
    memory_pos: Tensor | None,
    tgt_mask: Tensor | None,
    memory_is_causal: bool,
) -> Tensor:
    size = layers[0].copies * layers[0].order
    _check_tokens("PlainSpectralDecoder", "tgt", tgt, size)
    _check_tokens("PlainSpectralDecoder", "memory", memory, size)
    if memory_is_causal:
        raise ValueError(
            "The spectral plain decoder masks the memory with memory_mask only; got "
            "memory_is_causal=True (pass memory_mask instead)."
        )
    return decoder_stack_tokens(
        list(layers),
        tgt,
        memory,
        memory_mask,
        tgt_key_padding_mask,
        memory_key_padding_mask,
        tgt_is_causal,
        tgt_pos,
        memory_pos,
        tgt_mask,
    )


class PlainSpectralDecoder(nn.Module):
    """A stack of :class:`PlainSpectralDecoderLayer` (no final norm), in plain torch.

    What :meth:`elayers.eSpectralDecoder.export_spectral` returns. The tokens enter the run layout
    once and leave it once; arguments as :meth:`PlainSpectralDecoderLayer.forward`.

    Args:
        layers: The layers.
    """

    def __init__(self, layers: list[PlainSpectralDecoderLayer]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("PlainSpectralDecoder expects at least one layer; got none.")
        self.layers = nn.ModuleList(layers)

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
        *,
        tgt_mask: Tensor | None = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Run every layer on ``tgt`` ``(B, T, E)`` and ``memory`` ``(B, S, E)``; ``(B, T, E)``.

        Raises:
            ValueError: If ``memory_is_causal`` is ``True`` or a token tensor is not
                ``(B, T, c |G|)``.
        """
        layers = [_plain_layer(layer) for layer in self.layers]
        return _decoder_forward(
            layers,
            tgt,
            memory,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            tgt_pos,
            memory_pos,
            tgt_mask,
            memory_is_causal,
        )

    if TYPE_CHECKING:
        __call__ = forward


def _plain_layer(layer: nn.Module) -> PlainSpectralDecoderLayer:
    if not isinstance(layer, PlainSpectralDecoderLayer):  # an internal invariant
        raise RuntimeError("internal error: PlainSpectralDecoder holds spectral decoder layers")
    return layer


class PlainSpectralMLP(nn.Module):
    """An MLP of block-diagonal maps on spectral-basis copies, in plain torch.

    What :meth:`elayers.eSpectralMLP.export_spectral` returns: :class:`PlainSpectralLinear`
    layers, each hidden one followed by ``T`` (per copy) to the regular basis, the pointwise
    activation and dropout, and ``T^T`` back (:func:`elayers._spectral_ops.mlp_tokens`).

    Args:
        layers: The maps.
        activation: The pointwise activation (a module).
        dropout: Dropout of the hidden features.
        transform: ``T`` ``(|G|, |G|)``.
    """

    def __init__(
        self,
        layers: list[PlainSpectralLinear],
        activation: nn.Module,
        dropout: float,
        transform: Tensor,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("PlainSpectralMLP expects at least one layer; got none.")
        self.layers = nn.ModuleList(layers)
        self.activation = activation
        self.dropout = dropout
        self.register_buffer("transform", _tensor_clone(transform))
        self.transform: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """``(..., c_in |G|)`` spectral features to ``(..., c_out |G|)``.

        Raises:
            ValueError: If the last axis of ``x`` is not ``c_in |G|``.
        """
        layers = [_plain_linear(layer) for layer in self.layers]
        _check_features(type(self).__name__, "x", x, layers[0].c_in * layers[0].order)
        return mlp_tokens(
            x,
            list(layers),
            [layer.block_matrices() for layer in layers],
            order=layers[0].order,
            transform=self.transform,
            activation=self.activation,
            dropout_p=self.dropout,
            training=self.training,
        )

    if TYPE_CHECKING:
        __call__ = forward


def _plain_linear(layer: nn.Module) -> PlainSpectralLinear:
    if not isinstance(layer, PlainSpectralLinear):  # an internal invariant
        raise RuntimeError("internal error: PlainSpectralMLP holds PlainSpectralLinear layers")
    return layer


class ChangeOfBasis(nn.Module):
    """``x ↦ B^T x`` copy by copy (``(..., c·n)``): to the basis whose vectors are ``B``'s columns.

    With ``B = T`` it maps regular coordinates to spectral ones
    (:func:`elayers._spectral_ops.to_spectral_basis`).

    Args:
        transform: ``B`` ``(n, n)``, orthogonal.
    """

    def __init__(self, transform: Tensor) -> None:
        super().__init__()
        self.register_buffer("transform", _tensor_clone(transform))
        self.transform: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """``(..., c·n)`` in and out."""
        return to_spectral_basis(x, self.transform)

    if TYPE_CHECKING:
        __call__ = forward


class ThenChangeOfBasis(nn.Module):
    """``inner(*args, **kwargs)`` followed by ``y ↦ B^T y`` copy by copy.

    For an encoder that computes in the regular basis inside a model whose tokens are spectral
    afterwards (the conditioning transformer of a spectral regressor).

    Args:
        inner: Any module returning ``(..., c·n)``.
        transform: ``B`` ``(n, n)``.
    """

    def __init__(self, inner: nn.Module, transform: Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("transform", _tensor_clone(transform))
        self.transform: Tensor

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Run ``inner`` and change the basis of its output."""
        return to_spectral_basis(self.inner(*args, **kwargs), self.transform)
