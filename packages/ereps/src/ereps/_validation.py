"""Argument checks on representations, shared by every package built on ereps.

Public (re-exported by :mod:`ereps`): layers call them first in their constructors, so that bad
arguments fail before any work, with a message that names the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ereps._escnn import Representation

__all__ = ["check_orthogonal", "check_representation", "check_same_group"]


def check_representation(rep: object, what: str) -> Representation:
    """Return ``rep`` if it is a representation of a finite group, else raise.

    Args:
        rep: The object to check.
        what: The argument's name, used in the error message (e.g. ``"in_rep"``).

    Returns:
        ``rep`` itself, typed as a :class:`Representation`.

    Raises:
        TypeError: If ``rep`` is not an escnn representation.
        ValueError: If it is a representation of a continuous group.
    """
    if not isinstance(rep, Representation):
        raise TypeError(
            f"{what} must be an escnn.group.Representation; got {type(rep).__name__}: {rep!r}."
        )
    if rep.group.continuous:
        raise ValueError(
            f"{what} must be a representation of a finite group; got one of the continuous group "
            f"{rep.group.name!r}."
        )
    return rep


def check_same_group(reps: Sequence[Representation], names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every representation is of the same group.

    Args:
        reps: The representations, at least one.
        names: The argument name of each representation, in the same order (for the message).

    Raises:
        ValueError: If two representations are of different groups; the message lists the group
            of each argument.
    """
    first = reps[0].group
    for rep, name in zip(reps, names, strict=True):
        if rep.group != first:
            listing = ", ".join(f"{n}: {r.group.name!r}" for r, n in zip(reps, names, strict=True))
            raise ValueError(
                f"All representations must be of the same group; got {listing}. "
                f"Rebuild {name} from the group {first.name!r}."
            )


def check_orthogonal(rep: Representation, what: str, atol: float = 1e-8) -> None:
    """Raise ``ValueError`` unless the change of basis of ``rep`` is orthogonal.

    escnn's irreps of finite groups are orthogonal, so an orthogonal change of basis ``Q`` makes
    every ``ρ(g) = Q (⊕_k ρ_k(g)) Qᵀ`` orthogonal: the property that norms, projections and
    attention scores rely on (``‖ρ(g)x‖ = ‖x‖``).

    Args:
        rep: The representation to check.
        what: The argument's name, used in the error message.
        atol: Largest accepted entry of ``|QᵀQ - I|``.

    Raises:
        ValueError: If ``max |QᵀQ - I| > atol``.
    """
    q = np.asarray(rep.change_of_basis, dtype=np.float64)
    err = float(np.abs(q.T @ q - np.eye(q.shape[0])).max())
    if err > atol:
        raise ValueError(
            f"{what} ({rep.name!r}) must have an orthogonal change of basis (so that every ρ(g) is "
            f"orthogonal); got ‖QᵀQ - I‖_max = {err:.2e}. Orthonormalize it, e.g. with the polar "
            "factor of Q from scipy.linalg.polar."
        )
