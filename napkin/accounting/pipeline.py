"""Pipeline stages as frameworks build them: which layers each stage holds (even, uneven, interleaved) and how
many micro-batches of each of its model chunks it keeps in flight.

The split of L layers over P stages of V chunks each (chunk c of the model lives on stage c mod P, Narayanan et
al. 2021 §2.2.2), in this order of precedence:

1. first/last stage sizes (Megatron-LM ``--decoder-first-pipeline-num-layers`` /
   ``--decoder-last-pipeline-num-layers``): the other stages share the rest evenly; each stage's layers split
   evenly over its V chunks (megatron/core/transformer/transformer_block.py, get_num_layers_to_build);
2. embedding and loss counted as layers (``--account-for-embedding-in-pipeline-split``,
   ``--account-for-loss-in-pipeline-split``): L + 1 (+ 1) slots split evenly over the P·V chunks, the first chunk
   giving a slot to the embedding and the last to the loss (Llama 3.1 405B: 126 + 2 = 128 = 16 · 8);
3. P·V dividing L: L / (P·V) layers per chunk (Megatron-LM's default);
4. otherwise torchtitan's split (torchtitan/distributed/pipeline_parallel.py, generate_llm_fqn_per_model_part):
   L + 2 units (embedding and output weigh one layer each) over the P·V chunks, the first (L + 2) mod (P·V)
   chunks one more, the first chunk less the embedding and the last less the output.

In flight (Megatron-core pipeline_parallel/schedules.py): with 1F1B, stage i of P runs P − i − 1 warm-up forwards
before its first backward, so it holds min(P − i, m) micro-batches (Narayanan et al. 2021 §2.2.1). Interleaved,
it runs 2·(P − i − 1) + (V − 1)·g warm-up chunk forwards (at most m·V), chunk by chunk in groups of g = min(P, m)
micro-batches, and holds one more than that; a chunk holds those of its group (Korthikanti et al. 2022 §4.2.3:
the first stage's p·(1 + (p − 1)/(p·v)) micro-batches of a whole stage).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Literal, NamedTuple, Protocol

from napkin.errors import InputError


class Layout(Protocol):
    """What the split reads of a layout (layout.Layout; a protocol, so this module does not import it)."""

    @property
    def pp(self) -> int: ...
    @property
    def vp(self) -> int: ...
    @property
    def micro_batches(self) -> int: ...
    @property
    def first_stage_layers(self) -> int | None: ...
    @property
    def last_stage_layers(self) -> int | None: ...
    @property
    def embedding_in_split(self) -> bool: ...
    @property
    def loss_in_split(self) -> bool: ...

Role = Literal["first", "middle", "last", "only"]
MEGATRON_SPLIT = ("Megatron-LM megatron/core/transformer/transformer_block.py (get_num_layers_to_build): "
                  "--decoder-first/last-pipeline-num-layers, --account-for-embedding/loss-in-pipeline-split")
TORCHTITAN_SPLIT = ("torchtitan/distributed/pipeline_parallel.py, generate_llm_fqn_per_model_part (embedding and "
                    "output weigh one layer each)")
SCHEDULE = ("Megatron-core pipeline_parallel/schedules.py: 1F1B warm-up P − i − 1 forwards; interleaved "
            "2·(P − i − 1) + (V − 1)·P chunk forwards (Narayanan et al. 2021 §2.2; Korthikanti et al. 2022 §4.2.3)")


class PipelineStage(NamedTuple):
    """One pipeline stage: its index, role, and the layers of each of its model chunks."""

    number: int  # 0-based stage index
    role: Role
    chunks: tuple[tuple[int, int], ...]  # (lo, hi) per model chunk, in chunk order; hi == lo for an empty chunk

    @property
    def layers(self) -> int:
        return sum(hi - lo for lo, hi in self.chunks)

    @property
    def has_embedding(self) -> bool:
        return self.role in ("first", "only")

    @property
    def has_head(self) -> bool:
        return self.role in ("last", "only")


def _chunk_sizes(L: int, P: int, V: int, first: int | None, last: int | None, emb: bool, loss: bool
                 ) -> tuple[list[int], str]:
    """Layers of each of the P·V model chunks, in model order, and the rule that split them."""
    n = P * V
    if first is not None or last is not None:
        given = {0: first, P - 1: last}
        fixed = {i: v for i, v in given.items() if v is not None}
        rest_stages = P - len(fixed)
        rest = L - sum(fixed.values())
        if rest < 0 or (rest_stages == 0 and rest != 0):
            raise InputError(f"first/last stage layers ({first}, {last}) do not fit {L} layers on {P} stages; the "
                             f"other stages must hold the rest, {L} − {sum(fixed.values())}")
        if rest_stages and rest % rest_stages:
            raise InputError(f"the {rest} layers left after the first/last stages must split evenly over the other "
                             f"{rest_stages} stages, as Megatron-LM requires; adjust `first_stage_layers` / "
                             "`last_stage_layers`")
        per_stage = [fixed.get(i, rest // rest_stages if rest_stages else 0) for i in range(P)]
        if any(x % V for x in per_stage):
            raise InputError(f"with `vp` {V} each stage's layers ({', '.join(map(str, per_stage))}) must split evenly "
                             "over its chunks, as Megatron-LM requires")
        # chunk c (model order) is chunk c // P of stage c mod P
        return [per_stage[c % P] // V for c in range(n)], MEGATRON_SPLIT
    if emb or loss:
        slots = L + emb + loss
        if slots % n:
            raise InputError(f"embedding and loss counted as layers: {L} + {int(emb) + int(loss)} = {slots} must "
                             f"split evenly over pp·vp = {n} chunks, as Megatron-LM requires")
        sizes = [slots // n] * n
        sizes[0] -= emb
        sizes[-1] -= loss
        return sizes, MEGATRON_SPLIT
    if L % n == 0:
        return [L // n] * n, "Megatron-LM: L / (PP·VP) layers per chunk"
    units = L + 2
    if n > units:
        raise InputError(f"pp·vp = {n} chunks exceed the {L} layers (+ embedding and output); use fewer stages")
    per, extra = divmod(units, n)
    sizes = [per + (1 if c < extra else 0) for c in range(n)]
    sizes[0] -= 1
    sizes[-1] -= 1
    if min(sizes) < 0:
        raise InputError(f"pp·vp = {n} chunks leave a chunk without layers for {L} layers; use fewer stages")
    return sizes, TORCHTITAN_SPLIT


@functools.lru_cache(maxsize=4096)
def _split(L: int, P: int, V: int, first: int | None, last: int | None, emb: bool, loss: bool
           ) -> tuple[tuple[PipelineStage, ...], str]:
    sizes, rule = _chunk_sizes(L, P, V, first, last, emb, loss)
    bounds = [0]
    for x in sizes:
        bounds.append(bounds[-1] + x)
    out = []
    for i in range(P):
        chunks = tuple((bounds[c], bounds[c + 1]) for c in range(i, P * V, P))
        role: Role = "only" if P == 1 else "first" if i == 0 else "last" if i == P - 1 else "middle"
        out.append(PipelineStage(i, role, chunks))
    return tuple(out), rule


def pipeline_stages(L: int, lay: Layout) -> tuple[PipelineStage, ...]:
    """Every stage of the pipeline with the layers of each of its chunks (raises InputError for a split that
    cannot run)."""
    return _split(L, lay.pp, lay.vp, lay.first_stage_layers, lay.last_stage_layers, lay.embedding_in_split,
                  lay.loss_in_split)[0]


def split_rule(L: int, lay: Layout) -> str:
    """The source of the split ``pipeline_stages`` made."""
    return _split(L, lay.pp, lay.vp, lay.first_stage_layers, lay.last_stage_layers, lay.embedding_in_split,
                  lay.loss_in_split)[1]


def is_even(L: int, lay: Layout) -> bool:
    """Every chunk holds the same number of layers."""
    return len({hi - lo for st in pipeline_stages(L, lay) for lo, hi in st.chunks}) == 1


def chunk_in_flight(lay: Layout, stage: int) -> tuple[int, ...]:
    """Micro-batches each model chunk of stage ``stage`` holds at the peak of the schedule (module docstring)."""
    P, V, m = lay.pp, lay.vp, lay.micro_batches
    if P == 1:
        return (1,)
    if V == 1:
        return (min(P - stage, m),)
    group = min(P, m)  # micro-batches run through a chunk before the next (microbatch_group_size_per_vp_stage)
    held = min(2 * (P - stage - 1) + (V - 1) * group + 1, m * V)
    out = [0] * V
    j = 0
    while held and j < m * V:  # the j-th chunk forward: chunk (j // g) mod V, micro-batch (j // (g·V))·g + j mod g
        if (j // (group * V)) * group + j % group < m:
            out[(j // group) % V] += 1
            held -= 1
        j += 1
    return tuple(out)


def heaviest_stages(L: int, lay: Layout, content: Callable[[PipelineStage], Hashable] | None = None
                    ) -> list[PipelineStage]:
    """The stages that can be the fullest: the first, the last, and of the stages between, the earliest of each
    distinct content (``content``: by default the chunk sizes; give the layer kinds per chunk where they differ),
    since a later stage of the same content holds fewer micro-batches in flight."""
    stages = pipeline_stages(L, lay)
    if len(stages) <= 2:
        return list(stages)
    seen: set[Hashable] = set()
    out = [stages[0]]
    for st in stages[1:-1]:
        key = content(st) if content is not None else tuple(hi - lo for lo, hi in st.chunks)
        if key not in seen:
            seen.add(key)
            out.append(st)
    return out + [stages[-1]]
