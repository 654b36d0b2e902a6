"""Conditional regressors (transformers, temporal U-Nets), plain and equivariant."""

from __future__ import annotations

from importlib import metadata as _metadata

from eregressors._base import GenCondRegressor, OptStep
from eregressors._cond_transformer import CondTransformerRegressor
from eregressors._config import (
    ConditionalUnet1DConfig,
    CondTransformerRegressorConfig,
    RegressorConfig,
    config_from_dict,
    eConditionalUnet1DConfig,
    eCondTransformerRegressorConfig,
)
from eregressors._econd_transformer import EXECUTIONS, Execution, eCondTransformerRegressor
from eregressors._eunet import eConditionalUnet1D
from eregressors._normalizer import EquivariantNormalizer
from eregressors._optim import OptimGroup
from eregressors._padding import POS_ENCODINGS, PosEncoding
from eregressors._plain import PlainCondTransformer, PlainNormalizer
from eregressors._plain_unet import PlainConditionalUnet1D
from eregressors._sampling import (
    DiffusionScheduler,
    diffusion_sample,
    flow_matching_sample,
    unsafe_scheduler_options,
)
from eregressors._sinusoidal import SinusoidalPosEmb, StepEmbedding
from eregressors._unet import ConditionalUnet1D

# The installed distribution's version: one source (the repository's VERSION file, read at build
# time), never a second literal here.
try:
    __version__: str = _metadata.version("eregressors")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "EXECUTIONS",
    "POS_ENCODINGS",
    "CondTransformerRegressor",
    "CondTransformerRegressorConfig",
    "ConditionalUnet1D",
    "ConditionalUnet1DConfig",
    "DiffusionScheduler",
    "EquivariantNormalizer",
    "Execution",
    "GenCondRegressor",
    "OptStep",
    "OptimGroup",
    "PlainCondTransformer",
    "PlainConditionalUnet1D",
    "PlainNormalizer",
    "PosEncoding",
    "RegressorConfig",
    "SinusoidalPosEmb",
    "StepEmbedding",
    "__version__",
    "config_from_dict",
    "diffusion_sample",
    "eCondTransformerRegressor",
    "eCondTransformerRegressorConfig",
    "eConditionalUnet1D",
    "eConditionalUnet1DConfig",
    "flow_matching_sample",
    "unsafe_scheduler_options",
]
