"""Buffers that keep float64 precision when a module is cast to another dtype."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ExactBuffersModule"]


class ExactBuffersModule(nn.Module):
    """A module whose float64 buffers follow ``.to(device)`` but stay float64 on ``.to(dtype)``.

    Changes of basis and bases are derived from the representations, not learned. Casting them to
    float32 or bfloat16 with the module (``module.float()``) and back (``module.double()``) would
    leave float64 models with float32-accurate maps. Buffers registered with
    :meth:`register_exact_buffer` therefore stay float64; forward passes cast them to the dtype of
    the data where needed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._exact_buffer_names: set[str] = set()

    def register_exact_buffer(self, name: str, tensor: Tensor) -> None:
        """Register a non-persistent float64 buffer that keeps its dtype under ``_apply``."""
        self.register_buffer(name, tensor.to(torch.float64), persistent=False)
        self._exact_buffer_names.add(name)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        saved = {
            name: buf
            for name, buf in self._buffers.items()
            if name in self._exact_buffer_names and buf is not None
        }
        result = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for name, buf in saved.items():
            moved = self._buffers[name]
            device = moved.device if moved is not None else buf.device
            self._buffers[name] = buf.to(device=device, dtype=torch.float64)
        return result
