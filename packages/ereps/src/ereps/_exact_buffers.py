"""Constant tensors of a module: moved with it, never cast, averaged, broadcast or saved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ExactBuffersModule"]


class ExactBuffersModule(nn.Module):
    """A module with *constants*: tensors derived from the representations, not learned state.

    Changes of basis, bases and index tables (a Cayley table's flat gather index) are fixed by
    the representations. Registered as buffers they would be part of the module's state:
    ``torch.optim.swa_utils.AveragedModel(..., use_buffers=True)`` would average them (an
    integer index averaged with decay 0.9999 shifts by one), DDP would broadcast them on every
    forward, and ``module.half()`` would round float64 bases. A constant registered with
    :meth:`register_constant` is instead a plain tensor attribute (read it as ``self.name``) that

    * follows the module's device (``.to(device)``, ``.cuda()``, ``.to_empty(device=...)``),
    * keeps its dtype under every cast (float64 bases stay float64, integer indices stay
      integers; forward passes cast a basis to the data's dtype where they use it),
    * is not in ``parameters()``, ``buffers()`` or the ``state_dict``,
    * is copied by ``copy.deepcopy`` and ``pickle`` with the module, and is seen as a constant
      by ``torch.compile`` and ``torch.export`` (a lifted tensor constant).

    :meth:`named_constants` lists them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._constant_names: list[str] = []

    def register_constant(self, name: str, tensor: Tensor) -> None:
        """Store ``tensor`` as the constant ``self.<name>`` (dtype kept, device followed).

        Args:
            name: Attribute name; must not be a parameter, buffer or submodule.
            tensor: The constant; stored detached, as given.

        Raises:
            TypeError: If ``tensor`` is not a tensor.
            KeyError: If ``name`` is already a parameter, buffer or submodule.
        """
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"register_constant expects a torch.Tensor for {name!r}; got "
                f"{type(tensor).__name__}."
            )
        if name in self._parameters or name in self._buffers or name in self._modules:
            raise KeyError(f"{name!r} is already a parameter, buffer or submodule.")
        # object.__setattr__: nn.Module.__setattr__ would refuse nothing here, but this makes the
        # intent (a plain attribute, not state) explicit.
        object.__setattr__(self, name, tensor.detach())
        if name not in self._constant_names:
            self._constant_names.append(name)

    def register_exact_buffer(self, name: str, tensor: Tensor) -> None:
        """Register a float64 constant (see :meth:`register_constant`)."""
        self.register_constant(name, tensor.to(torch.float64))

    def named_constants(self, recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """``(qualified name, tensor)`` of the constants of this module (and its submodules).

        Args:
            recurse: Also list the constants of submodules, with dotted names.
        """
        modules = self.named_modules() if recurse else iter([("", self)])
        for prefix, module in modules:
            if isinstance(module, ExactBuffersModule):
                for name in module._constant_names:
                    yield (f"{prefix}.{name}" if prefix else name), module.__dict__[name]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        result = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for name in self._constant_names:
            const: Tensor = self.__dict__[name]
            # fn may cast (module.half()): take only the device it sends the constant to, and
            # move the original so that nothing is rounded on the way.
            moved = fn(const)
            if moved.device == const.device:
                continue
            # A meta constant has no values to move (to_empty on a meta module): keep fn's.
            new = moved.to(const.dtype) if const.is_meta else const.to(moved.device)
            object.__setattr__(self, name, new)
        return result
