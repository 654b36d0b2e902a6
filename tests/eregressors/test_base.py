"""Tests of GenCondRegressor and its input validation."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor

from eregressors import GenCondRegressor, OptStep


class _Linear(GenCondRegressor):
    """Smallest concrete regressor: a linear map of X plus the step, Z ignored."""

    def __init__(self) -> None:
        super().__init__(3, 2, 5, in_horizon=4, cond_horizon=2)
        self.lin = torch.nn.Linear(3, 2)
        self.norm = torch.nn.LayerNorm(2)

    def forward(self, X: Tensor, opt_step: OptStep, Z: Tensor) -> Tensor:
        X, step, Z = self._validate_inputs(X, opt_step, Z)
        out: Tensor = self.norm(self.lin(X)) + step[:, None, None]
        return out


def test_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        GenCondRegressor(1, 1, 1)  # type: ignore[abstract]


def test_docstring_states_contract() -> None:
    doc = GenCondRegressor.__doc__
    assert doc is not None
    for word in (
        "score",
        "velocity",
        "(B, T_x, in_dim)",
        "(B, T_z, cond_dim)",
        "(B, T_x, out_dim)",
    ):
        assert word in doc


def test_concrete_subclass_shapes() -> None:
    model = _Linear()
    assert (model.in_dim, model.out_dim, model.cond_dim) == (3, 2, 5)
    out = model(torch.randn(6, 4, 3), 1.0, torch.randn(6, 2, 5))
    assert out.shape == (6, 4, 2)


@pytest.mark.parametrize(
    "opt_step",
    [
        3,
        3.0,
        torch.tensor(3.0),
        torch.tensor(3),
        torch.full((6,), 3.0),
        torch.full((1,), 3, dtype=torch.long),
    ],
    ids=["int", "float", "0d", "0d-long", "B", "1-long"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_normalized(opt_step: OptStep, dtype: torch.dtype) -> None:
    model = _Linear().to(dtype)
    X, Z = torch.randn(6, 4, 3, dtype=dtype), torch.randn(6, 1, 5, dtype=dtype)
    _, step, _ = model._validate_inputs(X, opt_step, Z)
    assert step.shape == (6,)
    assert step.dtype == dtype
    torch.testing.assert_close(step, torch.full((6,), 3.0, dtype=dtype))


def test_per_sample_step_kept() -> None:
    model = _Linear()
    _, step, _ = model._validate_inputs(
        torch.randn(3, 4, 3), torch.tensor([1, 2, 3]), torch.randn(3, 2, 5)
    )
    torch.testing.assert_close(step, torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize(
    ("X_shape", "Z_shape", "step", "message"),
    [
        (
            (4, 3),
            (6, 2, 5),
            0,
            "expects X of rank 3 and shape (B, T_x, 3); got rank 2 and shape (4, 3)",
        ),
        (
            (6, 4, 3),
            (2, 5),
            0,
            "expects Z of rank 3 and shape (B, T_z, 5); got rank 2 and shape (2, 5)",
        ),
        ((6, 4, 4), (6, 2, 5), 0, "expects X of shape (B, T_x, 3) (feature size 3); got (6, 4, 4)"),
        ((6, 4, 3), (6, 2, 7), 0, "expects Z of shape (B, T_z, 5) (feature size 5); got (6, 2, 7)"),
        (
            (6, 5, 3),
            (6, 2, 5),
            0,
            "with T_x <= 4 (its horizon); got (6, 5, 3), a sequence of length 5",
        ),
        (
            (6, 4, 3),
            (6, 3, 5),
            0,
            "with T_z <= 2 (its horizon); got (6, 3, 5), a sequence of length 3",
        ),
        ((6, 0, 3), (6, 2, 5), 0, "expects X with at least one token; got shape (6, 0, 3)"),
        (
            (6, 4, 3),
            (5, 2, 5),
            0,
            "same batch size; got X of shape (6, 4, 3) and Z of shape (5, 2, 5)",
        ),
        (
            (6, 4, 3),
            (6, 2, 5),
            (5,),
            "tensor of shape (6,) (the batch size of X); got a tensor of shape (5,)",
        ),
        (
            (6, 4, 3),
            (6, 2, 5),
            (6, 1),
            "tensor of shape (6,) (the batch size of X); got a tensor of shape (6, 1)",
        ),
    ],
)
def test_bad_shapes(
    X_shape: tuple[int, ...], Z_shape: tuple[int, ...], step: int | tuple[int, ...], message: str
) -> None:
    model = _Linear()
    opt_step: OptStep = step if isinstance(step, int) else torch.zeros(step)
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.randn(X_shape), opt_step, torch.randn(Z_shape))


def test_bad_types() -> None:
    model = _Linear()
    X, Z = torch.randn(2, 4, 3), torch.randn(2, 2, 5)
    with pytest.raises(
        TypeError, match=re.escape("X to be a floating-point tensor; got dtype torch.int64")
    ):
        model(torch.zeros(2, 4, 3, dtype=torch.long), 0, Z)
    with pytest.raises(TypeError, match="Z to be a tensor of shape"):
        model(X, 0, [[0.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="opt_step as a number"):
        model(X, "1", Z)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="opt_step as a number"):
        model(X, True, Z)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_sizes(bad: int) -> None:
    class _Sized(_Linear):
        def __init__(self) -> None:
            GenCondRegressor.__init__(self, bad, 1, 1)

    with pytest.raises(ValueError, match=f"in_dim to be a positive int; got {bad}"):
        _Sized()


def test_optimizer() -> None:
    model = _Linear()
    decay, no_decay = model.get_optim_groups(0.1)
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.lin.weight)]
    opt = model.configure_optimizers(learning_rate=1e-2, weight_decay=0.1, betas=(0.8, 0.9))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == 1e-2
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
