"""The per-GPU memory ledger: parameters, gradients, master weights, optimizer states, activations.

Model state per parameter comes from model_state.py (precision and optimizer as data), who holds
which parameters from layout.py (TP, CP, PP, EP, ZeRO), activations from activations.py (tensor by
tensor). This module adds them up for the GPU that holds the most, and compares with its memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from napkin.accounting import activations as act
from napkin.accounting import finetune as ft
from napkin.accounting.layers import layer_plan
from napkin.accounting.layout import (
    INTERLEAVED,
    ONE_F_ONE_B,
    Layout,
    Stage,
    both_given,
    check_layout,
    default_zero,
    layer_shares,
    stage_counts,
    stage_params,
    stages,
)
from napkin.accounting.model_state import Precision, get_optimizer, get_precision, require_precision, state_parts
from napkin.accounting.params import count_params
from napkin.accounting.pipeline import SCHEDULE, PipelineStage, split_rule
from napkin.accounting.reserve import DEFAULT_RESERVE_BYTES, reserve_of, reserve_step
from napkin.errors import InputError
from napkin.results import DEFINITION, LECTURE, ZERO, Derivation, Result, g, minus
from napkin.specs.dtypes import BYTES_PER_ELEMENT, DType
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_optional_model
from napkin.validation import Inputs, NonNegative, Positive, PositiveInt, Setup, validated

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

Part = Literal["params", "grads", "master", "optimizer", "activations", "embedding", "output", "recompute", "frozen",
               "quant", "dequant"]
ModelArg = TransformerSpec | LinearSpec | None


class TrainingSetup(Setup):
    """What one training micro-batch is, apart from the layout and the fine-tuning: its size and sequence, the
    optimizer and precision policy (model_state.py), and the choices that set its activations (activations.py)."""

    micro_batch: PositiveInt = Field(default=1, validation_alias=AliasChoices("micro_batch", "batch"),
                                     description="micro-batch size b (sequences per GPU per micro-batch; the old "
                                     "name `batch` is still read)")
    seq: PositiveInt | None = Field(default=None, description="sequence length s (None: the model's pre-training "
                                    "length)")
    optimizer: str = "adamw"
    precision: str = "bf16-mixed"
    recompute: str = Field(default="none", description="none, selective or full (checked with the ledger's inputs)")
    flash: bool = Field(default=True, description="flash attention: no s² score matrix kept")
    dropout: bool = Field(default=False, description="dropout masks kept (GPT-2/3 style training)")
    fused_norm: bool = Field(default=True, description="RMSNorm as a fused kernel (keeps x only)")


class LedgerKeywords(TypedDict, total=False):
    """Keyword convenience for the ledger and its solvers: the fields of TrainingSetup, Layout (``zero`` None: the
    default, see default_zero) and FinetuneSetup, turned into those objects by ``ledger_setup`` alone."""

    micro_batch: int
    batch: int  # the old name of micro_batch, still read
    seq: int | None
    optimizer: str
    precision: str
    recompute: str
    flash: bool
    dropout: bool
    fused_norm: bool
    gpus: int
    tp: int
    pp: int
    vp: int
    cp: int
    ep: int
    sp: bool
    zero: int | None
    micro_batches: int
    etp: int | None
    dp_shard: int | None
    first_stage_layers: int | None
    last_stage_layers: int | None
    embedding_in_split: bool
    loss_in_split: bool
    offload_layers: int
    lora_rank: int | None
    lora_targets: str | list[str] | None
    base_dtype: str | None
    double_quant: bool | None
    lora_embeddings: bool
    paged_optimizer: bool
    offload: str


OLD_NAMES = {"batch": "micro_batch"}  # keywords kept under their old name (docs/design.md, the table of names)


def ledger_setup(training: TrainingSetup | None, layout: Layout | None, finetune: ft.FinetuneSetup | str | None,
                 keywords: Mapping[str, Any], *, zero: int | None = None
                 ) -> tuple[TrainingSetup, Layout, ft.FinetuneSetup]:
    """The three setup objects of a ledger question: those given, or built here (the one place) from keywords.

    A group is given as its object or as its keywords, not both; ``finetune`` as a string is the mode keyword.
    A layout from keywords without ``zero`` takes ``zero`` when given, else ZeRO-3 over more than one
    data-parallel rank (default_zero).
    """
    kw: dict[str, Any] = dict(keywords)
    if isinstance(finetune, str):
        kw["finetune"] = finetune
        finetune = None
    groups: dict[str, dict[str, Any]] = {"training": {}, "layout": {}, "finetune": {}}
    for name, value in kw.items():
        name = OLD_NAMES.get(name, name)
        group = ("training" if name in TrainingSetup.model_fields else "layout" if name in Layout.model_fields
                 else "finetune" if name in ft.FinetuneSetup.model_fields else None)
        if group is None:
            raise TypeError(f"unexpected keyword argument '{name}'")
        groups[group][name] = value
    for group, given, cls, names in (("training", training, "TrainingSetup", "micro_batch, seq, precision, ..."),
                                     ("layout", layout, "Layout", "gpus, tp, pp, ..."),
                                     ("finetune", finetune, "FinetuneSetup", "lora_rank, offload, ...")):
        if given is not None and groups[group]:
            raise both_given(group, cls, names)
    if layout is None:
        lay = groups["layout"]
        if lay.get("zero") is None:
            lay.pop("zero", None)
            lay["zero"] = zero if zero is not None else default_zero(validated(Layout, **lay))
        layout = validated(Layout, **lay)
    return (training if training is not None else validated(TrainingSetup, **groups["training"]), layout,
            finetune if finetune is not None else validated(ft.FinetuneSetup, **groups["finetune"]))


class MemoryInputs(Inputs):
    model: str | None = Field(default=None, description="model name (None: --params alone)")
    params: Positive | None = Field(default=None, description="parameter count when no architecture is given")
    micro_batch: PositiveInt = Field(default=1, description="micro-batch size b (sequences per GPU per micro-batch)")
    seq: PositiveInt | None = Field(default=None, description="sequence length s")
    gpu: str
    optimizer: str = "adamw"
    precision: str = "bf16-mixed"
    recompute: act.Recompute = "none"
    flash: bool = True
    dropout: bool = False
    fused_norm: bool = True
    layout: Layout = Field(default_factory=Layout)
    memory_bytes: Positive
    reserve_bytes: NonNegative = 0.0
    finetune: ft.Finetune = Field(default="full", description="full: every weight trains; lora / qlora: adapters on "
                                  "a frozen base")
    lora: ft.LoraSetup | None = Field(default=None, description="the adapters and the frozen base (lora, qlora)")
    paged_optimizer: bool = Field(default=False, description="optimizer states in CUDA unified memory (QLoRA §3)")
    offload: ft.Offload = Field(default="none", description="what lives in host memory: the optimizer (ZeRO-Offload) "
                                "or the optimizer and the parameters (FSDP CPU offload)")


class LedgerRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    part: Part
    label: str
    bytes: float
    sharded_over_dp: bool = Field(description="divided by the data-parallel degree (ZeRO)")


class KindActivations(BaseModel):
    """One layer kind's share of a stage's activations."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="the layer kind (mixer+ffn, e.g. mamba2+none, window+moe)")
    label: str
    layers: int = Field(description="layers of this kind on this GPU's stage")
    per_layer_bytes: float = Field(description="what one layer of this kind keeps for one micro-batch")


class ActivationLedger(BaseModel):
    model_config = ConfigDict(frozen=True)

    per_layer: list[act.ActTerm] = Field(description="what one layer keeps for one micro-batch, on this GPU (the "
                                         "heaviest kind where the layers differ)")
    kinds: list[KindActivations] = Field(default=[], description="each layer kind on this stage, with its bytes")
    per_layer_bytes: float
    per_layer_bytes_no_recompute: float
    layers_on_gpu: int
    in_flight: int | float = Field(description="micro-batches whose activations this GPU holds at once (1F1B; "
                             "interleaved: in units of a whole stage)")
    layers_bytes: float
    outside: list[act.ActTerm] = Field(description="embedding / output-layer tensors this stage keeps")
    outside_bytes: float
    working_set_bytes: float = Field(description="one layer rebuilt during backward (recompute only)")
    total_bytes: float = Field(description="all activations on this GPU: layers + outside + working set")


ACT_OFFLOAD = ("Megatron-core cpu_offload (--cpu-offloading --cpu-offloading-num-layers N): the saved activations of N "
               "layers per stage go to host memory after their forward and come back before their backward, one "
               "layer in transit at a time; Megatron-Bridge recipes (activation offload on GB200)")


class ActivationOffload(BaseModel):
    """Saved activations moved to host memory (item 6 of issue 22), as the optimizer offload ledger does for state."""

    model_config = ConfigDict(frozen=True)

    layers: int = Field(description="layers per stage whose saved activations live in host memory")
    host_bytes: float = Field(description="host memory per GPU at the peak of the schedule")
    buffer_bytes: float = Field(description="one layer's activations of one micro-batch in transit, kept on the GPU")
    to_host_bytes_per_step: float
    from_host_bytes_per_step: float
    host_link_bandwidth_bytes_per_s: float | None = None
    transfer_time_s: float | None = Field(default=None, description="max(to, from) / host link (full duplex); hidden "
                                          "only where it overlaps compute")


class MemoryResult(Result):
    inputs: MemoryInputs
    stage: Stage = Field(description="the role of the pipeline stage this ledger is for (the fullest one)")
    stage_number: int = Field(default=0, description="0-based index of that pipeline stage")
    stage_layers: list[int] = Field(default=[], description="layers on each pipeline stage (pipeline.py's split)")
    seq: int | None = Field(description="sequence length used (the model's max context when not given)")
    data_parallel: int
    params: float
    params_on_gpu: float = Field(description="parameters this GPU's stage holds after TP, before ZeRO")
    rows: list[LedgerRow] = Field(description="the ledger; adds up to total_bytes")
    total_bytes: float
    reserve_bytes: float = Field(default=0.0, description="held back from the GPU's memory: CUDA context, NCCL "
                                 "buffers, allocator fragmentation (reserve.py; --reserve)")
    usable_bytes: float = Field(description="memory - reserve")
    headroom_bytes: float = Field(description="usable - total; negative is the shortfall")
    fits: bool
    activations: ActivationLedger | None = None
    other_stage_total_bytes: float | None = Field(default=None, description="the next-fullest pipeline stage's total")
    groups: dict[str, int] = Field(default={}, description="the layout's derived process groups (Layout.groups)")
    trainable_params: float = Field(default=0.0, description="parameters the optimizer updates: all of them (full), "
                                    "the adapters (lora, qlora)")
    adapters: ft.AdapterPlan | None = Field(default=None, description="every adapter, matrix by matrix (lora, qlora)")
    offload: ft.OffloadLedger | None = Field(default=None, description="what moved to host memory and the traffic")
    checkpoint_bytes: float = Field(default=0.0, description="one checkpoint on disk, whole model: weights + "
                                    "optimizer state (full) or the adapters alone (lora, qlora)")
    checkpoint: ft.CheckpointSize | None = None
    activation_offload: ActivationOffload | None = None


def _act_offload(d: Derivation, a: ActivationLedger, lay: Layout, stage: PipelineStage,
                 host_link: float | None) -> tuple[float, ActivationOffload]:
    """(activation bytes left on the GPU, the offload) when ``lay.offload_layers`` of the stage's layers go to host
    memory: their share of the layers' activations (each layer's at the stage's in-flight count), one layer of one
    micro-batch kept as the transfer buffer; each offloaded layer's activations cross the host link out and back
    once per micro-batch."""
    k = min(lay.offload_layers, stage.layers)
    per = a.layers_bytes / stage.layers if stage.layers else 0.0  # a layer's activations, all micro-batches in flight
    host = d.add(f"activations moved to host memory ({k} of {stage.layers} layers)", "k · (layers' activations / L)",
                 f"{k} × {g(per)}", k * per, "B", ACT_OFFLOAD)
    buf = d.add("offload buffer (one layer of one micro-batch in transit)", "one layer's kept activations",
                g(a.per_layer_bytes), a.per_layer_bytes if k else 0.0, "B", ACT_OFFLOAD)
    m = lay.micro_batches
    out = d.add("GPU → host per step (offloaded activations)", "m · k · one layer's activations of a micro-batch",
                f"{m} × {k} × {g(a.per_layer_bytes)}", m * k * a.per_layer_bytes, "B", ACT_OFFLOAD)
    t = None
    if host_link:
        t = d.add("activation offload time per step", "max(to host, from host) / BW_host (full duplex)",
                  f"{g(out)} / {g(host_link)}", out / host_link, "s",
                  "hardware profile: host_link_bandwidth_bytes_per_s")
    return a.layers_bytes - host + buf, ActivationOffload(
        layers=k, host_bytes=host, buffer_bytes=buf, to_host_bytes_per_step=out, from_host_bytes_per_step=out,
        host_link_bandwidth_bytes_per_s=host_link, transfer_time_s=t)


TE_FP8 = ("NVIDIA Transformer Engine: te.Linear / LayerNormLinear / LayerNormMLP save the FP8-cast input of each GEMM "
          "for the weight gradient (1 B/element); other saved tensors (norm inputs, the attention core's output for "
          "the flash backward, the FFN pre-activations) stay in the activation dtype")


def _fp8_saved(terms: list[act.ActTerm]) -> list[act.ActTerm]:
    """A layer's saved tensors under FP8 training (Transformer Engine): each GEMM input saved as its FP8 cast, 1 byte
    per element. The attention output keeps its BF16 copy for the flash backward, and its FP8 cast for the output
    projection is saved beside it."""
    out: list[act.ActTerm] = []
    for x in terms:
        gemm_input = "input of the" in x.stores
        if gemm_input and x.name == "context":
            out.append(x)
            out.append(x.model_copy(update={"name": "context (fp8 cast)", "stores": "the output projection's FP8 "
                                            "input", "bytes_per_element": 1.0, "bytes": x.bytes / x.bytes_per_element,
                                            "source": TE_FP8}))
        elif gemm_input and x.bytes_per_element > 1:
            out.append(x.model_copy(update={"bytes_per_element": 1.0, "bytes": x.bytes / x.bytes_per_element,
                                            "name": x.name + " (fp8)", "source": TE_FP8}))
        else:
            out.append(x)
    return out


def _layers_of(spec: TransformerSpec, lay: Layout, stage: PipelineStage) -> tuple[int, int]:
    """(first, end) of the layers a stage holds, where they are contiguous (one chunk; fine-tuning asks)."""
    return stage.chunks[0][0], stage.chunks[-1][1]


def _transformer_acts(d: Derivation, spec: TransformerSpec, i: MemoryInputs, s: int, p: float,
                      stage: PipelineStage) -> ActivationLedger:
    lay, b = i.layout, i.micro_batch
    plan = layer_plan(spec)
    kinds = stage_counts(plan, stage)  # (kind, layers of it on this stage)
    fp8 = get_precision(i.precision).compute == DType.fp8
    per_layer_full: dict[str, list[act.ActTerm]] = {}
    per_layer_kept: dict[str, list[act.ActTerm]] = {}
    for kind, _ in kinds:
        full = act.layer_terms(spec, s, b, flash=i.flash, dropout=i.dropout, fused_norm=i.fused_norm, kind=kind,
                               bytes_per_element=p, tp=lay.tp, sp=lay.sp)
        if i.lora is not None:  # frozen matmuls keep nothing; the adapters keep A·x
            full = ft.lora_layer_terms(full, spec, kind, i.lora, s=s, b=b, bytes_per_element=p, flash=i.flash)
        if fp8 and i.lora is None:
            full = _fp8_saved(full)
        per_layer_full[kind.key] = full
        per_layer_kept[kind.key] = act.stored(full, i.recompute, spec, s, b, bytes_per_element=p, tp=lay.tp, sp=lay.sp)
    # the table shows the heaviest kind's tensors; the recompute working set is one such layer rebuilt
    # (a stage of no layers, torchtitan's last stage holding the output layer alone, keeps none)
    shown = max(per_layer_full, key=lambda k: act.total(per_layer_full[k]), default="")
    terms = per_layer_kept.get(shown, [])
    several = len(kinds) > 1
    for kind, _ in kinds:
        kept = per_layer_kept[kind.key]
        label = kind.label if several or spec.moe is not None else "layer"
        d.add(f"activations per {label} (s={s}, b={b}, recompute {i.recompute}{', flash' if i.flash else ''})",
              "Σ s·b·width·bytes / TP", " + ".join(g(x.bytes) for x in kept), act.total(kept), "B",
              (act.KORTHIKANTI if i.recompute == "none" else act.KORT_TP + "; §5 (recompute)")
              + (f"; {ft.HU_ACT}" if i.lora is not None else ""))
    flight = lay.chunk_in_flight(stage.number)  # micro-batches each chunk of this stage holds (pipeline.py)
    per_stage = stage.layers

    def chunk_bytes(lo: int, hi: int) -> float:
        return sum(n * act.total(per_layer_kept[k.key]) for k, n in plan.counts_in(lo, hi))

    layers_bytes = sum(f * chunk_bytes(lo, hi) for f, (lo, hi) in zip(flight, stage.chunks, strict=True))
    F = sum(f * (hi - lo) for f, (lo, hi) in zip(flight, stage.chunks, strict=True)) / per_stage if per_stage else 1
    if len(flight) == 1:
        d.add("activations of the layers on this GPU", "micro-batches in flight · Σ layers",
              f"{g(F)} × ({' + '.join(f'{n} × {g(act.total(per_layer_kept[k.key]))}' for k, n in kinds)})",
              layers_bytes, "B", f"{ONE_F_ONE_B}; {SCHEDULE}" if lay.pp > 1 else act.KORTHIKANTI)
    else:
        d.add(f"activations of the layers on this GPU ({len(flight)} chunks)", "Σ chunks (micro-batches in flight · "
              "Σ layers of the chunk)", " + ".join(f"{f} × {g(chunk_bytes(lo, hi))}" for f, (lo, hi) in
                                                    zip(flight, stage.chunks, strict=True)),
              layers_bytes, "B", f"{INTERLEAVED}; {SCHEDULE}")
    parts = act.outside_terms(spec, s, b, dropout=i.dropout, fused_norm=i.fused_norm, bytes_per_element=p, tp=lay.tp,
                              sp=lay.sp)
    if i.lora is not None:
        parts = ft.lora_outside_terms(parts, spec, i.lora, s=s, b=b, bytes_per_element=p)
    outside: list[act.ActTerm] = []
    F_emb = flight[0]  # the embedding lives in the first chunk, the output layer in the last
    if stage.has_embedding:
        outside += parts["embedding"]
    outside_bytes = F_emb * act.total(outside)
    if stage.has_head:
        outside += parts["output"]
        outside_bytes += flight[-1] * act.total(parts["output"])  # the last chunk of the last stage: one in flight
    emb_s = " + ".join(g(x.bytes) for x in outside if x.block == "embedding")
    out_s = " + ".join(g(x.bytes) for x in outside if x.block == "output")
    d.add("embedding and output-layer activations", "Σ " + ", ".join(x.name for x in outside)
          + (f" (embedding × {F_emb} in flight)" if F_emb > 1 else ""),
          " + ".join(v for v in ((f"{g(F_emb)} × ({emb_s})" if F_emb > 1 and emb_s else emb_s), out_s) if v),
          outside_bytes, "B", act.KORT_OUT)
    work = 0.0
    if i.recompute != "none" and shown:
        full = per_layer_full[shown]
        work = d.add("recompute working set (one layer rebuilt in backward)", "layer_full − layer_kept",
                     minus(act.total(full), act.total(terms)), act.total(full) - act.total(terms), "B",
                     "Korthikanti et al. 2022 §5 (recomputation rebuilds one layer at a time)")
    kind_rows = [KindActivations(kind=k.key, label=k.label, layers=n, per_layer_bytes=act.total(per_layer_kept[k.key]))
                 for k, n in kinds]
    return ActivationLedger(per_layer=terms, kinds=kind_rows, per_layer_bytes=act.total(terms),
                            per_layer_bytes_no_recompute=act.total(per_layer_full.get(shown, [])),
                            layers_on_gpu=per_stage,
                            in_flight=F, layers_bytes=layers_bytes, outside=outside, outside_bytes=outside_bytes,
                            working_set_bytes=work, total_bytes=layers_bytes + outside_bytes + work)


def _linear_acts(d: Derivation, spec: LinearSpec, i: MemoryInputs, p: float) -> ActivationLedger:
    B, D, L = i.micro_batch, spec.d_model, spec.layers
    n = d.add("activations (layer outputs)", "B·D·L elements", f"{B} × {D} × {L}",
              act.linear_net_activation_elements(spec, B), "elements", LECTURE)
    per_layer = B * D * p
    total = d.add("activation bytes", "B·D·L · bytes", f"{g(n)} × {g(p)}", n * p, "B", LECTURE)
    term = act.ActTerm(block="layer", name="layer output", stores="B×D output of each layer (the lecture's count)",
                       width="D", elements_per_token=D, bytes_per_element=p, split="none", source=LECTURE,
                       bytes=per_layer)
    return ActivationLedger(per_layer=[term], per_layer_bytes=per_layer, per_layer_bytes_no_recompute=per_layer,
                            layers_on_gpu=L, in_flight=1, layers_bytes=total, outside=[], outside_bytes=0.0,
                            working_set_bytes=0.0, total_bytes=total)


def _per_gpu(d: Derivation, label: str, dense: float, expert: float, bpp: float, div: int, ediv: int,
             src: str) -> float:
    """One ledger row: (dense / shard + experts / expert shard) · bytes per parameter, as a step (the shard groups:
    DP·CP and the expert data-parallel group, Layout.shard / expert_shard)."""
    if expert and ediv != div:
        return d.add(f"{label} per GPU", "(N_dense / DP_shard + N_experts / EDP_shard) · bytes/param",
                     f"({g(dense)} / {div} + {g(expert)} / {ediv}) × {g(bpp)}", (dense / div + expert / ediv) * bpp,
                     "B", f"{ZERO}; {src}" if src != ZERO else src)
    n = dense + expert
    return d.add(f"{label} per GPU", "N_gpu · bytes/param" + (" / DP" if div > 1 else ""),
                 f"{g(n)} × {g(bpp)}" + (f" / {div}" if div > 1 else ""), n * bpp / div, "B",
                 f"{ZERO}; {src}" if div > 1 and src != ZERO else src)


def _frozen_rows(d: Derivation, spec: TransformerSpec, lora: ft.LoraSetup, prec: Precision, lay: Layout,
                 stage: PipelineStage, components: dict[str, int]) -> tuple[list[LedgerRow], float]:
    """The frozen base on this GPU at its storage dtype (no gradients, no optimizer state); ZeRO-3 shards it."""
    fb = ft.frozen_base(spec, lora, prec, lay, stage, components)
    div, ediv = (lay.shard, lay.expert_shard) if lay.zero == 3 else (1, 1)
    blocks, consts, rest = ft.frozen_label(lora, prec)
    src, src_const = ft.base_sources(lora)
    rows: list[LedgerRow] = []
    if lora.base_dtype in ("nf4", "int8"):
        for label, dense, expert, bpp, source, part in (
                (blocks, fb.quantized_dense, fb.quantized_expert, fb.data_bytes_per_weight, src, "frozen"),
                (consts, fb.quantized_dense, fb.quantized_expert, fb.constant_bytes_per_weight, src_const, "quant"),
                (rest, fb.rest_dense, fb.rest_expert, fb.rest_bytes_per_param, ft.BNB_KEEP, "frozen")):
            v = _per_gpu(d, label, dense, expert, bpp, div, ediv, source)
            rows.append(LedgerRow(part=part, label=label, bytes=v, sharded_over_dp=div > 1))  # type: ignore[arg-type]
    else:
        v = _per_gpu(d, blocks, fb.quantized_dense + fb.rest_dense, fb.quantized_expert + fb.rest_expert,
                     fb.data_bytes_per_weight, div, ediv, src)
        rows.append(LedgerRow(part="frozen", label=blocks, bytes=v, sharded_over_dp=div > 1))
    held = fb.quantized_dense + fb.quantized_expert + fb.rest_dense + fb.rest_expert
    return rows, held


def _offload(d: Derivation, rows: list[LedgerRow], i: MemoryInputs, spec: ModelArg, stage: PipelineStage,
             host_link: float | None) -> tuple[list[LedgerRow], ft.OffloadLedger]:
    """Move the offloaded rows to host memory; with the parameters, one layer is copied in at a time."""
    lay, mode = i.layout, i.offload
    src = ft.offload_sources(mode)
    moves = ft.MOVES[mode]
    moved = [r for r in rows if r.part in moves and "cached" not in r.label]
    kept = [r for r in rows if r not in moved]
    host = d.add(f"host memory per GPU (offload {mode})", "Σ rows moved to the CPU",
                 " + ".join(g(r.bytes) for r in moved) or "0", sum(r.bytes for r in moved), "B", src)
    m = lay.micro_batches
    grads = sum(r.bytes for r in moved if r.part == "grads")
    to_host = d.add("GPU → host per step (gradients)", "m · gradients", f"{m} × {g(grads)}", m * grads, "B",
                    ft.ZERO_OFFLOAD)
    params = [r for r in rows if r.part in ("params", "frozen", "quant") and "cached" not in r.label]
    if mode == "optimizer":
        up = sum(r.bytes for r in params if r.part == "params")
        from_host = d.add("host → GPU per step (updated parameters)", "working parameters, once per step", g(up), up,
                          "B", ft.ZERO_OFFLOAD)
    else:
        assert isinstance(spec, TransformerSpec)
        lo, hi = _layers_of(spec, lay, stage)
        prec = get_precision(i.precision)
        if i.lora is not None:
            fb = ft.frozen_base(spec, i.lora, prec, lay, stage, count_params(spec).components)
            bw, bo = fb.data_bytes_per_weight + fb.constant_bytes_per_weight, fb.rest_bytes_per_param
        else:
            bw = bo = sum(p.bytes_per_param for p in state_parts(prec, get_optimizer(i.optimizer), 0)
                          if p.part == "params")
        nbytes, n = ft.one_layer_bytes(spec, lay, lo, hi, bw, bo)
        layer = d.add("one layer's parameters copied in (the largest)", "weights · bytes/weight + other · bytes",
                      f"{n} params → {g(nbytes)}", nbytes, "B", ft.PARAM_OFFLOAD)
        kept.append(LedgerRow(part="params", label="parameters of one layer, copied in from the host", bytes=layer,
                              sharded_over_dp=False))
        shard = sum(r.bytes for r in params)
        from_host = d.add("host → GPU per step (parameters, forward and backward)", "2 · m · parameters on this GPU",
                          f"2 × {m} × {g(shard)}", 2 * m * shard, "B", ft.PARAM_OFFLOAD)
    t = None
    if host_link:
        t = d.add("host link time per step", "max(to host, from host) / BW_host (full duplex)",
                  f"{g(max(to_host, from_host))} / {g(host_link)}", max(to_host, from_host) / host_link, "s",
                  f"{i.gpu} profile: host_link_bandwidth_bytes_per_s, per direction")
    return kept, ft.OffloadLedger(mode=mode, moved=[r.label for r in moved], host_bytes=host,
                                  to_host_bytes_per_step=to_host, from_host_bytes_per_step=from_host,
                                  host_link_bandwidth_bytes_per_s=host_link, transfer_time_s=t)


def _stage(i: MemoryInputs, spec: ModelArg, stage: PipelineStage, s: int | None,
           host_link: float | None = None) -> MemoryResult:
    d = Derivation()
    lay, prec, opt = i.layout, get_precision(i.precision), get_optimizer(i.optimizer)
    lora = i.lora
    if spec is None:
        assert i.params is not None
        N = d.given("parameters", "N", i.params, "params")
        N_dense, N_exp, what = N, 0.0, "all parameters"
    else:
        pc = count_params(spec)
        N = d.given(f"parameters of {spec.name}", "N", pc.params, "params", "napkin.accounting.params (count_params)")
        tied = isinstance(spec, TransformerSpec) and spec.tied_embeddings
        shares = layer_shares(layer_plan(spec), stage) if isinstance(spec, TransformerSpec) and lay.pp > 1 else None
        N_dense, N_exp, what = stage_params(pc.components, spec.layers, lay, stage, tied, shares)
    N_gpu = N_dense + N_exp
    if N_gpu != N:
        d.add(f"parameters held by this GPU ({what})", "N_stage / TP" + (" (experts / (TP·EP))" if N_exp else ""),
              f"{g(N_dense)} + {g(N_exp)}" if N_exp else f"{g(N_gpu * lay.tp)} / {lay.tp}", N_gpu, "params",
              "Shoeybi et al. 2019, Megatron-LM §3 (TP); Narayanan et al. 2021 §2.2 (PP stages)"
              + ("; Megatron-core MoE (EP splits the routed experts)" if N_exp and lay.ep > 1 else ""))
    dp, edp = lay.shard, lay.expert_shard  # ZeRO/FSDP shard over DP·CP (HSDP: one replica's), experts over EDP
    if (dp != lay.dp or edp != lay.expert_dp) and lay.zero:
        d.add("ranks that shard model state (ZeRO/FSDP)", "DP_shard · CP; experts: EDP / replicas",
              f"{lay.shard // lay.cp} · {lay.cp}" + (f"; {lay.expert_dp} / {lay.replicate}" if N_exp else ""), dp,
              "ranks", "Megatron-LM distributed optimizer (data-parallel group with context parallel); torchtitan "
              "dp_shard_cp mesh and HSDP (data_parallel_replicate_degree × data_parallel_shard_degree)")
    rows: list[LedgerRow] = []
    trainable, adapters, held = N, None, N_gpu
    if lora is not None:
        assert isinstance(spec, TransformerSpec)
        frozen, held = _frozen_rows(d, spec, lora, prec, lay, stage, pc.components)
        rows += frozen
        adapters = ft.adapter_plan(spec, lora)
        trainable = d.add("trainable parameters (LoRA adapters)", "Σ r·(fan_in + fan_out)·copies·layers",
                          f"{lora.rank} × {adapters.params // lora.rank}", adapters.params, "params", ft.HU)
        lo, hi = _layers_of(spec, lay, stage)
        N_dense, N_exp = ft.adapters_on_gpu(spec, lora, lay, lo, hi, stage.role)
        if N_dense + N_exp != trainable:
            d.add("adapter parameters held by this GPU", "adapters of the stage's layers at their TP shard",
                  f"{g(N_dense)} + {g(N_exp)}", N_dense + N_exp, "params",
                  "Shoeybi et al. 2019, Megatron-LM §3 (column-parallel: A whole, B split; row-parallel: A split, B "
                  "whole); Narayanan et al. 2021 §2.2 (PP stages)")
    for part in state_parts(prec, opt, lay.zero):
        div, ediv = (dp, edp) if part.sharded else (1, 1)
        src = opt.source if part.part == "optimizer" else prec.source
        label = part.label if lora is None else f"LoRA {part.label}"
        if i.paged_optimizer and part.part == "optimizer":
            label, src = label + ", paged", f"{src}; {ft.PAGED}"
        v = _per_gpu(d, label, N_dense, N_exp, part.bytes_per_param, div, ediv, src)
        rows.append(LedgerRow(part=part.part, label=label, bytes=v, sharded_over_dp=div > 1))
    ledger: ActivationLedger | None = None
    act_off: ActivationOffload | None = None
    if spec is not None:
        p = BYTES_PER_ELEMENT[prec.activations]
        if isinstance(spec, LinearSpec):
            ledger = _linear_acts(d, spec, i, p)
        else:
            assert s is not None
            s_local = -(-s // lay.cp)
            if lay.cp > 1:
                d.add("tokens per sequence on this GPU (context parallel)", "⌈s / CP⌉", f"⌈{s} / {lay.cp}⌉", s_local,
                      "tokens", "Megatron-core context parallelism: each CP rank holds s/cp of every sequence")
            ledger = _transformer_acts(d, spec, i, s_local, p, stage)
        a = ledger
        on_gpu = a.layers_bytes
        if lay.offload_layers and isinstance(spec, TransformerSpec):
            on_gpu, act_off = _act_offload(d, a, lay, stage, host_link)
        rows.append(LedgerRow(part="activations", label=f"activations, {a.layers_on_gpu} layers × {a.in_flight} "
                              f"in flight ({prec.activations.value})"
                              + (f", {act_off.layers} layers offloaded" if act_off is not None else ""),
                              bytes=on_gpu, sharded_over_dp=False))
        emb = sum(x.bytes for x in a.outside if x.block == "embedding") * a.in_flight
        if emb:
            rows.append(LedgerRow(part="embedding", label="embedding (token ids)", bytes=emb,
                                  sharded_over_dp=False))
        if a.outside_bytes - emb:
            rows.append(LedgerRow(part="output", label="output layer + logits/loss (fp32)",
                                  bytes=a.outside_bytes - emb, sharded_over_dp=False))
        if a.working_set_bytes:
            rows.append(LedgerRow(part="recompute", label=f"recompute working set ({i.recompute})",
                                  bytes=a.working_set_bytes, sharded_over_dp=False))
        if lora is not None and lora.base_dtype in ("nf4", "int8"):
            assert isinstance(spec, TransformerSpec)
            lo, hi = _layers_of(spec, lay, stage)
            _, name, n = ft.dequant_workspace(spec, lora, prec, lay, lo, hi)
            pb = BYTES_PER_ELEMENT[prec.params] if prec.params.value in ("fp32", "bf16", "fp16") else 2.0
            w = d.add(f"dequantized weight workspace ({name})", "largest frozen matrix · compute bytes",
                      f"{g(n)} × {g(pb)}", n * pb, "B", ft.BNB_DEQUANT)
            rows.append(LedgerRow(part="dequant", label=f"dequantized weight workspace (one {name}, "
                                  f"{'bf16' if pb == 2 else prec.params.value})", bytes=w, sharded_over_dp=False))
    off = None
    if i.offload != "none":
        rows, off = _offload(d, rows, i, spec, stage, host_link)
    total = d.add("total per GPU", "Σ ledger rows", " + ".join(g(r.bytes) for r in rows), sum(r.bytes for r in rows),
                  "B", "sum")
    M = d.given(f"memory per GPU ({i.gpu})", "M", i.memory_bytes, "B", "datasheet (nominal)")
    R = reserve_step(d, None if i.reserve_bytes == DEFAULT_RESERVE_BYTES else i.reserve_bytes)
    usable = M - R
    if R:
        usable = d.add("usable memory", "M − reserve", minus(M, R), usable, "B", DEFINITION)
    head = d.add("headroom (negative: shortfall)", "usable − total", minus(usable, total), usable - total,
                 "B", DEFINITION)
    ckpt = ft.checkpoint_size(d, N, prec, opt, lora, trainable)
    return MemoryResult(inputs=i, stage=stage.role, stage_number=stage.number,
                        seq=s if isinstance(spec, TransformerSpec) else None, data_parallel=lay.dp,
                        params=N, params_on_gpu=held, rows=rows,
                        total_bytes=total, reserve_bytes=R, usable_bytes=usable, headroom_bytes=head, fits=head >= 0,
                        activations=ledger, trainable_params=trainable, adapters=adapters, offload=off,
                        checkpoint_bytes=ckpt.total_bytes, checkpoint=ckpt, activation_offload=act_off, steps=d.steps)


def _finetune_notes(i: MemoryInputs, model: ModelArg, hardware: HardwareSpec) -> list[str]:
    out: list[str] = []
    lora = i.lora
    if lora is not None and isinstance(model, TransformerSpec):
        have = {n for gm in (g_ for k in layer_plan(model).kinds for g_ in k.gemms) for n in ft.role(gm)}
        on = [t for t in lora.targets if t in have]
        out.append(f"{ {'lora': 'LoRA', 'qlora': 'QLoRA'}[i.finetune]}: rank-{lora.rank} adapters on "
                   f"{','.join(on) or 'nothing'}"
                   + (" + embeddings" if lora.embeddings else "") + f" of a frozen {lora.base_dtype} base (no "
                   "gradients or optimizer states for it); a frozen matmul keeps no input for backward, each adapter "
                   "keeps its r-wide A·x.")
        out.append("lora_dropout = 0 (peft's default) assumed: with dropout each adapter also keeps its dropped-out "
                   "input. The first layer keeps less when nothing before it trains (counted as any other layer).")
        if model.moe is not None and any(t in lora.targets for t in ("gate", "up", "down")):
            out.append("Routed experts: one adapter per expert matrix (gate, up, down separate); a fused "
                       "gate_up_proj (transformers 5) takes one adapter for both, r·h fewer parameters per expert.")
    if i.paged_optimizer:
        out.append("Paged optimizer: its states live in unified memory and page out to host RAM only under memory "
                   "pressure (slow); the ledger counts them on the GPU.")
    if i.offload != "none":
        out.append("Offload: host memory is per GPU (a node of 8 GPUs needs 8 times it) and the CPU runs the optimizer "
                   "step; gradients stream out through a bucket (not counted).")
        if hardware.host_link_bandwidth_bytes_per_s is None:
            out.append(f"{hardware.name} has no host link bandwidth in its profile: the transfer time is not shown.")
    return out


def memory_ledger(
    model: ModelArg | str = None,
    hardware: HardwareSpec | str | None = None,
    training: TrainingSetup | None = None,
    layout: Layout | None = None,
    finetune: ft.FinetuneSetup | str | None = None,
    *,
    params: float | None = None,
    memory_bytes: float | None = None,
    reserve_bytes: float | None = None,
    **keywords: Unpack[LedgerKeywords],
) -> MemoryResult:
    """Per-GPU memory of training ``model`` (or ``params`` parameters, model state only) on ``hardware``.

    ``model`` and ``hardware`` take a spec or a name: ``memory_ledger("llama3-8b", "h100", TrainingSetup(seq=4096))``;
    with no architecture, ``memory_ledger(hardware="h100", params=7e9)``.

    The question is three setup objects: ``training`` (TrainingSetup: micro-batch, sequence, optimizer, precision,
    recompute, flash, dropout, fused norm), ``layout`` (Layout: gpus, TP, PP, VP, CP, EP, SP, ZeRO, micro-batches)
    and ``finetune`` (FinetuneSetup: full, or LoRA / QLoRA adapters on a frozen base, offload); each left out is
    its defaults. For short, their fields may be given as keywords instead (``seq=4096, gpus=8, tp=2``;
    ``finetune="lora"``), which ``ledger_setup`` turns into the objects. A layout from keywords without ``zero``
    takes ZeRO-3 (all model state sharded over the data-parallel ranks, as FSDP and the lecture's napkin do) when
    there is more than one data-parallel rank, else 0 — the same default as ``max_model``.

    With pipeline parallelism the ledger is for the fuller of the first and last stages. Fine-tuning puts
    rank-``lora_rank`` adapters on ``lora_targets`` (attn, mlp, all, or a list of q,k,v,o,router,gate,up,down) of
    a frozen base stored at ``base_dtype`` (qlora: nf4, with ``double_quant``); ``lora_embeddings`` adds adapters
    on the embedding and an untied head. ``offload`` moves the optimizer (ZeRO-Offload) or the optimizer and the
    parameters (FSDP CPU offload) to host memory.
    """
    if hardware is None:
        raise TypeError("memory_ledger() needs hardware: a GPU name (e.g. 'h100') or a HardwareSpec")
    hardware = as_hardware(hardware)
    model = as_optional_model(model)
    if (model is None) == (params is None):
        raise InputError("give either a model (`model`, for the full ledger) or a parameter count (`params`, "
                         "model state only)")
    t, lay, tune = ledger_setup(training, layout, finetune, keywords)
    prec, opt = require_precision(hardware, t.precision), get_optimizer(t.optimizer)
    mode, lora, off = tune.resolve(prec)
    if lora is not None:
        ft.require_transformer(model, mode)
    if off == "optimizer+params" and not isinstance(model, TransformerSpec):
        raise InputError("`offload` optimizer+params copies the parameters in layer by layer: give a transformer "
                         "(`model`)")
    i = validated(MemoryInputs, model=None if model is None else model.name, params=params,
                  micro_batch=t.micro_batch, seq=t.seq,
                  gpu=hardware.name, optimizer=opt.name, precision=prec.name, recompute=t.recompute, flash=t.flash,
                  dropout=t.dropout, fused_norm=t.fused_norm, layout=lay,
                  memory_bytes=memory_bytes if memory_bytes is not None else hardware.memory_bytes,
                  reserve_bytes=reserve_of(reserve_bytes, model_state_only=model is None), finetune=mode, lora=lora,
                  paged_optimizer=tune.paged_optimizer, offload=off)
    check_layout(lay, model)
    if i.reserve_bytes >= i.memory_bytes:
        raise InputError(f"reserve ({g(i.reserve_bytes)} B) leaves no memory on a {g(i.memory_bytes)} B GPU")
    notes: list[str] = []
    s = i.seq
    if isinstance(model, TransformerSpec) and s is None:
        s, note = model.default_seq()
        notes.append(note)
    if isinstance(model, TransformerSpec) and s is not None and s > model.max_context:
        notes.append(f"seq {s} is longer than {model.name}'s max context ({model.max_context}).")
    split: list[int] = []
    if isinstance(model, TransformerSpec) and lay.pp > 1:
        if i.lora is not None and lay.vp > 1:
            raise InputError("fine-tuning (lora, qlora) with interleaved pipeline chunks (`vp` > 1) is not modelled; "
                             "use `vp` 1")
        every = lay.stages(model.layers)
        split = [st.layers for st in every]
        if len(set(split)) > 1 or lay.vp > 1:
            notes.append(f"Pipeline split ({split_rule(model.layers, lay)}): layers per stage "
                         + ", ".join(map(str, split)) + (f", each in {lay.vp} chunks" if lay.vp > 1 else "") + ".")
    if model is None:
        notes.append("Model state only: activations need an architecture (give --model).")
    elif isinstance(model, LinearSpec):
        notes.append("Deep linear network: activations are the lecture's B·D·L layer outputs (torch also keeps "
                     "the B×D input for the first layer's weight gradient).")
    notes += _finetune_notes(i, model, hardware)
    L = model.layers if isinstance(model, TransformerSpec) else 0
    plan = layer_plan(model) if isinstance(model, TransformerSpec) else None
    results = [_stage(i, model, st, s, hardware.host_link_bandwidth_bytes_per_s) for st in stages(lay, L, plan)]
    worst = max(results, key=lambda r: r.total_bytes)
    if len(results) > 1:
        other = max((r for r in results if r is not worst), key=lambda r: r.total_bytes)
        notes.append(f"Pipeline: this is the {worst.stage} stage (stage {worst.stage_number} of {lay.pp}, the fullest "
                     f"of the {len(results)} that can be); the next, the {other.stage} stage "
                     f"{other.stage_number}, needs {other.total_bytes / 1e9:.2f} GB.")
        worst = worst.model_copy(update={"other_stage_total_bytes": other.total_bytes})
    worst = worst.model_copy(update={"stage_layers": split, "groups": lay.groups()})
    if lay.sp and lay.tp == 1:
        notes.append("--sp has no effect with --tp 1.")
    if lay.zero == 3:
        notes.append("ZeRO-3/FSDP also gathers one layer's full parameters at a time (not counted).")
    notes.append(f"Held back: a reserve of {i.reserve_bytes / 1e9:g} GB per GPU "
                 + ("(the default: CUDA context, NCCL buffers, allocator fragmentation; --reserve to change)"
                    if i.reserve_bytes == DEFAULT_RESERVE_BYTES else "(--reserve)")
                 + ". Not counted: transient tensors of one op (e.g. the bf16 logits before the fp32 loss).")
    return worst.model_copy(update={"notes": notes})
