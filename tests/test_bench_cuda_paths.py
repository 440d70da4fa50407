"""The CUDA branches of the measured mode, driven on the CPU through a fake device (issue 14).

CI has no GPU, so every branch that only runs on CUDA is exercised here through a shim: ``FakeTorch`` is torch
with ``torch.cuda`` replaced by ``FakeCuda`` (device count and properties, events, synchronize, the memory
counters, clock and power readers) and tensor factories that put ``device="cuda:0"`` tensors on the CPU.
``FakeTorch._scaled_mm`` enforces CUDA's rules before calling the CPU kernel: K and N multiples of 16, A row-major
and B column-major, float32 scalar scales, and on MI300 (gfx94x) float8_e4m3fnuz operands only. Each test names
the defect of issue 14 it keeps fixed; none asserts a speed.
"""

from __future__ import annotations

import contextlib
import sys
import time
import types
import weakref
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not hasattr(torch, "_scaled_mm"):
    pytest.skip("this torch has no _scaled_mm", allow_module_level=True)

from napkin.bench import device as device_mod  # noqa: E402
from napkin.bench import matmul as matmul_mod  # noqa: E402
from napkin.bench import runtime  # noqa: E402
from napkin.bench.device import (  # noqa: E402
    BenchError,
    DeviceError,
    ShapeDoesNotFit,
    l2_flush_plan,
    last_level_cache_bytes,
    rank_device,
    summarize_clocks,
)
from napkin.bench.matmul import GemmBench, bench_matmul, sweep_matmul  # noqa: E402
from napkin.bench.models import GemmShape  # noqa: E402
from napkin.specs.dtypes import DType  # noqa: E402

H100 = dict(name="NVIDIA H100 80GB HBM3", capability=(9, 0))
MI300X = dict(name="AMD Instinct MI300X", capability=(9, 4), hip="6.2.41133", arch="gfx942:sramecc+:xnack-")
QUICK = dict(device="cuda", warmup_s=0.0, iters=3, device_warmup_s=0.0)


# -- the fake device --------------------------------------------------------------------------------------------------

class FakeEvent:
    def __init__(self, cuda: FakeCuda, enable_timing: bool = False) -> None:
        self.cuda, self.t = cuda, None

    def record(self, stream: Any = None) -> None:
        self.cuda.records += 1
        self.t = time.perf_counter()  # the shim's kernels run synchronously: host time is device time

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.t - self.t) * 1e3  # ms, as CUDA's

    def synchronize(self) -> None:
        pass


class FakeCuda:
    """torch.cuda for one (or ``count``) fake GPU(s)."""

    OutOfMemoryError = torch.OutOfMemoryError

    def __init__(self, *, name: str, capability: tuple[int, int], count: int = 1, l2: int = 2**20,
                 total: float = 80e9, free: float = 70e9, hip: str | None = None, arch: str | None = None,
                 clock_mhz: list[float] | None = None, power_mw: list[float] | None = None) -> None:
        self.name, self.capability, self.count, self.hip, self.arch = name, capability, count, hip, arch
        self.l2, self.total, self.free = l2, total, free
        self.records = self.syncs = 0
        self.clock_reads: list[tuple[int, int]] = []  # (events recorded, syncs) at each clock reading
        self._clocks = clock_mhz or [1980.0, 1755.0, 1980.0]
        self._power = power_mw or [690_000.0]
        self.on_empty_cache: Any = None
        # memory counters (validate): allocated = base + workspace while it lives; peak tracked by the test
        self.base_bytes, self.workspace_bytes, self.workspace_alive, self.peak_bytes = 1_000_000, 32 * 2**20, True, 0

    # devices
    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def current_device(self) -> int:
        return 0

    def set_device(self, d: Any) -> None:
        pass

    def get_device_name(self, d: Any = None) -> str:
        return self.name

    def get_device_capability(self, d: Any = None) -> tuple[int, int]:
        return self.capability

    def get_device_properties(self, d: Any = None) -> Any:
        return types.SimpleNamespace(name=self.name, major=self.capability[0], minor=self.capability[1],
                                     L2_cache_size=self.l2, total_memory=self.total, multi_processor_count=132,
                                     uuid="", gcnArchName=self.arch or "")

    def device(self, d: Any) -> Any:
        return contextlib.nullcontext()

    def mem_get_info(self, d: Any = None) -> tuple[float, float]:
        return self.free, self.total

    def synchronize(self, d: Any = None) -> None:
        self.syncs += 1

    def Event(self, enable_timing: bool = False) -> FakeEvent:  # noqa: N802 (torch's name)
        return FakeEvent(self, enable_timing)

    def empty_cache(self) -> None:
        if self.on_empty_cache is not None:
            self.on_empty_cache()

    # clocks and power (torch.cuda's pynvml / amdsmi readers)
    def clock_rate(self, d: Any = None) -> float:
        self.clock_reads.append((self.records, self.syncs))
        return self._clocks[(len(self.clock_reads) - 1) % len(self._clocks)]

    def power_draw(self, d: Any = None) -> float:
        return self._power[(len(self.clock_reads) - 1) % len(self._power)]

    def temperature(self, d: Any = None) -> float:
        return 61.0

    # memory
    def memory_allocated(self, d: Any = None) -> int:
        return self.base_bytes + (self.workspace_bytes if self.workspace_alive else 0)

    def reset_peak_memory_stats(self, d: Any = None) -> None:
        self.peak_bytes = self.memory_allocated()

    def max_memory_allocated(self, d: Any = None) -> int:
        return self.peak_bytes

    def clear_workspaces(self) -> None:
        self.workspace_alive = False

    nccl = types.SimpleNamespace(version=lambda: (2, 21, 5))


class FakeTorch:
    """torch, with torch.cuda faked and "cuda" tensors made on the CPU; _scaled_mm checks CUDA's rules."""

    FACTORIES = ("randn", "empty", "ones", "zeros", "randint", "tensor", "full", "rand", "arange")

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.version = types.SimpleNamespace(cuda=None if cuda.hip else "12.8", hip=cuda.hip, git_version="fake")
        self._C = types.SimpleNamespace(_cuda_clearCublasWorkspaces=cuda.clear_workspaces)
        self.mm_calls: list[dict[str, Any]] = []
        self.scaled_mm_calls: list[dict[str, Any]] = []
        self.fail_alloc: Any = None  # (shape) -> bool: raise CUDA's OOM for this allocation
        self.allocated: list[Any] = []  # weak references to the tensors made for a failing shape

        for name in self.FACTORIES:
            setattr(self, name, self._factory(getattr(torch, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def _factory(self, make: Any) -> Any:
        def factory(*args: Any, **kw: Any) -> Any:
            dev = kw.pop("device", None)
            assert dev is None or str(dev).startswith("cuda"), f"a CPU tensor made on the fake GPU: {dev}"
            if self.fail_alloc is not None and self.fail_alloc(args):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                             "capacity of 79.19 GiB of which 1.00 GiB is free.")
            t = make(*args, **kw)
            if self.fail_alloc is not None:
                self.allocated.append(weakref.ref(t))
            return t

        return factory

    def mm(self, a: Any, b: Any, *, out: Any = None) -> Any:
        self.mm_calls.append({"a": (tuple(a.shape), a.stride()), "b": (tuple(b.shape), b.stride())})
        return torch.mm(a, b, out=out)

    def _scaled_mm(self, a: Any, b: Any, scale_a: Any, scale_b: Any, bias: Any = None, scale_result: Any = None,
                   out_dtype: Any = None, use_fast_accum: bool = False, out: Any = None) -> Any:
        """CUDA's torch._scaled_mm argument rules (aten/src/ATen/native/cuda/Blas.cpp), then the CPU kernel."""
        self.scaled_mm_calls.append({"a": tuple(a.shape), "b": tuple(b.shape), "fast": use_fast_accum,
                                     "a_dtype": a.dtype, "b_strides": b.stride()})
        if a.shape[1] % 16:
            raise RuntimeError(f"Expected trailing dimension of mat1 to be divisible by 16 but got mat1 shape: "
                               f"({a.shape[0]}x{a.shape[1]}).")
        if b.shape[0] % 16 or b.shape[1] % 16:
            raise RuntimeError(f"mat2 shape ({b.shape[0]}x{b.shape[1]}) must be divisible by 16")
        if a.stride(1) != 1 or b.stride(0) != 1:
            raise RuntimeError("Only multiplication of row-major and column-major matrices is supported by cuBLASLt")
        if scale_a.dtype != torch.float32 or scale_b.dtype != torch.float32 or scale_a.numel() != 1:
            raise RuntimeError("scale_a and scale_b must be float32 scalars for tensor-wise scaling")
        fnuz = {torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}
        if self.cuda.arch and self.cuda.arch.startswith("gfx94"):
            if a.dtype not in fnuz or b.dtype not in fnuz:
                raise RuntimeError(f"Float8_e4m3fn is not supported on {self.cuda.arch}: gfx94x takes the fnuz "
                                   "types (Float8_e4m3fnuz, Float8_e5m2fnuz)")
        elif a.dtype in fnuz or b.dtype in fnuz:
            raise RuntimeError("Float8_e4m3fnuz is a ROCm type; this device takes Float8_e4m3fn")
        if out is not None and out_dtype is not None and out.dtype != out_dtype:
            raise RuntimeError("out_dtype must match output matrix type")
        if a.dtype in fnuz:  # the CPU kernel has no fnuz types: the values convert exactly (both are e4m3)
            a, b = a.float().to(torch.float8_e4m3fn), b.float().to(torch.float8_e4m3fn)
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=out_dtype, use_fast_accum=use_fast_accum, out=out)


@pytest.fixture
def fake_gpu(monkeypatch):
    """fake_gpu(**FakeCuda kwargs) -> FakeTorch, installed as the torch napkin.bench imports."""
    import shutil

    def install(**kw: Any) -> FakeTorch:
        shim = FakeTorch(FakeCuda(**kw))
        monkeypatch.setattr(runtime, "import_torch", lambda purpose="": shim)
        monkeypatch.setattr(runtime.shutil, "which", lambda name: None)  # no nvidia-smi: torch.cuda's readers
        monkeypatch.setitem(sys.modules, "pynvml", None)  # no pynvml unless a test fakes one
        monkeypatch.setattr(device_mod, "FLUSH_BYTES", 2**20)  # keep the CPU's flush buffer small
        monkeypatch.delenv("HIPBLASLT_ALLOW_TF32", raising=False)
        return shim

    assert shutil  # imported for monkeypatching runtime.shutil
    return install


# -- 1: fp8 and shapes not divisible by 16 ----------------------------------------------------------------------------

def test_the_fake_scaled_mm_refuses_what_cuda_refuses(fake_gpu):
    shim = fake_gpu(**H100)
    a = torch.randn(64, 1000).to(torch.float8_e4m3fn)
    b = torch.randn(1000, 64).to(torch.float8_e4m3fn)
    one = torch.ones((), dtype=torch.float32)
    with pytest.raises(RuntimeError, match="divisible by 16"):
        shim._scaled_mm(a, b.t().contiguous().t(), one, one, out_dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="row-major and column-major"):
        shim._scaled_mm(torch.randn(64, 64).to(torch.float8_e4m3fn), torch.randn(64, 64).to(torch.float8_e4m3fn),
                        one, one, out_dtype=torch.bfloat16)


def test_fp8_pads_k_and_n_to_16_and_says_so(fake_gpu):
    shim = fake_gpu(**H100)
    r = bench_matmul(size=100, dtype="fp8", **QUICK)  # CUDA refuses K = N = 100 (as --size 1000): padded to 112
    assert r.timing.shape == GemmShape(m=100, n=100, k=100)
    assert (r.timing.ran_as.m, r.timing.ran_as.n, r.timing.ran_as.k) == (100, 112, 112)
    assert r.timing.flops == 2 * 100**3  # the FLOPs of the shape asked: padding is waste, not work
    assert any("padded up to multiples of 16" in line and "100×112 @ 112×112" in line for line in r.method)
    assert shim.scaled_mm_calls[-1]["a"] == (100, 112) and shim.scaled_mm_calls[-1]["b"] == (112, 112)


def test_an_fp8_sweep_times_the_p_plus_minus_1_sizes_too(fake_gpu):
    fake_gpu(**H100)
    r = sweep_matmul([63, 64, 65], dtype="fp8", **QUICK)
    assert r.skipped == [] and [row.timing.shape.m for row in r.rows] == [63, 64, 65]


def _odd_spec():
    from napkin.bench.reference_specs import tiny_spec

    return tiny_spec().model_copy(update={"vocab": 1001, "name": "tiny-odd-vocab"})  # the LM head: N = 1001


def test_shapes_from_in_fp8_keeps_the_lm_head_and_the_weight_gradients(fake_gpu):
    from napkin.bench.model_gemms import bench_model_gemms, model_gemm_shapes

    fake_gpu(**H100)
    spec = _odd_spec()
    r = bench_model_gemms(spec, batch=1, seq=9, dtype="fp8", **QUICK)  # T = 9: dW has K = 9
    assert r.skipped == []
    assert len(r.rows) == len(model_gemm_shapes(spec, 1, 9))  # every GEMM, none lost
    head = [row for row in r.rows if row.label == "head"]
    assert {row.phase for row in head} == {"forward", "input grad", "weight grad"}
    assert all(row.timing.ran_as is None or row.timing.ran_as.layout == "nt" for row in r.rows)
    assert not any("could not be timed" in n for n in r.notes)


def test_a_skipped_gemm_is_named_in_the_notes_of_the_mfu(fake_gpu, monkeypatch):
    from napkin.bench.model_gemms import bench_model_gemms

    fake_gpu(**H100)
    real = GemmBench.time

    def refuse_head(self, shape):
        if shape.label and shape.label.startswith("head"):
            raise BenchError("torch refused it")
        return real(self, shape)

    monkeypatch.setattr(GemmBench, "time", refuse_head)
    r = bench_model_gemms(_odd_spec(), batch=1, seq=16, dtype="bf16", **QUICK)
    assert any("could not be timed and are left out" in n for n in r.notes)


# -- 2: fp8 on MI300 (e4m3fnuz) and tf32 on ROCm ----------------------------------------------------------------------

def test_fp8_on_mi300x_uses_e4m3fnuz(fake_gpu):
    shim = fake_gpu(**MI300X)
    r = bench_matmul(size=64, dtype="fp8", **QUICK)
    assert r.timing.flops_per_s > 0 and r.peak.hardware == "mi300x"
    assert shim.scaled_mm_calls[-1]["a_dtype"] == torch.float8_e4m3fnuz
    assert "float8_e4m3fnuz" in r.method[0]


def test_tf32_on_rocm_needs_hipblaslt_allow_tf32(fake_gpu, monkeypatch):
    fake_gpu(**MI300X)
    with pytest.raises(BenchError, match="HIPBLASLT_ALLOW_TF32=1"):
        GemmBench("tf32", "cuda")
    monkeypatch.setenv("HIPBLASLT_ALLOW_TF32", "1")
    r = bench_matmul(size=32, dtype="tf32", **QUICK)
    assert r.timing.dtype is DType.tf32 and r.environment.matmul_flags["HIPBLASLT_ALLOW_TF32"] == "1"


def test_tf32_on_nvidia_needs_nothing(fake_gpu):
    fake_gpu(**H100)
    assert bench_matmul(size=32, dtype="tf32", **QUICK).environment.matmul_flags["allow_tf32"] == "True"


# -- 3: validate's peak memory ----------------------------------------------------------------------------------------

@pytest.mark.slow  # a full validate step on the fake device: a second or more
def test_validate_separates_the_cublas_workspace_from_the_peak_rise(fake_gpu, monkeypatch):
    from napkin.bench import reference, validate

    shim = fake_gpu(**H100)
    cuda = shim.cuda
    rise = 123_456

    for name in ("build_model", "build_linear"):  # the reference models are built on the CPU
        real = getattr(reference, name)
        monkeypatch.setattr(reference, name,
                            lambda spec, dev, dtype, *a, _r=real, **kw: _r(spec, "cpu", dtype, *a, **kw))
    step = validate._Step.step

    def step_that_allocates(self):
        step(self)
        cuda.workspace_alive = True  # cuBLAS makes its workspace again at the first matmul
        cuda.peak_bytes = max(cuda.peak_bytes, cuda.memory_allocated() + rise)

    monkeypatch.setattr(validate._Step, "step", step_that_allocates)
    r = validate.validate_step(device="cuda", warmup_s=0.0, iters=2)
    assert r.passed
    tiny = r.models[-1]
    rows = {row.quantity: row for row in tiny.rows}
    assert rows["cuBLAS workspace"].measured == cuda.workspace_bytes and rows["cuBLAS workspace"].predicted is None
    assert rows["allocated between steps"].measured == cuda.base_bytes  # the workspace is not counted as model
    assert rows["peak rise during a step"].measured == rise  # the rise above the baseline, not the raw peak
    assert tiny.peak_rise_bytes == rise and tiny.blas_workspace_bytes == cuda.workspace_bytes
    assert tiny.peak_allocated_bytes == cuda.base_bytes + cuda.workspace_bytes + rise
    assert "peak allocated during a step" not in rows
    assert any("cuBLAS workspace measured by clearing it" in line for line in r.method)


# -- 4: clocks and power sampled during the timed calls ---------------------------------------------------------------

def test_clocks_are_sampled_while_the_timed_calls_run(fake_gpu):
    shim = fake_gpu(**H100, clock_mhz=[1980.0, 1755.0, 1830.0])
    bench = GemmBench("bf16", "cuda", warmup_s=0.0, iters=5, device_warmup_s=0.0)
    syncs_before = shim.cuda.syncs
    t = bench.time((64, 64, 64))
    c = t.stats.clocks
    assert c is not None and c.samples >= 1 and c.source == "torch.cuda"
    # at least one reading came after every event was recorded and before the loop's final synchronize
    assert any(rec >= 10 and syncs < shim.cuda.syncs and syncs > syncs_before for rec, syncs in shim.cuda.clock_reads)
    assert c.sm_mhz_min <= c.sm_mhz_median <= c.sm_mhz_max and c.power_w_mean == pytest.approx(690.0)
    assert any("read every" in line and "while the timed calls run" in line for line in bench.method(t))


def _fake_pynvml(reasons: int) -> Any:
    m = types.SimpleNamespace(NVML_CLOCK_SM=1)
    m.nvmlInit = lambda: None
    m.nvmlDeviceGetHandleByIndex = lambda i: "h"
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1650
    m.nvmlDeviceGetPowerUsage = lambda h: 699_000  # mW
    m.nvmlDeviceGetTemperature = lambda h, sensor: 71
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: reasons
    m.nvmlDeviceGetMaxClockInfo = lambda h, kind: 1980
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    return m


def test_a_power_capped_gpu_is_reported_as_such(fake_gpu, monkeypatch):
    fake_gpu(**H100)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(0x4))  # nvmlClocksEventReasonSwPowerCap
    r = bench_matmul(size=64, dtype="bf16", **QUICK)
    c = r.timing.stats.clocks
    assert c.source == "nvml" and c.capped == "power" and c.reasons == ["power cap (software)"]
    assert (c.sm_mhz_median, c.max_sm_mhz, c.power_limit_w) == (1650, 1980, 700)
    from napkin.render import bench as render_bench

    assert "power-capped" in render_bench.during(c)


def test_clock_summary_infers_capping_from_the_power_draw_without_reason_bits():
    samples = [{"sm_mhz": 1700, "power_w": 695.0}, {"sm_mhz": 1800, "power_w": 699.0}]
    capped = summarize_clocks("nvidia-smi", samples, period_s=0.2, power_limit_w=700.0)
    assert capped.capped == "power" and capped.sm_mhz_median == 1750
    cool = summarize_clocks("nvidia-smi", [{"sm_mhz": 1980, "power_w": 400.0, "reasons": 0}], period_s=0.2,
                            power_limit_w=700.0)
    assert cool.capped is None and cool.reasons == []
    hot = summarize_clocks("nvml", [{"sm_mhz": 1500, "reasons": 0x20 | 0x4}], period_s=0.02)
    assert hot.capped == "power and thermal"


# -- 5: one device warm-up, burst vs sustained -------------------------------------------------------------------------

def test_the_device_is_warmed_once_and_figures_say_burst_or_sustained(fake_gpu, monkeypatch):
    shim = fake_gpu(**H100)
    monkeypatch.setattr(matmul_mod, "DEFAULT_SIZE", {"cuda": 64, "cpu": 64})  # the warm-up GEMM, small on the CPU
    monkeypatch.setattr(device_mod, "SUSTAINED_AFTER_S", 0.15)
    r = sweep_matmul([16, 24, 32], dtype="bf16", device="cuda", warmup_s=0.0, iters=3, device_warmup_s=0.2)
    warm_calls = [c for c in shim.mm_calls if c["a"][0][0] == 64]
    assert warm_calls and len({id(c) for c in warm_calls}) == len(warm_calls)
    assert all(c["a"][0][0] in (16, 24, 32) for c in shim.mm_calls[len(warm_calls):])  # warmed once, first
    assert [row.timing.regime for row in r.rows] == ["sustained"] * 3
    assert all(row.timing.busy_before_s >= 0.2 for row in r.rows)
    assert any(line.startswith("device warm-up:") and "once, before the first shape" in line for line in r.method)
    cold = bench_matmul(size=16, dtype="bf16", **QUICK)
    assert cold.timing.regime == "burst" and any("no device warm-up" in line for line in cold.method)


def test_the_default_device_warmup_is_30_s_on_a_gpu_and_none_on_the_cpu():
    assert matmul_mod.DEFAULT_DEVICE_WARMUP_S == {"cuda": 30.0, "cpu": 0.0}
    assert device_mod.SUSTAINED_AFTER_S == 30.0


# -- 6: after an OOM the operands are gone before the cache is emptied -------------------------------------------------

def test_out_of_memory_frees_the_operands_before_emptying_the_cache(fake_gpu):
    shim = fake_gpu(**H100)
    alive_at_empty_cache: list[list[bool]] = []
    shim.cuda.on_empty_cache = lambda: alive_at_empty_cache.append([w() is not None for w in shim.allocated])
    bench = GemmBench("bf16", "cuda", warmup_s=0.0, iters=2, device_warmup_s=0.0)
    shim.fail_alloc = lambda shape: tuple(shape) == (300, 400)  # A and B are made; C runs out of memory
    with pytest.raises(ShapeDoesNotFit, match="out of memory") as e:
        bench.time((300, 400, 200))
    assert e.value.__context__ is None and e.value.__traceback__ is not None
    assert len(shim.allocated) == 2 and alive_at_empty_cache and not any(alive_at_empty_cache[-1])
    shim.fail_alloc = None
    assert bench.time((32, 32, 32)).flops_per_s > 0  # the next shape runs


# -- 7: the cache flush ------------------------------------------------------------------------------------------------

def test_a_skinny_a_and_b_beside_a_big_c_are_flushed(fake_gpu):
    fake_gpu(**H100, l2=4 * 2**20)
    t = GemmBench("bf16", "cuda", warmup_s=0.0, iters=2, device_warmup_s=0.0).time((2048, 2048, 16))
    assert t.operand_bytes > 2 * 4 * 2**20  # A+B+C over twice L2: the old rule never flushed this
    assert t.l2_flush


def test_on_rocm_the_flush_covers_the_infinity_cache(fake_gpu):
    assert last_level_cache_bytes("gfx942:sramecc+:xnack-") == 256 * 2**20
    assert last_level_cache_bytes(None) == 0
    assert l2_flush_plan("cuda", 4 * 2**20, last_level_cache_bytes("gfx942")) == (True, 2 * (4 + 256) * 2**20)
    fake_gpu(**MI300X, l2=4 * 2**20)
    bench = GemmBench("bf16", "cuda", warmup_s=0.0, iters=2, device_warmup_s=0.0)
    assert "Infinity Cache" in bench._flush_line() and "520.00 MiB" in bench._flush_line()


# -- 8: bench-allreduce's devices and host-bound sizes -----------------------------------------------------------------

def test_each_rank_takes_its_own_gpu_and_too_many_ranks_fail_on_every_rank():
    assert [rank_device("auto", r, 4, True, 4) for r in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    for r in range(8):  # every rank of the node fails the same way, none is left waiting in rendezvous
        with pytest.raises(DeviceError, match="8 ranks on this node but only 4 GPU"):
            rank_device("auto", r, 8, True, 4)
    with pytest.raises(DeviceError, match="all 2 ranks of this node on one GPU"):
        rank_device("cuda:0", 1, 2, True, 8)
    assert rank_device("auto", 1, 2, False, 0) == "cpu"
    assert rank_device("cpu", 3, 4, True, 4) == "cpu"
    with pytest.raises(DeviceError, match="only 2 CUDA device"):
        device_mod.resolve_device("auto", True, 2, current=2)


class _FakeDist:
    class ReduceOp:
        MAX = "max"

    def __init__(self, host_s: float) -> None:
        self.host_s = host_s

    def all_reduce(self, x: Any, op: Any = None) -> None:
        if self.host_s:
            time.sleep(self.host_s)

    def barrier(self) -> None:
        pass


# 20 ms a call: jitter stays small
@pytest.mark.parametrize(("host_s", "gpu_s", "bound"), [(0.02, 0.0, True), (0.0, 0.05, False)])
def test_sizes_whose_time_is_launch_overhead_are_flagged(fake_gpu, host_s, gpu_s, bound):
    from napkin.bench.allreduce import _time_size

    shim = fake_gpu(**H100)
    row = _time_size(shim, _FakeDist(host_s), torch.device("cuda:0"), lambda: time.sleep(gpu_s), 4096, DType.fp32,
                     5, 1, 2)
    assert row.launch_s is not None and row.host_bound is bound
    cpu_row = _time_size(torch, _FakeDist(host_s), torch.device("cpu"), lambda: None, 4096, DType.fp32, 5, 1, 2)
    assert cpu_row.launch_s is None and not cpu_row.host_bound  # gloo on the CPU is synchronous


# -- 9: fp8 fast accumulation is a choice and the method says which ----------------------------------------------------

def test_fp8_fast_accum_is_off_by_default_and_can_be_asked_for(fake_gpu):
    shim = fake_gpu(**H100)
    slow = bench_matmul(size=32, dtype="fp8", **QUICK)
    assert shim.scaled_mm_calls[-1]["fast"] is False and "use_fast_accum=False" in slow.method[0]
    fast = bench_matmul(size=32, dtype="fp8", fast_accum=True, **QUICK)
    assert shim.scaled_mm_calls[-1]["fast"] is True and "use_fast_accum=True" in fast.method[0]
    assert fast.inputs.fast_accum is True
    with pytest.raises(Exception, match="needs --dtype fp8"):
        GemmBench("bf16", "cuda", fast_accum=True)


# -- 10: the method: layouts, ranges, versions and switches ------------------------------------------------------------

def test_b_is_column_major_as_nn_linear_sees_it(fake_gpu):
    shim = fake_gpu(**H100)
    r = bench_matmul(64, 32, 48, dtype="bf16", **QUICK)
    (a_shape, a_stride), (b_shape, b_stride) = shim.mm_calls[-1]["a"], shim.mm_calls[-1]["b"]
    assert (a_shape, b_shape) == ((64, 48), (48, 32))
    assert a_stride == (48, 1) and b_stride == (1, 48)  # A row-major, B = Wᵀ column-major
    assert "B column-major (X·Wᵀ" in r.method[0]


def test_backward_gemms_run_in_their_own_layouts(fake_gpu):
    from napkin.bench.model_gemms import bench_model_gemms

    shim = fake_gpu(**H100)
    r = bench_model_gemms(_odd_spec(), batch=1, seq=16, dtype="bf16", **QUICK)
    by_phase = {row.phase: row.shape.layout for row in r.rows}
    assert by_phase == {"forward": "nt", "input grad": "nn", "weight grad": "tn"}
    strides = {(c["a"][1][1] == 1, c["b"][1][1] == 1) for c in shim.mm_calls}  # (A row-major, B row-major)
    assert strides == {(True, False), (True, True), (False, True)}
    assert any("weight gradient tn" in line for line in r.method)


def test_a_sweep_walks_m_n_k_ranges_as_mamf_finder_does(cli):
    from napkin.bench.device import range_values

    assert range_values(0, 96, 32) == [32, 64] and range_values(16, 49, 16) == [16, 32, 48]
    with pytest.raises(Exception, match="STOP is exclusive"):
        range_values(64, 64, 16)
    r = cli("bench-matmul", "--device", "cpu", "--warmup-ms", "0", "--iters", "2", "--m-range", "0", "96", "32",
            "--n", "16", "--k-range", "8", "17", "8", "--json")
    assert r.exit_code == 0, r.stderr
    shapes = [(row["timing"]["shape"]["m"], row["timing"]["shape"]["n"], row["timing"]["shape"]["k"])
              for row in r.json()["rows"]]
    assert shapes == [(32, 16, 8), (32, 16, 16), (64, 16, 8), (64, 16, 16)]
    text = cli("bench-matmul", "--device", "cpu", "--warmup-ms", "0", "--iters", "2", "--m-range", "16", "33", "16")
    assert text.exit_code == 0 and "M×N×K" in text.stdout and "16×1024×1024" in text.stdout
    bad = cli("bench-matmul", "--device", "cpu", "--sizes", "16", "--m-range", "16", "33", "16")
    assert bad.exit_code == 2 and "--m-range" in bad.stderr


def test_the_environment_records_libraries_switches_and_the_power_limit(fake_gpu, monkeypatch):
    fake_gpu(**H100)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(0))
    r = bench_matmul(size=32, dtype="fp32", **QUICK)
    env = r.environment
    assert env.libraries["NCCL"] == "2.21.5"
    assert env.matmul_flags["allow_tf32"] == "False"  # read during the run: true fp32
    assert "allow_bf16_reduced_precision_reduction" in env.matmul_flags
    assert r.timing.stats.clocks.power_limit_w == 700
    text = _text(r)
    assert "libraries" in text and "NCCL 2.21.5" in text and "matmul switches" in text
    assert "clocks during timing" in text and "regime" in text


def test_the_new_catalog_entries_give_an_mfu(fake_gpu):
    for name, entry in (("NVIDIA GH200 480GB", "gh200"), ("NVIDIA H200 NVL", "h200-nvl"), ("NVIDIA H800", "h800"),
                        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb")):
        fake_gpu(name=name, capability=(9, 0))
        r = bench_matmul(size=32, dtype="bf16", **QUICK)
        assert r.peak.hardware == entry and r.mfu is not None
    fake_gpu(name="Tesla V100-SXM2-16GB", capability=(7, 0))
    r = bench_matmul(size=32, dtype="fp16", **QUICK)
    assert r.peak.hardware == "v100-sxm2-16gb" and r.mfu is not None


def test_an_mfu_above_one_is_not_reported(fake_gpu):
    fake_gpu(**H100)
    r = bench_matmul(size=32, dtype="bf16", peak=1e9, **QUICK)  # a fake 1 GFLOP/s "GPU" peak: surely exceeded
    if r.timing.flops_per_s > 1e9:
        assert r.mfu is None and any("above the dense peak" in n for n in r.notes)


def _text(result: Any) -> str:
    """What `napkin bench-matmul` prints for ``result`` (rich, no colour, wide)."""
    import io

    from rich.console import Console

    from napkin import render

    buf = io.StringIO()
    con = Console(file=buf, width=200, color_system=None)
    renderer = render._renderer(result)
    for part in renderer(result):
        con.print(part)
    return buf.getvalue()
