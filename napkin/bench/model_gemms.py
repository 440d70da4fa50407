"""`napkin bench-matmul --shapes-from MODEL`: time a model's own GEMMs; the FLOP-weighted MFU they can reach.

The shapes come from the layer plan (napkin.accounting.layers): the one description of the layers the parameter
and FLOP counts use. With T = B·s tokens, each weight matrix W (fan_in × fan_out) takes
part in three GEMMs per training step, each 2·T·in·out FLOPs (backward = 2 × forward, Kaplan et al. 2020):

    forward       Y  = X·W      (T × in) @ (in × out)     M = T,  N = out, K = in    layout nt
    input grad    dX = dY·Wᵀ    (T × out) @ (out × in)    M = T,  N = in,  K = out   layout nn
    weight grad   dW = Xᵀ·dY    (in × T) @ (T × out)      M = in, N = out, K = T     layout tn

The layouts are those autograd hands cuBLAS for an nn.Linear, whose weight is stored (out × in): the forward's B is
that weight transposed (column-major), the input gradient's B is the weight as stored (row-major), the weight
gradient's A is Xᵀ (column-major). fp8 (torch._scaled_mm) runs every GEMM with A row-major and B column-major, K and
N padded to 16, as fp8 recipes transpose and pad while casting; the method says so.

MoE experts each get T·top_k/E tokens (balanced routing). Each distinct shape is timed once with ``GemmBench``
(bench-matmul's method) and counted as often as it occurs (layers, experts). The model's achievable MFU is
Σ FLOPs / Σ time over every GEMM of the step, over the dense peak: the FLOP-weighted harmonic mean of the rates.
Not timed: attention's QKᵀ and ·V (batched s×s products), norms, activations; the share of napkin's model FLOPs
the timed GEMMs cover is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.layers import Linear, layer_plan
from napkin.bench.device import BenchError, ShapeDoesNotFit, choose_peak, plausible_mfu
from napkin.bench.matmul import FLOPS_SOURCE, GemmBench, Progress
from napkin.bench.models import BenchEnvironment, GemmShape, GemmTiming, Layout, Measured, PeakChoice, SkippedShape
from napkin.bench.timer import DEFAULT_TARGET_S, DEFAULT_WARMUP_S
from napkin.errors import InputError
from napkin.results import DEFINITION, KAPLAN, MFU_SOURCE, Derivation, Result, g
from napkin.specs.dtypes import DType
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, PositiveInt, validated

Phase = Literal["forward", "input grad", "weight grad"]
PHASES: tuple[Phase, ...] = ("forward", "input grad", "weight grad")
PHASE_LAYOUTS: dict[Phase, Layout] = {"forward": "nt", "input grad": "nn", "weight grad": "tn"}  # nn.Linear's
SRC_PHASES = f"{KAPLAN}: per weight matrix, forward Y = XW, backward dX = dY·Wᵀ and dW = Xᵀ·dY, 2·T·in·out FLOPs each"


class ModelGemmsInputs(Inputs):
    model: str
    batch: PositiveInt
    seq: PositiveInt
    dtype: DType


class ModelGemm(BaseModel):
    """One GEMM of the model in one phase of the step, timed (or reused from an identical shape)."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(description="which weight: attention.q, mlp.up, moe.experts.down, head...")
    phase: Phase
    shape: GemmShape
    count: int = Field(gt=0, description="times it runs per training step (layers, experts)")
    flops: Measured = Field(description="count · 2·M·N·K")
    timing: GemmTiming
    time_s: float = Field(description="count · median time")
    mfu: Measured | None = None


class ModelGemmsResult(Result):
    """`napkin bench-matmul --shapes-from MODEL`: the model's GEMMs, their TFLOP/s, the weighted MFU."""

    kind: Literal["bench-matmul-model"] = "bench-matmul-model"
    inputs: ModelGemmsInputs
    environment: BenchEnvironment
    method: list[str]
    peak: PeakChoice
    tokens: int = Field(description="T = B·s, the M of the activation-side GEMMs")
    rows: list[ModelGemm]
    skipped: list[SkippedShape] = Field(default_factory=list)
    gemm_flops: Measured = Field(description="Σ FLOPs of the timed GEMMs in one step")
    gemm_time_s: Measured = Field(description="Σ count · median time: the step's GEMM time")
    flops_per_s: Measured = Field(description="gemm_flops / gemm_time_s")
    mfu: Measured | None = Field(default=None, description="flops_per_s / dense peak: the achievable MFU")
    model_flops: Measured = Field(description="napkin's model FLOPs of the step (count_flops, causal)")
    coverage: float = Field(description="gemm_flops / model_flops")


def _weights(spec: TransformerSpec) -> list[tuple[str, Linear, float, int]]:
    """(label, weight matrix, share of the T tokens it sees, occurrences per step) for every weight GEMM."""
    out = []
    for kind in layer_plan(spec).kinds:
        for gm in kind.gemms:
            label = gm.name
            if label.startswith("ffn."):
                label = label.replace("ffn.", "moe." if kind.moe else "mlp.", 1)
            share = gm.active / gm.copies  # routed experts: balanced, T·top_k/E tokens each
            out.append((label, gm.linear, share, kind.count * gm.copies))
    out.append(("head", layer_plan(spec).head.linear, 1.0, 1))  # LM head h×V, tied or not
    return out


def model_gemm_shapes(spec: TransformerSpec, batch: int, seq: int) -> list[tuple[str, Phase, GemmShape, int]]:
    """(label, phase, shape, count) of every weight GEMM in one training step of ``batch`` × ``seq`` tokens."""
    T = batch * seq
    rows = []
    for label, lin, share, count in _weights(spec):
        t = T if share == 1.0 else max(1, math.ceil(T * share))
        i, o = lin.fan_in, lin.fan_out
        for phase, (m, n, k) in zip(PHASES, ((t, o, i), (t, i, o), (i, o, t)), strict=True):
            rows.append((label, phase, GemmShape(m=m, n=n, k=k, label=f"{label} {phase}",
                                                 layout=PHASE_LAYOUTS[phase]), count))
    return rows


def bench_model_gemms(model: str | TransformerSpec, *, batch: int = 1, seq: int | None = None,
                      dtype: str | DType | None = None, device: str = "auto", warmup_s: float = DEFAULT_WARMUP_S,
                      iters: int | None = None, target_s: float = DEFAULT_TARGET_S, gpu: str | None = None,
                      peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None,
                      progress: Progress | None = None, fast_accum: bool = False,
                      device_warmup_s: float | None = None) -> ModelGemmsResult:
    """Time every distinct weight GEMM of ``model`` at ``batch`` × ``seq`` tokens; the FLOP-weighted MFU."""
    from napkin.accounting.flops import count_flops

    spec = model
    if isinstance(model, str):
        from napkin.specs.catalog import get_model

        spec = get_model(model, specs_dirs)
    if isinstance(spec, LinearSpec):
        raise InputError(f"--shapes-from needs a transformer; '{spec.name}' is a linear net: time its matmul with "
                         f"--m B --k {spec.d_model} --n {spec.d_model}")
    assert isinstance(spec, TransformerSpec)
    notes: list[str] = []
    if seq is None:
        seq, note = spec.default_seq()  # the pre-training length, as every other command defaults to
        notes.append(note)
    bench = GemmBench(dtype, device, warmup_s=warmup_s, iters=iters, target_s=target_s, fast_accum=fast_accum,
                      device_warmup_s=device_warmup_s)
    i = validated(ModelGemmsInputs, model=spec.name, batch=batch, seq=seq, dtype=bench.dtype)
    choice = choose_peak(bench.dtype, bench.device.type, bench.device_name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    P = choice.peak_flops_per_s
    wanted = model_gemm_shapes(spec, i.batch, i.seq)

    def key(s: GemmShape) -> tuple[int, int, int, str]:  # what runs: fp8 pads and fixes the layout
        r = bench.run_shape(s)
        return (s.m, s.n, s.k, r.layout)

    distinct = list(dict.fromkeys(key(s) for _, _, s, _ in wanted))
    timed: dict[tuple[int, int, int, str], GemmTiming] = {}
    skipped: list[SkippedShape] = []
    for n, want in enumerate(distinct):
        shape = next(s for _, _, s, _ in wanted if key(s) == want)
        if progress is not None:
            progress(n, len(distinct), shape)
        try:
            timed[want] = bench.time(shape)
        except (ShapeDoesNotFit, BenchError) as e:
            skipped.append(SkippedShape(shape=shape, reason=str(e)))
    if progress is not None:
        progress(len(distinct), len(distinct), None)
    rows = []
    untimed_flops = 0.0
    implausible: list[str] = []
    for label, phase, shape, count in wanted:
        timing = timed.get(key(shape))
        if timing is None:
            untimed_flops += count * shape.flops
            continue
        mfu_row, why = plausible_mfu(timing.flops_per_s, choice)
        if why and not implausible:
            implausible.append(why)
        rows.append(ModelGemm(label=label, phase=phase, shape=shape, count=count, flops=count * shape.flops,
                              timing=timing, time_s=count * timing.stats.median_s, mfu=mfu_row))
    if not rows:
        raise BenchError(f"no GEMM of {spec.name} could be timed: {skipped[0].reason if skipped else 'none found'}")
    d = Derivation()
    T = d.add("tokens per step", "T = B·s", f"{i.batch} × {i.seq}", i.batch * i.seq, "tokens", DEFINITION)
    F = d.add("FLOPs of the timed GEMMs per step", "Σ count · 2·M·N·K",
              f"{len(rows)} GEMMs ({len(timed)} distinct shapes)", sum(r.flops for r in rows), "FLOP",
              f"{FLOPS_SOURCE}; {SRC_PHASES}")
    t = d.add("their time per step", "Σ count · t_median", f"{len(rows)} GEMMs", sum(r.time_s for r in rows), "s",
              "measured: median per shape (bench-matmul's harness)")
    rate = d.add("achieved FLOP/s over the model's GEMMs", "Σ FLOPs / Σ time", f"{g(F)} / {g(t)}", F / t, "FLOP/s",
                 "FLOP-weighted harmonic mean of the per-GEMM rates")
    mfu = None
    if P is not None and rate <= P:
        Pk = d.given(f"dense {bench.dtype.value} peak", "P", P, "FLOP/s", choice.source or "")
        mfu = d.add("achievable MFU for this model", "achieved / P", f"{g(rate)} / {g(Pk)}", rate / Pk, "fraction",
                    MFU_SOURCE)
    elif P is not None:
        implausible = implausible or [plausible_mfu(rate, choice)[1] or ""]
    model_flops = count_flops(spec, T, i.seq, causal=True).model_flops
    M = d.given("model FLOPs per step (napkin, causal)", "C", model_flops, "FLOP",
                "napkin.accounting.flops.count_flops")
    cov = d.add("share of the model FLOPs timed", "Σ FLOPs / C", f"{g(F)} / {g(M)}", F / M, "fraction",
                "the rest: attention's QKᵀ and ·V (batched GEMMs) and any rounding of expert tokens")
    if choice.note:
        notes.append(choice.note)
    notes += implausible + bench.notes
    notes += [f"skipped: {s.reason}" for s in skipped]
    if skipped:
        share = untimed_flops / (untimed_flops + F)
        notes.append(f"the achieved rate and MFU cover the GEMMs that ran: {len(skipped)} distinct shape(s), "
                     f"{share:.1%} of the GEMM FLOPs, could not be timed and are left out")
    if spec.moe is not None:
        notes.append("MoE: each routed expert's GEMMs are timed at T·top_k/E tokens (balanced routing); real routing "
                     "is uneven, and grouped-GEMM kernels differ from one GEMM per expert.")
    layouts = ("all with A row-major and B column-major, as torch._scaled_mm requires (fp8 recipes transpose while "
               "casting)" if bench.dtype is DType.fp8 else
               "in the layouts autograd gives cuBLAS for nn.Linear: forward nt (B = Wᵀ column-major), input "
               "gradient nn (W as stored), weight gradient tn (A = Xᵀ column-major)")
    method = bench.method() + [
        "shapes: every weight matrix of the model (napkin.accounting.layers: the layer plan; LM head h×V) in its "
        "forward (Y = X·W), input-gradient (dX = dY·Wᵀ) and weight-gradient (dW = Xᵀ·dY) GEMMs; Q, K and V "
        f"unfused, as the plan lists them; {layouts}",
        "each distinct shape timed once; the model's rate = Σ FLOPs / Σ count·t_median over every GEMM of a step",
    ]
    env = bench.environment(choice.hardware, [r.shape for r in rows if r.phase == "forward"])
    return ModelGemmsResult(inputs=i, environment=env, method=method, peak=choice, tokens=int(T), rows=rows,
                            skipped=skipped, gemm_flops=F, gemm_time_s=t, flops_per_s=rate, mfu=mfu,
                            model_flops=model_flops, coverage=cov, steps=d.steps, notes=notes)
