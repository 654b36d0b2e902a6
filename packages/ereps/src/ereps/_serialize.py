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


# The constructor arguments of each supported family (escnn's ``_keys``), all positive ints.
_GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "CyclicGroup": ("N",),
    "DihedralGroup": ("N",),
    "Octahedral": (),
    "Icosahedral": (),
}


def _expected_text(keys: tuple[str, ...]) -> str:
    """``'N': <positive int>`` for the keys of a group family (error messages)."""
    return ", ".join(f"{k!r}: <positive int>" for k in keys)


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
        ValueError: If ``data`` is not such a dictionary (another family, other constructor
            arguments than the family's, a direct product of other than two groups).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"group_from_dict expects a dictionary; got {type(data).__name__}.")
    if "direct_product" in data:
        factors, name = data["direct_product"], data.get("name")
        if not isinstance(factors, list) or len(factors) != 2:
            raise ValueError(
                "group_from_dict expects 'direct_product' to be a list of two group dictionaries; "
                f"got {factors!r}."
            )
        if name is not None and not isinstance(name, str):
            raise ValueError(f"group_from_dict expects 'name' to be a str or None; got {name!r}.")
        return _direct_product(group_from_dict(factors[0]), group_from_dict(factors[1]), name)
    if "group" not in data or "keys" not in data:
        raise ValueError(
            "group_from_dict expects the keys 'group' and 'keys' (or 'direct_product'); got "
            f"{sorted(data)}."
        )
    class_name, keys = data["group"], data["keys"]
    # Checked here: escnn's constructors answer bad arguments with a KeyError, a TypeError or a
    # bare assert (which python -O strips, building a wrong group).
    if not isinstance(class_name, str) or class_name not in _GROUP_KEYS:
        raise ValueError(
            f"group_from_dict expects 'group' to be one of {sorted(_GROUP_KEYS)}; got "
            f"{class_name!r}."
        )
    expected = _GROUP_KEYS[class_name]
    if not isinstance(keys, Mapping) or set(keys) != set(expected):
        raise ValueError(
            f"group_from_dict expects the 'keys' of a {class_name} to be "
            f"{{{_expected_text(expected)}}}; got {keys!r}."
        )
    for key in expected:
        value = keys[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"group_from_dict expects the {class_name}'s {key!r} to be a positive int; got "
                f"{value!r}."
            )
    return _group_from_keys(class_name, dict(keys))


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
        ValueError: If ``data`` misses a key or holds an invalid value (a group of another
            family, an unknown irrep id, a change of basis of the wrong shape or not inverse to
            ``change_of_basis_inv``), or the group already holds a different representation of
            that name.
    """
    keys = ("group", "name", "irreps", "change_of_basis", "change_of_basis_inv")
    if not isinstance(data, Mapping) or any(k not in data for k in keys):
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"representation_from_dict expects the keys {list(keys)}; got {got}.")
    group = group_from_dict(data["group"])
    name, irreps, registered = data["name"], data["irreps"], data.get("registered", False)
    nonlinearities = data.get("supported_nonlinearities", [])
    if not isinstance(name, str):
        raise ValueError(f"representation_from_dict expects 'name' to be a str; got {name!r}.")
    if not isinstance(registered, bool):
        raise ValueError(
            f"representation_from_dict expects 'registered' to be a bool; got {registered!r}."
        )
    if not isinstance(nonlinearities, list) or not all(isinstance(n, str) for n in nonlinearities):
        raise ValueError(
            "representation_from_dict expects 'supported_nonlinearities' to be a list of str; got "
            f"{nonlinearities!r}."
        )
    # Checked here, before escnn: it answers bad irreps and matrices with bare asserts, which
    # python -O strips (a wrong representation would be built).
    sizes = {tuple(i.id): i.size for i in group.irreps()}
    ids = [_tuples(i) for i in irreps] if isinstance(irreps, list) else None
    if not ids or any(not isinstance(i, tuple) or i not in sizes for i in ids):
        raise ValueError(
            f"representation_from_dict expects 'irreps' to be a non-empty list of irrep ids of "
            f"{group.name} (one of {[list(i) for i in sizes]}); got {irreps!r}."
        )
    size = sum(sizes[i] for i in ids)
    matrices = []
    for key in ("change_of_basis", "change_of_basis_inv"):
        try:
            matrix = np.asarray(data[key], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"representation_from_dict expects {key!r} to be a {size}x{size} matrix of "
                f"floats; got {data[key]!r:.80}."
            ) from error
        if matrix.shape != (size, size) or not np.all(np.isfinite(matrix)):
            raise ValueError(
                f"representation_from_dict expects {key!r} to be a finite {size}x{size} matrix "
                f"(the irreps' total size); got shape {matrix.shape}."
            )
        matrices.append(matrix)
    if not np.allclose(matrices[0] @ matrices[1], np.eye(size)):
        raise ValueError(
            "representation_from_dict expects 'change_of_basis_inv' to be the inverse of "
            "'change_of_basis'; their product is not the identity."
        )
    try:
        return _representation(
            group, name, ids, matrices[0], matrices[1], nonlinearities, {}, registered
        )
    except pickle.UnpicklingError as error:  # a name clash, reported as bad data
        raise ValueError(f"representation_from_dict: {error}") from error
