r"""The runtime math of the spectral execution, in plain torch (this file imports nothing else).

Both the equivariant spectral modules (:mod:`elayers._spectral`, which synthesize their blocks
from coefficients at every forward) and their torch-only exports (:mod:`elayers._plain_spectral`,
which hold the synthesized blocks) run these functions, the way ``eregressors._plain.run_trunk``
serves both dense regressors: one implementation of the run layouts, the batched block
products, the heads' layout, the norms' statistics and the feed-forward's changes of basis.

Features are ``c`` regular copies of ``n = |G|`` spectral coordinates each. A *run* is a maximal
sequence of spectral blocks of one shape, ``(offset, count, rows, multiplicity, endo_dim)``: the
``count`` blocks of the run start at ``offset`` and each holds ``rows`` rows of ``f = m e``
coordinates (``m`` the multiplicity, ``e = dim End_G``). In the *run layout* run ``r`` is a tensor
``(count_r, N, rows_r, f_r, c)`` over ``N`` tokens, on which an equivariant map is one batched
product per run and elementwise operations act directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

# A torch-only sibling file (positions, masks and the attention kernel call).
from elayers._positional import RelativePositionBias, RotaryEmbedding, attend

__all__ = [
    "AttentionRuns",
    "BlockMap",
    "BlockProducts",
    "DecoderLayerRuns",
    "NormRuns",
    "Run",
    "apply_runs",
    "attention_runs",
    "coord_major_to_runs",
    "coord_outer_to_runs",
    "copy_dropout",
    "copy_major_heads",
    "copy_mask",
    "decoder_layer_runs",
    "decoder_stack_tokens",
    "feedforward_runs",
    "from_runs",
    "head_runs_to_heads",
    "heads_to_head_runs",
    "heads_to_runs",
    "linear_tokens",
    "mlp_tokens",
    "norm_runs",
    "norm_tokens",
    "records_grad",
    "runs_to_coord_major",
    "runs_to_coord_outer",
    "runs_to_heads",
    "split_axis",
    "to_regular_basis",
    "to_runs",
    "to_spectral_basis",
    "tracing",
]

Run = tuple[int, int, int, int, int]
"""A run of blocks of one shape: ``(offset, count, rows, multiplicity, endo_dim)``."""

RunsFn = Callable[[list[Tensor]], list[Tensor]]


class BlockMap(Protocol):
    """What :func:`apply_runs` reads of a block-diagonal map (spectral module or its export)."""

    @property
    def groups(self) -> list[Run]:
        """The runs of equal blocks."""
        ...

    @property
    def c_in(self) -> int:
        """Input copies."""
        ...

    @property
    def c_out(self) -> int:
        """Output copies."""
        ...

    @property
    def bias_coeffs(self) -> Tensor | None:
        """The invariant bias ``(c_out,)`` (on the trivial coordinate of each copy), or ``None``."""
        ...


def tracing() -> bool:
    """Whether the call is traced, compiled, exported or under a torch.func transform.

    The same test as ``elayers._module.transform_active`` (which this torch-only file cannot
    import): there the in-place shortcuts of inference are not taken.
    """
    compiler = torch.compiler
    return bool(
        compiler.is_compiling()
        or getattr(compiler, "is_exporting", lambda: False)()
        or torch._C._is_tracing()
        or torch._C._are_functorch_transforms_active()
    )


def records_grad(*tensors: Tensor) -> bool:
    """Whether autograd (or a tracer/transform) would see an in-place update of ``tensors``."""
    return (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or tracing()


def to_spectral_basis(x: Tensor, transform: Tensor) -> Tensor:
    """``(..., c·|G|)`` regular coordinates to spectral ones, copy by copy: ``x_c ↦ T^T x_c``."""
    n = transform.shape[0]
    shape = x.shape
    out = x.reshape(-1, n) @ transform.to(x.dtype)
    return out.view(shape)


def to_regular_basis(x: Tensor, transform: Tensor) -> Tensor:
    """``(..., c·|G|)`` spectral coordinates to regular ones, copy by copy: ``x_c ↦ T x_c``."""
    n = transform.shape[0]
    shape = x.shape
    out = x.reshape(-1, n) @ transform.to(x.dtype).T
    return out.view(shape)


def split_axis(x: Tensor, dim: int, sizes: tuple[int, ...]) -> Tensor:
    """``x`` with axis ``dim`` split into ``sizes`` (a view, also of non-contiguous tensors)."""
    dim = dim % x.ndim
    return x.view(*x.shape[:dim], *sizes, *x.shape[dim + 1 :])


_split = split_axis


def coord_major_to_runs(y: Tensor, runs: list[Run]) -> list[Tensor]:
    """Coordinate-major spectral features ``(N, |G|, c)`` to the run layout.

    Run ``r`` becomes ``(count_r, N, rows_r, f_r, c)`` (``f_r = m_r e_r``, the copies innermost):
    there each equivariant map is one batched product without any copy, elementwise operations
    and per-token reductions act on the runs directly, and moving between layouts copies
    contiguous chunks of ``rows_r f_r c`` numbers.
    """
    _n_tok, _, _copies = y.shape
    out = []
    for off, count, rows, m, e in runs:
        f = m * e
        seg = _split(y[:, off : off + count * rows * f], 1, (count, rows, f))
        out.append(seg.transpose(0, 1).contiguous())
    return out


def runs_to_coord_major(parts: list[Tensor], runs: list[Run], order: int) -> Tensor:
    """The inverse of :func:`coord_major_to_runs`: ``(N, |G|, c)``."""
    _, n_tok, _, _, copies = parts[0].shape
    out = parts[0].new_empty(n_tok, order, copies)
    for (off, count, rows, m, e), part in zip(runs, parts, strict=True):
        f = m * e
        _split(out[:, off : off + count * rows * f], 1, (count, rows, f)).copy_(
            part.transpose(0, 1)
        )
    return out


def runs_to_coord_outer(parts: list[Tensor], runs: list[Run], order: int) -> Tensor:
    """Run-layout features as ``(|G|, N, c)``: the spectral coordinate outermost.

    There a change of basis per copy is one matrix product ``T @ y.view(|G|, N c)``.
    """
    _, n_tok, _, _, copies = parts[0].shape
    out = parts[0].new_empty(order, n_tok, copies)
    for (off, count, rows, m, e), part in zip(runs, parts, strict=True):
        f = m * e
        target = out[off : off + count * rows * f].view(count, rows, f, n_tok, copies)
        target.copy_(part.permute(0, 2, 3, 1, 4))
    return out


def coord_outer_to_runs(
    y: Tensor, runs: list[Run], out: list[Tensor] | None = None
) -> list[Tensor]:
    """The inverse of :func:`runs_to_coord_outer` (views where ``rows · f = 1``).

    With ``out`` (contiguous run-layout tensors of the right shapes, not recorded by autograd)
    the runs are written there instead of into new tensors.
    """
    _, n_tok, copies = y.shape
    parts = []
    for i, (off, count, rows, m, e) in enumerate(runs):
        f = m * e
        seg = y[off : off + count * rows * f].view(count, rows, f, n_tok, copies)
        seg = seg.permute(0, 3, 1, 2, 4)
        if out is None or seg.is_contiguous():
            parts.append(seg.contiguous())
        else:
            parts.append(out[i].copy_(seg))
    return parts


def to_runs(x: Tensor, runs: list[Run], copies: int, order: int) -> list[Tensor]:
    """Copy-major spectral features ``(..., c·|G|)`` to the run layout.

    See :func:`coord_major_to_runs`.
    """
    xs = x.reshape(-1, copies, order).transpose(1, 2)
    return coord_major_to_runs(xs, runs)


def from_runs(parts: list[Tensor], runs: list[Run], copies: int, order: int) -> Tensor:
    """The inverse of :func:`to_runs`: ``(N, c·|G|)`` copy-major spectral features."""
    y = runs_to_coord_major(parts, runs, order)
    return y.transpose(1, 2).reshape(y.shape[0], copies * order)


def runs_to_heads(
    parts: list[Tensor],
    runs: list[Run],
    order: int,
    batch: int,
    heads: int,
    start: int,
    stop: int,
) -> Tensor:
    """Copies ``start:stop`` of run-layout features as attention heads ``(B, H, T, d)``.

    Each head holds ``c_h = (stop - start) / H`` whole copies, laid out coordinate-major
    ``(|G|, c_h)`` (logits and the attention output do not depend on the order of a head's
    features, as long as queries and keys share it). One copy of the data.
    """
    n_tok = parts[0].shape[1]
    t = n_tok // batch
    c_h = (stop - start) // heads
    out = parts[0].new_empty(batch, heads, t, order * c_h)
    for (off, count, rows, m, e), part in zip(runs, parts, strict=True):
        f = m * e
        sel = _split(_split(part[..., start:stop], 1, (batch, t)), -1, (heads, c_h))
        target = out[..., off * c_h : (off + count * rows * f) * c_h]
        # sel: (count, B, T, rows, f, H, c_h) -> (B, H, T, count, rows, f, c_h)
        _split(target, -1, (count, rows, f, c_h)).copy_(sel.permute(1, 5, 2, 0, 3, 4, 6))
    return out


def heads_to_runs(o: Tensor, runs: list[Run], order: int) -> list[Tensor]:
    """Attention output ``(B, H, T, |G|·c_h)`` back to the run layout (``c = H·c_h``)."""
    batch, heads, t, d = o.shape
    c_h = d // order
    parts = []
    for off, count, rows, m, e in runs:
        f = m * e
        seg = o[..., off * c_h : (off + count * rows * f) * c_h]
        seg = _split(seg, -1, (count, rows, f, c_h))
        # (B, H, T, count, rows, f, c_h) -> (count, B, T, rows, f, H, c_h)
        part = seg.permute(3, 0, 2, 4, 5, 1, 6)
        parts.append(part.reshape(count, batch * t, rows, f, heads * c_h))
    return parts


def head_runs_to_heads(
    parts: list[Tensor], runs: list[Run], order: int, batch: int, index: int
) -> Tensor:
    """Slice ``index`` of head-major run features ``(count, N, rows, g, H, f, c_h)`` as heads.

    ``(B, H, T, |G|·c_h)``, each head coordinate-major as in :func:`runs_to_heads`; the copy
    moves chunks of ``f c_h`` numbers.
    """
    _, n_tok, _, _, heads, _, c_h = parts[0].shape
    t = n_tok // batch
    out = parts[0].new_empty(batch, heads, t, order * c_h)
    for (off, count, rows, m, e), part in zip(runs, parts, strict=True):
        f = m * e
        sel = _split(part[:, :, :, index], 1, (batch, t))  # (count, B, T, rows, H, f, c_h)
        target = out[..., off * c_h : (off + count * rows * f) * c_h]
        _split(target, -1, (count, rows, f, c_h)).copy_(sel.permute(1, 4, 2, 0, 3, 5, 6))
    return out


def heads_to_head_runs(o: Tensor, runs: list[Run], order: int) -> list[Tensor]:
    """Attention output ``(B, H, T, |G|·c_h)`` to head-major ``(count, N, rows, H, f, c_h)``."""
    batch, heads, t, d = o.shape
    c_h = d // order
    parts = []
    for off, count, rows, m, e in runs:
        f = m * e
        seg = _split(o[..., off * c_h : (off + count * rows * f) * c_h], -1, (count, rows, f, c_h))
        # (B, H, T, count, rows, f, c_h) -> (count, B, T, rows, H, f, c_h)
        part = seg.permute(3, 0, 2, 4, 1, 5, 6)
        parts.append(part.reshape(count, batch * t, rows, heads, f, c_h))
    return parts


def copy_major_heads(x: Tensor, order: int) -> Tensor:
    """Heads ``(…, |G|·c_h)`` coordinate-major to copy-major (what rotary embeddings take)."""
    return _split(x, -1, (order, x.shape[-1] // order)).transpose(-1, -2).flatten(-2)


def copy_mask(p: float, training: bool, n_tok: int, copies: int, like: Tensor) -> Tensor | None:
    """A dropout mask of whole copies ``(1, N, 1, 1, c)`` (run layout), or ``None``."""
    if not training or p == 0.0:
        return None
    ones = like.new_ones(n_tok, copies)
    return F.dropout(ones, p, True).view(1, n_tok, 1, 1, copies)


def copy_dropout(x: Tensor, p: float, training: bool, copies: int) -> Tensor:
    """Dropout of whole regular copies: equivariant in distribution in any basis inside copies.

    (Elementwise dropout is equivariant in distribution only in a permutation basis.)
    """
    if not training or p == 0.0:
        return x
    x3 = _split(x, -1, (copies, x.shape[-1] // copies))
    mask = F.dropout(torch.ones_like(x3[..., :1]), p, True)
    return (x3 * mask).flatten(-2)


def apply_runs(
    lin: BlockMap,
    parts: list[Tensor],
    mats: list[Tensor],
    start: int,
    stop: int,
    *,
    in_heads: int | None = None,
    out_heads: tuple[int, int] | None = None,
) -> list[Tensor]:
    """Output copies ``start:stop`` of a block-diagonal map on run-layout features.

    ``mats`` are the map's transposed blocks per run, ``(count, f c_in, f c_out)`` with rows
    ``(μ, q, i)`` and columns ``(ν, p, o)`` (``eSpectralLinear.block_matrices``). One batched
    product per run, no copy of the data: ``(count, N, rows, f, c_in)`` in,
    ``(count, N, rows, f, stop - start)`` out. With ``out_heads = (H, c_h)`` the output copies
    are laid out head-major instead, ``(count, N, rows, g, H, f, c_h)`` with
    ``stop - start = g H c_h``; with ``in_heads = H`` the input is ``(count, N, rows, H, f, c_h)``.
    (Attention heads then gather chunks of ``f c_h`` numbers instead of ``c_h``; the weights are
    permuted instead of the data.)
    """
    c_out = stop - start
    c_in_all, c_out_all = lin.c_in, lin.c_out
    coeffs = lin.bias_coeffs
    bias = None if coeffs is None else coeffs[start:stop]
    out = []
    for run, ((_off, count, rows, m, e), mat, part) in enumerate(
        zip(lin.groups, mats, parts, strict=True)
    ):
        f = m * e
        n_tok = part.shape[1]
        rows_in = f * c_in_all
        if start != 0 or stop != c_out_all:
            mat = _split(mat, -1, (f, c_out_all))[..., start:stop].flatten(-2)
        if in_heads is not None:
            # Rows (f, H, c_h) -> (H, f, c_h).
            c_h = c_in_all // in_heads
            mat = _split(mat, 1, (f, in_heads, c_h)).transpose(1, 2).reshape(mat.shape)
        if out_heads is not None:
            # Columns (f, g, H, c_h) -> (g, H, f, c_h).
            c_h = out_heads[1]
            cols = _split(mat, -1, (f, c_out // c_h, c_h)).transpose(-3, -2)
            mat = cols.reshape(count, rows_in, f * c_out)
        inp = part.reshape(count, n_tok * rows, rows_in)
        if run == 0 and bias is not None:
            # The trivial irrep: the first block of the first run (1-D, real, f = 1), whose
            # columns are the copies in order in both layouts.
            full = part.new_zeros(count, 1, f * c_out)
            full[0, 0] = bias.to(part.dtype)
            y = torch.baddbmm(full, inp, mat)
        else:
            y = torch.bmm(inp, mat)
        if out_heads is None:
            out.append(y.view(count, n_tok, rows, f, c_out))
        else:
            heads, c_h = out_heads
            g = c_out // (heads * c_h)
            out.append(y.view(count, n_tok, rows, g, heads, f, c_h))
    return out


def linear_tokens(lin: BlockMap, x: Tensor, mats: list[Tensor], order: int) -> Tensor:
    """The block-diagonal map on copy-major tokens ``(..., c_in |G|)``: ``(..., c_out |G|)``."""
    runs = lin.groups
    out = apply_runs(lin, to_runs(x, runs, lin.c_in, order), mats, 0, lin.c_out)
    return from_runs(out, runs, lin.c_out, order).view(*x.shape[:-1], lin.c_out * order)


def norm_tokens(
    x: Tensor,
    *,
    kind: str,
    eps: float,
    copies: int,
    order: int,
    trivial_index: int,
    scale: Tensor,
    bias: Tensor | None,
) -> Tensor:
    r"""RMS (``kind="rms"``) or layer (``"layer"``) norm of copy-major spectral tokens.

    ``rms``: :math:`y = x / \sqrt{\overline{x^2} + \epsilon}` over all ``c|G|`` coordinates
    (basis-free). ``layer`` first removes the mean over all regular coordinates,
    ``√|G| μ = mean_i t_i`` from every trivial coordinate ``t_i``. Then ``scale`` ``(c,)`` per copy
    and ``√|G| bias_i`` on the trivial coordinate of copy ``i``.

    Args:
        x: ``(..., c|G|)``.
        kind: ``"rms"`` or ``"layer"``.
        eps: Added to the mean square.
        copies: ``c``.
        order: ``|G|``.
        trivial_index: The trivial coordinate inside a copy.
        scale: ``(c,)``.
        bias: ``(c,)`` or ``None``.

    Returns:
        ``(..., c|G|)``.
    """
    n, c = order, copies
    root = math.sqrt(n)
    i = trivial_index
    if kind == "layer":
        x3 = _split(x, -1, (c, n))
        t = x3[..., i]
        shift = t.sum(dim=-1, keepdim=True) * (root * root / (c * n))  # √|G| μ per token
        x3 = torch.cat((x3[..., :i], (t - shift).unsqueeze(-1), x3[..., i + 1 :]), dim=-1)
        x = x3.flatten(-2)
    y = _split(F.rms_norm(x, (c * n,), eps=eps), -1, (c, n))
    y = y * scale.to(y.dtype).unsqueeze(-1)
    if bias is not None:
        b = (bias.to(y.dtype) * root).unsqueeze(-1)
        y = torch.cat((y[..., :i], y[..., i : i + 1] + b, y[..., i + 1 :]), dim=-1)
    return y.flatten(-2)


def norm_runs(
    parts: list[Tensor],
    *,
    kind: str,
    eps: float,
    copies: int,
    order: int,
    scale: Tensor,
    bias: Tensor | None,
) -> list[Tensor]:
    """:func:`norm_tokens` on run-layout features.

    Per-token statistics summed over the runs, elementwise scaling, the trivial coordinates at
    ``parts[0][0, :, 0, 0, :]``.
    """
    c, n = copies, order
    first = parts[0]
    n_tok = first.shape[1]
    if kind == "layer":
        # √|G| μ = mean of the trivial coordinates over copies; removed from each of them.
        shift = first[0, :, 0, 0, :].mean(dim=-1)
        onehot = torch.zeros_like(first[:, :1, :1, :1, :1])
        onehot[0] = 1.0
        first = first - onehot * shift.view(1, n_tok, 1, 1, 1)
        parts = [first, *parts[1:]]
    # Contiguous reductions per run (last axis), then over the few blocks of the run.
    square = sum(
        (torch.linalg.vecdot(p.flatten(2), p.flatten(2)).sum(dim=0) for p in parts),
        start=first.new_zeros(n_tok),
    )
    r = torch.rsqrt(square / (c * n) + eps)
    factor = (r.unsqueeze(-1) * scale.to(first.dtype)).view(1, n_tok, 1, 1, c)
    out = [p * factor for p in parts]
    if bias is not None:
        onehot = torch.zeros_like(first[:, :1, :1, :1, :1])
        onehot[0] = 1.0
        b = (bias.to(first.dtype) * math.sqrt(n)).view(1, 1, 1, 1, c)
        out[0] = torch.addcmul(out[0], onehot, b)
    return out


def attention_runs(
    in_proj: BlockMap,
    in_mats: list[Tensor],
    out_proj: BlockMap,
    out_mats: list[Tensor],
    query: list[Tensor],
    key: list[Tensor] | None,
    batch: int,
    *,
    order: int,
    num_heads: int,
    dropout_p: float,
    rotary: RotaryEmbedding | None,
    relative_bias: RelativePositionBias | None,
    key_padding_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    query_pos: Tensor | None = None,
    key_pos: Tensor | None = None,
) -> list[Tensor]:
    """Multi-head attention on run-layout tokens; ``key=None`` for self-attention.

    Heads take whole copies; each head is laid out coordinate-major ``(|G|, c_h)`` (logits and
    outputs do not depend on the order of a head's features as long as queries and keys share
    it), copy-major for rotary embeddings (which pair whole copies).

    Args:
        in_proj: The packed ``q, k, v`` projection (``c -> 3c`` copies).
        in_mats: Its blocks per run.
        out_proj: The output projection (``c -> c``).
        out_mats: Its blocks per run.
        query: Run-layout queries of ``batch · L`` tokens.
        key: Run-layout keys (= values) of ``batch · S`` tokens, or ``None`` (``query``).
        batch: ``B``.
        order: ``|G|``.
        num_heads: ``H``.
        dropout_p: Dropout probability of the attention weights (0 in eval).
        rotary: Rotary embedding of queries and keys, or ``None``.
        relative_bias: Relative-position bias of the logits, or ``None``.
        key_padding_mask: ``(B, S)``.
        attn_mask: ``(L, S)`` or ``(B·H, L, S)``.
        is_causal: Causal attention when ``attn_mask`` is ``None``.
        query_pos: Positions of the queries.
        key_pos: Positions of the keys.

    Returns:
        Run-layout outputs of the queries' shape.
    """
    runs, n, c, h = in_proj.groups, order, in_proj.c_in, num_heads
    if key is None:
        qkv = apply_runs(in_proj, query, in_mats, 0, 3 * c, out_heads=(h, c // h))
        q, k, v = (head_runs_to_heads(qkv, runs, n, batch, i) for i in range(3))
    else:
        qp = apply_runs(in_proj, query, in_mats, 0, c, out_heads=(h, c // h))
        kv = apply_runs(in_proj, key, in_mats, c, 3 * c, out_heads=(h, c // h))
        q = head_runs_to_heads(qp, runs, n, batch, 0)
        k = head_runs_to_heads(kv, runs, n, batch, 0)
        v = head_runs_to_heads(kv, runs, n, batch, 1)
    if rotary is not None:
        # Rotary embeddings pair whole copies: queries and keys copy-major (one gather).
        q, k = copy_major_heads(q, n), copy_major_heads(k, n)
    out, _ = attend(
        q,
        k,
        v,
        attn_mask=attn_mask,
        key_padding_mask=key_padding_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        need_weights=False,
        rotary=rotary,
        relative_bias=relative_bias,
        query_pos=query_pos,
        key_pos=key_pos,
    )
    return apply_runs(out_proj, heads_to_head_runs(out, runs, n), out_mats, 0, c, in_heads=h)


def feedforward_runs(
    x: list[Tensor],
    lin1: BlockMap,
    mats1: list[Tensor],
    lin2: BlockMap,
    mats2: list[Tensor],
    *,
    order: int,
    transform: Tensor,
    activation: Callable[[Tensor], Tensor],
    dropout_p: float,
    training: bool,
) -> list[Tensor]:
    """``lin2(dropout(act(lin1 x)))`` on run-layout tokens, the activation in the regular basis.

    The hidden features go coordinate-outer ``(|G|, N, 4c)``, where each change of basis is one
    matrix product with ``T`` (``(|G|, |G|)``, float64; cast to the features' dtype).

    Args:
        x: Run-layout tokens.
        lin1: ``c -> c_hidden``.
        mats1: Its blocks.
        lin2: ``c_hidden -> c``.
        mats2: Its blocks.
        order: ``|G|``.
        transform: ``T``.
        activation: The pointwise activation, applied to a fresh tensor (may work in place).
        dropout_p: Dropout of the hidden features (elementwise, in the regular basis).
        training: Whether dropout is active.

    Returns:
        Run-layout tokens.
    """
    runs, n, hidden = lin1.groups, order, lin1.c_out
    t = transform.to(x[0].dtype)
    parts = apply_runs(lin1, x, mats1, 0, hidden)
    h = runs_to_coord_outer(parts, runs, n)
    shape = h.shape
    if records_grad(h):
        h = (t @ h.flatten(1)).view(shape)
        h = activation(h)
        h = F.dropout(h, dropout_p, training)
        h = (t.T @ h.flatten(1)).view(shape)
        back = coord_outer_to_runs(h, runs)
    else:
        # Inference: the way back writes into the buffers of the way out, which are free by
        # then. Fresh multi-megabyte tensors are fresh mappings from the allocator, whose
        # pages fault on first touch on every call (measured in the model, C8:128: the second
        # change of basis 1.3-1.5 ms into a fresh tensor, 0.4 ms into a reused one).
        reg = (t @ h.flatten(1)).view(shape)
        reg = activation(reg)
        if training and dropout_p > 0.0:
            reg = F.dropout(reg, dropout_p, True, inplace=True)
        torch.mm(t.T, reg.flatten(1), out=h.flatten(1))
        back = coord_outer_to_runs(h, runs, out=parts)
    return apply_runs(lin2, back, mats2, 0, lin2.c_out)


def decoder_layer_runs(
    x: list[Tensor],
    *,
    self_attn: RunsFn,
    cross_attn: RunsFn,
    feedforward: RunsFn,
    norms: tuple[RunsFn, RunsFn, RunsFn],
    norm_first: bool,
    p_residual: tuple[float, float, float],
    training: bool,
    copies: int,
) -> list[Tensor]:
    """A transformer decoder layer on run-layout tokens, from its blocks.

    Pre-norm (``norm_first``): ``x += block(norm(x))``; post-norm: ``x = norm(x + block(x))``,
    for self-attention, cross-attention and the feed-forward block in turn. Residual dropout
    drops whole copies (see :func:`copy_dropout`).
    """
    n_tok = x[0].shape[1]

    def residual(x: list[Tensor], update: list[Tensor], p: float) -> list[Tensor]:
        mask = copy_mask(p, training, n_tok, copies, update[0])
        if mask is None and not records_grad(x[0], update[0]):
            # The update is the fresh output of a block: reuse its memory (inference).
            return [u.add_(a) for a, u in zip(x, update, strict=True)]
        if mask is None:
            return [a + u for a, u in zip(x, update, strict=True)]
        return [torch.addcmul(a, u, mask) for a, u in zip(x, update, strict=True)]

    n1, n2, n3 = norms
    p1, p2, p3 = p_residual
    if norm_first:
        x = residual(x, self_attn(n1(x)), p1)
        x = residual(x, cross_attn(n2(x)), p2)
        x = residual(x, feedforward(n3(x)), p3)
    else:
        x = n1(residual(x, self_attn(x), p1))
        x = n2(residual(x, cross_attn(x), p2))
        x = n3(residual(x, feedforward(x), p3))
    return x


def mlp_tokens(
    x: Tensor,
    layers: list[BlockMap],
    mats: list[list[Tensor]],
    *,
    order: int,
    transform: Tensor,
    activation: Callable[[Tensor], Tensor],
    dropout_p: float,
    training: bool,
) -> Tensor:
    """An MLP of block-diagonal maps on copy-major spectral tokens ``(..., c_in |G|)``.

    Each hidden layer goes to the regular basis (one ``|G| × |G|`` product per copy) around its
    pointwise activation and dropout.
    """
    lead = x.shape[:-1]
    *hidden, last = layers
    n = order
    parts = to_runs(x, last.groups, layers[0].c_in, n)
    t = transform.to(x.dtype)
    for layer, layer_mats in zip(hidden, mats[:-1], strict=True):
        h = apply_runs(layer, parts, layer_mats, 0, layer.c_out)
        y = runs_to_coord_outer(h, layer.groups, n)
        shape = y.shape
        y = (t @ y.flatten(1)).view(shape)
        y = activation(y)
        y = F.dropout(y, dropout_p, training)
        y = (t.T @ y.flatten(1)).view(shape)
        parts = coord_outer_to_runs(y, layer.groups)
    out = apply_runs(last, parts, mats[-1], 0, last.c_out)
    return from_runs(out, last.groups, last.c_out, n).view(*lead, last.c_out * n)


class BlockProducts(BlockMap, Protocol):
    """A block map that also gives its blocks (synthesized by a module, held by an export)."""

    @property
    def order(self) -> int:
        """``|G|``."""
        ...

    def block_matrices(self) -> list[Tensor]:
        """Per run: ``(count, f c_in, f c_out)``."""
        ...


class NormRuns(Protocol):
    """A spectral norm on run-layout features."""

    def forward_runs(self, parts: list[Tensor]) -> list[Tensor]:
        """The normalized features, in the same layout."""
        ...


class AttentionRuns:
    """The forwards of the spectral attention, equivariant and plain.

    ``eSpectralMultiheadAttention`` and its plain export differ only in where their projections'
    blocks come from. The class using it sets these attributes (and is an ``nn.Module``).
    """

    in_proj: BlockProducts
    out_proj: BlockProducts
    num_heads: int
    dropout: float
    training: bool
    rotary: RotaryEmbedding | None
    relative_bias: RelativePositionBias | None

    def forward_runs(
        self,
        query: list[Tensor],
        key: list[Tensor] | None,
        batch: int,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
    ) -> list[Tensor]:
        """Attention on run-layout tokens (see :func:`to_runs`); ``key=None`` for self-attention.

        Args:
            query: Run-layout queries of ``batch · L`` tokens.
            key: Run-layout keys (= values) of ``batch · S`` tokens, or ``None`` (``query``).
            batch: ``B``.
            key_padding_mask: ``(B, S)``.
            attn_mask: ``(L, S)`` or ``(B·H, L, S)``.
            is_causal: Causal attention when ``attn_mask`` is ``None``.
            query_pos: Positions of the queries (``pos_encoding`` only).
            key_pos: Positions of the keys.

        Returns:
            Run-layout outputs of the queries' shape.
        """
        return attention_runs(
            self.in_proj,
            self.in_proj.block_matrices(),
            self.out_proj,
            self.out_proj.block_matrices(),
            query,
            key,
            batch,
            order=self.in_proj.order,
            num_heads=self.num_heads,
            dropout_p=self.dropout if self.training else 0.0,
            rotary=self.rotary,
            relative_bias=self.relative_bias,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            query_pos=query_pos,
            key_pos=key_pos,
        )

    def attend_tokens(
        self,
        query: Tensor,
        key: Tensor,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        is_causal: bool,
        query_pos: Tensor | None,
        key_pos: Tensor | None,
    ) -> Tensor:
        """:meth:`forward_runs` on validated ``(B, L, E)`` / ``(B, S, E)`` tokens."""
        if query.shape[0] == 0:
            # An empty batch: the run layout merges (B, T) into N = B·T and could not split
            # N = 0 back (nor check the masks against it); the output is as empty as the input.
            return query.clone()
        runs, n, c = self.in_proj.groups, self.in_proj.order, self.in_proj.c_in
        qr = to_runs(query, runs, c, n)
        kr = None if key is query else to_runs(key, runs, c, n)
        out = self.forward_runs(
            qr, kr, query.shape[0], key_padding_mask, attn_mask, is_causal, query_pos, key_pos
        )
        return from_runs(out, runs, c, n).view(query.shape)


class DecoderLayerRuns:
    """The run-layout forward of a spectral decoder layer, equivariant and plain.

    Shared by ``eSpectralDecoderLayer`` and its plain export. The class using it sets the
    attributes below and ``_ff_runs`` (the feed-forward block: the two differ in how they hold
    the activation).
    """

    self_attn: AttentionRuns
    multihead_attn: AttentionRuns
    linear1: BlockProducts
    norm1: NormRuns
    norm2: NormRuns
    norm3: NormRuns
    norm_first: bool
    p_residual: tuple[float, float, float]
    copies: int
    training: bool

    def _ff_runs(self, x: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError

    def forward_runs(
        self,
        x: list[Tensor],
        memory: list[Tensor],
        batch: int,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> list[Tensor]:
        """The layer on run-layout tokens (see :func:`to_runs`).

        Masks and positions as the layer's ``forward``; ``tgt_mask`` (``(T, T)`` or
        ``(B·H, T, T)``) comes only from torch-style calls of the plain export.
        """

        def sa(y: list[Tensor]) -> list[Tensor]:
            return self.self_attn.forward_runs(
                y, None, batch, tgt_key_padding_mask, tgt_mask, tgt_is_causal, tgt_pos, tgt_pos
            )

        def ca(y: list[Tensor]) -> list[Tensor]:
            return self.multihead_attn.forward_runs(
                y, memory, batch, memory_key_padding_mask, memory_mask, False, tgt_pos, memory_pos
            )

        return decoder_layer_runs(
            x,
            self_attn=sa,
            cross_attn=ca,
            feedforward=self._ff_runs,
            norms=(self.norm1.forward_runs, self.norm2.forward_runs, self.norm3.forward_runs),
            norm_first=self.norm_first,
            p_residual=self.p_residual,
            training=self.training,
            copies=self.copies,
        )


def decoder_stack_tokens(
    layers: list[DecoderLayerRuns],
    tgt: Tensor,
    memory: Tensor,
    memory_mask: Tensor | None,
    tgt_key_padding_mask: Tensor | None,
    memory_key_padding_mask: Tensor | None,
    tgt_is_causal: bool,
    tgt_pos: Tensor | None,
    memory_pos: Tensor | None,
    tgt_mask: Tensor | None = None,
) -> Tensor:
    """Decoder layers on validated ``(B, T, E)`` / ``(B, S, E)`` spectral tokens.

    The tokens enter the run layout once and leave it once.
    """
    if tgt.shape[0] == 0:
        # An empty batch: the run layout merges (B, T) into N = B·T and could not split N = 0
        # back (nor check the masks against it); the output is as empty as the input.
        return tgt.clone()
    first = layers[0]
    runs, n, c = first.linear1.groups, first.linear1.order, first.copies
    x = to_runs(tgt, runs, c, n)
    mem = to_runs(memory, runs, c, n)
    for layer in layers:
        x = layer.forward_runs(
            x,
            mem,
            tgt.shape[0],
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            tgt_pos,
            memory_pos,
            tgt_mask,
        )
    return from_runs(x, runs, c, n).view(tgt.shape)
