"""The layout search behind `napkin plan`: the candidates, their order by a floor on the step time, and the
memory answers (a ledger where one must be drawn, else what follows from those drawn).

``plan.py`` asks the question and explains the answer; this module finds it. The rules are in plan.py's
docstring; tests/test_plan_bound.py checks that the bounded search answers as the exhaustive one.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from napkin.accounting.layers import layer_plan
from napkin.accounting.layout import Layout, ZeroStage, data_parallel
from napkin.accounting.reserve import reserve_of
from napkin.accounting.step_floor import StepFloor
from napkin.errors import InputError
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import TransformerSpec
from napkin.validation import Recompute

if TYPE_CHECKING:
    from napkin.accounting.memory import MemoryResult

class Interrupted(InputError):
    """Ctrl-C before the search had anything to answer with."""


MIN_CP_CHUNK = 1024  # tokens per CP rank below which ring attention's exchanges dominate (CP is for long contexts)
MAX_VP = 8  # interleaving deeper than this is rare in practice (Megatron examples use 2–6) and only adds sends


class Shape(NamedTuple):
    """The model-parallel degrees of a layout: what divides the model and the GPUs."""

    tp: int
    cp: int
    pp: int
    vp: int
    ep: int


class ShapeBatch(NamedTuple):
    """A shape (its index in the search's shapes) at one micro-batch: what the tightest layout is kept for."""

    shape: int
    b: int


class FitKey(NamedTuple):
    """One memory question: a shape at a micro-batch, a ZeRO stage and a recompute (an index into those tried)."""

    shape: int
    b: int
    zero: int
    ri: int


class ActKey(NamedTuple):
    """What one layer's kept activations depend on: the same on every stage, PP, VP and ZeRO stage."""

    tp: int
    cp: int
    sp: bool
    b: int
    ri: int


class StateKey(NamedTuple):
    """What a stage's model state depends on: the same at every micro-batch and recompute."""

    shape: int
    zero: int


class GroupKey(NamedTuple):
    """The candidates that share one floor under all their PP, VP and ZeRO stages (StepFloor.any_pipeline)."""

    tp: int
    cp: int
    ep: int
    b: int
    ri: int


class Candidate(NamedTuple):
    """One layout of the search (a shape, its micro-batch, ZeRO stage and recompute), in enumeration order."""

    order: int
    shape: int  # index into the shapes
    b: int
    m: int
    zero: int
    ri: int  # index into the recomputations tried
    lower: tuple[int, ...]  # the lower ZeRO stages of its group (taken first when they fit)

    @property
    def fit_key(self) -> FitKey:
        return FitKey(self.shape, self.b, self.zero, self.ri)


def divisors(n: int) -> list[int]:
    """The divisors of n, ascending."""
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def shapes_of(spec: TransformerSpec, G: int, B: int, s: int, node: int, max_tp: int | None,
              fix: dict[str, Any]) -> list[Shape]:
    """The shapes (tp, cp, pp, vp, ep) that divide the model and the GPUs."""
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
                        shape = Shape(tp=t, cp=c, pp=p, vp=v, ep=e)
                        if all(getattr(shape, k) == fix[k] for k in fix if k in Shape._fields):
                            out.append(shape)
    return out


def enumerate_candidates(shapes: list[Shape], G: int, global_batch: int, fix: dict[str, Any], recs: list[Recompute],
                         progress: Callable[[int, int], None] | None
                         ) -> tuple[list[Candidate], dict[ShapeBatch, Layout]]:
    """Every (shape, micro-batch, ZeRO stage, recompute) the dominance rules leave, in enumeration order, and each
    (shape, micro-batch)'s layout at its smallest-footprint ZeRO stage."""
    want_z, want_b = fix.get("zero"), fix.get("micro_batch")
    cands: list[Candidate] = []
    tightest: dict[ShapeBatch, Layout] = {}
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
            tightest[ShapeBatch(n, b)] = tight
            for zs in groups:
                for pos, z in enumerate(zs):
                    for ri in range(len(recs)):
                        cands.append(Candidate(len(cands), n, b, local // b, z, ri, tuple(zs[:pos])))
    return cands, tightest


def floor_first(cands: list[Candidate], floor: StepFloor, tightest: Mapping[ShapeBatch, Layout],
                 recs: list[Recompute], global_batch: int, best: list[float], k: int) -> Iterator[Candidate]:
    """The candidates by the floor of their step time, lowest first, until the next floor is above the k-th
    fastest step in ``best`` (which the caller fills as it times): nothing left can enter the top then.

    The candidates of one TP, CP, EP, micro-batch and recompute share a floor under all their PP, VP and ZeRO
    stages (StepFloor.any_pipeline); their own floors are drawn only once that one comes up."""
    grouped: dict[GroupKey, list[Candidate]] = {}
    for x in cands:
        lay = tightest[ShapeBatch(x.shape, x.b)]
        grouped.setdefault(GroupKey(lay.tp, lay.cp, lay.ep, x.b, x.ri), []).append(x)
    groups = sorted((floor.any_pipeline(tightest[ShapeBatch(xs[0].shape, xs[0].b)], gk.b, recs[gk.ri], global_batch),
                     n, gk) for n, (gk, xs) in enumerate(grouped.items()))
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
            lay = tightest[ShapeBatch(x.shape, x.b)]
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
                 tightest: Mapping[ShapeBatch, Layout], exhaustive: bool, reserve_bytes: float | None = None) -> None:
        self.spec, self.hw, self.seq, self.precision, self.recs = spec, hw, seq, precision, recs
        self.reserve_bytes = reserve_bytes
        self.usable = hw.memory_bytes - reserve_of(reserve_bytes)  # what every ledger compares with
        self.exhaustive = exhaustive
        self.tightest = tightest  # (shape, b) -> its layout at the tightest ZeRO stage (enumerate_candidates')
        self.fits: dict[FitKey, bool] = {}
        self.totals: dict[FitKey, float] = {}  # where a ledger was drawn
        self.drawn: dict[int, list[tuple[FitKey, bool]]] = {}  # shape -> the answers known for it
        # one layer's kept activations, where every layer is of one kind (a plain dense stack): a floor per layer
        self.one_kind = len(layer_plan(spec).kinds) == 1 and spec.moe is None
        self.per_layer: dict[ActKey, float] = {}
        self.state: dict[StateKey, tuple[str, float]] = {}  # a stage and its model state

    def ledger(self, key: FitKey, m: int) -> MemoryResult:
        from napkin.accounting.memory import TrainingSetup, memory_ledger

        lay = self.tightest[ShapeBatch(key.shape, key.b)].model_copy(update={"zero": key.zero, "micro_batches": m})
        mem = memory_ledger(self.spec, self.hw, TrainingSetup(micro_batch=key.b, seq=self.seq, precision=self.precision,
                                                              recompute=self.recs[key.ri]), lay,
                            reserve_bytes=self.reserve_bytes)
        self.fits[key], self.totals[key] = mem.fits, mem.total_bytes
        self.drawn.setdefault(key.shape, []).append((key, mem.fits))
        if mem.activations is not None:
            if self.one_kind:
                self.per_layer[ActKey(lay.tp, lay.cp, lay.sp, key.b, key.ri)] = mem.activations.per_layer_bytes
            sk = StateKey(key.shape, key.zero)
            if sk not in self.state or mem.stage != "last":  # the first stage's, where there is a choice
                self.state[sk] = (mem.stage, mem.total_bytes - mem.activations.total_bytes)
        return mem

    def fit(self, key: FitKey, m: int) -> bool:
        """Whether ``key`` fits (with m micro-batches): known, inferred, or from its ledger."""
        if key in self.fits:
            return self.fits[key]
        if not self.exhaustive:
            for k0, ok in self.drawn.get(key.shape, ()):
                if (ok and key.b <= k0.b and key.zero >= k0.zero and key.ri >= k0.ri
                        or not ok and key.b >= k0.b and key.zero <= k0.zero and key.ri <= k0.ri):
                    return ok
            lay = self.tightest[ShapeBatch(key.shape, key.b)]
            a = self.per_layer.get(ActKey(lay.tp, lay.cp, lay.sp, key.b, key.ri))
            acts = 0.0 if a is None else a * lay.model_copy(update={"micro_batches": m}).held(self.spec.layers)
            where, held = self.state.get(StateKey(key.shape, key.zero), ("", 0.0))
            if (held + acts if where in ("first", "only") else max(held, acts)) > self.usable:
                self.fits[key] = False
                self.drawn.setdefault(key.shape, []).append((key, False))
                return False
        return self.ledger(key, m).fits

    def admissible(self, x: Candidate) -> bool:
        """It fits, with the lightest recompute that fits its ZeRO stage, and no lower stage of its group fits
        with a recompute as light (the same time, more memory); one admitted has its own ledger (its row shows
        the total)."""
        n, b, m = x.shape, x.b, x.m
        if not self.fit(FitKey(n, b, self.tightest[ShapeBatch(n, b)].zero, len(self.recs) - 1), m):
            return False  # nothing of (n, b) fits
        return (all(not self.fit(FitKey(n, b, x.zero, rj), m) for rj in range(x.ri))
                and all(not self.fit(FitKey(n, b, zl, rj), m) for zl in x.lower for rj in range(x.ri + 1))
                and self.fit(x.fit_key, m)
                and (x.fit_key in self.totals or self.ledger(x.fit_key, m).fits))

    def smallest(self, global_batch: int) -> tuple[float, str] | None:
        """Where nothing fits: the smallest footprint, each shape's smallest micro-batch at its tightest setting
        (memory grows with the micro-batch and shrinks with ZeRO and recompute), first in enumeration on a tie."""
        firsts: dict[int, int] = {}
        for n, b in self.tightest:
            firsts.setdefault(n, b)  # micro-batches ascend within a shape
        out: tuple[float, str] | None = None
        for n, b in firsts.items():
            lay = self.tightest[ShapeBatch(n, b)]
            mem = self.ledger(FitKey(n, b, lay.zero, len(self.recs) - 1), global_batch // lay.dp // b)
            if out is None or mem.total_bytes < out[0]:
                out = (mem.total_bytes, f"{lay.describe()}, micro-batch {b}, recompute {self.recs[-1]}")
        return out
