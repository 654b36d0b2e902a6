"""Unconstrained conditional transformer regressor: the baseline of the equivariant model."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from elayers import (
    PositionalMultiheadAttention,
    PositionalTransformerDecoder,
    PositionalTransformerDecoderLayer,
    PositionalTransformerEncoder,
    PositionalTransformerEncoderLayer,
    RelativePositionBias,
)
from eregressors._base import GenCondRegressor, OptStep
from eregressors._config import CondTransformerRegressorConfig
from eregressors._padding import PosEncoding, check_padding_mask
from eregressors._plain import (
    PlainCondTransformer,
    PlainSinusoidalPosEmb,
    PlainStepEmbedding,
    run_trunk,
)
from eregressors._sinusoidal import SinusoidalPosEmb, StepEmbedding

__all__ = ["CondTransformerRegressor", "plain_sinusoid"]


def plain_sinusoid(sinusoid: SinusoidalPosEmb, reference: Tensor) -> PlainSinusoidalPosEmb:
    """The exported step features of ``sinusoid``.

    Its frequencies as :class:`SinusoidalPosEmb` computes them for steps of ``reference``'s dtype
    (float32 for half precision), on its device.
    """
    dtype = reference.dtype
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    half = sinusoid.dim // 2
    # The same operations as SinusoidalPosEmb.forward, so eager results agree bit for bit.
    exponents = torch.arange(half, device=reference.device, dtype=dtype) / half
    return PlainSinusoidalPosEmb(torch.exp(exponents * (-math.log(sinusoid.max_period))))


_INIT_STD = 0.02


class CondTransformerRegressor(GenCondRegressor):
    r"""Conditional transformer regressor in the design of Diffusion Policy's transformer denoiser.

    .. math::
        f_\theta: \mathbb{R}^{T_x \times d_x} \times \mathbb{R}^{T_z \times d_z} \times \mathbb{R}
        \to \mathbb{R}^{T_x \times d_v}, \qquad (X_k, Z, k) \mapsto V_k.

    Architecture (``E = embedding_dim``):

    1. *Memory.* The step ``k`` is embedded as one token, ``SinusoidalPosEmb(E)`` followed by a
       two-layer GELU MLP; each conditioning token ``Z_s`` by a linear map ``d_z -> E``. The memory
       is the sequence ``[step, Z_0, ..., Z_{T_z-1}]`` (``T_z + 1`` tokens; the step token alone
       for a model without conditioning, ``cond_dim=None``) plus a learned
       positional embedding, passed through dropout and a conditioning encoder: a pre-norm
       ``torch.nn.TransformerEncoder`` of ``num_cond_layers`` layers, or a token-wise MLP ``E -> 4E
       -> E`` when ``num_cond_layers == 0``.
    2. *Trunk.* Each input token ``X_t`` is embedded by a linear map ``d_x -> E``, plus a learned
       positional embedding, then dropout and ``num_layers`` pre-norm
       ``torch.nn.TransformerDecoderLayer`` (self-attention over the input tokens, cross-attention
       to the memory, feed-forward ``E -> 4E -> E``), a final ``LayerNorm`` and a linear head ``E ->
       d_v``.

    Positional embeddings are random at initialisation (normal, std 0.02), as are linear and
    attention weights; biases start at zero and norms at the identity.

    *Causal semantics* (``causal_attn=True``): the output at position ``t`` depends on ``X_0..X_t``,
    on ``Z_0..Z_t`` and on ``k``, and on nothing after ``t``:

    - self-attention over the input tokens: token ``t`` attends to tokens ``s <= t``;
    - cross-attention: token ``t`` attends to the step token and to the conditioning tokens ``Z_s``
      with ``s <= t`` (when ``T_z <= t`` it sees all of them);
    - the transformer conditioning encoder is causal too (memory token ``Z_s`` attends to the step
      and ``Z_{s'}``, ``s' <= s``); the MLP encoder acts on each token alone.

    Masks are built for the actual lengths ``T_x <= in_horizon`` and ``T_z <= cond_horizon``, so
    shorter sequences are accepted in both modes.

    The size arguments come in the order of :class:`eCondTransformerRegressor`'s representations
    (``in_rep, cond_rep, out_rep``), so the two models can be swapped in a positional
    configuration. (Earlier versions took ``in_dim, out_dim, cond_dim``: see the README's
    migration notes.)

    *Padding* (``X_padding_mask``, ``Z_padding_mask``: bool ``(B, T)``, ``True`` = padding, as
    torch's ``key_padding_mask``): padded tokens are never attended to. With right padding the
    output at every real position equals the output for the unpadded shorter sequences; outputs
    at padded positions are zero; a sequence that is all padding gives finite values (padded
    queries attend to every key instead of none, which would be NaN).

    *Time frame and positions* (``pos_encoding``): ``X_t`` and ``Z_t`` describe the same time
    step ``t`` (slot by slot, as in the causal masks); the step token sits just before the first
    real conditioning token, at time ``f - 1`` (``f`` the first slot of ``Z`` that is not padding;
    ``-1`` without a mask). ``"absolute"`` (default): the learned tables above, by slot, and
    torch's layers. ``"relative"``: a learned bias per head and clipped offset
    ``clip(p_key - p_query, ±K)`` added to the logits of every attention. ``"rope"``:
    rotary embeddings (frequencies ``10000^{-i/(d/2)}``, the halves of each head paired) of the
    queries and keys of every attention. Both use :class:`elayers.PositionalTransformerDecoderLayer`
    (torch's layer with positions; same parameter names), and keep the tables
    (``absolute_table=True``, the default) with rows by time since the first real token of ``X``
    or ``Z``. With them a common shift of both sequences inside the horizon (left padding of
    both, masked) leaves the outputs unchanged.

    *Configuration.* The arguments are checked once and kept as ``model.config``
    (:class:`CondTransformerRegressorConfig`, JSON through ``to_dict()``);
    ``from_config(model.config)`` or ``model.config.build()`` builds the same architecture again.

    Args:
        in_dim: Feature size ``d_x`` of the input tokens.
        cond_dim: Feature size ``d_z`` of the conditioning tokens; ``None`` (or ``0``, Diffusion
            Policy's spelling) for a model without conditioning, called with ``Z=None``; it then
            needs ``cond_horizon=0``.
        out_dim: Feature size ``d_v`` of the output tokens; ``in_dim`` if ``None``.
        in_horizon: Maximum input length ``T_x``.
        cond_horizon: Maximum conditioning length ``T_z`` (``0`` without conditioning).
        num_layers: Number of decoder layers of the trunk.
        num_attention_heads: Number of attention heads; must divide ``embedding_dim``.
        embedding_dim: Token width ``E``.
        p_drop_emb: Dropout probability applied to the embedded tokens.
        p_drop_attn: Dropout probability inside the transformer layers.
        causal_attn: Whether to use the causal masks described above.
        num_cond_layers: Number of transformer encoder layers over the memory; ``0`` selects the MLP
            encoder.
        pos_encoding: Keyword-only. ``"absolute"``, ``"relative"`` or ``"rope"`` (see above).
        absolute_table: Keyword-only. Whether ``"relative"``/``"rope"`` also add the learned
            tables (default ``True``), with rows by time since the first real token, so that a
            common shift still changes nothing; ``False`` leaves positions to the attentions.
        max_relative_distance: Keyword-only. ``K`` of ``"relative"``; defaults to
            ``max(in_horizon, cond_horizon + 1)``.

    Raises:
        ValueError: If a size is not positive, ``num_attention_heads`` does not divide
            ``embedding_dim``, or a dropout probability is outside ``[0, 1]``.

    Examples:
        >>> model = CondTransformerRegressor(
        ...     3,
        ...     5,
        ...     3,
        ...     in_horizon=8,
        ...     cond_horizon=2,
        ...     num_layers=1,
        ...     num_attention_heads=2,
        ...     embedding_dim=16,
        ... )
        >>> model(torch.randn(4, 8, 3), 10, torch.randn(4, 2, 5)).shape
        torch.Size([4, 8, 3])
    """

    config_type = CondTransformerRegressorConfig
    config: CondTransformerRegressorConfig
    num_layers: int
    num_attention_heads: int
    embedding_dim: int
    num_cond_layers: int
    causal_attn: bool
    pos_encoding: PosEncoding

    def __init__(
        self,
        in_dim: int,
        cond_dim: int | None,
        out_dim: int | None,
        in_horizon: int,
        cond_horizon: int,
        num_layers: int = 6,
        num_attention_heads: int = 6,
        embedding_dim: int = 768,
        p_drop_emb: float = 0.1,
        p_drop_attn: float = 0.1,
        causal_attn: bool = False,
        num_cond_layers: int = 0,
        *,
        pos_encoding: PosEncoding = "absolute",
        max_relative_distance: int | None = None,
        absolute_table: bool = True,
    ) -> None:
        config = CondTransformerRegressorConfig(
            in_dim=in_dim,
            cond_dim=cond_dim,
            out_dim=out_dim,
            in_horizon=in_horizon,
            cond_horizon=cond_horizon,
            num_layers=num_layers,
            num_attention_heads=num_attention_heads,
            embedding_dim=embedding_dim,
            p_drop_emb=p_drop_emb,
            p_drop_attn=p_drop_attn,
            causal_attn=causal_attn,
            num_cond_layers=num_cond_layers,
            pos_encoding=pos_encoding,
            max_relative_distance=max_relative_distance,
            absolute_table=absolute_table,
        )
        # Checked once, by the configuration; below only the resolved defaults.
        out_dim = config.resolved_out_dim
        max_relative_distance = config.resolved_max_relative_distance
        # Keywords: GenCondRegressor keeps the seed's (in_dim, out_dim, cond_dim) order.
        super().__init__(
            in_dim=in_dim,
            out_dim=out_dim,
            cond_dim=cond_dim,
            in_horizon=in_horizon,
            cond_horizon=cond_horizon,
        )
        self.config = config
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.embedding_dim = embedding_dim
        self.num_cond_layers = num_cond_layers
        self.causal_attn = bool(causal_attn)
        self.pos_encoding = pos_encoding
        self.max_relative_distance = max_relative_distance
        E = embedding_dim
        positional = pos_encoding != "absolute"

        # Trunk input; absolute tables for "absolute" (or when asked for).
        self.input_emb = torch.nn.Linear(in_dim, E)
        self.pos_emb: torch.nn.Parameter | None = None
        self.cond_pos_emb: torch.nn.Parameter | None = None
        if absolute_table:
            self.pos_emb = torch.nn.Parameter(torch.empty(1, in_horizon, E))
            self.cond_pos_emb = torch.nn.Parameter(torch.empty(1, cond_horizon + 1, E))
        # Memory: step token first, then the conditioning tokens.
        self.step_emb = StepEmbedding(
            SinusoidalPosEmb(E), torch.nn.Linear(E, E), torch.nn.GELU(), torch.nn.Linear(E, E)
        )
        # No conditioning: no Z embedding, and the memory is the step token alone.
        self.cond_emb: torch.nn.Linear | None = (
            torch.nn.Linear(self.cond_dim, E) if self.is_conditional else None
        )
        self.drop = torch.nn.Dropout(p_drop_emb)
        self.cond_encoder: (
            torch.nn.TransformerEncoder | PositionalTransformerEncoder | torch.nn.Sequential
        )
        self.decoder: torch.nn.TransformerDecoder | PositionalTransformerDecoder
        layer_kw = {
            "dim_feedforward": 4 * E,
            "dropout": p_drop_attn,
            "activation": "gelu",
            "batch_first": True,
            "norm_first": True,
        }
        pos_kw = {"pos_encoding": pos_encoding, "max_relative_distance": max_relative_distance}
        if positional and num_cond_layers > 0:
            self.cond_encoder = PositionalTransformerEncoder(
                PositionalTransformerEncoderLayer(E, num_attention_heads, **layer_kw, **pos_kw),  # type: ignore[arg-type]
                num_cond_layers,
            )
        elif num_cond_layers > 0:
            enc_layer = torch.nn.TransformerEncoderLayer(
                E,
                num_attention_heads,
                dim_feedforward=4 * E,
                dropout=p_drop_attn,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.cond_encoder = torch.nn.TransformerEncoder(
                enc_layer, num_cond_layers, enable_nested_tensor=False
            )
        else:
            self.cond_encoder = torch.nn.Sequential(
                torch.nn.Linear(E, 4 * E), torch.nn.GELU(), torch.nn.Linear(4 * E, E)
            )
        if positional:
            self.decoder = PositionalTransformerDecoder(
                PositionalTransformerDecoderLayer(E, num_attention_heads, **layer_kw, **pos_kw),  # type: ignore[arg-type]
                num_layers,
            )
        else:
            dec_layer = torch.nn.TransformerDecoderLayer(
                E,
                num_attention_heads,
                **layer_kw,  # type: ignore[arg-type]
            )
            self.decoder = torch.nn.TransformerDecoder(dec_layer, num_layers)
        self.ln_f = torch.nn.LayerNorm(E)
        self.head = torch.nn.Linear(E, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every parameter.

        Linear and attention weights and positional embeddings: normal with std 0.02; biases: zero;
        layer norms: identity (weight one, bias zero).
        """
        for module in self.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=_INIT_STD)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.MultiheadAttention | PositionalMultiheadAttention):
                for w_name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    w = getattr(module, w_name, None)
                    if w is not None:
                        torch.nn.init.normal_(w, mean=0.0, std=_INIT_STD)
                for b_name in ("in_proj_bias", "bias_k", "bias_v"):
                    b = getattr(module, b_name, None)
                    if b is not None:
                        torch.nn.init.zeros_(b)
            elif isinstance(module, RelativePositionBias):
                torch.nn.init.normal_(module.weight, mean=0.0, std=_INIT_STD)
            elif isinstance(module, torch.nn.LayerNorm):
                if module.weight is not None:
                    torch.nn.init.ones_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        for table in (self.pos_emb, self.cond_pos_emb):
            if table is not None:
                torch.nn.init.normal_(table, mean=0.0, std=_INIT_STD)

    def forward(
        self,
        X: Tensor,
        opt_step: OptStep,
        Z: Tensor | None = None,
        *,
        X_padding_mask: Tensor | None = None,
        Z_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Regress ``V_k = f(X_k, Z, k)``.

        Args:
            X: Input tokens of shape ``(B, T_x, in_dim)``, ``T_x <= in_horizon``.
            opt_step: Step ``k``: a Python number, a 0-d tensor or a ``(B,)`` tensor.
            Z: Conditioning tokens of shape ``(B, T_z, cond_dim)``, ``T_z <= cond_horizon``;
                ``None`` for a model built without conditioning (``cond_dim=None``).
            X_padding_mask: Keyword-only. Bool ``(B, T_x)``, ``True`` marks padding of ``X``.
            Z_padding_mask: Keyword-only. Bool ``(B, T_z)``, ``True`` marks padding of ``Z``
                (only with ``Z``).

        Returns:
            Output tokens of shape ``(B, T_x, out_dim)``; zero at the padded positions of ``X``.

        Raises:
            TypeError: If a mask is not a bool tensor.
            ValueError: If a shape is wrong (see :meth:`GenCondRegressor._validate_inputs`).
        """
        X, step, Z = self._validate_inputs(X, opt_step, Z)
        name = type(self).__name__
        check_padding_mask(name, "X_padding_mask", X_padding_mask, X)
        if Z is None and Z_padding_mask is not None:
            raise ValueError(f"{name} got Z_padding_mask without Z (a model without conditioning).")
        if Z is not None:
            check_padding_mask(name, "Z_padding_mask", Z_padding_mask, Z)
        # The shared torch-only trunk: the exported PlainCondTransformer runs the same code.
        return run_trunk(
            self,
            X,
            step,
            Z,
            X_padding_mask,
            Z_padding_mask,
            pos_encoding=self.pos_encoding,
            cond_attention=not isinstance(self.cond_encoder, torch.nn.Sequential),
            causal=self.causal_attn,
            pos_table=self.pos_emb,
            cond_pos_table=self.cond_pos_emb,
        )

    def export(self) -> PlainCondTransformer:
        """The same model as a :class:`PlainCondTransformer` with copies of the weights.

        Returns:
            A new module (this one is left unchanged) in this model's training mode.
        """
        sinusoid, *mlp = self.step_emb
        if not isinstance(sinusoid, SinusoidalPosEmb):  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: built so in __init__")
        # Both horizons are set for the transformer regressors (None only for other models).
        if self.in_horizon is None:  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: expected self.in_horizon is not None")
        if self.cond_horizon is None:  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: expected self.cond_horizon is not None")
        with torch.no_grad():
            plain = PlainCondTransformer(
                in_dim=self.in_dim,
                out_dim=self.out_dim,
                cond_dim=self.cond_dim,
                in_horizon=self.in_horizon,
                cond_horizon=self.cond_horizon,
                input_emb=copy.deepcopy(self.input_emb),
                pos_emb=self.pos_emb,
                step_emb=PlainStepEmbedding(
                    plain_sinusoid(sinusoid, self.input_emb.weight),
                    *copy.deepcopy(mlp),
                ),
                cond_emb=copy.deepcopy(self.cond_emb),
                cond_pos_emb=self.cond_pos_emb,
                p_drop_emb=self.drop.p,
                cond_encoder=copy.deepcopy(self.cond_encoder),
                decoder=copy.deepcopy(self.decoder),
                ln_f=copy.deepcopy(self.ln_f),
                head=copy.deepcopy(self.head),
                causal_attn=self.causal_attn,
                pos_encoding=self.pos_encoding,
                cond_attention=not isinstance(self.cond_encoder, torch.nn.Sequential),
            )
        return plain.train(self.training)

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, cond_dim={self.cond_dim}, "
            f"in_horizon={self.in_horizon}, cond_horizon={self.cond_horizon}, "
            f"causal_attn={self.causal_attn}, pos_encoding={self.pos_encoding!r}"
        )
