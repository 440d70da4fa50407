"""`napkin plan --days`: the fewest GPUs (whole nodes) that train the tokens in time.

Days against GPUs is not monotone: the global batch must split over the data-parallel ranks and the layers over
the stages, so one GPU count can train slower than a smaller one (llama3.1-405b, batch 1024 × 8192 on H100:
14,336 GPUs in 57.7 days, 24,064 in 73.7). A bisection on that curve misses; this search does not. It asks every
whole-node count in turn, fewest first, "does any layout meet the deadline?", and stops at the first that does:

- it starts at the compute floor: no layout of G GPUs trains faster than the model FLOPs at the dense peak,
  D · F_token / (G · P), so fewer than D · F_token / (P · T) GPUs cannot meet T (Kaplan et al. 2020 §2.1 for the
  FLOPs; the peak is the datasheet's, above anything step_time predicts);
- for each count it takes the layouts by their step-time floor (StepFloor, the bound `napkin plan` prunes with),
  times those whose floor is within the deadline's step time t_max = T · B · s / D, and stops at the first that
  meets it (yes) or once the next floor is above t_max (no: a floor never exceeds the step it bounds).

The answer is then planned in full (`plan.py`'s search) for the result. ``fewest_gpus`` returns the count and the
counts asked; tests/test_plan.py checks the answer against every count below it on a non-monotone case.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

from napkin.accounting.layout import Layout, ZeroStage
from napkin.accounting.plan_search import Interrupted, Memory, enumerate_candidates, floor_first, shapes_of
from napkin.accounting.step_floor import StepFloor
from napkin.accounting.step_time import default_cluster, resolve_stack, step_time
from napkin.errors import InputError
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import TransformerSpec
from napkin.validation import Recompute

MAX_GPUS = 1 << 17  # 131,072: past the largest clusters built; the search gives up there
RECOMPUTES: tuple[Recompute, ...] = ("none", "selective", "full")


def compute_floor_gpus(spec: TransformerSpec, hw: HardwareSpec, *, seq: int, tokens: float, days: float,
                       precision: str) -> float:
    """GPUs below which no layout can train ``tokens`` in ``days``: D · F_token / (P · T), F_token the model FLOPs
    per token (forward + backward, napkin flops) and P the dense peak of the precision's compute dtype."""
    from napkin.accounting.flops import count_flops
    from napkin.accounting.model_state import get_precision

    per_token = count_flops(spec, 1.0, seq).model_flops
    peak = hw.peak(get_precision(precision).compute)
    return tokens * per_token / (peak * days * 86400)


class _Probe:
    """"Does any layout of G GPUs step within t_max?", sharing the step-time floor's caches across G (its layer
    costs depend on TP, CP, EP and the micro-batch, not on G)."""

    def __init__(self, spec: TransformerSpec, hw: HardwareSpec, i: Any, t_max: float) -> None:
        c = resolve_stack(getattr(i, "stack", None)).step_constants()  # the stack plan prices with (PlanInputs.stack)
        if i.calibration:
            from napkin.accounting.calibration import calibrate

            c, _ = calibrate(i.calibration, c, hw, spec, i.precision)
        self.spec, self.hw, self.i, self.t_max, self.c = spec, hw, i, t_max, c
        want_r = i.fix.get("recompute")
        self.recs = [cast(Recompute, str(want_r))] if want_r is not None else list(RECOMPUTES)
        self.cluster = default_cluster(hw, i.node_size, i.intra_node_bandwidth, i.inter_node_bandwidth)
        self.floor = StepFloor(spec, hw, seq=i.seq, cluster=self.cluster, precision=i.precision, constants=c)

    def meets(self, G: int) -> bool | None:
        """True: a layout of G GPUs steps within t_max; False: none does; None: no layout divides G."""
        i = self.i
        shapes = shapes_of(self.spec, G, i.global_batch, i.seq, i.node_size, i.max_tp, i.fix)
        if not shapes:
            return None
        cands, tightest = enumerate_candidates(shapes, G, i.global_batch, i.fix, self.recs, None)
        if not cands:
            return None
        mem = Memory(self.spec, self.hw, seq=i.seq, precision=i.precision, recs=self.recs, tightest=tightest,
                     exhaustive=False)
        for x in floor_first(cands, self.floor, tightest, self.recs, i.global_batch, [self.t_max], 1):
            if not mem.admissible(x):
                continue
            sh = shapes[x.shape]
            lay = Layout(gpus=G, tp=sh.tp, pp=sh.pp, vp=sh.vp, cp=sh.cp, ep=sh.ep, sp=sh.tp > 1,
                         zero=cast(ZeroStage, x.zero))
            st = step_time(self.spec, self.hw, layout=lay, micro_batch=x.b, recompute=self.recs[x.ri],
                           constants=self.c, ledger=False, seq=i.seq, global_batch=i.global_batch,
                           precision=i.precision, overlap_grad_reduce=True, node_size=i.node_size,
                           intra_node_bandwidth=i.intra_node_bandwidth, inter_node_bandwidth=i.inter_node_bandwidth)
            if st.step_time_s <= self.t_max:
                return True
        return False


def fewest_gpus(spec: TransformerSpec, hw: HardwareSpec, i: Any,
                progress: Callable[[int, int], None] | None = None) -> tuple[int, list[int], int]:
    """(the fewest GPUs, whole nodes, that train i.tokens in i.days; the counts asked, those with a layout; the
    compute floor's count, where the asking began)."""
    from napkin.results import numbers_only

    assert i.tokens is not None and i.days is not None
    node = i.node_size
    steps = i.tokens / (i.global_batch * i.seq)
    t_max = i.days * 86400 / steps  # the slowest step that still meets the deadline
    floor_gpus = compute_floor_gpus(spec, hw, seq=i.seq, tokens=i.tokens, days=i.days, precision=i.precision)
    first = max(1, math.ceil(floor_gpus / node * (1 - 1e-9)))  # whole nodes
    probe = _Probe(spec, hw, i, t_max)
    asked: list[int] = []
    last = MAX_GPUS // node
    with numbers_only():
        try:
            for k in range(first, last + 1):
                if progress is not None:
                    progress(k - first, last - first + 1)
                ok = probe.meets(k * node)
                if ok is None:
                    continue
                asked.append(k * node)
                if ok:
                    return k * node, asked, first * node
        except KeyboardInterrupt:  # fewest first: no count asked so far meets the deadline, so there is no answer
            what = (f"{len(asked)} GPU count{'s' if len(asked) > 1 else ''} with a layout asked, {asked[0]:,} to "
                    f"{asked[-1]:,}, none meets the deadline: the fewest is above {asked[-1]:,}" if asked
                    else "no GPU count asked yet")
            raise Interrupted(f"interrupted (Ctrl-C) while asking GPU counts from {first * node:,} up, fewest first: "
                              f"{what}") from None
    raise InputError(f"no cluster up to {MAX_GPUS:,} × {hw.name} trains {i.tokens:g} tokens of {spec.name} in "
                     f"{i.days:g} days; allow more days")
