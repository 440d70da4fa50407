"""Result models of the measured mode. Plain pydantic: reading a saved measurement never imports torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.results import Result
from napkin.specs.dtypes import DType


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


# What a measurement reports: a saved file read back with 0, a negative number, NaN or inf here is refused by
# name (issue 25 item 6: `median_s: 0` divided by zero; a negative one planned at MFU 4.58).
Measured = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


# How A and B sit in memory, cuBLAS-style letters against row-major: N = stored as used (row-major), T = a transposed
# view (column-major). "nt" is nn.Linear's forward X·Wᵀ (B = Wᵀ, column-major), "nn" its input gradient dY·W, "tn"
# its weight gradient Xᵀ·dY (A = Xᵀ, column-major).
Layout = Literal["nt", "nn", "tn"]
LAYOUTS: dict[str, str] = {"nt": "A row-major, B column-major (X·Wᵀ, as nn.Linear's forward)",
                           "nn": "A and B row-major (dY·W, the input gradient)",
                           "tn": "A column-major, B row-major (Xᵀ·dY, the weight gradient)"}


class GemmShape(_Frozen):
    """C (M×N) = A (M×K) @ B (K×N)."""

    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    label: str | None = Field(default=None, description="what the GEMM is, e.g. 'mlp.up' (for model shapes)")
    layout: Layout = Field(default="nt", description="memory order of A and B: nt = X·Wᵀ (nn.Linear's forward), "
                                                     "nn = dY·W, tn = Xᵀ·dY")

    @property
    def flops(self) -> float:
        # M·N dot products of length K, one multiply and one add each (CS336 lecture 2: 2BDK for (B,D)@(D,K)).
        return 2.0 * self.m * self.n * self.k

    def __str__(self) -> str:
        dims = f"{self.m}³" if self.m == self.n == self.k else f"{self.m}×{self.k} @ {self.k}×{self.n}"
        return f"{self.label}: {dims}" if self.label else dims


Capped = Literal["power", "thermal", "power and thermal"]  # what held the clocks down (NVML reason bits, or draw)


class ClockSummary(_Frozen):
    """SM clock, power and temperature sampled in a thread WHILE the timed calls ran (not after them)."""

    source: str = Field(description="nvml (pynvml), nvidia-smi, or torch.cuda (pynvml / amdsmi)")
    samples: int = Field(description="readings taken during the timed calls")
    period_s: float = Field(description="time between readings")
    sm_mhz_min: float | None = None
    sm_mhz_median: float | None = None
    sm_mhz_max: float | None = None
    max_sm_mhz: float | None = Field(default=None, description="the part's maximum SM clock, where the driver says")
    power_w_mean: float | None = None
    power_w_max: float | None = None
    power_limit_w: float | None = Field(default=None, description="the enforced board power limit")
    temperature_c_max: float | None = None
    reasons: list[str] = Field(default_factory=list, description="clock-limiting reasons the driver reported during "
                                                                 "the calls (power cap, thermal slowdown...)")
    capped: Capped | None = Field(
        default=None, description="whether the GPU was held below its clocks by power or heat during the calls")


class TimingStats(_Frozen):
    """Per-call times of one timed loop, in seconds."""

    timer: Literal["cuda-events", "perf_counter"]
    iters: int = Field(gt=0, description="timed calls")
    min_s: Measured
    median_s: Measured
    max_s: Measured
    mean_s: Measured
    warmup_s: NonNegative = Field(description="wall time spent warming up before timing")
    warmup_iters: int
    clocks: ClockSummary | None = Field(default=None, description="sampled during the timed calls (GPU only)")


class GemmTiming(_Frozen):
    """One GEMM shape timed on one device: what the harness returns for any caller (sweep, model shapes)."""

    shape: GemmShape
    dtype: DType
    device: str
    flops: Measured = Field(description="2·M·N·K")
    operand_bytes: NonNegative = Field(description="bytes of A, B and C together")
    l2_flush: bool = Field(description="whether the L2 cache was flushed between timed calls")
    stats: TimingStats
    flops_per_s: Measured = Field(description="achieved, from the median time")
    best_flops_per_s: Measured = Field(description="from the fastest call")
    ran_as: GemmShape | None = Field(default=None, description="the shape and layout actually run where they differ "
                                     "from the one asked (fp8: K and N padded to 16, A row-major and B column-major); "
                                     "FLOPs and rates count the shape asked")
    busy_before_s: float | None = Field(default=None, description="seconds the GPU had been under load when the timed "
                                        "calls began (device warm-up, earlier shapes, this shape's warm-up)")
    regime: Literal["burst", "sustained"] | None = Field(
        default=None, description="sustained: timed after at least SUSTAINED_AFTER_S of load; burst: a cooler GPU "
                                  "(GPU only)")


class GpuClocks(_Frozen):
    """Clocks and power read once, after the timed loops (None where the driver would not say); the figures taken
    during the calls are each timing's ``stats.clocks``."""

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
    libraries: dict[str, str] = Field(default_factory=dict, description="GPU library versions (cuBLASLt, cuDNN, NCCL, "
                                      "hipBLASLt) as loaded by this process")
    matmul_flags: dict[str, str] = Field(default_factory=dict, description="torch's matmul precision switches during "
                                         "the timed calls (TF32, reduced-precision reductions) and the environment "
                                         "variables that change the kernels")


class PeakChoice(_Frozen):
    """Which dense peak an MFU is computed against, and why (or why there is none)."""

    hardware: str | None = None
    peak_flops_per_s: Measured | None = None
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
    mfu: Measured | None = Field(default=None, description="achieved / dense peak of the dtype")


class SweepRow(_Frozen):
    timing: GemmTiming
    mfu: Measured | None = None


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
    world_size: int = Field(gt=0)
    device: str
    device_name: str
    torch_version: str
    cuda_version: str | None = None
    nccl_version: str | None = None
    launcher: str = Field(description="torchrun (environment variables) or napkin --nproc (spawned locally)")


class AllreduceRow(_Frozen):
    size_bytes: Measured = Field(description="S: bytes of the array each rank reduces")
    count: int = Field(gt=0, description="elements")
    dtype: DType
    time_s: Measured = Field(description="mean over ranks of the per-call time")
    max_time_s: Measured = Field(description="slowest rank's per-call time")
    algbw_bytes_per_s: Measured = Field(description="S / t")
    busbw_bytes_per_s: NonNegative = Field(description="algbw · 2(n−1)/n")
    launch_s: NonNegative | None = Field(default=None, description="host time to enqueue one call (CUDA: the calls are "
                                   "asynchronous)")
    host_bound: bool = Field(default=False, description="the host took nearly all of t to enqueue the calls: the "
                             "GPU waited on Python, so t is launch overhead, not the all-reduce")


class BenchInputs(_Frozen):
    """What a benchmark was asked (the measurement itself says what ran: environment, method)."""

    dtype: str | None = Field(default=None, description="requested dtype (None: the device's default)")
    device: str = "auto"
    shapes: list[list[int]] = Field(default_factory=list, description="requested GEMM shapes as [M, N, K]")
    sizes_bytes: list[float] = Field(default_factory=list, description="requested all-reduce sizes")
    warmup_s: NonNegative | None = None
    iters: int | None = None
    target_s: float | None = None
    gpu: str | None = Field(default=None, description="hardware catalog entry given for the peak")
    peak_flops_per_s: Measured | None = Field(default=None, description="peak given in place of the catalog's")
    backend: str | None = None
    nproc: int | None = None
    fast_accum: bool | None = Field(default=None, description="fp8: torch._scaled_mm's use_fast_accum")
    device_warmup_s: float | None = Field(default=None, description="load run once before the first shape")


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
    interrupted: bool = Field(default=False, description="stopped by Ctrl-C: the rows are the sizes done so far")
