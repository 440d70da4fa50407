"""MFU and HFU from an observed training throughput (PaLM App. B; Korthikanti et al. 2022 §6).

Three questions, one function:

- a throughput (tokens/s, or a step time) of an architecture → MFU with exact model FLOPs per token;
- a throughput with only a parameter count N (no architecture) → MFU with 6N FLOPs per token;
- a quoted model TFLOP/s per GPU → MFU against the dense peak, and tokens/s when the model or N is known.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from napkin.accounting.compute import six_nd
from napkin.accounting.flops import count_flops
from napkin.errors import InputError
from napkin.results import DEFINITION, KAPLAN, PALM, Derivation, Result, g
from napkin.specs.dtypes import DType, parse_dtype
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_optional_model
from napkin.validation import Inputs, Positive, PositiveInt, Recompute, validated

SRC_MFU = (f"{PALM}: MFU = observed tokens/s × model FLOPs per token / "
           "peak FLOP/s (dense peak; recomputation not counted)")
SRC_HFU = ("Korthikanti et al. 2022 §6 / PaLM App. B: HFU counts the FLOPs the hardware did, recomputation "
           "included (Megatron-LM, OPT and BLOOM report this)")
NARAYANAN_EQ4 = ("Narayanan et al. 2021 (Megatron-LM) eq. 4: with full recomputation a token costs 8N hardware "
                 "FLOPs (2N forward, 2N again, 4N backward)")
TERA = 1e12  # --tflops-per-gpu is quoted in TFLOP/s


class MfuInputs(Inputs):
    gpus: PositiveInt
    gpu: str
    dtype: DType = DType.bf16
    tokens_per_s: Positive | None = Field(default=None, description="observed training tokens/s, whole cluster")
    step_time_s: Positive | None = Field(default=None, description="seconds per optimizer step")
    global_batch: PositiveInt | None = Field(default=None, description="sequences per step, whole cluster")
    seq: PositiveInt | None = None
    recompute: Recompute = "none"
    causal: bool = True
    params: Positive | None = Field(default=None, description="N, for 6N FLOPs per token when no architecture is "
                                                              "given")
    tflops_per_gpu: Positive | None = Field(default=None, description="quoted model TFLOP/s per GPU, in place of a "
                                                                      "throughput")


class MfuResult(Result):
    model: str | None = Field(description="the architecture counted; None with --params (6N) or a quote alone")
    inputs: MfuInputs
    seq: int | None = Field(description="sequence length the FLOPs per token were counted at (None: not needed)")
    per: str = Field(default="token", description="token, or example for a linear net")
    tokens_per_s: float | None = Field(description="whole cluster; None when FLOPs per token are unknown")
    tokens_per_s_per_gpu: float | None
    peak_flops_per_s: float = Field(description="dense peak of the dtype, one GPU")
    model_flops_per_token: float | None = Field(description="exact: forward + backward matmuls (6N with --params)")
    hardware_flops_per_token: float | None
    six_n_flops_per_token: float | None = Field(description="6·N_active")
    palm_flops_per_token: float | None = Field(description="6·N_active + 12·L·H·Q·s (attention not halved); "
                                                           "None without an architecture")
    achieved_flops_per_s: float = Field(description="model FLOP/s of the cluster")
    mfu: float
    hfu: float
    mfu_6n: float | None = Field(description="MFU had the model FLOPs been 6N per token")
    mfu_palm: float | None = Field(description="MFU with PaLM's 6N + 12·L·H·Q·s per token")
    flops_basis: Literal["exact", "6N", "quoted"] = Field(
        default="exact", description="model FLOPs per token: exact (an architecture), 6N (--params only), or none "
                                     "needed (a quoted TFLOP/s per GPU alone)")
    params: float | None = Field(default=None, description="N_active behind 6N (None with a quote alone)")
    model_tflops_per_gpu: float = Field(default=0.0, description="achieved model TFLOP/s of one GPU")


def mfu(spec: TransformerSpec | LinearSpec | None, hardware: HardwareSpec, gpus: int | None = None, *,
        tokens_per_s: float | None = None, step_time_s: float | None = None, global_batch: int | None = None,
        seq: int | None = None, dtype: str | DType = DType.bf16, recompute: Recompute = "none", causal: bool = True,
        params: float | None = None, tflops_per_gpu: float | None = None, batch: int | None = None) -> MfuResult:
    """MFU (model FLOPs) and HFU (hardware FLOPs) against the dtype's dense peak.

    The work done is one of: `tokens_per_s` (whole cluster); `step_time_s` with `global_batch` (sequences per
    step; `batch` is its old name, still read) and `seq`; or `tflops_per_gpu`, a quoted model TFLOP/s per GPU
    (MFU = X / P).
    FLOPs per token come from `spec` (exact count; `seq` defaults to its max context; a linear net counts
    examples in place of tokens) or, with `spec=None`, from `params` as 6N. A quote needs neither for the
    MFU; with one it also gives tokens/s. `gpus` may be left out only with `tflops_per_gpu` (then 1).
    """
    spec = as_optional_model(spec, "spec")
    hardware = as_hardware(hardware, "hardware")
    if batch is not None:  # the old name of global_batch
        if global_batch is not None:
            raise InputError("give `global_batch` once (`batch` is its old name), not both")
        global_batch = batch
    if spec is not None and params is not None:
        raise InputError("`model` counts the FLOPs per token itself: leave out `params`")
    if tokens_per_s is not None and step_time_s is not None:
        raise InputError("give the throughput as `tokens_per_s`, or as `step_time_s` with `global_batch` and `seq` "
                         "(not both)")
    if tokens_per_s is not None and global_batch is not None:  # it was accepted and ignored
        raise InputError("`global_batch` turns a `step_time_s` into tokens/s; with `tokens_per_s` it is not read: "
                         "leave it out")
    throughput = tokens_per_s is not None or step_time_s is not None
    if throughput and tflops_per_gpu is not None:
        raise InputError("give a throughput (`tokens_per_s` or `step_time_s`) or `tflops_per_gpu`, not both: "
                         "either one determines the other")
    if not throughput and tflops_per_gpu is None:
        raise InputError("give the throughput as `tokens_per_s`, or as `step_time_s` with `global_batch` and `seq`, "
                         "or a quoted `tflops_per_gpu`")
    if throughput and gpus is None:
        raise InputError("`gpus` is needed: a throughput is the whole cluster's, MFU divides by G · peak")
    if throughput and spec is None and params is None:
        raise InputError("a throughput needs FLOPs per token: give `model` (counted exactly) or `params` "
                         "(6N per token)")
    if spec is None and recompute == "selective":
        raise InputError("`recompute` selective needs `model`: what it recomputes depends on the architecture "
                         "(without one, `recompute` full counts 8N hardware FLOPs per token, Narayanan et al. 2021 "
                         "eq. 4)")
    i = validated(MfuInputs, gpus=1 if gpus is None else gpus, gpu=hardware.name, dtype=parse_dtype(dtype),
                  tokens_per_s=tokens_per_s, step_time_s=step_time_s, global_batch=global_batch, seq=seq,
                  recompute=recompute, causal=causal, params=params, tflops_per_gpu=tflops_per_gpu)
    notes = []
    s = i.seq
    if isinstance(spec, LinearSpec):
        s = 1
    elif spec is not None and s is None:
        s, note = spec.default_seq()
        notes.append(note)
    d = Derivation()
    tps: float | None = None
    if i.tokens_per_s is not None:
        tps = d.given("observed throughput", "tokens/s", i.tokens_per_s, "tokens/s")
    elif i.step_time_s is not None:
        if i.global_batch is None:
            raise InputError("`step_time_s` needs `global_batch` (sequences per step, whole cluster) and `seq`")
        if i.seq is None and not isinstance(spec, LinearSpec):
            raise InputError("`step_time_s` needs `seq` (tokens per sequence) as well as `global_batch`")
        tps = d.add("observed throughput", "B · s / step time", f"{i.global_batch} × {s} / {g(i.step_time_s)}",
                    i.global_batch * (s or 1) / i.step_time_s, "tokens/s", DEFINITION)

    # FLOPs per token: the architecture's exact count, else 6N, else none (a quoted FLOP/s needs none).
    per_what = "token"
    model_tok = hw_tok = six_tok = palm_tok = n = None
    basis: Literal["exact", "6N", "quoted"] = "quoted"
    if spec is not None:
        basis = "exact"
        per = count_flops(spec, 1.0, s or 1, causal=i.causal, recompute=i.recompute)
        per_what, n = per.per, float(per.active_params)
        model_tok = d.add("model FLOPs per token", "exact forward + backward", g(per.model_flops), per.model_flops,
                          "FLOP", "napkin flops (count_flops)")
        hw_tok = d.add("hardware FLOPs per token", "model + recompute",
                       f"{g(per.model_flops)} + {g(per.recompute_flops)}", per.hardware_flops, "FLOP",
                       "napkin flops (count_flops)")
        six_tok = d.add("6N per token", "6 · N_active", f"6 × {g(per.active_params)}", per.six_n_active_d, "FLOP",
                        KAPLAN)
        palm_tok = d.add("6N + attention per token", "6·N_active + 6·L·a·(d_qk + d_v)·s", g(per.palm_flops),
                         per.palm_flops, "FLOP", PALM)
    elif i.params is not None:
        basis = "6N"
        n = d.given("parameters N", "N", i.params, "params")
        # Kaplan et al. 2020 §2.1: C ≈ 6N per token (2N forward + 4N backward), no architecture needed.
        six_tok = d.add("model FLOPs per token (6N, no architecture)", "6 · N", f"6 × {g(n)}", six_nd(n, 1), "FLOP",
                        KAPLAN)
        model_tok = hw_tok = six_tok
        if i.recompute == "full":  # one more forward of every layer: 2N more hardware FLOPs per token
            hw_tok = d.add("hardware FLOPs per token (full recomputation)", "8 · N", f"8 × {g(n)}", 8 * n, "FLOP",
                           NARAYANAN_EQ4)
        s = i.seq if i.step_time_s is not None else None
        notes.append("no --model: FLOPs per token are 6N (2N forward + 4N backward), which leaves out attention's "
                     "sequence-length term; --model NAME counts the architecture exactly.")

    peak = d.given(f"{hardware.display_name} dense {i.dtype.value} peak", "P", hardware.peak(i.dtype, False),
                   "FLOP/s", f"{hardware.name}: {hardware.sources[0]}")
    cluster = d.add("cluster peak", "G · P", f"{i.gpus} × {g(peak)}", i.gpus * peak, "FLOP/s", DEFINITION)
    m6 = mp = None
    if tps is not None:
        assert model_tok is not None and hw_tok is not None and six_tok is not None  # a throughput needs them
        achieved = d.add("achieved model FLOP/s", "tokens/s · model FLOPs per token", f"{g(tps)} × {g(model_tok)}",
                         tps * model_tok, "FLOP/s", SRC_MFU)
        m = d.add("MFU", "tokens/s · model FLOPs per token / (G · P)", f"{g(achieved)} / {g(cluster)}",
                  achieved / cluster, "fraction", SRC_MFU)
        h = d.add("HFU", "tokens/s · hardware FLOPs per token / (G · P)", f"{g(tps)} × {g(hw_tok)} / {g(cluster)}",
                  tps * hw_tok / cluster, "fraction", SRC_HFU)
    else:
        x = d.given("quoted model FLOP/s per GPU", "X", (i.tflops_per_gpu or 0) * TERA, "FLOP/s",
                    "input (--tflops-per-gpu, TFLOP/s × 1e12)")
        achieved = d.add("achieved model FLOP/s", "G · X", f"{i.gpus} × {g(x)}", i.gpus * x, "FLOP/s", DEFINITION)
        # PaLM App. B: MFU = achieved model FLOP/s / peak FLOP/s; per GPU, X / P.
        m = d.add("MFU", "X / P", f"{g(x)} / {g(peak)}", x / peak, "fraction", SRC_MFU)
        h = m
        if model_tok is not None and hw_tok is not None:
            # The same identity read the other way: tokens/s = achieved model FLOP/s / model FLOPs per token.
            tps = d.add("training throughput", "G · X / model FLOPs per token", f"{g(achieved)} / {g(model_tok)}",
                        achieved / model_tok, "tokens/s", SRC_MFU)
            if i.recompute != "none":
                h = d.add("HFU", "tokens/s · hardware FLOPs per token / (G · P)",
                          f"{g(tps)} × {g(hw_tok)} / {g(cluster)}", tps * hw_tok / cluster, "fraction", SRC_HFU)
        elif i.recompute == "full":  # no FLOPs per token, but their ratio: 8N hardware per 6N model
            h = d.add("HFU", "MFU · 8 / 6 (full recomputation)", f"{g(m)} × 8 / 6", m * 8 / 6, "fraction",
                      NARAYANAN_EQ4)
        notes.append("--tflops-per-gpu is read as model FLOP/s (recomputation not counted); a figure that counts "
                     "recomputation, as Megatron-LM's papers do, is an HFU."
                     + ("" if model_tok is not None else " Give --model or --params for tokens/s."))
    if tps is not None and six_tok is not None:
        if basis == "6N":
            m6 = m
        else:
            m6 = d.add("MFU with 6N", "tokens/s · 6N / (G · P)", f"{g(tps)} × {g(six_tok)} / {g(cluster)}",
                       tps * six_tok / cluster, "fraction", KAPLAN)
    if tps is not None and palm_tok is not None:
        mp = d.add("MFU with 6N + attention", "tokens/s · (6N + 6·L·a·(d_qk + d_v)·s) / (G · P)",
                   f"{g(tps)} × {g(palm_tok)} / {g(cluster)}", tps * palm_tok / cluster, "fraction", SRC_MFU)
    if h > 1:
        check = "--tokens-per-s, --gpus" if i.tflops_per_gpu is None else "--tflops-per-gpu"
        notes.append("utilization above 1: the throughput cannot be reached at this dtype's dense peak; "
                     f"check {check} and --dtype.")
    return MfuResult(model=None if spec is None else spec.name, inputs=i, seq=s, per=per_what,
                     tokens_per_s=tps, tokens_per_s_per_gpu=None if tps is None else tps / i.gpus,
                     peak_flops_per_s=peak, model_flops_per_token=model_tok, hardware_flops_per_token=hw_tok,
                     six_n_flops_per_token=six_tok, palm_flops_per_token=palm_tok, achieved_flops_per_s=achieved,
                     mfu=m, hfu=h, mfu_6n=m6, mfu_palm=mp, flops_basis=basis, params=n,
                     model_tflops_per_gpu=achieved / i.gpus / TERA, steps=d.steps, notes=notes)
