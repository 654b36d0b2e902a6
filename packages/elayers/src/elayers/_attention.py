"""Equivariant multi-head attention."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from elayers._linear import eLinear
from elayers._module import eModule
from elayers._positional import (
    AttentionPosEncoding,
    RelativePositionBias,
    RotaryEmbedding,
    attend,
    check_pos_encoding,
    check_positions,
)
from ereps import InitScheme, Representation, direct_sum, regular_multiplicity
from ereps._hom_basis import check_init_scheme
from ereps._validation import check_representation

__all__ = ["eMultiheadAttention", "valid_head_counts"]


def valid_head_counts(copies: int) -> list[int]:
    """Head counts that split ``copies`` regular copies into equal groups of whole copies."""
    return [h for h in range(1, copies + 1) if copies % h == 0]


def check_regular_copies(rep: Representation, who: str) -> int:
    """Return the number of regular copies of ``rep`` or raise ``ValueError``."""
    check_representation(rep, "in_rep")
    copies = regular_multiplicity(rep)
    if copies is None:
        order = rep.group.order()
        raise ValueError(
            f"{who} expects in_rep to be copies of the regular representation of {rep.group.name} "
            f"(size a multiple of |G| = {order}, e.g. ereps.direct_sum([G.regular_representation] "
            "* c)); "
            f"got {rep.name!r} of size {rep.size}. Embed other representations first with eLinear."
        )
    return copies


class eMultiheadAttention(eModule):
    r"""Equivariant multi-head attention over tokens on copies of the regular representation.

    Queries, keys and values are group convolutions :math:`W_q, W_k, W_v \in \mathrm{Hom}_G` of the
    tokens, and every head takes whole regular copies. The representation of each head is then a
    permutation :math:`P_g`, so the scores are invariant,

    .. math::
        \langle P_g W_q x_i, P_g W_k x_j \rangle = \langle W_q x_i, W_k x_j \rangle,

    the values transform by :math:`P_g`, and the output projection is equivariant:
    ``MHA(ρ(g)Q, ρ(g)K, ρ(g)V) = ρ(g) MHA(Q, K, V)``. The call follows
    :class:`torch.nn.MultiheadAttention` (masks with ``True`` = not allowed, or additive floats),
    except that a query whose keys are all masked gets a zero attention output (torch: NaN).

    *Positions* (``pos_encoding``; token positions ``query_pos``/``key_pos`` default to
    ``0..T-1``):

    - ``"rope"``: rotary embeddings of the projected queries and keys that commute with the
      action. A head holds ``c_h`` regular copies, i.e. ``q = (q_{i,a})`` with copy ``i`` and group
      coordinate ``a``, and ``P_g`` permutes ``a`` the same way in every copy. RoPE rotates *pairs
      of copies*: ``(q_{i,a}, q_{i+P,a})``, ``P = ⌊c_h/2⌋``, by the angle ``p·θ_i`` of the token's
      position ``p`` (:class:`RotaryEmbedding` with ``block = |G|``). The rotation mixes copies and
      ``P_g`` permutes inside them, so ``R_p P_g = P_g R_p`` and
      ``⟨R_p P_g q, R_{p'} P_g k⟩ = ⟨R_p q, R_{p'} k⟩ = ⟨q, R_{p'-p} k⟩``: logits stay invariant
      and depend on relative positions only. Needs ``c_h >= 2``; an odd last copy is not rotated.
    - ``"relative"``: a learned bias per head and clipped relative offset ``clip(p_j - p_i, ±K)``
      added to the logits (:class:`RelativePositionBias`); a number per head, hence invariant.

    Args:
        in_rep: ``c`` copies of the regular representation (the embedding).
        num_heads: Number of heads; must divide ``c``.
        dropout: Dropout probability on the attention weights.
        bias: Whether the projections have invariant biases.
        batch_first: Whether inputs are ``(N, L, E)`` (else ``(L, N, E)``).
        init_scheme: Initialization scheme of the projections.
        pos_encoding: ``None`` (no positions, as torch), ``"rope"`` or ``"relative"``.
        max_relative_distance: ``K``, the clipping distance of ``"relative"``.
        rope_base: Frequency base of ``"rope"`` (``θ_i = base^{-i/P}``).

    Raises:
        ValueError: If ``in_rep`` is not copies of the regular representation, ``num_heads`` does
            not divide the number of copies (the message lists the valid head counts), or
            ``pos_encoding`` is unknown (``"rope"`` also needs two copies per head).
    """

    def __init__(
        self,
        in_rep: Representation,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        *,
        init_scheme: InitScheme = "xavier_normal",
        pos_encoding: AttentionPosEncoding | None = None,
        max_relative_distance: int = 32,
        rope_base: float = 10000.0,
    ) -> None:
        copies = check_regular_copies(in_rep, "eMultiheadAttention")
        check_init_scheme(init_scheme)
        check_pos_encoding("eMultiheadAttention", pos_encoding)
        if not isinstance(num_heads, int) or num_heads <= 0 or copies % num_heads != 0:
            raise ValueError(
                f"eMultiheadAttention: num_heads must divide the {copies} regular copies of in_rep "
                f"so that every head takes whole copies; got {num_heads}. Valid head counts: "
                f"{valid_head_counts(copies)}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"eMultiheadAttention expects 0 <= dropout < 1; got {dropout}.")
        if pos_encoding == "rope" and copies // num_heads < 2:
            raise ValueError(
                f"eMultiheadAttention with pos_encoding='rope' rotates pairs of regular copies and "
                f"needs at least 2 copies per head; got {copies} copies and {num_heads} heads. "
                f"Valid head counts: {[h for h in valid_head_counts(copies) if copies // h >= 2]}."
            )
        super().__init__(in_rep, in_rep)
        self.num_heads = num_heads
        self.embed_dim = in_rep.size
        self.head_dim = in_rep.size // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self._qkv_same_embed_dim = True
        group = in_rep.group
        qkv_rep = direct_sum([group.regular_representation] * (3 * copies))
        # One fused projection for q, k and v (one gather, one matmul), like torch's in_proj.
        self.in_proj = eLinear(in_rep, qkv_rep, bias=bias, init_scheme=init_scheme)
        self.out_proj = eLinear(in_rep, in_rep, bias=bias, init_scheme=init_scheme)
        self.pos_encoding = pos_encoding
        # Plain-torch positional steps (on projected q/k, or on the logits): export keeps them.
        self.rotary = (
            RotaryEmbedding(self.head_dim, block=in_rep.size // copies, base=rope_base)
            if pos_encoding == "rope"
            else None
        )
        self.relative_bias = (
            RelativePositionBias(num_heads, max_relative_distance)
            if pos_encoding == "relative"
            else None
        )

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
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(N, L, E)`` if ``batch_first`` else ``(L, N, E)``; ``E = in_rep.size``.
            key: ``(N, S, E)`` (or ``(S, N, E)``).
            value: Same shape as ``key``.
            key_padding_mask: ``(N, S)``; ``True`` (or ``-inf``) marks padding keys.
            need_weights: Whether to also return the attention weights.
            attn_mask: ``(L, S)`` or ``(N·num_heads, L, S)``; ``True``/``-inf`` forbids attending.
            average_attn_weights: Average the returned weights over heads.
            is_causal: Apply a causal mask (query ``i`` sees keys ``≤ i``) when ``attn_mask`` is
            None.
            query_pos: ``(L,)`` or ``(N, L)`` integer positions of the queries (default
                ``0..L-1``); only with a ``pos_encoding``.
            key_pos: ``(S,)`` or ``(N, S)`` integer positions of the keys (default ``0..S-1``).

        Returns:
            ``(output, weights)``: output of the query's shape; weights ``(N, L, S)`` (averaged) or
            ``(N, num_heads, L, S)``, or ``None`` if ``need_weights`` is false.
        """
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.ndim != 3 or t.shape[-1] != self.embed_dim:
                layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
                raise ValueError(
                    f"eMultiheadAttention expects {name} of shape {layout} with E = "
                    f"{self.embed_dim}; got {tuple(t.shape)}."
                )
        if key.shape != value.shape:
            raise ValueError(
                f"key and value must have the same shape; got {tuple(key.shape)} and "
                f"{tuple(value.shape)}."
            )
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query.shape[0] != key.shape[0]:
            raise ValueError(
                f"query and key must have the same batch size; got {query.shape[0]} and "
                f"{key.shape[0]}."
            )
        n, t_q, e = query.shape
        t_k = key.shape[1]
        if self.pos_encoding is None and (query_pos is not None or key_pos is not None):
            raise ValueError(
                "eMultiheadAttention got query_pos/key_pos but has no pos_encoding; build it "
                "with pos_encoding='rope' or 'relative'."
            )
        check_positions(query_pos, "query_pos", n, t_q)
        check_positions(key_pos, "key_pos", n, t_k)
        h, d = self.num_heads, self.head_dim
        w = self.in_proj.dense_weight()
        b = self.in_proj.dense_bias()
        if query is key and key is value:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        else:
            # Row slices of the fused weight are views: no copy per call.
            q = F.linear(query, w[:e], None if b is None else b[:e])
            if key is value:
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
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
            rotary=self.rotary,
            relative_bias=self.relative_bias,
            query_pos=query_pos,
            key_pos=key_pos,
        )
        out = self.out_proj(out.transpose(1, 2).reshape(n, t_q, e))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights

    def extra_repr(self) -> str:
        pos = "" if self.pos_encoding is None else f", pos_encoding={self.pos_encoding!r}"
        return f"{self.in_rep.name}, num_heads={self.num_heads}, dropout={self.dropout}{pos}"

    if TYPE_CHECKING:

        def __call__(
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
        ) -> tuple[Tensor, Tensor | None]: ...
