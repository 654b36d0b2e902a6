"""Plain (torch-only) wrappers for modules computing in a per-copy orthogonal basis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

__all__ = ["Conjugated"]


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

        def __call__(self, x: Tensor) -> Tensor: ...

