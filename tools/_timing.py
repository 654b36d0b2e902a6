"""Timing and memory helpers of the benchmarks: interleaved medians, peak tensor memory of a call.

Absolute times on a shared machine are noise; ratios of contenders measured side by side are not. So
every contender runs in the same process, warm-up calls come first, and then the contenders
alternate call by call (the order of each round is reversed on the next one, so that a slow drift of
the machine hits all of them alike); the reported time is the median over the rounds, and a ratio
of two contenders the median over the rounds of their ratio within the round.

Contenders that hold their own weights leave the caches to whoever runs next: with one call each
per round, a contender's time depends on which one ran before it (the baseline, first and last of
consecutive rounds, follows itself half the time, the middle ones never). ``warm_calls`` runs
untimed calls of the same contender right before each timed one, as a denoising loop does
(10-100 calls of one model back to back), so that every contender is timed after itself.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from eregressors import GenCondRegressor

__all__ = [
    "Timing",
    "cpu_name",
    "interleaved_timings",
    "paired_ratio",
    "peak_step_memory",
    "ratio_text",
    "regressor_eval",
    "regressor_step",
    "resident_bytes",
    "synchronize",
    "trainable_count",
]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Summary of repeated timings of one contender, in milliseconds.

    Attributes:
        median_ms: Median over the measured rounds.
        q1_ms: First quartile.
        q3_ms: Third quartile.
        runs: Number of measured rounds.
        samples_ms: The per-round times, in round order.
    """

    median_ms: float
    q1_ms: float
    q3_ms: float
    runs: int
    samples_ms: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> Timing:
        """Summarize raw samples (milliseconds)."""
        if len(samples_ms) >= 2:
            q1, _, q3 = statistics.quantiles(samples_ms, n=4, method="inclusive")
        else:
            q1 = q3 = samples_ms[0]
        return cls(statistics.median(samples_ms), q1, q3, len(samples_ms), tuple(samples_ms))


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a``'s time divided by ``b``'s time in the same round.

    The two calls of one round ran next to each other, so a change of the machine's load between
    rounds cancels in their ratio; this is more robust than the ratio of the two medians.
    Falls back to the ratio of medians when the rounds do not pair up.
    """
    if a.samples_ms and len(a.samples_ms) == len(b.samples_ms):
        return statistics.median(x / y for x, y in zip(a.samples_ms, b.samples_ms, strict=True))
    return a.median_ms / b.median_ms


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_timings(
    contenders: Mapping[str, Callable[[], object]],
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
    warm_calls: int = 0,
) -> dict[str, Timing]:
    """Time each contender ``repeats`` times, alternating, after ``warmup`` calls of each.

    Args:
        contenders: Name -> a call to time (e.g. one training step).
        device: Device the calls run on (synchronized around each timed call).
        warmup: Untimed calls of each contender first (allocator, caches, lazy initialization,
            autotuning).
        repeats: Timed rounds; in each round every contender runs once, in an order reversed every
            other round.
        warm_calls: Untimed calls of a contender right before each of its timed calls (its
            steady state when it runs back to back, independent of which contender ran before).

    Returns:
        Name -> median and quartiles of the per-call wall time in milliseconds.
    """
    if repeats < 1:
        raise ValueError(f"interleaved_timings needs repeats >= 1; got {repeats}.")
    if warm_calls < 0:
        raise ValueError(f"interleaved_timings needs warm_calls >= 0; got {warm_calls}.")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            for _ in range(warm_calls):
                contenders[name]()
            synchronize(device)
            start = time.perf_counter()
            contenders[name]()
            synchronize(device)
            samples[name].append(1000.0 * (time.perf_counter() - start))
    return {name: Timing.from_samples(values) for name, values in samples.items()}


def resident_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes held by distinct tensors (storage sizes, each storage counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in seen or storage.nbytes() == 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def _cpu_peak_delta(call: Callable[[], object]) -> int:
    """Peak of the CPU tensor bytes ``call`` holds above what was live before (torch profiler).

    The profiler records the bytes every operator allocates (net of what it frees inside) and every
    free; summing them in time order gives the live bytes at operator granularity, whose maximum is
    the peak.
    """
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault(
        "KINETO_LOG_LEVEL", "5"
    )  # the profiler of a CUDA build logs to stderr on a GPU-less host
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += int(event.self_cpu_memory_usage)
        peak = max(peak, live)
    return peak


def peak_step_memory(call: Callable[[], object], resident: int, device: torch.device) -> int:
    """Peak tensor memory of one call in bytes: ``resident`` plus the peak the call adds on top.

    ``resident`` is what the contender holds between calls (parameters, gradients, optimizer state;
    see ``resident_bytes``). On CUDA the extra part is ``max_memory_allocated`` during the call
    minus the allocated bytes before it; on CPU it comes from the torch profiler's memory events
    (operator granularity). Both count tensor bytes only, not the allocator's cached blocks nor the
    process's resident set.

    Args:
        call: The call to measure (run once).
        resident: Bytes the contender holds before the call.
        device: Device of the call.

    Returns:
        Bytes.
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        synchronize(device)
        return resident + max(0, torch.cuda.max_memory_allocated(device) - before)
    return resident + max(0, _cpu_peak_delta(call))


def ratio_text(a: Timing, b: Timing) -> str:
    """:func:`paired_ratio` of ``a`` to ``b`` for a table cell, e.g. ``"1.85×"``."""
    return f"{paired_ratio(a, b):.2f}×"


def trainable_count(module: torch.nn.Module) -> int:
    """Trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def regressor_step(
    model: GenCondRegressor,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    k: torch.Tensor,
    z: torch.Tensor,
    target: torch.Tensor,
) -> Callable[[], None]:
    """One training step (``zero_grad`` + forward + MSE + backward + step) as a closure."""

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x, k, z), target)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    return step


def regressor_eval(
    model: torch.nn.Module, x: torch.Tensor, k: torch.Tensor, z: torch.Tensor
) -> Callable[[], None]:
    """One eval forward (``model.eval()``, no gradients) as a closure."""

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x, k, z)

    return forward


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
