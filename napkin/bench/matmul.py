"""`napkin bench-matmul`: time GEMMs on this device; achieved FLOP/s = 2MNK / t, MFU against the dense peak.

``GemmBench`` sets up one device and dtype once and times any number of shapes (``.time(shape)`` returns a
``GemmTiming``); ``bench_matmul`` and ``sweep_matmul`` are the two commands on top of it. torch is imported
when a ``GemmBench`` is made, never when this module is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from napkin.bench.device import (
    L2_FLUSH_MARGIN,
    BenchError,
    ShapeDoesNotFit,
    check_fits,
    choose_peak,
    first_line,
    fp8_support,
    is_out_of_memory,
    l2_flush_plan,
)
from napkin.bench.models import (
    BenchInputs,
    GemmShape,
    GemmTiming,
    MatmulBenchResult,
    MatmulSweepResult,
    PeakChoice,
    SkippedShape,
    SweepRow,
)
from napkin.bench.timer import DEFAULT_TARGET_S, DEFAULT_WARMUP_S, time_calls
from napkin.errors import InputError
from napkin.results import DEFINITION, LECTURE, Derivation, g
from napkin.specs.dtypes import DType, bytes_per_element, parse_dtype
from napkin.units import format_bytes
from napkin.validation import validated

BENCH_DTYPES = (DType.fp32, DType.tf32, DType.bf16, DType.fp16, DType.fp8)
DEFAULT_DTYPE = {"cuda": DType.bf16, "cpu": DType.fp32}  # bf16 is what GPUs train in; CPUs rarely have bf16 units
DEFAULT_SIZE = {"cuda": 8192, "cpu": 1024}  # 8192³ bf16 ≈ 1.4 ms on an H100; 1024³ fp32 ≈ 20 ms on 2 CPU cores
SWEEP_RANGE = {"cuda": (256, 8192), "cpu": (128, 1024)}
FP8_OUT = DType.bf16  # _scaled_mm writes bf16, as fp8 training recipes do
MFU_SOURCE = "definition of MFU (Chowdhery et al. 2022, PaLM, App. B): achieved FLOP/s / dense peak FLOP/s"
FLOPS_SOURCE = f"{LECTURE}: a (B,D)@(D,K) matmul does 2·B·D·K FLOPs (one multiply and one add per term)"


def bench_dtype(dtype: str | DType | None, device_type: str) -> DType:
    d = DEFAULT_DTYPE[device_type] if dtype is None else parse_dtype(dtype)
    if d not in BENCH_DTYPES:
        raise InputError(f"bench-matmul times {', '.join(x.value for x in BENCH_DTYPES)}; got {d.value}")
    if d is DType.tf32 and device_type != "cuda":
        raise InputError("tf32 is a tensor-core mode of NVIDIA GPUs; on the CPU use --dtype fp32")
    return d


def _torch_dtype(torch: Any, d: DType) -> Any:
    return {DType.fp32: torch.float32, DType.tf32: torch.float32, DType.bf16: torch.bfloat16,
            DType.fp16: torch.float16, DType.fp8: torch.float8_e4m3fn}[d]


@contextlib.contextmanager
def matmul_precision(torch: Any, d: DType) -> Iterator[None]:
    """tf32 on for --dtype tf32, off for fp32 (true fp32), for the run only; the user's setting comes back after.

    torch >= 2.9 keeps two settings, the legacy ``allow_tf32`` flag and ``fp32_precision``; setting the flag sets
    both, setting the precision only the latter, and reading the flag raises when they disagree. Both are put
    back as they were: the flag first (through the legacy setter), then the precision.
    """
    if d not in (DType.fp32, DType.tf32):  # only fp32 matmuls read the switch
        yield
        return
    m = torch.backends.cuda.matmul
    old_precision = getattr(m, "fp32_precision", None)
    try:
        old_flag = bool(m.allow_tf32)
    except RuntimeError:  # the two settings disagree: the flag is the opposite of what the precision says
        old_flag = old_precision != "tf32"
    m.allow_tf32 = d is DType.tf32
    try:
        yield
    finally:
        m.allow_tf32 = old_flag
        if old_precision is not None:
            m.fp32_precision = old_precision


class GemmBench:
    """One device and one dtype, set up once; ``time(shape)`` times one GEMM and returns a ``GemmTiming``.

    Reused by the model-shape and validation commands: they time their own shapes with the same method.
    """

    def __init__(self, dtype: str | DType | None = None, device: str = "auto", *, warmup_s: float = DEFAULT_WARMUP_S,
                 iters: int | None = None, target_s: float = DEFAULT_TARGET_S) -> None:
        from napkin.bench import runtime

        self.torch = runtime.import_torch("napkin bench-matmul")
        self.device = runtime.torch_device(self.torch, device)
        self.dtype = bench_dtype(dtype, self.device.type)
        self.device_name = runtime.device_name(self.torch, self.device)
        self.l2_bytes = runtime.l2_cache_bytes(self.torch, self.device)
        self.warmup_s, self.iters, self.target_s = warmup_s, iters, target_s
        if self.dtype is DType.fp8:
            self._check_fp8()

    def _check_fp8(self) -> None:
        torch, dev = self.torch, self.device
        capability = rocm_arch = None
        if dev.type == "cuda":
            props = torch.cuda.get_device_properties(dev)
            capability = (props.major, props.minor)
            rocm_arch = getattr(props, "gcnArchName", None) if torch.version.hip else None
        ok, why = fp8_support(dev.type, has_scaled_mm=hasattr(torch, "_scaled_mm"),
                              has_fp8_dtype=hasattr(torch, "float8_e4m3fn"), capability=capability, rocm_arch=rocm_arch)
        if not ok:
            raise BenchError(f"{why} ({self.device_name})")
        try:  # the capability says yes; make sure this torch build's kernel agrees
            self._gemm(GemmShape(m=16, n=16, k=16))[0]()
        except RuntimeError as e:
            raise BenchError(f"fp8 matmul is not supported on this device ({self.device_name}): "
                             f"torch._scaled_mm failed: {first_line(e)}") from None

    # -- one shape ---------------------------------------------------------------------------------------------

    def operand_bytes(self, shape: GemmShape) -> float:
        out = FP8_OUT if self.dtype is DType.fp8 else self.dtype
        return (shape.m * shape.k + shape.k * shape.n) * bytes_per_element(self.dtype) + \
            shape.m * shape.n * bytes_per_element(out)

    def _gemm(self, shape: GemmShape) -> tuple[Callable[[], Any], list[Any]]:
        """Allocate fresh random operands and a preallocated output; return the call and what it holds."""
        torch, dev, (M, N, K) = self.torch, self.device, (shape.m, shape.n, shape.k)
        if self.dtype is DType.fp8:
            # _scaled_mm wants A row-major and B column-major; random normal values fit e4m3's ±448 range.
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
            b = torch.randn(N, K, device=dev, dtype=torch.bfloat16).to(torch.float8_e4m3fn).t()
            one = torch.ones((), device=dev, dtype=torch.float32)
            c = torch.empty(M, N, device=dev, dtype=_torch_dtype(torch, FP8_OUT))
            return (lambda: torch._scaled_mm(a, b, one, one, out_dtype=c.dtype, out=c)), [a, b, c, one]
        t = _torch_dtype(torch, self.dtype)
        a = torch.randn(M, K, device=dev, dtype=t)
        b = torch.randn(K, N, device=dev, dtype=t)
        c = torch.empty(M, N, device=dev, dtype=t)
        return (lambda: torch.mm(a, b, out=c)), [a, b, c]

    def time(self, shape: GemmShape | tuple[int, int, int]) -> GemmTiming:
        """Time one GEMM shape. Raises ShapeDoesNotFit (memory) or BenchError (torch refused it)."""
        from napkin.bench import runtime

        if not isinstance(shape, GemmShape):
            shape = validated(GemmShape, m=shape[0], n=shape[1], k=shape[2])
        torch, dev = self.torch, self.device
        operand_bytes = self.operand_bytes(shape)
        flush, flush_bytes = l2_flush_plan(dev.type, operand_bytes, self.l2_bytes)
        staging = max(shape.m, shape.n) * shape.k * 2 if self.dtype is DType.fp8 else 0  # bf16 before the cast
        check_fits(operand_bytes + flush_bytes + staging, runtime.free_memory_bytes(torch, dev),
                   f"{shape} in {self.dtype.value}")
        held: list[Any] = []
        fn: Callable[[], Any] | None = None
        between: Callable[[], Any] | None = None
        try:
            fn, held = self._gemm(shape)
            if flush:
                held.append(torch.empty(flush_bytes // 4, dtype=torch.int32, device=dev))
                between = held[-1].zero_  # overwriting 2 x L2 evicts A, B and C
            with matmul_precision(torch, self.dtype):
                stats, _ = time_calls(torch, dev, fn, warmup_s=self.warmup_s, iters=self.iters,
                                      target_s=self.target_s, between=between)
        except Exception as e:
            if is_out_of_memory(e):
                raise ShapeDoesNotFit(f"{shape} in {self.dtype.value}: out of memory ({first_line(e)})") from None
            if isinstance(e, RuntimeError):
                raise BenchError(f"torch could not run {shape} in {self.dtype.value} on {dev}: {first_line(e)}") \
                    from None
            raise
        finally:
            fn, held, between = None, [], None  # drop the operands (closures hold them too), then empty the cache
            runtime.empty_cache(torch, dev)
        return GemmTiming(shape=shape, dtype=self.dtype, device=str(dev), flops=shape.flops,
                          operand_bytes=operand_bytes, l2_flush=flush, stats=stats,
                          flops_per_s=shape.flops / stats.median_s, best_flops_per_s=shape.flops / stats.min_s)

    # -- what the report says about the method -------------------------------------------------------------------

    def method(self, timing: GemmTiming | None = None) -> list[str]:
        d, cuda = self.dtype.value, self.device.type == "cuda"
        if self.dtype is DType.fp8:
            lines = ["C = torch._scaled_mm(A, B, scale_a=1, scale_b=1, out_dtype=bf16, out=C): A (M×K) and "
                     "B (K×N, column-major) in float8_e4m3fn from torch.randn, C bf16, preallocated"]
        else:
            lines = [f"torch.mm(A, B, out=C): A (M×K) and B (K×N) fresh torch.randn in {d} (normal values, never "
                     f"zeros), C preallocated"]
        if cuda and self.dtype is DType.tf32:
            lines.append("TF32 tensor cores: torch.backends.cuda.matmul.allow_tf32 = True for the run, restored after")
        elif cuda and self.dtype is DType.fp32:
            lines.append("true FP32: torch.backends.cuda.matmul.allow_tf32 = False for the run, restored after")
        if timing is None:
            lines.append(f"warm-up: at least {self.warmup_s * 1e3:.0f} ms of calls per shape before timing")
        else:
            s = timing.stats
            lines.append(f"warm-up: {s.warmup_s * 1e3:.0f} ms ({s.warmup_iters} calls) before timing")
        if cuda:
            lines.append("timer: a pair of CUDA events around each call (device time; launch gaps and the flush "
                         "excluded)")
        else:
            lines.append(f"timer: time.perf_counter around each call (CPU ops are synchronous); "
                         f"{self.torch.get_num_threads()} threads (torch.get_num_threads())")
        lines.append(self._flush_line(timing))
        n = f"{timing.stats.iters} timed calls" if timing else \
            (f"{self.iters} timed calls per shape" if self.iters else "timed calls filling ~1 s per shape")
        lines.append(f"{n}; min / median / max kept; TFLOP/s and MFU from the median")
        return lines

    def _flush_line(self, timing: GemmTiming | None) -> str:
        if self.device.type != "cuda":
            return "no cache flush on the CPU (the same as a bare torch.mm loop)"
        if not self.l2_bytes:
            return "no L2 flush: this torch does not report the L2 size"
        l2 = format_bytes(self.l2_bytes or 0, binary=False)
        if timing is None:
            return (f"L2 flush before each call where A+B+C ≤ {L2_FLUSH_MARGIN:g} × L2 ({l2}): a buffer of 2 × L2 "
                    f"overwritten")
        ops = format_bytes(timing.operand_bytes, binary=False)
        if timing.l2_flush:
            return f"L2 flush: a 2 × L2 buffer overwritten before each call (A+B+C = {ops}, L2 = {l2})"
        return f"no L2 flush: A+B+C = {ops} > {L2_FLUSH_MARGIN:g} × L2 ({l2}), so they stream from memory anyway"

    def environment(self, hardware: str | None, shapes: list[GemmShape], read_clocks: bool = True):
        from napkin.bench import runtime

        clocks = runtime.read_clocks(self.torch, self.device) if read_clocks else None
        return runtime.environment(self.torch, self.device, hardware=hardware, dtype=self.dtype,
                                   shapes=[str(s) for s in shapes], clocks=clocks)


def time_gemm(shape: GemmShape | tuple[int, int, int], *, dtype: str | DType | None = None, device: str = "auto",
              warmup_s: float = DEFAULT_WARMUP_S, iters: int | None = None,
              target_s: float = DEFAULT_TARGET_S) -> GemmTiming:
    """Time one GEMM shape with napkin's method (a one-off ``GemmBench``)."""
    return GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s).time(shape)


def matmul_steps(d: Derivation, timing: GemmTiming, peak: PeakChoice) -> float | None:
    """The derivation of one measurement: FLOPs = 2MNK, FLOP/s = FLOPs / t_median, MFU = FLOP/s / dense peak."""
    s, st = timing.shape, timing.stats
    flops = d.add(f"FLOPs of {s}", "2·M·N·K", f"2 × {s.m} × {s.n} × {s.k}", s.flops, "FLOP", FLOPS_SOURCE)
    t = d.given("median time per call", "t", st.median_s, "s",
                f"measured: median of {st.iters} calls, {st.timer} (min {st.min_s:.4g} s, max {st.max_s:.4g} s)")
    rate = d.add("achieved FLOP/s", "2·M·N·K / t", f"{g(flops)} / {g(t)}", flops / t, "FLOP/s", DEFINITION)
    if peak.peak_flops_per_s is None:
        return None
    P = d.given(f"dense {timing.dtype.value} peak", "P", peak.peak_flops_per_s, "FLOP/s", peak.source or "")
    return d.add("MFU", "achieved / P", f"{g(rate)} / {g(P)}", rate / P, "fraction", MFU_SOURCE)


def bench_matmul(m: int | None = None, n: int | None = None, k: int | None = None, *, size: int | None = None,
                 dtype: str | DType | None = None, device: str = "auto", warmup_s: float = DEFAULT_WARMUP_S,
                 iters: int | None = None, target_s: float = DEFAULT_TARGET_S, gpu: str | None = None,
                 peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None) -> MatmulBenchResult:
    """Time one GEMM (M×K)@(K×N) (square ``size`` by default) and report FLOP/s and MFU with the method."""
    bench = GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s)
    size = size or DEFAULT_SIZE[bench.device.type]
    shape = validated(GemmShape, **{name: size if v is None else v for name, v in (("m", m), ("n", n), ("k", k))})
    choice = choose_peak(bench.dtype, bench.device.type, bench.device_name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    timing = bench.time(shape)
    d = Derivation()
    mfu = matmul_steps(d, timing, choice)
    notes = [choice.note] if choice.note else []
    asked = BenchInputs(dtype=None if dtype is None else str(getattr(dtype, "value", dtype)), device=device,
                        shapes=[[shape.m, shape.n, shape.k]], warmup_s=warmup_s, iters=iters, target_s=target_s,
                        gpu=gpu, peak_flops_per_s=peak)
    return MatmulBenchResult(inputs=asked, environment=bench.environment(choice.hardware, [shape]),
                             method=bench.method(timing),
                             timing=timing, peak=choice, mfu=mfu, steps=d.steps, notes=notes)


def sweep_sizes(lo: int, hi: int) -> list[int]:
    """Powers of two in [lo, hi] with their neighbours p−1 and p+1, and 3p/2 — where GEMMs are fast and slow."""
    if lo < 2 or hi < lo:
        raise InputError(f"sweep range must satisfy 2 <= min <= max, got {lo}..{hi}")
    sizes: set[int] = set()
    p = 1 << (lo - 1).bit_length()  # the first power of two >= lo
    while p <= hi:
        sizes.update(x for x in (p - 1, p, p + 1, 3 * p // 2) if lo <= x <= hi)
        p *= 2
    return sorted(sizes)


Progress = Callable[[int, int, GemmShape | None], Any]


def sweep_matmul(sizes: Sequence[int] | None = None, *, dtype: str | DType | None = None, device: str = "auto",
                 warmup_s: float = DEFAULT_WARMUP_S, iters: int | None = None, target_s: float = DEFAULT_TARGET_S,
                 gpu: str | None = None, peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None,
                 progress: Progress | None = None) -> MatmulSweepResult:
    """Time square GEMMs over ``sizes`` (default: ``sweep_sizes`` for the device). A size that does not fit or
    that torch refuses is skipped with a note; Ctrl-C stops the sweep and returns the shapes done so far."""
    bench = GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s)
    shapes = [validated(GemmShape, m=s, n=s, k=s) for s in (sizes or sweep_sizes(*SWEEP_RANGE[bench.device.type]))]
    choice = choose_peak(bench.dtype, bench.device.type, bench.device_name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    P = choice.peak_flops_per_s
    rows: list[SweepRow] = []
    skipped: list[SkippedShape] = []
    interrupted = False
    try:
        for i, shape in enumerate(shapes):
            if progress is not None:
                progress(i, len(shapes), shape)
            try:
                t = bench.time(shape)
            except (ShapeDoesNotFit, BenchError) as e:
                skipped.append(SkippedShape(shape=shape, reason=str(e)))
                continue
            rows.append(SweepRow(timing=t, mfu=t.flops_per_s / P if P else None))
        if progress is not None:
            progress(len(shapes), len(shapes), None)
    except KeyboardInterrupt:
        interrupted = True
    d = Derivation()
    best = spread = None
    if rows:
        best = max(rows, key=lambda r: r.timing.flops_per_s)
        worst = min(rows, key=lambda r: r.timing.flops_per_s)
        matmul_steps(d, best.timing, choice)
        spread = d.add("spread over the shapes", "best FLOP/s / worst FLOP/s",
                       f"{g(best.timing.flops_per_s)} / {g(worst.timing.flops_per_s)} ({worst.timing.shape})",
                       best.timing.flops_per_s / worst.timing.flops_per_s, "ratio", DEFINITION)
    notes = [choice.note] if choice.note else []
    notes += [f"skipped: {s.reason}" for s in skipped]
    if interrupted:
        notes.append(f"interrupted (Ctrl-C) after {len(rows) + len(skipped)} of {len(shapes)} shapes: "
                     "best so far shown")
    asked = BenchInputs(dtype=None if dtype is None else str(getattr(dtype, "value", dtype)), device=device,
                        shapes=[[s.m, s.n, s.k] for s in shapes], warmup_s=warmup_s, iters=iters, target_s=target_s,
                        gpu=gpu, peak_flops_per_s=peak)
    return MatmulSweepResult(inputs=asked, environment=bench.environment(choice.hardware, shapes,
                                                                         read_clocks=not interrupted),
                             method=bench.method(), peak=choice, rows=rows, skipped=skipped, best=best, spread=spread,
                             interrupted=interrupted, steps=d.steps, notes=notes)
