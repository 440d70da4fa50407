"""The training-compute rule of thumb, C ≈ 6·N·D, in one place: napkin.accounting.flops (6ND beside the exact
count), napkin.accounting.training (days from params and tokens) and napkin.accounting.mfu (6N per token) call it.

Light on purpose (no architecture imports): the 6ND commands stay fast.
"""

from __future__ import annotations

# Kaplan et al. 2020 §2.1: 2 FLOPs per parameter per token forward, 4 backward (gradients w.r.t. inputs and weights)
FLOPS_PER_PARAM_TOKEN = 6


def six_nd(params: float, tokens: float) -> float:
    """C = 6 · N · D training FLOPs of N parameters on D tokens (Kaplan et al. 2020 §2.1; the lecture's napkin)."""
    return FLOPS_PER_PARAM_TOKEN * params * tokens
