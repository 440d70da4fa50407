"""torch, imported lazily, and what it says about the device: the environment header of every measurement."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import warnings
from typing import Any

from napkin.bench.device import NVIDIA_SMI_FIELDS, cpu_model_name, parse_nvidia_smi, resolve_device
from napkin.bench.models import BenchEnvironment, GpuClocks
from napkin.errors import MissingExtraError
from napkin.specs.dtypes import DType

NVIDIA_SMI_TIMEOUT_S = 5  # a wedged driver must not hang the benchmark


def import_torch(purpose: str = "the measured mode (napkin bench-*)") -> Any:
    """torch, or a MissingExtraError naming the extra to install. The only place napkin imports torch."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*NumPy.*")  # torch without numpy warns; we never use numpy
            import torch
    except ImportError:
        raise MissingExtraError("torch", "bench", purpose) from None
    return torch


def torch_device(torch: Any, requested: str) -> Any:
    """A torch.device from --device (auto, cpu, cuda, cuda:N), checked against what torch sees."""
    available = bool(torch.cuda.is_available())
    count = torch.cuda.device_count() if available else 0
    current = torch.cuda.current_device() if available else 0
    return torch.device(resolve_device(requested, available, count, current=current,
                                       cuda_build=torch.version.cuda or torch.version.hip))


def synchronizer(torch: Any, device: Any) -> Any:
    """A function that waits for the device's queued work (CPU ops are synchronous: nothing to wait for)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def device_name(torch: Any, device: Any) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = cpu_model_name(f.read())
    except OSError:
        name = None
    return name or platform.processor() or platform.machine() or "cpu"


def l2_cache_bytes(torch: Any, device: Any) -> int | None:
    if device.type != "cuda":
        return None
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", None) or None


def free_memory_bytes(torch: Any, device: Any) -> float | None:
    """Free device memory (CUDA), or the host's available memory (Linux); None where unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def empty_cache(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def read_clocks(torch: Any, device: Any) -> GpuClocks | None:
    """SM/memory clocks, power and temperature: nvidia-smi if it answers, else torch.cuda.clock_rate (pynvml)."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    # torch's index and nvidia-smi's differ under CUDA_VISIBLE_DEVICES: select by UUID where torch gives one.
    uuid = str(getattr(props, "uuid", "") or "")
    select = (uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}") if uuid else str(device.index or 0)
    exe = shutil.which("nvidia-smi")
    if exe and torch.version.hip is None:
        try:
            out = subprocess.run([exe, f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits",
                                  "-i", select], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
            if out.returncode == 0 and out.stdout.strip():
                parsed = parse_nvidia_smi(out.stdout.strip().splitlines()[0])
                if parsed is not None:
                    return parsed
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return GpuClocks(source="torch.cuda.clock_rate", sm_mhz=float(torch.cuda.clock_rate(device)))
    except Exception:  # pynvml / amdsmi missing or unsupported: clocks are optional
        return None


def environment(torch: Any, device: Any, *, hardware: str | None = None, dtype: DType | None = None,
                shapes: list[str] | None = None, clocks: GpuClocks | None = None) -> BenchEnvironment:
    fields: dict[str, Any] = {}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rocm_arch = getattr(props, "gcnArchName", None) if torch.version.hip else None
        fields = dict(
            compute_capability=rocm_arch or f"{props.major}.{props.minor}",
            multiprocessors=getattr(props, "multi_processor_count", None),
            l2_cache_bytes=l2_cache_bytes(torch, device),
            device_memory_bytes=float(props.total_memory),
        )
    return BenchEnvironment(
        device=str(device), device_name=device_name(torch, device), hardware=hardware,
        torch_version=str(torch.__version__), cuda_version=torch.version.cuda, hip_version=torch.version.hip,
        cpu_threads=torch.get_num_threads(), python_version=platform.python_version(),
        platform=f"{sys.platform} {platform.machine()}", clocks=clocks, dtype=dtype, shapes=shapes or [], **fields,
    )

