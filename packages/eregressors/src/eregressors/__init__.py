"""Conditional transformer regressors (diffusion, flow matching), plain and equivariant."""

from __future__ import annotations

from eregressors._base import GenCondRegressor, OptStep
from eregressors._cond_transformer import CondTransformerRegressor
from eregressors._econd_transformer import eCondTransformerRegressor
from eregressors._optim import OptimGroup
from eregressors._padding import POS_ENCODINGS, PosEncoding
from eregressors._sinusoidal import SinusoidalPosEmb

__version__ = "0.1.0"

__all__ = [
    "POS_ENCODINGS",
    "CondTransformerRegressor",
    "GenCondRegressor",
    "OptStep",
    "OptimGroup",
    "PosEncoding",
    "SinusoidalPosEmb",
    "__version__",
    "eCondTransformerRegressor",
]
