"""eAffine, eRMSNorm and eLayerNorm: brute-force references, equivariance and stability."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from elayers import eAffine, eLayerNorm, eRMSNorm
from tests.elayers import _cases as C

Affine = Literal["auto", "irrep", "copy"]

# (group, representation) pairs: copies of the regular representation, permutation and
# non-permutation representations, orthogonal changes of basis, the standard 3-D irrep.
NORM_REPS = [
    ("C8", "2reg"),
    ("C8", "Q:irr1+triv+irr2"),
    ("D3", "3reg"),
    ("D3", "quot+irr2"),
    ("D3", "Q:quot"),
    ("O", "reg"),
    ("O", "std3+quot"),
    ("O", "Q:std3+triv+irr2"),
    ("I", "reg"),
    ("I", "std3+irr3+triv"),
]
NORM_IDS = [f"{k}-{s}" for k, s in NORM_REPS]


def _is_regular(spec: str) -> bool:
    return spec.endswith("reg") and "+" not in spec and ":" not in spec


def _invariant_projector(key: str, spec: str) -> Tensor:
    return C.mats_t(key, spec).mean(dim=0)


# ------------------------------------------------------------------------------------ eAffine


@pytest.mark.parametrize(("key", "spec"), NORM_REPS, ids=NORM_IDS)
def test_affine_identity_at_init_and_equivariant_when_trained(key: str, spec: str) -> None:
    rho = C.rep(key, spec)
    module = eAffine(rho).double()
    x = C.seeded_randn(3, 2, rho.size)
    torch.testing.assert_close(module(x), x, rtol=0, atol=1e-12)
    assert module.scale.numel() == len(rho.irreps)
    C.perturb_(module)
    y = module(x)
    assert C.rel_err(y, x) > 1e-2
    # forward is the dense matrix plus the invariant bias.
    bias = module.invariant_bias
    b = torch.zeros(rho.size, dtype=torch.float64) if bias is None else bias.bias
    torch.testing.assert_close(y, x @ module.matrix().T + b, rtol=0, atol=1e-12)
    m = C.mats_t(key, spec)
    M = module.matrix().detach()
    assert (m @ M - M @ m).abs().max().item() < 1e-12
    assert C.equivariance_error(module, key, [spec], spec, [x]) < 1e-10
    assert C.equivariance_error(module.float(), key, [spec], spec, [x.float()]) < 1e-5


def test_affine_scales_each_irreducible_copy() -> None:
    # Plain direct sum of irreps (identity change of basis): elementwise scaling per irrep block.
    spec = "irr1+triv+irr2"
    rho = C.rep("C8", spec)
    module = eAffine(rho, bias=False).double()
    with torch.no_grad():
        module.scale.copy_(torch.tensor([2.0, 3.0, -1.0]))
    x = C.seeded_randn(4, rho.size)
    expected = x * torch.tensor([2.0, 2.0, 3.0, -1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(module(x), expected)


# ------------------------------------------------------------------------------ references


def _rms_reference(x: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def _layer_reference(key: str, spec: str, x: Tensor, eps: float) -> Tensor:
    P = _invariant_projector(key, spec).to(x.dtype)
    u = P @ torch.ones(x.shape[-1], dtype=x.dtype)
    norm = torch.linalg.vector_norm(u)
    if norm > 1e-9:
        u = u / norm
        x = x - (x @ u).unsqueeze(-1) * u
    return _rms_reference(x, eps)


@pytest.mark.parametrize(("key", "spec"), NORM_REPS, ids=NORM_IDS)
def test_norms_without_affine_match_reference(key: str, spec: str) -> None:
    rho = C.rep(key, spec)
    x = C.seeded_randn(5, rho.size) * 3.0 + 1.0
    rms = eRMSNorm(rho, eps=1e-6, equiv_affine=False).double()
    torch.testing.assert_close(rms(x), _rms_reference(x, 1e-6))
    ln = eLayerNorm(rho, eps=1e-5, equiv_affine=False).double()
    torch.testing.assert_close(ln(x), _layer_reference(key, spec, x, 1e-5))
    assert not list(rms.parameters())
    assert not list(ln.parameters())


@pytest.mark.parametrize("spec", ["reg", "3reg", "quot", "quot+reg"])
def test_layernorm_on_permutation_representations_is_torch_layernorm(spec: str) -> None:
    rho = C.rep("D3", spec)
    x = C.seeded_randn(4, rho.size) + 2.0
    ln = eLayerNorm(rho, equiv_affine=False).double()
    torch.testing.assert_close(ln(x), F.layer_norm(x, (rho.size,), eps=1e-5))


def test_layernorm_without_invariant_direction_is_rms() -> None:
    rho = C.rep("O", "std3+irr2")
    x = C.seeded_randn(4, rho.size) + 2.0
    ln = eLayerNorm(rho, equiv_affine=False, bias=False).double()
    torch.testing.assert_close(ln(x), _rms_reference(x, 1e-5))


@pytest.mark.parametrize("affine", ["auto", "irrep", "copy"])
@pytest.mark.parametrize("norm", [eRMSNorm, eLayerNorm])
def test_affine_modes_on_regular_copies(
    norm: type[eRMSNorm] | type[eLayerNorm], affine: Affine
) -> None:
    key, spec = "D3", "3reg"
    rho = C.rep(key, spec)
    module = norm(rho, bias=True, affine=affine).double()
    x = C.seeded_randn(2, 4, rho.size)
    plain = norm(rho, equiv_affine=False).double()
    torch.testing.assert_close(module(x), plain(x), rtol=0, atol=1e-12)  # identity at init
    C.perturb_(module)
    y = module(x)
    assert C.rel_err(y, plain(x)) > 1e-2
    if affine == "irrep":
        assert module.affine is not None
        torch.testing.assert_close(y, module.affine(plain(x)))
    else:
        # One scale and one bias per regular copy, elementwise.
        assert module.copy_scale is not None
        assert module.copy_bias is not None
        assert module.copy_scale.numel() == 3
        scale = module.copy_scale.repeat_interleave(6)
        shift = module.copy_bias.repeat_interleave(6)
        torch.testing.assert_close(y, plain(x) * scale + shift)
    assert C.equivariance_error(module, key, [spec], spec, [x]) < 1e-10
    assert C.equivariance_error(module.float(), key, [spec], spec, [x.float()]) < 1e-5


@pytest.mark.parametrize(("key", "spec"), NORM_REPS, ids=NORM_IDS)
@pytest.mark.parametrize("norm", [eRMSNorm, eLayerNorm])
def test_norms_are_equivariant(
    norm: type[eRMSNorm] | type[eLayerNorm], key: str, spec: str
) -> None:
    rho = C.rep(key, spec)
    module = norm(rho, bias=True).double()
    if not _is_regular(spec):
        assert module.affine is not None  # 'auto' falls back to per-irrep scales
    C.perturb_(module)
    x = C.seeded_randn(2, 3, rho.size) + 0.5
    assert C.equivariance_error(module, key, [spec], spec, [x]) < 1e-10
    assert C.equivariance_error(module.float(), key, [spec], spec, [x.float()]) < 1e-5


def test_copy_affine_needs_regular_copies() -> None:
    with pytest.raises(ValueError, match="irrep"):
        eLayerNorm(C.rep("C8", "Q:irr1+triv+irr2"), affine="copy")
    with pytest.raises(ValueError, match="regular"):
        eRMSNorm(C.rep("C8", "quot"), affine="copy")


def test_invalid_norm_arguments() -> None:
    rho = C.rep("C8", "reg")
    with pytest.raises(ValueError, match="eps"):
        eRMSNorm(rho, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        eLayerNorm(rho, eps=-1.0)
    with pytest.raises(ValueError, match="affine"):
        eLayerNorm(rho, affine="per-feature")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        eLayerNorm(rho)(torch.randn(2, 9))


def test_reset_parameters_restores_identity() -> None:
    rho = C.rep("O", "std3+quot")
    for module in (eLayerNorm(rho).double(), eRMSNorm(C.rep("C8", "2reg"), bias=True).double()):
        x = C.seeded_randn(3, module.in_rep.size)
        before = module(x)
        C.perturb_(module)
        assert C.rel_err(module(x), before) > 1e-2
        module.reset_parameters()
        torch.testing.assert_close(module(x), before, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ stability

STABILITY_CASES = [
    ("C8", "2reg", "auto"),
    ("C8", "2reg", "irrep"),
    ("D3", "Q:quot+irr2", "auto"),
    ("O", "std3+irr2", "auto"),
]


@pytest.mark.parametrize(("key", "spec", "affine"), STABILITY_CASES)
@pytest.mark.parametrize("norm", [eRMSNorm, eLayerNorm])
@pytest.mark.parametrize("magnitude", [0.0, 1e-20, 1e20])
def test_norms_are_stable_in_float32(
    norm: type[eRMSNorm] | type[eLayerNorm],
    key: str,
    spec: str,
    affine: Affine,
    magnitude: float,
) -> None:
    rho = C.rep(key, spec)
    module = norm(rho, bias=True, affine=affine)
    C.perturb_(module, scale=0.2)
    base = C.seeded_randn(3, rho.size, dtype=torch.float32) + 0.3
    x = (base.double() * magnitude).float().requires_grad_(True)
    y = module(x)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    weights = C.seeded_randn(*y.shape, dtype=torch.float32, seed=3)
    C.backward((y * weights).sum())
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    for p in module.parameters():
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
    if magnitude == 1e20:
        # Scale invariance: huge inputs normalize like moderate ones.
        with torch.no_grad():
            torch.testing.assert_close(y.detach(), module(base), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------- no-autograd path (eval, CPU)


def _rows_of_magnitudes(size: int, dtype: torch.dtype) -> Tensor:
    # One token per magnitude, so a single huge token must not spoil the others.
    base = C.seeded_randn(5, size, dtype=torch.float64, seed=4) + 0.3
    scales = torch.tensor([1.0, 0.0, 1e-20, 1e20, 3e14], dtype=torch.float64).unsqueeze(-1)
    return (base * scales).to(dtype)


@pytest.mark.parametrize(("key", "spec"), NORM_REPS, ids=NORM_IDS)
@pytest.mark.parametrize("norm", [eRMSNorm, eLayerNorm])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_no_grad_path_matches_the_autograd_path(
    norm: type[eRMSNorm] | type[eLayerNorm], key: str, spec: str, dtype: torch.dtype
) -> None:
    rho = C.rep(key, spec)
    module = norm(rho, bias=True).to(dtype).eval()
    C.perturb_(module, scale=0.2)
    x = _rows_of_magnitudes(rho.size, dtype)
    reference = module(x.clone().requires_grad_(True)).detach()  # the float64-accumulated path
    for rows in (x, x[:3], x[:1]):  # with and without the tokens that need the guard
        with torch.no_grad():
            got = module(rows)
        assert torch.isfinite(got).all()
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(got, reference[: rows.shape[0]], rtol=tol, atol=tol)


@pytest.mark.parametrize("norm", [eRMSNorm, eLayerNorm])
@pytest.mark.parametrize("spec", ["2reg", "Q:irr1+triv+irr2"])
def test_no_grad_forward_of_moderate_inputs_skips_the_autograd_function(
    norm: type[eRMSNorm] | type[eLayerNorm], spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = norm(C.rep("C8", spec)).eval()
    x = C.seeded_randn(4, module.in_rep.size, dtype=torch.float32)
    expected = module(x).detach()

    def refuse(*args: object, **kwargs: object) -> Tensor:
        raise AssertionError("the float64-accumulated path ran under no_grad")

    monkeypatch.setattr("elayers._norm.stable_rms_normalize", refuse)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match="float64-accumulated"):
        module(x.requires_grad_(True))


@pytest.mark.parametrize(
    ("equiv_affine", "bias"), [(False, False), (True, False), (True, True)], ids=str
)
@pytest.mark.parametrize("spec", ["reg", "3reg"])
def test_rms_affine_variants_match_the_autograd_path(
    equiv_affine: bool, bias: bool, spec: str
) -> None:
    module = eRMSNorm(C.rep("D3", spec), equiv_affine=equiv_affine, bias=bias).eval()
    C.perturb_(module, scale=0.3)
    x = _rows_of_magnitudes(module.in_rep.size, torch.float32).view(5, 1, -1).expand(5, 2, -1)
    reference = module(x.clone().requires_grad_(True)).detach()
    # x[:3] has no huge token, so the fast path runs on it; x (non-contiguous too) falls back.
    for rows in (x, x[:3]):
        with torch.no_grad():
            got = module(rows)
        torch.testing.assert_close(got, reference[: rows.shape[0]], rtol=1e-5, atol=1e-5)
