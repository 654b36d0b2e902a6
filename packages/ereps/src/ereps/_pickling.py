"""Pickling escnn groups, representations and group elements by reference.

escnn's objects hold local functions (``_build_irrep_cn.<locals>.irrep``, ...), so ``pickle``,
``torch.save(model)`` and multiprocessing fail on anything that keeps a group. They are, however,
fully described by a few plain values, and escnn caches its groups as singletons. ereps registers
reducers with :mod:`copyreg` (the standard hook for types one does not own) so that:

* a group pickles as its constructor and arguments (``cyclic_group(8)``, ``octa_group()``, the
  direct product of two groups and its name): unpickling returns escnn's cached group object;
* an irrep pickles as ``(group, irrep id)`` and returns ``group.irrep(*id)``;
* any other representation pickles as ``(group, name, irrep ids, Q, Q⁻¹, supported
  nonlinearities, attributes)`` and unpickles to an equal representation (same group, irreps and
  change of basis, so the same matrices ``ρ(g) = Q (⊕_i ρ_i(g)) Q⁻¹``); when the group already has
  a representation of that name (``regular``, a quotient, ...) it must be the same one, and that
  object is returned;
* a group element pickles as ``(group, value, parametrization)``.

``copy.deepcopy`` uses the same reducers: copies of models share the group objects, as they
should (groups are immutable singletons).
"""

from __future__ import annotations

import copyreg
import pickle
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ereps._escnn import Group, GroupElement, IrreducibleRepresentation, Representation
from ereps._escnn import escnn_group as _eg

__all__ = ["register_reducers"]

# The finite groups the project supports and tests. Their class-level caches make
# ``Class._generator(**group._keys)`` return the very object that was pickled.
_BY_KEYS = ("CyclicGroup", "DihedralGroup", "Octahedral", "Icosahedral")


def _group_from_keys(class_name: str, keys: dict[str, Any]) -> Group:
    group: Group = _eg.groups_dict[class_name]._generator(**keys)
    return group


def _direct_product(first: Group, second: Group, name: str | None) -> Group:
    group: Group = _eg.direct_product(first, second, name=name)
    return group


def _reduce_group(group: Group) -> tuple[Any, ...]:
    if isinstance(group, _eg.DirectProductGroup):
        # escnn's `_keys` omit a default name while `direct_product` caches under name=None: go
        # through `direct_product` so that unpickling finds the cached object.
        name = None if getattr(group, "_defaulf_name", False) else group.name
        return (_direct_product, (group.G1, group.G2, name))
    keys: dict[str, Any] = dict(cast(Any, group)._keys)  # escnn's constructor arguments
    return (_group_from_keys, (type(group).__name__, keys))


def _irrep(group: Group, irrep_id: tuple[Any, ...]) -> IrreducibleRepresentation:
    return group.irrep(*irrep_id)


def _reduce_irrep(irrep: IrreducibleRepresentation) -> tuple[Any, ...]:
    return (_irrep, (irrep.group, tuple(irrep.id)))


def _same_rep(rep: Representation, irreps: list[Any], q: npt.NDArray[np.float64]) -> bool:
    return [tuple(i) for i in rep.irreps] == [tuple(i) for i in irreps] and bool(
        np.allclose(np.asarray(rep.change_of_basis), q, rtol=0.0, atol=1e-9)
    )


def _representation(
    group: Group,
    name: str,
    irreps: list[Any],
    change_of_basis: npt.NDArray[np.float64],
    change_of_basis_inv: npt.NDArray[np.float64],
    supported_nonlinearities: list[str],
    attributes: dict[str, Any],
    registered: bool,
) -> Representation:
    existing = group.representations.get(name)
    if existing is not None:
        if _same_rep(existing, irreps, change_of_basis):
            return existing
        raise pickle.UnpicklingError(
            f"Cannot unpickle the representation {name!r} of {group.name}: this process already "
            f"has a different representation of that name (irreps {existing.irreps}, not "
            f"{irreps}, or another change of basis). Rename one of them."
        )
    rep = Representation(
        group,
        name,
        irreps,
        change_of_basis,
        supported_nonlinearities=set(supported_nonlinearities),
        change_of_basis_inv=change_of_basis_inv,
        **attributes,
    )
    if registered:
        # It was one of the group's own named representations (escnn builds those once per
        # name and looks them up by name): register it again, as escnn would have.
        group.representations[name] = rep
    return rep


def _reduce_representation(rep: Representation) -> tuple[Any, ...]:
    registered = rep.group.representations.get(rep.name) is rep
    return (
        _representation,
        (
            rep.group,
            rep.name,
            [tuple(i) for i in rep.irreps],
            np.asarray(rep.change_of_basis),
            np.asarray(rep.change_of_basis_inv),
            sorted(rep.supported_nonlinearities),
            dict(rep.attributes),
            registered,
        ),
    )


def _element(group: Group, value: Any, param: str) -> GroupElement:
    return group.element(value, param)


def _reduce_element(element: GroupElement) -> tuple[Any, ...]:
    return (_element, (element.group, element.value, element.param))


def register_reducers() -> None:
    """Register the reducers above with :mod:`copyreg` (idempotent; done on ``import ereps``)."""
    for class_name in _BY_KEYS:
        copyreg.pickle(_eg.groups_dict[class_name], _reduce_group)
    copyreg.pickle(_eg.DirectProductGroup, _reduce_group)
    copyreg.pickle(IrreducibleRepresentation, _reduce_irrep)
    copyreg.pickle(Representation, _reduce_representation)
    copyreg.pickle(GroupElement, _reduce_element)
