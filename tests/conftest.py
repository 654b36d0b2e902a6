"""Fixtures shared by every test folder."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

# Where lie_learn is absent (it has no wheels for Python 3.13+ and none built for numpy 2), escnn
# cannot even be imported until ereps has put its stand-in for lie_learn's wigner_D_matrix in
# place; test modules that build groups with escnn's own constructors rely on this import.
import ereps  # noqa: F401


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    """Seed every global random generator, and restore the default dtype afterwards."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
