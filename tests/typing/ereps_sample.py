"""A downstream user's program that builds groups and tests a model with ereps alone.

Pins, with ``assert_type`` under ``mypy --strict``, that ereps' re-exported group constructors
keep escnn's precise types (so nobody has to import escnn for them) and what ``ereps.testing``
returns; the ``# type: ignore[code]`` lines pin misuses mypy must report. It also runs (see
``test_samples.py``), so the pinned types are the ones returned.
"""

from __future__ import annotations

import torch
from escnn.group import CyclicGroup, DihedralGroup, DirectProductGroup, Icosahedral, Octahedral
from torch import Tensor
from typing_extensions import assert_type

import ereps
from ereps.testing import assert_compiles, assert_equivariant, default_tolerance, float_dtypes


def main() -> None:
    """Build groups from ereps and run the test helpers on a tiny equivariant map."""
    assert_type(ereps.cyclic_group(4), CyclicGroup)
    assert_type(ereps.dihedral_group(3), DihedralGroup)
    assert_type(ereps.octa_group(), Octahedral)
    assert_type(ereps.ico_group(), Icosahedral)
    assert_type(ereps.full_octa_group(), DirectProductGroup)
    c2 = ereps.cyclic_group(2)
    assert_type(ereps.direct_product(c2, c2), DirectProductGroup)

    rho = ereps.dihedral_group(3).regular_representation
    errors = assert_equivariant(torch.relu, rho, rho)
    assert_type(errors, dict[ereps.GroupElement, float])
    assert_type(float_dtypes(), tuple[torch.dtype, ...])
    assert_type(default_tolerance(torch.float32), float)
    with torch.no_grad():
        assert_type(assert_compiles(torch.relu, torch.randn(3)), Tensor)


def misuses() -> None:
    """Misuses mypy must reject (never called: they raise at run time too)."""
    ereps.cyclic_group("4")  # type: ignore[arg-type]
    assert_equivariant(torch.relu, "regular", "regular")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
