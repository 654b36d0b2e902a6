"""Bad arguments and inputs of the regressors fail before any work, naming the argument."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import escnn.group as eg
import numpy as np
import pytest
import torch

from eregressors import (
    CondTransformerRegressor,
    GenCondRegressor,
    SinusoidalPosEmb,
    eCondTransformerRegressor,
)

ROOT = Path(__file__).resolve().parents[2]
REP = eg.cyclic_group(4).irrep(1)


def _equivariant(**kwargs: Any) -> eCondTransformerRegressor:
    reps = {"in_rep": REP, "cond_rep": REP, "out_rep": REP, **kwargs}
    args: dict[str, Any] = {
        "in_horizon": 4, "cond_horizon": 2, "num_layers": 1, "num_attention_heads": 1,
        "embedding_dim": 8,
    }  # fmt: skip
    args.update({k: v for k, v in reps.items() if k not in ("in_rep", "cond_rep", "out_rep")})
    return eCondTransformerRegressor(reps["in_rep"], reps["cond_rep"], reps["out_rep"], **args)


def _baseline(**kwargs: Any) -> CondTransformerRegressor:
    args = {
        "in_horizon": 4, "cond_horizon": 2, "num_layers": 1, "num_attention_heads": 1,
        "embedding_dim": 8, **kwargs,
    }  # fmt: skip
    return CondTransformerRegressor(2, 2, 2, **args)


MODELS: dict[str, Callable[..., GenCondRegressor]] = {
    "equivariant": _equivariant,
    "baseline": _baseline,
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_inputs_of_another_dtype_or_device_are_refused(kind: str) -> None:
    model = MODELS[kind]()
    X, Z = torch.randn(2, 4, 2), torch.randn(2, 2, 2)
    with pytest.raises(
        TypeError, match=r"expects X of the dtype of its parameters \(torch\.float32"
    ):
        model(X.double(), 1.0, Z.double())
    with pytest.raises(
        TypeError, match=r"X and Z of the same dtype; got X of dtype torch\.float32"
    ):
        model(X, 1.0, Z.double())
    with pytest.raises(ValueError, match=r"expects X on the device of its parameters \(cpu\)"):
        model(X.to("meta"), 1.0, Z.to("meta"))
    with pytest.raises(ValueError, match="X and Z on the same device"):
        model(X, 1.0, Z.to("meta"))
    model.double()
    assert model(X.double(), 1.0, Z.double()).dtype == torch.float64


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize(
    "step",
    [torch.tensor([True, False]), torch.tensor(1.0 + 2.0j), True, "10", [1.0, 2.0]],
    ids=["bool-tensor", "complex-tensor", "bool", "str", "list"],
)
def test_steps_that_are_not_real_numbers_are_refused(kind: str, step: object) -> None:
    model = MODELS[kind]()
    with pytest.raises(TypeError, match="opt_step"):
        model(torch.randn(2, 4, 2), step, torch.randn(2, 2, 2))  # type: ignore[arg-type]


def test_a_non_orthogonal_cond_rep_is_named() -> None:
    skewed = eg.change_basis(REP, np.array([[1.0, 0.5], [0.0, 1.0]]), name="skewed")
    with pytest.raises(ValueError, match=r"^cond_rep \('skewed'\) must have an orthogonal"):
        _equivariant(cond_rep=skewed)
    with pytest.raises(ValueError, match=r"^out_rep \('skewed'\)"):
        _equivariant(out_rep=skewed)


CONSTRUCTORS: list[tuple[str, str, dict[str, object], type[Exception], str]] = [
    ("p-drop-str", "equivariant", {"p_drop_emb": "0.1"}, TypeError, "p_drop_emb"),
    ("p-drop-bool", "equivariant", {"p_drop_attn": True}, TypeError, "p_drop_attn"),
    ("p-drop-one", "equivariant", {"p_drop_emb": 1.0}, ValueError, "p_drop_emb"),
    ("causal-str", "equivariant", {"causal_attn": "no"}, TypeError, "causal_attn"),
    ("causal-int", "equivariant", {"causal_attn": 1}, TypeError, "causal_attn"),
    ("cond-layers-bool", "equivariant", {"num_cond_layers": True}, TypeError, "num_cond_layers"),
    ("heads-bool", "equivariant", {"num_attention_heads": True}, TypeError, "num_attention_heads"),
    ("norm-list", "equivariant", {"norm_module": ["rmsnorm"]}, ValueError, "norm_module"),
    ("init-none", "equivariant", {"init_scheme": None}, ValueError, "init_scheme"),
    ("step-dim-float", "equivariant", {"step_emb_dim": 8.0}, TypeError, "step_emb_dim"),
    ("b-p-drop-str", "baseline", {"p_drop_emb": "0.1"}, TypeError, "p_drop_emb"),
    ("b-causal-str", "baseline", {"causal_attn": "no"}, TypeError, "causal_attn"),
    ("b-cond-layers-float", "baseline", {"num_cond_layers": 1.0}, TypeError, "num_cond_layers"),
    ("b-width-bool", "baseline", {"embedding_dim": True}, TypeError, "embedding_dim"),
]


@pytest.mark.parametrize(
    ("kind", "kwargs", "error", "argument"),
    [c[1:] for c in CONSTRUCTORS],
    ids=[c[0] for c in CONSTRUCTORS],
)
def test_constructor_arguments_of_the_wrong_kind_are_refused(
    kind: str, kwargs: dict[str, object], error: type[Exception], argument: str
) -> None:
    with pytest.raises(error) as info:
        MODELS[kind](**kwargs)
    assert argument in str(info.value)


def test_helpers_refuse_the_wrong_kind() -> None:
    with pytest.raises(TypeError, match="max_period"):
        SinusoidalPosEmb(8, max_period="1e4")  # type: ignore[arg-type]
    emb = SinusoidalPosEmb(8)
    with pytest.raises(TypeError, match="real"):
        emb(torch.tensor([True]))
    with pytest.raises(TypeError, match="tensor of steps"):
        emb([1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="weight_decay"):
        _baseline().get_optim_groups("0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="learning_rate"):
        _baseline().configure_optimizers(learning_rate="1e-4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="learning_rate"):
        _baseline().configure_optimizers(learning_rate=-1.0)
    with pytest.raises(ValueError, match="betas"):
        _baseline().configure_optimizers(betas=(0.9, 1.5))


@pytest.mark.slow
def test_validation_holds_under_python_optimize() -> None:
    # python -O strips assert statements: the checks must not rely on them. (Slow: a fresh
    # interpreter, and -O compiles its own bytecode of torch the first time.)
    script = textwrap.dedent(
        """
        import ereps  # first: where lie_learn is absent escnn needs ereps' stand-in
        import escnn.group as eg, torch
        from eregressors import eCondTransformerRegressor
        from elayers import eMultiheadAttention, eRMSNorm
        from ereps import direct_sum
        assert False, "asserts must be stripped"
        rep = eg.cyclic_group(4).irrep(1)
        def build(**kw):
            return eCondTransformerRegressor(rep, rep, rep, 4, 2, 1, 1, 8, **kw)
        def refused(error, fn):
            try:
                fn()
            except error:
                return
            raise SystemExit(f"not refused: {fn}")
        model = build()
        X, Z = torch.randn(2, 4, 2), torch.randn(2, 2, 2)
        refused(TypeError, lambda: model(X.double(), 1.0, Z.double()))
        refused(TypeError, lambda: model(X, 1.0, Z.double()))
        refused(ValueError, lambda: model(X.to("meta"), 1.0, Z.to("meta")))
        refused(TypeError, lambda: model(X, torch.tensor(True), Z))
        refused(TypeError, lambda: build(p_drop_emb="0.1"))
        refused(TypeError, lambda: build(causal_attn="no"))
        tokens = direct_sum([eg.cyclic_group(4).regular_representation] * 2)
        refused(TypeError, lambda: eMultiheadAttention(tokens, True))
        refused(TypeError, lambda: eRMSNorm(tokens)(torch.ones(2, 8, dtype=torch.int64)))
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
