from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .group import Group, GroupElement

__all__ = [
    "Representation",
    "change_basis",
    "directsum",
    "disentangle",
    "homomorphism_space",
]

# Every matrix escnn builds (representation matrices, changes of basis, bases) is float64.
_Matrix: TypeAlias = npt.NDArray[np.float64]

class Representation:
    group: Group
    name: str
    size: int
    change_of_basis: _Matrix
    change_of_basis_inv: _Matrix
    irreps: list[tuple[Any, ...]]
    representation: Callable[[GroupElement], _Matrix]
    supported_nonlinearities: set[str]
    attributes: dict[str, Any]
    irreducible: bool
    def __init__(
        self,
        group: Group,
        name: str,
        irreps: list[tuple[Any, ...]],
        change_of_basis: npt.NDArray[Any],
        supported_nonlinearities: list[str] | set[str] = ...,
        representation: dict[GroupElement, npt.NDArray[Any]]
        | Callable[[GroupElement], npt.NDArray[Any]]
        | None = None,
        character: dict[GroupElement, float] | Callable[[Any], float] | None = None,
        change_of_basis_inv: npt.NDArray[Any] | None = None,
        **kwargs: Any,
    ) -> None: ...
    def character(self, e: GroupElement) -> float:
        """Trace of the representation of `e`."""
    def is_trivial(self) -> bool: ...
    def contains_trivial(self) -> bool: ...
    def restrict(self, id: Any) -> Representation: ...
    def __call__(self, element: GroupElement) -> _Matrix:
        """The (size, size) matrix representing `element`."""
    def __add__(self, other: Representation) -> Representation:
        """Direct sum."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def tensor(self, other: Representation) -> Representation: ...
    def endomorphism_basis(self) -> _Matrix:
        """Basis of End_G(rho), shape (dim, size, size)."""
    def multiplicity(self, irrep: tuple[Any, ...]) -> int: ...

def directsum(
    reprs: Sequence[Representation],
    change_of_basis: npt.NDArray[Any] | None = None,
    name: str | None = None,
) -> Representation: ...
def disentangle(repr: Representation) -> tuple[_Matrix, list[Representation]]: ...
def change_basis(
    repr: Representation,
    change_of_basis: npt.NDArray[Any],
    name: str,
    supported_nonlinearities: list[str] | set[str] | None = None,
) -> Representation: ...
def homomorphism_space(rho1: Representation, rho2: Representation) -> _Matrix:
    """Basis of Hom_G(rho1, rho2), shape (dim, rho2.size, rho1.size)."""
