"""Statistics of samples of a representation that respect the group: symmetric moments, whitening.

The empirical mean and covariance of a finite data set are not equivariant objects: normalizing
with them (``(x - mean) / std`` per coordinate) does not commute with ``ρ(g)``. The functions here
return the moments of the *symmetrized* empirical distribution (the data set together with all its
images ``ρ(g) x``, each with weight ``1 / |G|``) and whitening maps built from them, which commute
with every ``ρ(g)`` whatever data they were computed from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ereps._escnn import Representation
from ereps._group_action import rep_matrices
from ereps._validation import check_orthogonal, check_representation

__all__ = [
    "group_average",
    "symmetric_covariance",
    "symmetric_mean",
    "whitening_transform",
]

# Rows per chunk when accumulating moments: bounds the float64 copy of the data that is alive at a
# time (65536 x 256 features = 128 MB) without a Python loop per sample.
_CHUNK = 65536


def _check_samples(fn: str, x: object, rep: Representation) -> Tensor:
    """Validate ``(..., rep.size)`` floating samples and return them as ``(N, rep.size)``."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{fn} expects the samples as a torch.Tensor of shape (..., {rep.size}); got "
            f"{type(x).__name__}."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{fn} expects floating-point samples; got dtype {x.dtype}. Convert them with "
            "x.to(torch.float64) first."
        )
    if x.ndim == 0 or x.shape[-1] != rep.size:
        raise ValueError(
            f"{fn} expects samples of shape (..., {rep.size}) for representation {rep.name!r} "
            f"(size {rep.size}); got {tuple(x.shape)}."
        )
    flat = x.reshape(-1, rep.size)
    if flat.shape[0] == 0:
        raise ValueError(f"{fn} expects at least one sample; got shape {tuple(x.shape)}.")
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).any(dim=-1).sum())
        raise ValueError(
            f"{fn} expects finite samples; got {bad} of {flat.shape[0]} samples with NaN or inf."
        )
    return flat


def _check_square(fn: str, what: str, m: object, rep: Representation) -> Tensor:
    if not isinstance(m, Tensor):
        raise TypeError(
            f"{fn} expects {what} as a torch.Tensor of shape ({rep.size}, {rep.size}); got "
            f"{type(m).__name__}."
        )
    if not m.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point {what}; got dtype {m.dtype}.")
    if tuple(m.shape) != (rep.size, rep.size):
        raise ValueError(
            f"{fn} expects {what} of shape ({rep.size}, {rep.size}) for representation "
            f"{rep.name!r}; got {tuple(m.shape)}."
        )
    return m


def _check_rep(fn: str, rep: object) -> Representation:
    checked = check_representation(rep, f"{fn}'s rep")
    # Symmetric statistics rely on ρ(g)ᵀ = ρ(g)⁻¹: the group average of ρ C ρᵀ then commutes
    # with ρ, and the invariant projector is orthogonal.
    check_orthogonal(checked, f"{fn}'s rep")
    return checked


def group_average(matrix: Tensor, rep: Representation) -> Tensor:
    r"""Project a matrix onto the equivariant endomorphisms ``End_G(ρ)`` (the Reynolds operator).

    .. math::
        \mathcal{R}(M) = \frac{1}{|G|} \sum_{g \in G} \rho(g)\, M\, \rho(g)^\top .

    For an orthogonal ``ρ``, :math:`\rho(h) \mathcal{R}(M) = \mathcal{R}(M) \rho(h)` for every
    ``h`` (reindex the sum by ``hg``), :math:`\mathcal{R}` is the orthogonal projection onto
    ``End_G(ρ)`` for the Frobenius inner product (idempotent, fixes every equivariant ``M``), and
    it maps symmetric positive (semi)definite matrices to symmetric positive (semi)definite ones.

    Args:
        matrix: Tensor of shape ``(rep.size, rep.size)``.
        rep: An orthogonal representation of a finite group.

    Returns:
        Tensor of shape ``(rep.size, rep.size)`` in float64 (computed in float64), commuting with
        every ``ρ(g)``.

    Raises:
        TypeError: If ``matrix`` is not a floating tensor or ``rep`` not a representation.
        ValueError: If the shape is wrong or ``rep`` is not orthogonal.
    """
    rep = _check_rep("group_average", rep)
    m = _check_square("group_average", "matrix", matrix, rep).to(torch.float64)
    mats = rep_matrices(rep, device=m.device)  # (|G|, n, n)
    return torch.einsum("gij,jk,glk->il", mats, m, mats) / mats.shape[0]


def symmetric_mean(x: Tensor, rep: Representation) -> Tensor:
    r"""Mean of the symmetrized empirical distribution: the sample mean projected on the invariants.

    .. math::
        \mu = \frac{1}{|G|} \sum_{g} \rho(g)\, \bar x = P \bar x, \qquad
        \bar x = \frac{1}{N} \sum_{i} x_i,

    with :math:`P` the orthogonal projector onto the invariant subspace
    (:func:`ereps.invariant_orthogonal_projector`). :math:`\rho(g) \mu = \mu` for every ``g``, so
    subtracting it commutes with the group action.

    Args:
        x: Samples of shape ``(..., rep.size)`` (every leading axis is a sample axis).
        rep: An orthogonal representation of a finite group.

    Returns:
        Tensor of shape ``(rep.size,)`` in float64.

    Raises:
        TypeError: If ``x`` is not a floating tensor or ``rep`` not a representation.
        ValueError: If the shape is wrong, there is no sample, a sample is not finite, or ``rep``
            is not orthogonal.
    """
    rep = _check_rep("symmetric_mean", rep)
    flat = _check_samples("symmetric_mean", x, rep)
    return _invariant_part(_sample_mean(flat), rep)


def symmetric_covariance(x: Tensor, rep: Representation, mean: Tensor | None = None) -> Tensor:
    r"""Covariance of the symmetrized empirical distribution (an element of ``End_G(ρ)``).

    The symmetrized distribution draws a sample ``x_i`` and a group element ``g`` uniformly and
    returns ``ρ(g) x_i``. Its mean is :math:`\mu` (:func:`symmetric_mean`) and its covariance

    .. math::
        \Sigma = \frac{1}{|G|} \sum_{g} \rho(g)\, C\, \rho(g)^\top, \qquad
        C = \frac{1}{N} \sum_{i} (x_i - \mu)(x_i - \mu)^\top,

    the group average (:func:`group_average`) of the second moment about :math:`\mu` (not about the
    sample mean: the symmetrized distribution is centred at :math:`\mu`). :math:`\Sigma` is
    symmetric positive semidefinite and commutes with every ``ρ(g)``. In the isotypic basis it is
    block diagonal by irrep type, each block made of copies of an element of ``End_G(ρ_k)`` (a
    multiple of the identity for real irreps; also rotations for complex and quaternionic ones),
    coupling the ``m_k`` copies of a type with one another. The normalization is ``1 / N`` (the
    maximum-likelihood estimate), which is defined for a single sample.

    Args:
        x: Samples of shape ``(..., rep.size)``.
        rep: An orthogonal representation of a finite group.
        mean: The centre ``μ``, shape ``(rep.size,)``; :func:`symmetric_mean` of ``x`` if ``None``.
            Pass only an invariant vector: centring at a non-invariant one breaks the symmetry.

    Returns:
        Tensor of shape ``(rep.size, rep.size)`` in float64.

    Raises:
        TypeError: If ``x`` or ``mean`` is not a floating tensor or ``rep`` not a representation.
        ValueError: If a shape is wrong, there is no sample, a sample is not finite, or ``rep`` is
            not orthogonal.
    """
    rep = _check_rep("symmetric_covariance", rep)
    flat = _check_samples("symmetric_covariance", x, rep)
    if mean is None:
        centre = _invariant_part(_sample_mean(flat), rep)
    else:
        if not isinstance(mean, Tensor) or not mean.is_floating_point():
            raise TypeError(
                f"symmetric_covariance expects mean as a floating tensor of shape ({rep.size},); "
                f"got {type(mean).__name__}."
            )
        if tuple(mean.shape) != (rep.size,):
            raise ValueError(
                f"symmetric_covariance expects mean of shape ({rep.size},); got "
                f"{tuple(mean.shape)}."
            )
        centre = mean.to(device=flat.device, dtype=torch.float64)
    second = torch.zeros(rep.size, rep.size, dtype=torch.float64, device=flat.device)
    for chunk in torch.split(flat, _CHUNK):
        centred = chunk.to(torch.float64) - centre
        second += centred.T @ centred
    second /= flat.shape[0]
    cov = group_average(second, rep)
    # Symmetrize away the round-off of the sums.
    return 0.5 * (cov + cov.T)


def whitening_transform(
    cov: Tensor,
    rep: Representation,
    *,
    diagonal: bool = False,
    rtol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    r"""Equivariant whitening map ``S ≈ Σ^{-1/2}`` of a group-averaged covariance, and its inverse.

    *Full* (``diagonal=False``): with :math:`\Sigma = V \Lambda V^\top` (``eigh``),

    .. math::
        S = \mathcal{R}\!\left(V f(\Lambda) V^\top\right), \qquad
        f(\lambda) = \begin{cases} \lambda^{-1/2} & \lambda > \mathrm{rtol}\cdot\lambda_{\max} \\
        1 & \text{otherwise (a degenerate direction)} \end{cases}

    For :math:`\Sigma \in \mathrm{End}_G(\rho)` every eigenspace of :math:`\Sigma` is
    :math:`G`-invariant, so any spectral function :math:`V f(\Lambda) V^\top` commutes with every
    :math:`\rho(g)`: this holds for complex and quaternionic irreps and for multiplicities alike
    (the eigenspaces then mix the copies of one type). The group average :math:`\mathcal{R}`
    (:func:`group_average`) changes nothing in exact arithmetic; it removes the round-off of the
    eigendecomposition, and the symmetry breaking that thresholding would cause if round-off split
    one eigenvalue of a degenerate eigenspace across ``rtol``. Where the variance is positive
    ``S Σ S = I`` on that subspace.

    *Diagonal* (``diagonal=True``): one scale per irreducible copy ``i`` (of size ``d_i``) in the
    isotypic basis ``Q`` of ``rep`` (``ρ = Q (⊕ ρ_{k_i}) Qᵀ``, ``Q`` orthogonal),

    .. math::
        S = Q\, \mathrm{diag}\!\left(f(\sigma_i^2)\, I_{d_i}\right) Q^\top, \qquad
        \sigma_i^2 = \tfrac{1}{d_i} \operatorname{tr}(Q_i^\top \Sigma Q_i),

    ignoring correlations between copies (the analogue of per-coordinate standardization).
    A multiple of the identity on each copy commutes with the copy's irrep of any type.

    *Degenerate directions* (variance at most ``rtol`` times the largest, or every variance when
    all are zero) are left unscaled (factor ``1``) rather than divided by zero: ``S`` stays
    symmetric positive definite, hence invertible, and no NaN or inf appears.

    Args:
        cov: Group-averaged covariance of shape ``(rep.size, rep.size)``, e.g. from
            :func:`symmetric_covariance`. It is projected with :func:`group_average` first, so an
            unsymmetrized covariance gives the whitening of its symmetrization.
        rep: An orthogonal representation of a finite group.
        diagonal: One scale per irreducible copy instead of the full inverse square root.
        rtol: Relative variance threshold below which a direction counts as degenerate.

    Returns:
        ``(S, S_inv)``, both of shape ``(rep.size, rep.size)`` in float64, symmetric positive
        definite, commuting with every ``ρ(g)``, with ``S @ S_inv = I`` to float64 round-off.

    Raises:
        TypeError: If ``cov`` is not a floating tensor or ``rep`` not a representation.
        ValueError: If a shape is wrong, ``rtol`` is not in ``[0, 1)``, ``cov`` is not finite or
            has a negative eigenvalue beyond round-off, or ``rep`` is not orthogonal.
    """
    rep = _check_rep("whitening_transform", rep)
    sigma = _check_square("whitening_transform", "cov", cov, rep).to(torch.float64)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0.0 <= rtol < 1.0:
        raise ValueError(f"whitening_transform expects rtol in [0, 1); got {rtol!r}.")
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError("whitening_transform expects a finite cov; got NaN or inf entries.")
    sigma = group_average(0.5 * (sigma + sigma.T), rep)
    sigma = 0.5 * (sigma + sigma.T)
    if diagonal:
        q = torch.as_tensor(rep.change_of_basis, dtype=torch.float64, device=sigma.device)
        spectral = torch.diagonal(q.T @ sigma @ q)
        copy_var = torch.empty_like(spectral)
        offset = 0
        for irrep_id in rep.irreps:
            size = rep.group.irrep(*irrep_id).size
            copy_var[offset : offset + size] = spectral[offset : offset + size].mean()
            offset += size
        factors = _scale_factors(copy_var, rtol)
        scale = (q * factors) @ q.T
        inverse = (q / factors) @ q.T
        return 0.5 * (scale + scale.T), 0.5 * (inverse + inverse.T)
    eigenvalues, vectors = torch.linalg.eigh(sigma)
    factors = _scale_factors(eigenvalues, rtol)
    scale = group_average((vectors * factors) @ vectors.T, rep)
    scale = 0.5 * (scale + scale.T)
    # Invert the projected S itself (not V f⁻¹ Vᵀ), so that S and S_inv are exact inverses even
    # when the projection moved S; S is symmetric positive definite, eigh inverts it stably.
    s_values, s_vectors = torch.linalg.eigh(scale)
    inverse = (s_vectors / s_values) @ s_vectors.T
    return scale, 0.5 * (inverse + inverse.T)


def _scale_factors(variances: Tensor, rtol: float) -> Tensor:
    """``λ^{-1/2}`` above ``rtol·λ_max``, ``1`` at and below it (degenerate directions)."""
    top = float(variances.max())
    scale = max(top, 0.0)
    if float(variances.min()) < -1e-8 * max(scale, 1e-300):
        raise ValueError(
            "whitening_transform expects a positive semidefinite cov; got an eigenvalue "
            f"{float(variances.min()):.3e} (largest {top:.3e})."
        )
    keep = variances > rtol * scale
    if scale == 0.0:
        keep = torch.zeros_like(keep)
    safe = torch.where(keep, variances, torch.ones_like(variances))
    return torch.where(keep, safe.rsqrt(), torch.ones_like(variances))


def _sample_mean(flat: Tensor) -> Tensor:
    total = torch.zeros(flat.shape[-1], dtype=torch.float64, device=flat.device)
    for chunk in torch.split(flat, _CHUNK):
        total += chunk.to(torch.float64).sum(dim=0)
    return total / flat.shape[0]


def _invariant_part(v: Tensor, rep: Representation) -> Tensor:
    """``P v`` with ``P = mean_g ρ(g)``, the orthogonal projector onto the invariants."""
    mats = rep_matrices(rep, device=v.device)
    return mats.mean(dim=0) @ v
