"""Equivariant building blocks for PyTorch: linear maps, norms, MLPs, attention and transformers.

Every module maps features transforming by ``in_rep`` (on the last axis) to features transforming by
``out_rep``, for a finite escnn group: ``f(ρ_in(g) x) = ρ_out(g) f(x)``.
"""

from __future__ import annotations

from elayers._activation import ACTIVATIONS, Activation
from elayers._affine import eAffine
from elayers._attention import eMultiheadAttention, valid_head_counts
from elayers._linear import InvariantBias, eLinear
from elayers._mlp import eMLP, regular_copies
from elayers._module import eModule
from elayers._norm import eLayerNorm, eRMSNorm
from elayers._plain_transformer import (
    PositionalTransformerDecoder,
    PositionalTransformerDecoderLayer,
    PositionalTransformerEncoder,
    PositionalTransformerEncoderLayer,
)
from elayers._positional import (
    ATTENTION_POS_ENCODINGS,
    AttentionPosEncoding,
    PositionalMultiheadAttention,
    RelativePositionBias,
    RotaryEmbedding,
)
from elayers._transformer import (
    NORM_MODULES,
    NormModule,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    eTransformerEncoder,
    eTransformerEncoderLayer,
    make_norm,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_POS_ENCODINGS",
    "NORM_MODULES",
    "Activation",
    "AttentionPosEncoding",
    "InvariantBias",
    "NormModule",
    "PositionalMultiheadAttention",
    "PositionalTransformerDecoder",
    "PositionalTransformerDecoderLayer",
    "PositionalTransformerEncoder",
    "PositionalTransformerEncoderLayer",
    "RelativePositionBias",
    "RotaryEmbedding",
    "__version__",
    "eAffine",
    "eLayerNorm",
    "eLinear",
    "eMLP",
    "eModule",
    "eMultiheadAttention",
    "eRMSNorm",
    "eTransformerDecoder",
    "eTransformerDecoderLayer",
    "eTransformerEncoder",
    "eTransformerEncoderLayer",
    "make_norm",
    "regular_copies",
    "valid_head_counts",
]
