"""Conditional regressors (transformers, temporal U-Nets), plain and equivariant."""

from __future__ import annotations

from eregressors._base import GenCondRegressor, OptStep
from eregressors._cond_transformer import CondTransformerRegressor
from eregressors._econd_transformer import eCondTransformerRegressor
from eregressors._eunet import eConditionalUnet1D
from eregressors._optim import OptimGroup
from eregressors._plain_unet import PlainConditionalUnet1D
from eregressors._sinusoidal import SinusoidalPosEmb
from eregressors._unet import ConditionalUnet1D

__version__ = "0.1.0"

__all__ = [
    "CondTransformerRegressor",
    "ConditionalUnet1D",
    "GenCondRegressor",
    "OptStep",
    "OptimGroup",
    "PlainConditionalUnet1D",
    "SinusoidalPosEmb",
    "__version__",
    "eCondTransformerRegressor",
    "eConditionalUnet1D",
]
