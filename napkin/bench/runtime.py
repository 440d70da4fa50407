"""torch, imported lazily, and what it says about the device: the environment header of every measurement."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from napkin.bench.device import (
    NVIDIA_SMI_FIELDS,
    cpu_model_name,
    first_line,
    parse_nvidia_smi,
    resolve_device,
    summarize_clocks,
)
from napkin.bench.models import BenchEnvironment, ClockSummary, GpuClocks
from napkin.errors import MissingExtraError
from napkin.specs.dtypes import DType

NVIDIA_SMI_TIMEOUT_S = 5  # a wedged driver must not hang the benchmark
SAMPLE_PERIOD_S = 0.02  # NVML reads take microseconds: 50 readings a second (mamf-finder samples every 20 ms)
SMI_SAMPLE_PERIOD_S = 0.2  # without pynvml each reading starts nvidia-smi (tens of ms): 5 a second
# Environment variables that change which GEMM kernels run, recorded with every GPU measurement.
KERNEL_ENV_VARS = ("CUBLAS_WORKSPACE_CONFIG", "CUBLASLT_WORKSPACE_SIZE", "NVIDIA_TF32_OVERRIDE", "HIPBLASLT_ALLOW_TF32",
                   "PYTORCH_TUNABLEOP_ENABLED", "TORCH_BLAS_PREFER_HIPBLASLT", "CUDA_VISIBLE_DEVICES")


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
    select = _smi_select(torch, device)
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


def rocm_arch(torch: Any, device: Any) -> str | None:
    """gcnArchName on ROCm (gfx942:sramecc+:xnack-), None on NVIDIA and the CPU."""
    if device.type != "cuda" or not torch.version.hip:
        return None
    return getattr(torch.cuda.get_device_properties(device), "gcnArchName", None) or None


# -- clocks and power during the timed calls ---------------------------------------------------------------------

Reader = Callable[[], dict[str, Any] | None]


class ClockSampler:
    """Reads SM clock, power and temperature in a daemon thread while started; ``stop()`` summarizes the readings.

    Made once per device and started around each timed loop (napkin.bench.timer.time_calls)."""

    def __init__(self, source: str, read: Reader, *, period_s: float = SAMPLE_PERIOD_S,
                 max_sm_mhz: float | None = None, power_limit_w: float | None = None) -> None:
        self.source, self._read, self.period_s = source, read, period_s
        self.max_sm_mhz, self.power_limit_w = max_sm_mhz, power_limit_w
        self.error: str | None = None
        self._samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_now(self) -> None:
        if self.error is not None:
            return
        try:
            s = self._read()
        except Exception as e:  # a driver that stops answering must not end the measurement
            self.error = first_line(e)
            return
        if s:
            with self._lock:
                self._samples.append(s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_now()
            if self.error is not None or self._stop.wait(self.period_s):
                return

    def start(self) -> None:
        with self._lock:
            self._samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="napkin-clock-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> ClockSummary | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=NVIDIA_SMI_TIMEOUT_S + 1)
            self._thread = None
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return None
        return summarize_clocks(self.source, samples, period_s=self.period_s, max_sm_mhz=self.max_sm_mhz,
                                power_limit_w=self.power_limit_w)


def _nvml_sampler(torch: Any, device: Any) -> ClockSampler | None:
    try:
        import pynvml  # nvidia-ml-py: what torch.cuda.clock_rate uses too
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
        if uuid:
            uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            h = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        else:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [x.strip() for x in visible.split(",") if x.strip()]
            index = device.index or 0
            h = pynvml.nvmlDeviceGetHandleByIndex(int(ids[index]) if ids and ids[index].isdigit() else index)
        sm = pynvml.NVML_CLOCK_SM
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)

        def read() -> dict[str, Any]:
            out: dict[str, Any] = {"sm_mhz": float(pynvml.nvmlDeviceGetClockInfo(h, sm)),
                                   "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1e3,  # mW
                                   "temperature_c": float(pynvml.nvmlDeviceGetTemperature(h, 0))}  # 0: GPU die
            if reasons is not None:
                out["reasons"] = int(reasons(h))
            return out

        read()
        max_sm = limit = None
        try:
            max_sm = float(pynvml.nvmlDeviceGetMaxClockInfo(h, sm))
            limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3
        except Exception:
            pass
        return ClockSampler("nvml", read, max_sm_mhz=max_sm, power_limit_w=limit)
    except Exception:
        return None


SMI_SAMPLE_FIELDS = ("clocks.sm", "power.draw", "temperature.gpu", "power.limit", "clocks.max.sm")
SMI_REASON_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")  # new name, then the old one


def _smi_sampler(torch: Any, device: Any) -> ClockSampler | None:
    exe = shutil.which("nvidia-smi")
    if not exe or torch.version.hip is not None:
        return None
    select = _smi_select(torch, device)

    def query(fields: tuple[str, ...]) -> list[str] | None:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits", "-i", select],
                             capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        parts = [p.strip() for p in out.stdout.strip().splitlines()[0].split(",")]
        return parts if len(parts) == len(fields) else None

    def num(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:  # [N/A], [Not Supported]
            return None

    try:
        fields: tuple[str, ...] = SMI_SAMPLE_FIELDS
        for reason in SMI_REASON_FIELDS:  # drivers before 535 know only the old name
            if query(SMI_SAMPLE_FIELDS + (reason,)) is not None:
                fields = SMI_SAMPLE_FIELDS + (reason,)
                break
        first = query(fields)
        if first is None:
            return None
    except (OSError, subprocess.SubprocessError):
        return None

    def read() -> dict[str, Any] | None:
        parts = query(fields)
        if parts is None:
            return None
        out: dict[str, Any] = {"sm_mhz": num(parts[0]), "power_w": num(parts[1]), "temperature_c": num(parts[2])}
        if len(parts) > len(SMI_SAMPLE_FIELDS):
            try:
                out["reasons"] = int(parts[-1], 16)  # 0x0000000000000004
            except ValueError:
                pass
        return out

    return ClockSampler("nvidia-smi", read, period_s=SMI_SAMPLE_PERIOD_S, max_sm_mhz=num(first[4]),
                        power_limit_w=num(first[3]))


def _torch_sampler(torch: Any, device: Any) -> ClockSampler | None:
    try:
        torch.cuda.clock_rate(device)
    except Exception:  # pynvml / amdsmi missing or unsupported
        return None

    def read() -> dict[str, Any]:
        out: dict[str, Any] = {"sm_mhz": float(torch.cuda.clock_rate(device))}
        for key, fn, scale in (("power_w", "power_draw", 1e-3), ("temperature_c", "temperature", 1.0)):
            try:
                out[key] = float(getattr(torch.cuda, fn)(device)) * scale  # power_draw is in mW
            except Exception:
                pass
        return out

    return ClockSampler("torch.cuda", read)


def clock_sampler(torch: Any, device: Any) -> ClockSampler | None:
    """A sampler of this GPU's clocks and power: pynvml, else nvidia-smi, else torch.cuda's readers (pynvml or
    amdsmi); None on the CPU or where none answers."""
    if device.type != "cuda":
        return None
    for make in (_nvml_sampler, _smi_sampler, _torch_sampler):
        try:
            sampler = make(torch, device)
        except Exception:
            sampler = None
        if sampler is not None:
            return sampler
    return None


# -- what ran: libraries and switches ----------------------------------------------------------------------------

def _loaded_library(fragment: str) -> str | None:
    """The path of a shared library this process has loaded whose name contains ``fragment`` (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip().split(" ")[-1]
                if fragment in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


def _cublaslt_version() -> str | None:
    path = _loaded_library("libcublasLt.so")
    if path is None:
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(path).cublasLtGetVersion
        fn.restype = ctypes.c_size_t
        v = int(fn())
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"  # 120804 → 12.8.4 (CUBLAS_VERSION encoding)
    except Exception:
        return os.path.basename(path)


def library_versions(torch: Any, device: Any) -> dict[str, str]:
    """cuBLASLt / hipBLASLt, cuDNN and NCCL as this process loaded them (GPU only; empty on the CPU)."""
    if device.type != "cuda":
        return {}
    out: dict[str, str] = {}
    if torch.version.hip:
        path = _loaded_library("libhipblaslt")
        if path:
            out["hipBLASLt"] = os.path.basename(path)
    else:
        v = _cublaslt_version()
        if v:
            out["cuBLASLt"] = v
    try:
        cudnn = torch.backends.cudnn.version()
        if cudnn:
            out["cuDNN"] = str(cudnn)
    except Exception:
        pass
    try:
        v = torch.cuda.nccl.version()
        out["NCCL"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
    return out


def matmul_flags(torch: Any, device: Any) -> dict[str, str]:
    """torch's matmul precision switches as they are now (read inside the timed run) and the kernel-changing
    environment variables that are set (GPU only)."""
    if device.type != "cuda":
        return {}
    m = torch.backends.cuda.matmul
    out: dict[str, str] = {}
    for name in ("allow_tf32", "fp32_precision", "allow_bf16_reduced_precision_reduction",
                 "allow_fp16_reduced_precision_reduction"):
        try:
            value = getattr(m, name)
        except (AttributeError, RuntimeError):  # absent in this torch, or the two TF32 settings disagree
            continue
        out[name] = str(value)
    for var in KERNEL_ENV_VARS:
        if var in os.environ:
            out[var] = os.environ[var]
    return out


def clear_blas_workspaces(torch: Any) -> bool:
    """Free cuBLAS/cuBLASLt's per-stream workspaces (torch._C._cuda_clearCublasWorkspaces); False where absent."""
    fn = getattr(getattr(torch, "_C", None), "_cuda_clearCublasWorkspaces", None)
    if fn is None:
        return False
    fn()
    return True


def _smi_select(torch: Any, device: Any) -> str:
    props = torch.cuda.get_device_properties(device)
    # torch's index and nvidia-smi's differ under CUDA_VISIBLE_DEVICES: select by UUID where torch gives one.
    uuid = str(getattr(props, "uuid", "") or "")
    return (uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}") if uuid else str(device.index or 0)


def environment(torch: Any, device: Any, *, hardware: str | None = None, dtype: DType | None = None,
                shapes: list[str] | None = None, clocks: GpuClocks | None = None,
                flags: dict[str, str] | None = None) -> BenchEnvironment:
    fields: dict[str, Any] = {}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        arch = rocm_arch(torch, device)
        fields = dict(
            compute_capability=arch or f"{props.major}.{props.minor}",
            multiprocessors=getattr(props, "multi_processor_count", None),
            l2_cache_bytes=l2_cache_bytes(torch, device),
            device_memory_bytes=float(props.total_memory),
            libraries=library_versions(torch, device),
            matmul_flags=flags if flags is not None else matmul_flags(torch, device),
        )
    return BenchEnvironment(
        device=str(device), device_name=device_name(torch, device), hardware=hardware,
        torch_version=str(torch.__version__), cuda_version=torch.version.cuda, hip_version=torch.version.hip,
        cpu_threads=torch.get_num_threads(), python_version=platform.python_version(),
        platform=f"{sys.platform} {platform.machine()}", clocks=clocks, dtype=dtype, shapes=shapes or [], **fields,
    )

