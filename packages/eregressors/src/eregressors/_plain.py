"""The plain PyTorch model that both conditional transformer regressors export to.

This file imports nothing but torch at run time (a test checks it): an exported regressor holds
this class, ``torch.nn`` modules and the torch-only modules of ``elayers._plain``, never an escnn,
``ereps``, equivariant or ``GenCondRegressor`` object, so ``torch.export`` and ONNX programs of it
run on machines without escnn.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PlainCondTransformer", "PlainSinusoidalPosEmb"]


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
        layers = iter(self._modules.values())
        out: Tensor = next(layers)(x)
        for p in self.parameters():
            out = out.to(p.dtype)
            break
        for layer in layers:
            out = layer(out)
        return out


def step_dtype(x: Tensor) -> torch.dtype:
    """The dtype steps are embedded in for data ``x``: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


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
        pos_emb: ``(1, in_horizon, E)``.
        step_emb: Steps ``(B,)`` to ``(B, E)``.
        cond_emb: ``cond_dim -> E``.
        cond_pos_emb: ``(1, cond_horizon + 1, E)``.
        p_drop_emb: Dropout probability of the embedded tokens.
        cond_encoder: A ``torch.nn.TransformerEncoder`` or a token-wise module over the memory.
        decoder: A ``torch.nn.TransformerDecoder``.
        ln_f: The final norm.
        head: ``E -> out_dim``.
        causal_attn: Whether to use the causal masks.
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
        pos_emb: Tensor,
        step_emb: nn.Module,
        cond_emb: nn.Module | None,
        cond_pos_emb: Tensor,
        p_drop_emb: float,
        cond_encoder: nn.Module,
        decoder: nn.TransformerDecoder,
        ln_f: nn.Module,
        head: nn.Module,
        causal_attn: bool,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.cond_dim = in_dim, out_dim, cond_dim
        self.in_horizon, self.cond_horizon = in_horizon, cond_horizon
        self.causal_attn = causal_attn
        self.input_emb = input_emb
        self.pos_emb = nn.Parameter(pos_emb.detach().clone())
        self.step_emb = step_emb
        self.cond_emb = cond_emb
        self.cond_pos_emb = nn.Parameter(cond_pos_emb.detach().clone())
        self.drop = nn.Dropout(p_drop_emb)
        self.cond_encoder = cond_encoder
        self.decoder = decoder
        self.ln_f = ln_f
        self.head = head

    def forward(self, X: Tensor, opt_step: Tensor | float, Z: Tensor | None = None) -> Tensor:
        """Regress ``V = f(X, k, Z)``.

        Args:
            X: ``(B, T_x, in_dim)``, ``T_x <= in_horizon``.
            opt_step: A number, a 0-d, ``(1,)`` or ``(B,)`` tensor.
            Z: ``(B, T_z, cond_dim)``, ``T_z <= cond_horizon``; ``None`` exactly for a model
                without conditioning (``cond_emb`` is ``None``).

        Returns:
            ``(B, T_x, out_dim)``.

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
        batch, t_x = X.shape[0], X.shape[1]
        t_z = 0 if Z is None else Z.shape[1]
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

        step_token = self.step_emb(step).unsqueeze(1)
        if Z is None or self.cond_emb is None:
            memory = step_token
        else:
            cond_tokens = self.cond_emb(Z)
            memory = torch.cat((step_token.to(cond_tokens.dtype), cond_tokens), dim=1)
        memory = memory + self.cond_pos_emb[:, : t_z + 1]
        memory = self.drop(memory)
        if isinstance(self.cond_encoder, nn.TransformerEncoder):
            if self.causal_attn:
                mask = torch.ones(t_z + 1, t_z + 1, dtype=torch.bool, device=X.device).triu(1)
                memory = self.cond_encoder(memory, mask=mask, is_causal=True)
            else:
                memory = self.cond_encoder(memory)
        else:
            memory = self.cond_encoder(memory)

        x = self.drop(self.input_emb(X) + self.pos_emb[:, :t_x])
        if self.causal_attn:
            tgt_mask = torch.ones(t_x, t_x, dtype=torch.bool, device=X.device).triu(1)
            # Token t sees the step (memory index 0) and Z_s for s <= t (index s + 1 <= t + 1).
            memory_mask = torch.ones(t_x, t_z + 1, dtype=torch.bool, device=X.device).triu(2)
            x = self.decoder(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_is_causal=True,
                memory_is_causal=False,
            )
        else:
            x = self.decoder(x, memory, tgt_is_causal=False, memory_is_causal=False)
        out: Tensor = self.head(self.ln_f(x))
        return out

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, cond_dim={self.cond_dim}, "
            f"in_horizon={self.in_horizon}, cond_horizon={self.cond_horizon}, "
            f"causal_attn={self.causal_attn}"
        )
