"""Plain (torch-only) wrappers for modules computing in a per-copy orthogonal basis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

__all__ = ["Conjugated", "ConjugatedDecoder"]


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
