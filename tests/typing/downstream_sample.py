"""A downstream user's program, type-checked with ``mypy --strict`` against the installed packages.

Every ``assert_type`` pins what users see of the public API of ``ereps``, ``elayers`` and
``eregressors``; the ``# type: ignore[code]`` lines pin misuses mypy must report (``--strict``
includes ``warn_unused_ignores``, so the check fails if such an error disappears). It also runs
(``python -m tests.typing.downstream_sample``), so the pinned types are the ones returned.
"""

from __future__ import annotations

import escnn.group as eg
import torch
from torch import Tensor
from typing_extensions import assert_type

from elayers import (
    GroupConvParametrization,
    HomBasisParametrization,
    WeightParametrization,
    eLinear,
    eMLP,
    eMultiheadAttention,
    eRMSNorm,
    eTransformerEncoderLayer,
    export,
    frozen,
    weight_parametrization,
)
from eregressors import (
    CondTransformerRegressor,
    EquivariantNormalizer,
    PlainCondTransformer,
    RegressorConfig,
    config_from_dict,
    eCondTransformerRegressor,
    eCondTransformerRegressorConfig,
    flow_matching_sample,
)
from ereps import (
    GroupHomomorphismBasis,
    Representation,
    act,
    check_equivariance,
    direct_sum,
    invariant_orthogonal_projector,
    isotypic_decomp_rep,
)


def main() -> None:
    """Build one object of each layer and check the types users rely on."""
    group = eg.dihedral_group(4)
    plane = group.irrep(1, 1)
    rho = direct_sum([plane, group.trivial_representation])
    assert_type(rho, Representation)
    assert_type(isotypic_decomp_rep(rho), Representation)
    assert_type(invariant_orthogonal_projector(rho), Tensor)

    basis = GroupHomomorphismBasis(rho, group.regular_representation)
    assert_type(basis.dim, int)
    assert_type(basis(torch.randn(basis.dim)), Tensor)

    embed = direct_sum([group.regular_representation] * 2)
    linear = eLinear(rho, embed)
    assert_type(linear(torch.randn(3, rho.size)), Tensor)
    assert_type(linear.weight, Tensor)
    # The weight parametrizations: one interface, the factory's two kinds.
    assert_type(linear.parametrization, WeightParametrization)
    param = weight_parametrization(rho, embed)
    assert_type(param, GroupConvParametrization | HomBasisParametrization)
    assert_type(param.initialize("xavier_normal"), list[Tensor])
    assert_type(param.synthesize(param.initialize("xavier_normal")), Tensor)
    assert_type(param.num_weights, int)
    assert_type(eMLP(rho, rho, [16])(torch.randn(2, rho.size)), Tensor)
    assert_type(eRMSNorm(embed)(torch.randn(2, embed.size)), Tensor)
    attention = eMultiheadAttention(embed, num_heads=2)
    x = torch.randn(2, 5, embed.size)
    out, weights = attention(x, x, x, need_weights=False)
    assert_type(out, Tensor)
    assert_type(weights, Tensor | None)
    layer = eTransformerEncoderLayer(embed, 2, dim_feedforward=32, dropout=0.0)
    assert_type(layer(x), Tensor)

    model = eCondTransformerRegressor(rho, rho, None, 4, 2, 1, 2, 16)
    y = model(torch.randn(3, 4, rho.size), 10, torch.randn(3, 2, rho.size))
    assert_type(y, Tensor)
    model.eval()
    assert_type(model.check_equivariance(), float)
    assert_type(model.configure_optimizers(), torch.optim.AdamW)
    # The configuration: typed, and the model rebuilt from it is of the same class.
    assert_type(model.config, eCondTransformerRegressorConfig)
    assert_type(model.config.build(), eCondTransformerRegressor)
    assert_type(eCondTransformerRegressor.from_config(model.config), eCondTransformerRegressor)
    assert_type(config_from_dict(model.config.to_dict()), RegressorConfig)
    baseline = CondTransformerRegressor(3, 3, 3, 4, 2, num_layers=1, num_attention_heads=2)
    assert_type(baseline(torch.randn(1, 4, 3), torch.tensor(5), torch.randn(1, 2, 3)), Tensor)
    assert_type(export(model), torch.nn.Module)
    assert_type(model.export(), PlainCondTransformer)
    # The spectral form (a regular-execution model is converted on the way).
    assert_type(export(model, form="spectral"), torch.nn.Module)
    assert_type(model.export_spectral(), PlainCondTransformer)
    assert_type(linear.export(), torch.nn.Linear)
    with torch.no_grad(), frozen(model) as same:
        assert_type(same, eCondTransformerRegressor)
        assert_type(same(torch.randn(3, 4, rho.size), 10, torch.randn(3, 2, rho.size)), Tensor)
    normalizer = EquivariantNormalizer(rho).fit(torch.randn(10, rho.size))
    assert_type(normalizer, EquivariantNormalizer)
    assert_type(normalizer.unnormalize(normalizer(torch.randn(2, rho.size))), Tensor)
    free = eCondTransformerRegressor(rho, None, None, 4, 0, 1, 2, 16).eval()
    assert_type(free(torch.randn(3, 4, rho.size), 1), Tensor)
    assert_type(flow_matching_sample(free, torch.randn(1, 4, rho.size), steps=2), Tensor)
    # Padding masks (keyword-only) and positional encodings.
    roped = eCondTransformerRegressor(rho, rho, None, 4, 2, 1, 2, 32, pos_encoding="rope")
    pad = torch.zeros(3, 4, dtype=torch.bool)
    y = roped(torch.randn(3, 4, rho.size), 10, torch.randn(3, 2, rho.size), X_padding_mask=pad)
    assert_type(y, Tensor)
    relative = CondTransformerRegressor(3, 3, 3, 4, 2, 1, 2, 16, pos_encoding="relative")
    assert_type(
        relative(torch.randn(1, 4, 3), 5, torch.randn(1, 2, 3), Z_padding_mask=None), Tensor
    )
    rope_attention = eMultiheadAttention(embed, num_heads=1, pos_encoding="rope")
    out, _ = rope_attention(x, x, x, query_pos=torch.arange(5), key_pos=torch.arange(5) + 2)
    assert_type(out, Tensor)

    g = group.elements[1]
    assert_type(act(rho, g, torch.randn(rho.size)), Tensor)
    assert_type(check_equivariance(linear, rho, embed), float)


def unet_types() -> None:
    """The temporal convolutions (channels first) and the U-Nets."""
    from elayers import eConv1d, eConvTranspose1d, eGroupNorm
    from eregressors import ConditionalUnet1D, PlainConditionalUnet1D, eConditionalUnet1D

    group = eg.cyclic_group(4)
    plane = group.irrep(1)
    copies = direct_sum([group.regular_representation] * 2)
    x = torch.randn(2, copies.size, 7)
    assert_type(eConv1d(copies, copies, 3, padding=1)(x), Tensor)
    assert_type(eConv1d(copies, copies, 3).export(), torch.nn.Conv1d)
    assert_type(eConvTranspose1d(copies, plane, 4, 2, 1)(x), Tensor)
    assert_type(eGroupNorm(copies, 2)(x), Tensor)
    model = eConditionalUnet1D(plane, plane, None, 2, 8, (8, 16), 3, 1)
    assert_type(model(torch.randn(3, 13, 2), 10, torch.randn(3, 2, 2)), Tensor)
    assert_type(model.export(), PlainConditionalUnet1D)
    assert_type(model.check_equivariance(), float)
    baseline = ConditionalUnet1D(2, 2, 2, 2, 8, (8, 16), 3, 1)
    assert_type(baseline.export()(torch.randn(1, 5, 2), 3.0, torch.randn(1, 2, 2)), Tensor)


def misuses(rho: Representation, linear: eLinear) -> None:
    """Misuses mypy must reject (never called: they raise at run time too)."""
    linear("not a tensor")  # type: ignore[arg-type]
    eLinear(rho)  # type: ignore[call-arg]
    eCondTransformerRegressor(rho, rho, None, 4, 2, 1, 2, 16, norm_module="batchnorm")  # type: ignore[arg-type]
    eCondTransformerRegressor(rho, rho, None, 4, 2, 1, 2, 16, pos_encoding="alibi")  # type: ignore[arg-type]
    model = eCondTransformerRegressor(rho, rho, None, 4, 2, 1, 2, 16)
    x = torch.randn(1, 4, rho.size)
    model(x, 1, x, torch.zeros(1, 4, dtype=torch.bool))  # type: ignore[call-arg]
    model(x, 1, x, padding=None)  # type: ignore[call-arg]
    model.config.in_horizon = 8  # type: ignore[misc]


if __name__ == "__main__":
    main()
    unet_types()
