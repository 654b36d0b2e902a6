"""The plain PyTorch model that both conditional transformer regressors export to.

This file imports nothing but torch at run time (a test checks it): an exported regressor holds
this class, ``torch.nn`` modules and the torch-only modules of ``elayers._plain``, never an escnn,
``ereps``, equivariant or ``GenCondRegressor`` object, so ``torch.export`` and ONNX programs of it
run on machines without escnn.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "PlainCondTransformer",
    "PlainNormalizer",
    "PlainSinusoidalPosEmb",
    "anchored_table_indices",
    "memory_padding",
    "memory_positions",
    "padded_self_mask",
    "run_trunk",
]


class PlainSinusoidalPosEmb(nn.Module):
    r"""Sinusoidal step features ``(sin(ω_i k), cos(ω_i k))``: ``(B,)`` to ``(B, 2h)``.

    For the frequencies ``ω`` (``(h,)``), in the steps' dtype (half precision computed in float32,
    as ``eregressors.SinusoidalPosEmb``).

    The frequencies are a buffer computed by the exporting model, so that runtimes with another
    ``exp`` (ONNX Runtime) multiply by exactly the same numbers: at steps near 1000 one unit in the
    last place of a float32 frequency moves the angle by about 6e-5.

    Args:
        freqs: The frequencies ``ω_i = P^{-i/h}``, shape ``(h,)``.
    """

    def __init__(self, freqs: Tensor) -> None:
        super().__init__()
        self.register_buffer("freqs", freqs.detach().clone())
        self.freqs: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """Embed steps of shape ``(B,)`` as ``(B, 2h)``."""
        out_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        angles = x[:, None] * self.freqs.to(x.dtype)[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1).to(out_dtype)


class PlainStepEmbedding(nn.Sequential):
    """Step features then an MLP, the features cast to the MLP's dtype (a plain ``StepEmbedding``).

    The steps come in float32 or float64 (also for half-precision models: the angles of
    neighbouring steps near 1000 must differ), the features are bounded by one and lose nothing
    that matters in the cast to the parameters' dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Embed steps of shape ``(B,)``; returns ``(B, e)``."""
        layers = [m for m in self._modules.values() if m is not None]
        out: Tensor = layers[0](x)
        # The first parameter's dtype, read from the layers' own dicts (``self.parameters()``
        # builds nested generators, a measurable part of a batch-1 forward).
        for layer in layers[1:]:
            weights = [p for p in layer._parameters.values() if p is not None]
            if weights:
                out = out.to(weights[0].dtype)
                break
        for layer in layers[1:]:
            out = layer(out)
        return out


def step_dtype(x: Tensor) -> torch.dtype:
    """The dtype steps are embedded in for data ``x``: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def memory_padding(Z_padding_mask: Tensor | None) -> Tensor | None:
    """Padding mask ``(B, T_z + 1)`` of the memory ``[step, Z_0, ...]`` (the step is real)."""
    if Z_padding_mask is None:
        return None
    step = torch.zeros_like(Z_padding_mask[:, :1])
    return torch.cat((step, Z_padding_mask), dim=1)


def memory_positions(num_cond: int, Z_padding_mask: Tensor | None, device: torch.device) -> Tensor:
    """Positions of the memory tokens ``[step, Z_0, ..., Z_{T_z-1}]`` in the time frame of ``X``.

    ``Z_s`` is at time ``s`` (``X_t`` at ``t``: they are aligned slot by slot, as in the causal
    masks); the step token sits just before the first real conditioning token, at ``f - 1`` where
    ``f`` is the first slot that is not padding (``-1`` without a mask), so a common shift of both
    sequences moves every real token and the step token alike.

    Returns:
        ``(T_z + 1,)`` without a mask, ``(B, T_z + 1)`` with one (integer).
    """
    slots = torch.arange(num_cond, device=device)
    if Z_padding_mask is None:
        return torch.cat((slots.new_full((1,), -1), slots))
    # argmax of a bool row gives its first True (0 for an all-padding row: the step stays at -1).
    first = (~Z_padding_mask).to(torch.int64).argmax(dim=1, keepdim=True)
    return torch.cat((first - 1, slots.expand(Z_padding_mask.shape[0], num_cond)), dim=1)


def padded_self_mask(X_padding_mask: Tensor, causal: bool, num_heads: int) -> Tensor:
    """Self-attention mask ``(B·H, T, T)`` (``True`` forbids) for torch's attention.

    Keys that are padding are forbidden (and later keys when causal); rows of padding queries are
    left open instead, so no row is fully masked (torch's attention would return NaN there, and
    a NaN value poisons later layers even under a zero weight). Real rows keep their own key.
    """
    batch, length = X_padding_mask.shape
    forbid = X_padding_mask.unsqueeze(1).expand(batch, length, length)
    if causal:
        later = torch.ones(length, length, dtype=torch.bool, device=X_padding_mask.device).triu(1)
        forbid = forbid | later
    forbid = forbid & ~X_padding_mask.unsqueeze(2)
    return forbid.repeat_interleave(num_heads, dim=0)


def _first_real(mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """First slot that is not padding, per row ``(B,)`` (0 without a mask or for all padding)."""
    if mask is None:
        return torch.zeros(batch, dtype=torch.int64, device=device)
    return (~mask).to(torch.int64).argmax(dim=1)


def anchored_table_indices(
    X_padding_mask: Tensor | None,
    Z_padding_mask: Tensor | None,
    shape: tuple[int, int, int],
    horizons: tuple[int, int],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Rows of the absolute tables for ``"relative"``/``"rope"``: time since the first real token.

    The anchor is the earliest real slot of ``X`` or ``Z`` (per sample; 0 without masks, where
    the rows are the slots themselves), so a common shift of both sequences picks the same rows.

    Args:
        X_padding_mask: ``(B, T_x)`` or ``None``.
        Z_padding_mask: ``(B, T_z)`` or ``None``.
        shape: ``(B, T_x, T_z)``.
        horizons: ``(in_horizon, cond_horizon)``, the table sizes (``cond_horizon + 1`` rows).
        device: Device of the indices.

    Returns:
        ``(B, T_x)`` rows of the input table and ``(B, T_z + 1)`` rows of the memory table (row 0:
        the step token); padding tokens are clamped into the tables.
    """
    batch, t_x, t_z = shape
    anchor = torch.minimum(
        _first_real(X_padding_mask, batch, device), _first_real(Z_padding_mask, batch, device)
    ).unsqueeze(1)
    x_rows = (torch.arange(t_x, device=device) - anchor).clamp(0, horizons[0] - 1)
    z_rows = (torch.arange(1, t_z + 1, device=device) - anchor).clamp(1, horizons[1])
    # Row 0 for the step token, built explicitly: without conditioning z_rows is (B, 0).
    step_row = torch.zeros(batch, 1, dtype=z_rows.dtype, device=device)
    return x_rows, torch.cat((step_row, z_rows), dim=1)


def run_trunk(
    model: nn.Module,
    X: Tensor,
    step: Tensor,
    Z: Tensor | None,
    X_padding_mask: Tensor | None,
    Z_padding_mask: Tensor | None,
    *,
    pos_encoding: str,
    cond_attention: bool,
    causal: bool,
    pos_table: Tensor | None,
    cond_pos_table: Tensor | None,
) -> Tensor:
    """The conditional transformer after validation: one implementation for the dense models.

    ``CondTransformerRegressor.forward`` and :meth:`PlainCondTransformer.forward` both run this
    on their modules (``model.input_emb``, ``step_emb``, ``cond_emb``, ``drop``, ``cond_encoder``,
    ``decoder``, ``ln_f``, ``head``), so the exported model computes what the source computes,
    masks and positions included.

    Args:
        model: The module holding the submodules above.
        X: ``(B, T_x, in_dim)``.
        step: ``(B,)`` float steps.
        Z: ``(B, T_z, cond_dim)`` or ``None`` (no conditioning: the memory is the step token).
        X_padding_mask: ``(B, T_x)`` bool or ``None``.
        Z_padding_mask: ``(B, T_z)`` bool or ``None``.
        pos_encoding: ``"absolute"`` (torch's layers) or ``"relative"``/``"rope"`` (positional
            layers taking ``src_pos``/``tgt_pos``/``memory_pos``).
        cond_attention: Whether ``cond_encoder`` is a transformer stack (else token-wise).
        causal: The causal masks.
        pos_table: ``(1, in_horizon, E)`` or ``None``.
        cond_pos_table: ``(1, cond_horizon + 1, E)`` or ``None``.

    Returns:
        ``(B, T_x, out_dim)``, zero at the padded positions of ``X``.
    """
    # The submodules are read by name (both callers hold them under the same names).
    m: Any = model
    t_x = X.shape[1]
    t_z = 0 if Z is None else Z.shape[1]
    mem_pad = memory_padding(Z_padding_mask)
    x_table = z_table = None
    if pos_table is not None and cond_pos_table is not None:
        if pos_encoding == "absolute" or (X_padding_mask is None and Z_padding_mask is None):
            x_table = pos_table[:, :t_x]
            z_table = cond_pos_table[:, : t_z + 1]
        else:
            # Tables on top of relative positions: rows by time since the first real token.
            x_rows, z_rows = anchored_table_indices(
                X_padding_mask,
                Z_padding_mask,
                (X.shape[0], t_x, t_z),
                (pos_table.shape[1], cond_pos_table.shape[1] - 1),
                X.device,
            )
            x_table, z_table = pos_table[0][x_rows], cond_pos_table[0][z_rows]

    memory = m.step_emb(step).unsqueeze(1)  # (B, 1, E)
    if Z is not None and m.cond_emb is not None:
        cond_tokens = m.cond_emb(Z)
        memory = torch.cat((memory.to(cond_tokens.dtype), cond_tokens), dim=1)
    if z_table is not None:
        memory = memory + z_table
    memory = m.drop(memory)
    x = m.input_emb(X)
    if x_table is not None:
        x = x + x_table
    x = m.drop(x)
    # Token t sees the step (memory index 0) and Z_s for s <= t (index s + 1 <= t + 1).
    memory_mask = (
        torch.ones(t_x, t_z + 1, dtype=torch.bool, device=X.device).triu(2) if causal else None
    )
    if pos_encoding != "absolute":
        x_pos = torch.arange(t_x, device=X.device)
        mem_pos = memory_positions(t_z, Z_padding_mask, X.device)
        if cond_attention:
            memory = m.cond_encoder(
                memory, src_key_padding_mask=mem_pad, is_causal=causal, src_pos=mem_pos
            )
        else:
            memory = m.cond_encoder(memory)
        x = m.decoder(
            x,
            memory,
            memory_mask=memory_mask,
            tgt_key_padding_mask=X_padding_mask,
            memory_key_padding_mask=mem_pad,
            tgt_is_causal=causal,
            tgt_pos=x_pos,
            memory_pos=mem_pos,
        )
    else:
        if cond_attention:
            mem_mask = (
                torch.ones(t_z + 1, t_z + 1, dtype=torch.bool, device=X.device).triu(1)
                if causal
                else None
            )
            memory = m.cond_encoder(
                memory, mask=mem_mask, src_key_padding_mask=mem_pad, is_causal=causal
            )
        else:
            memory = m.cond_encoder(memory)
        tgt_mask: Tensor | None
        if X_padding_mask is not None:
            # One explicit mask: padding queries' rows stay open (torch gives NaN otherwise).
            heads = int(m.decoder.layers[0].self_attn.num_heads)
            tgt_mask = padded_self_mask(X_padding_mask, causal, heads)
            tgt_is_causal = False
        else:
            tgt_mask = (
                torch.ones(t_x, t_x, dtype=torch.bool, device=X.device).triu(1) if causal else None
            )
            tgt_is_causal = causal
        x = m.decoder(
            x,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            memory_key_padding_mask=mem_pad,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=False,
        )
    out: Tensor = m.head(m.ln_f(x))
    if X_padding_mask is not None:
        out = out.masked_fill(X_padding_mask.unsqueeze(-1), 0.0)
    return out


class PlainCondTransformer(nn.Module):
    r"""Conditional transformer ``V = f(X, k, Z)`` in plain PyTorch (what ``export()`` returns).

    The architecture of ``eregressors.CondTransformerRegressor``: memory ``[step, Z_0, ...]`` (the
    step through ``step_emb``, the conditioning tokens through ``cond_emb``) plus ``cond_pos_emb``,
    dropout, ``cond_encoder``; input tokens through ``input_emb`` plus ``pos_emb``, dropout, the
    ``decoder`` stack, ``ln_f`` and ``head``. With ``causal_attn`` the self-attention is causal, the
    input token ``t`` sees the step and ``Z_s`` for ``s <= t``, and a transformer ``cond_encoder``
    is causal. The exported equivariant regressor has the same structure, its invariant
    embeddings expanded to dense ones.

    Args:
        in_dim: Feature size of ``X``.
        out_dim: Feature size of the output.
        cond_dim: Feature size of ``Z``.
        in_horizon: Maximum ``T_x``.
        cond_horizon: Maximum ``T_z``.
        input_emb: ``in_dim -> E``.
        pos_emb: ``(1, in_horizon, E)``, or ``None`` (``"relative"``/``"rope"`` without tables).
        step_emb: Steps ``(B,)`` to ``(B, E)``.
        cond_emb: ``cond_dim -> E``.
        cond_pos_emb: ``(1, cond_horizon + 1, E)``, or ``None`` with ``pos_emb``.
        p_drop_emb: Dropout probability of the embedded tokens.
        cond_encoder: A transformer encoder stack or a token-wise module over the memory.
        decoder: A ``torch.nn.TransformerDecoder`` (``"absolute"``) or an
            ``elayers.PositionalTransformerDecoder`` (``"relative"``/``"rope"``).
        ln_f: The final norm.
        head: ``E -> out_dim``.
        causal_attn: Whether to use the causal masks.
        pos_encoding: ``"absolute"``, ``"relative"`` or ``"rope"`` (the positional layers then
            take token positions, as in the source model).
        cond_attention: Whether ``cond_encoder`` is a transformer stack (default: whether it is
            a ``torch.nn.TransformerEncoder``).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        cond_dim: int,
        in_horizon: int,
        cond_horizon: int,
        input_emb: nn.Module,
        pos_emb: Tensor | None,
        step_emb: nn.Module,
        cond_emb: nn.Module | None,
        cond_pos_emb: Tensor | None,
        p_drop_emb: float,
        cond_encoder: nn.Module,
        decoder: nn.Module,
        ln_f: nn.Module,
        head: nn.Module,
        causal_attn: bool,
        pos_encoding: str = "absolute",
        cond_attention: bool | None = None,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.cond_dim = in_dim, out_dim, cond_dim
        self.in_horizon, self.cond_horizon = in_horizon, cond_horizon
        self.causal_attn = causal_attn
        self.input_emb = input_emb
        self.pos_encoding = pos_encoding
        # Whether cond_encoder attends (a transformer stack) or is token-wise (an MLP).
        self.cond_attention = (
            isinstance(cond_encoder, nn.TransformerEncoder)
            if cond_attention is None
            else cond_attention
        )
        self.pos_emb = None if pos_emb is None else nn.Parameter(pos_emb.detach().clone())
        self.step_emb = step_emb
        self.cond_emb = cond_emb
        self.cond_pos_emb = (
            None if cond_pos_emb is None else nn.Parameter(cond_pos_emb.detach().clone())
        )
        self.drop = nn.Dropout(p_drop_emb)
        self.cond_encoder = cond_encoder
        self.decoder = decoder
        self.ln_f = ln_f
        self.head = head

    def forward(
        self,
        X: Tensor,
        opt_step: Tensor | float,
        Z: Tensor | None = None,
        *,
        X_padding_mask: Tensor | None = None,
        Z_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Regress ``V = f(X, k, Z)``.

        Args:
            X: ``(B, T_x, in_dim)``, ``T_x <= in_horizon``.
            opt_step: A number, a 0-d, ``(1,)`` or ``(B,)`` tensor.
            Z: ``(B, T_z, cond_dim)``, ``T_z <= cond_horizon``; ``None`` exactly for a model
                without conditioning (``cond_emb`` is ``None``).
            X_padding_mask: Keyword-only. Bool ``(B, T_x)``, ``True`` marks padding of ``X``.
            Z_padding_mask: Keyword-only. Bool ``(B, T_z)``, ``True`` marks padding of ``Z``.

        Returns:
            ``(B, T_x, out_dim)``, zero at the padded positions of ``X``.

        Raises:
            ValueError: If a rank, a feature size, a length or the batch sizes do not match.
        """
        name = type(self).__name__
        if (Z is None) != (self.cond_emb is None):
            raise ValueError(
                f"{name} expects Z of shape (B, T_z, {self.cond_dim})"
                if Z is None
                else f"{name} was exported without conditioning and expects Z=None"
            )
        checks: list[tuple[str, Tensor, int, int]] = [("X", X, self.in_dim, self.in_horizon)]
        if Z is not None:
            checks.append(("Z", Z, self.cond_dim, self.cond_horizon))
        for arg, value, dim, horizon in checks:
            if value.dim() != 3 or value.shape[-1] != dim or not 1 <= value.shape[1] <= horizon:
                raise ValueError(
                    f"{name} expects {arg} of shape (B, T, {dim}) with 1 <= T <= {horizon}; got "
                    f"{tuple(value.shape)}."
                )
        if Z is not None and X.shape[0] != Z.shape[0]:
            raise ValueError(
                f"{name} expects X and Z with the same batch size; got {tuple(X.shape)} and "
                f"{tuple(Z.shape)}."
            )
        batch = X.shape[0]
        dtype = step_dtype(X)
        if isinstance(opt_step, Tensor):
            step = opt_step.to(device=X.device, dtype=dtype)
            if step.dim() == 0 or (step.dim() == 1 and step.shape[0] == 1):
                step = step.reshape(1).expand(batch)
            elif step.dim() != 1 or step.shape[0] != batch:
                raise ValueError(
                    f"{name} expects opt_step as a number, a 0-d or a ({batch},) tensor; got shape "
                    f"{tuple(step.shape)}."
                )
        else:
            step = torch.full((batch,), float(opt_step), dtype=dtype, device=X.device)

        for arg, mask, tokens in (
            ("X_padding_mask", X_padding_mask, X),
            ("Z_padding_mask", Z_padding_mask, Z),
        ):
            if mask is None:
                continue
            if tokens is None or mask.dtype != torch.bool or mask.shape != tokens.shape[:2]:
                raise ValueError(
                    f"{name} expects {arg} as a bool tensor of the batch and length of its "
                    f"sequence; got {tuple(mask.shape)} of dtype {mask.dtype}."
                )
        return self._run(X, step, Z, X_padding_mask, Z_padding_mask)

    def _run(
        self,
        X: Tensor,
        step: Tensor,
        Z: Tensor | None,
        X_padding_mask: Tensor | None,
        Z_padding_mask: Tensor | None,
    ) -> Tensor:
        """:meth:`forward` after validation (``step`` a ``(B,)`` float tensor).

        The source regressor's forward runs this inside ``elayers.frozen``: it has validated the
        same inputs already, more thoroughly.
        """
        return run_trunk(
            self,
            X,
            step,
            Z,
            X_padding_mask,
            Z_padding_mask,
            pos_encoding=self.pos_encoding,
            cond_attention=self.cond_attention,
            causal=self.causal_attn,
            pos_table=self.pos_emb,
            cond_pos_table=self.cond_pos_emb,
        )

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, cond_dim={self.cond_dim}, "
            f"in_horizon={self.in_horizon}, cond_horizon={self.cond_horizon}, "
            f"causal_attn={self.causal_attn}, pos_encoding={self.pos_encoding!r}"
        )


class PlainNormalizer(nn.Module):
    r"""A fitted normalizer as plain tensors: ``x ↦ S (x - μ)`` and ``y ↦ S⁻¹ y + μ``.

    What :meth:`EquivariantNormalizer.export` returns: the statistics without the representation,
    for deployment next to an exported model. ``forward`` is :meth:`normalize`; ``S`` and ``S⁻¹``
    are symmetric, so both maps are a matrix product on the last axis, computed in the
    statistics' precision (float64) and returned in the input's dtype, as the source does.

    Args:
        mean: ``μ``, shape ``(n,)``.
        scale: ``S``, shape ``(n, n)``.
        inverse_scale: ``S⁻¹``, shape ``(n, n)``.
    """

    def __init__(self, mean: Tensor, scale: Tensor, inverse_scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("inverse_scale", inverse_scale.detach().clone())
        self.mean: Tensor
        self.scale: Tensor
        self.inverse_scale: Tensor

    def _check(self, method: str, arg: str, x: Tensor) -> None:
        n = self.mean.shape[0]
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim == 0:
            raise TypeError(
                f"{type(self).__name__}.{method} expects {arg} to be a floating-point tensor of "
                f"shape (..., {n}); got {type(x).__name__}."
            )
        if x.shape[-1] != n:
            raise ValueError(
                f"{type(self).__name__}.{method} expects {arg} of shape (..., {n}); got "
                f"{tuple(x.shape)}."
            )

    def normalize(self, x: Tensor) -> Tensor:
        """``S (x - μ)`` on the last axis of ``x: (..., n)``; same shape and dtype."""
        self._check("normalize", "x", x)
        dtype = torch.promote_types(x.dtype, self.scale.dtype)
        return ((x.to(dtype) - self.mean.to(dtype)) @ self.scale.to(dtype)).to(x.dtype)

    def unnormalize(self, y: Tensor) -> Tensor:
        """``S⁻¹ y + μ`` on the last axis of ``y: (..., n)``; same shape and dtype."""
        self._check("unnormalize", "y", y)
        dtype = torch.promote_types(y.dtype, self.inverse_scale.dtype)
        out = y.to(dtype) @ self.inverse_scale.to(dtype) + self.mean.to(dtype)
        return out.to(y.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`normalize`."""
        return self.normalize(x)
