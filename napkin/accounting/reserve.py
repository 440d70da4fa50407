"""Headroom: the memory per GPU a training process loses before its tensors, held back from every fit.

The ledger counts the tensors a run keeps; a real process also holds memory that no tensor accounts for. napkin
reserves a default of 2 GB per GPU for it, in three parts, each with its source:

- CUDA context and library workspaces, 0.5 GB: PyTorch measured the context of one process at 287 MB with lazy
  module loading and 667 MB without (pytorch/pytorch#86509; lazy loading is the default since CUDA 12.2, CUDA
  programming guide §4.7); cuBLAS keeps a workspace per stream on top (CUBLAS_WORKSPACE_CONFIG, a few MiB to
  tens of MiB per stream).
- NCCL communicator buffers, 0.5 GB: NCCL_BUFFSIZE is 4 MiB by default (NCCL environment variables) per channel,
  per peer and per direction; a ring or tree over NVLink runs up to 16-32 channels, so a communicator holds
  about 2·2·16·4 MiB = 256 MiB, and a layout has two or three busy ones (DP, TP, PP or EP).
- Allocator fragmentation, 1 GB: PyTorch's caching allocator rounds large blocks to 2 MiB and splits cached
  segments (c10/cuda/CUDACachingAllocator.cpp; the "reserved but unallocated" memory of an OOM message), which
  in a training loop of variable-sized activations costs a few percent of the memory in use.

The default is kept at 2 GB on purpose: on the calibration runs (benchmarks/calibration_memory.py) the pure-BF16
llm-foundry rows on A100-40GB trained with only 3.13 GB of memory the ledger does not account for, so the real
overhead there is below 3.13 GB (whatever else the ledger leaves out included); a reserve above ~3 GB would call
runs that trained "does not fit". `--reserve` (``reserve_bytes``) replaces it, 0 gives the lecture's nominal
memory. The model-state-only napkin (no architecture) keeps the lecture's nominal memory by default (reserve_of).
"""

from __future__ import annotations

from typing import NamedTuple

from napkin.results import Derivation, g


class ReservePart(NamedTuple):
    label: str
    bytes: float
    source: str


RESERVE_PARTS = (
    ReservePart("CUDA context and library workspaces", 0.5e9,
                "pytorch/pytorch#86509 (context 287 MB lazy, 667 MB eager); CUDA programming guide §4.7 (lazy "
                "loading)"),
    ReservePart("NCCL communicator buffers", 0.5e9,
                "NCCL environment variables: NCCL_BUFFSIZE 4 MiB per channel, peer and direction"),
    ReservePart("caching-allocator fragmentation", 1.0e9,
                "PyTorch c10/cuda/CUDACachingAllocator.cpp (2 MiB rounding, split cached segments)"),
)
DEFAULT_RESERVE_BYTES = sum(p.bytes for p in RESERVE_PARTS)  # 2 GB: below the 3.13 GB the calibration runs spare


def reserve_of(reserve_bytes: float | None, *, model_state_only: bool = False) -> float:
    """The reserve asked for, or the default (``None``). The model-state-only napkin (no architecture: `max-model`
    without activations, `memory --params`) is the lecture's question on the nominal memory (8 × 80e9 B / 16 B per
    parameter = 4.0e10), so its default is 0; both commands answer it the same way (issue 11)."""
    if reserve_bytes is None:
        return 0.0 if model_state_only else DEFAULT_RESERVE_BYTES
    return float(reserve_bytes)


def reserve_step(d: Derivation, reserve_bytes: float | None) -> float:
    """The reserve as a derivation step: the default's parts with their sources, or the value given."""
    if reserve_bytes is None:
        return d.add("reserve (default)", " + ".join(p.label for p in RESERVE_PARTS),
                     " + ".join(g(p.bytes) for p in RESERVE_PARTS), DEFAULT_RESERVE_BYTES, "B",
                     "; ".join(p.source for p in RESERVE_PARTS))
    return d.given("reserve", "reserve", float(reserve_bytes), "B", "input (--reserve)")
