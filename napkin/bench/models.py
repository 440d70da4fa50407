"""Result models of the measured mode. Plain pydantic: reading a saved measurement never imports torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.results import Result
from napkin.specs.dtypes import DType


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class GemmShape(_Frozen):
    """C (M×N) = A (M×K) @ B (K×N)."""

    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    label: str | None = Field(default=None, description="what the GEMM is, e.g. 'mlp.up' (for model shapes)")

    @property
    def flops(self) -> float:
        # M·N dot products of length K, one multiply and one add each (CS336 lecture 2: 2BDK for (B,D)@(D,K)).
        return 2.0 * self.m * self.n * self.k

    def __str__(self) -> str:
        dims = f"{self.m}³" if self.m == self.n == self.k else f"{self.m}×{self.k} @ {self.k}×{self.n}"
        return f"{self.label}: {dims}" if self.label else dims


class TimingStats(_Frozen):
    """Per-call times of one timed loop, in seconds."""

    timer: Literal["cuda-events", "perf_counter"]
    iters: int = Field(description="timed calls")
    min_s: float
    median_s: float
    max_s: float
    mean_s: float
    warmup_s: float = Field(description="wall time spent warming up before timing")
    warmup_iters: int


class GemmTiming(_Frozen):
    """One GEMM shape timed on one device: what the harness returns for any caller (sweep, model shapes)."""

    shape: GemmShape
    dtype: DType
    device: str
    flops: float = Field(description="2·M·N·K")
    operand_bytes: float = Field(description="bytes of A, B and C together")
    l2_flush: bool = Field(description="whether the L2 cache was flushed between timed calls")
    stats: TimingStats
    flops_per_s: float = Field(description="achieved, from the median time")
    best_flops_per_s: float = Field(description="from the fastest call")


class GpuClocks(_Frozen):
    """Clocks and power read right after the timed loop (None where the driver would not say)."""

    source: str
    sm_mhz: float | None = None
    max_sm_mhz: float | None = None
    memory_mhz: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temperature_c: float | None = None
    driver_version: str | None = None


class BenchEnvironment(_Frozen):
    """The header every measurement carries, so a number can be traced to what produced it."""

    device: str = Field(description="torch device, e.g. cuda:0 or cpu")
    device_name: str
    hardware: str | None = Field(default=None, description="hardware catalog entry matched or given")
    torch_version: str
    cuda_version: str | None = None
    hip_version: str | None = None
    compute_capability: str | None = None
    multiprocessors: int | None = None
    l2_cache_bytes: int | None = None
    device_memory_bytes: float | None = None
    cpu_threads: int = Field(description="torch.get_num_threads()")
    python_version: str
    platform: str
    clocks: GpuClocks | None = None
    dtype: DType | None = None
    shapes: list[str] = Field(default_factory=list)


class PeakChoice(_Frozen):
    """Which dense peak an MFU is computed against, and why (or why there is none)."""

    hardware: str | None = None
    peak_flops_per_s: float | None = None
    source: str | None = None
    note: str | None = None


class MatmulBenchResult(Result):
    """`napkin bench-matmul`: one shape, timed; TFLOP/s and the MFU it achieves."""

    kind: Literal["bench-matmul"] = "bench-matmul"
    inputs: BenchInputs | None = Field(default=None, description="what was asked (None in files saved before "
                                       "napkin recorded it)")
    environment: BenchEnvironment
    method: list[str]
    timing: GemmTiming
    peak: PeakChoice
    mfu: float | None = Field(default=None, description="achieved / dense peak of the dtype")


class SweepRow(_Frozen):
    timing: GemmTiming
    mfu: float | None = None


class SkippedShape(_Frozen):
    shape: GemmShape
    reason: str


class MatmulSweepResult(Result):
    """`napkin bench-matmul --sweep`: many shapes, the best one and the spread."""

    kind: Literal["bench-matmul-sweep"] = "bench-matmul-sweep"
    inputs: BenchInputs | None = Field(default=None, description="what was asked (None in files saved before "
                                       "napkin recorded it)")
    environment: BenchEnvironment
    method: list[str]
    peak: PeakChoice
    rows: list[SweepRow]
    skipped: list[SkippedShape] = Field(default_factory=list)
    best: SweepRow | None = None
    spread: float | None = Field(default=None, description="best / worst achieved FLOP/s over the shapes timed")
    interrupted: bool = Field(default=False, description="stopped by Ctrl-C: the rows are those done so far")


class AllreduceEnvironment(_Frozen):
    backend: str
    world_size: int
    device: str
    device_name: str
    torch_version: str
    cuda_version: str | None = None
    nccl_version: str | None = None
    launcher: str = Field(description="torchrun (environment variables) or napkin --nproc (spawned locally)")


class AllreduceRow(_Frozen):
    size_bytes: float = Field(description="S: bytes of the array each rank reduces")
    count: int = Field(description="elements")
    dtype: DType
    time_s: float = Field(description="mean over ranks of the per-call time")
    max_time_s: float = Field(description="slowest rank's per-call time")
    algbw_bytes_per_s: float = Field(description="S / t")
    busbw_bytes_per_s: float = Field(description="algbw · 2(n−1)/n")


class BenchInputs(_Frozen):
    """What a benchmark was asked (the measurement itself says what ran: environment, method)."""

    dtype: str | None = Field(default=None, description="requested dtype (None: the device's default)")
    device: str = "auto"
    shapes: list[list[int]] = Field(default_factory=list, description="requested GEMM shapes as [M, N, K]")
    sizes_bytes: list[float] = Field(default_factory=list, description="requested all-reduce sizes")
    warmup_s: float | None = None
    iters: int | None = None
    target_s: float | None = None
    gpu: str | None = Field(default=None, description="hardware catalog entry given for the peak")
    peak_flops_per_s: float | None = Field(default=None, description="peak given in place of the catalog's")
    backend: str | None = None
    nproc: int | None = None


class AllreduceBenchResult(Result):
    """`napkin bench-allreduce`: algorithm and bus bandwidth per size, as nccl-tests defines them."""

    kind: Literal["bench-allreduce"] = "bench-allreduce"
    inputs: BenchInputs | None = Field(default=None, description="what was asked (None in files saved before "
                                       "napkin recorded it)")
    environment: AllreduceEnvironment
    method: list[str]
    iters: int
    warmup_iters: int
    rows: list[AllreduceRow]
