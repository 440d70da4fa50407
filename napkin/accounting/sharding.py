"""How a training setup splits one model over G GPUs: data, tensor and pipeline parallelism, ZeRO.

G = DP · TP · PP (Megatron-LM, Narayanan et al. 2021, §2.2-2.3). Tensor parallelism divides each
layer's weights (and its inner activations) by TP; pipeline parallelism gives each stage L/PP
layers; ZeRO (Rajbhandari et al. 2020, §5) divides model-state parts by the data-parallel
degree DP = G / (TP · PP). This module only validates the setup and says who holds what; the
byte counts live in model_state.py (per parameter) and activations.py (per token).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from napkin.errors import InputError
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, PositiveInt

MEGATRON = "Narayanan et al. 2021, Efficient Large-Scale LM Training on GPU Clusters (Megatron-LM), §2"
ONE_F_ONE_B = ("Narayanan et al. 2021 §2.2.1 (1F1B schedule); Korthikanti et al. 2022 §4.2.3 "
               "(the first stage holds p micro-batches)")

Stage = Literal["first", "last", "only"]


class Parallelism(Inputs):
    """The parallel layout of a training run."""

    gpus: PositiveInt = 1
    tp: PositiveInt = Field(default=1, description="tensor-parallel degree")
    pp: PositiveInt = Field(default=1, description="pipeline-parallel degree (stages)")
    sp: bool = Field(default=False, description="Megatron sequence parallelism (needs tp > 1 to matter)")
    zero: Literal[0, 1, 2, 3] = Field(default=0, description="ZeRO stage over the data-parallel ranks")
    micro_batches: PositiveInt = Field(default=1, description="micro-batches per optimizer step (per pipeline)")

    @property
    def dp(self) -> int:
        """Data-parallel degree: G / (TP · PP)."""
        return self.gpus // (self.tp * self.pp)

    def in_flight(self, stage: Stage) -> int:
        """Micro-batches whose activations a stage holds at once under 1F1B.

        Stage i of p has min(p - i, m) in flight; the first stage the most, the last one.
        """
        if stage == "last" or self.pp == 1:
            return 1
        return min(self.pp, self.micro_batches)


def check_parallelism(par: Parallelism, spec: TransformerSpec | LinearSpec | None) -> None:
    """Refuse layouts that cannot run, each with one line saying what would be right."""
    t, p, G = par.tp, par.pp, par.gpus
    if G % (t * p):
        raise InputError(f"tp·pp = {t}·{p} = {t * p} must divide gpus ({G}); use a multiple of {t * p} GPUs "
                         f"or smaller --tp/--pp")
    if par.zero and par.dp == 1:
        raise InputError(f"ZeRO-{par.zero} shards over data-parallel ranks, but DP = gpus / (tp·pp) = {G} / {t * p} "
                         f"= 1; use --zero 0 or more GPUs")
    if isinstance(spec, LinearSpec):
        if t > 1 or p > 1:
            raise InputError(f"{spec.name} is a deep linear network; napkin splits it over data-parallel ranks only "
                             f"(use --tp 1 --pp 1)")
        return
    if spec is None:
        if t > 1 or p > 1:
            raise InputError("--tp/--pp need an architecture (--model) to split; with --params use data "
                             "parallelism (--gpus, --zero)")
        return
    heads = spec.heads
    if heads % t:
        raise InputError(f"tp ({t}) must divide the attention heads of {spec.name} ({heads}); "
                         f"use a divisor of {heads}")
    k = spec.n_kv_heads
    if spec.mla is None and k % t:
        raise InputError(f"tp ({t}) must divide the kv heads of {spec.name} ({k}), as Megatron-LM requires; "
                         f"use a divisor of {k}")
    if p > spec.layers:
        raise InputError(f"pp ({p}) exceeds the layers of {spec.name} ({spec.layers}); use at most {spec.layers} "
                         "pipeline stages")


def layers_per_stage(layers: int, pp: int) -> int:
    """Layers on the fullest pipeline stage: ⌈L / pp⌉. When pp does not divide L (Llama 3 405B: 126 layers on
    16 stages, Dubey et al. 2024 §3.3.2) some stage holds this many; napkin counts it for the stages it shows."""
    return -(-layers // pp)


def stages(par: Parallelism) -> list[Stage]:
    """Pipeline stages whose memory differs: one when PP = 1, else the first and the last."""
    return ["only"] if par.pp == 1 else ["first", "last"]


def stage_params(components: dict[str, int], layers: int, par: Parallelism, stage: Stage,
                 tied: bool) -> tuple[float, str]:
    """Parameters one GPU holds before ZeRO: its stage's share, divided by TP.

    Per-layer components (attention, FFN, layer norms) split evenly over the PP stages; the first
    stage adds the embeddings, the last the final norm and the LM head (a tied head keeps a copy
    of the embedding matrix on the last stage, as Megatron-LM does). TP divides everything; the
    few replicated norm weights are ignored (h per layer).
    """
    emb = components.get("embedding.tokens", 0) + components.get("embedding.positions", 0)
    head = components.get("head", 0) + components.get("norms.final", 0)
    if tied and par.pp > 1:
        head += components.get("embedding.tokens", 0)
    body = sum(v for k, v in components.items() if not k.startswith(("embedding.", "head", "norms.final")))
    per = layers_per_stage(layers, par.pp) if layers else 0
    per_stage_body = body * per / layers if layers else body
    if stage == "only":
        n, what = emb + body + head, "all parameters"
    elif stage == "first":
        n, what = emb + per_stage_body, f"embeddings + {per} of {layers} layers"
    else:
        n, what = per_stage_body + head, f"{per} of {layers} layers + final norm + LM head"
    return n / par.tp, what + (f", / tp {par.tp}" if par.tp > 1 else "")
