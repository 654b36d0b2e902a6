"""Tests of the causal attention masks."""

from __future__ import annotations

import pytest
import torch

from eregressors._masks import causal_memory_mask, causal_self_mask


@pytest.mark.parametrize("length", [1, 2, 5])
def test_self_mask(length: int) -> None:
    mask = causal_self_mask(length)
    assert mask.shape == (length, length)
    assert mask.dtype == torch.bool
    for t in range(length):
        for s in range(length):
            assert bool(mask[t, s]) == (s > t)


@pytest.mark.parametrize(("num_tokens", "num_cond"), [(1, 1), (4, 2), (2, 4), (3, 3)])
def test_memory_mask(num_tokens: int, num_cond: int) -> None:
    mask = causal_memory_mask(num_tokens, num_cond)
    assert mask.shape == (num_tokens, num_cond + 1)
    for t in range(num_tokens):
        assert not bool(mask[t, 0]), "the step token is always visible"
        for s in range(num_cond):
            assert bool(mask[t, s + 1]) == (s > t)
