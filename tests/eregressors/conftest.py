"""Shared fixtures of the eregressors tests."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    """Seed the random generators; run on one intra-op thread; restore the global state after.

    The models here are tiny: one thread is faster than two and immune to the OpenMP spin-waiting
    that makes a shared 2-core machine 100x slower under load.
    """
    random.seed(0)
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
