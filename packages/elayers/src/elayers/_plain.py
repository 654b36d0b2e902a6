"""Plain PyTorch modules of exported models where ``torch.nn`` has no exact equivalent.

This file imports nothing but torch and its torch-only sibling ``elayers._positional`` at run
time (a test checks it): exported models hold ``torch.nn`` classes and the classes below only,
never an escnn, ``ereps`` or equivariant object. The three transformer classes are ``torch.nn``
layers that also accept ``is_causal=True`` without a mask (the equivariant layers do; torch's own
treat ``is_causal`` as a hint about a given mask) and give a query whose keys are all masked a
zero attention output, as the equivariant attention does (torch: NaN on some paths); the encoder
layer takes torch's fused inference kernel only when its norms are ``LayerNorm`` (the kernel
computes layer norms whatever the norm modules are) and no mask is given (the kernel returns NaN
for an empty row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

# The shared attention of the plain layers: a torch-only sibling file (imports only torch).
from elayers._positional import multihead_attention

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
    """:class:`torch.nn.MultiheadAttention` with the empty-row value of the equivariant attention.

    Two differences from torch's module, both what the equivariant attention does:

    - ``is_causal=True`` without ``attn_mask`` builds the causal mask (torch treats the flag as a
      hint about a given mask);
    - a query whose keys are all masked gets a zero attention output, so its row of the output is
      ``out_proj.bias`` and its attention weights are zero (torch returns NaN there on some of its
      paths, and a NaN poisons later layers even under a zero weight). Batched calls with a mask
      therefore run :func:`elayers._positional.multihead_attention` (the same parameters, SDPA);
      calls without a mask, or with the causal mask alone (no row of it is empty), run torch's
      forward, fused inference path included. Unbatched inputs (``(L, E)``) and the options the
      exported equivariant attention never has (``kdim``/``vdim``, ``add_bias_kv``,
      ``add_zero_attn``) keep torch's forward.
    """

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
        masked = key_padding_mask is not None or attn_mask is not None
        if (
            masked
            and query.dim() == 3
            and self.in_proj_weight is not None
            and self.bias_k is None
            and not self.add_zero_attn
        ):
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
            )
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

    With ``torch.nn.LayerNorm`` norms and no mask (or only ``is_causal``) this is torch's layer,
    fused inference path included; with other norms (``torch.nn.RMSNorm``) it runs torch's
    composite path, since the fused kernel would compute layer norms, and so it does with a mask,
    since the kernel returns NaN for a query whose keys are all masked (the composite path's
    attention gives it a zero attention output, as the equivariant layer does).
    """

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """As :meth:`torch.nn.TransformerEncoderLayer.forward`; ``is_causal`` needs no mask."""
        # Torch's fused kernel returns NaN for a query whose keys are all masked: it runs only
        # where no row can be empty (no mask, or the causal one, which keeps each query's key).
        fused = src_mask is None and src_key_padding_mask is None
        if is_causal and src_mask is None:
            length = src.shape[1 if self.self_attn.batch_first else 0]
            src_mask = causal_mask(length, length, src.device)
        if fused and type(self.norm1) is nn.LayerNorm and type(self.norm2) is nn.LayerNorm:
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
