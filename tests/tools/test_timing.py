"""The benchmarks' timing helper: what each contender's timed call follows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from _timing import interleaved_timings

CPU = torch.device("cpu")


def _recorder(log: list[str], name: str) -> Callable[[], None]:
    def call() -> None:
        log.append(name)

    return call


@pytest.mark.parametrize("warm_calls", [0, 1, 3])
def test_calls_and_rounds(warm_calls: int) -> None:
    log: list[str] = []
    contenders = {name: _recorder(log, name) for name in ("a", "b", "c")}
    timings = interleaved_timings(
        contenders,
        device=CPU,
        warmup=2,
        repeats=4,
        warm_calls=warm_calls,
    )
    assert {name: t.runs for name, t in timings.items()} == {"a": 4, "b": 4, "c": 4}
    for name in "abc":
        assert log.count(name) == 2 + 4 * (1 + warm_calls)
    timed = log[2 * 3 :]
    # Every timed call is preceded by warm_calls calls of the same contender; the order of the
    # rounds alternates.
    block = 1 + warm_calls
    firsts = [timed[i] for i in range(0, len(timed), block)]
    assert firsts == list("abc") + list("cba") + list("abc") + list("cba")
    for i in range(0, len(timed), block):
        assert len(set(timed[i : i + block])) == 1


def test_negative_warm_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="warm_calls >= 0; got -1"):
        interleaved_timings({"a": lambda: None}, device=CPU, warmup=0, repeats=1, warm_calls=-1)
