"""Plain PyTorch modules of exported models where ``torch.nn`` has no exact equivalent.

This file imports nothing but torch at run time (a test checks it): exported models hold
``torch.nn`` classes and the classes below only, never an escnn, ``ereps`` or equivariant object.
The three transformer classes are ``torch.nn`` layers that also accept ``is_causal=True`` without a
mask (the equivariant layers do; torch's own treat ``is_causal`` as a hint about a given mask), and
the encoder layer takes torch's fused inference kernel only when its norms are ``LayerNorm`` (the
kernel computes layer norms whatever the norm modules are).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Bias",
    "ElementwiseAffine",
    "MultiheadAttention",
    "Pointwise",
    "RemoveComponent",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "causal_mask",
]


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> Tensor:
    """Boolean ``(t_q, t_k)`` mask, ``True`` where query ``i`` must not see key ``j > i``."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).triu(1)


class Bias(nn.Module):
    """``y = x + bias`` on the last axis.

    Args:
        bias: Tensor of shape ``(n,)`` (copied into a parameter).
    """

    def __init__(self, bias: Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(..., n)`` to ``(..., n)``."""
        return x + self.bias


class ElementwiseAffine(nn.Module):
    """``y = x ⊙ weight (+ bias)`` on the last axis.

    Args:
        weight: Tensor of shape ``(n,)``.
        bias: Tensor of shape ``(n,)`` or ``None``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(..., n)`` to ``(..., n)``."""
        y = x * self.weight
        return y if self.bias is None else y + self.bias


class RemoveComponent(nn.Module):
    r"""``y = x - (x·u) u`` for a unit vector ``u``: removes the component along ``u``.

    Followed by ``torch.nn.RMSNorm`` it is a norm that centres along an invariant direction other
    than the all-ones vector (``elayers.eLayerNorm`` on representations that are not permutation
    representations).

    Args:
        direction: Unit vector ``u`` of shape ``(n,)``.
    """

    def __init__(self, direction: Tensor) -> None:
        super().__init__()
        self.register_buffer("direction", direction.detach().clone())
        self.direction: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(..., n)`` to ``(..., n)``."""
        u = self.direction.to(x.dtype)  # a no-op when the dtypes agree
        return x - (x @ u).unsqueeze(-1) * u


class Pointwise(nn.Module):
    """A pointwise activation given as a callable (``torch.save`` needs it to be picklable).

    Args:
        fn: The function, applied elementwise.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """``fn(x)``, any shape."""
        return self.fn(x)


class MultiheadAttention(nn.MultiheadAttention):
    """:class:`torch.nn.MultiheadAttention` that builds the causal mask for ``is_causal=True``."""

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
    ) -> tuple[Tensor, Tensor | None]:
        """As :meth:`torch.nn.MultiheadAttention.forward`; ``is_causal`` needs no mask."""
        if is_causal and attn_mask is None:
            axis = 1 if self.batch_first else 0
            attn_mask = causal_mask(query.shape[axis], key.shape[axis], query.device)
        return super().forward(
            query,
            key,
            value,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """:class:`torch.nn.TransformerEncoderLayer` with any norm modules and a maskless ``is_causal``.

    With ``torch.nn.LayerNorm`` norms this is torch's layer, fused inference path included; with
    other norms (``torch.nn.RMSNorm``) it runs torch's composite path, since the fused kernel would
    compute layer norms.
    """

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """As :meth:`torch.nn.TransformerEncoderLayer.forward`; ``is_causal`` needs no mask."""
        if is_causal and src_mask is None:
            length = src.shape[1 if self.self_attn.batch_first else 0]
            src_mask = causal_mask(length, length, src.device)
        if type(self.norm1) is nn.LayerNorm and type(self.norm2) is nn.LayerNorm:
            out: Tensor = super().forward(src, src_mask, src_key_padding_mask, is_causal)
            return out
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class TransformerDecoderLayer(nn.TransformerDecoderLayer):
    """:class:`torch.nn.TransformerDecoderLayer` whose ``*_is_causal`` flags need no mask."""

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
    ) -> Tensor:
        """As :meth:`torch.nn.TransformerDecoderLayer.forward`; causal flags need no mask."""
        axis = 1 if self.self_attn.batch_first else 0
        if tgt_is_causal and tgt_mask is None:
            tgt_mask = causal_mask(tgt.shape[axis], tgt.shape[axis], tgt.device)
        if memory_is_causal and memory_mask is None:
            memory_mask = causal_mask(tgt.shape[axis], memory.shape[axis], tgt.device)
        out: Tensor = super().forward(
            tgt,
            memory,
            tgt_mask,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            memory_is_causal,
        )
        return out
