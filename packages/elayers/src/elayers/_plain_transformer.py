"""Plain transformer layers with rotary or relative positions (torch only).

Twins of :class:`torch.nn.TransformerEncoderLayer`/``DecoderLayer`` (same submodule names and
parameter shapes) whose attentions are :class:`PositionalMultiheadAttention` and whose ``forward``
takes token positions. The baseline regressor uses them for ``"rope"``/``"relative"``, and they
are what an exported equivariant layer with a ``pos_encoding`` becomes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from elayers._positional import AttentionPosEncoding, PositionalMultiheadAttention

__all__ = [
    "PositionalTransformerDecoder",
    "PositionalTransformerDecoderLayer",
    "PositionalTransformerEncoder",
    "PositionalTransformerEncoderLayer",
    "attention_sublayer",
    "run_stack",
]

PlainActivation = Literal["relu", "gelu"]


def _act(name: PlainActivation | Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    if callable(name):  # any other pointwise map (an exported equivariant layer's activation)
        return name(x)
    return F.gelu(x) if name == "gelu" else F.relu(x)


def attention_sublayer(
    attn: Callable[..., tuple[Tensor, Tensor | None]],
    dropout: nn.Module,
    x: Tensor,
    memory: Tensor,
    mask: Tensor | None,
    padding: Tensor | None,
    is_causal: bool,
    query_pos: Tensor | None,
    key_pos: Tensor | None,
) -> Tensor:
    """``dropout(attn(x, memory, memory))``: the attention sub-layer of every transformer layer.

    Self-attention passes ``memory = x`` and ``key_pos = query_pos``. ``attn`` is any attention
    with torch's arguments plus ``query_pos``/``key_pos`` (:class:`PositionalMultiheadAttention`,
    ``elayers.eMultiheadAttention``); attention weights are not computed.
    """
    out, _ = attn(
        x,
        memory,
        memory,
        attn_mask=mask,
        key_padding_mask=padding,
        need_weights=False,
        is_causal=is_causal,
        query_pos=query_pos,
        key_pos=key_pos,
    )
    dropped: Tensor = dropout(out)
    return dropped


def run_stack(layers: nn.ModuleList, norm: nn.Module | None, x: Tensor, **kwargs: Any) -> Tensor:
    """Every layer of a stack in turn (each called with ``kwargs``), then the final norm."""
    for layer in layers:
        x = layer(x, **kwargs)
    if norm is not None:
        normed: Tensor = norm(x)
        return normed
    return x


class _Block(nn.Module):
    """Shared constructor parts: the feed-forward block and the options."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        activation: PlainActivation | Callable[[Tensor], Tensor],
        layer_norm_eps: float,
        norm_first: bool,
        bias: bool,
    ) -> None:
        super().__init__()
        if not callable(activation) and activation not in ("relu", "gelu"):
            raise ValueError(
                f"activation must be 'relu', 'gelu' or a callable; got {activation!r}."
            )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.activation = activation

    def _ff_block(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear2(self.dropout(_act(self.activation, self.linear1(x))))
        return out


class PositionalTransformerEncoderLayer(_Block):
    """:class:`torch.nn.TransformerEncoderLayer` with positions in its self-attention.

    Args:
        d_model: Width ``E``.
        nhead: Number of heads.
        dim_feedforward: Width of the feed-forward block.
        dropout: Dropout probability.
        activation: ``"relu"``, ``"gelu"`` or a pointwise callable.
        layer_norm_eps: ``eps`` of the norms.
        batch_first: Whether inputs are ``(N, S, E)``.
        norm_first: Pre-norm (``True``) or post-norm.
        bias: Whether linear maps and norms have biases.
        pos_encoding: ``None``, ``"rope"`` or ``"relative"``.
        max_relative_distance: ``K`` of ``"relative"``.
        rope_base: Frequency base of ``"rope"``.
        rope_block: Coordinates rotated together (``|G|`` for an exported equivariant layer).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: PlainActivation | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        *,
        pos_encoding: AttentionPosEncoding | None = None,
        max_relative_distance: int = 32,
        rope_base: float = 10000.0,
        rope_block: int = 1,
    ) -> None:
        super().__init__(
            d_model, dim_feedforward, dropout, activation, layer_norm_eps, norm_first, bias
        )
        self.self_attn = PositionalMultiheadAttention(
            d_model,
            nhead,
            dropout=dropout,
            bias=bias,
            batch_first=batch_first,
            pos_encoding=pos_encoding,
            max_relative_distance=max_relative_distance,
            rope_base=rope_base,
            rope_block=rope_block,
        )

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        *,
        src_pos: Tensor | None = None,
    ) -> Tensor:
        """Run the layer (arguments as torch's, plus ``src_pos``: ``(S,)`` or ``(N, S)``)."""
        mask, pad = src_mask, src_key_padding_mask

        def sa(x: Tensor) -> Tensor:
            return attention_sublayer(
                self.self_attn, self.dropout1, x, x, mask, pad, is_causal, src_pos, src_pos
            )

        x: Tensor = src
        if self.norm_first:
            x = x + sa(self.norm1(x))
            x = x + self.dropout2(self._ff_block(self.norm2(x)))
        else:
            x = self.norm1(x + sa(x))
            x = self.norm2(x + self.dropout2(self._ff_block(x)))
        return x

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class PositionalTransformerDecoderLayer(_Block):
    """:class:`torch.nn.TransformerDecoderLayer` with positions in both attentions.

    Queries and keys share one time frame: self-attention sees ``tgt_pos`` against itself,
    cross-attention ``memory_pos - tgt_pos``.

    Args:
        d_model: Width ``E``.
        nhead: Number of heads.
        dim_feedforward: Width of the feed-forward block.
        dropout: Dropout probability.
        activation: ``"relu"``, ``"gelu"`` or a pointwise callable.
        layer_norm_eps: ``eps`` of the norms.
        batch_first: Whether inputs are ``(N, T, E)``.
        norm_first: Pre-norm (``True``) or post-norm.
        bias: Whether linear maps and norms have biases.
        pos_encoding: ``None``, ``"rope"`` or ``"relative"``.
        max_relative_distance: ``K`` of ``"relative"``.
        rope_base: Frequency base of ``"rope"``.
        rope_block: Coordinates rotated together (``|G|`` for an exported equivariant layer).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: PlainActivation | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        *,
        pos_encoding: AttentionPosEncoding | None = None,
        max_relative_distance: int = 32,
        rope_base: float = 10000.0,
        rope_block: int = 1,
    ) -> None:
        super().__init__(
            d_model, dim_feedforward, dropout, activation, layer_norm_eps, norm_first, bias
        )
        attn = PositionalMultiheadAttention(
            d_model,
            nhead,
            dropout=dropout,
            bias=bias,
            batch_first=batch_first,
            pos_encoding=pos_encoding,
            max_relative_distance=max_relative_distance,
            rope_base=rope_base,
            rope_block=rope_block,
        )
        self.self_attn = attn
        self.multihead_attn = copy.deepcopy(attn)
        self.multihead_attn.reset_parameters()
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
        *,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
    ) -> Tensor:
        """Run the layer (arguments as torch's, plus positions ``(T,)``/``(N, T)``, ``(S,)``...)."""

        def sa(x: Tensor) -> Tensor:
            return attention_sublayer(
                self.self_attn,
                self.dropout1,
                x,
                x,
                tgt_mask,
                tgt_key_padding_mask,
                tgt_is_causal,
                tgt_pos,
                tgt_pos,
            )

        def mha(x: Tensor) -> Tensor:
            return attention_sublayer(
                self.multihead_attn,
                self.dropout2,
                x,
                memory,
                memory_mask,
                memory_key_padding_mask,
                memory_is_causal,
                tgt_pos,
                memory_pos,
            )

        x: Tensor = tgt
        if self.norm_first:
            x = x + sa(self.norm1(x))
            x = x + mha(self.norm2(x))
            x = x + self.dropout3(self._ff_block(self.norm3(x)))
        else:
            x = self.norm1(x + sa(x))
            x = self.norm2(x + mha(x))
            x = self.norm3(x + self.dropout3(self._ff_block(x)))
        return x

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class _Stack(nn.Module):
    """A stack of ``num_layers`` deep copies of one layer (like torch's) and an optional norm."""

    num_layers: int

    def __init__(self, layer: nn.Module, num_layers: int, norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers  # as torch's stacks
        self.norm = norm


class PositionalTransformerEncoder(_Stack):
    """A stack of ``num_layers`` copies of a :class:`PositionalTransformerEncoderLayer`.

    Args:
        encoder_layer: The layer to replicate (deep copies, like torch's stacks).
        num_layers: Depth.
        norm: Optional final norm.
    """

    def __init__(
        self,
        encoder_layer: PositionalTransformerEncoderLayer,
        num_layers: int,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__(encoder_layer, num_layers, norm)

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        *,
        src_pos: Tensor | None = None,
    ) -> Tensor:
        """Run every layer, then the final norm."""
        return run_stack(
            self.layers,
            self.norm,
            src,
            src_mask=mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=is_causal,
            src_pos=src_pos,
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class PositionalTransformerDecoder(_Stack):
    """A stack of ``num_layers`` copies of a :class:`PositionalTransformerDecoderLayer`.

    Args:
        decoder_layer: The layer to replicate (deep copies, like torch's stacks).
        num_layers: Depth.
        norm: Optional final norm.
    """

    def __init__(
        self,
        decoder_layer: PositionalTransformerDecoderLayer,
        num_layers: int,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__(decoder_layer, num_layers, norm)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
        *,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
    ) -> Tensor:
        """Run every layer, then the final norm."""
        return run_stack(
            self.layers,
            self.norm,
            tgt,
            memory=memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
            tgt_pos=tgt_pos,
            memory_pos=memory_pos,
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
