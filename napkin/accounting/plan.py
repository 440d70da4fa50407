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

Branch and bound does the rest: every candidate gets a floor on its step time (``StepFloor``: the
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
import heapq
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.kernels import StepConstants
from napkin.accounting.launch_flags import megatron_flags, torchtitan
from napkin.accounting.layout import Layout, ZeroStage, data_parallel, layers_per_stage
from napkin.accounting.step_time import TERM_LABELS, StepFloor, StepTimeResult, default_cluster, step_time
from napkin.errors import InputError
from napkin.results import DEFINITION, Derivation, Result, g, numbers_only
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_model
from napkin.validation import Inputs, Positive, PositiveInt, Recompute, validated

if TYPE_CHECKING:
    from napkin.accounting.memory import MemoryResult

Progress = Callable[[int, int], None]
RECOMPUTES: tuple[Recompute, ...] = ("none", "selective", "full")
MIN_CP_CHUNK = 1024  # tokens per CP rank below which ring attention's exchanges dominate (CP is for long contexts)
MAX_VP = 8  # interleaving deeper than this is rare in practice (Megatron examples use 2–6) and only adds sends
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
    calibration: list[str] | None = None


class _Candidate(NamedTuple):
    """One layout of the search (a shape, its micro-batch, ZeRO stage and recompute), in enumeration order."""

    order: int
    shape: int  # index into the shapes (tp, cp, pp, vp, ep)
    b: int
    m: int
    zero: int
    ri: int  # index into the recomputations tried
    lower: tuple[int, ...]  # the lower ZeRO stages of its group (taken first when they fit)


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


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _shapes(spec: TransformerSpec, G: int, B: int, s: int, node: int, max_tp: int | None,
            fix: dict[str, Any]) -> list[tuple[int, int, int, int, int]]:
    """(tp, cp, pp, vp, ep) that divide the model and the GPUs."""
    out = []
    kv = spec.n_kv_heads if spec.mla is None else spec.heads
    cap = max_tp or node
    tps = [t for t in _divisors(spec.heads) if kv % t == 0 and t <= cap and G % t == 0]
    for t in tps:
        cps = [c for c in (1, 2, 4, 8, 16, 32) if c == 1 or (s % (2 * c) == 0 and s // c >= MIN_CP_CHUNK)]
        for c in cps:
            if G % (t * c):
                continue
            for p in _divisors(G // (t * c)):
                if p > spec.layers:
                    continue
                dp = data_parallel(G, t, c, p)
                if B % dp:
                    continue
                vps = [1] + ([v for v in range(2, MAX_VP + 1) if spec.layers % (p * v) == 0] if p > 1 else [])
                eps = [1]
                if spec.moe is not None:
                    eps = [e for e in _divisors(dp) if spec.moe.experts % e == 0]
                for v in vps:
                    for e in eps:
                        cand = dict(tp=t, cp=c, pp=p, vp=v, ep=e)
                        if all(cand.get(k, fix[k]) == fix[k] for k in fix if k in cand):
                            out.append((t, c, p, v, e))
    return out


def _enumerate(shapes: list[tuple[int, int, int, int, int]], G: int, i: PlanInputs, recs: list[Recompute],
               tightest: dict[tuple[int, int], Layout], progress: Progress | None) -> list[_Candidate]:
    """Every (shape, micro-batch, ZeRO stage, recompute) the dominance rules leave, in enumeration order; fills
    ``tightest`` with each (shape, micro-batch)'s layout at its smallest-footprint ZeRO stage."""
    want_z, want_b = i.fix.get("zero"), i.fix.get("micro_batch")
    cands: list[_Candidate] = []
    for n, (t, cp, p, v, e) in enumerate(shapes):
        if progress is not None:
            progress(n, len(shapes))
        dp = data_parallel(G, t, cp, p)
        # ZeRO-1 and -2 take the same time (2 only when 1 does not fit); ZeRO-3 trades gathers for an overlapped
        # gradient reduction, so it is weighed on its own
        groups: list[list[ZeroStage]] = [[0]] if dp == 1 else [[1, 2], [3]]
        if want_z is not None:  # one of 0-3: checked in plan()
            groups = [[cast(ZeroStage, int(want_z))]] if dp > 1 or int(want_z) == 0 else []
        if not groups:
            continue
        tight = Layout(gpus=G, tp=t, pp=p, vp=v, cp=cp, ep=e, sp=t > 1, zero=max(z for zs in groups for z in zs))
        local = i.global_batch // dp
        for b in _divisors(local):
            if want_b is not None and b != int(want_b):
                continue
            tightest[n, b] = tight
            for zs in groups:
                for pos, z in enumerate(zs):
                    for ri in range(len(recs)):
                        cands.append(_Candidate(len(cands), n, b, local // b, z, ri, tuple(zs[:pos])))
    return cands


def _floor_first(cands: list[_Candidate], floor: StepFloor, tightest: dict[tuple[int, int], Layout],
                 recs: list[Recompute], global_batch: int, best: list[float], k: int) -> Iterator[_Candidate]:
    """The candidates by the floor of their step time, lowest first, until the next floor is above the k-th
    fastest step in ``best`` (which the caller fills as it times): nothing left can enter the top then.

    The candidates of one TP, CP, EP, micro-batch and recompute share a floor under all their PP, VP and ZeRO
    stages (StepFloor.any_pipeline); their own floors are drawn only once that one comes up."""
    grouped: dict[tuple[int, int, int, int, int], list[_Candidate]] = {}
    for x in cands:
        lay = tightest[x.shape, x.b]
        grouped.setdefault((lay.tp, lay.cp, lay.ep, x.b, x.ri), []).append(x)
    groups = sorted((floor.any_pipeline(tightest[xs[0].shape, xs[0].b], gk[3], recs[gk[4]], global_batch), n, gk)
                    for n, (gk, xs) in enumerate(grouped.items()))
    heap: list[tuple[float, int, _Candidate]] = []
    gi = 0
    while heap or gi < len(groups):
        nxt = groups[gi][0] if gi < len(groups) else math.inf
        if len(best) >= k and min(heap[0][0] if heap else nxt, nxt) > best[k - 1] * (1 + 1e-9):
            return  # a floor never exceeds the step it bounds
        if heap and heap[0][0] <= nxt:
            yield heapq.heappop(heap)[2]
            continue
        for x in grouped[groups[gi][2]]:
            lay = tightest[x.shape, x.b]
            lay = lay if lay.zero == x.zero else lay.model_copy(update={"zero": x.zero})
            heapq.heappush(heap, (floor(lay, x.b, x.m, recs[x.ri]), x.order, x))
        gi += 1


class _Memory:
    """The search's memory answers: a ledger where one must be drawn, else what follows from those drawn.

    Memory grows with the micro-batch and shrinks with each ZeRO stage and each heavier recomputation. A stage's
    model state (its ledger less the activations) is the same at every micro-batch and recompute, and the first
    stage holds, on top of it, at least its in-flight micro-batches × its layers × a dense layer's activations
    (memory.py: the activation row); the ledger is the fuller stage, so either stage's part is a floor under it.
    tests/test_plan_bound.py checks these on the ledger, and that the answers stay those of the exhaustive search,
    which draws every ledger (``exhaustive``).
    """

    def __init__(self, spec: TransformerSpec, hw: HardwareSpec, i: PlanInputs, recs: list[Recompute],
                 exhaustive: bool) -> None:
        self.spec, self.hw, self.i, self.recs, self.exhaustive = spec, hw, i, recs, exhaustive
        self.tightest: dict[tuple[int, int], Layout] = {}  # (shape, b) -> its layout at the tightest ZeRO stage
        self.fits: dict[tuple[int, int, int, int], bool] = {}  # (shape, b, ZeRO, recompute)
        self.totals: dict[tuple[int, int, int, int], float] = {}  # the same, where a ledger was drawn
        self.drawn: dict[int, list[tuple[int, int, int, bool]]] = {}  # shape -> (b, z, recompute, fits) known
        # a dense layer's kept activations by (tp, cp, sp, b, recompute): the same on every stage, PP, VP and ZeRO
        self.per_layer: dict[tuple[int, int, bool, int, int], float] = {}
        # (shape, ZeRO) -> a stage and its model state: the same at every micro-batch and recompute
        self.state: dict[tuple[int, int], tuple[str, float]] = {}

    def ledger(self, n: int, b: int, m: int, z: int, ri: int) -> MemoryResult:
        from napkin.accounting.memory import TrainingSetup, memory_ledger

        lay = self.tightest[n, b].model_copy(update={"zero": z, "micro_batches": m})
        mem = memory_ledger(self.spec, self.hw, TrainingSetup(batch=b, seq=self.i.seq, precision=self.i.precision,
                                                              recompute=self.recs[ri]), lay)
        self.fits[n, b, z, ri], self.totals[n, b, z, ri] = mem.fits, mem.total_bytes
        self.drawn.setdefault(n, []).append((b, z, ri, mem.fits))
        if mem.activations is not None:
            if self.spec.moe is None:
                self.per_layer[lay.tp, lay.cp, lay.sp, b, ri] = mem.activations.per_layer_bytes
            if (n, z) not in self.state or mem.stage != "last":  # the first stage's, where there is a choice
                self.state[n, z] = (mem.stage, mem.total_bytes - mem.activations.total_bytes)
        return mem

    def fit(self, n: int, b: int, m: int, z: int, ri: int) -> bool:
        """Whether (shape n, micro-batch b, ZeRO z, recompute ri) fits: known, inferred, or from its ledger."""
        key = (n, b, z, ri)
        if key in self.fits:
            return self.fits[key]
        if not self.exhaustive:
            for b0, z0, r0, ok in self.drawn.get(n, ()):
                if ok and b <= b0 and z >= z0 and ri >= r0 or not ok and b >= b0 and z <= z0 and ri <= r0:
                    return ok
            lay = self.tightest[n, b]
            a = self.per_layer.get((lay.tp, lay.cp, lay.sp, b, ri))
            acts = 0.0 if a is None else a * layers_per_stage(self.spec.layers, lay.pp) * lay.model_copy(
                update={"micro_batches": m}).in_flight("first" if lay.pp > 1 else "only")
            where, held = self.state.get((n, z), ("", 0.0))
            if (held + acts if where in ("first", "only") else max(held, acts)) > self.hw.memory_bytes:
                self.fits[key] = False
                self.drawn.setdefault(n, []).append((b, z, ri, False))
                return False
        return self.ledger(n, b, m, z, ri).fits

    def admissible(self, x: _Candidate) -> bool:
        """It fits, with the lightest recompute that fits its ZeRO stage, and no lower stage of its group fits
        with a recompute as light (the same time, more memory); one admitted has its own ledger (its row shows
        the total)."""
        n, b, m = x.shape, x.b, x.m
        if not self.fit(n, b, m, self.tightest[n, b].zero, len(self.recs) - 1):  # nothing of (n, b) fits
            return False
        return (all(not self.fit(n, b, m, x.zero, rj) for rj in range(x.ri))
                and all(not self.fit(n, b, m, zl, rj) for zl in x.lower for rj in range(x.ri + 1))
                and self.fit(n, b, m, x.zero, x.ri)
                and ((n, b, x.zero, x.ri) in self.totals or self.ledger(n, b, m, x.zero, x.ri).fits))

    def smallest(self, global_batch: int) -> tuple[float, str] | None:
        """Where nothing fits: the smallest footprint, each shape's smallest micro-batch at its tightest setting
        (memory grows with the micro-batch and shrinks with ZeRO and recompute), first in enumeration on a tie."""
        firsts: dict[int, int] = {}
        for n, b in self.tightest:
            firsts.setdefault(n, b)  # micro-batches ascend within a shape
        out: tuple[float, str] | None = None
        for n, b in firsts.items():
            lay = self.tightest[n, b]
            mem = self.ledger(n, b, global_batch // lay.dp // b, lay.zero, len(self.recs) - 1)
            if out is None or mem.total_bytes < out[0]:
                out = (mem.total_bytes, f"{lay.describe()}, micro-batch {b}, recompute {self.recs[-1]}")
        return out


def plan(model: TransformerSpec | LinearSpec, hardware: HardwareSpec, *, global_batch: int, seq: int,
         gpus: int | None = None, tokens: float | None = None, days: float | None = None,
         precision: str = "bf16-mixed", top: int = 5, max_tp: int | None = None,
         fix: dict[str, int | str] | None = None, node_size: int | None = None,
         intra_node_bandwidth: float | None = None, inter_node_bandwidth: float | None = None,
         calibration: list[str] | None = None, progress: Progress | None = None,
         exhaustive: bool = False) -> PlanResult:
    """The fastest layouts of ``model`` on ``gpus`` × ``hardware`` for a global batch of sequences of ``seq``.

    Without ``gpus``, ``days`` and ``tokens`` ask for the fewest GPUs (whole nodes) that train ``tokens`` in ``days``.
    ``exhaustive`` times every layout that fits instead of stopping where no untimed layout can enter the top
    (the same answer, slower: the check of the bound).
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
    node = node_size or hardware.node_gpus or 8
    i = validated(PlanInputs, model=model.name, gpu=hardware.name, gpus=gpus, global_batch=global_batch, seq=seq,
                  tokens=tokens, days=days, precision=precision, top=top, max_tp=max_tp, fix=fix, node_size=node,
                  intra_node_bandwidth=intra_node_bandwidth, inter_node_bandwidth=inter_node_bandwidth,
                  calibration=calibration)
    if gpus is None:
        if days is None or tokens is None:
            raise InputError("give `gpus`, or `tokens` with `days` to find the fewest GPUs that train in time")
        return _fewest_gpus(model, hardware, i, progress)
    if days is not None:
        raise InputError("`days` asks for the fewest GPUs: leave out `gpus`, or leave out `days`")
    return _search(model, hardware, i, gpus, progress, exhaustive)


def _search(spec: TransformerSpec, hw: HardwareSpec, i: PlanInputs, G: int,
            progress: Progress | None, exhaustive: bool = False) -> PlanResult:
    c = StepConstants()
    common: dict[str, Any] = dict(seq=i.seq, global_batch=i.global_batch, precision=i.precision,
                                  overlap_grad_reduce=True,
                                  node_size=i.node_size, intra_node_bandwidth=i.intra_node_bandwidth,
                                  inter_node_bandwidth=i.inter_node_bandwidth)
    if i.calibration:
        from napkin.accounting.calibration import calibrate

        c, _ = calibrate(i.calibration, c, hw, spec, i.precision)
    shapes = _shapes(spec, G, i.global_batch, i.seq, i.node_size, i.max_tp, i.fix)
    if not shapes:
        raise InputError(f"no layout of {spec.name} divides {G} GPUs and a global batch of {i.global_batch} "
                         f"(heads {spec.heads}, layers {spec.layers}); try a batch divisible by more data-parallel "
                         "degrees or another GPU count")
    cluster = default_cluster(hw, i.node_size, i.intra_node_bandwidth, i.inter_node_bandwidth)
    floor = StepFloor(spec, hw, seq=i.seq, cluster=cluster, precision=i.precision, constants=c)
    want_r = i.fix.get("recompute")
    # a fixed recompute other than these three: TrainingSetup refuses it in one line
    recs = [cast(Recompute, str(want_r))] if want_r is not None else list(RECOMPUTES)
    mem = _Memory(spec, hw, i, recs, exhaustive)
    interrupted = False
    try:  # 1. every candidate (shape, micro-batch, ZeRO stage, recompute)
        cands = _enumerate(shapes, G, i, recs, mem.tightest, progress)
    except KeyboardInterrupt:
        cands, interrupted = [], True
    # 2. fastest floor first: check the memory and the dominance rules, time what passes, and stop once the floor
    # is above the k-th fastest step timed (a floor never exceeds the step it bounds, so nothing later can enter)
    k = max(i.top, 2)
    best: list[float] = []  # the k fastest steps timed so far
    timed: list[tuple[float, StepTimeResult, float]] = []
    with numbers_only():  # the search keeps numbers; the winner and runner-up are derived in full below
        try:
            for x in cands if exhaustive else _floor_first(cands, floor, mem.tightest, recs, i.global_batch, best, k):
                if not mem.admissible(x):
                    continue
                t, cp, p, v, e = shapes[x.shape]
                lay = Layout(gpus=G, tp=t, pp=p, vp=v, cp=cp, ep=e, sp=t > 1, zero=cast(ZeroStage, x.zero))
                st = step_time(spec, hw, gpus=G, layout=lay, micro_batch=x.b, recompute=recs[x.ri], constants=c,
                               ledger=False, **common)
                timed.append((st.step_time_s, st, mem.totals[x.shape, x.b, x.zero, x.ri]))
                bisect.insort(best, st.step_time_s)
                del best[k:]
        except KeyboardInterrupt:
            interrupted = True
    if progress is not None:
        progress(len(shapes), len(shapes))
    examined, pruned = len(cands), len(cands) - len(timed)
    if not timed:
        if interrupted:
            raise InputError("interrupted before any layout was timed")
        smallest = mem.smallest(i.global_batch)
        what = (f"the smallest per-GPU footprint is {smallest[0] / 1e9:.1f} GB with {smallest[1]}" if smallest
                else "no layout was tried")
        raise InputError(f"no layout of {spec.name} fits {G} × {hw.name}: {what}; the {hw.name} has "
                         f"{hw.memory_bytes / 1e9:.0f} GB (more GPUs, a shorter `seq` or a smaller `global_batch` "
                         "help)")
    # fastest first; on a tie the lower ZeRO stage, then the lighter recomputation, then less memory
    timed.sort(key=lambda x: (x[0], x[1].inputs.layout.zero, RECOMPUTES.index(x[1].inputs.recompute), x[2]))
    rows = [_row(st, mem) for _, st, mem in timed[:i.top]]
    # the winner and runner-up again, with the ledger and the derivation
    def full(st: StepTimeResult) -> StepTimeResult:
        si = st.inputs
        return step_time(spec, hw, gpus=G, layout=si.layout.model_copy(update={"micro_batches": 1}),
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
                      gpu_hours=hours, steps=d.steps + win.steps, notes=notes + win.notes)


def _row(st: StepTimeResult, mem: float) -> PlanRow:
    i = st.inputs
    return PlanRow(layout=i.layout, describe=f"{st.layout} b{i.micro_batch} {i.recompute}", micro_batch=i.micro_batch,
                   recompute=i.recompute, step_time_s=st.step_time_s, tokens_per_s=st.tokens_per_s, mfu=st.mfu,
                   memory_bytes=mem, limiter=st.limiter, limiter_share=st.breakdown[st.limiter] / st.step_time_s)


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


def _fewest_gpus(spec: TransformerSpec, hw: HardwareSpec, i: PlanInputs, progress: Progress | None) -> PlanResult:
    """Fewest whole nodes whose best layout trains i.tokens in i.days (bisection over the node count)."""
    assert i.tokens is not None and i.days is not None
    node = i.node_size
    cache: dict[int, PlanResult | None] = {}

    def best(k: int) -> PlanResult | None:
        if k not in cache:
            try:
                cache[k] = _search(spec, hw, i.model_copy(update={"gpus": k * node}), k * node, None)
            except InputError:
                cache[k] = None
        return cache[k]

    def in_time(k: int) -> bool:
        r = best(k)
        return r is not None and r.days is not None and r.days <= i.days  # type: ignore[operator]

    hi = 1
    while not in_time(hi):
        if hi * node >= 1 << 17:
            r = best(hi)
            got = f"{r.days:.1f} days on {hi * node} GPUs" if r is not None and r.days else "nothing fits"
            raise InputError(f"no cluster up to {hi * node} × {hw.name} trains {g(i.tokens)} tokens of {spec.name} "
                             f"in {g(i.days)} days ({got}); allow more days")
        hi *= 2
        if progress is not None:
            progress(hi.bit_length(), 18)
    lo = hi // 2
    while hi - lo > 1:  # days fall as nodes are added (not strictly: the batch must divide); bisect on that trend
        mid = (lo + hi) // 2
        if in_time(mid):
            hi = mid
        else:
            lo = mid
    r = best(hi)
    assert r is not None
    note = (f"fewest GPUs: {hi} nodes × {node} = {hi * node} GPUs train {g(i.tokens)} tokens in {r.days:.2f} days "
            f"(≤ {g(i.days)}); {(hi - 1) * node} GPUs do not (bisection over whole nodes)")
    return r.model_copy(update={"notes": [note, *r.notes]})


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
    out = train_time_at_layout(model, hardware, tokens, price_per_gpu_hour=price_per_gpu_hour, pue=pue, gpus=gpus,
                               layout=lay.model_copy(update={"micro_batches": 1}), micro_batch=w.micro_batch,
                               global_batch=global_batch, seq=seq, recompute=w.recompute, precision=w.precision,
                               overlap_grad_reduce=w.overlap_grad_reduce, node_size=w.cluster.node_size,
                               intra_node_bandwidth=w.cluster.intra_node_bytes_per_s,
                               inter_node_bandwidth=w.cluster.inter_node_bytes_per_s, constants=w.constants)
    note = (f"layout found by napkin plan ({r.timed:,} of {r.examined:,} layouts timed): {r.winner.layout}, "
            f"micro-batch {w.micro_batch}, recompute {w.recompute}; Megatron-LM: {r.megatron_flags}")
    return out.model_copy(update={"notes": [note, *out.notes]})
