"""The layout search behind `napkin plan`: the candidates, their order by a floor on the step time, and the
memory answers (a ledger where one must be drawn, else what follows from those drawn).

``plan.py`` asks the question and explains the answer; this module finds it. The rules are in plan.py's
docstring; tests/test_plan_bound.py checks that the bounded search answers as the exhaustive one.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from napkin.accounting.layout import Layout, ZeroStage, data_parallel, layers_per_stage
from napkin.accounting.step_time import StepFloor
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import TransformerSpec
from napkin.validation import Recompute

if TYPE_CHECKING:
    from napkin.accounting.memory import MemoryResult

MIN_CP_CHUNK = 1024  # tokens per CP rank below which ring attention's exchanges dominate (CP is for long contexts)
MAX_VP = 8  # interleaving deeper than this is rare in practice (Megatron examples use 2–6) and only adds sends


class Candidate(NamedTuple):
    """One layout of the search (a shape, its micro-batch, ZeRO stage and recompute), in enumeration order."""

    order: int
    shape: int  # index into the shapes (tp, cp, pp, vp, ep)
    b: int
    m: int
    zero: int
    ri: int  # index into the recomputations tried
    lower: tuple[int, ...]  # the lower ZeRO stages of its group (taken first when they fit)


def divisors(n: int) -> list[int]:
    """The divisors of n, ascending."""
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def shapes_of(spec: TransformerSpec, G: int, B: int, s: int, node: int, max_tp: int | None,
              fix: dict[str, Any]) -> list[tuple[int, int, int, int, int]]:
    """(tp, cp, pp, vp, ep) that divide the model and the GPUs."""
    out = []
    kv = spec.n_kv_heads if spec.mla is None else spec.heads
    cap = max_tp or node
    tps = [t for t in divisors(spec.heads) if kv % t == 0 and t <= cap and G % t == 0]
    for t in tps:
        cps = [c for c in (1, 2, 4, 8, 16, 32) if c == 1 or (s % (2 * c) == 0 and s // c >= MIN_CP_CHUNK)]
        for c in cps:
            if G % (t * c):
                continue
            for p in divisors(G // (t * c)):
                if p > spec.layers:
                    continue
                dp = data_parallel(G, t, c, p)
                if B % dp:
                    continue
                vps = [1] + ([v for v in range(2, MAX_VP + 1) if spec.layers % (p * v) == 0] if p > 1 else [])
                eps = [1]
                if spec.moe is not None:
                    eps = [e for e in divisors(dp) if spec.moe.experts % e == 0]
                for v in vps:
                    for e in eps:
                        cand = dict(tp=t, cp=c, pp=p, vp=v, ep=e)
                        if all(cand.get(k, fix[k]) == fix[k] for k in fix if k in cand):
                            out.append((t, c, p, v, e))
    return out


def enumerate_candidates(shapes: list[tuple[int, int, int, int, int]], G: int, global_batch: int,
                         fix: dict[str, Any], recs: list[Recompute], tightest: dict[tuple[int, int], Layout],
                         progress: Callable[[int, int], None] | None) -> list[Candidate]:
    """Every (shape, micro-batch, ZeRO stage, recompute) the dominance rules leave, in enumeration order; fills
    ``tightest`` with each (shape, micro-batch)'s layout at its smallest-footprint ZeRO stage."""
    want_z, want_b = fix.get("zero"), fix.get("micro_batch")
    cands: list[Candidate] = []
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
        local = global_batch // dp
        for b in divisors(local):
            if want_b is not None and b != int(want_b):
                continue
            tightest[n, b] = tight
            for zs in groups:
                for pos, z in enumerate(zs):
                    for ri in range(len(recs)):
                        cands.append(Candidate(len(cands), n, b, local // b, z, ri, tuple(zs[:pos])))
    return cands


def floor_first(cands: list[Candidate], floor: StepFloor, tightest: dict[tuple[int, int], Layout],
                 recs: list[Recompute], global_batch: int, best: list[float], k: int) -> Iterator[Candidate]:
    """The candidates by the floor of their step time, lowest first, until the next floor is above the k-th
    fastest step in ``best`` (which the caller fills as it times): nothing left can enter the top then.

    The candidates of one TP, CP, EP, micro-batch and recompute share a floor under all their PP, VP and ZeRO
    stages (StepFloor.any_pipeline); their own floors are drawn only once that one comes up."""
    grouped: dict[tuple[int, int, int, int, int], list[Candidate]] = {}
    for x in cands:
        lay = tightest[x.shape, x.b]
        grouped.setdefault((lay.tp, lay.cp, lay.ep, x.b, x.ri), []).append(x)
    groups = sorted((floor.any_pipeline(tightest[xs[0].shape, xs[0].b], gk[3], recs[gk[4]], global_batch), n, gk)
                    for n, (gk, xs) in enumerate(grouped.items()))
    heap: list[tuple[float, int, Candidate]] = []
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


class Memory:
    """The search's memory answers: a ledger where one must be drawn, else what follows from those drawn.

    Memory grows with the micro-batch and shrinks with each ZeRO stage and each heavier recomputation. A stage's
    model state (its ledger less the activations) is the same at every micro-batch and recompute, and the first
    stage holds, on top of it, at least its in-flight micro-batches × its layers × a dense layer's activations
    (memory.py: the activation row); the ledger is the fuller stage, so either stage's part is a floor under it.
    tests/test_plan_bound.py checks these on the ledger, and that the answers stay those of the exhaustive search,
    which draws every ledger (``exhaustive``).
    """

    def __init__(self, spec: TransformerSpec, hw: HardwareSpec, *, seq: int, precision: str, recs: list[Recompute],
                 exhaustive: bool) -> None:
        self.spec, self.hw, self.seq, self.precision, self.recs = spec, hw, seq, precision, recs
        self.exhaustive = exhaustive
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
        mem = memory_ledger(self.spec, self.hw, TrainingSetup(batch=b, seq=self.seq, precision=self.precision,
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

    def admissible(self, x: Candidate) -> bool:
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
