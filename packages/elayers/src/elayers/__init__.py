"""Equivariant PyTorch building blocks: linear maps, norms, MLPs, attention, transformers, convs.

Every module maps features transforming by ``in_rep`` (on the last axis) to features transforming by
``out_rep``, for a finite escnn group: ``f(ρ_in(g) x) = ρ_out(g) f(x)``. The temporal convolutions
and ``eGroupNorm`` follow their torch counterparts instead: channels first, ``(B, rep.size, T)``.

Inference is explicit: :func:`export` turns any module tree into plain PyTorch (``torch.nn``
layers, for ``torch.export``, ONNX and machines without escnn; ``form="spectral"`` keeps the
spectral execution's block-diagonal computation, the ``PlainSpectral*`` modules), and
:func:`frozen` evaluates in place with the dense weights built once for the scope.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from elayers._activation import ACTIVATIONS, Activation
from elayers._affine import eAffine
from elayers._attention import eMultiheadAttention, valid_head_counts
from elayers._conv import PaddingMode, eConv1d, eConvTranspose1d, eGroupNorm
from elayers._export import EXPORT_FORMS, Exportable, ExportForm, export, frozen
from elayers._linear import InvariantBias, eLinear
from elayers._mlp import eMLP, regular_copies
from elayers._module import eModule, frozen_twin
from elayers._norm import eLayerNorm, eRMSNorm
from elayers._parametrization import (
    GroupConvParametrization,
    HomBasisParametrization,
    SpectralBlockParametrization,
    WeightParametrization,
    weight_parametrization,
)
from elayers._plain_spectral import (
    ChangeOfBasis,
    PlainSpectralDecoder,
    PlainSpectralDecoderLayer,
    PlainSpectralLinear,
    PlainSpectralMLP,
    PlainSpectralMultiheadAttention,
    PlainSpectralNorm,
    ThenChangeOfBasis,
)
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
from elayers._spectral import (
    copy_dropout,
    eSpectralDecoder,
    eSpectralDecoderLayer,
    eSpectralLinear,
    eSpectralMLP,
    eSpectralMultiheadAttention,
    eSpectralNorm,
    spectral_macs_per_token,
    to_regular_basis,
    to_spectral_basis,
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

# The installed distribution's version: one source (the repository's VERSION file, read at build
# time), never a second literal here.
try:
    __version__: str = _metadata.version("elayers")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_POS_ENCODINGS",
    "EXPORT_FORMS",
    "NORM_MODULES",
    "Activation",
    "AttentionPosEncoding",
    "ChangeOfBasis",
    "ExportForm",
    "Exportable",
    "GroupConvParametrization",
    "HomBasisParametrization",
    "InvariantBias",
    "NormModule",
    "PaddingMode",
    "PlainSpectralDecoder",
    "PlainSpectralDecoderLayer",
    "PlainSpectralLinear",
    "PlainSpectralMLP",
    "PlainSpectralMultiheadAttention",
    "PlainSpectralNorm",
    "PositionalMultiheadAttention",
    "PositionalTransformerDecoder",
    "PositionalTransformerDecoderLayer",
    "PositionalTransformerEncoder",
    "PositionalTransformerEncoderLayer",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SpectralBlockParametrization",
    "ThenChangeOfBasis",
    "WeightParametrization",
    "__version__",
    "copy_dropout",
    "eAffine",
    "eConv1d",
    "eConvTranspose1d",
    "eGroupNorm",
    "eLayerNorm",
    "eLinear",
    "eMLP",
    "eModule",
    "eMultiheadAttention",
    "eRMSNorm",
    "eSpectralDecoder",
    "eSpectralDecoderLayer",
    "eSpectralLinear",
    "eSpectralMLP",
    "eSpectralMultiheadAttention",
    "eSpectralNorm",
    "eTransformerDecoder",
    "eTransformerDecoderLayer",
    "eTransformerEncoder",
    "eTransformerEncoderLayer",
    "export",
    "frozen",
    "frozen_twin",
    "make_norm",
    "regular_copies",
    "spectral_macs_per_token",
    "to_regular_basis",
    "to_spectral_basis",
    "valid_head_counts",
    "weight_parametrization",
]
