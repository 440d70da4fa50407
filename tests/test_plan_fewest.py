"""`plan --days`: the fewest GPUs that really are (issue 24 item 2), on a case where days against GPUs is not monotone.

The truth is drawn by brute force: every whole-node count planned in full. The deadlines are taken from that curve,
among them those where a bisection over the node count (what `plan --days` did before) answers more GPUs than needed.
"""

from __future__ import annotations

import pytest

from napkin.accounting.plan import plan
from napkin.accounting.plan_fewest import compute_floor_gpus
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware
from napkin.specs.model import transformer_from_shape

# 126 layers (as Llama 3.1 405B: 2·3²·7) and a global batch of 96 = 3·32: whole-node counts with a factor 3 split the
# batch over more data-parallel ranks than the powers of two around them, so days jump up and down with G.
SPEC = transformer_from_shape(None, layers=126, d_model=2048, heads=16, kv_heads=8)
H100 = get_hardware("h100")
B, S, D, NODE, NODES = 96, 4096, 1e11, 8, 40


@pytest.fixture(scope="module")
def curve() -> dict[int, float]:
    """days at the fastest layout, for every whole-node count that has one (brute force, plan in full)."""
    out = {}
    for k in range(1, NODES + 1):
        try:
            out[k * NODE] = plan(SPEC, H100, gpus=k * NODE, global_batch=B, seq=S, tokens=D, top=1).days
        except InputError:
            pass
    return out


def _bisection(curve: dict[int, float], T: float) -> int | None:
    """What the old search answered: double the nodes until in time, then bisect (as if days fell with G)."""
    def ok(k: int) -> bool:
        return curve.get(k * NODE, float("inf")) <= T

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > NODES:
            return None
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        hi, lo = (mid, lo) if ok(mid) else (hi, mid)
    return hi * NODE


def test_the_case_is_not_monotone(curve):
    gs = sorted(curve)
    assert any(curve[a] < curve[b] for a, b in zip(gs, gs[1:], strict=False)), "days fall with every GPU: no case"


def test_the_compute_floor_is_below_every_layout(curve):
    for G, days in curve.items():
        assert compute_floor_gpus(SPEC, H100, seq=S, tokens=D, days=days, precision="bf16-mixed") <= G


def test_fewest_gpus_is_the_fewest_that_meets_the_deadline(curve):
    deadlines = sorted(set(curve.values()))
    missed = [T for T in deadlines if _bisection(curve, T) not in (None, min(G for G in curve if curve[G] <= T))]
    chosen = sorted(set(missed[:3] + deadlines[len(deadlines) // 2::7]))
    for T in chosen:
        T *= 1 + 1e-9
        truth = min(G for G in curve if curve[G] <= T)
        if truth == max(curve):  # the answer could lie past the brute-forced range
            continue
        r = plan(SPEC, H100, global_batch=B, seq=S, tokens=D, days=T, top=1)
        assert r.gpus == truth, (T, r.gpus, truth, _bisection(curve, T))
        assert r.days <= T
        assert r.gpu_counts_tried[-1] == truth and all(G < truth for G in r.gpu_counts_tried[:-1])
        assert all(curve.get(G, float("inf")) > T for G in r.gpu_counts_tried[:-1])
        assert "fewest GPUs" in r.notes[0] and f"{truth:,} GPUs" in r.notes[0]


def test_a_bisection_would_have_missed_here(curve):
    """The reason for the search: on this curve some deadline fools a bisection (it answers more GPUs)."""
    missed = [T for T in sorted(set(curve.values()))
              if _bisection(curve, T) not in (None, min(G for G in curve if curve[G] <= T))]
    assert missed, "no deadline fools a bisection on this curve; pick a case that does"
