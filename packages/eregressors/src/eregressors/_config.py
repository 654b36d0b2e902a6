r"""Model configurations: one typed, frozen, validated dataclass per regressor.

A configuration is the single source of truth of a model's architecture. Each regressor's
constructor builds one from its arguments (so the seed's signatures keep working) and keeps it as
``model.config``; ``Model.from_config(config)`` (or ``config.build()``) builds the model again.
Every argument is checked once, here, in ``__post_init__``: a ``TypeError`` for the wrong kind of
object, a ``ValueError`` for a value out of range, each naming the field (the constructor's
argument of the same name), what was expected and what was received.

*Serialization.* ``config.to_dict()`` is a JSON-serializable dictionary (plain numbers, strings,
lists, ``None``) with a ``"model"`` key naming the regressor; ``from_dict`` (or
:func:`config_from_dict`, which dispatches on that key) is its inverse, also for the JSON form
(tuples come back from lists). The equivariant models' representations are stored by value with
:func:`ereps.representation_to_dict` (group, irreps, change of basis), so a checkpoint that holds
``{"model_config": model.config.to_dict(), "state_dict": model.state_dict()}`` is all a user needs
to rebuild the model, in another process, without pickling escnn objects::

    model = config_from_dict(ckpt["model_config"]).build()
    model.load_state_dict(ckpt["state_dict"])

*Defaults derived from other fields* (``out_rep=None`` for ``in_rep``, ``step_emb_dim=None``,
``max_relative_distance=None``) are stored as given (``None``), so that
``dataclasses.replace(config, in_horizon=...)`` derives them again; the ``resolved_*``
properties give the values the model uses.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias, cast, get_args

from torch import Tensor

from elayers import NORM_MODULES, NormModule, valid_head_counts
from eregressors._padding import PosEncoding, check_pos_encoding
from ereps import (
    INIT_SCHEMES,
    Group,
    InitScheme,
    Representation,
    check_orthogonal,
    group_order,
    representation_from_dict,
    representation_to_dict,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from eregressors._cond_transformer import CondTransformerRegressor
    from eregressors._econd_transformer import eCondTransformerRegressor
    from eregressors._eunet import eConditionalUnet1D
    from eregressors._unet import ConditionalUnet1D

Execution = Literal["regular", "spectral"]
EXECUTIONS: tuple[str, ...] = get_args(Execution)

__all__ = [
    "EXECUTIONS",
    "CondTransformerRegressorConfig",
    "ConditionalUnet1DConfig",
    "Execution",
    "RegressorConfig",
    "check_bool",
    "check_positive_int",
    "check_probability",
    "check_scheme",
    "check_sizes",
    "config_from_dict",
    "describe",
    "eCondTransformerRegressorConfig",
    "eConditionalUnet1DConfig",
    "is_real_number",
]


# --------------------------------------------------------------------------------------------------
# The argument checks of the regressors (one implementation, used by the configurations and by
# GenCondRegressor's own constructor).
# --------------------------------------------------------------------------------------------------


def describe(x: object) -> str:
    """Name the received object in error messages: a shape for tensors, the type otherwise."""
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"an object of type {type(x).__name__}"


def is_real_number(value: object) -> bool:
    """Whether ``value`` is a real number and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(owner: str, name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError`` (no truthiness coercion)."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner} expects {name} to be a bool (True or False); got {value!r}.")
    return value


def check_probability(owner: str, name: str, value: object, *, allow_one: bool = False) -> float:
    """Return ``value`` as a float if it is a real number in ``[0, 1)`` (``[0, 1]``), else raise."""
    interval = "[0, 1]" if allow_one else "[0, 1)"
    if not is_real_number(value):
        raise TypeError(
            f"{owner} expects {name} to be a probability, a float in {interval}; got {value!r} "
            f"({type(value).__name__})."
        )
    p = float(value)  # type: ignore[arg-type]
    if not (0.0 <= p <= 1.0 if allow_one else 0.0 <= p < 1.0):
        raise ValueError(f"{owner} expects {name} in {interval}; got {value!r}.")
    return p


def check_positive_int(owner: str, name: str, value: object) -> None:
    """Raise unless ``value`` is a positive ``int`` (``bool`` excluded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} expects {name} to be a positive int; got {describe(value)}.")
    if value < 1:
        raise ValueError(f"{owner} expects {name} to be a positive int; got {value}.")


def _check_count(owner: str, name: str, value: object) -> None:
    """Raise unless ``value`` is an ``int >= 0`` (``bool`` excluded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} expects {name} to be an int >= 0; got {value!r}.")
    if value < 0:
        raise ValueError(f"{owner} expects {name} to be an int >= 0; got {value!r}.")


def check_sizes(
    owner: str,
    in_dim: object,
    out_dim: object,
    cond_dim: object,
    in_horizon: object,
    cond_horizon: object,
) -> bool:
    """Check the sizes every regressor has (see :class:`GenCondRegressor`).

    ``in_horizon`` and ``cond_horizon`` may be ``None`` (no limit); ``cond_dim`` ``None`` or ``0``
    means no conditioning, which needs ``cond_horizon`` ``None`` or ``0``.

    Returns:
        Whether the model is without conditioning.
    """
    unconditional = cond_dim is None or (
        isinstance(cond_dim, int) and not isinstance(cond_dim, bool) and cond_dim == 0
    )
    for name, value in (("in_dim", in_dim), ("out_dim", out_dim)):
        check_positive_int(owner, name, value)
    if not unconditional:
        check_positive_int(owner, "cond_dim", cond_dim)
    if in_horizon is not None:
        check_positive_int(owner, "in_horizon", in_horizon)
    if unconditional:
        if cond_horizon not in (None, 0) or isinstance(cond_horizon, bool):
            raise ValueError(
                f"{owner} without conditioning (cond_dim={cond_dim!r}) takes no conditioning "
                f"tokens: expected cond_horizon=0; got {cond_horizon!r}. Pass a positive "
                "cond_dim to condition on Z."
            )
    elif cond_horizon is not None:
        check_positive_int(owner, "cond_horizon", cond_horizon)
    return unconditional


def _check_reps(owner: str, reps: Mapping[str, object]) -> Group:
    """Escnn representations of one finite group; return the group."""
    for arg, rep in reps.items():
        if not isinstance(rep, Representation):
            raise TypeError(
                f"{owner} expects {arg} to be an escnn.group.Representation; got "
                f"{type(rep).__name__}."
            )
    checked = {arg: rep for arg, rep in reps.items() if isinstance(rep, Representation)}
    group = checked["in_rep"].group
    if group.continuous:
        raise ValueError(
            f"{owner} expects representations of a finite group; got the continuous group "
            f"{group.name!r}."
        )
    if any(rep.group != group for rep in checked.values()):
        listing = ", ".join(f"{arg}: {rep.group.name!r}" for arg, rep in checked.items())
        raise ValueError(
            f"{owner} expects in_rep, cond_rep and out_rep of the same group; got {listing}."
        )
    return group


def check_scheme(owner: str, name: str, scheme: object) -> InitScheme:
    """Return ``scheme`` if it is one of ``INIT_SCHEMES``, else raise ``ValueError``."""
    if not isinstance(scheme, str) or scheme not in INIT_SCHEMES:
        raise ValueError(
            f"{owner} expects {name} to be one of {list(INIT_SCHEMES)}; got {scheme!r}."
        )
    return cast("InitScheme", scheme)  # one of the literals, checked above


def _check_positional(
    owner: str, pos_encoding: object, absolute_table: object, max_relative_distance: object
) -> None:
    """The positional options both transformer regressors share (after ``pos_encoding``)."""
    if not isinstance(absolute_table, bool):
        raise TypeError(f"{owner} expects absolute_table to be a bool; got {absolute_table!r}.")
    if pos_encoding == "absolute" and not absolute_table:
        raise ValueError(
            f"{owner} with pos_encoding='absolute' needs its tables; got absolute_table=False. "
            "Use pos_encoding='relative' or 'rope' for a model without them."
        )
    check_positive_int(owner, "max_relative_distance", max_relative_distance)


# --------------------------------------------------------------------------------------------------
# Serialization shared by the four configurations.
# --------------------------------------------------------------------------------------------------

_REP_FIELDS = ("in_rep", "cond_rep", "out_rep")


class _Serializable:
    """``to_dict`` / ``from_dict`` of a configuration dataclass (mixin)."""

    #: The regressor this configuration describes (the ``"model"`` key of ``to_dict``).
    model_name: ClassVar[str]

    def kwargs(self) -> dict[str, Any]:
        """The fields by name: the keyword arguments of the model's constructor."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dictionary: ``{"model": model_name, field: value, ...}``.

        Representations become :func:`ereps.representation_to_dict` dictionaries, tuples lists.
        """
        data: dict[str, Any] = {"model": self.model_name}
        for name, value in self.kwargs().items():
            if name in _REP_FIELDS and value is not None:
                value = representation_to_dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The configuration of :meth:`to_dict`'s dictionary (or of its JSON form).

        Raises:
            TypeError: If ``data`` is not a dictionary, or a field has the wrong kind of value.
            ValueError: If it describes another model, has unknown fields or invalid values.
        """
        return cls(**cls._fields_from_dict(data))

    @classmethod
    def _fields_from_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        owner = f"{cls.__name__}.from_dict"
        if not isinstance(data, Mapping):
            raise TypeError(f"{owner} expects a dictionary; got {type(data).__name__}.")
        model = data.get("model", cls.model_name)
        if model != cls.model_name:
            raise ValueError(
                f"{owner} expects the configuration of a {cls.model_name}; got one of {model!r}. "
                "Use eregressors.config_from_dict to read any regressor's configuration."
            )
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names - {"model"})
        if unknown:
            raise ValueError(f"{owner} got unknown fields {unknown}; known: {sorted(names)}.")
        fields: dict[str, Any] = {}
        for name, value in data.items():
            if name == "model":
                continue
            if name in _REP_FIELDS and isinstance(value, Mapping):
                try:
                    value = representation_from_dict(value)
                except ValueError as error:  # which field's dictionary was bad
                    raise ValueError(f"{owner}: field {name!r}: {error}") from error
            elif name == "down_dims" and isinstance(value, list):
                value = tuple(value)
            fields[name] = value
        return fields


# --------------------------------------------------------------------------------------------------
# The configurations
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class eCondTransformerRegressorConfig(_Serializable):
    r"""Configuration of :class:`eCondTransformerRegressor` (fields: its constructor's arguments).

    Attributes:
        in_rep: Representation :math:`\rho_{\text{in}}` of the input tokens.
        cond_rep: Representation of the conditioning tokens; ``None`` without conditioning (then
            ``cond_horizon`` must be ``0``).
        out_rep: Output representation; ``None`` for ``in_rep``.
        in_horizon: Maximum input length ``T_x``.
        cond_horizon: Maximum conditioning length ``T_z`` (``0`` without conditioning).
        num_layers: Decoder layers of the trunk.
        num_attention_heads: Attention heads; must divide ``embedding_dim / |G|``.
        embedding_dim: Token width, a multiple of ``|G|``.
        p_drop_emb: Dropout on the embedded tokens, in ``[0, 1)``.
        p_drop_attn: Dropout inside the transformer layers, in ``[0, 1)``.
        causal_attn: Whether to mask the future.
        num_cond_layers: Encoder layers over the memory; ``0`` selects the eMLP.
        norm_module: ``"rmsnorm"`` or ``"layernorm"``.
        init_scheme: Initialization of the linear maps.
        step_emb_dim: Sinusoidal step features (even); ``None`` for ``embedding_dim`` rounded up
            to an even number.
        pos_encoding: ``"absolute"``, ``"relative"`` or ``"rope"``.
        max_relative_distance: ``K`` of ``"relative"``; ``None`` for
            ``max(in_horizon, cond_horizon + 1)``.
        absolute_table: Whether ``"relative"``/``"rope"`` also add the learned tables.
        execution: ``"regular"`` or ``"spectral"``: how the trunk computes (the same function).

    Raises:
        TypeError: If a field has the wrong kind of value (a representation that is not an
            escnn representation, a bool for an int, a string for a probability, ...).
        ValueError: If a value is out of range; the message names the field.

    Examples:
        >>> import ereps
        >>> rho = ereps.cyclic_group(4).irrep(1)
        >>> config = eCondTransformerRegressorConfig(
        ...     in_rep=rho,
        ...     cond_rep=rho,
        ...     in_horizon=8,
        ...     cond_horizon=2,
        ...     num_layers=1,
        ...     num_attention_heads=2,
        ...     embedding_dim=16,
        ... )
        >>> eCondTransformerRegressorConfig.from_dict(config.to_dict()) == config
        True
    """

    model_name: ClassVar[str] = "eCondTransformerRegressor"

    in_rep: Representation
    cond_rep: Representation | None
    out_rep: Representation | None = None
    in_horizon: int
    cond_horizon: int
    num_layers: int
    num_attention_heads: int
    embedding_dim: int
    p_drop_emb: float = 0.1
    p_drop_attn: float = 0.1
    causal_attn: bool = False
    num_cond_layers: int = 0
    norm_module: NormModule = "rmsnorm"
    init_scheme: InitScheme = "xavier_uniform"
    step_emb_dim: int | None = None
    pos_encoding: PosEncoding = "absolute"
    max_relative_distance: int | None = None
    absolute_table: bool = True
    execution: Execution = "regular"

    def __post_init__(self) -> None:
        """Check every field (the order of the constructor's arguments)."""
        name = self.model_name
        # In argument order (error messages list them so); no cond_rep without conditioning.
        reps: dict[str, object] = {"in_rep": self.in_rep}
        if self.cond_rep is not None:
            reps["cond_rep"] = self.cond_rep
        reps["out_rep"] = self.resolved_out_rep
        group = _check_reps(name, reps)
        for arg in ("in_horizon", "num_layers", "num_attention_heads", "embedding_dim"):
            check_positive_int(name, arg, getattr(self, arg))
        cond_horizon = self.cond_horizon
        if self.cond_rep is not None:
            check_positive_int(name, "cond_horizon", cond_horizon)
        elif cond_horizon != 0 or isinstance(cond_horizon, bool):
            raise ValueError(
                f"{name} without conditioning (cond_rep=None) takes no conditioning tokens: "
                f"expected cond_horizon=0; got {cond_horizon!r}. Pass a cond_rep to condition on Z."
            )
        embedding_dim, heads = self.embedding_dim, self.num_attention_heads
        order = group_order(group)
        if embedding_dim % order != 0:
            lower = max(order, embedding_dim - embedding_dim % order)
            raise ValueError(
                f"{name} expects embedding_dim to be a multiple of the group order |G| = {order} "
                f"({group.name}) so that tokens are whole copies of the regular representation; "
                f"got {embedding_dim}. Try {lower} or {lower + order}."
            )
        copies = embedding_dim // order
        if copies % heads != 0:
            raise ValueError(
                f"{name} expects num_attention_heads to divide the {copies} regular copies of the "
                f"embedding (embedding_dim / |G| = {embedding_dim} / {order}) so that every head "
                f"takes whole copies; got num_attention_heads={heads}. Valid head "
                f"counts: {valid_head_counts(copies)}."
            )
        _check_count(name, "num_cond_layers", self.num_cond_layers)
        if not isinstance(self.norm_module, str) or self.norm_module not in NORM_MODULES:
            raise ValueError(
                f"{name} expects norm_module to be one of {list(NORM_MODULES)}; "
                f"got {self.norm_module!r}."
            )
        check_scheme(name, "init_scheme", self.init_scheme)
        for arg in ("p_drop_emb", "p_drop_attn"):
            check_probability(name, arg, getattr(self, arg))
        check_bool(name, "causal_attn", self.causal_attn)
        # Each representation by its own name: the layers would report cond_rep as in_rep.
        for arg, rep in reps.items():
            check_orthogonal(rep, arg)  # type: ignore[arg-type]
        check_pos_encoding(name, self.pos_encoding)
        if self.pos_encoding == "rope" and copies // heads < 2:
            raise ValueError(
                f"{name} with pos_encoding='rope' rotates pairs of regular copies and needs at "
                f"least 2 copies per head; got {copies} copies and {heads} heads. "
                f"Valid head counts: {[h for h in valid_head_counts(copies) if copies // h >= 2]}."
            )
        _check_positional(
            name, self.pos_encoding, self.absolute_table, self.resolved_max_relative_distance
        )
        check_positive_int(name, "step_emb_dim", self.resolved_step_emb_dim)
        if self.resolved_step_emb_dim % 2 != 0:
            raise ValueError(f"{name} expects an even step_emb_dim; got {self.step_emb_dim}.")
        if not isinstance(self.execution, str) or self.execution not in EXECUTIONS:
            raise ValueError(
                f"{name} expects execution to be one of {list(EXECUTIONS)}; got {self.execution!r}."
            )

    @property
    def resolved_out_rep(self) -> Representation:
        """``out_rep``, or ``in_rep`` when it is ``None``."""
        return self.in_rep if self.out_rep is None else self.out_rep

    @property
    def resolved_step_emb_dim(self) -> int:
        """``step_emb_dim``, or ``embedding_dim`` rounded up to an even number."""
        if self.step_emb_dim is None:
            return 2 * math.ceil(self.embedding_dim / 2)
        return self.step_emb_dim

    @property
    def resolved_max_relative_distance(self) -> int:
        """``max_relative_distance``, or ``max(in_horizon, cond_horizon + 1)``."""
        if self.max_relative_distance is None:
            return max(self.in_horizon, self.cond_horizon + 1)
        return self.max_relative_distance

    def build(self) -> eCondTransformerRegressor:
        """A new model of this configuration (freshly initialized)."""
        from eregressors._econd_transformer import eCondTransformerRegressor

        return eCondTransformerRegressor.from_config(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CondTransformerRegressorConfig(_Serializable):
    """Configuration of :class:`CondTransformerRegressor` (fields: its constructor's arguments).

    Attributes:
        in_dim: Feature size ``d_x`` of the input tokens.
        cond_dim: Feature size ``d_z`` of the conditioning tokens; ``None`` or ``0`` without
            conditioning (then ``cond_horizon`` must be ``0``).
        out_dim: Feature size of the output tokens; ``None`` for ``in_dim``.
        in_horizon: Maximum input length ``T_x``.
        cond_horizon: Maximum conditioning length ``T_z``.
        num_layers: Decoder layers of the trunk.
        num_attention_heads: Attention heads; must divide ``embedding_dim``.
        embedding_dim: Token width ``E``.
        p_drop_emb: Dropout on the embedded tokens, in ``[0, 1]``.
        p_drop_attn: Dropout inside the transformer layers, in ``[0, 1]``.
        causal_attn: Whether to mask the future.
        num_cond_layers: Encoder layers over the memory; ``0`` selects the MLP.
        pos_encoding: ``"absolute"``, ``"relative"`` or ``"rope"``.
        max_relative_distance: ``K`` of ``"relative"``; ``None`` for
            ``max(in_horizon, cond_horizon + 1)``.
        absolute_table: Whether ``"relative"``/``"rope"`` also add the learned tables.

    Raises:
        TypeError: If a field has the wrong kind of value.
        ValueError: If a value is out of range; the message names the field.
    """

    model_name: ClassVar[str] = "CondTransformerRegressor"

    in_dim: int
    cond_dim: int | None
    out_dim: int | None = None
    in_horizon: int
    cond_horizon: int
    num_layers: int = 6
    num_attention_heads: int = 6
    embedding_dim: int = 768
    p_drop_emb: float = 0.1
    p_drop_attn: float = 0.1
    causal_attn: bool = False
    num_cond_layers: int = 0
    pos_encoding: PosEncoding = "absolute"
    max_relative_distance: int | None = None
    absolute_table: bool = True

    def __post_init__(self) -> None:
        """Check every field."""
        name = self.model_name
        for arg in ("in_horizon", "num_layers", "num_attention_heads", "embedding_dim"):
            check_positive_int(name, arg, getattr(self, arg))
        _check_count(name, "num_cond_layers", self.num_cond_layers)
        embedding_dim, heads = self.embedding_dim, self.num_attention_heads
        if embedding_dim % heads != 0:
            valid = [h for h in range(1, embedding_dim + 1) if embedding_dim % h == 0]
            raise ValueError(
                f"{name} expects num_attention_heads to divide embedding_dim={embedding_dim}; got "
                f"num_attention_heads={heads}. Valid head counts: {valid}."
            )
        for arg in ("p_drop_emb", "p_drop_attn"):
            check_probability(name, arg, getattr(self, arg), allow_one=True)
        check_bool(name, "causal_attn", self.causal_attn)
        check_pos_encoding(name, self.pos_encoding)
        if self.pos_encoding == "rope" and embedding_dim // heads < 2:
            raise ValueError(
                f"{name} with pos_encoding='rope' needs a head width of at least 2; got "
                f"embedding_dim / num_attention_heads = {embedding_dim // heads}."
            )
        unconditional = check_sizes(
            name,
            self.in_dim,
            self.resolved_out_dim,
            self.cond_dim,
            self.in_horizon,
            self.cond_horizon,
        )
        if not unconditional:  # check_sizes lets None (no limit) through; this model has one
            check_positive_int(name, "cond_horizon", self.cond_horizon)
        _check_positional(
            name, self.pos_encoding, self.absolute_table, self.resolved_max_relative_distance
        )

    @property
    def resolved_out_dim(self) -> int:
        """``out_dim``, or ``in_dim`` when it is ``None``."""
        return self.in_dim if self.out_dim is None else self.out_dim

    @property
    def resolved_max_relative_distance(self) -> int:
        """``max_relative_distance``, or ``max(in_horizon, cond_horizon + 1)``."""
        if self.max_relative_distance is None:
            return max(self.in_horizon, (self.cond_horizon or 0) + 1)
        return self.max_relative_distance

    def build(self) -> CondTransformerRegressor:
        """A new model of this configuration (freshly initialized)."""
        from eregressors._cond_transformer import CondTransformerRegressor

        return CondTransformerRegressor.from_config(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _UnetFields(_Serializable):
    """The fields both U-Net configurations share (documented by each) and their checks."""

    cond_horizon: int = 1
    diffusion_step_embed_dim: int = 256
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 3
    n_groups: int = 8
    cond_predict_scale: bool = False
    in_horizon: int | None = None

    def _check_unet_fields(self) -> tuple[int, ...]:
        """Check the shared fields; store ``down_dims`` as a tuple of ints and return it."""
        owner = self.model_name
        check_positive_int(owner, "cond_horizon", self.cond_horizon)
        step_dim = self.diffusion_step_embed_dim
        check_positive_int(owner, "diffusion_step_embed_dim", step_dim)
        if step_dim % 2 != 0:
            raise ValueError(
                f"{owner} expects an even diffusion_step_embed_dim (sines and cosines); got "
                f"{step_dim}."
            )
        down_dims: object = self.down_dims
        if isinstance(down_dims, (str, bytes)) or not isinstance(down_dims, Sequence):
            raise TypeError(
                f"{owner} expects down_dims to be a non-empty sequence of positive ints (the "
                f"width of each level); got {down_dims!r}."
            )
        if len(down_dims) == 0:
            raise ValueError(f"{owner} expects at least one level in down_dims; got {down_dims!r}.")
        for i, width in enumerate(down_dims):
            check_positive_int(owner, f"down_dims[{i}]", width)
        kernel_size = self.kernel_size
        check_positive_int(owner, "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"{owner} expects an odd kernel_size (padding kernel_size // 2 keeps the length); "
                f"got {kernel_size}. Try {kernel_size - 1} or {kernel_size + 1}."
            )
        check_positive_int(owner, "n_groups", self.n_groups)
        if not isinstance(self.cond_predict_scale, bool):
            raise TypeError(
                f"{owner} expects cond_predict_scale to be a bool; got {self.cond_predict_scale!r}."
            )
        dims = tuple(int(w) for w in down_dims)
        object.__setattr__(self, "down_dims", dims)  # frozen: the one normalization
        return dims


@dataclasses.dataclass(frozen=True, kw_only=True)
class eConditionalUnet1DConfig(_UnetFields):
    """Configuration of :class:`eConditionalUnet1D` (fields: its constructor's arguments).

    Attributes:
        in_rep: Representation of the input tokens ``X``.
        cond_rep: Representation of the conditioning tokens ``Z``, of the same group.
        out_rep: Representation of the output tokens; ``None`` for ``in_rep``.
        cond_horizon: Number of conditioning tokens ``T_z``.
        diffusion_step_embed_dim: Width of the (invariant) step embedding (even).
        down_dims: Channel widths of the levels, each a multiple of ``|G|`` (a tuple; any
            sequence is accepted and stored as a tuple).
        kernel_size: Odd kernel size of the residual blocks' convolutions.
        n_groups: Groups of every group norm; must divide every width's number of regular copies.
        cond_predict_scale: Whether FiLM predicts a scale as well as a bias.
        in_horizon: Maximum ``T_x``, or ``None`` for no limit.
        init_scheme: Initialization of every linear map and kernel.

    Raises:
        TypeError: If a field has the wrong kind of value.
        ValueError: If a value is out of range; the message names the field.
    """

    model_name: ClassVar[str] = "eConditionalUnet1D"

    in_rep: Representation
    cond_rep: Representation
    out_rep: Representation | None = None
    init_scheme: InitScheme = "xavier_normal"

    def __post_init__(self) -> None:
        """Check every field; store ``down_dims`` as a tuple."""
        name = self.model_name
        reps = {"in_rep": self.in_rep, "cond_rep": self.cond_rep, "out_rep": self.resolved_out_rep}
        group = _check_reps(name, reps)
        dims = self._check_unet_fields()
        check_scheme(name, "init_scheme", self.init_scheme)
        check_sizes(
            name,
            self.in_rep.size,
            self.resolved_out_rep.size,
            self.cond_rep.size,
            self.in_horizon,
            self.cond_horizon,
        )
        # Read once: escnn's order() of direct-product groups rebuilds every element.
        order = group_order(group)
        for i, width in enumerate(dims):
            if width % order != 0:
                lower = max(order, width - width % order)
                raise ValueError(
                    f"{name} expects every width of down_dims to be a multiple of the group order "
                    f"|G| = {order} ({group.name}) so that channels are whole copies of the "
                    f"regular representation; got down_dims[{i}] = {width}. Try {lower} or "
                    f"{lower + order}."
                )
        copies = [w // order for w in dims]
        if any(c % self.n_groups != 0 for c in copies):
            valid = [g for g in range(1, min(copies) + 1) if all(c % g == 0 for c in copies)]
            raise ValueError(
                f"{name} expects n_groups to divide the number of regular copies of every width "
                f"(down_dims / |G| = {copies}) so that every group norm group holds whole copies; "
                f"got n_groups={self.n_groups}. Valid values: {valid}."
            )
        # Each representation by its own name: the layers would report cond_rep as in_rep.
        for arg, rep in reps.items():
            check_orthogonal(rep, arg)

    @property
    def resolved_out_rep(self) -> Representation:
        """``out_rep``, or ``in_rep`` when it is ``None``."""
        return self.in_rep if self.out_rep is None else self.out_rep

    def build(self) -> eConditionalUnet1D:
        """A new model of this configuration (freshly initialized)."""
        from eregressors._eunet import eConditionalUnet1D

        return eConditionalUnet1D.from_config(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConditionalUnet1DConfig(_UnetFields):
    """Configuration of :class:`ConditionalUnet1D` (fields: its constructor's arguments).

    Attributes:
        in_dim: Feature size of the input tokens.
        cond_dim: Feature size of the conditioning tokens.
        out_dim: Feature size of the output tokens; ``None`` for ``in_dim``.
        cond_horizon: Number of conditioning tokens ``T_z``.
        diffusion_step_embed_dim: Width of the step embedding (even).
        down_dims: Channel widths of the levels (stored as a tuple).
        kernel_size: Odd kernel size of the residual blocks' convolutions.
        n_groups: Groups of every group norm; must divide every width.
        cond_predict_scale: Whether FiLM predicts a scale as well as a bias.
        in_horizon: Maximum ``T_x``, or ``None`` for no limit.

    Raises:
        TypeError: If a field has the wrong kind of value.
        ValueError: If a value is out of range; the message names the field.
    """

    model_name: ClassVar[str] = "ConditionalUnet1D"

    in_dim: int
    cond_dim: int
    out_dim: int | None = None

    def __post_init__(self) -> None:
        """Check every field; store ``down_dims`` as a tuple."""
        name = self.model_name
        dims = self._check_unet_fields()
        bad = [w for w in dims if w % self.n_groups != 0]
        if bad:
            valid = [g for g in range(1, min(dims) + 1) if all(w % g == 0 for w in dims)]
            raise ValueError(
                f"{name} expects n_groups to divide every width of down_dims={list(dims)} (group "
                f"norm); got n_groups={self.n_groups}, which does not divide {bad}. Valid values: "
                f"{valid}."
            )
        check_sizes(name, self.in_dim, self.resolved_out_dim, self.cond_dim, self.in_horizon, None)

    @property
    def resolved_out_dim(self) -> int:
        """``out_dim``, or ``in_dim`` when it is ``None``."""
        return self.in_dim if self.out_dim is None else self.out_dim

    def build(self) -> ConditionalUnet1D:
        """A new model of this configuration (freshly initialized)."""
        from eregressors._unet import ConditionalUnet1D

        return ConditionalUnet1D.from_config(self)


#: Any regressor's configuration.
RegressorConfig: TypeAlias = (
    eCondTransformerRegressorConfig
    | CondTransformerRegressorConfig
    | eConditionalUnet1DConfig
    | ConditionalUnet1DConfig
)

_CONFIGS: dict[str, type[RegressorConfig]] = {
    c.model_name: c
    for c in (
        eCondTransformerRegressorConfig,
        CondTransformerRegressorConfig,
        eConditionalUnet1DConfig,
        ConditionalUnet1DConfig,
    )
}


def config_from_dict(data: Mapping[str, Any]) -> RegressorConfig:
    """Read any regressor's configuration from its ``to_dict()`` (or JSON) form.

    Args:
        data: A dictionary with a ``"model"`` key naming the regressor.

    Returns:
        The configuration; ``config_from_dict(data).build()`` builds the model.

    Raises:
        TypeError: If ``data`` is not a dictionary.
        ValueError: If ``"model"`` is missing or names no regressor of this package, or a field
            is invalid.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"config_from_dict expects a dictionary; got {type(data).__name__}.")
    model = data.get("model")
    if model not in _CONFIGS:
        raise ValueError(
            f"config_from_dict expects a 'model' key naming one of {sorted(_CONFIGS)}; got "
            f"{model!r}."
        )
    return _CONFIGS[model].from_dict(data)
