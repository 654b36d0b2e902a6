"""Equivariant data normalization for diffusion and flow-matching policies."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from elayers import Exportable
from eregressors._plain import PlainNormalizer
from ereps import (
    Representation,
    symmetric_covariance,
    symmetric_mean,
    whitening_transform,
)

__all__ = ["EquivariantNormalizer"]


class EquivariantNormalizer(Exportable, torch.nn.Module):
    r"""Standardize samples of a representation with a map that commutes with the group.

    Diffusion Policy's per-coordinate normalizers (min/max to ``[-1, 1]``, or mean/std per
    coordinate) are not equivariant: rotating the data does not rotate the normalized data, so a
    policy built on an equivariant model stops being equivariant. This normalizer uses the
    statistics of the *symmetrized* data set (every sample together with all its images
    ``ρ(g) x``), which are equivariant objects whatever data they were fitted on:

    .. math::
        \operatorname{normalize}(x) = S (x - \mu), \qquad
        \operatorname{unnormalize}(y) = S^{-1} y + \mu,

    - :math:`\mu = P \bar x` is the sample mean projected onto the invariant subspace
      (:func:`ereps.symmetric_mean`), so :math:`\rho(g)\mu = \mu`;
    - :math:`S \approx \Sigma^{-1/2}` with :math:`\Sigma = \frac{1}{|G|}\sum_g \rho(g) C
      \rho(g)^\top` the group-averaged covariance about :math:`\mu`
      (:func:`ereps.symmetric_covariance`), or with ``diagonal=True`` one scale per irreducible
      copy of the isotypic decomposition (:func:`ereps.whitening_transform`). Either way
      :math:`S \in \mathrm{End}_G(\rho)`: :math:`S \rho(g) = \rho(g) S`.

    Hence, for every ``g``,

    .. math::
        \operatorname{normalize}(\rho(g) x) = S \rho(g) (x - \mu) = \rho(g)
        \operatorname{normalize}(x),

    and the same for ``unnormalize``. The normalized symmetrized data has zero mean and identity
    covariance (``diagonal=False``) or unit variance per irreducible copy (``diagonal=True``).

    *Degenerate directions* (variance at most ``rtol`` times the largest, e.g. a coordinate that
    is constant in the data) are centred but not scaled (factor 1): normalizing stays invertible
    and produces no NaN or inf. A representation of size one whose data is constant gives the
    identity scale.

    The statistics are buffers (``mean``, ``scale``, ``inverse_scale``, ``fitted``) in float64: they
    are in the state dict, load with ``torch.load(..., weights_only=True)``, and move with
    ``.to(device)`` (``.to(dtype)`` casts them like any buffer). :meth:`normalize` and
    :meth:`unnormalize` compute in the promoted dtype of the input and the buffers (float64 by
    default) and return the input's dtype, so they are exact inverses to the input dtype's
    round-off.

    Args:
        rep: The orthogonal representation acting on the last axis of the data (for a sequence of
            tokens, the representation of one token).
        diagonal: One scale per irreducible copy instead of the full inverse square root of the
            group-averaged covariance.
        rtol: Relative variance below which a direction counts as degenerate (left unscaled).

    Raises:
        TypeError: If ``rep`` is not an escnn representation.
        ValueError: If ``rep`` is not orthogonal or of a continuous group, or ``rtol`` is not in
            ``[0, 1)``.

    Examples:
        >>> import escnn.group as eg
        >>> G = eg.cyclic_group(8)
        >>> normalizer = EquivariantNormalizer(G.irrep(1)).fit(torch.randn(100, 16, 2) + 3.0)
        >>> y = normalizer.normalize(torch.randn(4, 16, 2))
        >>> y.shape
        torch.Size([4, 16, 2])
    """

    rep: Representation
    diagonal: bool
    rtol: float
    mean: Tensor
    scale: Tensor
    inverse_scale: Tensor
    fitted: Tensor

    def __init__(self, rep: Representation, *, diagonal: bool = False, rtol: float = 1e-10) -> None:
        name = type(self).__name__
        if not isinstance(rep, Representation):
            raise TypeError(
                f"{name} expects rep to be an escnn.group.Representation; got {type(rep).__name__}."
            )
        if not isinstance(diagonal, bool):
            raise TypeError(f"{name} expects diagonal to be a bool; got {type(diagonal).__name__}.")
        if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0.0 <= rtol < 1.0:
            raise ValueError(f"{name} expects rtol in [0, 1); got {rtol!r}.")
        # Validate the representation (orthogonal, finite group) now rather than at fit time.
        whitening_transform(torch.eye(rep.size, dtype=torch.float64), rep)
        super().__init__()
        self.rep = rep
        self.diagonal = diagonal
        self.rtol = float(rtol)
        n = rep.size
        self.register_buffer("mean", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("scale", torch.eye(n, dtype=torch.float64))
        self.register_buffer("inverse_scale", torch.eye(n, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def size(self) -> int:
        """The feature size ``rep.size`` of the data."""
        return int(self.rep.size)

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` was called (or fitted statistics were loaded)."""
        return bool(self.fitted)

    def fit(self, data: Tensor) -> EquivariantNormalizer:
        """Compute the symmetric statistics of ``data`` and store them in the buffers.

        Args:
            data: Samples of shape ``(..., rep.size)``: every leading axis is a sample axis (e.g.
                ``(N, T, rep.size)`` for ``N`` sequences of ``T`` tokens). Floating point, finite.

        Returns:
            ``self``, so that ``EquivariantNormalizer(rep).fit(data)`` works.

        Raises:
            TypeError: If ``data`` is not a floating-point tensor.
            ValueError: If its last axis is not ``rep.size``, it holds no sample, or a value is NaN
                or inf.
        """
        self._check_input("fit", "data", data)
        mean = symmetric_mean(data, self.rep)
        cov = symmetric_covariance(data, self.rep, mean)
        scale, inverse = whitening_transform(cov, self.rep, diagonal=self.diagonal, rtol=self.rtol)
        with torch.no_grad():
            for buffer, value in (
                (self.mean, mean),
                (self.scale, scale),
                (self.inverse_scale, inverse),
            ):
                buffer.copy_(value.to(device=buffer.device))
            self.fitted.fill_(True)
        return self

    def normalize(self, x: Tensor) -> Tensor:
        """Map data to the normalized space: ``S (x - μ)`` on the last axis.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of the same shape and dtype, transforming by ``rep`` like ``x``.

        Raises:
            RuntimeError: If the normalizer was not fitted.
            TypeError: If ``x`` is not a floating-point tensor.
            ValueError: If the last axis of ``x`` is not ``rep.size``.
        """
        self._check_input("normalize", "x", x)
        self._check_fitted("normalize")
        dtype = torch.promote_types(x.dtype, self.scale.dtype)
        centred = x.to(dtype) - self.mean.to(dtype)
        # S is symmetric: (S y) on the last axis is y @ Sᵀ = y @ S.
        return (centred @ self.scale.to(dtype)).to(x.dtype)

    def unnormalize(self, y: Tensor) -> Tensor:
        """Map normalized data back: ``S⁻¹ y + μ`` on the last axis (the inverse of normalize).

        Args:
            y: Tensor of shape ``(..., rep.size)``.

        Returns:
            Tensor of the same shape and dtype.

        Raises:
            RuntimeError: If the normalizer was not fitted.
            TypeError: If ``y`` is not a floating-point tensor.
            ValueError: If the last axis of ``y`` is not ``rep.size``.
        """
        self._check_input("unnormalize", "y", y)
        self._check_fitted("unnormalize")
        dtype = torch.promote_types(y.dtype, self.inverse_scale.dtype)
        out = y.to(dtype) @ self.inverse_scale.to(dtype) + self.mean.to(dtype)
        return out.to(y.dtype)

    def export(self) -> PlainNormalizer:
        """The fitted statistics as a :class:`eregressors._plain.PlainNormalizer` (torch only).

        ``elayers.export`` calls it for a normalizer anywhere in a module tree (a policy module
        holding normalizers and a model), so the exported tree holds no representation. The
        plain module computes :meth:`normalize` (its ``forward``) and :meth:`unnormalize`
        exactly as this one does, with copies of the current statistics.

        Returns:
            A new module in this one's training mode.

        Raises:
            RuntimeError: If the normalizer was not fitted (an exported identity would be a
                silent error on the robot).
        """
        self._check_fitted("export")
        plain = PlainNormalizer(self.mean, self.scale, self.inverse_scale)
        return plain.train(self.training)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`normalize`.

        Args:
            x: Tensor of shape ``(..., rep.size)``.

        Returns:
            ``normalize(x)``, same shape and dtype.
        """
        return self.normalize(x)

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward

    def _check_input(self, method: str, arg: str, x: object) -> None:
        name = f"{type(self).__name__}.{method}"
        n = self.rep.size
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{name} expects {arg} to be a torch.Tensor of shape (..., {n}); got "
                f"{type(x).__name__}."
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{name} expects {arg} to be a floating-point tensor; got dtype {x.dtype}."
            )
        if x.ndim == 0 or x.shape[-1] != n:
            raise ValueError(
                f"{name} expects {arg} of shape (..., {n}) for representation {self.rep.name!r}; "
                f"got {tuple(x.shape)}."
            )

    def _check_fitted(self, method: str) -> None:
        # Reading the flag is a host synchronization that compilers cannot trace: check it in
        # eager mode only (a compiled or exported policy was checked when it was traced eagerly).
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return
        if not bool(self.fitted):
            raise RuntimeError(
                f"{type(self).__name__}.{method} needs statistics: call fit(data) first, or load "
                "a fitted normalizer's state dict."
            )

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"rep={self.rep.name}, size={self.rep.size}, diagonal={self.diagonal}, "
            f"fitted={self.is_fitted}"
        )
