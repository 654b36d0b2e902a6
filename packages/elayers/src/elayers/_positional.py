"""Positions in attention, in plain torch: rotary embeddings, relative biases, masked attention.

Everything here acts on already-projected queries and keys ``(N, H, T, d)`` or on the attention
logits, and imports nothing but torch: the equivariant attention and its plain export share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTENTION_POS_ENCODINGS",
    "AttentionPosEncoding",
    "PositionalMultiheadAttention",
    "RelativePositionBias",
    "RotaryEmbedding",
    "attend",
    "check_pos_encoding",
    "check_positions",
    "merge_masks",
    "multihead_attention",
]

#: Positional encodings an attention module applies itself (``None``: none, as torch's).
AttentionPosEncoding = Literal["rope", "relative"]
ATTENTION_POS_ENCODINGS: tuple[str, ...] = get_args(AttentionPosEncoding)


def check_positions(pos: Tensor | None, name: str, batch: int, length: int) -> None:
    """Raise unless ``pos`` is ``None`` or an integer tensor of shape ``(L,)`` or ``(N, L)``.

    Args:
        pos: Positions of the tokens of a sequence.
        name: Argument name for the message.
        batch: Batch size ``N``.
        length: Sequence length ``L``.

    Raises:
        TypeError: If ``pos`` is not a tensor of an integer dtype.
        ValueError: If its shape is neither ``(L,)`` nor ``(N, L)``.
    """
    if pos is None:
        return
    if (
        not isinstance(pos, Tensor)
        or pos.is_floating_point()
        or pos.is_complex()
        or (pos.dtype == torch.bool)
    ):
        got = f"dtype {pos.dtype}" if isinstance(pos, Tensor) else type(pos).__name__
        raise TypeError(f"{name} must be an integer tensor of positions; got {got}.")
    # By rank first: comparing (N, L) with (L,) element-wise would guard N != L under export.
    if not (
        (pos.ndim == 1 and pos.shape[0] == length)
        or (pos.ndim == 2 and pos.shape[0] == batch and pos.shape[1] == length)
    ):
        raise ValueError(
            f"{name} must have shape (L,) = ({length},) or (N, L) = ({batch}, {length}); "
            f"got {tuple(pos.shape)}."
        )


class RotaryEmbedding(nn.Module):
    r"""Rotary position embedding (RoPE) of queries or keys, on pairs of blocks of coordinates.

    A head of ``d = c·b`` coordinates is read as ``c`` blocks of ``b`` coordinates (for the
    equivariant attention a block is one copy of the regular representation, ``b = |G|``; for plain
    attention ``b = 1``). With ``P = ⌊c/2⌋`` pairs, block ``i < P`` is paired with block ``i + P``,
    and coordinate ``a`` of both blocks is rotated by the angle ``p·θ_i`` of the token's position
    ``p``, ``θ_i = base^{-i/P}``:

    .. math::
        x'_{i,a} = x_{i,a}\cos p\theta_i - x_{i+P,a}\sin p\theta_i,\qquad
        x'_{i+P,a} = x_{i+P,a}\cos p\theta_i + x_{i,a}\sin p\theta_i.

    A last odd block is left as it is. Rotations compose, ``R_p^\top R_{p'} = R_{p'-p}``, so the
    logits ``⟨R_p q, R_{p'} k⟩ = ⟨q, R_{p'-p} k⟩`` depend on relative positions only. The rotation
    mixes blocks and acts identically on every coordinate ``a``, so it commutes with any
    permutation of the coordinates inside the blocks applied to all blocks alike, which is how a
    group acts on copies of its regular representation: ``R_p P_g = P_g R_p``.

    Args:
        head_dim: ``d``, a multiple of ``block``.
        block: ``b``, the number of coordinates moved together.
        base: ``base`` of the frequencies.

    Raises:
        ValueError: If ``block`` does not divide ``head_dim`` or a head has fewer than two blocks.
    """

    def __init__(self, head_dim: int, *, block: int = 1, base: float = 10000.0) -> None:
        super().__init__()
        if block < 1 or head_dim % block != 0:
            raise ValueError(
                f"RotaryEmbedding expects block to divide head_dim; got {block} and {head_dim}."
            )
        if head_dim // block < 2:
            raise ValueError(
                "RotaryEmbedding rotates pairs of blocks and needs at least two blocks (regular "
                f"copies) per head; got head_dim {head_dim} = {head_dim // block} x {block}. Use "
                "fewer heads."
            )
        if not base > 1.0:
            raise ValueError(f"RotaryEmbedding expects base > 1; got {base}.")
        self.head_dim = head_dim
        self.block = block
        self.base = float(base)
        self.num_pairs = head_dim // block // 2

    def tables(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cos`` and ``sin`` of the angles of ``positions``, shaped for :meth:`rotate`.

        Args:
            positions: ``(T,)`` or ``(N, T)`` integer positions.
            dtype: dtype of the tensors to rotate.

        Returns:
            ``(cos, sin)``: ``cos`` ``(T, d)`` or ``(N, 1, T, d)``, the cosine of each
            coordinate's angle (1 on a last odd block, which is not rotated); ``sin`` ``(T, P·b)``
            or ``(N, 1, T, P·b)``, the sine for the coordinates of one half. One entry per
            coordinate, so that :meth:`rotate` multiplies tensors whose last axes match (a
            size-``b`` broadcast there runs several times slower).
        """
        # Angles in float64 for float64 inputs, float32 otherwise (bf16 angles are too coarse).
        ct = torch.float64 if dtype == torch.float64 else torch.float32
        exponent = torch.arange(self.num_pairs, device=positions.device, dtype=ct)
        freq = torch.pow(self.base, -exponent / self.num_pairs)  # (P,)
        angles = positions.to(ct).unsqueeze(-1) * freq  # (..., T, P)
        if angles.ndim == 3:
            angles = angles.unsqueeze(1)  # (N, 1, T, P): one table for all heads
        shape = (*angles.shape, self.block)
        # (..., T, P·b): pair i's value on every coordinate of its block (a copy only for b > 1).
        cos = angles.cos().unsqueeze(-1).expand(shape).flatten(-2)
        sin = angles.sin().unsqueeze(-1).expand(shape).flatten(-2)
        parts = [cos, cos]
        tail = self.head_dim - 2 * self.num_pairs * self.block
        if tail:
            parts.append(cos.new_ones(*cos.shape[:-1], tail))
        return torch.cat(parts, dim=-1).to(dtype), sin.to(dtype)

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``x`` ``(N, H, T, d)`` with tables from :meth:`tables`.

        ``[x1, x2, rest] -> [x1 cos - x2 sin, x2 cos + x1 sin, rest]`` as ``x·cos`` (one pass,
        ``cos = 1`` on the rest) and two fused multiply-adds into its halves (half a pass each):
        no concatenation, no copy of swapped halves.
        """
        half = self.num_pairs * self.block
        x1, x2 = x[..., :half], x[..., half : 2 * half]
        out = x * cos
        out[..., :half].addcmul_(x2, sin, value=-1.0)
        out[..., half : 2 * half].addcmul_(x1, sin)
        return out

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` by the angles of ``positions``.

        Args:
            x: ``(N, H, T, d)`` queries or keys.
            positions: ``(T,)`` or ``(N, T)`` integer positions.

        Returns:
            Tensor of the shape of ``x``.
        """
        cos, sin = self.tables(positions, x.dtype)
        return self.rotate(x, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, block={self.block}, pairs={self.num_pairs}"

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class RelativePositionBias(nn.Module):
    r"""A learned bias per head and clipped relative offset, added to the attention logits.

    .. math::
        b_h(i, j) = w_{h,\, \mathrm{clip}(p_j - p_i,\, -K,\, K)}

    for query ``i`` at position ``p_i`` and key ``j`` at ``p_j``. The bias is a number per head: it
    is invariant under any group action on the features, so it keeps invariant logits invariant.

    Args:
        num_heads: ``H``.
        max_distance: ``K``; offsets beyond ``±K`` share the bias of ``±K``.

    Raises:
        ValueError: If a size is not a positive int.
    """

    def __init__(self, num_heads: int, max_distance: int) -> None:
        super().__init__()
        for arg, value in (("num_heads", num_heads), ("max_distance", max_distance)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"RelativePositionBias expects a positive int {arg}; got {value!r}."
                )
        self.num_heads = num_heads
        self.max_distance = max_distance
        self.weight = nn.Parameter(torch.empty(num_heads, 2 * max_distance + 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the biases from a normal distribution of std 0.02 (like positional tables)."""
        with torch.no_grad():
            nn.init.normal_(self.weight, mean=0.0, std=0.02)

    def forward(self, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        """The bias of every query/key pair.

        Args:
            query_pos: ``(L,)`` or ``(N, L)`` integer positions.
            key_pos: ``(S,)`` or ``(N, S)`` integer positions.

        Returns:
            ``(1, H, L, S)``, or ``(N, H, L, S)`` when a position tensor is batched.
        """
        offset = key_pos.unsqueeze(-2) - query_pos.unsqueeze(-1)  # (..., L, S)
        index = offset.clamp(-self.max_distance, self.max_distance) + self.max_distance
        bias = F.embedding(index, self.weight.t())  # (..., L, S, H)
        bias = bias.movedim(-1, -3)
        return bias if bias.ndim == 4 else bias.unsqueeze(0)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, max_distance={self.max_distance}"

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


def merge_masks(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    batch: int,
    heads: int,
    t_q: int,
    t_k: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """Merge torch.nn.MultiheadAttention-style masks into one additive mask (B|1, H|1, Tq, Tk)."""
    merged: Tensor | None = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
            mask = mask.masked_fill(attn_mask, float("-inf"))
        else:
            mask = attn_mask.to(dtype)
        if mask.ndim == 2:
            if tuple(mask.shape) != (t_q, t_k):
                raise ValueError(
                    f"attn_mask of shape (L, S) must be ({t_q}, {t_k}); got {tuple(mask.shape)}."
                )
            mask = mask.view(1, 1, t_q, t_k)
        elif mask.ndim == 3:
            if tuple(mask.shape) != (batch * heads, t_q, t_k):
                raise ValueError(
                    f"attn_mask of shape (N·num_heads, L, S) must be ({batch * heads}, {t_q}, "
                    f"{t_k}); "
                    f"got {tuple(mask.shape)}."
                )
            mask = mask.view(batch, heads, t_q, t_k)
        else:
            raise ValueError(f"attn_mask must be 2-D or 3-D; got shape {tuple(mask.shape)}.")
        merged = mask
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (batch, t_k):
            raise ValueError(
                f"key_padding_mask must have shape (N, S) = ({batch}, {t_k}); "
                f"got {tuple(key_padding_mask.shape)}."
            )
        if key_padding_mask.dtype == torch.bool:
            pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
            pad = pad.masked_fill(key_padding_mask, float("-inf"))
        else:
            pad = key_padding_mask.to(dtype)
        pad = pad.view(batch, 1, 1, t_k)
        merged = pad if merged is None else merged + pad
    return merged


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    need_weights: bool,
    rotary: RotaryEmbedding | None = None,
    relative_bias: RelativePositionBias | None = None,
    query_pos: Tensor | None = None,
    key_pos: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Scaled dot-product attention of projected heads, with positions and torch-style masks.

    The positional step acts on ``q`` and ``k`` (``rotary``) or on the logits (``relative_bias``);
    positions default to ``0, 1, ..., T-1``. Masks follow :class:`torch.nn.MultiheadAttention`
    (``True`` or ``-inf`` forbids). A query whose keys are all masked gets a zero output instead
    of torch's NaN, so padded rows stay finite and cannot poison later layers (a NaN value times a
    zero attention weight is still NaN).

    Args:
        q: ``(N, H, L, d)`` queries.
        k: ``(N, H, S, d)`` keys.
        v: ``(N, H, S, d_v)`` values.
        attn_mask: ``(L, S)`` or ``(N·H, L, S)``, bool or additive.
        key_padding_mask: ``(N, S)``, bool or additive.
        is_causal: Query ``i`` sees keys ``j <= i`` (when ``attn_mask`` is ``None``).
        dropout_p: Dropout probability on the attention weights (pass 0 in eval).
        need_weights: Whether to return the weights ``(N, H, L, S)``.
        rotary: Rotary embedding of ``q`` and ``k``.
        relative_bias: Relative-position bias of the logits.
        query_pos: ``(L,)`` or ``(N, L)`` integer positions of the queries.
        key_pos: ``(S,)`` or ``(N, S)`` integer positions of the keys.

    Returns:
        ``(out, weights)``: ``out`` ``(N, H, L, d_v)``; ``weights`` or ``None``.
    """
    n, h, t_q, d = q.shape
    t_k = k.shape[2]
    bias: Tensor | None = None
    if rotary is not None or relative_bias is not None:
        if key_pos is None and query_pos is None and t_q == t_k:
            query_pos = key_pos = torch.arange(t_q, device=q.device)
        if query_pos is None:
            query_pos = torch.arange(t_q, device=q.device)
        if key_pos is None:
            key_pos = torch.arange(t_k, device=q.device)
        if rotary is not None:
            q_cos, q_sin = rotary.tables(query_pos, q.dtype)
            # Self-attention passes one position tensor for both: one table.
            k_cos, k_sin = (
                (q_cos, q_sin) if key_pos is query_pos else rotary.tables(key_pos, k.dtype)
            )
            q = rotary.rotate(q, q_cos, q_sin)
            k = rotary.rotate(k, k_cos, k_sin)
        if relative_bias is not None:
            bias = relative_bias(query_pos, key_pos).to(q.dtype)
    if is_causal and attn_mask is None and (key_padding_mask is not None or bias is not None):
        # SDPA's is_causal cannot be combined with another mask: spell the causal part out.
        attn_mask = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).triu(1)
    mask = merge_masks(attn_mask, key_padding_mask, n, h, t_q, t_k, q.dtype)
    causal = is_causal and mask is None and bias is None
    dead: Tensor | None = None
    if mask is not None:
        # Rows with every key forbidden: attend to all keys (finite), then zero their output.
        dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
        mask = mask.masked_fill(dead, 0.0)
    if bias is not None:
        mask = bias if mask is None else mask + bias
    if need_weights:
        scores = (q @ k.transpose(-2, -1)) / (d**0.5)
        if causal:
            allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        elif mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-1)
        if dead is not None:
            probs = probs.masked_fill(dead, 0.0)
        out = F.dropout(probs, p=dropout_p, training=dropout_p > 0.0) @ v
        weights: Tensor | None = probs
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal
        )
        weights = None
        if dead is not None:
            out = out.masked_fill(dead, 0.0)
    return out, weights


def multihead_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor | None,
    out_proj: nn.Linear,
    num_heads: int,
    batch_first: bool,
    dropout_p: float,
    key_padding_mask: Tensor | None,
    need_weights: bool,
    attn_mask: Tensor | None,
    average_attn_weights: bool,
    is_causal: bool,
    rotary: RotaryEmbedding | None = None,
    relative_bias: RelativePositionBias | None = None,
    query_pos: Tensor | None = None,
    key_pos: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Multi-head attention with torch's parameter layout, through :func:`attend`.

    The forward of :class:`PositionalMultiheadAttention`, and of the plain
    ``elayers._plain.MultiheadAttention`` when a mask is given (so that a query whose keys are all
    masked gets the zero attention output, as in :class:`elayers.eMultiheadAttention`).

    Args:
        query: ``(N, L, E)`` if ``batch_first`` else ``(L, N, E)``.
        key: ``(N, S, E)`` (or ``(S, N, E)``).
        value: Same shape as ``key``.
        in_proj_weight: ``(3E, E)``, rows ``[W_q; W_k; W_v]``.
        in_proj_bias: ``(3E,)`` or ``None``.
        out_proj: The output projection ``E -> E``.
        num_heads: ``H``; heads are contiguous slices of ``E / H`` coordinates.
        batch_first: The layout of the inputs and the output.
        dropout_p: Dropout probability on the attention weights (0 in eval).
        key_padding_mask: ``(N, S)``, bool (``True`` = padding) or additive.
        need_weights: Whether to return the attention weights.
        attn_mask: ``(L, S)`` or ``(N·H, L, S)``, bool (``True`` forbids) or additive.
        average_attn_weights: Average the returned weights over heads.
        is_causal: Causal mask when ``attn_mask`` is ``None``.
        rotary: Rotary embedding of the projected queries and keys.
        relative_bias: Relative-position bias of the logits.
        query_pos: ``(L,)`` or ``(N, L)`` integer positions (default ``0..L-1``).
        key_pos: ``(S,)`` or ``(N, S)`` integer positions (default ``0..S-1``).

    Returns:
        ``(output, weights)`` as :class:`torch.nn.MultiheadAttention`: output of the query's
        shape; weights ``(N, L, S)`` (averaged) or ``(N, H, L, S)``, or ``None``.
    """
    # Which inputs are one tensor, before the transposes make new ones.
    self_attention, shared_kv = query is key and key is value, key is value
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    n, t_q, e = query.shape
    t_k = key.shape[1]
    h = num_heads
    d = e // h
    w, b = in_proj_weight, in_proj_bias
    if self_attention:
        # Self-attention: one matmul for q, k and v (as eMultiheadAttention and torch do).
        q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
    else:
        # Row slices of the fused weight are views: no copy per call.
        q = F.linear(query, w[:e], None if b is None else b[:e])
        if shared_kv:
            k, v = F.linear(key, w[e:], None if b is None else b[e:]).chunk(2, dim=-1)
        else:
            k = F.linear(key, w[e : 2 * e], None if b is None else b[e : 2 * e])
            v = F.linear(value, w[2 * e :], None if b is None else b[2 * e :])
    q = q.reshape(n, t_q, h, d).transpose(1, 2)
    k = k.reshape(n, t_k, h, d).transpose(1, 2)
    v = v.reshape(n, t_k, h, d).transpose(1, 2)
    out, weights = attend(
        q,
        k,
        v,
        attn_mask=attn_mask,
        key_padding_mask=key_padding_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        need_weights=need_weights,
        rotary=rotary,
        relative_bias=relative_bias,
        query_pos=query_pos,
        key_pos=key_pos,
    )
    out = out_proj(out.transpose(1, 2).reshape(n, t_q, e))
    if not batch_first:
        out = out.transpose(0, 1)
    if weights is not None and average_attn_weights:
        weights = weights.mean(dim=1)
    return out, weights


class PositionalMultiheadAttention(nn.Module):
    """Plain multi-head attention with rotary or relative positions (and torch's call).

    The parameters carry :class:`torch.nn.MultiheadAttention`'s names and shapes (``in_proj_weight``
    ``(3E, E)``, ``in_proj_bias`` ``(3E,)``, ``out_proj``), so weights move between the two, and
    between this module and the dense weights of an :class:`elayers.eMultiheadAttention` (its
    plain export when it has a positional encoding: pass ``rope_block = |G|``).

    Args:
        embed_dim: ``E``.
        num_heads: ``H``, dividing ``E``.
        dropout: Dropout probability on the attention weights.
        bias: Whether the projections have biases.
        batch_first: Whether inputs are ``(N, L, E)`` (else ``(L, N, E)``).
        pos_encoding: ``None``, ``"rope"`` or ``"relative"``.
        max_relative_distance: ``K`` of the relative bias.
        rope_base: Frequency base of the rotary embedding.
        rope_block: Coordinates rotated together (``|G|`` for an exported equivariant attention).

    Raises:
        ValueError: If ``num_heads`` does not divide ``embed_dim`` or an option is invalid.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        *,
        pos_encoding: AttentionPosEncoding | None = None,
        max_relative_distance: int = 32,
        rope_base: float = 10000.0,
        rope_block: int = 1,
    ) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(
                f"PositionalMultiheadAttention expects num_heads to divide embed_dim={embed_dim}; "
                f"got {num_heads}."
            )
        check_pos_encoding("PositionalMultiheadAttention", pos_encoding)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.pos_encoding = pos_encoding
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.rotary = (
            RotaryEmbedding(self.head_dim, block=rope_block, base=rope_base)
            if pos_encoding == "rope"
            else None
        )
        self.relative_bias = (
            RelativePositionBias(num_heads, max_relative_distance)
            if pos_encoding == "relative"
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections and zero biases, as :class:`torch.nn.MultiheadAttention`."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if self.relative_bias is not None:
            self.relative_bias.reset_parameters()

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        *,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``; arguments as :func:`attend` and torch's MHA.

        Args:
            query: ``(N, L, E)`` if ``batch_first`` else ``(L, N, E)``.
            key: ``(N, S, E)`` (or ``(S, N, E)``).
            value: Same shape as ``key``.
            key_padding_mask: ``(N, S)``; ``True`` marks padding.
            need_weights: Whether to return the attention weights.
            attn_mask: ``(L, S)`` or ``(N·H, L, S)``; ``True`` forbids.
            average_attn_weights: Average the returned weights over heads.
            is_causal: Causal mask when ``attn_mask`` is ``None``.
            query_pos: ``(L,)`` or ``(N, L)`` integer positions (default ``0..L-1``).
            key_pos: ``(S,)`` or ``(N, S)`` integer positions (default ``0..S-1``).

        Returns:
            ``(output, weights)`` as :class:`torch.nn.MultiheadAttention`.
        """
        batch, time = (0, 1) if self.batch_first else (1, 0)
        check_positions(query_pos, "query_pos", query.shape[batch], query.shape[time])
        check_positions(key_pos, "key_pos", key.shape[batch], key.shape[time])
        return multihead_attention(
            query,
            key,
            value,
            in_proj_weight=self.in_proj_weight,
            in_proj_bias=self.in_proj_bias,
            out_proj=self.out_proj,
            num_heads=self.num_heads,
            batch_first=self.batch_first,
            dropout_p=self.dropout if self.training else 0.0,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            rotary=self.rotary,
            relative_bias=self.relative_bias,
            query_pos=query_pos,
            key_pos=key_pos,
        )

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"pos_encoding={self.pos_encoding!r}"
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


def check_pos_encoding(owner: str, pos_encoding: object) -> None:
    """Raise ``ValueError`` unless ``pos_encoding`` is ``None``, ``"rope"`` or ``"relative"``."""
    if pos_encoding is not None and pos_encoding not in ATTENTION_POS_ENCODINGS:
        raise ValueError(
            f"{owner} expects pos_encoding to be None or one of {list(ATTENTION_POS_ENCODINGS)}; "
            f"got {pos_encoding!r}."
        )
