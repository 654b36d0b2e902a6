"""Equivariant linear maps and invariant biases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elayers._checks import check_bool
from elayers._module import eModule, frozen_twin
from elayers._parametrization import WeightParametrization, weight_parametrization
from elayers._plain import Bias
from ereps import (
    GroupHomomorphismBasis,
    InitScheme,
    Representation,
    check_init_scheme,
    check_orthogonal,
    check_representation,
    check_same_group,
    group_order,
    regular_multiplicity,
)

__all__ = ["InvariantBias", "eLinear", "invariant_bias_or_none", "plain_linear", "trivial_columns"]


def trivial_columns(rep: Representation) -> Tensor:
    """Columns of the change of basis spanning the invariant subspace: ``(rep.size, m_trivial)``."""
    trivial = tuple(rep.group.trivial_representation.irreps[0])
    cols, offset = [], 0
    for irrep_id in rep.irreps:
        size = rep.group.irrep(*irrep_id).size
        if tuple(irrep_id) == trivial:
            cols.append(offset)
        offset += size
    q = torch.as_tensor(rep.change_of_basis, dtype=torch.float64)
    return q[:, cols].contiguous()


def plain_linear(weight: Tensor, bias: Tensor | None, training: bool) -> nn.Linear:
    """A ``torch.nn.Linear`` holding copies of ``weight`` ``(out, in)`` and ``bias`` ``(out,)``."""
    out_features, in_features = weight.shape
    layer = nn.Linear(
        in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            if layer.bias is None:  # an internal invariant (python -O keeps it)
                raise RuntimeError("internal error: built with bias=True just above")
            layer.bias.copy_(bias)
    return layer.train(training)


class InvariantBias(eModule):
    r"""A learnable vector in the invariant subspace of ``rep``: ``b = Q_0 β`` with ``ρ(g) b = b``.

    ``Q_0`` holds the columns of the change of basis that span the trivial isotypic subspace, so the
    bias has one parameter per copy of the trivial irrep (for ``c`` regular copies: one per copy,
    the constant function on the group). Adding it commutes with the group action.

    Args:
        rep: An orthogonal representation of a finite group with at least one trivial irrep.

    Raises:
        ValueError: If ``rep`` has no trivial irrep (its only invariant vector is 0).
    """

    def __init__(self, rep: Representation) -> None:
        check_representation(rep, "rep")
        check_orthogonal(rep, "rep")
        super().__init__(rep, rep)
        basis = trivial_columns(rep)
        if basis.shape[1] == 0:
            raise ValueError(
                f"InvariantBias needs a representation with a trivial irrep; {rep.name!r} "
                f"(irreps {rep.irreps}) has none, so its only invariant vector is 0. Use "
                "bias=False."
            )
        self.register_exact_buffer("basis", basis)
        self.basis: Tensor
        self.coeffs = nn.Parameter(torch.zeros(basis.shape[1]))
        # On copies of the regular representation the invariant vectors are the constant
        # functions: b = (β_i / √|G|) on copy i, computed without a matrix product or a cast.
        copies = regular_multiplicity(rep)
        self.regular_order: int | None = None
        if copies is not None:
            n = group_order(rep.group)
            expected = torch.kron(torch.eye(copies, dtype=torch.float64), torch.ones(n, 1)) / n**0.5
            if torch.allclose(basis, expected, atol=1e-12):
                self.regular_order = n

    @property
    def bias(self) -> Tensor:
        """The dense invariant vector, shape ``(rep.size,)`` (a new tensor on every access)."""
        return self._synthesize()

    def dense(self) -> Tensor:
        """The dense invariant vector for computing with (synthesized on every call)."""
        return self._synthesize()

    def export(self) -> Bias:
        """A plain module adding the dense bias (see :meth:`eModule.export`)."""
        with torch.no_grad():
            return Bias(self._synthesize()).train(self.training)

    def _synthesize(self) -> Tensor:
        if self.regular_order is not None:
            scaled = self.coeffs * (1.0 / self.regular_order**0.5)
            out: Tensor = scaled.repeat_interleave(self.regular_order)
            return out
        return self.basis.to(self.coeffs.dtype) @ self.coeffs

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Set the bias to zero (as ``torch.nn.Linear`` users expect from a fresh bias)."""
        with torch.no_grad():
            self.coeffs.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Add the bias.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of shape ``(..., rep.size)``.
        """
        self._check_input(x)
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        return x + self.dense()

    def extra_repr(self) -> str:
        return f"{self.in_rep.name} | {self.coeffs.numel()} weights"

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


def invariant_bias_or_none(rep: Representation, bias: bool) -> InvariantBias | None:
    """An :class:`InvariantBias` if asked for and ``rep`` has a trivial irrep, else ``None``."""
    if not bias or trivial_columns(rep).shape[1] == 0:
        return None
    return InvariantBias(rep)


class eLinear(eModule):
    r"""An equivariant affine map ``y = W x + b``: ``W ∈ Hom_G(ρ_in, ρ_out)``, ``ρ_out(g) b = b``.

    .. math::
        \rho_{out}(g)\, W = W \rho_{in}(g) \quad \forall g \in G.

    ``W`` is learned through its coefficients ``weight_params`` in the parametrization that
    :func:`elayers.weight_parametrization` picks (``self.parametrization``, see
    :class:`elayers.WeightParametrization`):

    * between copies of the regular representation, a group convolution
      (:class:`elayers.GroupConvParametrization`): block ``(i, j)`` is
      ``W_ij[a, b] = w_ij(g_a⁻¹ g_b)``, read from the Cayley table with one gather
      (``c_out · c_in · |G|`` parameters, no change of basis);
    * otherwise, the isotypic basis of :class:`ereps.GroupHomomorphismBasis`
      (:class:`elayers.HomBasisParametrization`).

    ``weight`` and ``bias`` are the dense tensors, and ``forward(x) == F.linear(x, weight, bias)``.

    Args:
        in_rep: Representation of the input features.
        out_rep: Representation of the output features, of the same group.
        bias: Whether to add a learnable invariant bias (ignored if ``out_rep`` has no trivial
            irrep).
        init_scheme: ``xavier_uniform``, ``xavier_normal``, ``kaiming_uniform`` or
            ``kaiming_normal``; the dense weight gets the variance of the unconstrained scheme.

    Raises:
        ValueError: If the groups differ, ``Hom_G(in_rep, out_rep) = 0`` or the scheme is unknown.

    Examples:
        >>> import torch, ereps
        >>> G = ereps.cyclic_group(4)
        >>> layer = eLinear(G.regular_representation, G.regular_representation)
        >>> layer(torch.randn(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_rep: Representation,
        out_rep: Representation,
        bias: bool = True,
        init_scheme: InitScheme = "xavier_normal",
    ) -> None:
        check_representation(in_rep, "in_rep")
        check_representation(out_rep, "out_rep")
        check_same_group([in_rep, out_rep], ["in_rep", "out_rep"])
        check_bool("eLinear", "bias", bias)
        self.init_scheme = check_init_scheme(init_scheme)
        super().__init__(in_rep, out_rep)
        # The one place that depends on the kind of representations; everything else goes
        # through the parametrization's interface.
        self.parametrization: WeightParametrization = weight_parametrization(in_rep, out_rep)
        # A submodule (moved by .to(), listed by modules()), also found by plain attribute
        # lookup: nn.Module.__getattr__ on every forward costs 3% of a batch-1 forward (measured,
        # C8 64 -> 64 features). Reassigning the attribute goes through nn.Module.__setattr__,
        # which drops this entry; deepcopy and pickle keep the two one object.
        object.__setattr__(self, "parametrization", self._modules["parametrization"])
        if self.parametrization.num_weights == 0:
            raise ValueError(
                f"eLinear: Hom_G({in_rep.name}, {out_rep.name}) is zero-dimensional (the two "
                f"representations share no irrep: in {in_rep.irreps}, out {out_rep.irreps}), "
                "so the only equivariant linear map is 0."
            )
        (shape,) = self.parametrization.shapes
        self.weight_params = nn.Parameter(torch.empty(shape))
        self.invariant_bias = invariant_bias_or_none(out_rep, bias)
        self.reset_parameters()

    @property
    def num_weights(self) -> int:
        """Number of free parameters of ``W``."""
        return self.weight_params.numel()

    @property
    def basis(self) -> GroupHomomorphismBasis | None:
        """The ``Hom_G`` basis of the coefficients, or ``None`` for a group convolution."""
        return self.parametrization.basis

    @property
    def flat_index(self) -> Tensor:
        """The gather index of a group convolution (see :class:`GroupConvParametrization`).

        Raises:
            AttributeError: If ``W`` is not parametrized as a group convolution.
        """
        index: Tensor = getattr(self.parametrization, "flat_index")  # noqa: B009
        return index

    @property
    def weight(self) -> Tensor:
        """The dense equivariant matrix ``W``, shape ``(out_rep.size, in_rep.size)``.

        Synthesized from the coefficients on every access (a new tensor, differentiable with
        respect to them). Between copies of the regular representation that is a single gather.
        """
        return self._synthesize()

    def dense_weight(self) -> Tensor:
        """``W`` for computing with: synthesized from the coefficients on every call.

        Nothing is cached, so it always reflects the current coefficients.
        """
        return self._synthesize()

    def dense_bias(self) -> Tensor | None:
        """The bias for computing with (see :meth:`dense_weight`), or ``None``."""
        return None if self.invariant_bias is None else self.invariant_bias.dense()

    def export(self) -> nn.Linear:
        """A ``torch.nn.Linear`` with the dense ``W`` and bias (see :meth:`eModule.export`)."""
        with torch.no_grad():
            bias = None if self.invariant_bias is None else self.invariant_bias.bias
            return plain_linear(self._synthesize(), bias, self.training)

    def _synthesize(self) -> Tensor:
        # Unchecked: weight_params has the parametrization's shape by construction.
        return self.parametrization.synthesize_unchecked((self.weight_params,))

    @property
    def bias(self) -> Tensor | None:
        """The dense invariant bias, shape ``(out_rep.size,)``, or ``None``."""
        return None if self.invariant_bias is None else self.invariant_bias.bias

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Redraw ``W`` with ``scheme`` (default: the constructor's) and zero the bias."""
        scheme = check_init_scheme(scheme or self.init_scheme)
        p = self.weight_params
        with torch.no_grad():
            (coefficients,) = self.parametrization.initialize(
                scheme, dtype=p.dtype, device=p.device
            )
            p.copy_(coefficients)
        if self.invariant_bias is not None:
            self.invariant_bias.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Apply ``y = W x + b`` on the last axis.

        Args:
            x: Tensor of shape ``(..., in_rep.size)``.

        Returns:
            Tensor of shape ``(..., out_rep.size)``.
        """
        self._check_input(x)
        twin = frozen_twin(self)
        if twin is not None:
            out: Tensor = twin(x)
            return out
        return F.linear(x, self.dense_weight(), self.dense_bias())

    def extra_repr(self) -> str:
        return (
            f"{self.in_rep.name} -> {self.out_rep.name} | {self.num_weights} weights, "
            f"{self.parametrization.kind}, "
            f"bias={self.invariant_bias is not None}"
        )

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
