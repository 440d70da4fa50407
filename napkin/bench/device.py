"""Decisions about the device, as pure functions of what torch reports, so they are tested without a GPU.

Nothing here imports torch: the callers pass in the facts (device name, capability, L2 size, free memory).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napkin.bench.models import Capped, ClockSummary, GemmShape, GpuClocks, PeakChoice
from napkin.errors import InputError, NapkinError, UnknownNameError
from napkin.specs.dtypes import DType

FLUSH_BYTES = 256 * 2**20  # triton's do_bench and mamf-finder overwrite 256 MiB before every timed call
L2_FLUSH_MARGIN = 2.0  # a flush buffer of at least 2x the caches it must evict (caches are not strict LRU)
ROCM_LAST_LEVEL_CACHE = {"gfx94": 256 * 2**20, "gfx95": 256 * 2**20}  # MI300X/MI325X/MI355X: 256 MB Infinity
# Cache (AMD CDNA 3 white paper), behind L2 and not in torch's L2_cache_size
MEMORY_HEADROOM = 0.9  # use at most 90% of the free memory: the allocator and the library need some room
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later (CUDA programming guide)
FP8_ROCM_ARCHS = ("gfx94", "gfx95")  # MI300/MI325 (gfx942), MI350 (gfx950): FP8 matrix cores
FP8_FNUZ_ROCM_ARCHS = ("gfx94",)  # MI300/MI325 FP8 is the "fnuz" variant (no -0, bias 8); gfx950 uses OCP e4m3fn
FP8_ALIGN = 16  # CUDA's torch._scaled_mm refuses K or N not a multiple of 16 (cuBLASLt FP8 alignment)
TF32_ROCM_ARCHS = ("gfx94", "gfx95")  # xf32 on MI300 and later; older Instinct parts have no TF32-like mode
MIN_PEAK_FLOPS = 1e9  # no device that runs torch peaks under 1 GFLOP/s: a smaller --peak is a unit slip (67 for 67T)
MAX_MFU = 1.0  # achieved above the dense peak is impossible: the peak (or the device match) is wrong
SUSTAINED_AFTER_S = 30.0  # mamf-finder warms for 30 s: by then a 700 W part has left its boost burst
IDLE_RESET_S = 2.0  # a gap this long between loads lets the GPU cool and re-boost: the load restarts
HOST_BOUND_FRACTION = 0.9  # enqueueing took >= 90% of the measured time: the GPU waited on the host


class DeviceError(NapkinError):
    """The device asked for is not there (no CUDA, index out of range, unknown kind)."""


class ShapeDoesNotFit(NapkinError):
    """A GEMM whose operands do not fit the device's free memory (a sweep skips it and goes on)."""


class BenchError(NapkinError):
    """torch refused a benchmark (unsupported dtype on this device, bad alignment...): one line, no traceback."""


def torch_dtype(torch: Any, d: DType) -> Any:
    """The torch dtype a measurement allocates for ``d`` (``torch`` passed in: this module never imports it); tf32
    is fp32 storage with the tensor-core mode on (napkin.bench.matmul.matmul_precision sets it)."""
    table = {DType.fp32: torch.float32, DType.tf32: torch.float32, DType.bf16: torch.bfloat16,
             DType.fp16: torch.float16}
    if d not in table:
        raise InputError(f"no torch dtype for {d.value} here; use one of {', '.join(k.value for k in table)}")
    return table[d]


def resolve_device(requested: str, cuda_available: bool, cuda_count: int, *, current: int = 0,
                   cuda_build: str | None = None) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' → a torch device string, or a DeviceError that says why not."""
    r = requested.strip().lower()
    if r == "auto":
        if not (cuda_available and cuda_count > 0):
            return "cpu"
        if not 0 <= current < cuda_count:
            raise DeviceError(f"--device auto: device index {current} but only {cuda_count} CUDA device(s) visible "
                              f"(cuda:0..cuda:{cuda_count - 1})")
        return f"cuda:{current}"
    if r == "cpu":
        return "cpu"
    m = re.fullmatch(r"(?:cuda|gpu)(?::(\d+))?", r)
    if m is None:
        raise DeviceError(f"unknown device '{requested}'; use auto, cpu, cuda or cuda:N")
    if not cuda_available or cuda_count == 0:
        why = ("this torch is a CPU-only build (install the CUDA build of torch, see README)" if not cuda_build
               else f"this torch (built for CUDA {cuda_build}) sees no GPU: check the driver and CUDA_VISIBLE_DEVICES")
        raise DeviceError(f"CUDA requested (--device {requested}) but torch.cuda.is_available() is False: {why}")
    index = int(m.group(1)) if m.group(1) is not None else current
    if index >= cuda_count:
        raise DeviceError(f"--device {requested}: only {cuda_count} CUDA device(s) visible "
                          f"(cuda:0..cuda:{cuda_count - 1})")
    return f"cuda:{index}"


def rank_device(requested: str, local_rank: int, local_world: int, cuda_available: bool, cuda_count: int, *,
                cuda_build: str | None = None) -> str:
    """The device of one all-reduce rank: one GPU per local rank (cuda:LOCAL_RANK), or the CPU.

    Every rank of a node decides the same way from the same facts (LOCAL_WORLD_SIZE, the GPU count), so a launch
    with more ranks than GPUs fails on all of them at once instead of leaving the others waiting in rendezvous.
    """
    r = requested.strip().lower()
    gpus = cuda_available and cuda_count > 0
    if r in ("auto", "cuda", "gpu"):
        if not gpus:
            return resolve_device(requested, cuda_available, cuda_count, cuda_build=cuda_build)
        if local_world > cuda_count:
            raise DeviceError(f"{local_world} ranks on this node but only {cuda_count} GPU(s) visible: one rank per "
                              f"GPU, so launch at most {cuda_count} (--nproc-per-node {cuda_count} / --nproc "
                              f"{cuda_count}), or --device cpu --backend gloo")
        return f"cuda:{local_rank}"
    if r != "cpu" and local_world > 1:
        raise DeviceError(f"--device {requested} would put all {local_world} ranks of this node on one GPU; use "
                          "--device cuda (rank i takes cuda:i) or set CUDA_VISIBLE_DEVICES per rank")
    return resolve_device(requested, cuda_available, cuda_count, current=local_rank, cuda_build=cuda_build)


def max_local_ranks(device_type: str, cpus: int, gpus: int) -> int:
    """How many local ranks --nproc may spawn: one per GPU; on the CPU one per core (two at least: an all-reduce
    needs two, and two gloo ranks share one core correctly, only slowly)."""
    return gpus if device_type == "cuda" else max(2, cpus)


def match_hardware(device_name: str, specs_dirs: Sequence[str | Path] | None = None):  # -> HardwareSpec | None
    """The catalog entry whose name or alias is this device name ('NVIDIA H100 80GB HBM3' → h100-sxm), or None.

    Only exact aliases count (case, spaces and dashes aside): an H100 PCIe must never be taken for an SXM.
    """
    from napkin.specs.catalog import hardware_catalog

    try:
        return hardware_catalog(specs_dirs).get(device_name)
    except UnknownNameError:
        return None


def choose_peak(dtype: DType, device_type: str, device_name: str, *, gpu: str | None = None,
                peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None) -> PeakChoice:
    """The dense peak FLOP/s of ``dtype`` that MFU is measured against: --peak, else --gpu, else the device's
    catalog entry. Without one, MFU is left out and the note says how to get it."""
    from napkin.specs.catalog import get_hardware

    hw = get_hardware(gpu, specs_dirs) if gpu else None  # an unknown --gpu is an error (with did-you-mean)
    if peak is not None:
        if not peak > 0:
            raise InputError(f"--peak must be greater than 0 FLOP/s, got {peak:g}")
        if not math.isfinite(peak):
            raise InputError(f"--peak must be a finite number of FLOP/s, got {peak:g}")
        if peak < MIN_PEAK_FLOPS:
            raise InputError(f"--peak {peak:g} FLOP/s is below any device that runs torch (a peak is in FLOP/s: "
                             f"67e12 or 67T for 67 TFLOP/s)")
        return PeakChoice(hardware=hw.name if hw else None, peak_flops_per_s=peak, source="--peak (given)")
    if hw is not None:  # asked for by name: a dtype missing from its datasheet is an error
        return PeakChoice(hardware=hw.name, peak_flops_per_s=hw.peak(dtype), source=_spec_source(hw, dtype))
    if device_type == "cpu":
        return PeakChoice(note="the catalog has no CPU profiles: MFU needs --peak FLOP/s (this CPU's peak for "
                               f"{dtype.value})")
    hw = match_hardware(device_name, specs_dirs)
    if hw is None:
        return PeakChoice(note=f"'{device_name}' is not in the hardware catalog: TFLOP/s only; MFU needs --gpu NAME "
                               "(`napkin hardware list`) or --peak FLOP/s")
    if dtype not in hw.peak_flops_per_s:
        return PeakChoice(hardware=hw.name, note=f"{hw.name} has no {dtype.value} peak on its datasheet: no MFU")
    return PeakChoice(hardware=hw.name, peak_flops_per_s=hw.peak(dtype), source=_spec_source(hw, dtype))


def _spec_source(hw, dtype: DType) -> str:  # hw: HardwareSpec
    return f"{hw.name} dense {dtype.value} peak: {hw.sources[0]}"


def last_level_cache_bytes(rocm_arch: str | None) -> int:
    """Cache behind L2 that torch's L2_cache_size leaves out: MI300's 256 MB Infinity Cache; none on NVIDIA."""
    if not rocm_arch:
        return 0
    return next((b for prefix, b in ROCM_LAST_LEVEL_CACHE.items() if rocm_arch.startswith(prefix)), 0)


def l2_flush_plan(device_type: str, l2_bytes: int | None, llc_bytes: int = 0) -> tuple[bool, int]:
    """Whether to flush the caches before each timed call, and the bytes to overwrite for it.

    On a GPU always (as triton's do_bench and mamf-finder do): a layer's inputs were just written by another
    kernel, not left in L2 by the same GEMM, and operands small enough to stay there (a skinny A and B beside a big
    C, say) would otherwise be served from cache on every call after the first. The buffer is 256 MiB, or twice the
    caches where they are bigger (L2 plus MI300's Infinity Cache). On the CPU nothing is flushed.
    """
    if device_type != "cuda":
        return False, 0
    caches = (l2_bytes or 0) + llc_bytes
    return True, int(max(FLUSH_BYTES, L2_FLUSH_MARGIN * caches))


def fp8_dtype_name(rocm_arch: str | None) -> str:
    """The torch fp8 dtype of this device's matrix cores: float8_e4m3fnuz on MI300/MI325, else float8_e4m3fn."""
    if rocm_arch and rocm_arch.startswith(FP8_FNUZ_ROCM_ARCHS):
        return "float8_e4m3fnuz"
    return "float8_e4m3fn"


def round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def fp8_run_shape(shape: GemmShape) -> GemmShape:
    """The GEMM torch._scaled_mm can run for ``shape``: K and N padded up to multiples of 16, A row-major and B
    column-major (its only layout; fp8 recipes transpose while casting). M needs no padding."""
    return shape.model_copy(update={"k": round_up(shape.k, FP8_ALIGN), "n": round_up(shape.n, FP8_ALIGN),
                                    "layout": "nt"})


def tf32_support(rocm_arch: str | None, env: Mapping[str, str]) -> tuple[bool, str]:
    """(supported, why) for --dtype tf32. NVIDIA: always (Ampere and later; older parts run fp32). ROCm: xf32 on
    MI300 and later, and only with HIPBLASLT_ALLOW_TF32=1, without which torch silently runs true fp32."""
    if rocm_arch is None:
        return True, "TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32)"
    if not rocm_arch.startswith(TF32_ROCM_ARCHS):
        return False, f"tf32 is not supported on this device ({rocm_arch}: no xf32; MI300 or later)"
    if env.get("HIPBLASLT_ALLOW_TF32") != "1":
        return False, (f"tf32 on ROCm ({rocm_arch}) needs HIPBLASLT_ALLOW_TF32=1 in the environment before the process "
                       "starts; without it torch runs true fp32 and the figure would be fp32's. Run "
                       "`HIPBLASLT_ALLOW_TF32=1 napkin bench-matmul --dtype tf32`, or use --dtype fp32")
    return True, f"xf32 on {rocm_arch} (HIPBLASLT_ALLOW_TF32=1)"


def fp8_support(device_type: str, *, has_scaled_mm: bool, has_fp8_dtype: bool,
                capability: tuple[int, int] | None = None, rocm_arch: str | None = None) -> tuple[bool, str]:
    """(supported, why) for an fp8 GEMM through torch._scaled_mm on this device."""
    if not (has_scaled_mm and has_fp8_dtype):
        return False, "this torch has no torch._scaled_mm / float8_e4m3fn (fp8 needs torch >= 2.1)"
    if device_type == "cpu":
        return True, "torch._scaled_mm on the CPU (a reference kernel, not a fast path)"
    if rocm_arch is not None:
        if rocm_arch.startswith(FP8_ROCM_ARCHS):
            return True, f"ROCm {rocm_arch} has FP8 matrix cores"
        return False, f"fp8 matmul is not supported on this device ({rocm_arch}: no FP8 matrix cores; MI300 or later)"
    if capability is None:
        return False, "fp8 matmul is not supported on this device (compute capability unknown)"
    if tuple(capability) >= FP8_MIN_CAPABILITY:
        return True, f"compute capability {capability[0]}.{capability[1]} has FP8 tensor cores"
    return False, (f"fp8 matmul is not supported on this device: compute capability {capability[0]}.{capability[1]} "
                   f"< {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} (FP8 tensor cores start with Ada and Hopper)")


def plausible_mfu(achieved_flops_per_s: float, peak: PeakChoice) -> tuple[float | None, str | None]:
    """(MFU, None), or (None, why) where the achieved rate is above the peak (an impossible MFU: the peak is wrong)."""
    P = peak.peak_flops_per_s
    if P is None:
        return None, None
    mfu = achieved_flops_per_s / P
    if mfu <= MAX_MFU:
        return mfu, None
    where = "--peak" if peak.source == "--peak (given)" else (peak.hardware or peak.source or "the peak")
    return None, (f"achieved {achieved_flops_per_s:.4g} FLOP/s is above the dense peak it is measured against "
                  f"({P:.4g} FLOP/s, {where}): a peak below the achieved rate is impossible, so no MFU is reported "
                  f"(it would be {mfu:.3g}); check --peak or --gpu")


MAX_SWEEP_SHAPES = 10_000  # an M × N × K grid beyond this is a typo, not a plan (hours of GPU time)


def range_values(start: int, stop: int, step: int, what: str = "range") -> list[int]:
    """mamf-finder's --m_range START STOP STEP: START, START+STEP, ... below STOP (a START of 0 means STEP)."""
    if step < 1 or start < 0 or stop < 1:
        raise InputError(f"{what} needs START >= 0, STOP >= 1 and STEP >= 1, got {start} {stop} {step}")
    typed = f"{what} {start} {stop} {step}"  # errors echo what was typed (a START of 0 stays 0 there)
    if start == 0:  # a dimension cannot be 0 (mamf-finder starts at STEP)
        start = step
    sizes = range(start, stop, step)
    if len(sizes) > MAX_SWEEP_SHAPES:  # counted, not built: --m-range 0 100000000 1 built 4.9 GB of ints first
        raise InputError(f"{typed} holds {len(sizes):,} sizes, more than the "
                         f"{MAX_SWEEP_SHAPES:,} shapes a sweep may time: widen STEP or narrow START..STOP")
    values = list(sizes)
    if not values:
        raise InputError(f"{typed} holds no size: STOP is exclusive and must exceed START")
    return values


def host_bound(launch_s: float | None, time_s: float) -> bool:
    """Whether enqueueing the calls took nearly all of the measured time (the device waited on the host)."""
    return launch_s is not None and time_s > 0 and launch_s >= HOST_BOUND_FRACTION * time_s


def regime(busy_s: float | None) -> str | None:
    if busy_s is None:
        return None
    return "sustained" if busy_s >= SUSTAINED_AFTER_S else "burst"


# NVML's clocks-event (throttle) reason bits, nvml.h nvmlClocksEventReason*: what held the clocks down.
CLOCK_REASONS = {0x4: "power cap (software)", 0x8: "hardware slowdown", 0x20: "thermal (software)",
                 0x40: "thermal (hardware)", 0x80: "power brake (hardware)"}
POWER_REASONS = 0x4 | 0x80
THERMAL_REASONS = 0x20 | 0x40
POWER_AT_LIMIT = 0.97  # without reason bits: a mean draw within 3% of the limit is taken as power-capped


def clock_reason_names(mask: int) -> list[str]:
    return [name for bit, name in CLOCK_REASONS.items() if mask & bit]


def summarize_clocks(source: str, samples: Sequence[Mapping[str, Any]], *, period_s: float,
                     max_sm_mhz: float | None = None, power_limit_w: float | None = None) -> ClockSummary:
    """Readings taken during the timed calls → min/median/max SM clock, mean power, and whether the GPU was held
    down by power or heat (the driver's reason bits, or a mean draw at the limit where it gives none)."""

    def values(key: str) -> list[float]:
        return [float(s[key]) for s in samples if s.get(key) is not None]

    sm, power, temp = values("sm_mhz"), values("power_w"), values("temperature_c")
    masks = [int(s["reasons"]) for s in samples if s.get("reasons") is not None]
    mask = 0
    for m in masks:
        mask |= m
    limit = power_limit_w or next((float(s["power_limit_w"]) for s in samples if s.get("power_limit_w")), None)
    power_capped = bool(mask & POWER_REASONS)
    thermal = bool(mask & THERMAL_REASONS)
    if not masks and power and limit:
        power_capped = statistics.fmean(power) >= POWER_AT_LIMIT * limit
    capped: Capped | None = ("power and thermal" if power_capped and thermal else "power" if power_capped else
                             "thermal" if thermal else None)
    return ClockSummary(source=source, samples=len(samples), period_s=period_s,
                        sm_mhz_min=min(sm) if sm else None, sm_mhz_median=statistics.median(sm) if sm else None,
                        sm_mhz_max=max(sm) if sm else None, max_sm_mhz=max_sm_mhz,
                        power_w_mean=statistics.fmean(power) if power else None,
                        power_w_max=max(power) if power else None, power_limit_w=limit,
                        temperature_c_max=max(temp) if temp else None, reasons=clock_reason_names(mask),
                        capped=capped)


def check_fits(needed_bytes: float, free_bytes: float | None, what: str) -> None:
    """Refuse before allocating when the operands cannot fit (a sweep turns this into a skipped size)."""
    from napkin.units import format_bytes

    if free_bytes is not None and needed_bytes > MEMORY_HEADROOM * free_bytes:
        raise ShapeDoesNotFit(f"{what} needs {format_bytes(needed_bytes)} but only {format_bytes(free_bytes)} "
                              "is free")


_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError from an allocator (CPU allocators raise plain RuntimeErrors)."""
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in _OOM_MARKERS)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


NVIDIA_SMI_FIELDS = ("clocks.sm", "clocks.max.sm", "clocks.mem", "power.draw", "power.limit", "temperature.gpu",
                     "driver_version")


def parse_nvidia_smi(line: str) -> GpuClocks | None:
    """One line of `nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits`."""
    parts = [p.strip() for p in line.strip().split(",")]
    if len(parts) != len(NVIDIA_SMI_FIELDS):
        return None

    def num(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:  # "[N/A]", "[Not Supported]"
            return None

    sm, max_sm, mem, power, limit, temp = (num(p) for p in parts[:6])
    driver = parts[6] if parts[6] and not parts[6].startswith("[") else None
    return GpuClocks(source="nvidia-smi", sm_mhz=sm, max_sm_mhz=max_sm, memory_mhz=mem, power_w=power,
                     power_limit_w=limit, temperature_c=temp, driver_version=driver)


def cpu_model_name(cpuinfo: str) -> str | None:
    """The 'model name' line of /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return None
