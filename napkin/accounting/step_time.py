"""`napkin step-time`: one training step predicted from its parallel layout, and where the time goes.

A step of global batch B on G = TP·CP·DP·PP GPUs runs m = B / (b·DP) micro-batches of b sequences through
each pipeline. Per micro-batch, the slowest pipeline stage spends the time of its layers' kernels
(kernels.py: GEMMs, attention, memory-bound ops; forward, backward and recomputation) plus the tensor-,
context- and expert-parallel collectives they wait for (collectives.py). The step is then

    t = (m + (P − 1)/V) · t_stage  +  PP sends  +  exposed DP gradient reduction  +  optimizer step

with the 1F1B bubble (P − 1)/(V·m) of the ideal time (Narayanan et al. 2021 §2.2, eq. 1 and the interleaved
schedule), the DP reduction after the last backward unless it overlaps, and the optimizer at the bytes it
reads and writes over HBM bandwidth. MFU = model FLOPs / (t · G · dense peak) (Chowdhery et al. 2022, App. B).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting import kernels as K
from napkin.accounting.collectives import (
    SRC_NCCL,
    SRC_PLACEMENT,
    Collective,
    Link,
    collective_text,
    collective_time,
    place,
)
from napkin.accounting.error_bars import CALIBRATED_KINDS, ErrorBar, error_bar
from napkin.accounting.layers import LayerPlan, layer_plan
from napkin.accounting.layout import Layout, check_layout, layer_shares, layout_from, stage_counts, stage_params
from napkin.accounting.layout import stages as stages_of
from napkin.accounting.model_state import get_optimizer, get_precision, require_precision, state_parts
from napkin.accounting.params import count_params
from napkin.errors import InputError
from napkin.results import DEFINITION, PALM, Derivation, Result, g
from napkin.specs.dtypes import BYTES_PER_ELEMENT, DType
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_model
from napkin.specs.stack import StackSpec
from napkin.validation import Inputs, PositiveInt, Recompute, validated

if TYPE_CHECKING:
    from napkin.accounting.training import TrainTimeResult

SRC_BUBBLE = ("Narayanan et al. 2021 §2.2.1-2.2.2: 1F1B bubble (P−1)/m of the ideal time; interleaved "
              "(P−1)/(V·m), with V× the pipeline sends")
SRC_MFU = f"{PALM}: MFU = model FLOPs per second / peak"
SRC_RECOMPUTE = "Korthikanti et al. 2022 §5: full recomputation reruns each layer's forward; selective its attention"
SRC_OPT = "optimizer step: every state part read and written once (multi-tensor apply), at HBM bandwidth"
SRC_TP_COMM = ("Shoeybi et al. 2019 §3: 2 all-reduces per layer in forward and 2 in backward (sequence "
               "parallelism: reduce-scatter + all-gather, Korthikanti et al. 2022 §4.2.2)")
SRC_DP = ("Li et al. 2020 (PyTorch DDP) / Megatron-LM: gradients all-reduced over DP after the last backward "
          "(ZeRO: reduce-scatter + all-gather, the same bus bytes; Rajbhandari et al. 2020 §7)")
DEFAULT_STACK = "megatron-te"  # the constants fitted on vTrain's Megatron-LM runs (stack_specs/megatron-te.yaml)
TERMS = ("compute_gemm", "compute_attention", "compute_scan", "compute_memory_bound", "recompute", "launch_overhead",
         "tp_comm", "cp_comm", "ep_comm", "zero3_comm", "pp_bubble", "pp_comm", "dp_comm", "optimizer")
TERM_LABELS = {
    "compute_gemm": "GEMMs (forward + backward)", "compute_attention": "attention core",
    "compute_scan": "SSM scans (Mamba)",
    "compute_memory_bound": "memory-bound ops (norms, activations, loss)", "recompute": "recomputation",
    "launch_overhead": "launch-bound (host) overhead", "tp_comm": "exposed TP communication",
    "cp_comm": "exposed CP communication", "ep_comm": "EP all-to-all", "zero3_comm": "exposed ZeRO-3 gathers",
    "pp_bubble": "pipeline bubble", "pp_comm": "pipeline sends", "dp_comm": "exposed DP gradient reduction",
    "optimizer": "optimizer step",
}


TERM_SHORT = {"compute_gemm": "GEMMs", "compute_attention": "attention", "compute_scan": "SSM scan",
              "compute_memory_bound": "memory-bound",
              "recompute": "recompute", "launch_overhead": "launch", "tp_comm": "TP comm", "cp_comm": "CP comm",
              "ep_comm": "EP all-to-all", "zero3_comm": "ZeRO-3", "pp_bubble": "bubble", "pp_comm": "PP sends",
              "dp_comm": "DP reduce", "optimizer": "optimizer"}


class Cluster(Inputs):
    """The network a layout is placed on: scale-up domains of node_size GPUs and the links per GPU."""

    node_size: PositiveInt
    intra_node_bytes_per_s: float = Field(gt=0, allow_inf_nan=False, description="scale-up, per GPU per direction")
    inter_node_bytes_per_s: float = Field(gt=0, allow_inf_nan=False, description="scale-out, per GPU per direction")


class StepTimeInputs(Inputs):
    model: str
    gpu: str
    layout: Layout
    micro_batch: PositiveInt
    global_batch: PositiveInt
    seq: PositiveInt
    recompute: Recompute = "none"
    precision: str = "bf16-mixed"
    optimizer: str = "adamw"
    flash: bool = True
    overlap_grad_reduce: bool = False
    cluster: Cluster
    stack: str = Field(default=DEFAULT_STACK, description="the training stack whose constants price the step")
    constants: K.StepConstants
    calibration: list[str] | None = None
    reserve_bytes: float | None = Field(default=None, description="memory per GPU held back from the fit (None: "
                                        "the default of reserve.py)")


class _Counts(Inputs):
    """The counts step_time divides by, checked (and made Python ints: a numpy int8 batch overflowed silently)
    before anything is computed from them."""

    micro_batch: PositiveInt
    global_batch: PositiveInt | None = None
    seq: PositiveInt | None = None


class StageTime(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str
    layers: int
    forward_s: float = Field(description="one micro-batch's forward, collectives included")
    backward_s: float = Field(description="one micro-batch's backward and recomputation, collectives included")


class StepTimeResult(Result):
    inputs: StepTimeInputs
    layout: str = Field(description="the layout in one line")
    data_parallel: int
    micro_batches: int = Field(description="m = B / (b·DP) per pipeline per step")
    step_time_s: float
    tokens_per_s: float
    model_flops: float = Field(description="model FLOPs per step (napkin flops, causal)")
    hardware_flops: float = Field(description="model FLOPs + recomputation per step")
    mfu: float
    hfu: float
    model_tflops_per_gpu: float = Field(description="model FLOPs / step time / G, in TFLOP/s")
    peak_flops_per_s: float
    breakdown: dict[str, float] = Field(description="seconds per step by term; adds up to step_time_s")
    stages: list[StageTime]
    limiter: str = Field(description="the largest term of the breakdown")
    memory_bytes: float | None = Field(description="per-GPU peak memory from the ledger (the fuller pipeline stage); "
                                       "None when not asked (ledger=False)")
    memory_usable_bytes: float | None
    fits: bool | None
    error_bar: ErrorBar | None = Field(default=None, description="interval on step time and MFU from the stack's "
                                       "calibration (None: the stack has no calibrated intervals)")


def _device(hw: HardwareSpec, precision: str, c: K.StepConstants) -> tuple[K.Device, str]:
    """The GPU as the kernel model sees it under a precision and a stack: the matmul dtype's peak and the GEMM
    ceiling (the measured MAMF, or FP8's, times the stack's in-model fraction of it); attention at the BF16 peak."""
    prec = require_precision(hw, precision)
    peak = hw.peak(prec.compute)
    fp8 = prec.compute == DType.fp8
    if c.gemm_efficiency:
        eff, src = c.gemm_efficiency, "constants or --calibration"
    elif fp8:
        eff, src = c.fp8_gemm_efficiency, "FP8 GEMM ceiling (measured FP8 MAMF, H100)"
    elif hw.matmul_efficiency:
        eff, src = hw.matmul_efficiency, "hardware spec (MAMF)"
    else:
        eff, src = K.DEFAULT_MATMUL_EFFICIENCY, f"default {K.DEFAULT_MATMUL_EFFICIENCY} (no MAMF published)"
    frac = c.gemm_mamf_fraction.get(hw.architecture or "", c.gemm_mamf_fraction.get("default", 1.0))
    if frac != 1.0:
        src += f" × the stack's in-model fraction {frac:.3g}"
    vector = hw.peak_flops_per_s.get(DType.fp32, 0.0)  # the non-tensor fp32 peak (Mamba-1's scan)
    attn_peak = hw.peak_flops_per_s.get(DType.bf16, peak) if fp8 else peak
    return K.Device(peak, hw.memory_bandwidth_bytes_per_s, hw.sm_count, eff * frac, vector, hw.architecture,
                    attn_peak, c.fp8_cast_bytes if fp8 else 0.0), src


def _head_device(hw: HardwareSpec, precision: str, c: K.StepConstants, dev: K.Device) -> K.Device:
    """The LM head's device: under FP8 GEMMs it stays in BF16 where the stack keeps it there (no casts)."""
    if not dev.cast_bytes or not c.fp8_lm_head_bf16:
        return dev
    return _device(hw, "bf16-mixed", c)[0]


def _reduce_bytes(prec_name: str, c: K.StepConstants) -> float:
    """Bytes per gradient element the stack reduces in under a precision policy (FSDP MixedPrecision reduce_dtype,
    Megatron's fp32 all-reduce under bf16), else the policy's gradient dtype."""
    dt = c.grad_reduce_dtype.get(prec_name, get_precision(prec_name).grads)
    return BYTES_PER_ELEMENT[dt]


def default_cluster(hw: HardwareSpec, node_size: int | None = None, intra: float | None = None,
                    inter: float | None = None, gpus: int | None = None) -> Cluster:
    """The cluster from the flags, else the hardware spec's reference system. Within one node (``gpus`` at most the
    node size) no group crosses the scale-out network, so a part that publishes none is not asked for it."""
    n = node_size or hw.node_gpus or 8
    up = intra or hw.scale_up_bandwidth_bytes_per_s or (
        hw.interconnect_bandwidth_bytes_per_s / 2 if hw.interconnect_bandwidth_bytes_per_s else None)
    out = inter or hw.scale_out_bandwidth_bytes_per_s
    if up is None:
        raise InputError(f"{hw.name} has no scale-up bandwidth in its profile; pass `intra_node_bandwidth` "
                         "(per GPU per direction, e.g. 300GB/s)")
    if out is None and gpus is not None and gpus <= n:
        out = up  # never read: placement (collectives.place) puts every group of one node on its scale-up links
    if out is None:
        raise InputError(f"{hw.name} has no scale-out bandwidth in its profile; pass `inter_node_bandwidth` "
                         "(per GPU per direction, e.g. 25GB/s or 200Gb/s)")
    return validated(Cluster, node_size=n, intra_node_bytes_per_s=up, inter_node_bytes_per_s=out)


def _check(spec: TransformerSpec, lay: Layout, b: int, B: int, s: int) -> int:
    check_layout(lay.model_copy(update={"micro_batches": 1}), spec)
    dp = lay.dp
    if B % (b * dp):
        raise InputError(f"global batch {B} must be a multiple of micro-batch × DP = {b} × {dp} = {b * dp}; use "
                         f"`global_batch` {max(1, B // (b * dp)) * b * dp} or another `micro_batch`")
    if lay.cp > 1 and s % (2 * lay.cp):
        raise InputError(f"context parallelism splits each sequence into 2·cp = {2 * lay.cp} chunks (Megatron's "
                         f"load balancing): `seq` {s} must be a multiple of {2 * lay.cp}")
    return B // (b * dp)


def step_time(model: TransformerSpec | LinearSpec, hardware: HardwareSpec, *, gpus: int | None = None,
              tp: int | None = None, pp: int | None = None, vp: int | None = None, cp: int | None = None,
              ep: int | None = None, sp: bool | None = None, zero: int | None = None, etp: int | None = None,
              dp_shard: int | None = None, first_stage_layers: int | None = None,
              last_stage_layers: int | None = None, embedding_in_split: bool | None = None,
              loss_in_split: bool | None = None, offload_layers: int | None = None, micro_batch: int = 1,
              global_batch: int | None = None, seq: int | None = None, recompute: Recompute = "none",
              precision: str = "bf16-mixed", optimizer: str = "adamw", flash: bool = True,
              overlap_grad_reduce: bool | None = None, node_size: int | None = None,
              intra_node_bandwidth: float | None = None, inter_node_bandwidth: float | None = None,
              stack: StackSpec | str | None = None, constants: K.StepConstants | None = None,
              calibration: str | list[str] | None = None, layout: Layout | None = None, ledger: bool = True,
              reserve_bytes: float | None = None) -> StepTimeResult:
    """Predict one training step of ``model`` on ``gpus`` × ``hardware`` in a layout: time, MFU, breakdown.

    The layout is the keywords (gpus, tp, pp, vp, cp, ep, sp, zero, and etp, dp_shard, first/last_stage_layers,
    embedding/loss_in_split, offload_layers; 1, off and ZeRO 0 when left out; see Layout) or
    ``layout``, never both (layout.layout_from); ``global_batch`` defaults to
    micro_batch × DP (one micro-batch per step). ``stack`` names the training stack (a StackSpec or its catalog
    name; default ``megatron-te``) whose constants and error bars price the step; ``overlap_grad_reduce`` None takes
    the stack's behaviour. ``constants`` replaces the stack's constants and
    ``calibration`` names files saved by ``napkin bench-matmul --shapes-from`` or ``bench-allreduce --save``.
    ``ledger=False`` leaves out the memory ledger (a planner that has already checked the fit);
    ``reserve_bytes`` is held back from the GPU's memory for the fit (None: reserve.py's default).
    """
    model = as_model(model, "model")
    hardware = as_hardware(hardware, "hardware")
    if not isinstance(model, TransformerSpec):
        raise InputError(f"step-time needs a transformer; '{model.name}' is a {model.kind} network")
    spec = model
    counts = validated(_Counts, micro_batch=micro_batch, global_batch=global_batch, seq=seq)
    micro_batch, global_batch, seq = counts.micro_batch, counts.global_batch, counts.seq
    stk = resolve_stack(stack)
    c = constants or stk.step_constants()
    if overlap_grad_reduce is None:
        overlap_grad_reduce = c.overlap_grad_reduce
    notes: list[str] = []
    if calibration is not None:
        from napkin.accounting.calibration import calibrate

        c, cal_notes = calibrate(calibration, c, hardware, spec, precision)
        notes += cal_notes
    if layout is None and gpus is None:
        raise InputError("give `gpus` (or `layout`): the GPUs the step runs on")
    layout = layout_from(layout, gpus=gpus, tp=tp, pp=pp, vp=vp, cp=cp, ep=ep, sp=sp, zero=zero, etp=etp,
                         dp_shard=dp_shard, first_stage_layers=first_stage_layers,
                         last_stage_layers=last_stage_layers, embedding_in_split=embedding_in_split,
                         loss_in_split=loss_in_split, offload_layers=offload_layers)
    if seq is None:
        seq, note = spec.default_seq()
        notes.append(note)
    b = micro_batch
    if global_batch is None:
        global_batch = b * max(1, layout.dp)
    m = _check(spec, layout, b, global_batch, seq)
    lay = layout.model_copy(update={"micro_batches": m})
    cluster = default_cluster(hardware, node_size, intra_node_bandwidth, inter_node_bandwidth, layout.gpus)
    if inter_node_bandwidth is None and hardware.scale_out_bandwidth_bytes_per_s is None:
        notes.append(f"{hardware.name} publishes no scale-out network: fine within one node of {cluster.node_size}, "
                     "where no group leaves it (the 'out' bandwidth shown is never used); pass "
                     "--inter-node-bandwidth for more GPUs.")
    i = validated(StepTimeInputs, model=spec.name, gpu=hardware.name, layout=lay, micro_batch=b,
                  global_batch=global_batch, seq=seq, recompute=recompute, precision=precision, optimizer=optimizer,
                  flash=flash, overlap_grad_reduce=overlap_grad_reduce, cluster=cluster, stack=stk.name, constants=c,
                  calibration=[calibration] if isinstance(calibration, str) else calibration,
                  reserve_bytes=reserve_bytes)
    return _predict(spec, hardware, i, notes, ledger, stk)


def resolve_stack(stack: StackSpec | str | None) -> StackSpec:
    """A stack from its spec or catalog name (None: the default, megatron-te)."""
    if isinstance(stack, StackSpec):
        return stack
    from napkin.specs.catalog import get_stack

    return get_stack(DEFAULT_STACK if stack is None else stack)


def _links(cluster: Cluster, k: K.StepConstants) -> tuple[Link, Link]:
    c = cluster
    intra = Link(c.intra_node_bytes_per_s * k.bus_efficiency, k.intra_latency_s, "intra-node", 1)
    inter = Link(c.inter_node_bytes_per_s * k.network_efficiency, k.inter_latency_s, "inter-node", 1)
    return intra, inter


StageTerms = tuple[str, int, dict[str, float], float, float]  # name, layers, terms, forward s, backward s


def _act_msg(spec: TransformerSpec, b: int, s: int, cp: int, p: float) -> float:
    """A layer's output activations of one micro-batch on one GPU (b·⌈s/CP⌉·h·bytes): what TP reduces, PP sends."""
    return b * -(-s // cp) * spec.d_model * p


def _layer_costs(plan: LayerPlan, *, b: int, s: int, cp: int, tp: int, ep: int, sp: bool, flash: bool, p: float,
                 dev: K.Device, c: K.StepConstants,
                 head_dev: K.Device | None = None) -> tuple[dict[str, K.LayerCost], tuple[K.Cost, K.Cost]]:
    """Each layer kind's kernels (keyed by the kind) and the output head's (on ``head_dev``: BF16 under FP8), for
    one micro-batch."""
    costs = {kind.key: K.layer_cost(plan, kind, b=b, s=s, cp=cp, tp=tp, ep=ep, sp=sp, flash=flash, p=p, dev=dev, c=c)
             for kind in plan.kinds}
    return costs, K.head_cost(plan, b=b, s=s, cp=cp, tp=tp, p=p, dev=head_dev or dev, c=c)


class LayerTerms(NamedTuple):
    """One layer of one kind, one micro-batch: its step-time terms, launch-bound excess, forward and backward."""

    parts: dict[str, float]
    host: float
    forward: float
    backward: float


def _layer_terms(spec: TransformerSpec, plan: LayerPlan, lay: Layout, *, b: int, s: int, recompute: Recompute,
                 p: float, param_bytes: float, costs: dict[str, K.LayerCost],
                 links: tuple[Link, Link, Link, Link, Link],
                 c: K.StepConstants, reduce_bytes: float | None = None) -> dict[str, LayerTerms]:
    """Each layer kind (keyed by the kind) for one micro-batch: its kernels, the TP/CP/EP collectives they wait
    for and the exposed ZeRO-3 gathers, term by term. A plain layer's attention and FFN each end in a TP
    all-reduce per pass; a hybrid block (one mixer or one FFN) in one."""
    t, C, E = lay.tp, lay.cp, lay.ep
    tp_link, cp_link, ep_link, dp_link, edp_link = links  # the last two: the ZeRO shard groups (_shard_links)
    T = b * -(-s // C)  # tokens of a micro-batch on one GPU
    blocks = 1 if plan.hybrid else 2  # row-parallel outputs per layer (SP: RS + AG, the same bytes)
    per_pass_tp = blocks * collective_time("all-reduce", _act_msg(spec, b, s, C, p), t, tp_link)
    passes = {"none": 0, "selective": 0, "full": 1}[recompute]
    out: dict[str, LayerTerms] = {}
    for kind in plan.kinds:
        lc = costs[kind.key]
        rec = lc.forward if recompute == "full" else (lc.attention_forward if recompute == "selective" else K.Cost())
        parts = dict.fromkeys(TERMS, 0.0)
        parts["compute_gemm"] = lc.forward.gemm + lc.backward.gemm
        parts["compute_attention"] = lc.forward.attention + lc.backward.attention
        parts["compute_scan"] = lc.forward.scan + lc.backward.scan
        parts["compute_memory_bound"] = lc.forward.memory_bound + lc.backward.memory_bound
        parts["recompute"] = rec.time
        tp_s = parts["tp_comm"] = (2 + passes) * per_pass_tp
        ep_s = 0.0
        if kind.moe and E > 1 and spec.moe is not None:
            a2a = T * spec.moe.top_k * spec.d_model * p
            ep_s = parts["ep_comm"] = (2 + passes) * 2 * collective_time("all-to-all", a2a, E, ep_link)
        cp_s = 0.0
        if C > 1 and kind.attends:  # K/V chunks round the ring, hidden behind the attention they feed when it is longer
            kv = 2 * b * (s // C) * max(1, spec.n_kv_heads // t) * spec.d_head * p
            ring = (C - 1) * collective_time("p2p", kv, 2, cp_link)
            cp_s = parts["cp_comm"] = (1 + passes) * max(0.0, ring - lc.attention_forward.time) + 2 * max(
                0.0, 2 * ring - (lc.backward.attention))
        z3 = 0.0
        if lay.zero == 3 and (lay.shard > 1 or lay.expert_shard > 1):  # FSDP: each layer's weights gathered
            # before its forward and again before its backward (which its recomputation reuses), its gradients
            # reduce-scattered after it in the stack's reduce dtype; prefetched one layer ahead, so a layer exposes
            # what its compute does not hide, plus the share of the hidden time it loses to NCCL (SRC_FSDP). The
            # dense weights (/TP) gather over DP·CP, the routed experts (already split over ETP·EP) over their own
            # data-parallel group (Megatron-core MoE; torchtitan dp_shard_mod_ep)
            gather, rs = _zero3_collectives(kind, lay, param_bytes, reduce_bytes or param_bytes, dp_link, edp_link)
            z3 = parts["zero3_comm"] = (max(0.0, gather - lc.forward.time) + max(0.0, gather + rs - lc.backward.time
                                                                                 - rec.time)
                                        + c.comm_overlap_tax * (2 * gather + rs))
        layer_time = lc.forward.time + lc.backward.time + rec.time + tp_s + ep_s + cp_s + z3
        kernels = lc.forward.kernels + lc.backward.kernels + rec.kernels
        ep_pass = ep_s / (2 + passes)
        hooks = (2 + passes) * c.layer_overhead_s  # host time per layer per pass outside the kernels (stack's)
        out[kind.key] = LayerTerms(parts, max(0.0, kernels * c.host_kernel_s - layer_time) + hooks,
                                   lc.forward.time + per_pass_tp + ep_pass,
                                   layer_time - lc.forward.time - per_pass_tp - ep_pass)
    return out


SRC_FSDP = ("Zhao et al. 2023 (PyTorch FSDP) §3.2–3.3: per-unit all-gather before forward and backward, "
            "reduce-scatter after backward, backward/forward prefetch of the next unit; MixedPrecision reduce_dtype")


def _zero3_collectives(kind: Any, lay: Layout, param_bytes: float, reduce_bytes: float, shard_link: Link,
                       eshard_link: Link) -> tuple[float, float]:
    """One FSDP unit's weight all-gather (parameter dtype) and gradient reduce-scatter (reduce dtype): the dense
    weights (/TP) over the shard group (DP·CP), the routed experts (/ETP·EP) over theirs."""
    expert = kind.expert_params  # memoized on the kind (main's plan-search speed-up)
    dense, routed = (kind.params - expert) / lay.tp, expert / (lay.expert_tp * lay.ep)
    out = []
    ops: tuple[tuple[Collective, float], ...] = (("all-gather", param_bytes), ("reduce-scatter", reduce_bytes))
    for kind_, nbytes in ops:
        out.append(collective_time(kind_, dense * nbytes, lay.shard, shard_link) + (
            collective_time(kind_, routed * nbytes, lay.expert_shard, eshard_link) if expert else 0.0))
    return out[0], out[1]


def _stages(spec: TransformerSpec, plan: LayerPlan, lay: Layout, layers: dict[str, LayerTerms],
            head: tuple[K.Cost, K.Cost]) -> list[StageTerms]:
    """One micro-batch through each pipeline stage that can be the slowest (the first, the last and each distinct
    stage between, pipeline.py's split; or the only one): its layers' terms times their count (layer_plan's
    counts_in over its chunks), and the output head on the last."""
    head_f, head_b = head
    stages: list[StageTerms] = []
    for st in stages_of(lay, spec.layers, plan):
        name = st.role if st.role in ("only", "first", "last") else f"stage {st.number}"
        parts = dict.fromkeys(TERMS, 0.0)
        host = 0.0
        fwd_s = bwd_s = 0.0
        for kind, n in stage_counts(plan, st):
            lt = layers[kind.key]
            for k, v in lt.parts.items():
                if v:
                    parts[k] += n * v
            host += n * lt.host
            fwd_s += n * lt.forward
            bwd_s += n * lt.backward
        if st.has_head:
            parts["compute_gemm"] += head_f.gemm + head_b.gemm
            parts["compute_memory_bound"] += head_f.memory_bound + head_b.memory_bound
            # the vocab-parallel loss all-reduces b·s scalars: negligible beside the layers' b·s·h
            fwd_s += head_f.time
            bwd_s += head_b.time
        parts["launch_overhead"] = host
        stages.append((name, st.layers, parts, fwd_s, bwd_s + host))
    return stages


_PLACED: dict[tuple[object, ...], tuple[Link, Link, Link, Link, Link, Link]] = {}  # a search asks thousands


def _placed(lay: Layout, node: int, intra: Link, inter: Link) -> tuple[Link, Link, Link, Link, Link, Link]:
    """The link of each group (TP, CP, EP, ZeRO shard, expert DP, PP) in Megatron-LM's rank order tp-cp-dp-pp, the
    expert layers folding the same ranks as etp-ep-edp (Megatron-core MoE parallel folding): the stride of each
    group is the product of the sizes inside it. HSDP shards inside a replica (the innermost DP ranks)."""
    key = (lay.tp, lay.cp, lay.ep, lay.pp, lay.expert_tp, lay.dp, lay.expert_dp, lay.gpus, node, intra, inter)
    hit = _PLACED.get(key)
    if hit is None:
        if len(_PLACED) > 4096:
            _PLACED.clear()
        hit = _PLACED[key] = _place_groups(lay, node, intra, inter)
    return hit


def _place_groups(lay: Layout, node: int, intra: Link, inter: Link) -> tuple[Link, Link, Link, Link, Link, Link]:
    t, C, E, P, et = lay.tp, lay.cp, lay.ep, lay.pp, lay.expert_tp
    return (place(t, 1, node, intra, inter), place(C, t, node, intra, inter), place(E, et, node, intra, inter),
            place(lay.dp * C, t, node, intra, inter), place(lay.expert_dp, et * E, node, intra, inter),
            place(2, lay.gpus // P, node, intra, inter) if P > 1 else place(1, 1, node, intra, inter))


def _shard_links(lay: Layout, node: int, intra: Link, inter: Link) -> tuple[Link, Link]:
    """The links of the ZeRO/FSDP shard groups: DP_shard·CP for the dense weights, the expert shard for the routed
    experts (HSDP shards inside a replica: the innermost data-parallel ranks)."""
    return (place(lay.shard, lay.tp, node, intra, inter),
            place(lay.expert_shard, lay.expert_tp * lay.ep, node, intra, inter))


def _predict(spec: TransformerSpec, hw: HardwareSpec, i: StepTimeInputs, notes: list[str],
             ledger: bool = True, stk: StackSpec | None = None) -> StepTimeResult:
    from napkin.accounting.flops import count_flops
    from napkin.accounting.memory import TrainingSetup, memory_ledger

    d = Derivation()
    lay, c, b, s, m = i.layout, i.constants, i.micro_batch, i.seq, i.layout.micro_batches
    prec = get_precision(i.precision)
    p = BYTES_PER_ELEMENT[prec.activations]
    dev, eff_src = _device(hw, i.precision, c)
    plan = layer_plan(spec)
    G, t, PP, V, C, E, dp = lay.gpus, lay.tp, lay.pp, lay.vp, lay.cp, lay.ep, lay.dp
    d.add("data-parallel degree", "DP = G / (TP·CP·PP)", f"{G} / ({t}·{C}·{PP})", dp, "ranks",
          "Narayanan et al. 2021 §2")
    d.add("micro-batches per step", "m = B / (b·DP)", f"{i.global_batch} / ({b}·{dp})", m, "micro-batches",
          "Narayanan et al. 2021 §2.2")
    d.given(f"dense {prec.compute.value} peak ({hw.name})", "P", dev.peak_flops_per_s, "FLOP/s", hw.sources[0])
    d.given(f"large-GEMM efficiency ({eff_src})", "η_MAMF", dev.gemm_efficiency, "fraction", K.SRC_MAMF)
    intra, inter = _links(i.cluster, c)
    tp_link, cp_link, ep_link, dp_link, edp_link, pp_link = _placed(lay, i.cluster.node_size, intra, inter)
    shard_link, eshard_link = _shard_links(lay, i.cluster.node_size, intra, inter)
    groups = lay.groups()
    d.add("derived groups", "DP·CP shard (HSDP replicas × shard), expert TP × EP × EDP",
          ", ".join(f"{k} {v}" for k, v in groups.items()), lay.shard, "ranks",
          "Megatron-core parallel_state (MoE parallel folding); torchtitan ParallelDims (dp_shard_cp, HSDP)")
    for name, n, link in (("TP", t, tp_link), ("CP", C, cp_link), ("EP", E, ep_link), ("DP·CP", dp * C, dp_link),
                          ("expert DP", lay.expert_dp if E > 1 else 1, edp_link), ("PP", PP, pp_link)):
        if n > 1:
            d.add(f"{name} group link ({link.tier}, {link.members_per_node} per node)", "BW_bus",
                  g(link.bandwidth_bytes_per_s), link.bandwidth_bytes_per_s, "B/s", SRC_PLACEMENT)

    # --- one micro-batch through the slowest stage
    act_msg = _act_msg(spec, b, s, C, p)  # a layer's output activations: what TP reduces and PP sends
    head_dev = _head_device(hw, i.precision, c, dev)
    costs, head = _layer_costs(plan, b=b, s=s, cp=C, tp=t, ep=E, sp=lay.sp, flash=i.flash, p=p, dev=dev, c=c,
                               head_dev=head_dev)
    rb = _reduce_bytes(i.precision, c)
    layers = _layer_terms(spec, plan, lay, b=b, s=s, recompute=i.recompute, p=p,
                          param_bytes=BYTES_PER_ELEMENT[prec.params], costs=costs,
                          links=(tp_link, cp_link, ep_link, shard_link, eshard_link), c=c, reduce_bytes=rb)
    for kind in plan.kinds:  # each kind's kernels, priced from its own description (kernels.layer_cost)
        kc = costs[kind.key]
        gemm, core, bound = (kc.forward.gemm + kc.backward.gemm,
                             kc.forward.attention + kc.backward.attention + kc.forward.scan + kc.backward.scan,
                           kc.forward.memory_bound + kc.backward.memory_bound)
        core_name, src = K.mixer_kernel(kind)
        d.add(f"one {kind.label}, one micro-batch, forward + backward", f"GEMMs + {core_name} + memory-bound ops",
              f"{g(gemm)} + {g(core)} + {g(bound)}", gemm + core + bound, "s", src)
    stages = _stages(spec, plan, lay, layers, head)
    slow = max(stages, key=lambda x: sum(x[2].values()))
    t_stage = sum(slow[2].values())
    d.add(f"one micro-batch on the slowest stage ({slow[0]}, {slow[1]} layers)", "Σ layers (fwd + bwd + recompute "
          "+ exposed TP/CP/EP)", " + ".join(f"{TERM_LABELS[k]} {g(v)}" for k, v in slow[2].items() if v), t_stage, "s",
          f"{K.SRC_ROOFLINE}; {K.SRC_WAVES}; {SRC_TP_COMM}")
    br = {k: m * v for k, v in slow[2].items()}
    if lay.zero == 3 and (lay.shard > 1 or lay.expert_shard > 1):  # nothing hides the first layer's gather or
        # the last reduce-scatter
        g0, rs0 = _zero3_collectives(plan.kinds[0], lay, BYTES_PER_ELEMENT[prec.params], rb, shard_link, eshard_link)
        br["zero3_comm"] += d.add("exposed FSDP edges: first gather and last reduce-scatter, per micro-batch",
                                  "m · (t_gather + t_reduce-scatter) of one layer", f"{m} × ({g(g0)} + {g(rs0)})",
                                  m * (g0 + rs0), "s", SRC_FSDP)
    bubble = (PP - 1) / V * t_stage
    br["pp_bubble"] = d.add("pipeline bubble", "(PP − 1)/VP · t_stage", f"({PP} − 1)/{V} × {g(t_stage)}", bubble, "s",
                            SRC_BUBBLE)
    if PP > 1:
        send = collective_time("p2p", act_msg / (t if lay.sp else 1), 2, pp_link)
        br["pp_comm"] = d.add("pipeline sends", "2 · (VP·m + PP − 1) · t_send", f"2 × ({V}·{m} + {PP} − 1) × {g(send)}",
                              2 * (V * m + PP - 1) * send, "s", SRC_BUBBLE)
    # data-parallel gradient reduction of the fuller stage's parameters (experts over DP/EP)
    comps = count_params(spec).components
    sp_ = max((stage_params(comps, spec.layers, lay, st, spec.tied_embeddings,
                            layer_shares(plan, st) if PP > 1 else None) for st in stages_of(lay, spec.layers, plan)),
              key=lambda x: x.total)
    gb = rb  # the stack's reduce dtype (fp32 under mixed precision for FSDP and Megatron), else the grads'
    # gradients are reduced over every rank that holds the same weights: DP·CP (Megatron-LM reduces over the
    # data-parallel group with context parallel), the routed experts over the expert data-parallel group
    dp_s = collective_time("all-reduce", sp_.dense * gb, dp * C, dp_link) + collective_time(
        "all-reduce", sp_.expert * gb, lay.expert_dp, edp_link)
    if lay.zero == 3:
        dp_s = 0.0  # FSDP reduce-scatters per layer in backward (counted with its gathers in zero3_comm)
    exposed = dp_s
    if i.overlap_grad_reduce:
        exposed = max(0.0, dp_s - m * slow[4])
    # the text is built from the same operands as the value: dense params over DP, routed experts over expert DP
    if lay.zero == 3:
        dp_text = "0"
    else:
        dp_text = " + ".join(t for t in (collective_text("all-reduce", sp_.dense * gb, dp * C, dp_link),
                                         collective_text("all-reduce", sp_.expert * gb, lay.expert_dp, edp_link))
                             if t != "0") or "0"
    if i.overlap_grad_reduce and dp_text != "0":
        dp_text = f"max(0, {dp_text} − {m} × {g(slow[4])})"
    br["dp_comm"] = d.add("exposed DP gradient reduction", "α + 2(n−1)/n · N_dense·bytes / BW_DP + α + 2(n−1)/n · "
                          "N_experts·bytes / BW_EDP" + (" − overlap with backward" if i.overlap_grad_reduce else
                                                        " (after the last backward)"),
                          dp_text, exposed, "s", f"{SRC_DP}; {SRC_NCCL}")
    state = sum(x.bytes_per_param for x in state_parts(prec, get_optimizer(i.optimizer), lay.zero))
    held = sp_.dense / lay.shard + sp_.expert / lay.expert_shard if lay.zero >= 1 else sp_.total
    opt_s = 2 * state * held / (hw.memory_bandwidth_bytes_per_s * c.memory_efficiency)
    br["optimizer"] = d.add("optimizer step", "2 · bytes/param · N_gpu / (HBM · η_mem)",
                            f"2 × {g(state)} × {g(held)} / ({g(hw.memory_bandwidth_bytes_per_s)} × "
                            f"{g(c.memory_efficiency)})", opt_s, "s", SRC_OPT)
    step = d.add("step time", "Σ breakdown", " + ".join(g(v) for v in br.values() if v), sum(br.values()), "s",
                 DEFINITION)
    tokens = i.global_batch * s
    fl = count_flops(spec, tokens, s, causal=True, recompute=i.recompute)
    tps = d.add("tokens per second", "B·s / t_step", f"{i.global_batch} × {s} / {g(step)}", tokens / step, "tokens/s",
                DEFINITION)
    peak = dev.peak_flops_per_s
    mfu = d.add("MFU", "model FLOPs / (t_step · G · P)", f"{g(fl.model_flops)} / ({g(step)} × {G} × {g(peak)})",
                fl.model_flops / (step * G * peak), "fraction", SRC_MFU)
    hfu = d.add("HFU", "hardware FLOPs / (t_step · G · P)", f"{g(fl.hardware_flops)} / ({g(step)} × {G} × {g(peak)})",
                fl.hardware_flops / (step * G * peak), "fraction", SRC_RECOMPUTE)
    stk = stk or resolve_stack(i.stack)
    other = [k.label for k in plan.kinds if k.key not in CALIBRATED_KINDS]
    bar = error_bar(stk, hw.architecture, prec.compute, s, step, mfu, kinds_calibrated=not other)
    if bar is not None and not bar.calibrated:
        why = (f"its {'s, '.join(other)}s are no kind of layer the calibration runs had (dense attention layers)"
               if other else f"{bar.regime}")
        notes.append(f"outside every calibrated regime of the {stk.name} stack ({why}): the interval is its "
                     "widest, and the step may be off by more")
    total_b = usable = fits = None
    if ledger:
        mem = memory_ledger(spec, hw, TrainingSetup(micro_batch=b, seq=s, optimizer=i.optimizer, precision=i.precision,
                                                    recompute=i.recompute, flash=i.flash), lay,
                            reserve_bytes=i.reserve_bytes)
        total_b, usable, fits = mem.total_bytes, mem.usable_bytes, mem.fits
        d.add("peak memory per GPU (napkin memory)", "ledger total", g(total_b), total_b, "B",
              "napkin.accounting.memory")
        if not fits:
            notes.append(f"does not fit: {total_b / 1e9:.1f} GB per GPU needed, {usable / 1e9:.1f} GB usable (see "
                         "napkin memory with the same layout)")
    limiter = max(br, key=lambda k: br[k])
    if lay.sp and t == 1:
        notes.append("--sp has no effect with --tp 1.")
    notes.append(f"largest term: {TERM_LABELS[limiter]}, {br[limiter] / step:.0%} of the step.")
    stage_rows = [StageTime(stage=n, layers=L, forward_s=f, backward_s=bw) for n, L, _, f, bw in stages]
    return StepTimeResult(
        inputs=i, layout=lay.describe(), data_parallel=dp, micro_batches=m, step_time_s=step, tokens_per_s=tps,
        model_flops=fl.model_flops, hardware_flops=fl.hardware_flops, mfu=mfu, hfu=hfu,
        model_tflops_per_gpu=fl.model_flops / step / G / 1e12, peak_flops_per_s=peak,
        breakdown={k: br.get(k, 0.0) for k in TERMS}, stages=stage_rows, limiter=limiter,
        memory_bytes=total_b, memory_usable_bytes=usable, fits=fits, error_bar=bar, steps=d.steps, notes=notes)


def train_time_at_layout(model: TransformerSpec | LinearSpec, hardware: HardwareSpec, tokens: float, *,
                         price_per_gpu_hour: float | None = None, pue: float = 1.0,
                         **layout: Any) -> TrainTimeResult:
    """`train-time` with a layout: days at the MFU that ``step_time`` predicts for it (not a guessed 0.5).

    ``layout`` takes step_time's keywords (gpus, tp, pp, ..., micro_batch, global_batch, seq, recompute).
    """
    model = as_model(model, "model")
    hardware = as_hardware(hardware, "hardware")
    from napkin.accounting.training import train_time

    st = step_time(model, hardware, **layout)
    i = st.inputs
    compute = get_precision(i.precision).compute
    r = train_time(hardware, i.layout.gpus, tokens=tokens, model=model, seq=i.seq, recompute=i.recompute,
                   mfu=st.mfu, dtype=compute, price_per_gpu_hour=price_per_gpu_hour, pue=pue)
    d = Derivation()
    d.add(f"predicted step ({st.layout}, b={i.micro_batch}, B={i.global_batch}, s={i.seq})", "napkin step-time",
          f"{format_summary(st)}", st.step_time_s, "s", "napkin.accounting.step_time")
    d.add("MFU predicted for this layout", "model FLOPs / (t_step · G · P)",
          f"{g(st.model_flops)} / ({g(st.step_time_s)}"
          f" × {i.layout.gpus} × {g(st.peak_flops_per_s)})", st.mfu, "fraction", SRC_MFU)
    note = (f"MFU {st.mfu:.3f} is predicted by step-time for {st.layout} on the {i.stack} stack (not the 0.5 "
            "default); run `napkin step-time` with the same flags for its breakdown.")
    return r.model_copy(update={"steps": d.steps + r.steps, "notes": [note, *st.notes[:-1], *r.notes],
                                "layout": st.layout, "step_time_s": st.step_time_s, "error_bar": st.error_bar})


def format_summary(st: StepTimeResult) -> str:
    """The step's three largest terms, for a one-line derivation."""
    top = sorted(st.breakdown.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{TERM_LABELS[k]} {v:.3g} s" for k, v in top if v)
