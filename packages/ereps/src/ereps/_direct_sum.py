"""Direct sums of representations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ereps._escnn import Representation, directsum
from ereps._validation import check_representation, check_same_group

__all__ = ["direct_sum"]


def direct_sum(reps: Sequence[Representation], name: str | None = None) -> Representation:
    r"""Return the direct sum :math:`\rho = \bigoplus_i \rho_i` of representations of one group.

    :math:`\rho(g)` is block diagonal with blocks :math:`\rho_i(g)` in the order given, so a feature
    vector is the concatenation of the features of each summand. The change of basis is the block
    diagonal of the summands' changes of basis.

    Args:
        reps: The summands, all of the same finite group.
        name: Name of the result. Defaults to the summands' names joined by ``⊕``, runs of one
            name collapsed (``"3×regular⊕irrep_1"``).

    Returns:
        A representation of size ``Σ_i reps[i].size``.

    Raises:
        ValueError: If ``reps`` is empty or the summands are of different groups.
        TypeError: If a summand is not an escnn representation.

    Examples:
        >>> import ereps
        >>> G = ereps.cyclic_group(4)
        >>> direct_sum([G.regular_representation, G.trivial_representation]).size
        5
    """
    reps = list(reps)
    if not reps:
        raise ValueError("direct_sum expects at least one representation; got an empty sequence.")
    for i, rep in enumerate(reps):
        check_representation(rep, f"reps[{i}]")
    check_same_group(reps, [f"reps[{i}]" for i in range(len(reps))])
    if name is None:
        name = "⊕".join(f"{n}×{rep_name}" if n > 1 else rep_name for rep_name, n in _runs(reps))
    registered = reps[0].group.representations.get(name)
    if registered is not None:
        # escnn refuses to create a second representation under a name the group has registered
        # (its irreps, regular, trivial, ...). The same representation is simply returned.
        q = _block_diag([np.asarray(r.change_of_basis, dtype=np.float64) for r in reps])
        irreps = [tuple(i) for r in reps for i in r.irreps]
        same = [tuple(i) for i in registered.irreps] == irreps and bool(
            np.allclose(registered.change_of_basis, q)
        )
        if not same:
            raise ValueError(
                f"direct_sum: the name {name!r} is already taken by a different representation of "
                f"{reps[0].group.name}; pass another name."
            )
        return registered
    return directsum(reps, name=name)


def _block_diag(blocks: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    size = sum(b.shape[0] for b in blocks)
    out = np.zeros((size, size))
    offset = 0
    for b in blocks:
        out[offset : offset + b.shape[0], offset : offset + b.shape[0]] = b
        offset += b.shape[0]
    return out


def _runs(reps: Sequence[Representation]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for rep in reps:
        if runs and runs[-1][0] == rep.name:
            runs[-1] = (rep.name, runs[-1][1] + 1)
        else:
            runs.append((rep.name, 1))
    return runs
