"""What a user's type checker sees of escnn.group through the `escnn-stubs` distribution.

Checked with ``uv run mypy --strict tests/typing/escnn_sample.py``. Every ``assert_type`` pins a
type that users rely on; every ``# type: ignore[code]`` pins an error mypy must report (with
``warn_unused_ignores``, part of ``--strict``, the check fails if the error disappears). The module
also runs (``python -m tests.typing.escnn_sample``) on the small groups, so the types are checked
against what escnn returns.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal

import escnn
import escnn.group
import numpy as np
import numpy.typing as npt
from escnn.group import (
    CyclicGroup,
    DihedralGroup,
    DirectProductGroup,
    Group,
    GroupElement,
    Icosahedral,
    IrreducibleRepresentation,
    Octahedral,
    Representation,
    change_basis,
    cyclic_group,
    dihedral_group,
    direct_product,
    directsum,
    disentangle,
    full_ico_group,
    full_octa_group,
    homomorphism_space,
    ico_group,
    klein4_group,
    octa_group,
    trivial_group,
)
from typing_extensions import assert_type

Matrix = npt.NDArray[np.float64]


def factories() -> None:
    """The factories return the concrete group classes (types only: nothing is built here)."""
    assert_type(trivial_group(), CyclicGroup)
    assert_type(cyclic_group(4), CyclicGroup)
    assert_type(dihedral_group(3), DihedralGroup)
    assert_type(octa_group(), Octahedral)
    assert_type(ico_group(), Icosahedral)
    assert_type(full_octa_group(), DirectProductGroup)
    assert_type(full_ico_group(), DirectProductGroup)
    assert_type(klein4_group(), DirectProductGroup)
    assert_type(direct_product(cyclic_group(2), octa_group()), DirectProductGroup)
    assert_type(escnn.group.cyclic_group(2), CyclicGroup)
    assert_type(escnn.__version__, str)


def group_surface(G: Group) -> GroupElement:
    """Members every `Group` has."""
    assert_type(G.name, str)
    assert_type(G.continuous, bool)
    assert_type(G.abelian, bool)
    assert_type(G.order(), int)
    # `elements` is None for continuous groups; typed so that finite-group code needs no narrowing.
    assert_type(G.elements, list[GroupElement] | Any)
    assert_type(G.identity, GroupElement)
    assert_type(G.generators, list[GroupElement])
    assert_type(G.irreps(), list[IrreducibleRepresentation])
    assert_type(G.irrep(*G.trivial_representation.id), IrreducibleRepresentation)
    assert_type(G.trivial_representation, IrreducibleRepresentation)
    assert_type(G.regular_representation, Representation)
    assert_type(G.representations, dict[str, Representation])
    assert_type(G.sample(), GroupElement)
    assert_type(G.testing_elements(), Iterable[GroupElement])
    assert_type(G.element(G.identity.value, G.identity.param), GroupElement)
    assert_type(G == G, bool)
    H, inclusion, restriction = G.subgroup(G.subgroup_trivial_id)
    assert_type(H, Group)
    assert_type(inclusion, Callable[[GroupElement], GroupElement])
    assert_type(restriction, Callable[[GroupElement], GroupElement | None])
    return G.identity


def finite_group_surface(
    C: CyclicGroup, D: DihedralGroup, octa: Octahedral, F: DirectProductGroup
) -> None:
    """Members of the concrete finite groups."""
    assert_type(C.elements, list[GroupElement])
    assert_type(C.N, int)
    assert_type(C.rotation_order, int)
    assert_type(C.irrep(1), IrreducibleRepresentation)
    assert_type(D.rotation_order, int)
    assert_type(D.reflection, GroupElement)
    assert_type(D.irrep(1, 1), IrreducibleRepresentation)
    assert_type(octa.standard_representation, Representation)
    assert_type(octa.irrep(-1), IrreducibleRepresentation)
    assert_type(F.G1, Group)
    assert_type(F.split_element(F.identity), tuple[GroupElement, GroupElement])


def element_surface(g: GroupElement, h: GroupElement) -> GroupElement:
    """Group law is `@`, inverse is `~`; there is no `*` and no `inverse()`."""
    assert_type(g.group, Group)
    assert_type(g @ h, GroupElement)
    assert_type(~g, GroupElement)
    assert_type(g == h, bool)
    assert_type(hash(g), int)
    assert_type(g.param, str)
    assert_type(g.value, Any)
    assert_type(g.to("radians"), Any)
    assert_type(repr(g), str)
    return ~g @ h


def representation_surface(rho: Representation, g: GroupElement) -> Matrix:
    """Members of `Representation` and `IrreducibleRepresentation`."""
    assert_type(rho.group, Group)
    assert_type(rho.name, str)
    assert_type(rho.size, int)
    assert_type(rho.irreps, list[tuple[Any, ...]])
    assert_type(rho.change_of_basis, Matrix)
    assert_type(rho.change_of_basis_inv, Matrix)
    assert_type(rho.supported_nonlinearities, set[str])
    assert_type(rho.attributes, dict[str, Any])
    assert_type(rho.irreducible, bool)
    assert_type(rho(g), Matrix)
    assert_type(rho.character(g), float)
    assert_type(rho.is_trivial(), bool)
    assert_type(rho.multiplicity((0,)), int)
    assert_type(rho.endomorphism_basis(), Matrix)
    assert_type(rho + rho, Representation)
    assert_type(hash(rho), int)
    psi = rho.group.irrep(*rho.irreps[0])
    assert_type(psi.id, tuple[Any, ...])
    assert_type(psi.sum_of_squares_constituents, int)
    assert_type(psi.type, Literal["R", "C", "H"])
    return rho(g)


def rejected(C: CyclicGroup, D: DihedralGroup, g: GroupElement, rho: Representation) -> None:
    """Misuses mypy must report (never called: each line fails at runtime too)."""
    C.irrep("1")  # type: ignore[arg-type]
    D.irrep(1)  # type: ignore[call-arg]
    g * g  # type: ignore[operator]
    g.inverse()  # type: ignore[attr-defined]
    rho(0)  # type: ignore[arg-type]
    directsum(rho)  # type: ignore[arg-type]
    _unhashable: Hashable = C  # type: ignore[assignment]  # groups define __eq__ without __hash__


def functions(rho: Representation) -> None:
    """Module-level functions on representations."""
    assert_type(directsum([rho, rho]), Representation)
    assert_type(directsum((rho, rho), name="twice"), Representation)
    assert_type(change_basis(rho, np.eye(rho.size), name="same"), Representation)
    assert_type(disentangle(rho), tuple[Matrix, list[Representation]])
    assert_type(homomorphism_space(rho, rho), Matrix)


def main() -> None:
    """Run the checks on small groups, and compare a few types with what escnn returns."""
    for G in (cyclic_group(4), dihedral_group(3)):
        e = group_surface(G)
        rho = G.regular_representation
        matrix = representation_surface(rho, G.elements[1])
        assert matrix.dtype == np.float64
        assert matrix.shape == (G.order(), G.order())
        assert isinstance(rho.character(e), float)
        assert isinstance(G.irrep(*G.trivial_representation.id), IrreducibleRepresentation)
        element_surface(G.elements[1], G.elements[-1])
        functions(G.trivial_representation + G.irrep(*G.irreps()[-1].id))


if __name__ == "__main__":
    main()
