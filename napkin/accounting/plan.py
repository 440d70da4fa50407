"""`napkin plan`: search every layout that fits, rank by predicted step time, explain the winner.

The search enumerates TP (dividing the heads and the KV heads, inside a node unless --max-tp allows more),
CP (powers of two that split the sequence into ≥ 1024-token chunks), PP (any stage count up to the layers),
VP (chunks dividing the layers), EP (MoE: dividing the experts and DP), the micro-batch (dividing B / DP),
recomputation, ZeRO and SP, keeps what the memory ledger says fits and times it with ``step_time``.

Dominance rules out what cannot win (each rule follows from the step-time model):
- SP is on whenever TP > 1: the same bus bytes as the all-reduces it replaces, less memory and less work;
- ZeRO-1 rather than none whenever DP > 1 (its optimizer step is DP× smaller and reduce-scatter + all-gather
  moves the all-reduce's bytes); ZeRO-2 (same time, less memory) only when ZeRO-1 does not fit; ZeRO-3
  (per-layer gathers, but a gradient reduction hidden behind the backward) is weighed on its own;
- recomputation none, then selective, then full: the first that fits (each is slower and smaller);
- memory grows with the micro-batch, so a larger one fits only where the smaller does.

Branch and bound (plan_search.py) does the rest: every candidate gets a floor on its step time (``StepFloor``: the
(m + (P − 1)/V)·t_stage part of the step, the rest being ≥ 0), and candidates are taken floor first. Each is
checked against the memory ledger (or, where one already drawn decides it, the order above) and the dominance
rules, the admitted ones are timed, and the search stops once the next floor is above the K-th fastest step
timed: nothing later can enter the top. ``exhaustive=True`` times every admitted layout instead; the two give
the same top (tests/test_plan_bound.py).

Every layout is timed with the DP gradient reduction overlapped with the backward pass, as the emitted
Megatron-LM flags ask (``--overlap-grad-reduce``); FSDP (ZeRO-3) overlaps by design.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.launch_flags import megatron_flags, torchtitan
from napkin.accounting.layout import Layout, ZeroStage
from napkin.accounting.plan_search import Interrupted, Memory, enumerate_candidates, floor_first, shapes_of
from napkin.accounting.reserve import reserve_of
from napkin.accounting.step_floor import StepFloor
from napkin.accounting.step_time import (
    DEFAULT_STACK,
    TERM_LABELS,
    StepTimeResult,
    default_cluster,
    resolve_stack,
    step_time,
)
from napkin.errors import InputError
from napkin.results import DEFINITION, Derivation, Result, g, numbers_only
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_model
from napkin.specs.stack import StackSpec
from napkin.validation import Inputs, Positive, PositiveInt, Recompute, validated

Progress = Callable[[int, int], None]
RECOMPUTES: tuple[Recompute, ...] = ("none", "selective", "full")
FIXABLE = ("tp", "pp", "vp", "cp", "ep", "micro_batch", "zero", "recompute")


class PlanInputs(Inputs):
    model: str
    gpu: str
    gpus: PositiveInt | None = None
    global_batch: PositiveInt
    seq: PositiveInt
    tokens: Positive | None = None
    days: Positive | None = None
    precision: str = "bf16-mixed"
    top: PositiveInt = 5
    max_tp: PositiveInt | None = None
    fix: dict[str, int | str] = Field(default_factory=dict)
    node_size: PositiveInt
    intra_node_bandwidth: Positive | None = None
    inter_node_bandwidth: Positive | None = None
    stack: str = DEFAULT_STACK
    calibration: list[str] | None = None
    reserve_bytes: float | None = Field(default=None, description="memory per GPU held back from every fit "
                                        "(None: the default of reserve.py)")


class PlanRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    layout: Layout
    describe: str = Field(description="tp·pp·dp in one line, with recompute and the micro-batch")
    micro_batch: int
    recompute: str
    step_time_s: float
    tokens_per_s: float
    mfu: float
    memory_bytes: float
    headroom_bytes: float = Field(description="usable memory (after the reserve) − memory_bytes")
    limiter: str
    limiter_share: float


class PlanResult(Result):
    inputs: PlanInputs
    gpus: int
    examined: int = Field(description="layouts enumerated")
    pruned: int = Field(description="layouts not timed: over the memory, dominated, or with a step-time floor above "
                        "the top's")
    timed: int = Field(description="layouts timed with step_time")
    interrupted: bool = False
    top: list[PlanRow]
    winner: StepTimeResult
    runner_up: StepTimeResult | None = None
    why: list[str] = Field(description="what limits the winner, and what the runner-up trades")
    megatron_flags: str
    torchtitan: str
    days: float | None = Field(default=None, description="with --tokens: training days at the winner's step time")
    gpu_hours: float | None = None
    gpu_counts_tried: list[int] = Field(default_factory=list, description="with --days: the whole-node GPU counts "
                                        "asked, fewest first (those with a layout); the last is the answer")


def plan(model: TransformerSpec | LinearSpec, hardware: HardwareSpec, *, global_batch: int, seq: int,
         gpus: int | None = None, tokens: float | None = None, days: float | None = None,
         precision: str = "bf16-mixed", top: int = 5, max_tp: int | None = None,
         fix: dict[str, int | str] | None = None, node_size: int | None = None,
         intra_node_bandwidth: float | None = None, inter_node_bandwidth: float | None = None,
         calibration: list[str] | None = None, progress: Progress | None = None,
         exhaustive: bool = False, reserve_bytes: float | None = None,
         stack: StackSpec | str | None = None) -> PlanResult:
    """The fastest layouts of ``model`` on ``gpus`` × ``hardware`` for a global batch of sequences of ``seq``.

    Without ``gpus``, ``days`` and ``tokens`` ask for the fewest GPUs (whole nodes) that train ``tokens`` in ``days``.
    ``exhaustive`` times every layout that fits instead of stopping where no untimed layout can enter the top
    (the same answer, slower: the check of the bound). ``reserve_bytes`` is held back from every GPU's memory
    (None: reserve.py's default), so no layout is planned into the last gigabytes. ``stack`` (default megatron-te)
    prices every layout.
    """
    model = as_model(model, "model")
    hardware = as_hardware(hardware, "hardware")
    if not isinstance(model, TransformerSpec):
        raise InputError(f"plan needs a transformer; '{model.name}' is a {model.kind} network")
    fix = dict(fix or {})
    for k in fix:
        if k not in FIXABLE:
            raise InputError(f"--fix: unknown dimension '{k}'; fix any of {', '.join(FIXABLE)} (e.g. tp=8,pp=4)")
    if "zero" in fix and fix["zero"] not in (0, 1, 2, 3):
        raise InputError(f"--fix: zero must be a ZeRO stage 0, 1, 2 or 3, got {fix['zero']}")
    if "recompute" in fix and fix["recompute"] not in RECOMPUTES:
        raise InputError(f"--fix: recompute must be one of {', '.join(RECOMPUTES)}, got '{str(fix['recompute'])[:40]}'")
    node = node_size or hardware.node_gpus or 8
    stk = resolve_stack(stack)
    i = validated(PlanInputs, model=model.name, gpu=hardware.name, gpus=gpus, global_batch=global_batch, seq=seq,
                  tokens=tokens, days=days, precision=precision, top=top, max_tp=max_tp, fix=fix, node_size=node,
                  intra_node_bandwidth=intra_node_bandwidth, inter_node_bandwidth=inter_node_bandwidth,
                  stack=stk.name, calibration=calibration, reserve_bytes=reserve_bytes)
    if gpus is None:
        if days is None or tokens is None:
            raise InputError("give `gpus`, or `tokens` with `days` to find the fewest GPUs that train in time")
        return _fewest_gpus(model, hardware, i, progress, stk)
    if days is not None:
        raise InputError("`days` asks for the fewest GPUs: leave out `gpus`, or leave out `days`")
    return _search(model, hardware, i, gpus, progress, exhaustive, stk)


def _search(spec: TransformerSpec, hw: HardwareSpec, i: PlanInputs, G: int,
            progress: Progress | None, exhaustive: bool = False, stk: StackSpec | None = None) -> PlanResult:
    stk = stk or resolve_stack(i.stack)
    c = stk.step_constants()
    common: dict[str, Any] = dict(seq=i.seq, global_batch=i.global_batch, precision=i.precision, stack=stk,
                                  overlap_grad_reduce=True,
                                  node_size=i.node_size, intra_node_bandwidth=i.intra_node_bandwidth,
                                  inter_node_bandwidth=i.inter_node_bandwidth, reserve_bytes=i.reserve_bytes)
    cal_notes: list[str] = []
    if i.calibration:
        from napkin.accounting.calibration import calibrate

        c, cal_notes = calibrate(i.calibration, c, hw, spec, i.precision)
    shapes = shapes_of(spec, G, i.global_batch, i.seq, i.node_size, i.max_tp, i.fix)
    if not shapes:
        raise InputError(f"no layout of {spec.name} divides {G} GPUs and a global batch of {i.global_batch} "
                         f"(heads {spec.heads}, layers {spec.layers}); try a batch divisible by more data-parallel "
                         "degrees or another GPU count")
    cluster = default_cluster(hw, i.node_size, i.intra_node_bandwidth, i.inter_node_bandwidth, G)
    floor = StepFloor(spec, hw, seq=i.seq, cluster=cluster, precision=i.precision, constants=c)
    want_r = i.fix.get("recompute")
    # a fixed recompute other than these three: TrainingSetup refuses it in one line
    recs = [cast(Recompute, str(want_r))] if want_r is not None else list(RECOMPUTES)
    interrupted = False
    try:  # 1. every candidate (shape, micro-batch, ZeRO stage, recompute)
        cands, tightest = enumerate_candidates(shapes, G, i.global_batch, i.fix, recs, progress)
    except KeyboardInterrupt:
        cands, tightest, interrupted = [], {}, True
    mem = Memory(spec, hw, seq=i.seq, precision=i.precision, recs=recs, tightest=tightest, exhaustive=exhaustive,
                 reserve_bytes=i.reserve_bytes)
    # 2. fastest floor first: check the memory and the dominance rules, time what passes, and stop once the floor
    # is above the k-th fastest step timed (a floor never exceeds the step it bounds, so nothing later can enter)
    k = max(i.top, 2)
    best: list[float] = []  # the k fastest steps timed so far
    timed: list[tuple[float, StepTimeResult, float]] = []
    with numbers_only():  # the search keeps numbers; the winner and runner-up are derived in full below
        try:
            for x in cands if exhaustive else floor_first(cands, floor, tightest, recs, i.global_batch, best, k):
                if not mem.admissible(x):
                    continue
                sh = shapes[x.shape]
                lay = Layout(gpus=G, tp=sh.tp, pp=sh.pp, vp=sh.vp, cp=sh.cp, ep=sh.ep, sp=sh.tp > 1,
                             zero=cast(ZeroStage, x.zero))
                st = step_time(spec, hw, layout=lay, micro_batch=x.b, recompute=recs[x.ri], constants=c,
                               ledger=False, **common)
                timed.append((st.step_time_s, st, mem.totals[x.fit_key]))
                bisect.insort(best, st.step_time_s)
                del best[k:]
        except KeyboardInterrupt:
            interrupted = True
    if progress is not None:
        progress(len(shapes), len(shapes))
    examined, pruned = len(cands), len(cands) - len(timed)
    if not timed:
        if interrupted:
            raise Interrupted("interrupted before any layout was timed")
        smallest = mem.smallest(i.global_batch)
        what = (f"the smallest per-GPU footprint is {smallest[0] / 1e9:.1f} GB with {smallest[1]}" if smallest
                else "no layout was tried")
        raise InputError(f"no layout of {spec.name} fits {G} × {hw.name}: {what}; the {hw.name} has "
                         f"{hw.memory_bytes / 1e9:.0f} GB, {(hw.memory_bytes - reserve_of(i.reserve_bytes)) / 1e9:.1f}"
                         " GB usable after the `reserve_bytes` (more GPUs, a shorter `seq` or a smaller "
                         "`global_batch` help)")
    # fastest first; on a tie the lower ZeRO stage, then the lighter recomputation, then less memory
    timed.sort(key=lambda x: (x[0], x[1].inputs.layout.zero, RECOMPUTES.index(x[1].inputs.recompute), x[2]))
    usable = hw.memory_bytes - reserve_of(i.reserve_bytes)
    rows = [_row(st, mem, usable) for _, st, mem in timed[:i.top]]
    # the winner and runner-up again, with the ledger and the derivation
    def full(st: StepTimeResult) -> StepTimeResult:
        si = st.inputs
        return step_time(spec, hw, layout=si.layout.model_copy(update={"micro_batches": 1}),
                         micro_batch=si.micro_batch, recompute=si.recompute, constants=c, **common)

    win = full(timed[0][1])
    runner = full(timed[1][1]) if len(timed) > 1 else None
    d = Derivation()
    d.add("layouts examined", "enumerated (tp, cp, pp, vp, ep, b, ZeRO, recompute)", str(examined), examined,
          "layouts", "napkin.accounting.plan")
    d.add("layouts timed", "examined − pruned (memory, dominance, step-time floor)", f"{examined} − {pruned}",
          len(timed), "layouts", "napkin.accounting.plan")
    d.add("winner's step time", win.layout, g(win.step_time_s), win.step_time_s, "s", "napkin step-time")
    days_ = hours = None
    notes = []
    if i.tokens is not None:
        steps = i.tokens / (i.global_batch * i.seq)
        days_ = d.add("training days at the winner's step", "D / (B·s) · t_step / 86400",
                      f"{g(i.tokens)} / ({i.global_batch}·{i.seq}) × {g(win.step_time_s)} / 86400",
                      steps * win.step_time_s / 86400, "days", DEFINITION)
        hours = d.add("GPU-hours", "days · 24 · G", f"{g(days_)} × 24 × {G}", days_ * 24 * G, "GPU·h", DEFINITION)
    if interrupted:
        notes.append("interrupted: the best layouts among those timed so far")
    return PlanResult(inputs=i, gpus=G, examined=examined, pruned=pruned, timed=len(timed), interrupted=interrupted,
                      top=rows, winner=win, runner_up=runner, why=_why(win, runner),
                      megatron_flags=megatron_flags(win, spec), torchtitan=torchtitan(win), days=days_,
                      gpu_hours=hours, steps=d.steps + win.steps, notes=cal_notes + notes + win.notes)


def _row(st: StepTimeResult, mem: float, usable: float) -> PlanRow:
    i = st.inputs
    return PlanRow(layout=i.layout, describe=f"{st.layout} b{i.micro_batch} {i.recompute}", micro_batch=i.micro_batch,
                   recompute=i.recompute, step_time_s=st.step_time_s, tokens_per_s=st.tokens_per_s, mfu=st.mfu,
                   memory_bytes=mem, headroom_bytes=usable - mem, limiter=st.limiter,
                   limiter_share=st.breakdown[st.limiter] / st.step_time_s)


def _why(win: StepTimeResult, runner: StepTimeResult | None) -> list[str]:
    """What limits the winner (its largest non-GEMM term) and what the runner-up trades."""
    out = []
    comm = {k: v for k, v in win.breakdown.items() if k not in ("compute_gemm", "compute_attention") and v}
    if comm:
        k = max(comm, key=lambda x: comm[x])
        share = comm[k] / win.step_time_s
        out.append(f"besides the matmuls, the winner loses most to {TERM_LABELS[k]}: {share:.0%} of "
                   "the step")
    if runner is not None:
        diff = {k: runner.breakdown[k] - win.breakdown[k] for k in win.breakdown}
        worse = max(diff, key=lambda x: diff[x])
        better = min(diff, key=lambda x: diff[x])
        gap = runner.step_time_s / win.step_time_s - 1
        name = f"the runner-up ({runner.layout}, b{runner.inputs.micro_batch} {runner.inputs.recompute})"
        if gap < 1e-3:
            line = f"{name} ties within 0.1%"
            if win.memory_bytes and runner.memory_bytes:
                line += (f", at {runner.memory_bytes / 1e9:.1f} GB per GPU against {win.memory_bytes / 1e9:.1f} GB: "
                         "the winner is the simpler layout")
        else:
            line = f"{name} is {gap:.1%} slower: {TERM_LABELS[worse]} +{diff[worse]:.3g} s"
            if diff[better] < 0:
                line += f" for {TERM_LABELS[better]} {diff[better]:.3g} s"
        out.append(line)
    return out


def _fewest_gpus(spec: TransformerSpec, hw: HardwareSpec, i: PlanInputs, progress: Progress | None,
                 stk: StackSpec | None = None) -> PlanResult:
    """Fewest whole nodes whose best layout trains i.tokens in i.days: every count from the compute floor up,
    fewest first (plan_fewest.py; days against GPUs is not monotone, so no bisection), then planned in full."""
    from napkin.accounting.plan_fewest import fewest_gpus

    assert i.tokens is not None and i.days is not None
    G, asked, start = fewest_gpus(spec, hw, i, progress)  # a Ctrl-C there: Interrupted (nothing meets it yet)
    r = _search(spec, hw, i.model_copy(update={"gpus": G}), G, None, stk=stk)
    below = [n for n in asked if n < G]
    shown = ", ".join(f"{n:,}" for n in below[-5:])
    tried = (f"{len(below)} smaller count{'s' if len(below) > 1 else ''} with a layout, {below[0]:,} to {below[-1]:,}"
             f" (last: {shown}), do not" if below else "no smaller count with a layout does")
    note = (f"fewest GPUs: {G // i.node_size} nodes × {i.node_size} = {G:,} GPUs train {g(i.tokens)} tokens in "
            f"{r.days:.2f} days (≤ {g(i.days)}); {tried}. Every whole-node count from {start:,} (the compute "
            "floor: model FLOPs at the dense peak) was asked, fewest first; days against GPUs is not monotone.")
    notes = [note, *r.notes]
    if r.interrupted:  # Ctrl-C in the layout search of the count found: its best layouts so far
        notes.insert(0, f"interrupted (Ctrl-C): {G:,} GPUs are the fewest that meet the deadline; their layout "
                        "search stopped early, so the layout shown is the best of those timed")
    return r.model_copy(update={"notes": notes, "gpu_counts_tried": asked})


def train_time_planned(model: TransformerSpec | LinearSpec, hardware: HardwareSpec, tokens: float, *, gpus: int,
                       global_batch: int, seq: int, price_per_gpu_hour: float | None = None, pue: float = 1.0,
                       **search: Any) -> Any:
    """`train-time --plan`: days at the MFU of the fastest layout `plan` finds (a TrainTimeResult)."""
    model = as_model(model, "model")
    hardware = as_hardware(hardware, "hardware")
    from napkin.accounting.step_time import train_time_at_layout

    r = plan(model, hardware, gpus=gpus, global_batch=global_batch, seq=seq, **search)
    w = r.winner.inputs
    lay = w.layout
    out = train_time_at_layout(model, hardware, tokens, price_per_gpu_hour=price_per_gpu_hour, pue=pue,
                               layout=lay.model_copy(update={"micro_batches": 1}), micro_batch=w.micro_batch,
                               global_batch=global_batch, seq=seq, recompute=w.recompute, precision=w.precision,
                               overlap_grad_reduce=w.overlap_grad_reduce, node_size=w.cluster.node_size,
                               intra_node_bandwidth=w.cluster.intra_node_bytes_per_s,
                               inter_node_bandwidth=w.cluster.inter_node_bytes_per_s, stack=search.get("stack"),
                               constants=w.constants)
    note = (f"layout found by napkin plan ({r.timed:,} of {r.examined:,} layouts timed): {r.winner.layout}, "
            f"micro-batch {w.micro_batch}, recompute {w.recompute}; Megatron-LM: {r.megatron_flags}")
    return out.model_copy(update={"notes": [note, *out.notes]})
