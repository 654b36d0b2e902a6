"""Wigner D-matrices of SO(3): the one function escnn needs from ``lie_learn``.

escnn imports ``lie_learn.representations.SO3.wigner_d.wigner_D_matrix`` at import time and calls
it (in the real basis) to build the irreps of SO(3), whose restrictions give the irreps of the
octahedral and icosahedral groups. ``lie_learn`` ships compiled wheels only for Python 3.10-3.12
built against numpy 1, so :mod:`ereps._escnn` installs :func:`wigner_D_matrix` below in its place
when the real package cannot be imported (see :func:`install_lie_learn_shim`).

The math, in the conventions of lie_learn's default basis ``('real', 'quantum', 'centered',
'cs')``:

* Complex basis ``|l, m⟩``, ``m = -l..l`` stored at index ``m + l`` ("centered"), with the
  Condon-Shortley phase: ``J_± |m⟩ = sqrt((l ∓ m)(l ± m + 1)) |m ± 1⟩`` and
  ``J_y = (J_+ - J_-) / (2i)``.
* Wigner's small d-matrix ``d(β) = exp(-i β J_y)``. It is evaluated from the eigendecomposition of
  the Hermitian ``J_y`` (eigenvalues ``-l..l``), which stays accurate for large ``l`` where the
  factorial sum of Wigner's formula cancels catastrophically.
* ``D_c(α, β, γ)[m, n] = exp(i m α) d(β)[m, n] exp(i n γ)`` (escnn passes ZYZ Euler angles).
* The real basis: ``D(α, β, γ) = C^† D_c(α, β, γ) C`` with the unitary ``C`` whose column for the
  real index ``+f`` (``f > 0``) is ``(|-f⟩ + (-1)^f |f⟩) / √2``, for ``-f`` is
  ``i ((-1)^f |f⟩ - |-f⟩) / √2``, and for ``0`` is ``|0⟩``. The result is real orthogonal.
"""

from __future__ import annotations

import functools
import math
import sys
import types
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["install_lie_learn_shim", "wigner_D_matrix"]

_DEFAULT_BASIS = ("real", "quantum", "centered", "cs")
_SHIM_MODULES = (
    "lie_learn",
    "lie_learn.representations",
    "lie_learn.representations.SO3",
    "lie_learn.representations.SO3.wigner_d",
)
# Marks the modules below as ours, so that the real lie_learn is never mistaken for the shim.
SHIM_MARKER = "__ereps_shim__"


@functools.cache
def _jy_eigen(degree: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.complex128]]:
    """Eigenvalues and eigenvectors of ``J_y`` in the centered complex basis of a degree."""
    l = degree  # noqa: E741  (the physicists' name)
    m = np.arange(-l, l, dtype=np.float64)  # m = -l .. l-1: J_+ maps |m⟩ to |m + 1⟩
    j_plus = np.sqrt((l - m) * (l + m + 1.0))
    jy = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    idx = np.arange(2 * l)
    jy[idx + 1, idx] = j_plus / 2j  # the J_+ part of (J_+ - J_-) / (2i)
    jy[idx, idx + 1] = -j_plus / 2j  # -J_-, the adjoint of J_+
    eigenvalues, eigenvectors = np.linalg.eigh(jy)
    return eigenvalues, eigenvectors


@functools.cache
def _real_to_complex(degree: int) -> npt.NDArray[np.complex128]:
    """The unitary ``C`` whose columns are the real basis vectors in the complex basis."""
    l = degree  # noqa: E741
    c = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    c[l, l] = 1.0
    s = 1.0 / math.sqrt(2.0)
    for f in range(1, l + 1):
        sign = -1.0 if f % 2 else 1.0
        c[l - f, l + f] = s
        c[l + f, l + f] = sign * s
        c[l - f, l - f] = -1j * s
        c[l + f, l - f] = 1j * sign * s
    return c


def _angle(value: Any, name: str) -> float:
    array = np.asarray(value)
    if array.shape != () or not np.isrealobj(array):
        raise ValueError(
            f"wigner_D_matrix expects {name} to be a real scalar (an Euler angle in radians); "
            f"got an array of shape {array.shape} and dtype {array.dtype}."
        )
    return float(array)


def wigner_D_matrix(
    l: int,  # noqa: E741  (lie_learn's signature)
    alpha: Any,
    beta: Any,
    gamma: Any,
    field: str = "real",
    normalization: str = "quantum",
    order: str = "centered",
    condon_shortley: str = "cs",
) -> npt.NDArray[np.float64]:
    r"""Return the Wigner D-matrix ``D^l(α, β, γ)`` of SO(3) for ZYZ Euler angles.

    A drop-in for ``lie_learn.representations.SO3.wigner_d.wigner_D_matrix`` in its default basis
    (quantum normalization, centered order, Condon-Shortley phase) and the real field: what
    escnn uses. See the module docstring for the conventions:
    :math:`D^l(α, β, γ) = C^† e^{i α J_z} e^{-i β J_y} e^{i γ J_z} C` in the real field.

    Args:
        l: Degree, ``l >= 0``.
        alpha: First Euler angle (about z), a real scalar.
        beta: Second Euler angle (about y), a real scalar.
        gamma: Third Euler angle (about z), a real scalar.
        field: Only ``"real"``.
        normalization: Only ``"quantum"``.
        order: Only ``"centered"``.
        condon_shortley: Only ``"cs"``.

    Returns:
        Real orthogonal array of shape ``(2l + 1, 2l + 1)``.

    Raises:
        ValueError: If ``l`` is not a non-negative integer, an angle is not a real scalar, or the
            basis is not one of the supported ones.
    """
    if isinstance(l, bool) or not isinstance(l, int | np.integer) or l < 0:
        raise ValueError(f"wigner_D_matrix expects a degree l >= 0 (an int); got {l!r}.")
    degree = int(l)
    if (field, normalization, order, condon_shortley) != _DEFAULT_BASIS:
        raise ValueError(
            "wigner_D_matrix (ereps' replacement for lie_learn) supports only the basis "
            f"(field, normalization, order, condon_shortley) = {_DEFAULT_BASIS}; got "
            f"{(field, normalization, order, condon_shortley)}. Install lie_learn for the others."
        )
    a, b, g = _angle(alpha, "alpha"), _angle(beta, "beta"), _angle(gamma, "gamma")
    eigenvalues, v = _jy_eigen(degree)
    small_d = (v * np.exp(-1j * b * eigenvalues)) @ v.conj().T
    m = np.arange(-degree, degree + 1, dtype=np.float64)
    d_complex = np.exp(1j * m * a)[:, None] * small_d * np.exp(1j * m * g)[None, :]
    c = _real_to_complex(degree)
    d_real = c.conj().T @ d_complex @ c
    # The imaginary part is round-off (a few ulps): the real basis makes D real by construction.
    return np.ascontiguousarray(d_real.real, dtype=np.float64)


def install_lie_learn_shim() -> None:
    """Register modules ``lie_learn...SO3.wigner_d`` that provide :func:`wigner_D_matrix`.

    Only the import path escnn uses is provided. Modules left in ``sys.modules`` by a failed
    import of the real package are replaced.
    """
    for name in _SHIM_MODULES:
        sys.modules.pop(name, None)
    parent: types.ModuleType | None = None
    for name in _SHIM_MODULES:
        module = types.ModuleType(
            name, "ereps' stand-in for lie_learn (only SO3.wigner_d.wigner_D_matrix)."
        )
        setattr(module, SHIM_MARKER, True)
        module.__path__ = []  # a package, so that the submodule import finds its child
        sys.modules[name] = module
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], module)
        parent = module
    if parent is None:  # an internal invariant (python -O keeps it)
        raise RuntimeError("internal error: expected parent is not None")
    parent.wigner_D_matrix = wigner_D_matrix  # type: ignore[attr-defined]
