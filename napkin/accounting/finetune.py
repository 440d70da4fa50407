"""Fine-tuning: LoRA and QLoRA adapters on a frozen base, CPU offload, and the checkpoint a run writes.

Everything reads the layer plan (layers.py): every weight matrix of a block as a ``Gemm`` with its shape, its
copies (routed experts) and the copies a token runs through. This module adds what fine-tuning changes and
``memory.py`` / the solvers put it in the per-GPU ledger:

- **Adapters** (Hu et al. 2021 §4.1): a targeted W₀ (fan_in × fan_out) gets A (r × fan_in) and B (fan_out × r),
  r·(fan_in + fan_out) trainable parameters per matrix and per expert copy; ``lora_embeddings`` adds one to the
  token embedding (r·(V + h), peft's lora.Embedding) and to an untied LM head. They carry their own gradients,
  master weights and optimizer states, at the precision policy's rates (model_state.state_parts).
- **The frozen base** at its storage dtype: bf16/fp16/fp32, LLM.int8 (1 B + one fp32 scale per output row), or
  NF4 (4 bits + one absmax per 64-weight block, fp32, or with double quantization an 8-bit absmax and one fp32
  constant per 256 of them: Dettmers et al. 2023 §3). bitsandbytes quantizes the blocks' linear layers only:
  the embeddings, norms, biases and the LM head stay at the compute dtype. No gradients, no optimizer state.
- **Activations**: a frozen matmul keeps nothing for backward (dX needs only W), so a tensor whose one use is
  the weight gradient of an untargeted matrix or of a frozen norm is not saved (the MLP product before an
  untargeted down projection, a composite RMSNorm's x·rsqrt); each adapter keeps its A·x (r per token) for B's
  gradient; a quantized base needs one weight dequantized to the compute dtype at a time (the dequantized-weight
  workspace).
- **FLOPs** are in finetune_flops.py: a frozen matmul's backward is the activation gradient only, and the
  adapters add 2·r·(in + out) forward and twice that backward: ~4N + 6·N_adapter per token in place of 6N.
- **Offload** (ZeRO-Offload, FSDP CPU offload): the parts that move leave the GPU ledger for host memory, and
  the PCIe traffic per step at the profile's host link says what the step pays for it.
- **Checkpoint**: what ``torch.save`` / safetensors writes, weights and optimizer state at their dtypes (full)
  or the adapters alone (LoRA, peft's ``save_pretrained``).
"""

from __future__ import annotations

from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.layers import Gemm, LayerKind, LayerPlan, layer_plan
from napkin.accounting.layout import Layout, Stage, stage_params
from napkin.accounting.model_state import Optimizer, Precision, StatePart, state_parts
from napkin.accounting.pipeline import PipelineStage
from napkin.errors import InputError
from napkin.results import Derivation, g
from napkin.specs.dtypes import BYTES_PER_ELEMENT, DType
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, PositiveInt, Setup

Finetune = Literal["full", "lora", "qlora"]
Offload = Literal["none", "optimizer", "optimizer+params"]
BaseDType = Literal["fp32", "bf16", "fp16", "int8", "nf4"]
FINETUNES: tuple[str, ...] = ("full", "lora", "qlora")
OFFLOADS: tuple[str, ...] = ("none", "optimizer", "optimizer+params")
BASE_DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8", "nf4")
TARGETS: tuple[str, ...] = ("q", "k", "v", "o", "router", "gate", "up", "down")
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("q", "k", "v", "o"),
    "mlp": ("router", "gate", "up", "down"),
    "all": TARGETS,  # peft's target_modules="all-linear": every linear layer of the blocks (not the LM head)
}
DEFAULT_RANK = 16  # peft's LoraConfig default is 8; 16 is the common recipe (QLoRA's Guanaco runs use 64)

HU = ("Hu et al. 2021, LoRA, §4.1: h = W₀x + BAx with B ∈ R^(d×r), A ∈ R^(r×k) trainable, W₀ frozen: r·(d + k) "
      "parameters per matrix")
HU_ACT = "Hu et al. 2021, LoRA, §4.1 (autograd keeps Ax, r per token, for B's weight gradient)"
HU_FLOPS = ("Hu et al. 2021, LoRA, §4.2 (no gradients for the frozen weights; 25% faster than full fine-tuning on "
            "GPT-3 175B): a frozen matmul's backward is dX only, 1 × its forward, against 2 × with dW")
PEFT_EMB = "peft lora.Embedding: A (r × V) looked up, B (h × r) a matmul: r·(V + h) parameters, 2·r·h FLOPs per token"
NF4 = ("Dettmers et al. 2023, QLoRA, §3 (NF4: 4-bit weights, one fp32 absmax per block of 64: 32/64 = 0.5 bit per "
       "weight); bitsandbytes quantize_4bit(blocksize=64)")
DQ = ("Dettmers et al. 2023, QLoRA, §3 Double Quantization (8-bit absmax per 64 weights, one fp32 constant per 256 of "
      "them: 8/64 + 32/(64·256) = 0.127 bit per weight); bitsandbytes compress_statistics")
INT8 = "Dettmers et al. 2022, LLM.int8(), §3.1 (vector-wise quantization: int8 weights, one fp32 scale per output row)"
BNB_KEEP = ("bitsandbytes via transformers (BitsAndBytesConfig): only the blocks' nn.Linear layers are quantized; "
            "embeddings, norms, biases and the LM head stay at the compute dtype")
BNB_DEQUANT = ("bitsandbytes MatMul4Bit / MatMul8bitLt: each frozen weight is dequantized to the compute dtype for "
               "its matmul (forward and backward) and freed; the largest matrix sets the workspace")
PAGED = ("Dettmers et al. 2023, QLoRA, §3 Paged Optimizers (NVIDIA unified memory: optimizer states page out to "
         "CPU RAM only under memory pressure)")
ZERO_OFFLOAD = ("Ren et al. 2021, ZeRO-Offload, §4.1: the GPU keeps the fp16 parameters (2M); the CPU holds the "
                "fp16 gradients and the fp32 parameters, momentum and variance (14M) and runs the update; 2M each "
                "way over PCIe per step")
PARAM_OFFLOAD = ("Rajbhandari et al. 2021, ZeRO-Infinity, §5; PyTorch FSDP CPUOffload(offload_params=True): "
                 "parameters live in host memory and are copied in layer by layer for the forward and again for "
                 "the backward")
SAFETENSORS = ("safetensors / torch.save store every tensor's elements at its dtype (plus a JSON header of a few "
               "kB); peft's save_pretrained writes the adapters only")
DATAFLOW = ("autograd: a matmul computes dX only when its input requires grad, and nothing before the first "
            "trainable parameter does (frozen embeddings)")


class LoraSetup(Inputs):
    """The adapters and the frozen base of a LoRA / QLoRA run, as resolved from the arguments."""

    rank: PositiveInt = Field(description="r: the rank of every adapter")
    targets: list[str] = Field(description="matrices of each block that get an adapter (q, k, v, o, router, gate, "
                               "up, down; MLA: q covers q_a/q_b, k and v cover kv_a/kv_b)")
    base_dtype: BaseDType = Field(description="storage of the frozen base's block matrices")
    double_quant: bool = Field(description="nf4 only: the absmax constants quantized again (QLoRA §3)")
    embeddings: bool = Field(description="also an adapter on the token embedding (and on an untied LM head)")


class FinetuneSetup(Setup):
    """What a training run updates and where its state lives: every weight (full), or LoRA / QLoRA adapters on a
    frozen base, and what is offloaded to host memory. The flags of `--finetune` as one object; each value is
    checked (with the precision, for the base dtype) by ``resolve``."""

    finetune: str = Field(default="full", description="full: every weight trains; lora / qlora: adapters on a "
                          "frozen base")
    lora_rank: int | None = Field(default=None, description=f"r of every adapter (default {DEFAULT_RANK})")
    lora_targets: str | list[str] | None = Field(default=None, description="attn, mlp, all, or a list of q, k, v, o, "
                                                 "router, gate, up, down")
    base_dtype: str | None = Field(default=None, description="storage of the frozen base (lora: the precision's "
                                   "weight dtype; qlora: nf4)")
    double_quant: bool | None = Field(default=None, description="nf4: quantize the absmax constants again")
    lora_embeddings: bool = Field(default=False, description="adapters on the token embedding and an untied head")
    paged_optimizer: bool = Field(default=False, description="optimizer states in CUDA unified memory (QLoRA §3)")
    offload: str = Field(default="none", description="none, optimizer (ZeRO-Offload) or optimizer+params (FSDP "
                         "CPU offload)")

    @property
    def tuned(self) -> bool:
        """Whether anything differs from full fine-tuning on the GPU."""
        return self != FinetuneSetup()

    def resolve(self, precision: Precision) -> tuple[str, LoraSetup | None, str]:
        """(mode, the adapters or None for full fine-tuning, offload mode), each refusal naming its argument."""
        lora = resolve_lora(self.finetune, precision, lora_rank=self.lora_rank, lora_targets=self.lora_targets,
                            base_dtype=self.base_dtype, double_quant=self.double_quant,
                            lora_embeddings=self.lora_embeddings)
        return check_finetune(self.finetune), lora, check_offload(self.offload)


class AdapterMatrix(BaseModel):
    """The adapters on one weight matrix of the plan, summed over the layers that hold it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the plan's matrix: attention.q, ffn.experts.down, embedding.tokens, head")
    fan_in: int
    fan_out: int
    copies: int = Field(description="adapters per layer (routed experts: one per expert)")
    active: int = Field(description="adapters a token runs through per layer (routed experts: top-k)")
    layers: int
    params: int = Field(description="r·(fan_in + fan_out)·copies·layers (embedding: r·(V + h))")
    forward_flops_per_token: float = Field(description="2·r·(fan_in + fan_out)·active·layers (embedding: 2·r·h)")


class AdapterPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    rank: int
    matrices: list[AdapterMatrix]
    params: int = Field(description="trainable parameters: the sum over matrices")


class OffloadLedger(BaseModel):
    """What CPU offload moves to host memory, and the traffic over the host link each optimizer step."""

    model_config = ConfigDict(frozen=True)

    mode: Offload
    moved: list[str] = Field(description="labels of the ledger rows that live in host memory instead")
    host_bytes: float = Field(description="host (CPU) memory per GPU for what moved")
    to_host_bytes_per_step: float = Field(description="gradients copied GPU → host per optimizer step")
    from_host_bytes_per_step: float = Field(description="parameters copied host → GPU per optimizer step")
    host_link_bandwidth_bytes_per_s: float | None = Field(description="the profile's host link, per direction")
    transfer_time_s: float | None = Field(description="max(to, from) / link bandwidth (full duplex): the time per "
                                          "step the copies take, hidden only where they overlap compute")


class CheckpointPart(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    bytes: float


class CheckpointSize(BaseModel):
    """The files one checkpoint writes for the whole model (all GPUs together)."""

    model_config = ConfigDict(frozen=True)

    parts: list[CheckpointPart]
    total_bytes: float
    resume_extra_bytes: float = Field(default=0.0, description="LoRA: the adapters' optimizer states a resumable "
                                      "checkpoint (the Trainer's optimizer.pt) adds")


# --- resolving the arguments ---------------------------------------------------------------------------------


def parse_targets(targets: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`attn`, `mlp`, `all`, or a list / comma list of q,k,v,o,router,gate,up,down, in the plan's order."""
    if targets is None:
        return list(TARGET_GROUPS["all"])
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    chosen: set[str] = set()
    for raw in items:
        t = str(raw).strip().lower().removesuffix("_proj")
        if not t:
            continue
        if t in TARGET_GROUPS:
            chosen.update(TARGET_GROUPS[t])
        elif t in TARGETS:
            chosen.add(t)
        else:
            raise InputError(f"`lora_targets`: unknown target '{raw}'; give attn, mlp, all or a list of "
                             f"{','.join(TARGETS)}")
    if not chosen:
        raise InputError("`lora_targets` is empty; give attn, mlp, all or a list of " + ",".join(TARGETS))
    return [t for t in TARGETS if t in chosen]


def resolve_lora(finetune: str, precision: Precision, *, lora_rank: int | None = None,
                 lora_targets: str | list[str] | None = None, base_dtype: str | None = None,
                 double_quant: bool | None = None, lora_embeddings: bool = False) -> LoraSetup | None:
    """The LoRA setup of ``finetune`` (None for full fine-tuning), each refusal naming its argument."""
    mode = check_finetune(finetune)
    if mode == "full":
        given = [name for name, v in (("lora_rank", lora_rank), ("lora_targets", lora_targets),
                                      ("base_dtype", base_dtype), ("double_quant", double_quant)) if v is not None]
        if lora_embeddings:
            given.append("lora_embeddings")
        if given:
            raise InputError(f"{', '.join(f'`{n}`' for n in given)}: adapter settings, for `finetune` lora or qlora "
                             "(full fine-tuning trains every weight at `precision`)")
        return None
    if base_dtype is not None:
        base_dtype = str(base_dtype).strip().lower()
        if base_dtype not in BASE_DTYPES:
            raise InputError(f"`base_dtype` must be one of {', '.join(BASE_DTYPES)}, got '{base_dtype}'")
    if mode == "qlora":
        if base_dtype not in (None, "nf4"):
            raise InputError(f"`finetune` qlora is LoRA on an nf4 base; for a {base_dtype} base use `finetune` lora "
                             f"with `base_dtype` {base_dtype}")
        base = "nf4"
    else:
        default = precision.params.value if precision.params.value in ("fp32", "bf16", "fp16") else "bf16"
        base = base_dtype or default
    if double_quant is not None and base != "nf4":
        raise InputError(f"`double_quant` quantizes nf4's absmax constants; the base here is {base}")
    if lora_rank is not None and (not isinstance(lora_rank, int) or lora_rank < 1):
        raise InputError(f"`lora_rank` must be a positive whole number, got {lora_rank}")
    return LoraSetup(rank=lora_rank or DEFAULT_RANK, targets=parse_targets(lora_targets),
                     base_dtype=cast(BaseDType, base),  # one of BASE_DTYPES: checked above
                     double_quant=True if double_quant is None else double_quant, embeddings=lora_embeddings)


def check_finetune(finetune: str) -> str:
    mode = str(finetune).strip().lower()
    if mode not in FINETUNES:
        raise InputError(f"`finetune` must be one of {', '.join(FINETUNES)}, got '{finetune}'")
    return mode


def check_offload(offload: str | None) -> str:
    mode = "none" if offload is None else str(offload).strip().lower()
    if mode not in OFFLOADS:
        raise InputError(f"`offload` must be one of {', '.join(OFFLOADS)}, got '{offload}'")
    return mode


def require_transformer(spec: object, finetune: str) -> TransformerSpec:
    if spec is None:
        raise InputError(f"`finetune` {finetune} puts adapters on a model's matrices: give an architecture "
                         "(`model`), not `params`")
    if isinstance(spec, LinearSpec):
        raise InputError(f"`finetune` {finetune} targets the projections of a transformer's blocks; {spec.name} is a "
                         "deep linear network")
    assert isinstance(spec, TransformerSpec)
    if getattr(spec, "block_pattern", None) is not None:
        raise InputError(f"`finetune` {finetune}: {spec.name} is a hybrid stack (block_pattern); napkin does not model "
                         "adapters on its Mamba-2 blocks yet")
    return spec


# --- adapters ------------------------------------------------------------------------------------------------

_ROLE = {"q_a": ("q",), "q_b": ("q",), "kv_a": ("k", "v"), "kv_b": ("k", "v"),
         "shared_expert_gate": ("router",)}  # Qwen2-MoE's one-output gate on the shared expert: a gate like the router
GATES = ("ffn.router", "ffn.shared_expert_gate")


def role(gm: Gemm) -> tuple[str, ...]:
    """The target names that put an adapter on this matrix: attention.q → q, ffn.experts.down → down."""
    short = gm.name.rsplit(".", 1)[-1]
    return _ROLE.get(short, (short,))


def targeted(gm: Gemm, lora: LoraSetup) -> bool:
    return any(r in lora.targets for r in role(gm))


def adapter_plan(spec: TransformerSpec, lora: LoraSetup) -> AdapterPlan:
    """Every adapter of the model, matrix by matrix (one tensor-parallel rank of 1, all layers)."""
    plan, r = layer_plan(spec), lora.rank
    out: dict[str, AdapterMatrix] = {}
    for kind in plan.kinds:
        for gm in kind.gemms:
            if not targeted(gm, lora):
                continue
            i, o = gm.linear.fan_in, gm.linear.fan_out
            prev = out.get(gm.name)
            layers = kind.count + (prev.layers if prev else 0)
            out[gm.name] = AdapterMatrix(name=gm.name, fan_in=i, fan_out=o, copies=gm.copies, active=gm.active,
                                         layers=layers, params=r * (i + o) * gm.copies * layers,
                                         forward_flops_per_token=2 * r * (i + o) * gm.active * layers)
    h, V = spec.d_model, spec.vocab
    if lora.embeddings:
        out["embedding.tokens"] = AdapterMatrix(name="embedding.tokens", fan_in=V, fan_out=h, copies=1, active=1,
                                                layers=1, params=r * (V + h), forward_flops_per_token=2 * r * h)
        if not spec.tied_embeddings:
            out["head"] = AdapterMatrix(name="head", fan_in=h, fan_out=V, copies=1, active=1, layers=1,
                                        params=r * (h + V), forward_flops_per_token=2 * r * (h + V))
    mats = list(out.values())
    return AdapterPlan(rank=r, matrices=mats, params=sum(m.params for m in mats))


def adapters_on_gpu(spec: TransformerSpec, lora: LoraSetup, lay: Layout, lo: int, hi: int,
                    stage: Stage) -> tuple[float, float]:
    """(dense, routed-expert) adapter parameters on one GPU: its stage's layers, each matrix at its tensor-parallel
    shard (column-parallel: A whole, B split; row-parallel: A split, B whole), experts divided by EP."""
    plan, r = layer_plan(spec), lora.rank
    dense = expert = 0.0
    for kind, n in plan.counts_in(lo, hi):
        for gm in kind.gemms:
            if targeted(gm, lora):
                i, o = gm.local(lay.tp)
                if gm.expert:
                    expert += n * gm.copies / lay.ep * r * (i + o)
                else:
                    dense += n * gm.copies * r * (i + o)
    if lora.embeddings:
        h, V = spec.d_model, spec.vocab
        if stage in ("only", "first"):
            dense += r * (-(-V // lay.tp) + h)
        if stage in ("only", "last") and not spec.tied_embeddings:
            dense += r * (h + -(-V // lay.tp))
    return dense, expert


# --- the frozen base -------------------------------------------------------------------------------------------


def quantized_components(plan: LayerPlan) -> dict[str, int]:
    """Weights bitsandbytes quantizes, by component: every block matrix (biases excluded), not the embeddings, norms
    or the LM head."""
    out: dict[str, int] = {}
    for kind in plan.kinds:
        for gm in kind.gemms:
            out[gm.component] = out.get(gm.component, 0) + kind.count * gm.copies * gm.linear.weights
    return out


def nf4_bytes_per_weight(double_quant: bool) -> tuple[float, float]:
    """(packed data, constants) bytes per weight of NF4 with block size 64 (QLoRA §3)."""
    if double_quant:
        return 4 / 8, (8 / 64 + 32 / (64 * 256)) / 8
    return 4 / 8, (32 / 64) / 8


def bnb_nf4_tensor_bytes(n: int, double_quant: bool = True, blocksize: int = 64, blocksize2: int = 256) -> int:
    """Bytes bitsandbytes keeps for one n-element weight in NF4 (quantize_4bit): the packed uint8 data (two per byte),
    one absmax per block (fp32, or uint8 under double quantization plus one fp32 absmax per 256 blocks and one
    fp32 offset). The shared 16- and 256-entry code tables are left out."""
    blocks = -(-n // blocksize)
    data = -(-n // 2)
    fp32 = int(BYTES_PER_ELEMENT[DType.fp32])
    if not double_quant:
        return data + fp32 * blocks
    return data + blocks + fp32 * -(-blocks // blocksize2) + fp32


class FrozenBase(BaseModel):
    """The frozen base on one GPU."""

    model_config = ConfigDict(frozen=True)

    quantized_dense: float
    quantized_expert: float
    rest_dense: float
    rest_expert: float
    data_bytes_per_weight: float
    constant_bytes_per_weight: float
    rest_bytes_per_param: float


def frozen_base(spec: TransformerSpec, lora: LoraSetup, prec: Precision, lay: Layout, stage: PipelineStage,
                components: dict[str, int]) -> FrozenBase:
    plan = layer_plan(spec)
    quant = quantized_components(plan)
    rest = {k: v - quant.get(k, 0) for k, v in components.items()}
    tied = spec.tied_embeddings
    q = stage_params(quant, spec.layers, lay, stage, False)
    o = stage_params(rest, spec.layers, lay, stage, tied)
    base = lora.base_dtype
    compute = BYTES_PER_ELEMENT[prec.params] if prec.params.value in ("fp32", "bf16", "fp16") else 2.0
    if base == "nf4":
        data, const = nf4_bytes_per_weight(lora.double_quant)
        rest_b = compute
    elif base == "int8":
        rows = sum(k.count * gm.copies * gm.linear.fan_out for k in plan.kinds for gm in k.gemms)
        data, const, rest_b = 1.0, BYTES_PER_ELEMENT[DType.fp32] * rows / sum(quant.values()), compute
    else:
        data, const = BYTES_PER_ELEMENT[DType(base)], 0.0
        rest_b = data
    return FrozenBase(quantized_dense=q.dense, quantized_expert=q.expert, rest_dense=o.dense, rest_expert=o.expert,
                      data_bytes_per_weight=data, constant_bytes_per_weight=const, rest_bytes_per_param=rest_b)


def frozen_label(lora: LoraSetup, prec: Precision) -> tuple[str, str, str]:
    """(block matrices, constants, the rest) row labels."""
    base = lora.base_dtype
    rest = prec.params.value if prec.params.value in ("fp32", "bf16", "fp16") else "bf16"
    const = ("nf4 quantization constants (double-quantized)" if lora.double_quant else
             "nf4 quantization constants (fp32 absmax)") if base == "nf4" else "int8 row scales (fp32)"
    return (f"frozen base weights ({base})", const, f"frozen embeddings, norms, head ({rest})")


def base_sources(lora: LoraSetup) -> tuple[str, str]:
    if lora.base_dtype == "nf4":
        return NF4, DQ if lora.double_quant else NF4
    if lora.base_dtype == "int8":
        return INT8, INT8
    return "frozen weights at the base dtype (no gradient, no optimizer state): " + HU, ""


def dequant_workspace(spec: TransformerSpec, lora: LoraSetup, prec: Precision, lay: Layout, lo: int,
                      hi: int) -> tuple[float, str, float]:
    """(bytes, matrix name, elements) of the largest frozen matrix of the stage dequantized to the compute dtype."""
    best, name = 0, ""
    for kind, _ in layer_plan(spec).counts_in(lo, hi):
        for gm in kind.gemms:
            i, o = gm.local(lay.tp)
            if i * o > best:
                best, name = i * o, gm.name
    p = BYTES_PER_ELEMENT[prec.params] if prec.params.value in ("fp32", "bf16", "fp16") else 2.0
    return best * p, name, float(best)


# --- activations -----------------------------------------------------------------------------------------------

_DOWN_INPUT = ("σ(gate)·up", "activation output")


def _relu(spec: TransformerSpec) -> bool:
    return (spec.activation or "").lower() in ("relu", "relu2")


def _kind_targets(kind: LayerKind, lora: LoraSetup) -> set[str]:
    """The plan's matrix names that carry an adapter in a layer of this kind."""
    return {gm.name for gm in kind.gemms if targeted(gm, lora)}


def lora_layer_terms(terms: list, spec: TransformerSpec, kind: LayerKind, lora: LoraSetup, *, s: int, b: int,
                     bytes_per_element: float, flash: bool) -> list:
    """One layer's saved tensors under LoRA: those only an untargeted frozen matrix's weight gradient needs are
    dropped, and each adapter's A·x (r per token per active copy) is added."""
    from napkin.accounting import activations as act

    names = _kind_targets(kind, lora)
    tg = {n.rsplit(".", 1)[-1] for n in names}

    def has(*ms: str) -> bool:
        return any(m in tg for m in ms)

    experts = {n.rsplit(".", 1)[-1] for n in names if n.startswith("ffn.experts.")}
    shared = {n.rsplit(".", 1)[-1] for n in names if n.startswith("ffn.shared.")}
    dense = {n.rsplit(".", 1)[-1] for n in names if n.startswith("ffn.") and n.count(".") == 1}

    def keep(x: act.ActTerm) -> bool:
        n = x.name
        if n.endswith("norm x·rsqrt"):  # kept only for the (frozen) norm weight's gradient
            return False
        if n == "QKV input":
            return has("q", "k", "v", "q_a", "kv_a")
        if n == "c_Q norm output":
            return has("q_b")
        if n == "c_KV norm output":
            return has("kv_b")
        if n == "context":
            return flash or has("o")  # the flash kernel keeps its output O for its own backward
        if n == "MLP input":
            return bool(dense & {"gate", "up"} or experts & {"gate", "up"} or shared & {"gate", "up"}
                        or "router" in tg)
        if n == "dispatched tokens":
            return bool(experts & {"gate", "up"})
        if n.endswith(_DOWN_INPUT) and not (n.endswith("activation output") and _relu(spec)):
            group = experts if n.startswith("experts") else shared if n.startswith("shared") else dense
            return "down" in group
        return True

    out = [x for x in terms if keep(x)]
    for gm in kind.gemms:
        if gm.name in names:
            block: act.Block = "attention" if gm.name.startswith("attention.") else "mlp"
            width = f"r·{gm.active}" if gm.active > 1 else "r"
            out.append(act.ActTerm(block=block, name=f"LoRA A·x ({gm.name})",
                                   stores="the adapter's r-wide A·x, input of its B (B's weight gradient)",
                                   width=width, elements_per_token=lora.rank * gm.active,
                                   bytes_per_element=bytes_per_element, split="none", source=HU_ACT,
                                   bytes=s * b * lora.rank * gm.active * bytes_per_element))
    return out


def lora_outside_terms(parts: dict[str, list], spec: TransformerSpec, lora: LoraSetup, *, s: int, b: int,
                       bytes_per_element: float) -> dict[str, list]:
    """Embedding and output-layer tensors under LoRA: token ids only for an embedding adapter, the LM head's input
    only for a head adapter; plus those adapters' A·x."""
    from napkin.accounting import activations as act

    head_adapter = lora.embeddings and not spec.tied_embeddings
    emb = [x for x in parts["embedding"] if x.name != "token ids" or lora.embeddings]
    out = [x for x in parts["output"] if (x.name != "LM head input" or head_adapter)
           and not x.name.endswith("norm x·rsqrt")]  # the frozen final norm's weight needs no gradient
    r, p = lora.rank, bytes_per_element
    if lora.embeddings:
        emb.append(act.ActTerm(block="embedding", name="LoRA A·x (embedding.tokens)", stores="A looked up per token, "
                               "input of B", width="r", elements_per_token=r, bytes_per_element=p, split="none",
                               source=PEFT_EMB, bytes=s * b * r * p))
    if head_adapter:
        out.append(act.ActTerm(block="output", name="LoRA A·x (head)", stores="the head adapter's A·x, input of B",
                               width="r", elements_per_token=r, bytes_per_element=p, split="none", source=HU_ACT,
                               bytes=s * b * r * p))
    return {"embedding": emb, "output": out}


# --- offload and checkpoint ------------------------------------------------------------------------------------


def checkpoint_size(d: Derivation, N: float, prec: Precision, opt: Optimizer, lora: LoraSetup | None,
                    trainable: float) -> CheckpointSize:
    """The checkpoint of the whole model: weights at their dtype + optimizer state (full), or the adapters (LoRA)."""
    parts = [p for p in state_parts(prec, opt, 0) if p.part in ("params", "master", "optimizer")
             and not p.label.startswith("cached")]
    if lora is None:
        out = []
        for p in parts:
            out.append(CheckpointPart(label=_ckpt_label(p), bytes=d.add(
                f"checkpoint: {_ckpt_label(p)}", "N · bytes/param", f"{g(N)} × {g(p.bytes_per_param)}",
                N * p.bytes_per_param, "B", SAFETENSORS)))
        total = d.add("checkpoint size", "Σ weights + optimizer state", " + ".join(g(x.bytes) for x in out),
                      sum(x.bytes for x in out), "B", SAFETENSORS)
        return CheckpointSize(parts=out, total_bytes=total)
    dt = prec.master or prec.params
    b = BYTES_PER_ELEMENT[dt]
    w = d.add(f"checkpoint: adapter weights ({dt.value})", "N_adapter · bytes/param", f"{g(trainable)} × {g(b)}",
              trainable * b, "B", SAFETENSORS)
    extra = trainable * sum(p.bytes_per_param for p in parts if p.part == "optimizer")
    return CheckpointSize(parts=[CheckpointPart(label=f"adapter weights ({dt.value})", bytes=w)], total_bytes=w,
                          resume_extra_bytes=extra)


def _ckpt_label(p: StatePart) -> str:
    if p.part == "params":
        return f"weights ({p.dtype.value})"
    return p.label


MOVES: dict[str, tuple[str, ...]] = {
    "optimizer": ("grads", "master", "optimizer"),
    "optimizer+params": ("grads", "master", "optimizer", "params", "frozen", "quant"),
}


def offload_sources(mode: str) -> str:
    return ZERO_OFFLOAD if mode == "optimizer" else f"{ZERO_OFFLOAD}; {PARAM_OFFLOAD}"


def one_layer_bytes(spec: TransformerSpec, lay: Layout, lo: int, hi: int, per_weight: float,
                    per_other: float) -> tuple[float, int]:
    """(bytes, params) of the stage's largest layer on one GPU: its matrices at their TP/EP shard × per_weight,
    biases and norms × per_other."""
    best = (0.0, 0)
    for kind, _ in layer_plan(spec).counts_in(lo, hi):
        w = 0
        for gm in kind.gemms:
            i, o = gm.local(lay.tp)
            w += i * o * (gm.copies // lay.ep if gm.expert else gm.copies)
        other = kind.params - sum(gm.copies * gm.linear.weights for gm in kind.gemms)
        b = w * per_weight + other * per_other
        if b > best[0]:
            best = (b, w + other)
    return best
