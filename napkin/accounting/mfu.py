"""MFU and HFU from an observed training throughput (PaLM App. B; Korthikanti et al. 2022 §6)."""

from __future__ import annotations

from pydantic import Field

from napkin.accounting.flops import count_flops
from napkin.errors import InputError
from napkin.results import DEFINITION, KAPLAN, Derivation, Result, g
from napkin.specs.dtypes import DType, parse_dtype
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, Positive, PositiveInt, Recompute, validated

SRC_MFU = ("Chowdhery et al. 2022 (PaLM), App. B: MFU = observed tokens/s × model FLOPs per token / "
           "peak FLOP/s (dense peak; recomputation not counted)")
SRC_HFU = ("Korthikanti et al. 2022 §6 / PaLM App. B: HFU counts the FLOPs the hardware did, recomputation "
           "included (Megatron-LM, OPT and BLOOM report this)")


class MfuInputs(Inputs):
    gpus: PositiveInt
    gpu: str
    dtype: DType = DType.bf16
    tokens_per_s: Positive | None = Field(default=None, description="observed training tokens/s, whole cluster")
    step_time_s: Positive | None = Field(default=None, description="seconds per optimizer step")
    batch: PositiveInt | None = Field(default=None, description="sequences per step, whole cluster")
    seq: PositiveInt | None = None
    recompute: Recompute = "none"
    causal: bool = True


class MfuResult(Result):
    model: str
    inputs: MfuInputs
    seq: int
    per: str = Field(default="token", description="token, or example for a linear net")
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    peak_flops_per_s: float = Field(description="dense peak of the dtype, one GPU")
    model_flops_per_token: float = Field(description="exact: forward + backward matmuls")
    hardware_flops_per_token: float
    six_n_flops_per_token: float = Field(description="6·N_active")
    palm_flops_per_token: float = Field(description="6·N_active + 12·L·H·Q·s (attention not halved)")
    achieved_flops_per_s: float = Field(description="model FLOP/s of the cluster")
    mfu: float
    hfu: float
    mfu_6n: float = Field(description="MFU had the model FLOPs been 6N per token")
    mfu_palm: float = Field(description="MFU with PaLM's 6N + 12·L·H·Q·s per token")


def mfu(spec: TransformerSpec | LinearSpec, hardware: HardwareSpec, gpus: int, *, tokens_per_s: float | None = None,
        step_time_s: float | None = None, batch: int | None = None, seq: int | None = None,
        dtype: str | DType = DType.bf16, recompute: Recompute = "none", causal: bool = True) -> MfuResult:
    """MFU (model FLOPs) and HFU (hardware FLOPs) against the dtype's dense peak, from tokens/s or a step time.

    Give `tokens_per_s` (whole cluster), or `step_time_s` with `batch` (sequences per step) and `seq`.
    `seq` defaults to the model's max context. A linear net counts examples in place of tokens.
    """
    i = validated(MfuInputs, gpus=gpus, gpu=hardware.name, dtype=parse_dtype(dtype),
                  tokens_per_s=tokens_per_s, step_time_s=step_time_s, batch=batch, seq=seq, recompute=recompute,
                  causal=causal)
    if (i.tokens_per_s is None) == (i.step_time_s is None):
        raise InputError("give the throughput as --tokens-per-s, or as --step-time with --batch and --seq (not both)")
    notes = []
    s = i.seq
    if isinstance(spec, LinearSpec):
        s = 1
    elif s is None:
        s, note = spec.default_seq()
        notes.append(note)
    d = Derivation()
    if i.tokens_per_s is not None:
        tps = d.given("observed throughput", "tokens/s", i.tokens_per_s, "tokens/s")
    else:
        if i.batch is None:
            raise InputError("--step-time needs --batch (sequences per step, whole cluster) and --seq")
        if i.seq is None and not isinstance(spec, LinearSpec):
            raise InputError("--step-time needs --seq (tokens per sequence) as well as --batch")
        tps = d.add("observed throughput", "batch · seq / step time", f"{i.batch} × {s} / {g(i.step_time_s or 0)}",
                    i.batch * s / (i.step_time_s or 1), "tokens/s", DEFINITION)
    per = count_flops(spec, 1.0, s, causal=i.causal, recompute=i.recompute)
    model_tok = d.add("model FLOPs per token", "exact forward + backward", g(per.model_flops), per.model_flops, "FLOP",
                      "napkin flops (count_flops)")
    hw_tok = d.add("hardware FLOPs per token", "model + recompute", f"{g(per.model_flops)} + {g(per.recompute_flops)}",
                   per.hardware_flops, "FLOP", "napkin flops (count_flops)")
    six_tok = d.add("6N per token", "6 · N_active", f"6 × {g(per.active_params)}", per.six_n_active_d, "FLOP", KAPLAN)
    palm_tok = d.add("6N + attention per token", "6·N_active + 12·L·H·Q·s", g(per.palm_flops), per.palm_flops, "FLOP",
                     "Chowdhery et al. 2022 (PaLM), App. B")
    peak = d.given(f"{hardware.display_name} dense {i.dtype.value} peak", "P", hardware.peak(i.dtype, False),
                   "FLOP/s", f"{hardware.name}: {hardware.sources[0]}")
    cluster = d.add("cluster peak", "G · P", f"{i.gpus} × {g(peak)}", i.gpus * peak, "FLOP/s", DEFINITION)
    achieved = d.add("achieved model FLOP/s", "tokens/s · model FLOPs per token", f"{g(tps)} × {g(model_tok)}",
                     tps * model_tok, "FLOP/s", SRC_MFU)
    m = d.add("MFU", "tokens/s · model FLOPs per token / (G · P)", f"{g(achieved)} / {g(cluster)}",
              achieved / cluster, "fraction", SRC_MFU)
    h = d.add("HFU", "tokens/s · hardware FLOPs per token / (G · P)", f"{g(tps)} × {g(hw_tok)} / {g(cluster)}",
              tps * hw_tok / cluster, "fraction", SRC_HFU)
    m6 = d.add("MFU with 6N", "tokens/s · 6N / (G · P)", f"{g(tps)} × {g(six_tok)} / {g(cluster)}",
               tps * six_tok / cluster, "fraction", KAPLAN)
    mp = d.add("MFU with 6N + attention", "tokens/s · (6N + 12·L·H·Q·s) / (G · P)",
               f"{g(tps)} × {g(palm_tok)} / {g(cluster)}", tps * palm_tok / cluster, "fraction", SRC_MFU)
    if h > 1:
        notes.append("utilization above 1: the throughput cannot be reached at this dtype's dense peak; "
                     "check --tokens-per-s, --gpus and --dtype.")
    return MfuResult(model=spec.name, inputs=i, seq=s, per=per.per,
                     tokens_per_s=tps, tokens_per_s_per_gpu=tps / i.gpus, peak_flops_per_s=peak,
                     model_flops_per_token=model_tok, hardware_flops_per_token=hw_tok, six_n_flops_per_token=six_tok,
                     palm_flops_per_token=palm_tok, achieved_flops_per_s=achieved, mfu=m, hfu=h, mfu_6n=m6,
                     mfu_palm=mp, steps=d.steps, notes=notes)
