"""Training compute: total FLOPs, what a cluster delivers, days, GPU-hours, cost and energy."""

from __future__ import annotations

import math

from pydantic import Field

from napkin.results import CHINCHILLA, DEFINITION, KAPLAN, LECTURE, Derivation, Result, g
from napkin.specs.dtypes import DType, parse_dtype
from napkin.specs.hardware import HardwareSpec
from napkin.validation import AtLeastOne, Fraction, Inputs, NonNegative, Positive, PositiveInt, validated

SECONDS_PER_DAY = 86_400  # 24 h x 3600 s
HOURS_PER_DAY = 24


class ClusterInputs(Inputs):
    gpus: PositiveInt
    gpu: str = Field(description="hardware catalog name")
    dtype: DType = DType.bf16
    mfu: Fraction = 0.5
    sparse: bool = False


def _cluster_flops_per_s(d: Derivation, hw: HardwareSpec, c: ClusterInputs) -> float:
    """Shared by train-time and budget: dense (or sparse) peak x GPUs x MFU."""
    peak = hw.peak(c.dtype, c.sparse)
    kind = "sparse" if c.sparse else "dense"
    d.given(f"{hw.display_name} {kind} {c.dtype.value} peak", "P", peak, "FLOP/s", f"{hw.name}: {hw.sources[0]}")
    return d.add(
        "cluster throughput",
        "G · P · MFU",
        f"{c.gpus} × {g(peak)} × {g(c.mfu)}",
        c.gpus * peak * c.mfu,
        "FLOP/s",
        "definition of MFU (Chowdhery et al. 2022, PaLM, App. B): achieved = MFU × peak",
    )


class TrainTimeInputs(ClusterInputs):
    params: Positive | None = None
    tokens: Positive | None = None
    flops: Positive | None = None
    price_per_gpu_hour: NonNegative | None = None
    pue: AtLeastOne = 1.0


class TrainTimeResult(Result):
    inputs: TrainTimeInputs
    total_flops: float
    peak_flops_per_s: float = Field(description="per-GPU peak used (dense unless sparse)")
    cluster_flops_per_s: float
    flops_per_day: float
    time_s: float
    days: float
    gpu_hours: float
    cost: float | None = None
    energy_kwh: float | None = None


def train_time(
    hardware: HardwareSpec,
    gpus: int,
    params: float | None = None,
    tokens: float | None = None,
    *,
    flops: float | None = None,
    dtype: str | DType = DType.bf16,
    mfu: float = 0.5,
    sparse: bool = False,
    price_per_gpu_hour: float | None = None,
    pue: float = 1.0,
) -> TrainTimeResult:
    """Wall-clock days to train: C / (G · P · MFU), with C = 6ND unless the FLOPs are given.

    Defaults reproduce CS336 lecture 2: 70B params, 15T tokens, 1024 H100s, bf16, MFU 0.5 → 143.93 days.
    """
    from napkin.errors import InputError

    i = validated(
        TrainTimeInputs, gpus=gpus, gpu=hardware.name, dtype=parse_dtype(dtype), mfu=mfu, sparse=sparse,
        params=params, tokens=tokens, flops=flops, price_per_gpu_hour=price_per_gpu_hour, pue=pue,
    )
    d = Derivation()
    if i.flops is not None:
        total = d.given("training FLOPs (given)", "C", i.flops, "FLOP")
    elif i.params is not None and i.tokens is not None:
        N, D = i.params, i.tokens
        total = d.add("training FLOPs", "C = 6·N·D", f"6 × {g(N)} × {g(D)}", 6 * N * D, "FLOP", KAPLAN)
    else:
        raise InputError("give --params and --tokens (C = 6ND), or --flops for the total directly")
    cluster = _cluster_flops_per_s(d, hardware, i)
    per_day = d.add("FLOPs per day", "G · P · MFU · 86400 s", f"{g(cluster)} × 86400", cluster * SECONDS_PER_DAY,
                    "FLOP/day", LECTURE)
    days = d.add("training time", "C / (FLOPs per day)", f"{g(total)} / {g(per_day)}", total / per_day, "days", LECTURE)
    gpu_hours = d.add("GPU-hours", "days · 24 · G", f"{g(days)} × 24 × {i.gpus}", days * HOURS_PER_DAY * i.gpus,
                      "GPU·h", DEFINITION)
    cost = energy = None
    if i.price_per_gpu_hour is not None:
        cost = d.add("cost", "GPU-hours · price", f"{g(gpu_hours)} × {g(i.price_per_gpu_hour)}",
                     gpu_hours * i.price_per_gpu_hour, "$", DEFINITION)
    # Energy at board power for the whole run: an upper-bound napkin (GPUs rarely sit at TDP).
    energy = d.add("energy", "TDP · GPU-hours · PUE / 1000", f"{g(hardware.tdp_w)} W × {g(gpu_hours)} × {g(i.pue)} / 1000",
                   hardware.tdp_w * gpu_hours * i.pue / 1000, "kWh", f"{hardware.name} TDP (datasheet); PUE as given")
    notes = []
    if i.flops is None:
        notes.append("6ND counts the matmul FLOPs of a dense model (2ND forward + 4ND backward); "
                     "it leaves out attention's sequence-length term.")
    notes.append("energy assumes every GPU draws its full TDP for the whole run: an upper bound.")
    return TrainTimeResult(
        inputs=i, total_flops=total, peak_flops_per_s=hardware.peak(i.dtype, i.sparse), cluster_flops_per_s=cluster,
        flops_per_day=per_day, time_s=days * SECONDS_PER_DAY, days=days, gpu_hours=gpu_hours, cost=cost,
        energy_kwh=energy, steps=d.steps, notes=notes,
    )


class BudgetInputs(ClusterInputs):
    days: Positive
    mfu: Fraction = 1.0
    tokens_per_param: Positive = 20.0


class BudgetResult(Result):
    inputs: BudgetInputs
    cluster_flops_per_s: float
    total_flops: float
    optimal_params: float = Field(description="compute-optimal N for the budget (Chinchilla)")
    optimal_tokens: float = Field(description="compute-optimal D = tokens_per_param · N")


def budget(
    hardware: HardwareSpec,
    gpus: int,
    days: float,
    *,
    dtype: str | DType = DType.bf16,
    mfu: float = 1.0,
    sparse: bool = False,
    tokens_per_param: float = 20.0,
) -> BudgetResult:
    """FLOPs a cluster delivers in some days, and the compute-optimal N and D for that budget.

    CS336 lecture 2: 8 H100 for a week at dense bf16 peak (MFU 1) deliver 4.7875968e21 FLOPs.
    """
    i = validated(BudgetInputs, gpus=gpus, gpu=hardware.name, dtype=parse_dtype(dtype), mfu=mfu, sparse=sparse,
                  days=days, tokens_per_param=tokens_per_param)
    d = Derivation()
    cluster = _cluster_flops_per_s(d, hardware, i)
    C = d.add("compute budget", "C = G · P · MFU · T", f"{g(cluster)} × {g(i.days)} × 86400",
              cluster * i.days * SECONDS_PER_DAY, "FLOP", LECTURE)
    r = i.tokens_per_param
    N = d.add("compute-optimal parameters", "N = sqrt(C / (6·r)), from C = 6ND and D = r·N",
              f"sqrt({g(C)} / (6 × {g(r)}))", math.sqrt(C / (6 * r)), "params", f"{CHINCHILLA}; {KAPLAN}")
    D = d.add("compute-optimal tokens", "D = r·N", f"{g(r)} × {g(N)}", r * N, "tokens", CHINCHILLA)
    notes = ["Chinchilla's ~20 tokens/param is compute-optimal for training alone; models meant for heavy "
             "inference are often trained far longer (Llama 3 8B: ~1900 tokens/param)."]
    if i.mfu == 1.0:
        notes.append("MFU 1 is the datasheet ceiling; real runs reach 0.3-0.6 (pass --mfu).")
    return BudgetResult(inputs=i, cluster_flops_per_s=cluster, total_flops=C, optimal_params=N, optimal_tokens=D,
                        steps=d.steps, notes=notes)
