"""The public surface of ereps."""

from __future__ import annotations

import ereps


def test_all_names_exist_and_are_sorted_by_kind() -> None:
    for name in ereps.__all__:
        assert hasattr(ereps, name), name
    assert len(set(ereps.__all__)) == len(ereps.__all__)
    public = {n for n in dir(ereps) if not n.startswith("_")} - {"annotations"}
    # Every public attribute that is not a submodule is exported.
    modules = {n for n in public if type(getattr(ereps, n)).__name__ == "module"}
    assert public - modules <= set(ereps.__all__)


def test_required_names() -> None:
    required = {
        "Representation",
        "Group",
        "GroupElement",
        "direct_sum",
        "isotypic_decomp_rep",
        "isotypic_slices",
        "invariant_orthogonal_projector",
        "GroupHomomorphismBasis",
        "InitScheme",
        "rep_matrix",
        "act",
        "regular_multiplicity",
        "check_equivariance",
    }
    assert required <= set(ereps.__all__)
    assert set(ereps.INIT_SCHEMES) == {
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
    }
    assert isinstance(ereps.__version__, str)
