"""Achieved throughput of fused attention kernels, as published: a fraction of the GPU's dense BF16 peak as a
function of the kernel, the GPU architecture, head dimension, sequence length, causal masking and direction.

The figures are facts carried over from their source, not fitted: TFLOP/s per sequence length (512 … 16k) for
FlashAttention-2, cuDNN and FlashAttention-3 on H100 80GB SXM5 in BF16 (Shah et al. 2024, FlashAttention-3,
arXiv 2407.08608, §4.1 "Benchmarking attention": the forward figures, causal and not, and the backward figures, for
head dimensions 64 and 128; batch × seq = 16k tokens, hidden 2048). FLOPs are counted as the benchmarks count them:
4·s²·d·heads forward (halved when causal), 2.5× that backward, which is napkin's attention FLOP count (the causal
mean context) with the same 2.5× backward.

Where a figure is not published it is derived, and the derivation named:
  * causal backward = the (non-causal) backward figure × causal forward / non-causal forward at the same length
    (the FA3 paper plots backward without the causal mask; masking costs the backward what it costs the forward);
  * head dim 64 causal forward = its non-causal forward × the head-dim-128 causal/non-causal ratio;
  * A100 (Ampere): FlashAttention-2 only (FA3 is Hopper-only; cuDNN is not published for A100 there). Its level
    is the FlashAttention-2 paper's (Dao 2023, abstract and §4.1: 50–73% of the A100's peak, up to 73% forward at
    head dim 128): the H100 FlashAttention-2 curve's shape, scaled so its non-causal forward plateau is 0.73;
  * head dims between 64 and 128 interpolate linearly, others clamp to the nearer; lengths interpolate in log2(s)
    and clamp to 512 … 16k (the curves are flat by 8k–16k);
  * Blackwell: no published figures here: the Hopper fractions (an uncalibrated regime: step-time warns).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

Kernel = Literal["fa2", "fa3", "cudnn"]
Direction = Literal["forward", "backward"]

SRC_FA3 = ("Shah et al. 2024 (FlashAttention-3, arXiv 2407.08608) §4.1: forward and backward TFLOP/s of FA2, cuDNN "
           "and FA3 on H100 80GB SXM5, BF16, head dims 64 and 128, seq 512–16k")
SRC_FA2 = "Dao 2023 (FlashAttention-2) abstract and §4.1: 50–73% of A100 peak, up to 73% forward (head dim 128)"
H100_BF16_PEAK_TFLOPS = 989.5  # the dense BF16 peak the FA3 paper's TFLOP/s are a fraction of (H100 SXM datasheet)
SEQS = (512, 1024, 2048, 4096, 8192, 16384)  # the published lengths
A100_FA2_FORWARD_PLATEAU = 0.73  # FA2 paper: up to 73% of A100's 312 TFLOP/s forward

# TFLOP/s on H100 SXM5, BF16, at SEQS: (kernel, head dim) -> (forward non-causal, forward causal, backward)
_H100: dict[tuple[str, int], tuple[tuple[float, ...], tuple[float, ...] | None, tuple[float, ...]]] = {
    ("fa2", 128): ((309, 350, 362, 368, 370, 370), (191, 260, 298, 319, 333, 335), (214, 260, 291, 310, 318, 322)),
    ("cudnn", 128): ((497, 574, 617, 609, 600, 595), (315, 410, 484, 518, 529, 539), (305, 408, 465, 499, 518, 516)),
    ("fa3", 128): ((467, 565, 625, 638, 646, 648), (292, 423, 521, 579, 602, 616), (316, 424, 501, 542, 559, 561)),
    ("fa2", 64): ((282, 306, 318, 321, 322, 324), None, (198, 238, 264, 279, 287, 291)),
    ("cudnn", 64): ((335, 373, 395, 408, 412, 413), None, (266, 348, 395, 417, 432, 433)),
    ("fa3", 64): ((333, 392, 460, 476, 496, 497), None, (272, 363, 422, 453, 472, 474)),
}


def _interp(curve: tuple[float, ...], s: float) -> float:
    x = min(max(math.log2(max(s, 1.0)), math.log2(SEQS[0])), math.log2(SEQS[-1]))
    i = min(int(x - math.log2(SEQS[0])), len(SEQS) - 2)
    t = x - math.log2(SEQS[i])
    return curve[i] + t * (curve[i + 1] - curve[i])


@functools.lru_cache(maxsize=4096)
def _h100(kernel: str, d: int, direction: str, causal: bool, s: float) -> float:
    """TFLOP/s on H100 at head dim d (64 or 128) as published, or derived as the module says."""
    fwd, fwd_c, bwd = _H100[(kernel, d)]
    _, fwd_c128, _ = _H100[(kernel, 128)]
    assert fwd_c128 is not None
    mask = _interp(fwd_c128, s) / _interp(_H100[(kernel, 128)][0], s)  # what the causal mask costs, at head dim 128
    if direction == "forward":
        return _interp(fwd_c, s) if (causal and fwd_c is not None) else _interp(fwd, s) * (mask if causal else 1.0)
    return _interp(bwd, s) * (mask if causal else 1.0)


def attention_fraction(kernel: str, architecture: str | None, direction: Direction, causal: bool, s: float,
                       d_head: int) -> float | None:
    """Fraction of the dense BF16 peak that ``kernel`` reaches (published or derived, see the module); None where
    nothing is published for the architecture (the caller falls back to its flat efficiency)."""
    if architecture not in ("Hopper", "Ampere", "Blackwell"):
        return None
    k = "fa2" if architecture == "Ampere" else kernel  # on Ampere only FlashAttention-2 is published
    lo, hi = (64, 128) if d_head < 128 else (128, 128)
    dd = min(max(d_head, 64), 128)
    a, b = _h100(k, lo, direction, causal, s), _h100(k, hi, direction, causal, s)
    tflops = a + (b - a) * (dd - lo) / (hi - lo) if hi > lo else b
    frac = tflops / H100_BF16_PEAK_TFLOPS
    if architecture == "Ampere":  # FA2 paper level: the H100 FA2 shape scaled to a 0.73 forward plateau
        frac *= A100_FORWARD_SCALE
    return frac


A100_FORWARD_SCALE = A100_FA2_FORWARD_PLATEAU / (_H100[("fa2", 128)][0][-1] / H100_BF16_PEAK_TFLOPS)
