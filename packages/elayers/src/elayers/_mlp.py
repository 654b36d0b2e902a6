"""Equivariant multi-layer perceptron."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

from elayers._activation import (
    Activation,
    apply_activation,
    plain_activation,
    resolve_activation,
)
from elayers._checks import check_bool, check_probability
from elayers._linear import eLinear
from elayers._module import eModule, frozen_twin
from ereps import (
    InitScheme,
    Representation,
    check_init_scheme,
    check_representation,
    check_same_group,
    direct_sum,
    group_order,
    is_permutation_representation,
)

__all__ = ["eMLP", "regular_copies"]


def regular_copies(rep_group_rep: Representation, units: int, what: str) -> Representation:
    """``units / |G|`` copies of the regular representation of ``rep_group_rep.group``."""
    group = rep_group_rep.group
    order = group_order(group)
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"{what} must be an int (a multiple of |G| = {order}); got {units!r}.")
    if units <= 0 or units % order != 0:
        raise ValueError(
            f"{what} must be a positive multiple of the group order |G| = {order} ({group.name}) "
            "so "
            f"that it holds whole copies of the regular representation; got {units}."
        )
    return direct_sum([group.regular_representation] * (units // order))


class eMLP(eModule):
    r"""An equivariant MLP: ``eLinear → σ → dropout → … → eLinear``.

    A pointwise activation :math:`\sigma` commutes with :math:`\rho(g)` for every :math:`\sigma`
    exactly when :math:`\rho(g)` is a permutation matrix, so hidden features live on permutation
    representations: by default copies of the regular representation (features are functions on
    the group). A hidden representation that is not a permutation representation is rejected.

    Args:
        in_rep: Representation of the input.
        out_rep: Representation of the output, of the same group.
        hidden_units: Width of each hidden layer, each a multiple of ``|G|``.
        hidden_reps: Alternatively, the hidden representations themselves (permutation ones).
        activation: Pointwise activation, by name (``relu``, ``gelu``, ``silu``, ...) or callable.
        bias: Whether the linear maps have invariant biases.
        dropout: Dropout probability after each activation.
        init_scheme: Initialization scheme of the linear maps.

    Raises:
        ValueError: On widths that are not multiples of ``|G|``, non-permutation hidden
            representations, both or neither of ``hidden_units``/``hidden_reps`` given, mixed
            groups.
    """

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        hidden_units: Sequence[int] | None = None,
        *,
        hidden_reps: Sequence[Representation] | None = None,
        activation: Activation = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
        init_scheme: InitScheme = "xavier_normal",
    ) -> None:
        check_representation(in_rep, "in_rep")
        check_representation(out_rep, "out_rep")
        check_same_group([in_rep, out_rep], ["in_rep", "out_rep"])
        check_init_scheme(init_scheme)
        if (hidden_units is None) == (hidden_reps is None):
            raise ValueError(
                "eMLP expects exactly one of hidden_units (widths, multiples of |G|) or "
                "hidden_reps; "
                f"got hidden_units={hidden_units!r}, hidden_reps={hidden_reps!r}."
            )
        check_probability("eMLP", "dropout", dropout)
        check_bool("eMLP", "bias", bias)
        for arg, seq in (("hidden_units", hidden_units), ("hidden_reps", hidden_reps)):
            if seq is not None and (isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence)):
                raise TypeError(
                    f"eMLP expects {arg} to be a sequence (e.g. a list) of one entry per hidden "
                    f"layer; got {seq!r} ({type(seq).__name__})."
                )
        if hidden_units is not None:
            reps = [
                regular_copies(in_rep, u, f"hidden_units[{i}]") for i, u in enumerate(hidden_units)
            ]
        else:
            reps = list(hidden_reps or ())
            for i, rep in enumerate(reps):
                check_representation(rep, f"hidden_reps[{i}]")
                check_same_group([in_rep, rep], ["in_rep", f"hidden_reps[{i}]"])
                if not is_permutation_representation(rep):
                    raise ValueError(
                        f"hidden_reps[{i}] ({rep.name!r}) is not a permutation representation, so "
                        "a "
                        "pointwise activation would break equivariance on it. Use copies of the "
                        "regular representation (hidden_units) or another permutation "
                        "representation."
                    )
        super().__init__(in_rep, out_rep)
        self.activation = resolve_activation(activation)
        self.activation_name = activation if isinstance(activation, str) else None
        sizes = [in_rep, *reps, out_rep]
        self.layers = nn.ModuleList(
            eLinear(a, b, bias=bias, init_scheme=init_scheme) for a, b in itertools.pairwise(sizes)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP on the last axis.

        Args:
            x: Tensor of shape ``(..., in_rep.size)``.

        Returns:
            Tensor of shape ``(..., out_rep.size)``.
        """
        self._check_input(x)
        twin = frozen_twin(self)
        if twin is not None:
            result: Tensor = twin(x)
            return result
        *hidden, last = self.layers
        for layer in hidden:
            x = self.dropout(apply_activation(self.activation, self.activation_name, layer(x)))
        out: Tensor = last(x)
        return out

    def export(self) -> nn.Sequential:
        """``torch.nn.Sequential`` of ``Linear``, activation and ``Dropout`` modules.

        In the order of :meth:`forward` (see :meth:`eModule.export`).
        """
        *hidden, last = self.layers
        parts: list[nn.Module] = []
        for layer in hidden:
            if not isinstance(layer, eLinear):  # an internal invariant (python -O keeps it)
                raise RuntimeError("internal error: expected isinstance(layer, eLinear)")
            parts.append(layer.export())
            parts.append(plain_activation(self.activation, self.activation_name))
            parts.append(nn.Dropout(self.dropout.p))
        if not isinstance(last, eLinear):  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: expected isinstance(last, eLinear)")
        parts.append(last.export())
        return nn.Sequential(*parts).train(self.training)

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
