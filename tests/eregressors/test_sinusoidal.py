"""Tests of SinusoidalPosEmb."""

from __future__ import annotations

import math

import pytest
import torch

from eregressors import SinusoidalPosEmb


@pytest.mark.parametrize("dim", [2, 8, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_values(dim: int, dtype: torch.dtype) -> None:
    emb = SinusoidalPosEmb(dim)
    k = torch.tensor([0.0, 1.0, 250.0], dtype=dtype)
    out = emb(k)
    assert out.shape == (3, dim)
    assert out.dtype == dtype
    half = dim // 2
    freqs = torch.tensor([10_000.0 ** (-i / half) for i in range(half)], dtype=torch.float64)
    expected = torch.cat(
        (torch.sin(k.double()[:, None] * freqs), torch.cos(k.double()[:, None] * freqs)), dim=-1
    )
    torch.testing.assert_close(
        out.double(), expected, atol=1e-4 if dtype == torch.float32 else 1e-12, rtol=0
    )
    # k = 0: sines vanish, cosines are one.
    torch.testing.assert_close(out[0], torch.cat((torch.zeros(half), torch.ones(half))).to(dtype))


def test_unit_norm_per_frequency() -> None:
    out = SinusoidalPosEmb(16)(torch.linspace(0, 1000, 7))
    torch.testing.assert_close(out.norm(dim=-1), torch.full((7,), math.sqrt(8.0)))


def test_integer_steps() -> None:
    out = SinusoidalPosEmb(4)(torch.arange(3))
    assert out.dtype == torch.get_default_dtype()


def test_distinguishes_neighbouring_steps() -> None:
    out = SinusoidalPosEmb(128)(torch.tensor([10.0, 11.0]))
    cos = torch.nn.functional.cosine_similarity(out[0], out[1], dim=0)
    assert cos < 0.99


def test_no_parameters() -> None:
    assert list(SinusoidalPosEmb(8).parameters()) == []
    assert "dim=8" in repr(SinusoidalPosEmb(8))


@pytest.mark.parametrize("dim", [0, 1, 3, -2])
def test_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match=f"dim to be a positive even int; got {dim}"):
        SinusoidalPosEmb(dim)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"steps of shape \(B,\); got \(2, 1\)"):
        SinusoidalPosEmb(4)(torch.zeros(2, 1))
    with pytest.raises(TypeError, match="positive even int"):
        SinusoidalPosEmb(4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_period > 0"):
        SinusoidalPosEmb(4, max_period=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_steps_embedded_in_float32(dtype: torch.dtype) -> None:
    k = torch.tensor([37.0, 200.0])
    out = SinusoidalPosEmb(16)(k.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), SinusoidalPosEmb(16)(k).to(dtype).float())
