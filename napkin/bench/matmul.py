"""`napkin bench-matmul`: time GEMMs on this device; achieved FLOP/s = 2MNK / t, MFU against the dense peak.

``GemmBench`` sets up one device and dtype once and times any number of shapes (``.time(shape)`` returns a
``GemmTiming``); ``bench_matmul`` and ``sweep_matmul`` are the two commands on top of it. torch is imported
when a ``GemmBench`` is made, never when this module is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from napkin.bench.device import (
    IDLE_RESET_S,
    MAX_SWEEP_SHAPES,
    MEMORY_HEADROOM,
    SUSTAINED_AFTER_S,
    BenchError,
    ShapeDoesNotFit,
    check_fits,
    choose_peak,
    first_line,
    fp8_dtype_name,
    fp8_run_shape,
    fp8_support,
    is_out_of_memory,
    l2_flush_plan,
    last_level_cache_bytes,
    plausible_mfu,
    regime,
    tf32_support,
    torch_dtype,
)
from napkin.bench.models import (
    LAYOUTS,
    BenchInputs,
    GemmShape,
    GemmTiming,
    MatmulBenchResult,
    MatmulSweepResult,
    PeakChoice,
    SkippedShape,
    SweepRow,
)
from napkin.bench.timer import DEFAULT_TARGET_S, DEFAULT_WARMUP_S, check_warmup, time_calls
from napkin.errors import InputError
from napkin.results import DEFINITION, LECTURE, MFU_SOURCE, Derivation, g
from napkin.specs.dtypes import DType, bytes_per_element, parse_dtype
from napkin.units import format_bytes
from napkin.validation import validated

BENCH_DTYPES = (DType.fp32, DType.tf32, DType.bf16, DType.fp16, DType.fp8)
DEFAULT_DTYPE = {"cuda": DType.bf16, "cpu": DType.fp32}  # bf16 is what GPUs train in; CPUs rarely have bf16 units
DEFAULT_SIZE = {"cuda": 8192, "cpu": 1024}  # 8192³ bf16 ≈ 1.4 ms on an H100; 1024³ fp32 ≈ 20 ms on 2 CPU cores
SWEEP_RANGE = {"cuda": (256, 8192), "cpu": (128, 1024)}
DEFAULT_DEVICE_WARMUP_S = {"cuda": 30.0, "cpu": 0.0}  # mamf-finder heats the GPU for 30 s first; a CPU has no such
# boost-then-throttle regime worth the wait
FP8_OUT = DType.bf16  # _scaled_mm writes bf16, as fp8 training recipes do
FLOPS_SOURCE = f"{LECTURE}: a (B,D)@(D,K) matmul does 2·B·D·K FLOPs (one multiply and one add per term)"


def bench_dtype(dtype: str | DType | None, device_type: str) -> DType:
    d = DEFAULT_DTYPE[device_type] if dtype is None else parse_dtype(dtype)
    if d not in BENCH_DTYPES:
        raise InputError(f"bench-matmul times {', '.join(x.value for x in BENCH_DTYPES)}; got {d.value}")
    if d is DType.tf32 and device_type != "cuda":
        raise InputError("tf32 is a tensor-core mode of NVIDIA GPUs; on the CPU use --dtype fp32")
    return d


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

    Reused by the model-shape and validation commands: they time their own shapes with the same method. On a GPU
    the first ``time`` runs the device warm-up (``device_warmup_s`` of large GEMMs, once), every call is preceded by
    a 256 MiB cache flush, and clocks and power are sampled while the timed calls run.
    """

    def __init__(self, dtype: str | DType | None = None, device: str = "auto", *, warmup_s: float = DEFAULT_WARMUP_S,
                 iters: int | None = None, target_s: float = DEFAULT_TARGET_S, fast_accum: bool = False,
                 device_warmup_s: float | None = None) -> None:
        from napkin.bench import runtime

        check_warmup(warmup_s)  # before torch is imported or anything measured
        if device_warmup_s is not None:
            check_warmup(device_warmup_s, "the device warm-up")
        if iters is not None and iters < 1:
            raise InputError(f"--iters must be at least 1, got {iters}")
        self.torch = runtime.import_torch("napkin bench-matmul")
        self.device = runtime.torch_device(self.torch, device)
        self.dtype = bench_dtype(dtype, self.device.type)
        if fast_accum and self.dtype is not DType.fp8:
            raise InputError(f"--fp8-fast-accum is an option of torch._scaled_mm: it needs --dtype fp8, not "
                             f"{self.dtype.value}")
        self.fast_accum = bool(fast_accum)
        self.device_name = runtime.device_name(self.torch, self.device)
        self.rocm_arch = runtime.rocm_arch(self.torch, self.device)
        self.l2_bytes = runtime.l2_cache_bytes(self.torch, self.device)
        self.llc_bytes = last_level_cache_bytes(self.rocm_arch)
        self.warmup_s, self.iters, self.target_s = warmup_s, iters, target_s
        self.cuda = self.device.type == "cuda"
        self.device_warmup_s = DEFAULT_DEVICE_WARMUP_S[self.device.type] if device_warmup_s is None else \
            device_warmup_s
        self.flags: dict[str, str] = {}
        self.notes: list[str] = []
        self.warmed: tuple[float, int, GemmShape | None] | None = None  # the device warm-up: (s, calls, shape)
        self._busy_since: float | None = None
        self._busy_until: float | None = None
        if self.dtype is DType.tf32 and self.cuda:
            ok, why = tf32_support(self.rocm_arch, os.environ)
            if not ok:
                raise BenchError(f"{why} ({self.device_name})")
        self.fp8: Any = None
        if self.dtype is DType.fp8:
            self._check_fp8()
        self.sampler = runtime.clock_sampler(self.torch, self.device) if self.cuda else None

    def _check_fp8(self) -> None:
        torch, dev = self.torch, self.device
        capability = None
        if dev.type == "cuda":
            props = torch.cuda.get_device_properties(dev)
            capability = (props.major, props.minor)
        name = fp8_dtype_name(self.rocm_arch)
        self.fp8 = getattr(torch, name, None)
        ok, why = fp8_support(dev.type, has_scaled_mm=hasattr(torch, "_scaled_mm"), has_fp8_dtype=self.fp8 is not None,
                              capability=capability, rocm_arch=self.rocm_arch)
        if not ok:
            raise BenchError(f"{why} ({self.device_name})")
        try:  # the capability says yes; make sure this torch build's kernel agrees
            self._gemm(GemmShape(m=16, n=16, k=16))[0]()
        except RuntimeError as e:
            raise BenchError(f"fp8 matmul is not supported on this device ({self.device_name}): "
                             f"torch._scaled_mm failed: {first_line(e)}") from None

    # -- one shape ---------------------------------------------------------------------------------------------

    def run_shape(self, shape: GemmShape) -> GemmShape:
        """What actually runs for ``shape``: fp8 pads K and N to 16 and uses A row-major, B column-major."""
        return fp8_run_shape(shape) if self.dtype is DType.fp8 else shape

    def operand_bytes(self, shape: GemmShape) -> float:
        out = FP8_OUT if self.dtype is DType.fp8 else self.dtype
        return (shape.m * shape.k + shape.k * shape.n) * bytes_per_element(self.dtype) + \
            shape.m * shape.n * bytes_per_element(out)

    def _needed_bytes(self, run: GemmShape) -> float:
        staging = max(run.m, run.n) * run.k * 2 if self.dtype is DType.fp8 else 0  # bf16 before the fp8 cast
        return self.operand_bytes(run) + staging

    def _gemm(self, shape: GemmShape) -> tuple[Callable[[], Any], list[Any]]:
        """Allocate fresh random operands in ``shape``'s layout and a preallocated output; return the call and what
        it holds. A "T" operand is the transposed view of a row-major matrix (column-major), as autograd hands them
        to the GEMM: nn.Linear's forward multiplies X by Wᵀ."""
        torch, dev, (M, N, K) = self.torch, self.device, (shape.m, shape.n, shape.k)
        if self.dtype is DType.fp8:
            # _scaled_mm wants A row-major and B column-major; random normal values fit e4m3's ±448 range.
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16).to(self.fp8)
            b = torch.randn(N, K, device=dev, dtype=torch.bfloat16).to(self.fp8).t()
            one = torch.ones((), device=dev, dtype=torch.float32)
            c = torch.empty(M, N, device=dev, dtype=torch_dtype(torch, FP8_OUT))
            fast = self.fast_accum
            return (lambda: torch._scaled_mm(a, b, one, one, out_dtype=c.dtype, use_fast_accum=fast, out=c)), \
                [a, b, c, one]
        t = torch_dtype(torch, self.dtype)
        a = torch.randn(K, M, device=dev, dtype=t).t() if shape.layout == "tn" else \
            torch.randn(M, K, device=dev, dtype=t)
        b = torch.randn(N, K, device=dev, dtype=t).t() if shape.layout == "nt" else \
            torch.randn(K, N, device=dev, dtype=t)
        c = torch.empty(M, N, device=dev, dtype=t)
        return (lambda: torch.mm(a, b, out=c)), [a, b, c]

    def _failure(self, e: BaseException, shape: GemmShape) -> Exception | None:
        """The one-line error an exception of torch's becomes (None: let it through as it is)."""
        if is_out_of_memory(e):
            return ShapeDoesNotFit(f"{shape} in {self.dtype.value}: out of memory ({first_line(e)})")
        if isinstance(e, RuntimeError) and not isinstance(e, InputError):
            return BenchError(f"torch could not run {shape} in {self.dtype.value} on {self.device}: {first_line(e)}")
        return None

    def _warm_device(self) -> None:
        """Load the device for ``device_warmup_s`` with its largest default GEMM, once (mamf-finder's 30 s warm-up):
        a GPU's first seconds run at boost clocks it cannot hold, which a per-shape warm-up never leaves."""
        if self.warmed is not None or self.device_warmup_s <= 0:
            return
        from napkin.bench import runtime

        torch, dev = self.torch, self.device
        self.warmed = (0.0, 0, None)
        free = runtime.free_memory_bytes(torch, dev)
        size, run = DEFAULT_SIZE[dev.type], None
        while True:  # the default size, halved until it fits (down to 256³)
            candidate = self.run_shape(GemmShape(m=size, n=size, k=size))
            if free is None or self._needed_bytes(candidate) <= MEMORY_HEADROOM * free:
                run = candidate
                break
            if size <= 256:
                break
            size //= 2
        if run is None:
            self.notes.append("device warm-up skipped: not enough free memory for a 256³ GEMM")
            return
        sync = runtime.synchronizer(torch, dev)
        fn = held = None
        failed = None
        start = time.perf_counter()
        calls = 0
        try:
            fn, held = self._gemm(run)
            with matmul_precision(torch, self.dtype), torch.cuda.device(dev) if self.cuda else contextlib.nullcontext():
                while True:
                    fn()
                    calls += 1
                    if calls % 4 == 0:  # a short queue: the wall time is the device's
                        sync()
                        if time.perf_counter() - start >= self.device_warmup_s:
                            break
                sync()
        except Exception as e:
            if self._failure(e, run) is None:
                raise
            failed = first_line(e)
        finally:
            del fn, held  # the operands go before the cache is emptied
        if failed is not None:
            import gc

            gc.collect()
            runtime.empty_cache(torch, dev)
            self.notes.append(f"device warm-up stopped: {failed}")
            return
        runtime.empty_cache(torch, dev)
        end = time.perf_counter()
        self.warmed = (end - start, calls, run)
        self._busy_since, self._busy_until = start, end

    def time(self, shape: GemmShape | tuple[int, int, int]) -> GemmTiming:
        """Time one GEMM shape. Raises ShapeDoesNotFit (memory) or BenchError (torch refused it)."""
        from napkin.bench import runtime

        if not isinstance(shape, GemmShape):
            shape = validated(GemmShape, m=shape[0], n=shape[1], k=shape[2])
        torch, dev = self.torch, self.device
        run = self.run_shape(shape)
        operand_bytes = self.operand_bytes(run)
        flush, flush_bytes = l2_flush_plan(dev.type, self.l2_bytes, self.llc_bytes)
        check_fits(self._needed_bytes(run) + flush_bytes, runtime.free_memory_bytes(torch, dev),
                   f"{shape} in {self.dtype.value}")
        self._warm_device()
        start = time.perf_counter()
        if self._busy_since is None or self._busy_until is None or start - self._busy_until > IDLE_RESET_S:
            self._busy_since = start  # idle long enough to cool: the load starts again
        failure: Exception | None = None
        fn: Callable[[], Any] | None = None
        held: list[Any] = []
        between: Callable[[], Any] | None = None
        try:
            fn, held = self._gemm(run)
            if flush:
                held.append(torch.empty(flush_bytes // 4, dtype=torch.int32, device=dev))
                between = held[-1].zero_  # overwriting 256 MiB (or 2 x the caches) evicts A, B and C
            with matmul_precision(torch, self.dtype):
                if self.cuda:
                    self.flags = runtime.matmul_flags(torch, dev)
                stats, _ = time_calls(torch, dev, fn, warmup_s=self.warmup_s, iters=self.iters,
                                      target_s=self.target_s, between=between, sampler=self.sampler)
        except Exception as e:
            failure = self._failure(e, shape)
            if failure is None:
                raise
        finally:
            fn, held, between = None, [], None  # drop the operands (closures hold them too)
            self._busy_until = time.perf_counter()
        if failure is not None:
            # Raised here, outside the handler: torch's exception (whose traceback holds the operands' frames) is
            # gone, so emptying the cache returns their memory and the next shape's free-memory check sees it.
            import gc

            gc.collect()
            runtime.empty_cache(torch, dev)
            raise failure
        runtime.empty_cache(torch, dev)
        busy = (start - self._busy_since) + stats.warmup_s if self.cuda else None
        return GemmTiming(shape=shape, dtype=self.dtype, device=str(dev), flops=shape.flops,
                          operand_bytes=operand_bytes, l2_flush=flush, stats=stats,
                          flops_per_s=shape.flops / stats.median_s, best_flops_per_s=shape.flops / stats.min_s,
                          ran_as=run if run != shape else None, busy_before_s=busy,
                          regime=regime(busy) if self.cuda else None)  # type: ignore[arg-type]

    # -- what the report says about the method -------------------------------------------------------------------

    def method(self, timing: GemmTiming | None = None) -> list[str]:
        d, cuda = self.dtype.value, self.cuda
        if self.dtype is DType.fp8:
            fp8 = str(self.fp8).replace("torch.", "")
            lines = [f"C = torch._scaled_mm(A, B, scale_a=1, scale_b=1, out_dtype=bf16, use_fast_accum="
                     f"{self.fast_accum}, out=C): A (M×K) row-major and B (K×N) column-major (its only layout) in "
                     f"{fp8} from torch.randn, C bf16, preallocated",
                     "use_fast_accum=True lets cuBLASLt accumulate the FP8 products in lower precision (faster); "
                     "False, napkin's default, keeps full-precision accumulation (--fp8-fast-accum to change it)",
                     self._padding_line(timing)]
        else:
            layout = LAYOUTS[timing.shape.layout] if timing is not None else \
                f"{LAYOUTS['nt']} unless the shape says otherwise"
            lines = [f"torch.mm(A, B, out=C): A (M×K) and B (K×N) fresh torch.randn in {d} (normal values, never "
                     f"zeros), C preallocated; layout: {layout}"]
        if cuda and self.dtype is DType.tf32:
            lines.append("TF32 tensor cores: torch.backends.cuda.matmul.allow_tf32 = True for the run, restored after")
        elif cuda and self.dtype is DType.fp32:
            lines.append("true FP32: torch.backends.cuda.matmul.allow_tf32 = False for the run, restored after")
        warm = self._device_warmup_line()
        if warm:
            lines.append(warm)
        if timing is None:
            lines.append(f"warm-up: at least {self.warmup_s * 1e3:.0f} ms of calls per shape before timing")
        else:
            s = timing.stats
            lines.append(f"warm-up: {s.warmup_s * 1e3:.0f} ms ({s.warmup_iters} calls) before timing")
        if cuda:
            lines.append("timer: a pair of CUDA events around each call (device time; launch gaps and the flush "
                         "excluded)")
            lines.append(self._clock_line())
        else:
            lines.append(f"timer: time.perf_counter around each call (CPU ops are synchronous); "
                         f"{self.torch.get_num_threads()} threads (torch.get_num_threads())")
        lines.append(self._flush_line())
        n = f"{timing.stats.iters} timed calls" if timing else \
            (f"{self.iters} timed calls per shape" if self.iters else "timed calls filling ~1 s per shape")
        lines.append(f"{n}; min / median / max kept; TFLOP/s and MFU from the median")
        return lines

    def _padding_line(self, timing: GemmTiming | None) -> str:
        rule = "K and N padded up to multiples of 16 where they are not (torch._scaled_mm on CUDA requires it)"
        if timing is not None and timing.ran_as is not None and \
                (timing.ran_as.k, timing.ran_as.n) != (timing.shape.k, timing.shape.n):
            return (f"{rule}: {timing.shape} ran as {timing.ran_as.m}×{timing.ran_as.k} @ "
                    f"{timing.ran_as.k}×{timing.ran_as.n}; FLOP/s counts the 2MNK of the shape asked, so the "
                    "padding's extra work lowers it")
        return f"{rule}; FLOP/s counts the 2MNK of the shape asked"

    def _device_warmup_line(self) -> str | None:
        if not self.cuda and self.device_warmup_s <= 0:
            return None
        if self.device_warmup_s <= 0:
            return (f"no device warm-up (--device-warmup 0): figures timed before {SUSTAINED_AFTER_S:g} s of "
                    "continuous load are 'burst' (boost clocks a GPU cannot hold)")
        if self.warmed is None or self.warmed[2] is None:
            return (f"device warm-up: {self.device_warmup_s:g} s of large GEMMs once, before the first shape "
                    f"(mamf-finder warms for 30 s)")
        secs, calls, run = self.warmed
        return (f"device warm-up: {secs:.1f} s ({calls} calls) of {run} {self.dtype.value} GEMMs once, before the "
                f"first shape (mamf-finder warms for 30 s); figures after >= {SUSTAINED_AFTER_S:g} s of continuous "
                "load are 'sustained', earlier ones 'burst'")

    def _clock_line(self) -> str:
        s = self.sampler
        if s is None:
            return ("no clock or power readings during the calls: install nvidia-ml-py (pynvml) or put nvidia-smi on "
                    "PATH")
        return (f"clocks: SM clock, power and temperature read every {s.period_s * 1e3:.0f} ms by {s.source} in a "
                "thread while the timed calls run (min / median clock, mean power, power or thermal capping)")

    def _flush_line(self) -> str:
        if not self.cuda:
            return "no cache flush on the CPU (the same as a bare torch.mm loop)"
        _, nbytes = l2_flush_plan("cuda", self.l2_bytes, self.llc_bytes)
        caches = f"L2 {format_bytes(self.l2_bytes, binary=False)}" if self.l2_bytes else "L2 size not reported"
        if self.llc_bytes:
            caches += f" + Infinity Cache {format_bytes(self.llc_bytes, binary=False)}"
        return (f"cache flush: a {format_bytes(nbytes, binary=True)} buffer overwritten before every call, outside "
                f"the timed events ({caches}; as triton's do_bench and mamf-finder do)")

    def environment(self, hardware: str | None, shapes: list[GemmShape], read_clocks: bool = True):
        from napkin.bench import runtime

        clocks = runtime.read_clocks(self.torch, self.device) if read_clocks else None
        return runtime.environment(self.torch, self.device, hardware=hardware, dtype=self.dtype,
                                   shapes=[str(s) for s in shapes], clocks=clocks, flags=self.flags or None)


def time_gemm(shape: GemmShape | tuple[int, int, int], *, dtype: str | DType | None = None, device: str = "auto",
              warmup_s: float = DEFAULT_WARMUP_S, iters: int | None = None,
              target_s: float = DEFAULT_TARGET_S, device_warmup_s: float | None = None) -> GemmTiming:
    """Time one GEMM shape with napkin's method (a one-off ``GemmBench``)."""
    return GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s,
                     device_warmup_s=device_warmup_s).time(shape)


def matmul_steps(d: Derivation, timing: GemmTiming, peak: PeakChoice, notes: list[str] | None = None) -> float | None:
    """The derivation of one measurement: FLOPs = 2MNK, FLOP/s = FLOPs / t_median, MFU = FLOP/s / dense peak.

    An achieved rate above the peak gives no MFU (the peak is wrong); why goes to ``notes``."""
    s, st = timing.shape, timing.stats
    flops = d.add(f"FLOPs of {s}", "2·M·N·K", f"2 × {s.m} × {s.n} × {s.k}", s.flops, "FLOP", FLOPS_SOURCE)
    t = d.given("median time per call", "t", st.median_s, "s",
                f"measured: median of {st.iters} calls, {st.timer} (min {st.min_s:.4g} s, max {st.max_s:.4g} s)")
    rate = d.add("achieved FLOP/s", "2·M·N·K / t", f"{g(flops)} / {g(t)}", flops / t, "FLOP/s", DEFINITION)
    if peak.peak_flops_per_s is None:
        return None
    mfu, why = plausible_mfu(rate, peak)
    if mfu is None:
        if notes is not None and why:
            notes.append(why)
        return None
    P = d.given(f"dense {timing.dtype.value} peak", "P", peak.peak_flops_per_s, "FLOP/s", peak.source or "")
    return d.add("MFU", "achieved / P", f"{g(rate)} / {g(P)}", rate / P, "fraction", MFU_SOURCE)


def _asked(dtype: str | DType | None, device: str, shapes: Sequence[GemmShape], warmup_s: float, iters: int | None,
           target_s: float, gpu: str | None, peak: float | None, fast_accum: bool,
           device_warmup_s: float | None) -> BenchInputs:
    return BenchInputs(dtype=None if dtype is None else str(getattr(dtype, "value", dtype)), device=device,
                       shapes=[[s.m, s.n, s.k] for s in shapes], warmup_s=warmup_s, iters=iters, target_s=target_s,
                       gpu=gpu, peak_flops_per_s=peak, fast_accum=fast_accum or None,
                       device_warmup_s=device_warmup_s)


def bench_matmul(m: int | None = None, n: int | None = None, k: int | None = None, *, size: int | None = None,
                 dtype: str | DType | None = None, device: str = "auto", warmup_s: float = DEFAULT_WARMUP_S,
                 iters: int | None = None, target_s: float = DEFAULT_TARGET_S, gpu: str | None = None,
                 peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None,
                 fast_accum: bool = False, device_warmup_s: float | None = None) -> MatmulBenchResult:
    """Time one GEMM (M×K)@(K×N) (square ``size`` by default) and report FLOP/s and MFU with the method."""
    if size is not None and size < 1:  # 0 is not "the default": a 0×0 GEMM is a mistake
        raise InputError(f"`size` must be at least 1, got {size}")
    bench = GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s, fast_accum=fast_accum,
                      device_warmup_s=device_warmup_s)
    size = DEFAULT_SIZE[bench.device.type] if size is None else size
    shape = validated(GemmShape, **{name: size if v is None else v for name, v in (("m", m), ("n", n), ("k", k))})
    choice = choose_peak(bench.dtype, bench.device.type, bench.device_name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    timing = bench.time(shape)
    d = Derivation()
    notes = [choice.note] if choice.note else []
    mfu = matmul_steps(d, timing, choice, notes)
    notes += bench.notes
    asked = _asked(dtype, device, [shape], warmup_s, iters, target_s, gpu, peak, fast_accum, device_warmup_s)
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


Dim = int | Sequence[int] | None


def grid_shapes(m: Dim, n: Dim, k: Dim, default: int) -> list[GemmShape]:
    """Every (M, N, K) of the given values (mamf-finder's grid search); a dimension not given is ``default``."""
    def values(v: Dim, name: str) -> list[int]:
        out = [default] if v is None else [int(v)] if isinstance(v, int) else [int(x) for x in v]
        if not out:
            raise InputError(f"`{name}` holds no size")
        return out

    ms, ns, ks = values(m, "m"), values(n, "n"), values(k, "k")
    total = len(ms) * len(ns) * len(ks)
    if total > MAX_SWEEP_SHAPES:
        raise InputError(f"the M × N × K grid has {len(ms)} × {len(ns)} × {len(ks)} = {total:,} shapes, more than "
                         f"{MAX_SWEEP_SHAPES:,}: widen the steps or fix a dimension")
    return [validated(GemmShape, m=a, n=b, k=c) for a, b, c in itertools.product(ms, ns, ks)]


Progress = Callable[[int, int, GemmShape | None], Any]


def sweep_matmul(sizes: Sequence[int] | None = None, *, m: Dim = None, n: Dim = None, k: Dim = None,
                 size: int | None = None, dtype: str | DType | None = None, device: str = "auto",
                 warmup_s: float = DEFAULT_WARMUP_S, iters: int | None = None, target_s: float = DEFAULT_TARGET_S,
                 gpu: str | None = None, peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None,
                 progress: Progress | None = None, fast_accum: bool = False,
                 device_warmup_s: float | None = None) -> MatmulSweepResult:
    """Time GEMMs over ``sizes`` (squares; default: ``sweep_sizes`` for the device), or over the grid of ``m``,
    ``n`` and ``k`` values (each an int or a list; one not given is ``size``, else the device's default size).

    A shape that does not fit or that torch refuses is skipped with a note; Ctrl-C stops the sweep and returns the
    shapes done so far."""
    grid = any(v is not None for v in (m, n, k))
    if grid and sizes:
        raise InputError("give square --sizes or M/N/K ranges (--m-range, --n-range, --k-range), not both")
    if size is not None and size < 1:
        raise InputError(f"`size` must be at least 1, got {size}")
    bench = GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s, fast_accum=fast_accum,
                      device_warmup_s=device_warmup_s)
    if grid:
        shapes = grid_shapes(m, n, k, DEFAULT_SIZE[bench.device.type] if size is None else size)
    else:
        shapes = [validated(GemmShape, m=s, n=s, k=s)
                  for s in (sizes or sweep_sizes(*SWEEP_RANGE[bench.device.type]))]
    choice = choose_peak(bench.dtype, bench.device.type, bench.device_name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    rows: list[SweepRow] = []
    skipped: list[SkippedShape] = []
    implausible: list[str] = []
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
            mfu, why = plausible_mfu(t.flops_per_s, choice)
            if why and not implausible:
                implausible.append(why)
            rows.append(SweepRow(timing=t, mfu=mfu))
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
    notes += implausible + bench.notes
    notes += [f"skipped: {s.reason}" for s in skipped]
    if interrupted:
        notes.append(f"interrupted (Ctrl-C) after {len(rows) + len(skipped)} of {len(shapes)} shapes: "
                     "best so far shown")
    asked = _asked(dtype, device, shapes, warmup_s, iters, target_s, gpu, peak, fast_accum, device_warmup_s)
    return MatmulSweepResult(inputs=asked, environment=bench.environment(choice.hardware, shapes,
                                                                         read_clocks=not interrupted),
                             method=bench.method(), peak=choice, rows=rows, skipped=skipped, best=best, spread=spread,
                             interrupted=interrupted, steps=d.steps, notes=notes)
