"""Fixtures of the elayers tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tensors here are tiny, and on a shared machine with few
    cores the thread pool's synchronization costs more than the arithmetic (tens of times here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
