"""Equivariant multi-head attention."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from elayers._checks import (
    check_bool,
    check_int,
    check_mask,
    check_positive_real,
    check_probability,
    check_tensor,
)
from elayers._linear import eLinear
from elayers._module import eModule, frozen_twin
from elayers._plain import MultiheadAttention
from elayers._positional import (
    AttentionPosEncoding,
    PositionalMultiheadAttention,
    RelativePositionBias,
    RotaryEmbedding,
    attend,
    check_pos_encoding,
    check_positions,
)
from ereps import (
    InitScheme,
    Representation,
    check_init_scheme,
    check_representation,
    direct_sum,
    group_order,
    regular_multiplicity,
)

__all__ = ["eMultiheadAttention", "valid_head_counts"]


def valid_head_counts(copies: int) -> list[int]:
    """Head counts that split ``copies`` regular copies into equal groups of whole copies."""
    return [h for h in range(1, copies + 1) if copies % h == 0]


def check_regular_copies(rep: Representation, who: str, name: str = "in_rep") -> int:
    """Return the number of regular copies of ``rep`` (the argument ``name``) or raise."""
    check_representation(rep, name)
    copies = regular_multiplicity(rep)
    if copies is None:
        order = group_order(rep.group)
        raise ValueError(
            f"{who} expects {name} to be copies of the regular representation of {rep.group.name} "
            f"(size a multiple of |G| = {order}, e.g. ereps.direct_sum([G.regular_representation] "
            "* c)); "
            f"got {rep.name!r} of size {rep.size}. Embed other representations first with eLinear."
        )
    return copies


def check_heads(owner: str, name: str, value: object, copies: int) -> int:
    """Return the head count ``value`` if it is an int dividing ``copies``, else raise."""
    heads = check_int(owner, name, value, minimum=None)
    if heads < 1 or copies % heads != 0:
        raise ValueError(
            f"{owner}: {name} must divide the {copies} regular copies of in_rep so that every "
            f"head takes whole copies; got {heads}. Valid head counts: "
            f"{valid_head_counts(copies)}."
        )
    return heads


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
    except that a query whose keys are all masked (in a head) gets a zero attention output there:
    where that holds for every head its output row is the output projection's bias, and its
    attention weights are zero (torch: NaN on some of its paths). :meth:`export` and
    :func:`elayers.frozen` give the same values.

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
        owner = "eMultiheadAttention"
        copies = check_regular_copies(in_rep, owner)
        check_init_scheme(init_scheme)
        check_heads(owner, "num_heads", num_heads, copies)
        dropout = check_probability(owner, "dropout", dropout)
        check_bool(owner, "bias", bias)
        check_bool(owner, "batch_first", batch_first)
        check_pos_encoding(owner, pos_encoding)
        check_int(owner, "max_relative_distance", max_relative_distance, minimum=1)
        rope_base = check_positive_real(owner, "rope_base", rope_base)
        if pos_encoding == "rope" and copies // num_heads < 2:
            raise ValueError(
                f"{owner} with pos_encoding='rope' rotates pairs of regular copies and "
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
        owner = "eMultiheadAttention"
        for name, t in (("query", query), ("key", key), ("value", value)):
            check_tensor(owner, name, t)
            if t.ndim != 3 or t.shape[-1] != self.embed_dim:
                layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
                raise ValueError(
                    f"eMultiheadAttention expects {name} of shape {layout} with E = "
                    f"{self.embed_dim}; got {tuple(t.shape)}."
                )
        self._check_placement(query, "query")
        if key is not query:
            self._check_placement(key, "key")
        if value is not key:
            self._check_placement(value, "value")
        check_mask(owner, "key_padding_mask", key_padding_mask)
        check_mask(owner, "attn_mask", attn_mask)
        check_bool(owner, "need_weights", need_weights)
        check_bool(owner, "average_attn_weights", average_attn_weights)
        check_bool(owner, "is_causal", is_causal)
        if key.shape != value.shape:
            raise ValueError(
                f"key and value must have the same shape; got {tuple(key.shape)} and "
                f"{tuple(value.shape)}."
            )
        if self.pos_encoding is None and (query_pos is not None or key_pos is not None):
            raise ValueError(
                "eMultiheadAttention got query_pos/key_pos but has no pos_encoding; build it "
                "with pos_encoding='rope' or 'relative'."
            )
        twin = frozen_twin(self)
        if twin is not None:
            # Positions only reach a PositionalMultiheadAttention twin (torch's MHA takes none).
            positions = (
                {} if self.pos_encoding is None else {"query_pos": query_pos, "key_pos": key_pos}
            )
            result: tuple[Tensor, Tensor | None] = twin(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
                **positions,
            )
            return result
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query.shape[0] != key.shape[0]:
            raise ValueError(
                f"query and key must have the same batch size; got {query.shape[0]} and "
                f"{key.shape[0]}."
            )
        n, t_q, e = query.shape
        t_k = key.shape[1]
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

    def export(self) -> MultiheadAttention | PositionalMultiheadAttention:
        """Plain attention with the dense projections (see :meth:`eModule.export`).

        Without ``pos_encoding``: :class:`torch.nn.MultiheadAttention` (the
        :class:`elayers._plain.MultiheadAttention` subclass, which also accepts ``is_causal=True``
        without ``attn_mask``, as this module does). The fused ``in_proj`` is torch's
        ``in_proj_weight``/``in_proj_bias`` (rows ``[q; k; v]``) and heads split the embedding
        into contiguous slices of ``head_dim`` as here, so the plain module computes the same
        attention (torch's fused inference path included). With ``"rope"``/``"relative"``:
        :class:`PositionalMultiheadAttention` with the same parameter layout, the rotary
        embedding's block ``|G|`` and frequencies, and a copy of the relative-bias table; it takes
        ``query_pos``/``key_pos`` as this module does.
        """
        with torch.no_grad():
            w_in = self.in_proj.weight
            b_in = self.in_proj.bias
            w_out = self.out_proj.weight
            b_out = self.out_proj.bias
            mha: MultiheadAttention | PositionalMultiheadAttention
            if self.pos_encoding is None:
                mha = MultiheadAttention(
                    self.embed_dim,
                    self.num_heads,
                    dropout=self.dropout,
                    bias=b_in is not None,
                    batch_first=self.batch_first,
                    device=w_in.device,
                    dtype=w_in.dtype,
                )
            else:
                mha = PositionalMultiheadAttention(
                    self.embed_dim,
                    self.num_heads,
                    dropout=self.dropout,
                    bias=b_in is not None,
                    batch_first=self.batch_first,
                    pos_encoding=self.pos_encoding,
                    max_relative_distance=(
                        32 if self.relative_bias is None else self.relative_bias.max_distance
                    ),
                    rope_base=10000.0 if self.rotary is None else self.rotary.base,
                    rope_block=1 if self.rotary is None else self.rotary.block,
                ).to(device=w_in.device, dtype=w_in.dtype)
                if self.relative_bias is not None:
                    if mha.relative_bias is None:  # an internal invariant (python -O keeps it)
                        raise RuntimeError("internal error: built for 'relative' above")
                    mha.relative_bias.weight.copy_(self.relative_bias.weight)
            if mha.in_proj_weight is None:  # an internal invariant (python -O keeps it)
                raise RuntimeError("internal error: _qkv_same_embed_dim")
            mha.in_proj_weight.copy_(w_in)
            mha.out_proj.weight.copy_(w_out)
            if b_in is not None and b_out is not None:
                if mha.in_proj_bias is None:  # an internal invariant (python -O keeps it)
                    raise RuntimeError("internal error: expected mha.in_proj_bias is not None")
                if mha.out_proj.bias is None:  # an internal invariant (python -O keeps it)
                    raise RuntimeError("internal error: expected mha.out_proj.bias is not None")
                mha.in_proj_bias.copy_(b_in)
                mha.out_proj.bias.copy_(b_out)
            return mha.train(self.training)

    def extra_repr(self) -> str:
        pos = "" if self.pos_encoding is None else f", pos_encoding={self.pos_encoding!r}"
        return f"{self.in_rep.name}, num_heads={self.num_heads}, dropout={self.dropout}{pos}"

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
