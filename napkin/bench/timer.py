"""The timing harness: warm up for a while, then time many calls one by one.

On a GPU each call sits between two CUDA events, so the times are the device's own (launch gaps
and host work excluded, the optional L2 flush outside the pair). On the CPU each call sits between
two ``time.perf_counter`` readings (torch's CPU ops return when done; ``synchronize`` is a no-op).
Any callable can be timed: a GEMM here, a whole training step for ``napkin validate``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from napkin.bench.models import TimingStats
from napkin.bench.runtime import synchronizer
from napkin.errors import InputError

DEFAULT_WARMUP_S = 0.25  # per shape: long enough for cuBLAS to pick its kernel (the device warm-up heats the GPU)
DEFAULT_TARGET_S = 1.0  # timed calls add up to about a second unless --iters says otherwise
MIN_ITERS = 10  # fewer timed calls make the median a coin toss
MAX_ITERS = 10_000  # a tiny kernel on a fast GPU would otherwise ask for millions of event pairs


def plan_iters(per_call_s: float, target_s: float = DEFAULT_TARGET_S, iters: int | None = None) -> int:
    """Timed calls: as given, else enough to fill ``target_s`` at the warm-up's per-call time."""
    if iters is not None:
        if iters < 1:
            raise InputError(f"--iters must be at least 1, got {iters}")
        return iters
    if per_call_s <= 0:
        return MAX_ITERS
    return int(min(MAX_ITERS, max(MIN_ITERS, math.ceil(target_s / per_call_s))))


def check_warmup(warmup_s: float, what: str = "the warm-up") -> None:
    """A warm-up is a finite time >= 0; the message gives it in ms, as --warmup-ms takes it."""
    if not (math.isfinite(warmup_s) and warmup_s >= 0):
        raise InputError(f"{what} must be at least 0 ms (a finite time), got {warmup_s * 1e3:g} ms")


def time_calls(torch: Any, device: Any, fn: Callable[[], Any], *, warmup_s: float = DEFAULT_WARMUP_S,
               iters: int | None = None, target_s: float = DEFAULT_TARGET_S,
               between: Callable[[], Any] | None = None, sampler: Any = None) -> tuple[TimingStats, list[float]]:
    """Per-call seconds of ``fn`` on ``device``; ``between`` runs before each call, outside the timing.

    ``sampler`` (napkin.bench.runtime.ClockSampler, GPU only) reads clocks and power in a thread while the timed
    calls run; its summary is ``stats.clocks``."""
    check_warmup(warmup_s)
    if not (math.isfinite(target_s) and target_s > 0):
        raise InputError(f"the timing target must be a finite time > 0, got {target_s:g} s")
    sync = synchronizer(torch, device)
    cuda = device.type == "cuda"
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        # Warm-up by time (at least one call): the first call pays for kernel selection and lazy init.
        sync()
        warmup_iters, start, last = 0, time.perf_counter(), 0.0
        while True:
            if between is not None:
                between()
            t0 = time.perf_counter()
            fn()
            sync()
            last = time.perf_counter() - t0
            warmup_iters += 1
            if time.perf_counter() - start >= warmup_s:
                break
        warmup_elapsed = time.perf_counter() - start
        n = plan_iters(last, target_s, iters)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # as timeit does: a collection inside a timed call is not the kernel's time
        clocks = None
        try:
            if cuda:
                times, clocks = _time_cuda(torch, fn, n, between, sync, sampler)
            else:
                times = _time_host(fn, n, between, sync)
        finally:
            if gc_was_enabled:
                gc.enable()
    stats = TimingStats(timer="cuda-events" if cuda else "perf_counter", iters=n, min_s=min(times),
                        median_s=statistics.median(times), max_s=max(times), mean_s=statistics.fmean(times),
                        warmup_s=warmup_elapsed, warmup_iters=warmup_iters, clocks=clocks)
    return stats, times


def _time_cuda(torch: Any, fn: Callable[[], Any], n: int, between: Callable[[], Any] | None,
               sync: Callable[[], Any], sampler: Any = None) -> tuple[list[float], Any]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    sync()
    if sampler is not None:
        sampler.start()  # reads while the GPU runs the calls: the host enqueues them, then waits in sync()
    try:
        for i in range(n):
            if between is not None:
                between()
            starts[i].record()
            fn()
            ends[i].record()
        if sampler is not None:
            sampler.sample_now()  # the queue is full: the GPU is busy whatever the sampling period
        sync()
    finally:
        clocks = sampler.stop() if sampler is not None else None
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)], clocks  # elapsed_time is in ms


def _time_host(fn: Callable[[], Any], n: int, between: Callable[[], Any] | None,
               sync: Callable[[], Any]) -> list[float]:
    times = []
    clock = time.perf_counter
    for _ in range(n):
        if between is not None:
            between()
        sync()
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return times

