from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from .irrep import IrreducibleRepresentation
from .representation import Representation

__all__ = ["Group", "GroupElement"]

class Group(ABC):
    name: str
    continuous: bool
    abelian: bool
    # Groups define __eq__ but not __hash__, so instances are not hashable.
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __init__(self, name: str, continuous: bool, abelian: bool) -> None: ...
    @property
    @abstractmethod
    def PARAM(self) -> str: ...
    @property
    @abstractmethod
    def PARAMETRIZATIONS(self) -> list[str]: ...
    def order(self) -> int:
        """Number of elements, or -1 for a continuous group."""
    def element(self, element: Any, param: str | None = None) -> GroupElement: ...
    @property
    @abstractmethod
    def identity(self) -> GroupElement: ...
    # `None` for continuous groups; `| Any` spares finite-group code a narrowing at every use.
    @property
    @abstractmethod
    def elements(self) -> list[GroupElement] | Any: ...
    @property
    @abstractmethod
    def subgroup_trivial_id(self) -> Any: ...
    @property
    @abstractmethod
    def subgroup_self_id(self) -> Any: ...
    @property
    @abstractmethod
    def generators(self) -> list[GroupElement]: ...
    @abstractmethod
    def __eq__(self, other: object) -> bool: ...
    @abstractmethod
    def sample(self) -> GroupElement: ...
    def grid(self, *args: Any, **kwargs: Any) -> list[GroupElement]: ...
    def subgroup(
        self, id: Any
    ) -> tuple[
        Group, Callable[[GroupElement], GroupElement], Callable[[GroupElement], GroupElement | None]
    ]:
        """(subgroup H, inclusion H -> G, restriction G -> H returning None outside H)."""
    def irreps(self) -> list[IrreducibleRepresentation]:
        """The irreps instantiated so far (not necessarily all irreps of the group)."""
    @property
    def representations(self) -> dict[str, Representation]: ...
    @property
    @abstractmethod
    def trivial_representation(self) -> IrreducibleRepresentation: ...
    @abstractmethod
    def irrep(self, *id: Any) -> IrreducibleRepresentation: ...
    @property
    def regular_representation(self) -> Representation:
        """Raises ValueError for a continuous group."""
    def quotient_representation(
        self,
        subgroup_id: Any,
        representatives: list[GroupElement] | None = None,
        name: str | None = None,
    ) -> Representation: ...
    def induced_representation(
        self,
        subgroup_id: Any,
        repr: IrreducibleRepresentation,
        representatives: list[GroupElement] | None = None,
        name: str | None = None,
    ) -> Representation: ...
    def spectral_regular_representation(
        self, *irreps: Any, name: str | None = None
    ) -> Representation: ...
    def spectral_quotient_representation(
        self, subgroup_id: Any, *irreps: Any, name: str | None = None
    ) -> Representation: ...
    def restrict_representation(self, id: Any, repr: Representation) -> Representation: ...
    @abstractmethod
    def testing_elements(self) -> Iterable[GroupElement]: ...

class GroupElement(ABC):
    group: Group
    def __init__(self, g: Any, group: Group, param: str | None = None) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __matmul__(self, other: GroupElement) -> GroupElement:
        """Group law: ``a @ b``."""
    def __invert__(self) -> GroupElement:
        """Inverse: ``~a``."""
    @property
    def value(self) -> Any:
        """Parameters in `param`: an int for C_N, a pair for D_N, a quaternion array for O and I."""
    @property
    def param(self) -> str: ...
    def to(self, param: str) -> Any: ...
