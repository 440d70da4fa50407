"""The parallel layout of a training run: one typed object every module takes, DP computed in one place.

G = TP · CP · DP · PP (Megatron-LM: Narayanan et al. 2021 §2.2-2.3; context parallelism: Megatron-core's
``context_parallel_size``, Liu et al. 2023 ring attention). Tensor parallelism divides each layer's weights
(and its inner activations) by TP; context parallelism splits the sequence over CP ranks; pipeline
parallelism gives each stage L/PP layers (in VP interleaved chunks); expert parallelism splits the routed
experts over EP ranks inside the data-parallel group, whose expert weights then have a data-parallel group
of DP/EP (Megatron-core MoE); ZeRO (Rajbhandari et al. 2020, §5) divides model-state parts by the
data-parallel degree. This module only validates the layout and says who holds what; the byte counts live
in model_state.py (per parameter) and activations.py (per token).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field

from napkin.errors import InputError
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, PositiveInt

ONE_F_ONE_B = ("Narayanan et al. 2021 §2.2.1 (1F1B schedule); Korthikanti et al. 2022 §4.2.3 "
               "(the first stage holds p micro-batches)")

Stage = Literal["first", "last", "only"]
ZeroStage = Literal[0, 1, 2, 3]  # ZeRO (Rajbhandari et al. 2020 §5): shard nothing / optimizer / + grads / + params


INTERLEAVED = ("Narayanan et al. 2021 §2.2.2 (interleaved 1F1B); Korthikanti et al. 2022 §4.2.3: the first stage "
               "holds p·(1 + (p−1)/(p·v)) micro-batches of activations")


def data_parallel(gpus: int, tp: int = 1, cp: int = 1, pp: int = 1) -> int:
    """DP = G / (TP · CP · PP): the GPUs over the ranks that hold one replica (Narayanan et al. 2021 §2.3)."""
    return gpus // (tp * cp * pp)


def default_zero(par: Layout) -> int:
    """The ZeRO stage when none is given: 3 over more than one data-parallel rank (FSDP), else 0 (nothing to shard)."""
    return 3 if par.dp > 1 else 0


def both_given(group: str, cls: str, names: str) -> InputError:
    """The one error of every function that takes a setup object or its keywords: both were given."""
    return InputError(f"give the {group} setup as {group}={cls}(...) or as keywords ({names}), not both")


def layout_from(layout: Layout | None, **keywords: object) -> Layout:
    """``layout`` as given, or built from the keywords given (those not None); both at once is refused."""
    given = {k: v for k, v in keywords.items() if v is not None}
    if layout is not None:
        if given:
            raise both_given("layout", "Layout", ", ".join(given))
        return layout
    from napkin.validation import validated

    return validated(Layout, **given)


class Layout(Inputs):
    """The parallel layout of a training run: G GPUs as TP × CP × DP × PP, with EP inside DP."""

    gpus: PositiveInt = 1
    tp: PositiveInt = Field(default=1, description="tensor-parallel degree")
    pp: PositiveInt = Field(default=1, description="pipeline-parallel degree (stages)")
    vp: PositiveInt = Field(default=1, description="interleaved 1F1B: model chunks per pipeline stage")
    cp: PositiveInt = Field(default=1, description="context-parallel degree (the sequence split over ranks)")
    ep: PositiveInt = Field(default=1, description="expert-parallel degree (routed experts split inside DP)")
    sp: bool = Field(default=False, description="Megatron sequence parallelism (needs tp > 1 to matter)")
    zero: ZeroStage = Field(default=0, description="ZeRO stage over the data-parallel ranks")
    micro_batches: PositiveInt = Field(default=1, description="m: micro-batches per optimizer step (per pipeline)")

    @property
    def model_parallel(self) -> int:
        """GPUs that hold one replica of the model: TP · CP · PP."""
        return self.tp * self.cp * self.pp

    @property
    def dp(self) -> int:
        """Data-parallel degree: G / (TP · CP · PP)."""
        return data_parallel(self.gpus, self.tp, self.cp, self.pp)

    @property
    def expert_dp(self) -> int:
        """Data-parallel degree of the routed experts' weights: DP / EP."""
        return max(1, self.dp // self.ep)

    def in_flight(self, stage: Stage) -> float:
        """Micro-batches (in units of a whole stage's layers) whose activations a stage holds at once.

        1F1B: stage i of p has min(p − i, m) in flight; the first stage the most, the last one. Interleaved
        (v chunks per stage): the first stage holds p + (p − 1)/v (Korthikanti et al. 2022 §4.2.3).
        """
        if stage == "last" or self.pp == 1:
            return 1
        if self.vp == 1:
            return min(self.pp, self.micro_batches)
        return min(self.pp + (self.pp - 1) / self.vp, self.micro_batches)

    def describe(self) -> str:
        """The layout in one line: tp2·pp4(vp2)·dp8, cp and ep when used, ZeRO and SP."""
        parts = [f"tp{self.tp}", f"pp{self.pp}" + (f"(vp{self.vp})" if self.vp > 1 else "")]
        if self.cp > 1:
            parts.append(f"cp{self.cp}")
        parts.append(f"dp{self.dp}")
        if self.ep > 1:
            parts.append(f"ep{self.ep}")
        tail = (" sp" if self.sp and self.tp > 1 else "") + (f" zero{self.zero}" if self.zero else "")
        return "·".join(parts) + tail


def check_layout(par: Layout, spec: TransformerSpec | LinearSpec | None) -> None:
    """Refuse layouts that cannot run, each with one line saying what would be right."""
    t, p, c, G = par.tp, par.pp, par.cp, par.gpus
    mp = par.model_parallel
    if G % mp:
        what = f"tp·pp = {t}·{p}" if c == 1 else f"tp·cp·pp = {t}·{c}·{p}"
        raise InputError(f"{what} = {mp} must divide gpus ({G}); use a multiple of {mp} GPUs or smaller "
                         f"`tp`/`pp`" + ("/`cp`" if c > 1 else ""))
    if par.zero and par.dp == 1:
        sym = "tp·pp" if c == 1 else "tp·cp·pp"
        raise InputError(f"ZeRO-{par.zero} shards over data-parallel ranks, but DP = gpus / ({sym}) = {G} / {mp} = 1; "
                         "use `zero` 0 or more GPUs")
    if par.vp > 1 and p == 1:
        raise InputError(f"`vp` {par.vp} interleaves the chunks of a pipeline stage: it needs `pp` 2 or more")
    if par.ep > 1 and par.dp % par.ep:
        raise InputError(f"ep ({par.ep}) must divide the data-parallel degree DP = {par.dp} (experts are split inside "
                         f"the data-parallel group); use a divisor of {par.dp}")
    if isinstance(spec, LinearSpec):
        if t > 1 or p > 1 or c > 1 or par.ep > 1:
            raise InputError(f"{spec.name} is a deep linear network; napkin splits it over data-parallel ranks only "
                             f"(use `tp` 1 `pp` 1)")
        return
    if spec is None:
        if t > 1 or p > 1 or c > 1 or par.ep > 1:
            raise InputError("`tp`/`pp`/`cp`/`ep` need an architecture (`model`) to split; with `params` use data "
                             "parallelism (`gpus`, `zero`)")
        return
    if par.ep > 1 and spec.moe is None:
        raise InputError(f"`ep` {par.ep} splits routed experts, but {spec.name} has none (it is dense); use `ep` 1")
    if spec.moe is not None and spec.moe.experts % par.ep:
        raise InputError(f"ep ({par.ep}) must divide the routed experts of {spec.name} ({spec.moe.experts}); use a "
                         f"divisor of {spec.moe.experts}")
    if par.vp > 1 and spec.layers % (p * par.vp):
        raise InputError(f"interleaving needs the layers ({spec.layers}) to divide into pp·vp = {p}·{par.vp} = "
                         f"{p * par.vp} chunks, as Megatron-LM requires; pick `vp` with pp·vp dividing {spec.layers}")
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


def stages(par: Layout) -> list[Stage]:
    """Pipeline stages whose memory differs: one when PP = 1, else the first and the last."""
    return ["only"] if par.pp == 1 else ["first", "last"]


class StageParams(NamedTuple):
    """Parameters one GPU holds before ZeRO, split by the data-parallel group that shards them."""

    dense: float   # sharded over DP by ZeRO
    expert: float  # routed experts: sharded over DP/EP
    what: str

    @property
    def total(self) -> float:
        return self.dense + self.expert


EXPERT_COMPONENTS = ("ffn.experts",)


def stage_params(components: dict[str, int], layers: int, par: Layout, stage: Stage, tied: bool) -> StageParams:
    """Parameters one GPU holds before ZeRO: its stage's share, divided by TP (and the experts by EP).

    Per-layer components (attention, FFN, layer norms) split evenly over the PP stages; the first
    stage adds the embeddings, the last the final norm and the LM head (a tied head keeps a copy
    of the embedding matrix on the last stage, as Megatron-LM does). TP divides everything; the
    few replicated norm weights are ignored (h per layer). Routed experts are also divided by EP.
    """
    emb = components.get("embedding.tokens", 0) + components.get("embedding.positions", 0)
    head = components.get("head", 0) + components.get("norms.final", 0)
    if tied and par.pp > 1:
        head += components.get("embedding.tokens", 0)
    experts = sum(v for k, v in components.items() if k in EXPERT_COMPONENTS)
    body = sum(v for k, v in components.items()
               if not k.startswith(("embedding.", "head", "norms.final")) and k not in EXPERT_COMPONENTS)
    per = layers_per_stage(layers, par.pp) if layers else 0
    share = per / layers if layers else 1.0
    n: float  # parameters on the GPU: a stage's share of the layers is fractional when PP does not divide L
    if stage == "only":
        n, what = emb + body + head, "all parameters"
        share = 1.0
    elif stage == "first":
        n, what = emb + body * share, f"embeddings + {per} of {layers} layers"
    else:
        n, what = body * share + head, f"{per} of {layers} layers + final norm + LM head"
    what += f", / tp {par.tp}" if par.tp > 1 else ""
    what += f", experts / ep {par.ep}" if par.ep > 1 else ""
    return StageParams(n / par.tp, experts * share / (par.tp * par.ep), what)
