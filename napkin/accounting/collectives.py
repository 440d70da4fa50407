"""Collective-communication cost factors, shared by the serving napkin and the all-reduce benchmark."""

from __future__ import annotations


def ring_allreduce_factor(n: int) -> float:
    """Bytes each rank sends per byte reduced in a ring all-reduce over n ranks: 2(n−1)/n.

    Patarasuk & Yuan 2009 (bandwidth-optimal all-reduce: reduce-scatter then all-gather, n−1 steps each);
    nccl-tests doc/PERFORMANCE.md uses the same factor to turn algbw into busbw.
    """
    return 2 * (n - 1) / n
