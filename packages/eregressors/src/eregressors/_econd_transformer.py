"""Equivariant conditional transformer regressor."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn.modules.module import _IncompatibleKeys

from elayers import (
    ChangeOfBasis,
    NormModule,
    ThenChangeOfBasis,
    copy_dropout,
    eLinear,
    eMLP,
    eModule,
    eSpectralDecoder,
    eSpectralLinear,
    eSpectralMLP,
    eSpectralNorm,
    eTransformerDecoder,
    eTransformerDecoderLayer,
    eTransformerEncoder,
    eTransformerEncoderLayer,
    frozen_twin,
    make_norm,
    to_spectral_basis,
)
from eregressors._base import GenCondRegressor, OptStep
from eregressors._cond_transformer import plain_sinusoid
from eregressors._config import (
    EXECUTIONS,
    Execution,
    check_scheme,
    eCondTransformerRegressorConfig,
)
from eregressors._masks import causal_memory_mask
from eregressors._optim import OptimGroup, is_decayed_default, split_optim_groups
from eregressors._padding import (
    PosEncoding,
    anchored_table_indices,
    check_padding_mask,
    memory_padding,
    memory_positions,
)
from eregressors._plain import PlainCondTransformer, PlainStepEmbedding
from eregressors._sinusoidal import SinusoidalPosEmb, StepEmbedding
from ereps import (
    GroupElement,
    InitScheme,
    Representation,
    direct_sum,
    group_order,
    regular_spectral_basis,
)

__all__ = ["EXECUTIONS", "Execution", "eCondTransformerRegressor"]

_POS_STD = 0.02


def _is_decayed(module: torch.nn.Module, param_name: str) -> bool:
    """Decay the free weights of equivariant and plain linear maps, nothing else."""
    if isinstance(module, eLinear):
        return param_name == "weight_params"
    if isinstance(module, eSpectralLinear):
        return param_name.startswith("weight_")
    return is_decayed_default(module, param_name)


def _init_linear(layer: torch.nn.Linear, scheme: InitScheme) -> None:
    """Draw a plain linear map's weight with ``scheme`` and zero its bias."""
    if scheme == "xavier_uniform":
        torch.nn.init.xavier_uniform_(layer.weight)
    elif scheme == "xavier_normal":
        torch.nn.init.xavier_normal_(layer.weight)
    elif scheme == "kaiming_uniform":
        torch.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    else:
        torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    if layer.bias is not None:
        torch.nn.init.zeros_(layer.bias)


class eCondTransformerRegressor(GenCondRegressor):
    r"""Equivariant analogue of :class:`CondTransformerRegressor`.

    .. math::
        f_\theta: \mathcal{X}^{T_x} \times \mathcal{Z}^{T_z} \times \mathbb{R}
        \to \mathcal{Y}^{T_x}, \qquad
        f_\theta(\rho_{\mathcal{X}}(g) X_k,\ \rho_{\mathcal{Z}}(g) Z,\ k)
        = \rho_{\mathcal{Y}}(g)\, f_\theta(X_k, Z, k) \quad \forall g \in G,

    with every representation acting token-wise on the feature axis. The architecture mirrors the
    baseline, with ``c = embedding_dim / |G|`` copies of the regular representation of ``G`` as the
    token space (``embedding_rep``), where pointwise nonlinearities and attention are equivariant:

    1. *Input tokens:* ``eLinear(in_rep -> embedding_rep)`` plus a positional embedding.
    2. *Memory:* ``[step, Z_0, ..., Z_{T_z-1}]``: the conditioning tokens embedded by
       ``eLinear(cond_rep -> embedding_rep)``, a step token, plus positional embeddings (the step
       token alone for a model without conditioning, ``cond_rep=None``); then an
       ``eTransformerEncoder`` of ``num_cond_layers`` pre-norm layers, or an ``eMLP``
       ``embedding_rep -> 4·embedding_dim -> embedding_rep`` when ``num_cond_layers == 0``.
    3. *Trunk:* ``num_layers`` pre-norm ``eTransformerDecoderLayer`` (self-attention,
       cross-attention to the memory, feed-forward of width ``4·embedding_dim``), a final
       equivariant norm (``norm_module``) and ``eLinear(embedding_rep -> out_rep)``.

    *Invariant embeddings.* Adding a vector ``p`` to equivariant tokens preserves equivariance iff
    ``ρ(g) p = p``: ``p`` must lie in the invariant subspace of ``embedding_rep``. For a regular
    copy (a function on the group) that subspace is the constant functions, so it holds only ``c``
    numbers per token. Positional embeddings are therefore parameters of shape ``(1, horizon, c)``,
    drawn at random (normal, std 0.02; a zero table would leave the model blind to token order at
    initialisation), each number repeated over the ``|G|`` entries of its copy.

    *Step embedding.* Projecting a fixed sinusoidal embedding of ``k`` onto that subspace would
    average each copy's ``|G|`` frequencies into one number: neighbouring steps would become nearly
    indistinguishable (cosine similarity ~0.999 for the icosahedral group). Instead the sinusoidal
    features (``step_emb_dim`` of them) go through a learned unconstrained MLP (the step is
    invariant, so no constraint applies) to ``c`` invariant numbers, expanded the same way. The
    sinusoid's periods span ``1`` to ``10⁴``: pass flow-matching times ``t ∈ [0, 1]`` scaled
    (e.g. ``1000 · t``), as diffusion steps are.

    *Causal semantics* (``causal_attn=True``), as in the baseline: the output at position ``t``
    depends only on ``X_0..X_t``, ``Z_0..Z_t`` and ``k``: causal self-attention over the input
    tokens; cross-attention from token ``t`` to the step token and ``Z_s``, ``s <= t``; a causal
    conditioning encoder. Masks are built for the actual lengths, so ``T_x <= in_horizon`` and
    ``T_z <= cond_horizon`` both work.

    *Without conditioning* (``cond_rep=None``, ``cond_horizon=0``; Diffusion Policy's
    ``cond_dim=0`` / ``obs_as_cond=False`` mode), ``forward(X, k)`` takes ``Z=None`` and
    :math:`f_\theta(\rho_{\mathcal{X}}(g) X_k, k) = \rho_{\mathcal{Y}}(g) f_\theta(X_k, k)`.

    *Padding* (``X_padding_mask``, ``Z_padding_mask``: bool ``(B, T)``, ``True`` = padding, as
    torch's ``key_padding_mask``): padded tokens are never attended to. With right padding, the
    output at every real position equals the output for the unpadded shorter sequences; outputs
    at padded positions are zero. A sequence that is all padding gives finite values (attention
    rows with every key masked get a zero output instead of NaN); the step token is never padding.

    *Time frame and positions* (``pos_encoding``): ``X_t`` and ``Z_t`` describe the same time
    step ``t`` (slot ``t`` of each sequence, as in the causal masks); the step token has no slot
    and sits just before the first real conditioning token, at time ``f - 1`` (``f`` the first
    slot of ``Z`` that is not padding; ``-1`` without a mask).

    - ``"absolute"`` (default, the seed's): the learned invariant tables above, by slot.
    - ``"relative"``: every attention adds a learned bias per head and clipped offset
      ``clip(p_key - p_query, ±K)``, ``K = max_relative_distance``, to its logits. A number per
      head is invariant, so the logits stay invariant.
    - ``"rope"``: rotary embeddings of queries and keys in every attention. A head's
      queries and keys are ``c_h`` regular copies ``q_{i,a}`` (copy ``i``, group coordinate
      ``a``) on which ``g`` acts by one permutation ``P_g`` of ``a`` in every copy. The rotation
      takes *pairs of copies* ``(q_{i,a}, q_{i+P,a})``, ``P = ⌊c_h/2⌋``, and turns them by the
      angle ``p·θ_i`` of the token's time ``p`` (``θ_i = 10000^{-i/P}``; an odd last copy is not
      rotated). It mixes copies while ``P_g`` permutes inside them, so the two commute and
      ``⟨R_p P_g q, R_{p'} P_g k⟩ = ⟨R_p q, R_{p'} k⟩ = ⟨q, R_{p'-p} k⟩``: the logits stay
      invariant and depend on relative time only. Needs ``c / num_attention_heads >= 2``.

    With ``"relative"`` and ``"rope"`` the tables above are kept (``absolute_table=True``, the
    default; without them the attentions alone see where a token is, and the demo task trains
    much worse) but read by time since the first real token of ``X`` or ``Z`` (the earliest real
    slot is row 0; without masks that is the slot itself). So nothing depends on absolute slots:
    shifting both sequences by a common offset inside the horizon (left-padding both by ``a``
    slots and masking them) leaves the outputs at the real positions unchanged, with or without
    the tables.

    Equivariance holds exactly in eval mode (dropout masks are not equivariant sample by sample).

    *Configuration.* The arguments are checked once and kept as ``model.config``
    (:class:`eCondTransformerRegressorConfig`, JSON through ``to_dict()``);
    ``from_config(model.config)`` or ``model.config.build()`` builds the same architecture again.

    Args:
        in_rep: Representation :math:`\rho_{\text{in}}` of the input tokens.
        cond_rep: Representation :math:`\rho_{\text{cond}}` of the conditioning tokens; ``None``
            for a model without conditioning (then ``cond_horizon`` must be ``0``).
        out_rep: Output representation :math:`\rho_{\text{out}}`; ``in_rep`` if ``None``.
        in_horizon: Maximum length of the input sequence.
        cond_horizon: Maximum length of the conditioning sequence (``0`` without conditioning).
        num_layers: Number of transformer decoder layers of the trunk.
        num_attention_heads: Number of attention heads; must divide ``embedding_dim / |G|``.
        embedding_dim: Size of the token space, a multiple of the group order ``|G|``.
        p_drop_emb: Dropout probability on the embedded tokens.
        p_drop_attn: Dropout probability inside the transformer layers.
        causal_attn: Whether to mask the future (see above).
        num_cond_layers: Number of encoder layers over the memory; ``0`` selects the eMLP.
        norm_module: ``"rmsnorm"`` or ``"layernorm"`` (equivariant versions).
        init_scheme: Initialisation of the linear maps: ``"xavier_uniform"``, ``"xavier_normal"``,
            ``"kaiming_uniform"`` or ``"kaiming_normal"``.
        step_emb_dim: Keyword-only. Number of sinusoidal features of the step (even); defaults to
            ``embedding_dim`` rounded up to an even number.
        pos_encoding: Keyword-only. ``"absolute"``, ``"relative"`` or ``"rope"`` (see above).
        absolute_table: Keyword-only. Whether ``"relative"``/``"rope"`` also add the learned
            tables (default ``True``), with rows by time since the first real token, so that a
            common shift still changes nothing; ``False`` leaves positions to the attentions.
        max_relative_distance: Keyword-only. ``K`` of ``"relative"``; defaults to
            ``max(in_horizon, cond_horizon + 1)``, so no offset inside the horizons is clipped.
        execution: Keyword-only. ``"regular"`` (default): the trunk computes with dense group
            convolutions in the regular basis. ``"spectral"``: the trunk's tokens live in the
            isotypic basis of the embedding (``x_spec = (I ⊗ T)^T x``, see
            :func:`ereps.regular_spectral_basis`), its linear maps are block diagonal
            (``c_in c_out Σ_k d_k³/e_k`` instead of ``c_in c_out |G|²`` multiply-adds per token),
            attention logits and norm statistics are computed there directly, and only the
            feed-forward activation runs in the regular basis. Same function and same
            initialization distribution (the regular draw, converted); residual and embedding
            dropout drop whole copies in training. Convert a model with :meth:`with_execution`.

    Raises:
        TypeError: If a representation is not an escnn representation.
        ValueError: If the representations are of different groups, ``embedding_dim`` is not a
            multiple of ``|G|``, the head count does not divide ``embedding_dim / |G|`` (the
            message lists the valid ones), ``norm_module`` or ``init_scheme`` is unknown, or a size
            or probability is out of range.

    Examples:
        >>> import ereps
        >>> G = ereps.cyclic_group(4)
        >>> rho = G.irrep(1) + G.trivial_representation  # 3-D
        >>> model = eCondTransformerRegressor(
        ...     rho,
        ...     rho,
        ...     None,
        ...     in_horizon=8,
        ...     cond_horizon=2,
        ...     num_layers=1,
        ...     num_attention_heads=2,
        ...     embedding_dim=16,
        ... )
        >>> model(torch.randn(5, 8, 3), 10, torch.randn(5, 2, 3)).shape
        torch.Size([5, 8, 3])
    """

    config_type = eCondTransformerRegressorConfig
    config: eCondTransformerRegressorConfig
    in_rep: Representation
    cond_rep: Representation | None
    out_rep: Representation
    embedding_rep: Representation
    # Always given to this model (the base class also allows unbounded lengths).
    in_horizon: int
    cond_horizon: int
    num_layers: int
    num_attention_heads: int
    embedding_dim: int
    num_cond_layers: int
    causal_attn: bool
    norm_module: NormModule
    init_scheme: InitScheme
    pos_encoding: PosEncoding

    def __init__(
        self,
        in_rep: Representation,
        cond_rep: Representation | None,
        out_rep: Representation | None,
        in_horizon: int,
        cond_horizon: int,
        num_layers: int,
        num_attention_heads: int,
        embedding_dim: int,
        p_drop_emb: float = 0.1,
        p_drop_attn: float = 0.1,
        causal_attn: bool = False,
        num_cond_layers: int = 0,
        norm_module: NormModule = "rmsnorm",
        init_scheme: InitScheme = "xavier_uniform",
        *,
        step_emb_dim: int | None = None,
        pos_encoding: PosEncoding = "absolute",
        max_relative_distance: int | None = None,
        absolute_table: bool = True,
        execution: Execution = "regular",
    ) -> None:
        config = eCondTransformerRegressorConfig(
            in_rep=in_rep,
            cond_rep=cond_rep,
            out_rep=out_rep,
            in_horizon=in_horizon,
            cond_horizon=cond_horizon,
            num_layers=num_layers,
            num_attention_heads=num_attention_heads,
            embedding_dim=embedding_dim,
            p_drop_emb=p_drop_emb,
            p_drop_attn=p_drop_attn,
            causal_attn=causal_attn,
            num_cond_layers=num_cond_layers,
            norm_module=norm_module,
            init_scheme=init_scheme,
            step_emb_dim=step_emb_dim,
            pos_encoding=pos_encoding,
            max_relative_distance=max_relative_distance,
            absolute_table=absolute_table,
            execution=execution,
        )
        # Checked once, by the configuration; below only the resolved defaults.
        out_rep = config.resolved_out_rep
        step_emb_dim = config.resolved_step_emb_dim
        max_relative_distance = config.resolved_max_relative_distance
        group = in_rep.group
        order = group_order(group)
        copies = embedding_dim // order
        super().__init__(
            in_dim=in_rep.size,
            out_dim=out_rep.size,
            cond_dim=None if cond_rep is None else cond_rep.size,
            in_horizon=in_horizon,
            cond_horizon=cond_horizon,
        )
        self.config = config
        self.in_rep, self.cond_rep, self.out_rep = in_rep, cond_rep, out_rep
        self.group_order = order
        self.num_copies = copies
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.embedding_dim = embedding_dim
        self.num_cond_layers = num_cond_layers
        self.causal_attn = bool(causal_attn)
        self.norm_module = norm_module
        self.init_scheme = init_scheme
        self.pos_encoding = pos_encoding
        self.max_relative_distance = max_relative_distance
        pos_kw: dict[str, object] = (
            {}
            if pos_encoding == "absolute"
            else {"pos_encoding": pos_encoding, "max_relative_distance": max_relative_distance}
        )
        emb_rep = direct_sum([group.regular_representation] * copies)
        self.embedding_rep = emb_rep
        E = embedding_dim

        # Trunk input: equivariant embedding + invariant positional embedding (c numbers per token).
        self.input_emb = eLinear(in_rep, emb_rep, init_scheme=init_scheme)
        # Absolute tables for "absolute" (or when asked for); the others live in the attentions.
        self.pos_emb: torch.nn.Parameter | None = None
        self.cond_pos_emb: torch.nn.Parameter | None = None
        if absolute_table:
            self.pos_emb = torch.nn.Parameter(torch.empty(1, in_horizon, copies))
            self.cond_pos_emb = torch.nn.Parameter(torch.empty(1, cond_horizon + 1, copies))
        # Memory: step token (invariant) first, then the conditioning tokens.
        self.step_emb = StepEmbedding(
            SinusoidalPosEmb(step_emb_dim),
            torch.nn.Linear(step_emb_dim, E),
            torch.nn.GELU(),
            torch.nn.Linear(E, copies),
        )
        # No conditioning: no Z embedding, and the memory is the step token alone.
        self.cond_emb: eLinear | None = (
            None if cond_rep is None else eLinear(cond_rep, emb_rep, init_scheme=init_scheme)
        )
        self.drop = torch.nn.Dropout(p_drop_emb)
        self.cond_encoder: eTransformerEncoder | eMLP | eSpectralMLP
        if num_cond_layers > 0:
            enc_layer = eTransformerEncoderLayer(
                emb_rep,
                num_attention_heads,
                dim_feedforward=4 * E,
                dropout=p_drop_attn,
                activation="gelu",
                batch_first=True,
                norm_first=True,
                norm_module=norm_module,
                init_scheme=init_scheme,
                **pos_kw,  # type: ignore[arg-type]
            )
            self.cond_encoder = eTransformerEncoder(enc_layer, num_cond_layers)
        else:
            self.cond_encoder = eMLP(
                emb_rep, emb_rep, hidden_units=[4 * E], activation="gelu", init_scheme=init_scheme
            )
        dec_layer = eTransformerDecoderLayer(
            emb_rep,
            num_attention_heads,
            dim_feedforward=4 * E,
            dropout=p_drop_attn,
            activation="gelu",
            batch_first=True,
            norm_first=True,
            norm_module=norm_module,
            init_scheme=init_scheme,
            **pos_kw,  # type: ignore[arg-type]
        )
        self.decoder: eTransformerDecoder | eSpectralDecoder = eTransformerDecoder(
            dec_layer, num_layers
        )
        self.ln_f: eModule = make_norm(norm_module, emb_rep, 1e-5)
        self.head = eLinear(emb_rep, out_rep, init_scheme=init_scheme)
        self.execution: Execution = "regular"
        self.reset_parameters(init_scheme)
        if execution == "spectral":
            # Converted from the freshly drawn regular trunk: the same function and the same
            # initialization distribution as the regular execution.
            self._convert_trunk("spectral")

    def _expand_invariant(self, coeffs: Tensor) -> Tensor:
        """Map invariant coefficients ``(..., c)`` to ``(..., c·|G|)``, constant on each copy."""
        shape = coeffs.shape
        out = coeffs.unsqueeze(-1).expand(*shape, self.group_order)
        return out.reshape(*shape[:-1], self.embedding_dim)

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
            X: Input tokens of shape ``(B, T_x, in_rep.size)``, ``T_x <= in_horizon``.
            opt_step: Step ``k``: a Python number, a 0-d tensor or a ``(B,)`` tensor.
            Z: Conditioning tokens of shape ``(B, T_z, cond_rep.size)``, ``T_z <= cond_horizon``;
                ``None`` for a model built without conditioning (``cond_rep=None``).
            X_padding_mask: Keyword-only. Bool ``(B, T_x)``, ``True`` marks padding of ``X``.
            Z_padding_mask: Keyword-only. Bool ``(B, T_z)``, ``True`` marks padding of ``Z``
                (only with ``Z``).

        Returns:
            Output tokens of shape ``(B, T_x, out_rep.size)``, transforming by ``out_rep``; zero
            at the padded positions of ``X``.

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
        twin = frozen_twin(self)
        if isinstance(twin, PlainCondTransformer):
            # Inside elayers.frozen: the plain model exported on entry, without its own call
            # overhead and validation (at batch 1 they cost a few percent of the forward).
            return twin._run(X, step, Z, X_padding_mask, Z_padding_mask)
        if twin is not None:
            result: Tensor = twin(
                X, step, Z, X_padding_mask=X_padding_mask, Z_padding_mask=Z_padding_mask
            )
            return result
        T_x = X.shape[1]
        T_z = 0 if Z is None else Z.shape[1]
        mem_pad = memory_padding(Z_padding_mask)
        x_pos = mem_pos = None
        if self.pos_encoding != "absolute":
            x_pos = torch.arange(T_x, device=X.device)
            mem_pos = memory_positions(T_z, Z_padding_mask, X.device)

        x_table = z_table = None
        if self.pos_emb is not None and self.cond_pos_emb is not None:
            if self.pos_encoding == "absolute" or (
                X_padding_mask is None and Z_padding_mask is None
            ):
                x_table = self.pos_emb[:, :T_x]
                z_table = self.cond_pos_emb[:, : T_z + 1]
            else:
                # Tables on top of relative positions: rows by time since the first real token.
                x_rows, z_rows = anchored_table_indices(
                    X_padding_mask,
                    Z_padding_mask,
                    (X.shape[0], T_x, T_z),
                    (self.pos_emb.shape[1], self.cond_pos_emb.shape[1] - 1),
                    X.device,
                )
                x_table, z_table = self.pos_emb[0][x_rows], self.cond_pos_emb[0][z_rows]

        memory = self._expand_invariant(self.step_emb(step)).unsqueeze(1)  # (B, 1, E)
        if Z is not None and self.cond_emb is not None:
            cond_tokens = self.cond_emb(Z)  # (B, T_z, E)
            memory = torch.cat((memory.to(cond_tokens.dtype), cond_tokens), dim=1)
        if z_table is not None:
            memory = memory + self._expand_invariant(z_table)
        memory = self.drop(memory)
        if isinstance(self.cond_encoder, eTransformerEncoder):
            memory = self.cond_encoder(
                memory, src_key_padding_mask=mem_pad, is_causal=self.causal_attn, src_pos=mem_pos
            )
        elif isinstance(self.cond_encoder, eSpectralMLP):
            memory = self.cond_encoder(to_spectral_basis(memory, self.cond_encoder.transform))
        else:
            memory = self.cond_encoder(memory)

        memory_mask = causal_memory_mask(T_x, T_z, device=X.device) if self.causal_attn else None
        if isinstance(self.decoder, eSpectralDecoder):
            out = self._spectral_trunk(
                X, x_table, memory, memory_mask, X_padding_mask, mem_pad, x_pos, mem_pos
            )
        else:
            x = self.input_emb(X)
            if x_table is not None:
                x = x + self._expand_invariant(x_table)
            x = self.drop(x)
            x = self.decoder(
                x,
                memory,
                memory_mask=memory_mask,
                tgt_key_padding_mask=X_padding_mask,
                memory_key_padding_mask=mem_pad,
                tgt_is_causal=self.causal_attn,
                tgt_pos=x_pos,
                memory_pos=mem_pos,
            )
            out = self.head(self.ln_f(x))
        if X_padding_mask is not None:
            out = out.masked_fill(X_padding_mask.unsqueeze(-1), 0.0)
        return out

    def _spectral_trunk(
        self,
        X: Tensor,
        x_table: Tensor | None,
        memory: Tensor,
        memory_mask: Tensor | None,
        X_padding_mask: Tensor | None,
        mem_pad: Tensor | None,
        x_pos: Tensor | None,
        mem_pos: Tensor | None,
    ) -> Tensor:
        """The trunk with tokens in the spectral basis (``execution="spectral"``).

        The input embedding and the head are the regular ``eLinear`` maps with ``T`` folded into
        their weights (``(I ⊗ T)^T W_in``, ``W_out (I ⊗ T)``: ``|G|²`` per copy and weight, no
        per-token transform); invariant tables sit on the trivial coordinates (``√|G|`` times the
        per-copy value); the memory (the step token and ``T_z`` conditioning tokens, encoded in
        the regular basis) is transformed once, before its spectral MLP (``num_cond_layers=0``;
        a conditioning transformer encoder stays regular). Embedding dropout drops whole copies.
        """
        decoder = self.decoder
        if not isinstance(decoder, eSpectralDecoder):  # an internal invariant
            raise RuntimeError("internal error: called for the spectral execution only")
        transform = decoder.transform_matrix()
        t = transform.to(X.dtype)
        n, c = self.group_order, self.num_copies
        w_in = self.input_emb.dense_weight().view(c, n, -1)
        w_in = torch.einsum("ga,cgi->cai", t, w_in).reshape(c * n, -1)
        b_in = self.input_emb.dense_bias()
        if b_in is not None:
            b_in = (b_in.view(c, n) @ t).reshape(-1)
        x = torch.nn.functional.linear(X, w_in, b_in)
        if x_table is not None:
            x = x + self._spectral_invariant(x_table.to(x.dtype))
        x = copy_dropout(x, self.drop.p, self.training, c)
        if not isinstance(self.cond_encoder, eSpectralMLP):
            memory = to_spectral_basis(memory, transform)
        x = decoder(
            x,
            memory,
            memory_mask,
            X_padding_mask,
            mem_pad,
            self.causal_attn,
            x_pos,
            mem_pos,
        )
        x = self.ln_f(x)
        w_out = self.head.dense_weight()
        w_out = (w_out.view(-1, c, n) @ t).reshape(w_out.shape[0], c * n)
        out: Tensor = torch.nn.functional.linear(x, w_out, self.head.dense_bias())
        return out

    def _spectral_invariant(self, coeffs: Tensor) -> Tensor:
        """Invariant coefficients ``(..., c)`` as spectral tokens: ``√|G| β`` on trivial coords."""
        n = self.group_order
        i = regular_spectral_basis(self.in_rep.group).trivial_index
        scaled = coeffs.unsqueeze(-1) * math.sqrt(n)
        zeros = coeffs.new_zeros(1).expand(*coeffs.shape, n - 1)
        parts = (zeros[..., :i], scaled, zeros[..., i:])
        return torch.cat(parts, dim=-1).flatten(-2)

    def _convert_trunk(self, execution: Execution) -> None:
        """Replace the trunk (decoder and final norm) by the other execution's, same function."""
        if execution == self.execution:
            return
        frozen_parts = _frozen_parts(self)
        if execution == "spectral":
            if not isinstance(self.decoder, eTransformerDecoder):  # an internal invariant
                raise RuntimeError("internal error: a regular model has a regular decoder")
            self.decoder = eSpectralDecoder(self.decoder)
            if isinstance(self.cond_encoder, eMLP):
                self.cond_encoder = eSpectralMLP(self.cond_encoder)
            self.ln_f = eSpectralNorm.from_regular(self.ln_f)
        else:
            decoder, ln_f = self.decoder, self.ln_f
            if not isinstance(decoder, eSpectralDecoder) or not isinstance(
                ln_f, eSpectralNorm
            ):  # an internal invariant
                raise RuntimeError("internal error: a spectral model has a spectral trunk")
            self.decoder = decoder.regular_twin()
            if isinstance(self.cond_encoder, eSpectralMLP):
                self.cond_encoder = self.cond_encoder.to_regular()
            self.ln_f = ln_f.to_regular()
        for name in frozen_parts:
            getattr(self, name).requires_grad_(False)
        self.execution = execution

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Load as ``torch.nn.Module.load_state_dict`` does; a refused load changes nothing.

        A state dict saved from the other execution (its trunk holds spectral blocks where this
        model holds group convolutions, or the reverse) is refused with a message saying so and
        how to convert: build the model with the execution the state dict was saved from, load,
        then :meth:`with_execution`.
        """
        saved = _saved_execution(state_dict)
        if saved is not None and saved != self.execution:
            raise ValueError(
                f"{type(self).__name__}: the state dict was saved from a model with "
                f"execution={saved!r}, this one has execution={self.execution!r}; nothing was "
                f"loaded. Build the model with execution={saved!r}, load the state dict, then "
                f"convert with .with_execution({self.execution!r})."
            )
        result: _IncompatibleKeys = super().load_state_dict(
            state_dict, strict=strict, assign=assign
        )
        return result

    def with_execution(self, execution: Execution) -> eCondTransformerRegressor:
        """A new model computing the same function with ``execution`` (this one is unchanged).

        ``"spectral"`` converts the trunk's weights into block-diagonal spectral coefficients,
        ``"regular"`` synthesizes them back into group convolutions; outputs agree to rounding
        (``1e-10`` in float64). Only the trunk's state-dict entries differ between executions;
        load a state dict into a model of the execution it was saved from and convert then.

        Args:
            execution: ``"regular"`` or ``"spectral"``.

        Returns:
            A new model in this model's training mode.

        Raises:
            ValueError: If ``execution`` is unknown.
        """
        if not isinstance(execution, str) or execution not in EXECUTIONS:
            raise ValueError(
                f"{type(self).__name__}.with_execution expects one of {list(EXECUTIONS)}; "
                f"got {execution!r}."
            )
        new = copy.deepcopy(self)
        new._convert_trunk(execution)
        new.config = dataclasses.replace(self.config, execution=execution)
        return new.train(self.training)

    def export(self) -> PlainCondTransformer:
        """The same function as a :class:`PlainCondTransformer` of plain ``torch.nn`` modules.

        Every equivariant part becomes its :meth:`elayers.eModule.export` (``torch.nn.Linear``,
        ``LayerNorm``/``RMSNorm``, torch's transformer layers); the invariant embeddings ``(…, c)``
        become dense ``(…, embedding_dim)`` ones (each number repeated over its copy), and the
        step MLP's last layer gets each output row repeated ``|G|`` times, so the plain model has
        the structure of :class:`CondTransformerRegressor` and agrees with this one to rounding.

        A spectral-execution model exports the same dense plain model (through its regular
        twin, :meth:`with_execution`): it computes the same function. :meth:`export_spectral`
        (``elayers.export(model, form="spectral")``) gives the spectral form instead.

        Returns:
            A new module (this one is left unchanged) in this model's training mode.
        """
        if self.execution != "regular":
            return self.with_execution("regular").export()
        with torch.no_grad():
            plain = PlainCondTransformer(
                in_dim=self.in_dim,
                out_dim=self.out_dim,
                cond_dim=self.cond_dim,
                in_horizon=self.in_horizon,
                cond_horizon=self.cond_horizon,
                input_emb=self.input_emb.export(),
                pos_emb=None if self.pos_emb is None else self._expand_invariant(self.pos_emb),
                step_emb=self._plain_step_embedding(),
                cond_emb=None if self.cond_emb is None else self.cond_emb.export(),
                cond_pos_emb=(
                    None if self.cond_pos_emb is None else self._expand_invariant(self.cond_pos_emb)
                ),
                p_drop_emb=self.drop.p,
                cond_encoder=self.cond_encoder.export(),
                decoder=self.decoder.export(),
                ln_f=self.ln_f.export(),
                head=self.head.export(),
                causal_attn=self.causal_attn,
                pos_encoding=self.pos_encoding,
                cond_attention=isinstance(self.cond_encoder, eTransformerEncoder),
            )
        return plain.train(self.training)

    def _plain_step_embedding(self) -> PlainStepEmbedding:
        """The step MLP in plain torch, its last layer's rows repeated ``|G|`` times."""
        sinusoid, first, act, last = self.step_emb
        if not isinstance(sinusoid, SinusoidalPosEmb):  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: built so in __init__")
        if not isinstance(last, torch.nn.Linear):  # an internal invariant (python -O keeps it)
            raise RuntimeError("internal error: expected isinstance(last, torch.nn.Linear)")
        n = self.group_order
        with torch.no_grad():
            expanded = torch.nn.Linear(
                last.in_features,
                self.embedding_dim,
                device=last.weight.device,
                dtype=last.weight.dtype,
            )
            expanded.weight.copy_(last.weight.repeat_interleave(n, dim=0))
            expanded.bias.copy_(last.bias.repeat_interleave(n, dim=0))
        return PlainStepEmbedding(
            plain_sinusoid(sinusoid, last.weight),
            copy.deepcopy(first),
            copy.deepcopy(act),
            expanded.train(last.training),
        )

    def export_spectral(self) -> PlainCondTransformer:
        """The same function as a :class:`PlainCondTransformer` whose trunk is spectral.

        The spectral form of the export (``elayers.export(model, form="spectral")`` calls this):
        the trunk keeps the spectral execution's computation in plain torch, block-diagonal
        batched products and constant changes of basis (``decoder`` an
        ``elayers.PlainSpectralDecoder``, ``ln_f`` an ``elayers.PlainSpectralNorm``); the input
        embedding and the head are ``torch.nn.Linear`` layers with ``T`` folded into their
        weights (``(I ⊗ T)^T W_in``, ``W_out (I ⊗ T)``), as in the spectral execution's forward,
        and the input positional table sits on the trivial coordinates (``√|G|`` times the
        per-copy value). The memory is embedded in the regular basis, as the source does, and
        moves to the spectral basis once: before the spectral MLP (``num_cond_layers=0``,
        ``torch.nn.Sequential(elayers.ChangeOfBasis, elayers.PlainSpectralMLP)``) or after the
        dense conditioning encoder (``elayers.ThenChangeOfBasis``). :meth:`export` gives the
        dense form of the same function.

        A regular-execution model is converted first (:meth:`with_execution` ``("spectral")``,
        the same function to rounding), so every model has both forms; this model is unchanged.

        In eval mode the result agrees with this model to rounding. In training mode its
        dropout is elementwise (``torch.nn.Dropout``) where the source drops whole copies of the
        embedded tokens: exported models are for inference.

        Returns:
            A new module in this model's training mode.
        """
        if self.execution != "spectral":
            return self.with_execution("spectral").export_spectral()
        decoder, ln_f = self.decoder, self.ln_f
        if not isinstance(decoder, eSpectralDecoder) or not isinstance(
            ln_f, eSpectralNorm
        ):  # an internal invariant
            raise RuntimeError("internal error: a spectral model has a spectral trunk")
        transform = decoder.transform_matrix()
        n, c = self.group_order, self.num_copies
        with torch.no_grad():
            # The folds of _spectral_trunk, in the weights' dtype.
            w_in = self.input_emb.dense_weight()
            t = transform.to(w_in.dtype)
            w_in = torch.einsum("ga,cgi->cai", t, w_in.view(c, n, -1)).reshape(c * n, -1)
            b_in = self.input_emb.dense_bias()
            input_emb = torch.nn.Linear(
                w_in.shape[1],
                w_in.shape[0],
                bias=b_in is not None,
                dtype=w_in.dtype,
                device=w_in.device,
            )
            input_emb.weight.copy_(w_in)
            if b_in is not None and input_emb.bias is not None:
                input_emb.bias.copy_((b_in.view(c, n) @ t).reshape(-1))
            w_out = self.head.dense_weight()
            b_out = self.head.dense_bias()
            head = torch.nn.Linear(
                c * n,
                w_out.shape[0],
                bias=b_out is not None,
                dtype=w_out.dtype,
                device=w_out.device,
            )
            head.weight.copy_((w_out.view(-1, c, n) @ t).reshape(w_out.shape[0], c * n))
            if b_out is not None and head.bias is not None:
                head.bias.copy_(b_out)
            cond_encoder: torch.nn.Module
            if isinstance(self.cond_encoder, eSpectralMLP):
                cond_encoder = torch.nn.Sequential(
                    ChangeOfBasis(self.cond_encoder.transform),
                    self.cond_encoder.export_spectral(),
                )
            else:
                cond_encoder = ThenChangeOfBasis(self.cond_encoder.export(), transform)
            plain = PlainCondTransformer(
                in_dim=self.in_dim,
                out_dim=self.out_dim,
                cond_dim=self.cond_dim,
                in_horizon=self.in_horizon,
                cond_horizon=self.cond_horizon,
                input_emb=input_emb.train(self.input_emb.training),
                pos_emb=None if self.pos_emb is None else self._spectral_invariant(self.pos_emb),
                step_emb=self._plain_step_embedding(),
                cond_emb=None if self.cond_emb is None else self.cond_emb.export(),
                cond_pos_emb=(
                    None if self.cond_pos_emb is None else self._expand_invariant(self.cond_pos_emb)
                ),
                p_drop_emb=self.drop.p,
                cond_encoder=cond_encoder,
                decoder=decoder.export_spectral(),
                ln_f=ln_f.export_spectral(),
                head=head.train(self.head.training),
                causal_attn=self.causal_attn,
                pos_encoding=self.pos_encoding,
                cond_attention=isinstance(self.cond_encoder, eTransformerEncoder),
            )
        return plain.train(self.training)

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward

    def get_optim_groups(self, weight_decay: float = 0.001) -> list[OptimGroup]:
        """Split the trainable parameters into a weight-decayed and a non-decayed group.

        Decayed: the free weights of every linear map (``eLinear.weight_params``, attention
        projections included, and the weights of the step MLP). Not decayed: invariant biases,
        norm scales and biases, positional embeddings, plain biases. Every trainable parameter lands
        in exactly one group.

        Args:
            weight_decay: Weight decay of the first group.

        Returns:
            ``[{"params": decayed, "weight_decay": weight_decay},
            {"params": others, "weight_decay": 0.0}]``.
        """
        return split_optim_groups(self, weight_decay, _is_decayed)

    def reset_parameters(self, scheme: InitScheme | None = None) -> None:
        """Re-initialize all parameters.

        Linear maps (equivariant and the step MLP) are redrawn with ``scheme`` and their biases
        zeroed, norms reset to the identity, positional embeddings redrawn (normal, std 0.02).

        Args:
            scheme: ``"xavier_uniform"``, ``"xavier_normal"``, ``"kaiming_uniform"`` or
                ``"kaiming_normal"``; ``None`` (the default) for the model's ``init_scheme``,
                the one it was built with.

        Raises:
            ValueError: If ``scheme`` is unknown.
        """
        owner = f"{type(self).__name__}.reset_parameters"
        scheme = check_scheme(owner, "scheme", self.init_scheme if scheme is None else scheme)
        for module in self.children():
            if isinstance(module, eModule):
                module.reset_parameters(scheme)
        for layer in self.step_emb:
            if isinstance(layer, torch.nn.Linear):
                _init_linear(layer, scheme)
        with torch.no_grad():
            for table in (self.pos_emb, self.cond_pos_emb):
                if table is not None:
                    torch.nn.init.normal_(table, mean=0.0, std=_POS_STD)

    def check_equivariance(
        self,
        X: Tensor | None = None,
        opt_step: OptStep | None = None,
        Z: Tensor | None = None,
        *,
        batch_size: int = 2,
        elements: Sequence[GroupElement] | None = None,
        tol: float | None = None,
        generator: torch.Generator | None = None,
        X_padding_mask: Tensor | None = None,
        Z_padding_mask: Tensor | None = None,
    ) -> float:
        r"""Measure the model's equivariance error with :func:`ereps.check_equivariance`.

        .. math::
            e = \max_g \frac{\|f(\rho_X(g) X, \rho_Z(g) Z, k) - \rho_Y(g) f(X, Z, k)\|}
                            {\|\rho_Y(g) f(X, Z, k)\|}.

        The model is evaluated in eval mode (dropout off) without gradients and its training flag
        restored afterwards.

        Args:
            X: Inputs ``(B, T_x, in_rep.size)``; random normal of full horizon if ``None``.
            opt_step: Step(s); random integers in ``[0, 1000)`` if ``None``.
            Z: Conditioning ``(B, T_z, cond_rep.size)``; random normal if ``None`` (and ``None``
                for a model without conditioning).
            batch_size: ``B`` of the random inputs.
            elements: Group elements to test; all of them if ``None``.
            tol: If given, raise :class:`ereps.EquivarianceError` when the error exceeds it.
            generator: Random generator for the random inputs.
            X_padding_mask: Padding mask of ``X`` passed to :meth:`forward` (masks are invariant).
            Z_padding_mask: Padding mask of ``Z`` passed to :meth:`forward`.

        Returns:
            The largest relative error over the tested elements.

        Raises:
            ereps.EquivarianceError: If ``tol`` is given and exceeded.
            ValueError: If the inputs have wrong shapes.
        """
        X, step, Z = self._equivariance_inputs(
            X, opt_step, Z, batch_size=batch_size, horizon=self.in_horizon, generator=generator
        )
        if Z is None or self.cond_rep is None:
            return self._equivariance_error(
                lambda x: self(x, step), [self.in_rep], self.out_rep, [X], elements, tol
            )
        return self._equivariance_error(
            lambda x, z: self(
                x, step, z, X_padding_mask=X_padding_mask, Z_padding_mask=Z_padding_mask
            ),
            [self.in_rep, self.cond_rep],
            self.out_rep,
            [X, Z],
            elements,
            tol,
        )

    def extra_repr(self) -> str:
        """Arguments shown by ``repr``."""
        return (
            f"in_rep={self.in_rep.name}, "
            f"cond_rep={None if self.cond_rep is None else self.cond_rep.name}, "
            f"out_rep={self.out_rep.name}, group={self.in_rep.group.name}, "
            f"copies={self.num_copies}, in_horizon={self.in_horizon}, "
            f"cond_horizon={self.cond_horizon}, causal_attn={self.causal_attn}, "
            f"norm_module={self.norm_module!r}, pos_encoding={self.pos_encoding!r}"
        )


# The parts of the trunk that with_execution replaces (their parameters change form).
_CONVERTED = ("decoder", "cond_encoder", "ln_f")


def _frozen_parts(model: torch.nn.Module) -> list[str]:
    """The converted parts whose parameters are all frozen (``requires_grad=False``).

    A part's parameters change form in a conversion, so a frozen part stays frozen as a whole;
    a part frozen only in places has no counterpart in the other parametrization and is refused.

    Raises:
        ValueError: If a part has frozen and trainable parameters.
    """
    frozen: list[str] = []
    for name in _CONVERTED:
        flags = {p.requires_grad for p in getattr(model, name).parameters()}
        if flags == {False}:
            frozen.append(name)
        elif len(flags) > 1:
            raise ValueError(
                f"{type(model).__name__}.with_execution converts {name!r} into another "
                f"parametrization, where a partly frozen {name!r} (some parameters with "
                "requires_grad=False) has no counterpart. Unfreeze it before converting and "
                "freeze the converted model's parts as needed."
            )
    return frozen


def _saved_execution(state_dict: Mapping[str, Any]) -> Execution | None:
    """The execution a state dict of this model was saved from, by its trunk's parameter names.

    Spectral linear maps hold ``weight_<k>`` blocks and ``bias_coeffs``; regular ones hold
    ``weight_params`` and ``invariant_bias.coeffs``. ``None`` when the trunk holds neither (a
    partial state dict).
    """
    spectral = regular = False
    for key in state_dict:
        if not key.startswith("decoder."):  # always converted (a cond encoder stack is not)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight_params":
            regular = True
        elif leaf == "bias_coeffs" or (leaf.startswith("weight_") and leaf[7:].isdigit()):
            spectral = True
    if spectral == regular:
        return None
    return "spectral" if spectral else "regular"
