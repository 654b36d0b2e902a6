"""Unconstrained conditional transformer regressor: the baseline of the equivariant model."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from eregressors._base import (
    GenCondRegressor,
    OptStep,
    _check_bool,
    _check_positive_int,
    _check_probability,
)
from eregressors._masks import causal_memory_mask, causal_self_mask
from eregressors._plain import PlainCondTransformer, PlainSinusoidalPosEmb, PlainStepEmbedding
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

    num_layers: int
    num_attention_heads: int
    embedding_dim: int
    num_cond_layers: int
    causal_attn: bool

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
    ) -> None:
        name = type(self).__name__
        for arg, value in (
            ("in_horizon", in_horizon),
            ("num_layers", num_layers),
            ("num_attention_heads", num_attention_heads),
            ("embedding_dim", embedding_dim),
        ):
            _check_positive_int(name, arg, value)
        if isinstance(num_cond_layers, bool) or not isinstance(num_cond_layers, int):
            raise TypeError(
                f"{name} expects num_cond_layers to be an int >= 0; got {num_cond_layers!r}."
            )
        if num_cond_layers < 0:
            raise ValueError(
                f"{name} expects num_cond_layers to be an int >= 0; got {num_cond_layers!r}."
            )
        if embedding_dim % num_attention_heads != 0:
            valid = [h for h in range(1, embedding_dim + 1) if embedding_dim % h == 0]
            raise ValueError(
                f"{name} expects num_attention_heads to divide embedding_dim={embedding_dim}; got "
                f"num_attention_heads={num_attention_heads}. Valid head counts: {valid}."
            )
        for arg, p in (("p_drop_emb", p_drop_emb), ("p_drop_attn", p_drop_attn)):
            _check_probability(name, arg, p, allow_one=True)
        _check_bool(name, "causal_attn", causal_attn)
        out_dim = in_dim if out_dim is None else out_dim
        # Keywords: GenCondRegressor keeps the seed's (in_dim, out_dim, cond_dim) order.
        super().__init__(
            in_dim=in_dim,
            out_dim=out_dim,
            cond_dim=cond_dim,
            in_horizon=in_horizon,
            cond_horizon=cond_horizon,
        )
        if self.is_conditional:
            _check_positive_int(name, "cond_horizon", cond_horizon)
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.embedding_dim = embedding_dim
        self.num_cond_layers = num_cond_layers
        self.causal_attn = bool(causal_attn)
        E = embedding_dim

        # Trunk input.
        self.input_emb = torch.nn.Linear(in_dim, E)
        self.pos_emb = torch.nn.Parameter(torch.empty(1, in_horizon, E))
        # Memory: step token first, then the conditioning tokens.
        self.step_emb = StepEmbedding(
            SinusoidalPosEmb(E), torch.nn.Linear(E, E), torch.nn.GELU(), torch.nn.Linear(E, E)
        )
        # No conditioning: no Z embedding, and the memory is the step token alone.
        self.cond_emb: torch.nn.Linear | None = (
            torch.nn.Linear(self.cond_dim, E) if self.is_conditional else None
        )
        self.cond_pos_emb = torch.nn.Parameter(torch.empty(1, cond_horizon + 1, E))
        self.drop = torch.nn.Dropout(p_drop_emb)
        self.cond_encoder: torch.nn.TransformerEncoder | torch.nn.Sequential
        if num_cond_layers > 0:
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
        dec_layer = torch.nn.TransformerDecoderLayer(
            E,
            num_attention_heads,
            dim_feedforward=4 * E,
            dropout=p_drop_attn,
            activation="gelu",
            batch_first=True,
            norm_first=True,
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
            elif isinstance(module, torch.nn.MultiheadAttention):
                for w_name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    w = getattr(module, w_name)
                    if w is not None:
                        torch.nn.init.normal_(w, mean=0.0, std=_INIT_STD)
                for b_name in ("in_proj_bias", "bias_k", "bias_v"):
                    b = getattr(module, b_name)
                    if b is not None:
                        torch.nn.init.zeros_(b)
            elif isinstance(module, torch.nn.LayerNorm):
                if module.weight is not None:
                    torch.nn.init.ones_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        torch.nn.init.normal_(self.pos_emb, mean=0.0, std=_INIT_STD)
        torch.nn.init.normal_(self.cond_pos_emb, mean=0.0, std=_INIT_STD)

    def forward(self, X: Tensor, opt_step: OptStep, Z: Tensor | None = None) -> Tensor:
        """Regress ``V_k = f(X_k, Z, k)``.

        Args:
            X: Input tokens of shape ``(B, T_x, in_dim)``, ``T_x <= in_horizon``.
            opt_step: Step ``k``: a Python number, a 0-d tensor or a ``(B,)`` tensor.
            Z: Conditioning tokens of shape ``(B, T_z, cond_dim)``, ``T_z <= cond_horizon``;
                ``None`` for a model built without conditioning (``cond_dim=None``).

        Returns:
            Output tokens of shape ``(B, T_x, out_dim)``.

        Raises:
            ValueError: If a shape is wrong (see :meth:`GenCondRegressor._validate_inputs`).
        """
        X, step, Z = self._validate_inputs(X, opt_step, Z)
        T_x = X.shape[1]

        step_token = self.step_emb(step).unsqueeze(1)  # (B, 1, E)
        if Z is None or self.cond_emb is None:  # a model without conditioning
            T_z, memory = 0, step_token
        else:
            T_z = Z.shape[1]
            memory = torch.cat((step_token, self.cond_emb(Z)), dim=1)
        memory = memory + self.cond_pos_emb[:, : T_z + 1]
        memory = self.drop(memory)
        if isinstance(self.cond_encoder, torch.nn.TransformerEncoder):
            if self.causal_attn:
                mem_mask = causal_self_mask(T_z + 1, device=X.device)
                memory = self.cond_encoder(memory, mask=mem_mask, is_causal=True)
            else:
                memory = self.cond_encoder(memory)
        else:
            memory = self.cond_encoder(memory)

        x = self.drop(self.input_emb(X) + self.pos_emb[:, :T_x])
        if self.causal_attn:
            x = self.decoder(
                x,
                memory,
                tgt_mask=causal_self_mask(T_x, device=X.device),
                memory_mask=causal_memory_mask(T_x, T_z, device=X.device),
                tgt_is_causal=True,
                memory_is_causal=False,
            )
        else:
            x = self.decoder(x, memory, tgt_is_causal=False, memory_is_causal=False)
        out: Tensor = self.head(self.ln_f(x))
        return out

    def export(self) -> PlainCondTransformer:
        """The same model as a :class:`PlainCondTransformer` with copies of the weights.

        Returns:
            A new module (this one is left unchanged) in this model's training mode.
        """
        sinusoid, *mlp = self.step_emb
        assert isinstance(sinusoid, SinusoidalPosEmb)  # built so in __init__
        with torch.no_grad():
            plain = PlainCondTransformer(
                in_dim=self.in_dim,
                out_dim=self.out_dim,
                cond_dim=self.cond_dim,
                in_horizon=self.pos_emb.shape[1],
                cond_horizon=self.cond_pos_emb.shape[1] - 1,
                input_emb=copy.deepcopy(self.input_emb),
                pos_emb=self.pos_emb,
                step_emb=PlainStepEmbedding(
                    plain_sinusoid(sinusoid, self.pos_emb),
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
            )
        return plain.train(self.training)

    if TYPE_CHECKING:

        def __call__(self, X: Tensor, opt_step: OptStep, Z: Tensor | None = None) -> Tensor: ...

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, cond_dim={self.cond_dim}, "
            f"in_horizon={self.in_horizon}, cond_horizon={self.cond_horizon}, "
            f"causal_attn={self.causal_attn}"
        )
