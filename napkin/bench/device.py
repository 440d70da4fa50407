"""Decisions about the device, as pure functions of what torch reports, so they are tested without a GPU.

Nothing here imports torch: the callers pass in the facts (device name, capability, L2 size, free memory).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from napkin.bench.models import GpuClocks, PeakChoice
from napkin.errors import InputError, NapkinError, UnknownNameError
from napkin.specs.dtypes import DType

L2_FLUSH_MARGIN = 2.0  # caches are not strict LRU: operands up to 2x the L2 size can still be partly resident
MIN_FLUSH_BYTES = 8 * 2**20  # a flush buffer never smaller than 8 MiB, whatever L2 size the driver reports
MEMORY_HEADROOM = 0.9  # use at most 90% of the free memory: the allocator and the library need some room
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later (CUDA programming guide)
FP8_ROCM_ARCHS = ("gfx94", "gfx95")  # MI300/MI325 (gfx942), MI350 (gfx950): FP8 matrix cores


class DeviceError(NapkinError):
    """The device asked for is not there (no CUDA, index out of range, unknown kind)."""


class ShapeDoesNotFit(NapkinError):
    """A GEMM whose operands do not fit the device's free memory (a sweep skips it and goes on)."""


class BenchError(NapkinError):
    """torch refused a benchmark (unsupported dtype on this device, bad alignment...): one line, no traceback."""


def resolve_device(requested: str, cuda_available: bool, cuda_count: int, *, current: int = 0,
                   cuda_build: str | None = None) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' → a torch device string, or a DeviceError that says why not."""
    r = requested.strip().lower()
    if r == "auto":
        return f"cuda:{current}" if cuda_available and cuda_count > 0 else "cpu"
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


def l2_flush_plan(device_type: str, operand_bytes: float, l2_bytes: int | None) -> tuple[bool, int]:
    """Whether to flush L2 between timed calls, and the size of the buffer to overwrite for it.

    Operands that fit in L2 would be served from cache on every call after the first, which a real
    layer (whose inputs were just written by another kernel) does not get. On the CPU nothing is flushed.
    """
    if device_type != "cuda" or not l2_bytes:
        return False, 0
    if operand_bytes > L2_FLUSH_MARGIN * l2_bytes:
        return False, 0
    return True, max(int(2 * l2_bytes), MIN_FLUSH_BYTES)  # writing 2x L2 evicts every line


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
