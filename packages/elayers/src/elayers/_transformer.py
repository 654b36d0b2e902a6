"""Equivariant transformer encoder and decoder layers, and their stacks."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, get_args

import torch
from torch import Tensor, nn

from elayers import _plain
from elayers._activation import ACTIVATIONS, Activation, apply_activation, resolve_activation
from elayers._attention import check_heads, check_regular_copies, eMultiheadAttention
from elayers._checks import (
    check_bool,
    check_int,
    check_mask,
    check_positive_real,
    check_probability,
)
from elayers._linear import eLinear
from elayers._mlp import regular_copies
from elayers._module import eModule, frozen_twin, transform_active
from elayers._norm import SAFE_MAX_ABS, eLayerNorm, eRMSNorm, max_abs
from elayers._plain_transformer import (
    PositionalTransformerDecoder,
    PositionalTransformerDecoderLayer,
    PositionalTransformerEncoder,
    PositionalTransformerEncoderLayer,
    attention_sublayer,
    run_stack,
)
from elayers._positional import AttentionPosEncoding
from ereps import InitScheme, Representation, check_init_scheme

__all__ = [
    "NORM_MODULES",
    "NormModule",
    "eTransformerDecoder",
    "eTransformerDecoderLayer",
    "eTransformerEncoder",
    "eTransformerEncoderLayer",
    "make_norm",
]

NormModule = Literal["rmsnorm", "layernorm"]
NORM_MODULES: tuple[str, ...] = get_args(NormModule)


def make_norm(
    norm_module: str, rep: Representation, eps: float, bias: bool = True
) -> eRMSNorm | eLayerNorm:
    """Build the equivariant norm named by ``norm_module`` (``rmsnorm`` or ``layernorm``)."""
    if norm_module == "rmsnorm":
        return eRMSNorm(rep, eps=eps)
    if norm_module == "layernorm":
        return eLayerNorm(rep, eps=eps, bias=bias)
    raise ValueError(f"Unknown norm_module {norm_module!r}; expected one of {list(NORM_MODULES)}.")


def _residual(x: Tensor, update: Tensor) -> Tensor:
    """``x + update``; in place on ``update`` when autograd does not record it.

    ``update`` is normally the fresh output of a block (a linear map, maybe through dropout), so
    reusing its memory saves an allocation per block in inference.
    """
    if (
        update.requires_grad
        or x.requires_grad
        or update.shape != x.shape
        or update.dtype != x.dtype
        or transform_active()
        # A replaced submodule (e.g. nn.Identity) may hand back x itself or a view of it.
        or update.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    ):
        return x + update
    return update.add_(x)


def _any_grad(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _hooks_attached(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook would see a submodule's call (torch's fast path test)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _torch_activation(activation: Callable[[Tensor], Tensor], name: str | None) -> Any:
    """The ``activation`` argument of torch's layers for an equivariant layer's activation."""
    if name in ("relu", "gelu"):
        return name  # torch's layers recognize these and may take their fused path
    if name is not None:
        return ACTIVATIONS[name]
    return copy.deepcopy(activation) if isinstance(activation, nn.Module) else activation


def _plain_activation(
    activation: Callable[[Tensor], Tensor], name: str | None
) -> Literal["relu", "gelu"] | Callable[[Tensor], Tensor]:
    """The ``activation`` argument of the positional plain layers (``_plain_transformer``)."""
    if name == "relu":
        return "relu"
    if name == "gelu":
        return "gelu"
    act: Callable[[Tensor], Tensor] = _torch_activation(activation, name)
    return act


def _stack_pos_encoding(stack: _eStack[Any, Any]) -> str | None:
    """The layers' ``pos_encoding`` (all layers of a stack are clones of one)."""
    first: Any = stack.layers[0]
    pos: str | None = first.pos_encoding
    return pos


def _check_common(
    owner: str,
    in_rep: Representation,
    nhead: object,
    dropout: object,
    layer_norm_eps: object,
    flags: dict[str, object],
    norm_module: object,
    init_scheme: object,
) -> None:
    """The checks shared by the encoder and decoder layers, each naming its argument."""
    copies = check_regular_copies(in_rep, owner)
    check_heads(owner, "nhead", nhead, copies)
    check_probability(owner, "dropout", dropout)
    check_positive_real(owner, "layer_norm_eps", layer_norm_eps)
    for name, flag in flags.items():
        check_bool(owner, name, flag)
    if not isinstance(norm_module, str) or norm_module not in NORM_MODULES:
        raise ValueError(
            f"{owner}: unknown norm_module {norm_module!r}; expected one of {list(NORM_MODULES)}."
        )
    check_init_scheme(init_scheme)


class _FeedForward(nn.Module):
    def __init__(
        self,
        rep: Representation,
        dim_feedforward: int,
        dropout: float,
        activation: Activation,
        bias: bool,
        init_scheme: InitScheme,
    ) -> None:
        super().__init__()
        hidden = regular_copies(rep, dim_feedforward, "dim_feedforward")
        self.linear1 = eLinear(rep, hidden, bias=bias, init_scheme=init_scheme)
        self.linear2 = eLinear(hidden, rep, bias=bias, init_scheme=init_scheme)
        self.dropout = nn.Dropout(dropout)
        self.activation = resolve_activation(activation)
        self.activation_name = activation if isinstance(activation, str) else None

    def forward(self, x: Tensor) -> Tensor:
        h = apply_activation(self.activation, self.activation_name, self.linear1(x))
        return self.linear2(self.dropout(h))

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class eTransformerEncoderLayer(eModule):
    r"""Equivariant version of :class:`torch.nn.TransformerEncoderLayer`.

    Self-attention (:class:`eMultiheadAttention`) and a feed-forward block (group convolutions
    around a pointwise activation on ``dim_feedforward / |G|`` regular copies), each with a residual
    connection and an equivariant norm, before (``norm_first``) or after the block. Every part
    commutes with the action, so ``layer(ρ(g) x) = ρ(g) layer(x)`` token-wise.

    Args:
        in_rep: ``c`` copies of the regular representation (the model width is ``in_rep.size``).
        nhead: Number of attention heads; must divide ``c``.
        dim_feedforward: Width of the feed-forward block, a multiple of ``|G|``.
        dropout: Dropout probability.
        activation: Pointwise activation (name or callable).
        layer_norm_eps: ``eps`` of the norms.
        batch_first: Whether inputs are ``(N, L, E)``.
        norm_first: Pre-norm (``True``) or post-norm (``False``) residual blocks.
        norm_module: ``"layernorm"`` (:class:`eLayerNorm`) or ``"rmsnorm"`` (:class:`eRMSNorm`).
        bias: Whether linear maps and norms have invariant biases.
        init_scheme: Initialization scheme of the linear maps.
        pos_encoding: Keyword-only. Positions inside every attention of the layer: ``None``,
            ``"rope"`` or ``"relative"`` (see :class:`eMultiheadAttention`).
        max_relative_distance: Keyword-only. Clipping distance of ``"relative"``.
        rope_base: Keyword-only. Frequency base of ``"rope"``.

    Raises:
        ValueError: On a non-regular ``in_rep``, invalid head count, ``dim_feedforward`` not a
            multiple of ``|G|``, unknown ``norm_module``/``init_scheme``/activation.
    """

    def __init__(
        self,
        in_rep: Representation,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        norm_module: NormModule = "layernorm",
        bias: bool = True,
        init_scheme: InitScheme = "xavier_normal",
        *,
        pos_encoding: AttentionPosEncoding | None = None,
        max_relative_distance: int = 32,
        rope_base: float = 10000.0,
    ) -> None:
        _check_common(
            type(self).__name__,
            in_rep,
            nhead,
            dropout,
            layer_norm_eps,
            {"batch_first": batch_first, "norm_first": norm_first, "bias": bias},
            norm_module,
            init_scheme,
        )
        super().__init__(in_rep, in_rep)
        self.pos_encoding = pos_encoding
        pos_kw = {
            "pos_encoding": pos_encoding,
            "max_relative_distance": max_relative_distance,
            "rope_base": rope_base,
        }
        self.self_attn = eMultiheadAttention(
            in_rep,
            nhead,
            dropout=dropout,
            bias=bias,
            batch_first=batch_first,
            init_scheme=init_scheme,
            **pos_kw,  # type: ignore[arg-type]
        )
        self.ff = _FeedForward(in_rep, dim_feedforward, dropout, activation, bias, init_scheme)
        self.norm1 = make_norm(norm_module, in_rep, layer_norm_eps, bias)
        self.norm2 = make_norm(norm_module, in_rep, layer_norm_eps, bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.batch_first = batch_first
        self.activation_name = activation if isinstance(activation, str) else None

    def _fused_inference_ok(self, src: Tensor, masked: bool) -> bool:
        """Whether torch's fused inference kernel computes exactly this layer for this call.

        It does when the norms are LayerNorms with per-copy affine maps (per-feature weights that
        are constant on each regular copy), the activation is ReLU or GELU, no gradient is needed,
        and nothing the kernel lacks is asked for. As torch's own layer, it declines when hooks are
        attached (the kernel would skip the submodules' calls), under autocast, while compiling,
        tracing, exporting or under ``torch.func`` transforms (``vmap``'s batched tensors have no
        storage for the kernel), for an empty batch, and for inputs so large that the norms need
        their overflow guard.
        """
        # Cheap call-dependent checks first: this runs on every forward.
        if (
            self.training
            or masked
            or not self.batch_first
            or src.dim() != 3
            or src.numel() == 0
            or torch.is_autocast_enabled()
            or not torch.backends.mha.get_fastpath_enabled()
            or src.device.type not in ("cpu", "cuda")
            or transform_active()
        ):
            return False
        norm1, norm2 = self.norm1, self.norm2
        attn, ff = self.self_attn, self.ff
        return (
            self.activation_name in ("relu", "gelu")
            and isinstance(norm1, eLayerNorm)
            and isinstance(norm2, eLayerNorm)
            and norm1.eps == norm2.eps
            and norm1.mean_centering
            and norm1.copy_scale is not None
            and norm1.copy_bias is not None
            and norm2.copy_scale is not None
            and norm2.copy_bias is not None
            and attn.in_proj.invariant_bias is not None
            and attn.out_proj.invariant_bias is not None
            and ff.linear1.invariant_bias is not None
            and ff.linear2.invariant_bias is not None
            and attn.num_heads % 2 == 0
            and not (torch.is_grad_enabled() and (src.requires_grad or _any_grad(self)))
            and not _hooks_attached(self)
            # The only data-dependent check (a device sync on accelerators): the kernel's float32
            # layer norm would overflow where the equivariant norms switch to float64 sums.
            and max_abs(src) <= SAFE_MAX_ABS
        )

    def _fused_weights(self, dtype: torch.dtype) -> tuple[Tensor | None, ...]:
        """The dense arguments of the fused kernel, in its order (synthesized on every call)."""
        attn, ff = self.self_attn, self.ff
        scale1, bias1 = self.norm1.copy_affine(dtype)
        scale2, bias2 = self.norm2.copy_affine(dtype)
        return (
            attn.in_proj.dense_weight(),
            attn.in_proj.dense_bias(),
            attn.out_proj.dense_weight(),
            attn.out_proj.dense_bias(),
            scale1,
            bias1,
            scale2,
            bias2,
            ff.linear1.dense_weight(),
            ff.linear1.dense_bias(),
            ff.linear2.dense_weight(),
            ff.linear2.dense_bias(),
        )

    def _fused_inference(self, src: Tensor) -> Tensor:
        attn = self.self_attn
        w_in, b_in, w_out, b_out, s1, b1, s2, b2, w1, bias1, w2, bias2 = self._fused_weights(
            src.dtype
        )
        fused = getattr(torch, "_transformer_encoder_layer_fwd")  # noqa: B009
        out: Tensor = fused(
            src,
            attn.embed_dim,
            attn.num_heads,
            w_in,
            b_in,
            w_out,
            b_out,
            self.activation_name == "gelu",
            self.norm_first,
            self.norm1.eps,
            s1,
            b1,
            s2,
            b2,
            w1,
            bias1,
            w2,
            bias2,
            None,
            None,
        )
        return out

    def export(self) -> _plain.TransformerEncoderLayer | PositionalTransformerEncoderLayer:
        """``torch.nn.TransformerEncoderLayer`` with the dense weights (see :meth:`eModule.export`).

        Its norms are ``torch.nn.LayerNorm``/``torch.nn.RMSNorm`` with the expanded per-copy
        affine maps; with layer norms, ReLU/GELU and an even head count it takes torch's fused
        inference path. It is the :class:`elayers._plain.TransformerEncoderLayer` subclass, which
        accepts ``is_causal=True`` without a mask and runs RMS norms on torch's composite path.
        """
        layer = _exported_layer(
            self, PositionalTransformerEncoderLayer, _plain.TransformerEncoderLayer
        )
        return layer.train(self.training)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        *,
        src_pos: Tensor | None = None,
    ) -> Tensor:
        """Run the layer.

        Args:
            src: ``(N, S, E)`` if ``batch_first`` else ``(S, N, E)``.
            src_mask: ``(S, S)`` or ``(N·nhead, S, S)`` attention mask (``True`` = forbidden).
            src_key_padding_mask: ``(N, S)``, ``True`` marks padding.
            is_causal: Use a causal mask when ``src_mask`` is None.
            src_pos: ``(S,)`` or ``(N, S)`` integer token positions for the ``pos_encoding``
                (default ``0..S-1``).

        Returns:
            Tensor of the shape of ``src``.
        """
        self._check_input(src, "src")
        owner = "eTransformerEncoderLayer"
        check_mask(owner, "src_mask", src_mask)
        check_mask(owner, "src_key_padding_mask", src_key_padding_mask)
        check_bool(owner, "is_causal", is_causal)
        twin = frozen_twin(self)
        if twin is not None:
            # Positions only reach a positional twin (torch's layer takes none).
            pos = {} if self.pos_encoding is None else {"src_pos": src_pos}
            out: Tensor = twin(src, src_mask, src_key_padding_mask, is_causal, **pos)
            return out
        masked = (
            src_mask is not None
            or src_key_padding_mask is not None
            or is_causal
            # The fused kernel has no positional step.
            or self.pos_encoding is not None
        )
        if self._fused_inference_ok(src, masked):
            # Same math as the composite path below, in torch's fused inference kernel.
            return self._fused_inference(src)
        mask, pad = src_mask, src_key_padding_mask

        def sa(x: Tensor) -> Tensor:
            return attention_sublayer(
                self.self_attn, self.dropout1, x, x, mask, pad, is_causal, src_pos, src_pos
            )

        x: Tensor = src
        if self.norm_first:
            x = _residual(x, sa(self.norm1(x)))
            x = _residual(x, self.dropout2(self.ff(self.norm2(x))))
        else:
            x = self.norm1(_residual(x, sa(x)))
            x = self.norm2(_residual(x, self.dropout2(self.ff(x))))
        return x

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class eTransformerDecoderLayer(eModule):
    r"""Equivariant version of :class:`torch.nn.TransformerDecoderLayer`.

    Self-attention over the target, cross-attention to the memory (both on copies of the regular
    representation of the same group) and a feed-forward block, with residual connections and
    equivariant norms: ``layer(ρ(g) tgt, ρ(g) mem) = ρ(g) layer(tgt, mem)``.

    Args:
        in_rep: ``c`` copies of the regular representation, for target and memory tokens.
        nhead: Number of attention heads; must divide ``c``.
        dim_feedforward: Width of the feed-forward block, a multiple of ``|G|``.
        dropout: Dropout probability.
        activation: Pointwise activation (name or callable).
        layer_norm_eps: ``eps`` of the norms.
        batch_first: Whether inputs are ``(N, L, E)``.
        norm_first: Pre-norm (``True``) or post-norm (``False``) residual blocks.
        norm_module: ``"layernorm"`` or ``"rmsnorm"``.
        bias: Whether linear maps and norms have invariant biases.
        init_scheme: Initialization scheme of the linear maps.
        pos_encoding: Keyword-only. Positions inside every attention of the layer: ``None``,
            ``"rope"`` or ``"relative"`` (see :class:`eMultiheadAttention`).
        max_relative_distance: Keyword-only. Clipping distance of ``"relative"``.
        rope_base: Keyword-only. Frequency base of ``"rope"``.

    Raises:
        ValueError: As :class:`eTransformerEncoderLayer`.
    """

    def __init__(
        self,
        in_rep: Representation,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        norm_module: NormModule = "layernorm",
        bias: bool = True,
        init_scheme: InitScheme = "xavier_normal",
        *,
        pos_encoding: AttentionPosEncoding | None = None,
        max_relative_distance: int = 32,
        rope_base: float = 10000.0,
    ) -> None:
        _check_common(
            type(self).__name__,
            in_rep,
            nhead,
            dropout,
            layer_norm_eps,
            {"batch_first": batch_first, "norm_first": norm_first, "bias": bias},
            norm_module,
            init_scheme,
        )
        super().__init__(in_rep, in_rep)
        self.pos_encoding = pos_encoding
        pos_kw = {
            "pos_encoding": pos_encoding,
            "max_relative_distance": max_relative_distance,
            "rope_base": rope_base,
        }
        kw = {"dropout": dropout, "bias": bias, "batch_first": batch_first}
        self.self_attn = eMultiheadAttention(in_rep, nhead, init_scheme=init_scheme, **kw, **pos_kw)  # type: ignore[arg-type]
        self.multihead_attn = eMultiheadAttention(
            in_rep,
            nhead,
            init_scheme=init_scheme,
            **kw,  # type: ignore[arg-type]
            **pos_kw,  # type: ignore[arg-type]
        )
        self.ff = _FeedForward(in_rep, dim_feedforward, dropout, activation, bias, init_scheme)
        self.norm1 = make_norm(norm_module, in_rep, layer_norm_eps, bias)
        self.norm2 = make_norm(norm_module, in_rep, layer_norm_eps, bias)
        self.norm3 = make_norm(norm_module, in_rep, layer_norm_eps, bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.batch_first = batch_first

    def export(self) -> _plain.TransformerDecoderLayer | PositionalTransformerDecoderLayer:
        """``torch.nn.TransformerDecoderLayer`` with the dense weights (see :meth:`eModule.export`).

        It is the :class:`elayers._plain.TransformerDecoderLayer` subclass, which accepts
        ``tgt_is_causal``/``memory_is_causal`` without masks, as this layer does.
        """
        # As the encoder layer; with a pos_encoding the torch-only positional layer.
        layer = _exported_layer(
            self, PositionalTransformerDecoderLayer, _plain.TransformerDecoderLayer
        )
        layer.multihead_attn = self.multihead_attn.export()
        layer.norm3 = self.norm3.export()  # type: ignore[assignment]  # any norm module
        layer.dropout3 = nn.Dropout(self.dropout3.p)
        return layer.train(self.training)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
        *,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
    ) -> Tensor:
        """Run the layer.

        Args:
            tgt: ``(N, T, E)`` if ``batch_first`` else ``(T, N, E)``.
            memory: ``(N, S, E)`` if ``batch_first`` else ``(S, N, E)``.
            tgt_mask: ``(T, T)`` or ``(N·nhead, T, T)`` self-attention mask (``True`` = forbidden).
            memory_mask: ``(T, S)`` or ``(N·nhead, T, S)`` cross-attention mask.
            tgt_key_padding_mask: ``(N, T)``.
            memory_key_padding_mask: ``(N, S)``.
            tgt_is_causal: Causal self-attention when ``tgt_mask`` is None.
            memory_is_causal: Causal cross-attention when ``memory_mask`` is None.
            tgt_pos: ``(T,)`` or ``(N, T)`` integer positions of the target tokens for the
                ``pos_encoding`` (default ``0..T-1``); queries and keys of both attentions share
                one time frame, so cross-attention sees ``memory_pos - tgt_pos``.
            memory_pos: ``(S,)`` or ``(N, S)`` integer positions of the memory tokens (default
                ``0..S-1``).

        Returns:
            Tensor of the shape of ``tgt``.
        """
        self._check_input(tgt, "tgt")
        self._check_input(memory, "memory")
        owner = "eTransformerDecoderLayer"
        for name, mask in (
            ("tgt_mask", tgt_mask),
            ("memory_mask", memory_mask),
            ("tgt_key_padding_mask", tgt_key_padding_mask),
            ("memory_key_padding_mask", memory_key_padding_mask),
        ):
            check_mask(owner, name, mask)
        check_bool(owner, "tgt_is_causal", tgt_is_causal)
        check_bool(owner, "memory_is_causal", memory_is_causal)
        twin = frozen_twin(self)
        if twin is not None:
            pos = (
                {} if self.pos_encoding is None else {"tgt_pos": tgt_pos, "memory_pos": memory_pos}
            )
            out: Tensor = twin(
                tgt,
                memory,
                tgt_mask,
                memory_mask,
                tgt_key_padding_mask,
                memory_key_padding_mask,
                tgt_is_causal,
                memory_is_causal,
                **pos,
            )
            return out

        def sa(x: Tensor) -> Tensor:
            return attention_sublayer(
                self.self_attn, self.dropout1, x, x,
                tgt_mask, tgt_key_padding_mask, tgt_is_causal, tgt_pos, tgt_pos,
            )  # fmt: skip

        def mha(x: Tensor) -> Tensor:
            return attention_sublayer(
                self.multihead_attn, self.dropout2, x, memory,
                memory_mask, memory_key_padding_mask, memory_is_causal, tgt_pos, memory_pos,
            )  # fmt: skip

        x: Tensor = tgt
        if self.norm_first:
            x = _residual(x, sa(self.norm1(x)))
            x = _residual(x, mha(self.norm2(x)))
            x = _residual(x, self.dropout3(self.ff(self.norm3(x))))
        else:
            x = self.norm1(_residual(x, sa(x)))
            x = self.norm2(_residual(x, mha(x)))
            x = self.norm3(_residual(x, self.dropout3(self.ff(x))))
        return x

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


_PositionalLayer = TypeVar("_PositionalLayer", bound=nn.Module)
_TorchLayer = TypeVar("_TorchLayer", bound=nn.Module)


def _exported_layer(
    source: eTransformerEncoderLayer | eTransformerDecoderLayer,
    positional: Callable[..., _PositionalLayer],
    plain: Callable[..., _TorchLayer],
) -> _PositionalLayer | _TorchLayer:
    """The plain layer of ``source`` with its self-attention, feed-forward, norms 1-2, dropouts 1-2.

    ``positional`` (a torch-only positional layer: torch's layers have no positional step) when
    ``source`` has a ``pos_encoding``, else ``plain`` (torch's layer). The decoder adds its
    cross-attention and third norm.
    """
    attn, ff = source.self_attn, source.ff
    ref = attn.in_proj.weight_params
    common: dict[str, Any] = {
        "dim_feedforward": ff.linear1.out_rep.size,
        "dropout": source.dropout1.p,
        "layer_norm_eps": source.norm1.eps,
        "batch_first": source.batch_first,
        "norm_first": source.norm_first,
        "bias": attn.in_proj.invariant_bias is not None,
    }
    layer: _PositionalLayer | _TorchLayer
    if source.pos_encoding is not None:
        activation = _plain_activation(ff.activation, ff.activation_name)
        layer = positional(
            attn.embed_dim,
            attn.num_heads,
            activation=activation,
            pos_encoding=source.pos_encoding,
            **common,
        ).to(device=ref.device, dtype=ref.dtype)
    else:
        layer = plain(
            attn.embed_dim,
            attn.num_heads,
            activation=_torch_activation(ff.activation, ff.activation_name),
            device=ref.device,
            dtype=ref.dtype,
            **common,
        )
    layer.self_attn = attn.export()
    layer.linear1 = ff.linear1.export()
    layer.dropout = nn.Dropout(ff.dropout.p)
    layer.linear2 = ff.linear2.export()
    layer.norm1 = source.norm1.export()
    layer.norm2 = source.norm2.export()
    layer.dropout1 = nn.Dropout(source.dropout1.p)
    layer.dropout2 = nn.Dropout(source.dropout2.p)
    return layer


def _export_child(layer: nn.Module, kind: type[eModule]) -> nn.Module:
    if not isinstance(layer, kind):  # an internal invariant (python -O keeps it)
        raise RuntimeError("internal error: the stacks hold the layers they were built with")
    return layer.export()


def _clones(layer: eModule, num_layers: int, owner: str) -> nn.ModuleList:
    check_int(owner, "num_layers", num_layers)
    layers = [copy.deepcopy(layer) for _ in range(num_layers)]
    # Independent draws per layer (torch's stacks repeat one draw; that wastes the depth at init).
    for one in layers:
        one.reset_parameters()
    return nn.ModuleList(layers)


def _check_final_norm(owner: str, norm: object, layer: eModule) -> None:
    if norm is None:
        return
    if not isinstance(norm, eModule):
        raise TypeError(
            f"{owner} expects norm to be None or an equivariant module (e.g. eLayerNorm) on the "
            f"layers' representation; got {type(norm).__name__}."
        )
    if norm.in_rep.size != layer.in_rep.size or norm.in_rep.group != layer.in_rep.group:
        raise ValueError(
            f"{owner} expects norm on the layers' representation {layer.in_rep.name!r} (size "
            f"{layer.in_rep.size}); got a norm on {norm.in_rep.name!r} (size {norm.in_rep.size})."
        )


_Layer = TypeVar("_Layer", bound=eModule)
_PlainStack = TypeVar(
    "_PlainStack",
    bound=nn.TransformerEncoder
    | nn.TransformerDecoder
    | PositionalTransformerEncoder
    | PositionalTransformerDecoder,
)


class _eStack(eModule, Generic[_Layer, _PlainStack]):
    """A stack of ``num_layers`` independently initialized copies of one layer, and a final norm.

    The encoder and decoder stacks differ only in their ``forward`` signature (the layer's) and in
    the plain stack they export to (:meth:`_plain_stack`).
    """

    _layer_type: ClassVar[type[eModule]]
    _layer_arg: ClassVar[str]

    def __init__(self, layer: _Layer, num_layers: int, norm: eModule | None) -> None:
        owner = type(self).__name__
        if not isinstance(layer, self._layer_type):
            raise TypeError(
                f"{self._layer_arg} must be an {self._layer_type.__name__}; got "
                f"{type(layer).__name__}."
            )
        _check_final_norm(owner, norm, layer)
        super().__init__(layer.in_rep, layer.out_rep)
        self.layers = _clones(layer, num_layers, owner)
        self.norm = norm

    def _run(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The twin inside :func:`elayers.frozen`, else every layer and the final norm."""
        twin = frozen_twin(self)
        if twin is not None:
            if _stack_pos_encoding(self) is None:  # positions only reach a positional twin
                kwargs = {k: v for k, v in kwargs.items() if not k.endswith("_pos")}
            out: Tensor = twin(x, **self._twin_kwargs(kwargs))
            return out
        return run_stack(self.layers, self.norm, x, **kwargs)

    def _twin_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The layers' keyword arguments as the exported stack names them."""
        return kwargs

    def _plain_stack(self, first: nn.Module, norm: nn.Module | None) -> _PlainStack:
        raise NotImplementedError

    def export(self) -> _PlainStack:
        """The plain stack of the exported layers (see :meth:`eModule.export`).

        With a ``pos_encoding`` in the layers: the torch-only positional stack (it takes the
        positions as this stack does); else torch's stack.
        """
        layers = [_export_child(layer, self._layer_type) for layer in self.layers]
        norm = None if self.norm is None else self.norm.export()
        stack = self._plain_stack(layers[0], norm)
        stack.layers = nn.ModuleList(layers)
        stack.num_layers = len(layers)
        stack.train(self.training)
        return stack


class eTransformerEncoder(
    _eStack[eTransformerEncoderLayer, nn.TransformerEncoder | PositionalTransformerEncoder]
):
    """A stack of ``num_layers`` independently initialized :class:`eTransformerEncoderLayer`.

    Args:
        encoder_layer: The layer to replicate.
        num_layers: Depth of the stack.
        norm: Optional final equivariant norm on the same representation.
    """

    _layer_type = eTransformerEncoderLayer
    _layer_arg = "encoder_layer"

    def __init__(
        self, encoder_layer: eTransformerEncoderLayer, num_layers: int, norm: eModule | None = None
    ) -> None:
        super().__init__(encoder_layer, num_layers, norm)

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        *,
        src_pos: Tensor | None = None,
    ) -> Tensor:
        """Run every layer, then the final norm. Shapes as :class:`eTransformerEncoderLayer`."""
        return self._run(
            src,
            src_mask=mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=is_causal,
            src_pos=src_pos,
        )

    def _twin_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # torch's TransformerEncoder calls the layer's src_mask "mask".
        return {("mask" if k == "src_mask" else k): v for k, v in kwargs.items()}

    def _plain_stack(
        self, first: nn.Module, norm: nn.Module | None
    ) -> nn.TransformerEncoder | PositionalTransformerEncoder:
        if isinstance(first, PositionalTransformerEncoderLayer):
            return PositionalTransformerEncoder(first, 1, norm=norm)
        return nn.TransformerEncoder(first, 1, norm=norm, enable_nested_tensor=False)  # type: ignore[arg-type]

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward


class eTransformerDecoder(
    _eStack[eTransformerDecoderLayer, nn.TransformerDecoder | PositionalTransformerDecoder]
):
    """A stack of ``num_layers`` independently initialized :class:`eTransformerDecoderLayer`.

    Args:
        decoder_layer: The layer to replicate.
        num_layers: Depth of the stack.
        norm: Optional final equivariant norm on the same representation.
    """

    _layer_type = eTransformerDecoderLayer
    _layer_arg = "decoder_layer"

    def __init__(
        self, decoder_layer: eTransformerDecoderLayer, num_layers: int, norm: eModule | None = None
    ) -> None:
        super().__init__(decoder_layer, num_layers, norm)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
        *,
        tgt_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
    ) -> Tensor:
        """Run every layer, then the final norm. Shapes as :class:`eTransformerDecoderLayer`."""
        return self._run(
            tgt,
            memory=memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
            tgt_pos=tgt_pos,
            memory_pos=memory_pos,
        )

    def _plain_stack(
        self, first: nn.Module, norm: nn.Module | None
    ) -> nn.TransformerDecoder | PositionalTransformerDecoder:
        if isinstance(first, PositionalTransformerDecoderLayer):
            return PositionalTransformerDecoder(first, 1, norm=norm)
        return nn.TransformerDecoder(first, 1, norm=norm)  # type: ignore[arg-type]

    if TYPE_CHECKING:  # what mypy sees of a call: forward's signature
        __call__ = forward
