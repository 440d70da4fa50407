"""Collective communication: α–β costs of the collectives a training step runs, and which link a group crosses.

Bytes each rank moves per byte of the message, as nccl-tests defines them (doc/PERFORMANCE.md: busbw =
algbw × factor): all-reduce 2(n−1)/n, reduce-scatter and all-gather (n−1)/n, all-to-all (n−1)/n, a
point-to-point send 1. A collective of S bytes over n ranks then takes

    t = α + factor(n) · S / BW_bus

with BW_bus the bus bandwidth a rank reaches on the slowest link its group crosses (per direction) and α a
fixed latency per call (Hockney 1994, the α–β model; Thakur et al. 2005 for the ring algorithms).

Placement follows Megatron-LM's default rank order (``tp-cp-ep-dp-pp``: TP innermost, PP outermost) over nodes
of ``node_size`` GPUs: a group whose members are ``stride`` ranks apart and spans more than one node runs at the
scale-out bandwidth, shared by the groups of a node: with k of its members per node a group gets k NICs' worth
(NCCL spreads its rings over the node's NICs), never more than the scale-up link.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Collective = Literal["all-reduce", "reduce-scatter", "all-gather", "all-to-all", "p2p"]

SRC_NCCL = ("nccl-tests doc/PERFORMANCE.md (busbw factors: all-reduce 2(n−1)/n, reduce-scatter / all-gather / "
            "all-to-all (n−1)/n); Hockney 1994 (α–β model)")
SRC_PLACEMENT = ("Megatron-LM default rank order tp-cp-ep-dp-pp (TP innermost); a group spanning nodes runs at the "
                 "scale-out bandwidth of its members per node")


def ring_allreduce_factor(n: int) -> float:
    """Bytes each rank sends per byte reduced in a ring all-reduce over n ranks: 2(n−1)/n.

    Patarasuk & Yuan 2009 (bandwidth-optimal all-reduce: reduce-scatter then all-gather, n−1 steps each);
    nccl-tests doc/PERFORMANCE.md uses the same factor to turn algbw into busbw.
    """
    return 2 * (n - 1) / n


def bus_factor(kind: Collective, n: int) -> float:
    """Bytes a rank moves per byte of the message (nccl-tests' algbw → busbw factor)."""
    if kind == "p2p":
        return 1.0
    if n <= 1:
        return 0.0
    if kind == "all-reduce":
        return ring_allreduce_factor(n)
    return (n - 1) / n


class Link(NamedTuple):
    """What a group of ranks runs on: its bus bandwidth per rank (per direction) and latency per call."""

    bandwidth_bytes_per_s: float
    latency_s: float
    tier: Literal["intra-node", "inter-node", "none"]
    members_per_node: int


def collective_time(kind: Collective, message_bytes: float, n: int, link: Link) -> float:
    """α + factor(n)·S/B: one call of a collective of ``message_bytes`` over ``n`` ranks (0 when n = 1)."""
    if (n <= 1 and kind != "p2p") or message_bytes <= 0:
        return 0.0
    return link.latency_s + bus_factor(kind, n) * message_bytes / link.bandwidth_bytes_per_s


def collective_text(kind: Collective, message_bytes: float, n: int, link: Link) -> str:
    """``collective_time``'s arithmetic with its numbers substituted (α + factor·S/B), for a derivation step."""
    from napkin.results import g

    if (n <= 1 and kind != "p2p") or message_bytes <= 0:
        return "0"
    factor = {"all-reduce": f"2 × ({n} − 1) / {n} × ", "p2p": ""}.get(kind, f"({n} − 1) / {n} × ")
    return f"{g(link.latency_s)} + {factor}{g(message_bytes)} / {g(link.bandwidth_bytes_per_s)}"


def place(size: int, stride: int, node_size: int, intra: Link, inter: Link) -> Link:
    """The link a group of ``size`` ranks, ``stride`` ranks apart, runs on over nodes of ``node_size`` GPUs."""
    if size <= 1:
        return Link(intra.bandwidth_bytes_per_s, 0.0, "none", 1)
    if stride * size <= node_size:
        return intra._replace(members_per_node=size)
    k = max(1, min(size, node_size // stride)) if stride < node_size else 1
    bw = min(k * inter.bandwidth_bytes_per_s, intra.bandwidth_bytes_per_s)
    return Link(bw, inter.latency_s, "inter-node", k)
