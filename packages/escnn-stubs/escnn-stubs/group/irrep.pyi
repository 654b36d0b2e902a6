from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from .group import Group, GroupElement
from .representation import Representation

__all__ = ["IrreducibleRepresentation"]

_Matrix: TypeAlias = npt.NDArray[np.float64]

class IrreducibleRepresentation(Representation):
    id: tuple[Any, ...]
    # 'R' (real), 'C' (complex) or 'H' (quaternionic) type.
    type: Literal["R", "C", "H"]
    # dim End_G(irrep): 1, 2 or 4 for type 'R', 'C', 'H'.
    sum_of_squares_constituents: int
    def __init__(
        self,
        group: Group,
        id: tuple[Any, ...],
        name: str,
        representation: dict[GroupElement, npt.NDArray[Any]] | Callable[[Any], npt.NDArray[Any]],
        size: int,
        type: Literal["R", "C", "H"],
        supported_nonlinearities: list[str],
        character: dict[GroupElement, float] | Callable[[Any], float] | None = None,
        **kwargs: Any,
    ) -> None: ...
    def endomorphism_basis(self) -> _Matrix:
        """Basis of End_G(irrep), shape (sum_of_squares_constituents, size, size)."""
