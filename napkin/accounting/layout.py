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

from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import Field, model_validator

from napkin.accounting.pipeline import PipelineStage, chunk_in_flight, heaviest_stages, pipeline_stages
from napkin.errors import InputError
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, PositiveInt

if TYPE_CHECKING:
    from napkin.accounting.layers import LayerKind, LayerPlan

ONE_F_ONE_B = ("Narayanan et al. 2021 §2.2.1 (1F1B schedule); Korthikanti et al. 2022 §4.2.3 "
               "(the first stage holds p micro-batches)")

NonNegativeInt = Annotated[int, Field(ge=0, le=1 << 20)]
Stage = Literal["first", "middle", "last", "only"]
ZeroStage = Literal[0, 1, 2, 3]  # ZeRO (Rajbhandari et al. 2020 §5): shard nothing / optimizer / + grads / + params


INTERLEAVED = ("Narayanan et al. 2021 §2.2.2 (interleaved 1F1B); Korthikanti et al. 2022 §4.2.3: the first stage "
               "holds p·(1 + (p−1)/(p·v)) micro-batches of activations")


def data_parallel(gpus: int, tp: int = 1, cp: int = 1, pp: int = 1) -> int:
    """DP = G / (TP · CP · PP): the GPUs over the ranks that hold one replica (Narayanan et al. 2021 §2.3)."""
    return gpus // (tp * cp * pp)


def default_zero(lay: Layout) -> int:
    """The ZeRO stage when none is given: 3 over more than one data-parallel rank (FSDP), else 0 (nothing to shard)."""
    return 3 if lay.dp > 1 else 0


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
    """The parallel layout of a training run: G GPUs as TP × CP × DP × PP; experts as ETP × EP × EDP over the same
    TP × CP × DP ranks; ZeRO/FSDP sharding over DP × CP, or HSDP (replicate × shard)."""

    gpus: PositiveInt = 1
    tp: PositiveInt = Field(default=1, description="tensor-parallel degree")
    pp: PositiveInt = Field(default=1, description="pipeline-parallel degree (stages)")
    vp: PositiveInt = Field(default=1, description="interleaved 1F1B: model chunks per pipeline stage")
    cp: PositiveInt = Field(default=1, description="context-parallel degree (the sequence split over ranks)")
    ep: PositiveInt = Field(default=1, description="expert-parallel degree (routed experts split over the TP×CP×DP "
                            "ranks, Megatron-core MoE parallel folding)")
    etp: PositiveInt | None = Field(default=None, description="expert tensor-parallel degree (None: tp), Megatron "
                                    "--expert-tensor-parallel-size")
    sp: bool = Field(default=False, description="Megatron sequence parallelism (needs tp > 1 to matter)")
    zero: ZeroStage = Field(default=0, description="ZeRO stage over the data-parallel ranks (× CP)")
    dp_shard: PositiveInt | None = Field(default=None, description="HSDP: ranks of the data-parallel group that "
                                         "shard (× CP); the rest replicate (None: all of DP shard)")
    micro_batches: PositiveInt = Field(default=1, description="m: micro-batches per optimizer step (per pipeline)")
    first_stage_layers: PositiveInt | None = Field(default=None, description="layers on the first pipeline stage "
                                                   "(Megatron --decoder-first-pipeline-num-layers)")
    last_stage_layers: PositiveInt | None = Field(default=None, description="layers on the last pipeline stage "
                                                  "(Megatron --decoder-last-pipeline-num-layers)")
    embedding_in_split: bool = Field(default=False, description="the embedding counts as a layer of the first "
                                     "stage (Megatron --account-for-embedding-in-pipeline-split)")
    loss_in_split: bool = Field(default=False, description="the loss counts as a layer of the last stage "
                                "(Megatron --account-for-loss-in-pipeline-split)")
    offload_layers: NonNegativeInt = Field(default=0, description="layers per stage whose saved activations go to "
                                           "host memory (Megatron --cpu-offloading-num-layers)")

    @model_validator(mode="after")
    def _groups(self) -> Layout:
        if (self.first_stage_layers is not None or self.last_stage_layers is not None) and (
                self.embedding_in_split or self.loss_in_split):
            raise ValueError("give first/last stage layers or count the embedding/loss in the split, not both "
                             "(Megatron-LM refuses both)")
        return self

    @property
    def model_parallel(self) -> int:
        """GPUs that hold one replica of the model: TP · CP · PP."""
        return self.tp * self.cp * self.pp

    @property
    def dp(self) -> int:
        """Data-parallel degree: G / (TP · CP · PP)."""
        return data_parallel(self.gpus, self.tp, self.cp, self.pp)

    @property
    def expert_tp(self) -> int:
        """Tensor-parallel degree of the routed experts (ETP; Megatron's default: TP)."""
        return self.tp if self.etp is None else self.etp

    @property
    def expert_dp(self) -> int:
        """Data-parallel degree of the routed experts' weights: EDP = TP·CP·DP / (ETP·EP) (Megatron-core MoE
        parallel folding: the expert layers fold the same ranks as ETP × EP × EDP)."""
        return max(1, self.tp * self.cp * self.dp // (self.expert_tp * self.ep))

    @property
    def shard(self) -> int:
        """Ranks ZeRO/FSDP shards model state over: DP_shard · CP (Megatron's distributed optimizer and torchtitan's
        dp_shard_cp mesh both shard over the context-parallel ranks too, which hold the same weights)."""
        return (self.dp if self.dp_shard is None else self.dp_shard) * self.cp

    @property
    def replicate(self) -> int:
        """HSDP replicas: DP / DP_shard (1 without HSDP)."""
        return self.dp // (self.dp if self.dp_shard is None else self.dp_shard)

    @property
    def expert_shard(self) -> int:
        """Ranks ZeRO/FSDP shards routed-expert state over: the expert data-parallel group less the HSDP replicas."""
        r = self.replicate
        return self.expert_dp // r if self.expert_dp % r == 0 else self.expert_dp

    def stages(self, layers: int) -> tuple[PipelineStage, ...]:
        """Every pipeline stage with its chunks' layers (pipeline.py)."""
        return pipeline_stages(layers, self)

    def chunk_in_flight(self, stage: int) -> tuple[int, ...]:
        """Micro-batches each chunk of stage ``stage`` holds at once (pipeline.py)."""
        return chunk_in_flight(self, stage)

    def held(self, layers: int, stage: int = 0) -> int:
        """Layer·micro-batches of activations stage ``stage`` holds at once: Σ over its chunks of micro-batches in
        flight × layers."""
        st = self.stages(layers)[stage]
        return sum(n * (hi - lo) for n, (lo, hi) in zip(self.chunk_in_flight(stage), st.chunks, strict=True))

    def in_flight(self, stage: Stage) -> float:
        """Micro-batches (in units of a whole stage's layers, equal chunks) whose activations a stage holds at once.

        1F1B: stage i of p has min(p − i, m) in flight; the first stage the most, the last one. Interleaved
        (v chunks per stage): the first stage holds p + (p − 1)/v (Korthikanti et al. 2022 §4.2.3).
        """
        if self.pp == 1:
            return 1
        return sum(self.chunk_in_flight(0 if stage == "first" else self.pp - 1)) / self.vp

    def describe(self) -> str:
        """The layout in one line: tp2·pp4(vp2)·dp8, cp and ep when used, ZeRO and SP."""
        parts = [f"tp{self.tp}", f"pp{self.pp}" + (f"(vp{self.vp})" if self.vp > 1 else "")]
        if self.cp > 1:
            parts.append(f"cp{self.cp}")
        parts.append(f"dp{self.dp}" if self.replicate == 1 else f"dp{self.dp}(hsdp {self.replicate}×{self.shard})")
        if self.ep > 1:
            parts.append(f"ep{self.ep}" + (f"(etp{self.expert_tp})" if self.expert_tp != self.tp else ""))
        tail = (" sp" if self.sp and self.tp > 1 else "") + (f" zero{self.zero}" if self.zero else "")
        tail += f" offload{self.offload_layers}" if self.offload_layers else ""
        return "·".join(parts) + tail

    def groups(self) -> dict[str, int]:
        """The derived process groups, for --explain and the JSON."""
        return {"dp": self.dp, "shard": self.shard, "replicate": self.replicate, "expert_tp": self.expert_tp,
                "expert_dp": self.expert_dp, "expert_shard": self.expert_shard}


def check_layout(lay: Layout, spec: TransformerSpec | LinearSpec | None) -> None:
    """Refuse layouts that cannot run, each with one line saying what would be right."""
    t, p, c, G = lay.tp, lay.pp, lay.cp, lay.gpus
    mp = lay.model_parallel
    if G % mp:
        what = f"tp·pp = {t}·{p}" if c == 1 else f"tp·cp·pp = {t}·{c}·{p}"
        raise InputError(f"{what} = {mp} must divide gpus ({G}); use a multiple of {mp} GPUs or smaller "
                         f"`tp`/`pp`" + ("/`cp`" if c > 1 else ""))
    if lay.zero and lay.shard == 1 and lay.dp_shard is None:
        sym = "tp·pp" if c == 1 else "tp·cp·pp"
        raise InputError(f"ZeRO-{lay.zero} shards over data-parallel ranks (× context-parallel ones), but DP = gpus / "
                         f"({sym}) = {G} / {mp} = 1" + (f" and CP = {c}" if c > 1 else "") + "; use `zero` 0 or more "
                         "GPUs")
    if lay.dp_shard is not None:
        if lay.dp % lay.dp_shard:
            raise InputError(f"dp_shard ({lay.dp_shard}) must divide the data-parallel degree DP = {lay.dp} (HSDP: "
                             f"replicas × shard = DP); use a divisor of {lay.dp}")
        if not lay.zero:
            raise InputError("`dp_shard` shards model state inside each HSDP replica: give `zero` 1-3 (FSDP: 3)")
    if lay.vp > 1 and p == 1:
        raise InputError(f"`vp` {lay.vp} interleaves the chunks of a pipeline stage: it needs `pp` 2 or more")
    uneven = (lay.first_stage_layers, lay.last_stage_layers, lay.embedding_in_split or None, lay.loss_in_split or None)
    if p == 1 and any(x is not None for x in uneven):
        raise InputError("first/last stage layers and the embedding/loss in the split shape a pipeline: they need "
                         "`pp` 2 or more")
    et = lay.expert_tp
    folded = t * c * lay.dp
    if (lay.ep > 1 or et != t) and folded % (lay.ep * et):
        raise InputError(f"etp·ep = {et}·{lay.ep} must divide tp·cp·dp = {t}·{c}·{lay.dp} = {folded} (the expert "
                         f"layers fold the same ranks, Megatron-core MoE); use an `ep` dividing {folded // et}")
    if isinstance(spec, LinearSpec):
        if t > 1 or p > 1 or c > 1 or lay.ep > 1 or lay.etp is not None:
            raise InputError(f"{spec.name} is a deep linear network; napkin splits it over data-parallel ranks only "
                             f"(use `tp` 1 `pp` 1)")
        return
    if spec is None:
        if t > 1 or p > 1 or c > 1 or lay.ep > 1 or lay.etp is not None:
            raise InputError("`tp`/`pp`/`cp`/`ep` need an architecture (`model`) to split; with `params` use data "
                             "parallelism (`gpus`, `zero`)")
        return
    if (lay.ep > 1 or lay.etp is not None) and spec.moe is None:
        raise InputError(f"`ep`/`etp` split routed experts, but {spec.name} has none (it is dense); use `ep` 1 and no "
                         "`etp`")
    if spec.moe is not None and spec.moe.experts % lay.ep:
        raise InputError(f"ep ({lay.ep}) must divide the routed experts of {spec.name} ({spec.moe.experts}); use a "
                         f"divisor of {spec.moe.experts}")
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
    held = lay.stages(spec.layers)  # the split (pipeline.py) raises where it cannot run
    if lay.offload_layers > min(st.layers for st in held):
        raise InputError(f"offload_layers ({lay.offload_layers}) exceeds the layers of the smallest pipeline stage "
                         f"({min(st.layers for st in held)})")


def layers_per_stage(layers: int, pp: int) -> int:
    """Layers on the fullest pipeline stage of an even-as-possible split: ⌈L / pp⌉ (a bound; the split itself is
    pipeline.py's)."""
    return -(-layers // pp)


_STAGES: dict[tuple[object, ...], tuple[LayerPlan | None, list[PipelineStage]]] = {}  # a search asks thousands


def stages(lay: Layout, layers: int = 0, plan: LayerPlan | None = None) -> list[PipelineStage]:
    """Pipeline stages whose memory and time can differ (pipeline.heaviest_stages, told apart by the layer kinds of
    each chunk when ``plan`` is given): the only one when PP = 1. Memoized on what the split reads (a plan by
    identity: plans are cached per frozen spec, and the entry keeps its plan alive)."""
    if lay.pp == 1 or not layers:
        return [PipelineStage(0, "only", ((0, layers),))]
    key = (layers, lay.pp, lay.vp, lay.first_stage_layers, lay.last_stage_layers, lay.embedding_in_split,
           lay.loss_in_split, id(plan))
    hit = _STAGES.get(key)
    if hit is not None and hit[0] is plan:
        return hit[1]
    if len(_STAGES) > 4096:
        _STAGES.clear()
    if plan is None:
        out = heaviest_stages(layers, lay)
    else:
        out = heaviest_stages(layers, lay, lambda st: tuple(tuple((k.key, n) for k, n in plan.counts_in(lo, hi))
                                                            for lo, hi in st.chunks))
    _STAGES[key] = (plan, out)
    return out


class StageParams(NamedTuple):
    """Parameters one GPU holds before ZeRO, split by the data-parallel group that shards them."""

    dense: float   # sharded over DP·CP by ZeRO
    expert: float  # routed experts: sharded over the expert data-parallel group
    what: str

    @property
    def total(self) -> float:
        return self.dense + self.expert


EXPERT_COMPONENTS = ("ffn.experts",)


def stage_params(components: dict[str, int], layers: int, lay: Layout, stage: PipelineStage, tied: bool,
                 shares: tuple[float, float] | None = None) -> StageParams:
    """Parameters one GPU holds before ZeRO: its stage's share, divided by TP (and the experts by ETP·EP).

    Per-layer components (attention, FFN, layer norms) go with the stage's layers: ``shares`` (dense, expert) are
    the stage's fractions of the layers' dense and routed-expert parameters (``layer_shares``: by layer kind;
    default: its fraction of the layers). The first stage adds the embeddings, the last the final norm and the LM
    head (a tied head keeps a copy of the embedding matrix on the last stage, as Megatron-LM does). TP divides
    everything (the few replicated norm weights are ignored, h per layer); routed experts are divided by the expert
    tensor- and expert-parallel degrees (Megatron-core MoE).
    """
    emb = components.get("embedding.tokens", 0) + components.get("embedding.positions", 0)
    head = components.get("head", 0) + components.get("norms.final", 0)
    if tied and lay.pp > 1:
        head += components.get("embedding.tokens", 0)
    experts = sum(v for k, v in components.items() if k in EXPERT_COMPONENTS)
    body = sum(v for k, v in components.items()
               if not k.startswith(("embedding.", "head", "norms.final")) and k not in EXPERT_COMPONENTS)
    share_d, share_e = shares if shares is not None else ((stage.layers / layers,) * 2 if layers else (1.0, 1.0))
    per = stage.layers
    n: float  # parameters on the GPU: a stage's share of the layers
    if stage.role == "only":
        n, what = emb + body + head, "all parameters"
        share_d = share_e = 1.0
    else:
        n = body * share_d + (emb if stage.has_embedding else 0) + (head if stage.has_head else 0)
        what = (("embeddings + " if stage.has_embedding else "") + f"{per} of {layers} layers"
                + (" + final norm + LM head" if stage.has_head else ""))
    what += f", / tp {lay.tp}" if lay.tp > 1 else ""
    ex = lay.expert_tp * lay.ep
    what += f", experts / (etp·ep) {lay.expert_tp}·{lay.ep}" if experts and ex > 1 and ex != lay.tp else ""
    return StageParams(n / lay.tp, experts * share_e / ex, what)


_COUNTS: dict[tuple[int, PipelineStage], tuple[LayerPlan, list[tuple[LayerKind, int]]]] = {}


def stage_counts(plan: LayerPlan, stage: PipelineStage) -> list[tuple[LayerKind, int]]:
    """(kind, layers of that kind) on a stage: layer_plan's counts_in over each of its chunks, merged by kind
    (memoized per plan and stage)."""
    hit = _COUNTS.get((id(plan), stage))
    if hit is not None and hit[0] is plan:
        return hit[1]
    if len(_COUNTS) > 4096:
        _COUNTS.clear()
    got = _stage_counts(plan, stage)
    _COUNTS[id(plan), stage] = (plan, got)
    return got


def _stage_counts(plan: LayerPlan, stage: PipelineStage) -> list[tuple[LayerKind, int]]:
    out: dict[str, list] = {}
    for lo, hi in stage.chunks:
        for kind, n in plan.counts_in(lo, hi):
            if kind.key in out:
                out[kind.key][1] += n
            else:
                out[kind.key] = [kind, n]
    return [(k, n) for k, n in out.values()]


def layer_shares(plan: LayerPlan, stage: PipelineStage) -> tuple[float, float]:
    """The stage's fractions of the layers' dense and routed-expert parameters, by layer kind (DeepSeek-V3's
    first three dense layers hold no experts)."""
    def split(kind: LayerKind) -> tuple[int, int]:
        e = sum(gm.params for gm in kind.gemms if gm.expert)
        return kind.params - e, e

    tot_d = tot_e = 0
    for kind in plan.kinds:
        d, e = split(kind)
        tot_d, tot_e = tot_d + kind.count * d, tot_e + kind.count * e
    on_d = on_e = 0
    for kind, n in stage_counts(plan, stage):
        d, e = split(kind)
        on_d, on_e = on_d + n * d, on_e + n * e
    return (on_d / tot_d if tot_d else 0.0, on_e / tot_e if tot_e else 0.0)
