"""Conditional transformer regressors (diffusion, flow matching), plain and equivariant."""

from __future__ import annotations

from eregressors._base import GenCondRegressor, OptStep
from eregressors._cond_transformer import CondTransformerRegressor
from eregressors._econd_transformer import eCondTransformerRegressor
from eregressors._normalizer import EquivariantNormalizer
from eregressors._optim import OptimGroup
from eregressors._sampling import (
    DiffusionScheduler,
    diffusion_sample,
    flow_matching_sample,
    unsafe_scheduler_options,
)
from eregressors._sinusoidal import SinusoidalPosEmb

__version__ = "0.1.0"

__all__ = [
    "CondTransformerRegressor",
    "DiffusionScheduler",
    "EquivariantNormalizer",
    "GenCondRegressor",
    "OptStep",
    "OptimGroup",
    "SinusoidalPosEmb",
    "__version__",
    "diffusion_sample",
    "eCondTransformerRegressor",
    "flow_matching_sample",
    "unsafe_scheduler_options",
]
