"""Model configurations: one source of truth, serializable, validated field by field."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import Any

import escnn.group as eg
import numpy as np
import pytest
import torch

from eregressors import (
    ConditionalUnet1D,
    ConditionalUnet1DConfig,
    CondTransformerRegressor,
    CondTransformerRegressorConfig,
    GenCondRegressor,
    RegressorConfig,
    config_from_dict,
    eConditionalUnet1D,
    eConditionalUnet1DConfig,
    eCondTransformerRegressor,
    eCondTransformerRegressorConfig,
)

D4 = eg.dihedral_group(4)
PLANE = D4.irrep(1, 1)
# A representation with a non-trivial orthogonal change of basis: stored by value.
ROTATED = eg.change_basis(
    PLANE + D4.trivial_representation,
    np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0],
    name="test-config-rotated",
)

Regressor = (
    eCondTransformerRegressor | CondTransformerRegressor | eConditionalUnet1D | ConditionalUnet1D
)
BUILDERS: dict[str, Callable[[], Regressor]] = {
    "equivariant": lambda: eCondTransformerRegressor(
        PLANE, ROTATED, None, 6, 3, 1, 2, 32, num_cond_layers=1, pos_encoding="relative"
    ),
    "baseline": lambda: CondTransformerRegressor(2, 3, None, 6, 3, 1, 2, 16, causal_attn=True),
    "eunet": lambda: eConditionalUnet1D(
        PLANE, ROTATED, cond_horizon=2, diffusion_step_embed_dim=8, down_dims=[16, 32], n_groups=2
    ),
    "unet": lambda: ConditionalUnet1D(
        2, 3, cond_horizon=2, diffusion_step_embed_dim=8, down_dims=(8, 16), n_groups=2
    ),
}
CONFIG_TYPES: dict[str, type[RegressorConfig]] = {
    "equivariant": eCondTransformerRegressorConfig,
    "baseline": CondTransformerRegressorConfig,
    "eunet": eConditionalUnet1DConfig,
    "unet": ConditionalUnet1DConfig,
}


def _inputs(model: GenCondRegressor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    cond_horizon = model.cond_horizon or 1
    X = torch.randn(3, 6, model.in_dim, generator=gen)
    Z = torch.randn(3, cond_horizon, model.cond_dim, generator=gen)
    return X, torch.tensor([1.0, 50.0, 999.0]), Z


@pytest.mark.parametrize("kind", BUILDERS)
def test_the_constructor_keeps_its_configuration_and_it_round_trips_through_json(
    kind: str,
) -> None:
    model = BUILDERS[kind]()
    config = model.config
    assert type(config) is CONFIG_TYPES[kind]
    data = config.to_dict()
    assert data["model"] == type(model).__name__
    as_json = json.loads(json.dumps(data))  # plain values only, or dumps raises
    assert type(config).from_dict(as_json) == config
    assert config_from_dict(as_json) == config
    assert type(config).from_dict(data) == config
    assert hash(config_from_dict(as_json)) == hash(config)


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_model_rebuilt_from_its_configuration_loads_the_weights_and_agrees_bit_for_bit(
    kind: str,
) -> None:
    model = BUILDERS[kind]().eval()
    stored = json.loads(json.dumps(model.config.to_dict()))
    rebuilt = config_from_dict(stored).build().eval()
    assert type(rebuilt) is type(model)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    X, k, Z = _inputs(model)
    with torch.no_grad():
        expected, got = model(X, k, Z), rebuilt(X, k, Z)
    assert torch.equal(expected, got)
    # Another model of the same configuration draws other weights: the load is what agrees.
    other = model.config.build()
    with torch.no_grad():
        assert not torch.equal(other.eval()(X, k, Z), expected)


def test_defaults_derived_from_other_fields_are_derived_again_after_replace() -> None:
    config = eCondTransformerRegressorConfig(
        in_rep=PLANE, cond_rep=PLANE, in_horizon=6, cond_horizon=3, num_layers=1,
        num_attention_heads=1, embedding_dim=24,
    )  # fmt: skip
    assert config.resolved_out_rep is PLANE
    assert config.resolved_max_relative_distance == 6
    assert config.resolved_step_emb_dim == 24
    longer = dataclasses.replace(config, in_horizon=9, embedding_dim=40)
    assert longer.resolved_max_relative_distance == 9
    assert longer.resolved_step_emb_dim == 40
    model = longer.build()
    assert model.max_relative_distance == 9
    assert model.out_rep is PLANE


# One valid configuration per model, and for every field a value that is refused: the error's type
# and a fragment of its message, which names the field.
VALID: dict[str, dict[str, Any]] = {
    "equivariant": dict(
        in_rep=PLANE, cond_rep=PLANE, in_horizon=4, cond_horizon=2, num_layers=1,
        num_attention_heads=1, embedding_dim=16,
    ),
    "baseline": dict(in_dim=2, cond_dim=2, in_horizon=4, cond_horizon=2, num_layers=1,
                     num_attention_heads=1, embedding_dim=8),
    "eunet": dict(in_rep=PLANE, cond_rep=PLANE, cond_horizon=2, down_dims=(16, 32), n_groups=2),
    "unet": dict(in_dim=2, cond_dim=2, cond_horizon=2, down_dims=(8, 16), n_groups=2),
}  # fmt: skip
OTHER_GROUP = eg.cyclic_group(3).irrep(1)
SKEWED = eg.change_basis(PLANE, np.array([[1.0, 0.5], [0.0, 1.0]]), name="test-config-skewed")
BAD: dict[str, list[tuple[str, object, type[Exception], str]]] = {
    "equivariant": [
        ("in_rep", 2, TypeError, "in_rep to be an escnn.group.Representation"),
        ("cond_rep", OTHER_GROUP, ValueError, "cond_rep: 'C3'"),
        ("out_rep", SKEWED, ValueError, "out_rep ('test-config-skewed') must have an orthogonal"),
        ("in_horizon", 0, ValueError, "in_horizon to be a positive int; got 0"),
        ("cond_horizon", 2.0, TypeError, "cond_horizon to be a positive int"),
        ("num_layers", True, TypeError, "num_layers to be a positive int"),
        ("num_attention_heads", 3, ValueError, "got num_attention_heads=3"),
        ("embedding_dim", 12, ValueError, "embedding_dim to be a multiple of the group order"),
        ("p_drop_emb", 1.0, ValueError, "p_drop_emb in [0, 1)"),
        ("p_drop_attn", "0.1", TypeError, "p_drop_attn to be a probability"),
        ("causal_attn", 1, TypeError, "causal_attn to be a bool"),
        ("num_cond_layers", -1, ValueError, "num_cond_layers to be an int >= 0"),
        ("norm_module", "batchnorm", ValueError, "norm_module to be one of"),
        ("init_scheme", "orthogonal", ValueError, "init_scheme to be one of"),
        ("step_emb_dim", 7, ValueError, "even step_emb_dim; got 7"),
        ("pos_encoding", "alibi", ValueError, "pos_encoding to be one of"),
        ("max_relative_distance", 0, ValueError, "max_relative_distance to be a positive int"),
        ("absolute_table", False, ValueError, "needs its tables; got absolute_table=False"),
        ("execution", "fourier", ValueError, "execution to be one of ['regular', 'spectral']"),
    ],
    "baseline": [
        ("in_dim", 0, ValueError, "in_dim to be a positive int; got 0"),
        ("cond_dim", -1, ValueError, "cond_dim to be a positive int; got -1"),
        ("out_dim", "2", TypeError, "out_dim to be a positive int"),
        ("in_horizon", None, TypeError, "in_horizon to be a positive int"),
        ("cond_horizon", 0, ValueError, "cond_horizon to be a positive int; got 0"),
        ("num_layers", 0, ValueError, "num_layers to be a positive int; got 0"),
        ("num_attention_heads", 3, ValueError, "to divide embedding_dim=8; got num_attention_"),
        ("embedding_dim", True, TypeError, "embedding_dim to be a positive int"),
        ("p_drop_emb", 1.5, ValueError, "p_drop_emb in [0, 1]; got 1.5"),
        ("p_drop_attn", None, TypeError, "p_drop_attn to be a probability"),
        ("causal_attn", "no", TypeError, "causal_attn to be a bool"),
        ("num_cond_layers", 1.0, TypeError, "num_cond_layers to be an int >= 0"),
        ("pos_encoding", "sinusoidal", ValueError, "pos_encoding to be one of"),
        ("max_relative_distance", -2, ValueError, "max_relative_distance to be a positive int"),
        ("absolute_table", 1, TypeError, "absolute_table to be a bool"),
    ],
    "eunet": [
        ("in_rep", "plane", TypeError, "in_rep to be an escnn.group.Representation"),
        ("cond_rep", OTHER_GROUP, ValueError, "in_rep, cond_rep and out_rep of the same group"),
        ("out_rep", 2, TypeError, "out_rep to be an escnn.group.Representation"),
        ("cond_horizon", 0, ValueError, "cond_horizon to be a positive int; got 0"),
        ("diffusion_step_embed_dim", 7, ValueError, "even diffusion_step_embed_dim"),
        ("down_dims", (16, 20), ValueError, "down_dims[1] = 20. Try 16 or 24"),
        ("kernel_size", 4, ValueError, "odd kernel_size"),
        ("n_groups", 4, ValueError, "n_groups to divide the number of regular copies"),
        ("cond_predict_scale", 1, TypeError, "cond_predict_scale to be a bool"),
        ("in_horizon", 0, ValueError, "in_horizon to be a positive int; got 0"),
        ("init_scheme", None, ValueError, "init_scheme to be one of"),
    ],
    "unet": [
        ("in_dim", 2.0, TypeError, "in_dim to be a positive int"),
        ("cond_dim", -3, ValueError, "cond_dim to be a positive int; got -3"),
        ("out_dim", 0, ValueError, "out_dim to be a positive int; got 0"),
        ("cond_horizon", None, TypeError, "cond_horizon to be a positive int"),
        ("diffusion_step_embed_dim", 0, ValueError, "diffusion_step_embed_dim to be a positive"),
        ("down_dims", 16, TypeError, "down_dims to be a non-empty sequence"),
        ("kernel_size", 2, ValueError, "odd kernel_size"),
        ("n_groups", 3, ValueError, "n_groups to divide every width of down_dims=[8, 16]"),
        ("cond_predict_scale", "yes", TypeError, "cond_predict_scale to be a bool"),
        ("in_horizon", -1, ValueError, "in_horizon to be a positive int; got -1"),
    ],
}
BAD_CASES = [
    pytest.param(kind, field, value, error, fragment, id=f"{kind}-{field}")
    for kind, cases in BAD.items()
    for field, value, error, fragment in cases
]


@pytest.mark.parametrize("kind", BAD)
def test_every_field_has_a_refused_case(kind: str) -> None:
    fields = {f.name for f in dataclasses.fields(CONFIG_TYPES[kind])}
    assert {case[0] for case in BAD[kind]} == fields
    CONFIG_TYPES[kind](**VALID[kind])  # the base of the cases is valid


@pytest.mark.parametrize(("kind", "field", "value", "error", "fragment"), BAD_CASES)
def test_an_invalid_field_is_refused_naming_it(
    kind: str, field: str, value: object, error: type[Exception], fragment: str
) -> None:
    overrides: dict[str, Any] = {field: value}
    if field == "absolute_table":
        overrides["pos_encoding"] = "absolute"
    with pytest.raises(error) as info:
        CONFIG_TYPES[kind](**{**VALID[kind], **overrides})
    assert fragment in str(info.value)
    assert field in str(info.value)


def test_from_dict_refuses_another_model_unknown_fields_and_non_dictionaries() -> None:
    data = CondTransformerRegressorConfig(**VALID["baseline"]).to_dict()
    with pytest.raises(ValueError, match="expects the configuration of a ConditionalUnet1D"):
        ConditionalUnet1DConfig.from_dict(data)
    with pytest.raises(ValueError, match=r"unknown fields \['depth'\]"):
        CondTransformerRegressorConfig.from_dict({**data, "depth": 3})
    with pytest.raises(TypeError, match="expects a dictionary; got list"):
        CondTransformerRegressorConfig.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'model' key naming one of"):
        config_from_dict({**data, "model": "MLP"})
    with pytest.raises(ValueError, match="p_drop_emb in"):
        config_from_dict({**data, "p_drop_emb": 2.0})  # values are checked on the way in


def test_from_config_refuses_another_models_configuration() -> None:
    with pytest.raises(
        TypeError, match="expects a configuration of type ConditionalUnet1DConfig; got Cond"
    ):
        ConditionalUnet1D.from_config(CondTransformerRegressorConfig(**VALID["baseline"]))


def test_configurations_are_frozen() -> None:
    config = ConditionalUnet1DConfig(**{**VALID["unet"], "down_dims": [8, 16]})
    assert config.down_dims == (8, 16)  # any sequence, stored as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_groups = 4  # type: ignore[misc]


def test_a_non_orthogonal_representation_of_a_unet_is_named() -> None:
    for field in ("cond_rep", "out_rep"):
        with pytest.raises(ValueError, match=rf"^{field} \('test-config-skewed'\) must have an"):
            eConditionalUnet1DConfig(**{**VALID["eunet"], field: SKEWED})
        with pytest.raises(ValueError, match=rf"^{field} \('test-config-skewed'\)"):
            eConditionalUnet1D(**{**VALID["eunet"], field: SKEWED})


@pytest.mark.parametrize("kind", BUILDERS)
def test_the_configuration_has_exactly_the_constructors_arguments(kind: str) -> None:
    # A constructor argument that is not a field would be lost by from_config and checkpoints.
    model_type = type(BUILDERS[kind]())
    arguments = list(inspect.signature(model_type.__init__).parameters)[1:]
    assert sorted(arguments) == sorted(f.name for f in dataclasses.fields(CONFIG_TYPES[kind]))
    assert model_type.config_type is CONFIG_TYPES[kind]


def test_a_bad_representation_dictionary_is_refused_naming_its_field() -> None:
    data = json.loads(json.dumps(BUILDERS["equivariant"]().config.to_dict()))
    data["cond_rep"]["irreps"] = [[7, 7]]
    with pytest.raises(ValueError, match=r"from_dict: field 'cond_rep': .*irrep ids of D4"):
        config_from_dict(data)
