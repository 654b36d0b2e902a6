"""Groups and representations as plain, JSON-serializable dictionaries.

A model configuration stored in a checkpoint (or a JSON file) must name the representations the
model was built for without pickling escnn objects. The dictionaries hold what rebuilds them
exactly, the same values the pickling reducers of :mod:`ereps._pickling` use:

* a group: ``{"group": "DihedralGroup", "keys": {"N": 4}}`` (escnn's class and constructor
  arguments; escnn caches groups, so the same object comes back), or
  ``{"direct_product": [G1, G2], "name": str | None}``;
* a representation: ``{"group": G, "name": str, "irreps": [[...], ...], "change_of_basis":
  [[float]], "change_of_basis_inv": [[float]], "supported_nonlinearities": [str], "registered":
  bool}``, so ``ρ(g) = Q (⊕_i ρ_i(g)) Q⁻¹`` is rebuilt to the bit (floats survive JSON exactly).
  A representation the group already holds under that name (``regular``, ...) must be the same
  one and is returned as it is.

``Q`` takes ``size²`` numbers: fine for the input, conditioning and output representations of a
model (the sizes of robot states), which is what configurations hold.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from ereps._escnn import Group, Representation
from ereps._escnn import escnn_group as _eg
from ereps._pickling import _direct_product, _group_from_keys, _representation

__all__ = ["group_from_dict", "group_to_dict", "representation_from_dict", "representation_to_dict"]


def _plain(value: Any) -> Any:
    """Irrep ids and constructor keys (nested tuples of ints, ...) as JSON values."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"expected a plain value (int, float, bool, str, None); got {value!r}.")


def _tuples(value: Any) -> Any:
    """JSON lists back to the nested tuples escnn uses for irrep ids."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def group_to_dict(group: Group) -> dict[str, Any]:
    """A plain dictionary that :func:`group_from_dict` turns back into ``group``.

    Args:
        group: A finite escnn group of the supported families (cyclic, dihedral, octahedral,
            icosahedral) or a direct product of them.

    Returns:
        A JSON-serializable dictionary.

    Raises:
        TypeError: If ``group`` is not an escnn group.
        ValueError: If it is of another family.
    """
    if not isinstance(group, Group):
        raise TypeError(f"group_to_dict expects an escnn group; got {type(group).__name__}.")
    if isinstance(group, _eg.DirectProductGroup):
        name = None if getattr(group, "_defaulf_name", False) else group.name
        return {
            "direct_product": [group_to_dict(group.G1), group_to_dict(group.G2)],
            "name": name,
        }
    class_name = type(group).__name__
    if class_name not in ("CyclicGroup", "DihedralGroup", "Octahedral", "Icosahedral"):
        raise ValueError(
            f"group_to_dict expects a cyclic, dihedral, octahedral or icosahedral group or a "
            f"direct product of them; got {group.name!r} ({class_name})."
        )
    keys = {str(k): _plain(v) for k, v in dict(cast(Any, group)._keys).items()}  # its arguments
    return {"group": class_name, "keys": keys}


def group_from_dict(data: Mapping[str, Any]) -> Group:
    """The group described by :func:`group_to_dict`'s dictionary (escnn's cached object).

    Raises:
        ValueError: If ``data`` is not such a dictionary.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"group_from_dict expects a dictionary; got {type(data).__name__}.")
    if "direct_product" in data:
        first, second = data["direct_product"]
        return _direct_product(group_from_dict(first), group_from_dict(second), data.get("name"))
    if "group" not in data or "keys" not in data:
        raise ValueError(
            "group_from_dict expects the keys 'group' and 'keys' (or 'direct_product'); got "
            f"{sorted(data)}."
        )
    return _group_from_keys(str(data["group"]), dict(data["keys"]))


def representation_to_dict(rep: Representation) -> dict[str, Any]:
    """A plain dictionary that :func:`representation_from_dict` turns back into ``rep``.

    Args:
        rep: A representation of a group :func:`group_to_dict` supports.

    Returns:
        A JSON-serializable dictionary (see the module docstring for its keys).

    Raises:
        TypeError: If ``rep`` is not an escnn representation.
    """
    if not isinstance(rep, Representation):
        raise TypeError(
            f"representation_to_dict expects an escnn.group.Representation; got "
            f"{type(rep).__name__}."
        )
    return {
        "group": group_to_dict(rep.group),
        "name": str(rep.name),
        "irreps": [_plain(i) for i in rep.irreps],
        "change_of_basis": np.asarray(rep.change_of_basis, dtype=np.float64).tolist(),
        "change_of_basis_inv": np.asarray(rep.change_of_basis_inv, dtype=np.float64).tolist(),
        "supported_nonlinearities": sorted(str(n) for n in rep.supported_nonlinearities),
        "registered": rep.group.representations.get(rep.name) is rep,
    }


def representation_from_dict(data: Mapping[str, Any]) -> Representation:
    """The representation described by :func:`representation_to_dict`'s dictionary.

    Returns:
        A representation equal to the one serialized (same group, name, irreps and change of
        basis); the group's own object when the group holds one of that name.

    Raises:
        ValueError: If ``data`` misses a key, or the group already holds a different
            representation of that name.
    """
    keys = ("group", "name", "irreps", "change_of_basis", "change_of_basis_inv")
    if not isinstance(data, Mapping) or any(k not in data for k in keys):
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"representation_from_dict expects the keys {list(keys)}; got {got}.")
    try:
        return _representation(
            group_from_dict(data["group"]),
            str(data["name"]),
            [_tuples(i) for i in data["irreps"]],
            np.asarray(data["change_of_basis"], dtype=np.float64),
            np.asarray(data["change_of_basis_inv"], dtype=np.float64),
            list(data.get("supported_nonlinearities", [])),
            {},
            bool(data.get("registered", False)),
        )
    except pickle.UnpicklingError as error:  # a name clash, reported as bad data
        raise ValueError(f"representation_from_dict: {error}") from error
