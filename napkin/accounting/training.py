"""Training compute: total FLOPs, what a cluster delivers, days, GPU-hours, cost and energy."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field

from napkin.accounting.compute import six_nd
from napkin.accounting.error_bars import ErrorBar
from napkin.results import CHINCHILLA, DEFINITION, KAPLAN, LECTURE, PALM, Derivation, Result, g
from napkin.specs.dtypes import DType, parse_dtype
from napkin.specs.hardware import HardwareSpec
from napkin.specs.resolve import as_hardware, as_optional_model
from napkin.validation import AtLeastOne, Fraction, Inputs, NonNegative, Positive, PositiveInt, Recompute, validated

if TYPE_CHECKING:  # the architecture side loads only when a model is given (keeps 6ND commands fast)
    from napkin.specs.model import LinearSpec, TransformerSpec

SECONDS_PER_DAY = 86_400  # 24 h x 3600 s
NARAYANAN_EQ4 = ("Narayanan et al. 2021 (Megatron-LM) eq. 4: with full recomputation a step costs 8ND hardware FLOPs "
                 "(2ND forward, 2ND again, 4ND backward)")
HOURS_PER_DAY = 24


class ClusterInputs(Inputs):
    gpus: PositiveInt
    gpu: str = Field(description="hardware catalog name")
    dtype: DType = DType.bf16
    mfu: Fraction = 0.5
    sparse: bool = False


def _cluster_flops_per_s(d: Derivation, hw: HardwareSpec, c: ClusterInputs, hfu: float | None = None) -> float:
    """Shared by train-time and budget: dense (or sparse) peak x GPUs x MFU (or HFU, in hardware FLOP/s)."""
    peak = hw.peak(c.dtype, c.sparse)
    kind = "sparse" if c.sparse else "dense"
    d.given(f"{hw.display_name} {kind} {c.dtype.value} peak", "P", peak, "FLOP/s", f"{hw.name}: {hw.sources[0]}",
            key="peak")
    u, name = (c.mfu, "MFU") if hfu is None else (hfu, "HFU")
    return d.add(
        "cluster throughput" + (" (hardware FLOP/s)" if hfu is not None else ""),
        f"G · P · {name}",
        f"{c.gpus} × {g(peak)} × {g(u)}",
        c.gpus * peak * u,
        "FLOP/s",
        f"definition of MFU ({PALM}): achieved = MFU × peak",
    )


def _one_gpu_flops_per_s(d: Derivation, hw: HardwareSpec, c: ClusterInputs, hfu: float | None = None) -> float:
    """A budget without a GPU count: one GPU's achieved FLOP/s, P · MFU (the GPU-hours follow; the days do not)."""
    peak = hw.peak(c.dtype, c.sparse)
    d.given(f"{hw.display_name} {'sparse' if c.sparse else 'dense'} {c.dtype.value} peak", "P", peak, "FLOP/s",
            f"{hw.name}: {hw.sources[0]}", key="peak")
    u, name = (c.mfu, "MFU") if hfu is None else (hfu, "HFU")
    return d.add("one GPU's throughput", f"P · {name}", f"{g(peak)} × {g(u)}", peak * u, "FLOP/s",
                 f"definition of MFU ({PALM}): achieved = MFU × peak")


def _check_hfu(hfu: float | None, recompute: str, has_model: bool) -> None:
    """An HFU is a throughput in hardware FLOPs: it needs the recomputation that makes them differ from model FLOPs."""
    from napkin.errors import InputError

    if hfu is None or recompute != "none":
        return
    add = "`recompute` full (or selective)" if has_model else "`recompute` full (8ND hardware FLOPs)"
    raise InputError(f"an HFU is a throughput in hardware FLOPs, which differ from model FLOPs only with "
                     f"recomputation: add {add} as the quoted run used (Megatron-LM, BLOOM and OPT quote HFU with "
                     "full recomputation), or give the figure as `mfu`")


class TrainTimeInputs(ClusterInputs):
    params: Positive | None = None
    tokens: Positive | None = None
    flops: Positive | None = None
    price_per_gpu_hour: NonNegative | None = None
    pue: AtLeastOne = 1.0
    model: str | None = Field(default=None, description="model whose exact FLOPs are counted (--model)")
    seq: PositiveInt | None = None
    recompute: Recompute = "none"
    causal: bool = Field(default=True, description="count attention over the causal half (False: the whole s×s, as "
                         "Megatron-LM, PaLM and NVIDIA quote)")
    hfu: Fraction | None = Field(default=None, description="throughput quoted in hardware FLOPs, in place of MFU")


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
    hardware_flops: float | None = Field(default=None, description="with --model: model FLOPs + recomputation")
    six_nd: float | None = Field(default=None, description="with --model: 6·N·D with N the total parameters "
                                 "(as in napkin flops), beside the exact count")
    six_n_active_d: float | None = Field(default=None, description="with --model: 6·N_active·D (MoE: the parameters "
                                         "a token touches; = six_nd for a dense model)")
    layout: str | None = Field(default=None, description="with a layout: the layout whose predicted MFU is used")
    step_time_s: float | None = Field(default=None, description="with a layout: the predicted step (napkin step-time)")
    error_bar: ErrorBar | None = Field(default=None, description="with a layout: the step's interval from the stack's "
                                       "calibration (the training time scales with it)")


def train_time(
    hardware: HardwareSpec,
    gpus: int,
    params: float | None = None,
    tokens: float | None = None,
    *,
    flops: float | None = None,
    dtype: str | DType = DType.bf16,
    mfu: float | None = None,
    sparse: bool = False,
    price_per_gpu_hour: float | None = None,
    pue: float = 1.0,
    model: TransformerSpec | LinearSpec | None = None,
    seq: int | None = None,
    recompute: Recompute = "none",
    hfu: float | None = None,
    causal: bool = True,
) -> TrainTimeResult:
    """Wall-clock days to train: C / (G · P · MFU), with C = 6ND unless the FLOPs are given.

    With `model`, C is its exact count (napkin flops) at sequence length `seq` (default: its max context);
    `recompute` adds hardware FLOPs, and `hfu` in place of `mfu` divides those by G · P · HFU.
    Defaults reproduce CS336 lecture 2: 70B params, 15T tokens, 1024 H100s, bf16, MFU 0.5 → 143.93 days.
    """
    model = as_optional_model(model, "model")
    hardware = as_hardware(hardware, "hardware")
    from napkin.errors import InputError

    if hfu is not None and mfu is not None:
        raise InputError("give `mfu` (model FLOPs) or `hfu` (hardware FLOPs), not both")
    i = validated(
        TrainTimeInputs, gpus=gpus, gpu=hardware.name, dtype=parse_dtype(dtype), mfu=0.5 if mfu is None else mfu,
        sparse=sparse, params=params, tokens=tokens, flops=flops, price_per_gpu_hour=price_per_gpu_hour, pue=pue,
        model=None if model is None else model.name, seq=seq, recompute=recompute, hfu=hfu, causal=causal,
    )
    _check_hfu(i.hfu, i.recompute, model is not None)
    d = Derivation()
    hw_total = six = None
    six_act = None
    if model is not None:
        total, hw_total, six, six_act, note = _model_flops(d, model, i)
    elif i.recompute == "selective":
        raise InputError("`recompute` selective needs `model`: what it recomputes depends on the architecture "
                         "(with `params`, `recompute` full counts 8ND, Narayanan et al. 2021 eq. 4)")
    elif i.flops is not None:
        if i.params is not None or i.tokens is not None:
            raise InputError("give `flops` (the total) or `params` with `tokens` (C = 6ND), not both")
        total = d.given("training FLOPs (given)", "C", i.flops, "FLOP")
    elif i.params is not None and i.tokens is not None:
        N, D = i.params, i.tokens
        total = d.add("training FLOPs", "C = 6·N·D", f"6 × {g(N)} × {g(D)}", six_nd(N, D), "FLOP", KAPLAN)
        if i.recompute == "full":  # one more forward of every layer: 2ND more hardware FLOPs
            hw_total = d.add("hardware FLOPs (full recomputation)", "C_hw = 8·N·D", f"8 × {g(N)} × {g(D)}",
                             8 * N * D, "FLOP", NARAYANAN_EQ4)
    else:
        raise InputError("give `params` and `tokens` (C = 6ND), or `flops` for the total directly")
    cluster = _cluster_flops_per_s(d, hardware, i, i.hfu)
    per_day = d.add("FLOPs per day", f"G · P · {'HFU' if i.hfu else 'MFU'} · 86400 s", f"{g(cluster)} × 86400",
                    cluster * SECONDS_PER_DAY, "FLOP/day", LECTURE)
    if i.hfu is None:  # MFU is quoted in model FLOPs: divide those
        work, what = total, "C (model FLOPs)"
    else:  # HFU is quoted in hardware FLOPs: divide those (recomputation included)
        assert hw_total is not None
        work, what = hw_total, "C_hw (hardware FLOPs)"
    days = d.add("training time", f"{what} / (FLOPs per day)", f"{g(work)} / {g(per_day)}", work / per_day, "days",
                 LECTURE)
    gpu_hours = d.add("GPU-hours", "days · 24 · G", f"{g(days)} × 24 × {i.gpus}", days * HOURS_PER_DAY * i.gpus,
                      "GPU·h", DEFINITION)
    cost = energy = None
    if i.price_per_gpu_hour is not None:
        cost = d.add("cost", "GPU-hours · price", f"{g(gpu_hours)} × {g(i.price_per_gpu_hour)}",
                     gpu_hours * i.price_per_gpu_hour, "$", DEFINITION)
    # Energy at board power for the whole run: an upper-bound napkin (GPUs rarely sit at TDP).
    if hardware.tdp_w is not None:
        energy = d.add("energy", "TDP · GPU-hours · PUE / 1000",
                       f"{g(hardware.tdp_w)} W × {g(gpu_hours)} × {g(i.pue)} / 1000",
                       hardware.tdp_w * gpu_hours * i.pue / 1000, "kWh",
                       f"{hardware.name} TDP (datasheet); PUE as given")
    notes = [note] if model is not None and note else []
    if i.flops is None and model is None:
        notes.append("6ND counts the matmul FLOPs of a dense model (2ND forward + 4ND backward); "
                     "it leaves out attention's sequence-length term.")
    if energy is not None:
        notes.append("energy assumes every GPU draws its full TDP for the whole run: an upper bound.")
    else:
        notes.append(f"no energy figure: {hardware.name} has no published TDP.")
    return TrainTimeResult(
        inputs=i, total_flops=total, peak_flops_per_s=hardware.peak(i.dtype, i.sparse), cluster_flops_per_s=cluster,
        flops_per_day=per_day, time_s=days * SECONDS_PER_DAY, days=days, gpu_hours=gpu_hours, cost=cost,
        energy_kwh=energy, hardware_flops=hw_total, six_nd=six, six_n_active_d=six_act, steps=d.steps, notes=notes,
    )


def _model_flops(d: Derivation, model: TransformerSpec | LinearSpec,
                 i: TrainTimeInputs) -> tuple[float, float, float, float, str | None]:
    """Exact model and hardware FLOPs of `model` on i.tokens (napkin flops), and 6·N·D and 6·N_active·D beside."""
    from napkin.accounting.flops import count_flops
    from napkin.errors import InputError
    from napkin.specs.model import TransformerSpec

    if i.params is not None or i.flops is not None:
        raise InputError("`model` counts the FLOPs itself: leave out `params` and `flops`")
    if i.tokens is None:
        raise InputError("`model` needs `tokens` (D, the training tokens)")
    note = None
    seq = i.seq
    if seq is None and isinstance(model, TransformerSpec):
        seq, note = model.default_seq()
    fc = count_flops(model, i.tokens, seq or 1, recompute=i.recompute, causal=i.causal)
    src = f"napkin flops --model {model.name} (exact matmul count; Korthikanti et al. 2022 App. A)"
    total = d.add("training FLOPs (exact)", "forward + backward, per component", f"{fc.model_flops:.6g}",
                  fc.model_flops, "FLOP", src)
    hw = d.add("hardware FLOPs", f"model FLOPs + recompute ({i.recompute})", f"{g(total)} + {g(fc.recompute_flops)}",
               fc.hardware_flops, "FLOP", src)
    six = d.add("6ND, for comparison", "6 · N · D", f"6 × {g(fc.params)} × {g(i.tokens)}", fc.six_nd, "FLOP",
                KAPLAN)
    six_act = six
    if fc.active_params != fc.params:  # MoE: a token only touches the active parameters
        six_act = d.add("6·N_active·D, for comparison", "6 · N_active · D",
                        f"6 × {g(fc.active_params)} × {g(i.tokens)}", fc.six_n_active_d, "FLOP", KAPLAN)
    return total, hw, six, six_act, note


class BudgetInputs(ClusterInputs):
    gpus: PositiveInt | None = None  # type: ignore[assignment]  # a budget of FLOPs needs no GPU count for N and D
    days: Positive | None = Field(default=None, description="time the cluster runs (or give flops)")
    flops: Positive | None = Field(default=None, description="the compute budget C, in place of days")
    price_per_gpu_hour: NonNegative | None = None
    causal: bool = True
    mfu: Fraction = 1.0
    tokens_per_param: Positive = 20.0
    model: str | None = Field(default=None, description="model whose tokens the budget buys (--model)")
    seq: PositiveInt | None = None
    recompute: Recompute = "none"
    hfu: Fraction | None = None


class BudgetResult(Result):
    inputs: BudgetInputs
    cluster_flops_per_s: float | None = Field(description="G · P · MFU; None without a GPU count")
    gpu_flops_per_s: float | None = Field(default=None, description="without a GPU count: one GPU's P · MFU")
    total_flops: float
    optimal_params: float = Field(description="compute-optimal N for the budget (Chinchilla)")
    optimal_tokens: float = Field(description="compute-optimal D = tokens_per_param · N")
    model_flops_per_token: float | None = Field(default=None, description="with --model: exact, per token")
    model_tokens: float | None = Field(default=None, description="with --model: tokens the budget trains it on")
    days: float | None = Field(description="days the budget takes on the cluster (given, or C / FLOPs per day); "
                                           "None without a GPU count")
    gpu_hours: float
    cost: float | None = Field(default=None, description="with a price per GPU-hour")


def budget(
    hardware: HardwareSpec,
    gpus: int | None = None,
    days: float | None = None,
    *,
    flops: float | None = None,
    price_per_gpu_hour: float | None = None,
    causal: bool = True,
    dtype: str | DType = DType.bf16,
    mfu: float | None = None,
    sparse: bool = False,
    tokens_per_param: float = 20.0,
    model: TransformerSpec | LinearSpec | None = None,
    seq: int | None = None,
    recompute: Recompute = "none",
    hfu: float | None = None,
) -> BudgetResult:
    """FLOPs a cluster delivers in some days (or the days a budget of ``flops`` takes), and the compute-optimal
    N and D for that budget; the GPU-hours, and the cost at ``price_per_gpu_hour``.

    With `model`: the tokens that budget trains it on, at its exact FLOPs per token (hardware FLOPs with `hfu`).
    CS336 lecture 2: 8 H100 for a week at dense bf16 peak (MFU 1) deliver 4.7875968e21 FLOPs.
    Without ``gpus``, a budget of ``flops`` still gives N, D and the GPU-hours (C / (P · MFU)), not the days.
    """
    model = as_optional_model(model, "model")
    hardware = as_hardware(hardware, "hardware")
    from napkin.errors import InputError

    if hfu is not None and mfu is not None:
        raise InputError("give `mfu` (model FLOPs) or `hfu` (hardware FLOPs), not both")
    if model is None and recompute == "selective":
        raise InputError("`recompute` selective needs `model`: what it recomputes depends on the architecture "
                         "(with no model, `recompute` full counts 8ND, Narayanan et al. 2021 eq. 4)")
    _check_hfu(hfu, recompute, model is not None)
    if (days is None) == (flops is None):
        raise InputError("give `days` (what the cluster delivers in that time) or `flops` (the budget C: how long it "
                         "takes), one of the two")
    if gpus is None and days is not None:
        raise InputError("`days` asks what a cluster delivers in that time: give `gpus` too (or give `flops` alone "
                         "for the compute-optimal N and D)")
    i = validated(BudgetInputs, gpus=gpus, gpu=hardware.name, dtype=parse_dtype(dtype),
                  mfu=1.0 if mfu is None else mfu, sparse=sparse, days=days, flops=flops,
                  price_per_gpu_hour=price_per_gpu_hour, causal=causal, tokens_per_param=tokens_per_param,
                  model=None if model is None else model.name, seq=seq, recompute=recompute, hfu=hfu)
    d = Derivation()
    cluster = one_gpu = None
    if i.gpus is None:
        one_gpu = _one_gpu_flops_per_s(d, hardware, i, i.hfu)
    else:
        cluster = _cluster_flops_per_s(d, hardware, i, i.hfu)
    T: float | None
    if cluster is None:
        assert i.flops is not None and one_gpu is not None
        C = d.given("compute budget (given)", "C", i.flops, "FLOP")
        T = None
        gpu_hours = d.add("GPU-hours", f"C / (P · {'HFU' if i.hfu else 'MFU'} · 3600)", f"{g(C)} / ({g(one_gpu)} × "
                          "3600)", C / (one_gpu * 3600), "GPU·h", DEFINITION)
    elif i.days is not None:
        T = i.days
        C = d.add("compute budget", f"C = G · P · {'HFU' if i.hfu else 'MFU'} · T", f"{g(cluster)} × {g(T)} × 86400",
                  cluster * T * SECONDS_PER_DAY, "FLOP", LECTURE)
    else:
        assert i.flops is not None
        C = d.given("compute budget (given)", "C", i.flops, "FLOP")
        T = d.add("days to spend it", f"C / (G · P · {'HFU' if i.hfu else 'MFU'} · 86400)", f"{g(C)} / ({g(cluster)} × "
                  "86400)", C / (cluster * SECONDS_PER_DAY), "days", LECTURE)
    if T is not None:
        assert i.gpus is not None
        gpu_hours = d.add("GPU-hours", "days · 24 · G", f"{g(T)} × 24 × {i.gpus}", T * HOURS_PER_DAY * i.gpus, "GPU·h",
                          DEFINITION)
    cost = None
    if i.price_per_gpu_hour is not None:
        cost = d.add("cost", "GPU-hours · price", f"{g(gpu_hours)} × {g(i.price_per_gpu_hour)}",
                     gpu_hours * i.price_per_gpu_hour, "$", DEFINITION)
    r = i.tokens_per_param
    C_model = C
    if i.hfu is not None and model is None:  # C is in hardware FLOPs: full recomputation spends 8ND for 6ND of model
        C_model = d.add("model FLOPs in the budget", "C · 6/8 (full recomputation: 8ND hardware per 6ND model)",
                        f"{g(C)} × 6 / 8", C * 6 / 8, "FLOP", NARAYANAN_EQ4)
    elif i.hfu is not None and model is not None:
        from napkin.accounting.flops import count_flops
        from napkin.specs.model import TransformerSpec

        s_ = i.seq or (model.default_seq()[0] if isinstance(model, TransformerSpec) else 1)
        fc1 = count_flops(model, 1.0, s_, recompute=i.recompute, causal=i.causal)
        C_model = d.add("model FLOPs in the budget", "C · model / hardware FLOPs per token",
                        f"{g(C)} × {g(fc1.model_flops)} / {g(fc1.hardware_flops)}",
                        C * fc1.model_flops / fc1.hardware_flops, "FLOP", f"napkin flops --model {model.name}")
    N = d.add("compute-optimal parameters", "N = sqrt(C / (6·r)), from C = 6ND and D = r·N",
              f"sqrt({g(C_model)} / (6 × {g(r)}))", math.sqrt(C_model / (6 * r)), "params", f"{CHINCHILLA}; {KAPLAN}")
    D = d.add("compute-optimal tokens", "D = r·N", f"{g(r)} × {g(N)}", r * N, "tokens", CHINCHILLA)
    notes = ["Chinchilla's ~20 tokens/param is compute-optimal for training alone; models meant for heavy "
             "inference are often trained far longer (Llama 3 8B: ~1900 tokens/param)."]
    if (i.hfu or i.mfu) == 1.0:
        notes.append("MFU 1 is the datasheet ceiling; real runs reach 0.3-0.6 (pass --mfu).")
    per_tok = tokens = None
    if model is not None:
        from napkin.accounting.flops import count_flops
        from napkin.specs.model import TransformerSpec

        s = i.seq or (model.default_seq()[0] if isinstance(model, TransformerSpec) else 1)
        fc = count_flops(model, 1.0, s, recompute=i.recompute, causal=i.causal)
        kind = "hardware" if i.hfu else "model"
        per_tok = d.add(f"{model.name} {kind} FLOPs per token (s = {s})", "exact forward + backward"
                        + (f" + recompute ({i.recompute})" if i.hfu else ""), g(fc.hardware_flops if i.hfu else
                        fc.model_flops), fc.hardware_flops if i.hfu else fc.model_flops, "FLOP",
                        f"napkin flops --model {model.name}")
        tokens = d.add(f"tokens the budget trains {model.name} on", "C / FLOPs per token", f"{g(C)} / {g(per_tok)}",
                       C / per_tok, "tokens", LECTURE)
    if not i.causal:
        notes.append("attention counted over the whole s×s (not the causal half), as Megatron-LM, PaLM and NVIDIA "
                     "quote their FLOPs")
    if T is None:
        notes.append("no --gpus: the days depend on the cluster; the GPU-hours do not (pass --gpus for the days)")
    return BudgetResult(inputs=i, cluster_flops_per_s=cluster, gpu_flops_per_s=one_gpu, total_flops=C,
                        optimal_params=N, optimal_tokens=D, model_flops_per_token=per_tok, model_tokens=tokens, days=T,
                        gpu_hours=gpu_hours, cost=cost, steps=d.steps, notes=notes)
