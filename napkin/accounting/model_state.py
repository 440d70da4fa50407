"""Model state per parameter (params, grads, master weights, optimizer states) and the largest model.

Precision policies and optimizers are data: each row says what it keeps per parameter, in which
dtype, and where that comes from. ZeRO stages say which of those parts are sharded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.reserve import reserve_of
from napkin.errors import UnknownNameError
from napkin.results import DEFINITION, LECTURE, ZERO, Derivation, Result, g
from napkin.specs.dtypes import BYTES_PER_ELEMENT, DType
from napkin.specs.hardware import HardwareSpec
from napkin.specs.resolve import as_hardware
from napkin.validation import Inputs, NonNegative, Positive, PositiveInt, validated

Part = Literal["params", "grads", "master", "optimizer"]


class Precision(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    params: DType = Field(description="dtype of the working weights")
    grads: DType
    master: DType | None = Field(description="separate high-precision copy of the weights, if any")
    states: DType = Field(description="dtype of optimizer states (an optimizer may override)")
    compute: DType = Field(description="dtype of the matmuls, i.e. which peak FLOP/s applies")
    weight_cache: DType | None = Field(default=None,
                                       description="extra low-precision weight copy kept across micro-batches")
    activations: DType = Field(description="dtype of the activations saved for backward")
    description: str
    source: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in [
        Precision(name="fp32", params=DType.fp32, grads=DType.fp32, master=None, states=DType.fp32, compute=DType.fp32,
                  activations=DType.fp32, description="everything in fp32 (the lecture's accounting)", source=LECTURE),
        Precision(name="fp16-mixed", params=DType.fp16, grads=DType.fp16, master=DType.fp32, states=DType.fp32,
                  compute=DType.fp16, activations=DType.fp16,
                  description="fp16 weights and grads, fp32 master weights and states",
                  source="Micikevicius et al. 2018, Mixed Precision Training, §3; " + ZERO),
        Precision(name="bf16-mixed", params=DType.bf16, grads=DType.bf16, master=DType.fp32, states=DType.fp32,
                  compute=DType.bf16, activations=DType.bf16,
                  description="bf16 weights and grads, fp32 master weights and states",
                  source=ZERO),
        Precision(name="bf16-mixed-fp32-grads", params=DType.bf16, grads=DType.fp32, master=DType.fp32,
                  states=DType.fp32, compute=DType.bf16, activations=DType.bf16,
                  description="Megatron-LM style: gradients accumulated in fp32 (18 B/param with Adam)",
                  source="Megatron-LM distributed optimizer docs (--accumulate-allreduce-grads-in-fp32): 18 B/param"),
        Precision(name="bf16", params=DType.bf16, grads=DType.bf16, master=None, states=DType.bf16, compute=DType.bf16,
                  activations=DType.bf16, description="pure bf16: no master copy, states in bf16", source=DEFINITION),
        Precision(name="fp8-mixed", params=DType.bf16, grads=DType.bf16, master=DType.fp32, states=DType.fp32,
                  # TE saves fp8 casts of GEMM inputs (memory.py _fp8_saved); other saved tensors stay bf16
                  compute=DType.fp8, weight_cache=DType.fp8, activations=DType.bf16,
                  description="fp8 matmuls (Transformer Engine): bf16 weights with fp32 master weights and states, "
                              "an fp8 weight copy cached across micro-batches (not under ZeRO-3/FSDP, where it is cast "
                              "per gathered layer), GEMM inputs saved in fp8",
                  source="NVIDIA Transformer Engine, FP8 primer and te.Linear (weights kept in higher precision, "
                         "cast to fp8 per GEMM and cached across micro-batches with is_first_microbatch; GEMM inputs "
                         "saved as fp8 for backward)"),
    ]
}


class Optimizer(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    states: int = Field(description="per-parameter state tensors")
    state_dtype: DType | None = Field(default=None, description="fixed state dtype, overriding the precision's")
    description: str
    source: str


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o
    for o in [
        Optimizer(name="sgd", states=0, description="plain SGD keeps no state", source=DEFINITION),
        Optimizer(name="sgd-momentum", states=1, description="momentum buffer",
                  source="Polyak 1964; torch.optim.SGD(momentum>0)"),
        Optimizer(name="adagrad", states=1, description="sum of squared gradients",
                  source="Duchi et al. 2011; CS336 lecture 2 (AdaGrad: 1 state)"),
        Optimizer(name="rmsprop", states=1, description="running mean of squared gradients",
                  source="Tieleman & Hinton 2012, lecture 6.5"),
        Optimizer(name="adam", states=2, description="first and second moments (m, v)",
                  source="Kingma & Ba 2015, Algorithm 1"),
        Optimizer(name="adamw", states=2, description="first and second moments (m, v); decoupled weight decay",
                  source="Loshchilov & Hutter 2019, Algorithm 2"),
        Optimizer(name="lion", states=1, description="momentum only (sign update)",
                  source="Chen et al. 2023, Symbolic Discovery of Optimization Algorithms, Program 1"),
        Optimizer(name="adam-8bit", states=2, state_dtype=DType.int8,
                  description="m and v block-quantized to 8 bits (per-block scales ignored: ~0.2%)",
                  source="Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization, §2"),
        Optimizer(name="adafactor", states=0,
                  description="factored second moment: a row and a column vector per matrix, ~0 B/param; no momentum",
                  source="Shazeer & Stern 2018, Adafactor, §3 (beta1 = 0)"),
    ]
}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise UnknownNameError("precision", name, PRECISIONS)
    return PRECISIONS[name]


def runnable_precisions(hardware: HardwareSpec) -> list[str]:
    """The precision policies whose matmul dtype the GPU has a peak for (its tensor cores run it)."""
    return [name for name, p in PRECISIONS.items() if hardware.runs(p.compute)]


def require_precision(hardware: HardwareSpec, precision: Precision | str) -> Precision:
    """One rule for every command: a precision needs the GPU's support for its matmul dtype (fp8-mixed: fp8 tensor
    cores; bf16*: bf16), refused with the policies that work there."""
    from napkin.errors import InputError

    if not isinstance(precision, (str, Precision)):
        raise TypeError(f"precision must be a name such as 'bf16-mixed' or a Precision, not {type(precision).__name__}")
    prec = get_precision(precision) if isinstance(precision, str) else precision
    if not hardware.runs(prec.compute):
        ok = ", ".join(runnable_precisions(hardware))
        raise InputError(f"{hardware.name} cannot run {prec.name}: it has no {prec.compute.value} matmul peak on its "
                         f"datasheet; precisions that run there: {ok}")
    return prec


def get_optimizer(name: str) -> Optimizer:
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name such as 'adamw' ({', '.join(OPTIMIZERS)}), "
                        f"not {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in OPTIMIZERS:
        raise UnknownNameError("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[key]


# ZeRO (Rajbhandari et al. 2020, §5): stage 1 shards optimizer states (incl. fp32 master weights),
# stage 2 also gradients, stage 3 also parameters (= FSDP FULL_SHARD).
SHARDED_BY_STAGE: dict[int, frozenset[Part]] = {
    0: frozenset(),
    1: frozenset({"master", "optimizer"}),
    2: frozenset({"master", "optimizer", "grads"}),
    3: frozenset({"master", "optimizer", "grads", "params"}),
}


class StatePart(BaseModel):
    model_config = ConfigDict(frozen=True)

    part: Part
    label: str
    dtype: DType
    bytes_per_param: float = Field(description="bytes per parameter before sharding")
    sharded: bool = Field(description="divided across the data-parallel ranks at this ZeRO stage")


def state_parts(precision: Precision, optimizer: Optimizer, zero: int) -> list[StatePart]:
    """What one parameter costs, part by part (ZeRO §3.1: Ψ·(2 + 2 + K) for mixed-precision Adam, K = 12)."""
    sharded = SHARDED_BY_STAGE[zero]
    parts = [StatePart(part="params", label=f"parameters ({precision.params.value})", dtype=precision.params,
                       bytes_per_param=BYTES_PER_ELEMENT[precision.params], sharded="params" in sharded)]
    if precision.weight_cache is not None and zero < 3:  # under ZeRO-3/FSDP the FP8 copy is cast per layer after the
        # gather and freed with it (transient, like the gathered weights); resident weights keep it across micro-batches
        parts.append(StatePart(part="params", label=f"cached {precision.weight_cache.value} weight copy",
                               dtype=precision.weight_cache, bytes_per_param=BYTES_PER_ELEMENT[precision.weight_cache],
                               sharded="params" in sharded))
    parts.append(StatePart(part="grads", label=f"gradients ({precision.grads.value})", dtype=precision.grads,
                           bytes_per_param=BYTES_PER_ELEMENT[precision.grads], sharded="grads" in sharded))
    if precision.master is not None:
        parts.append(StatePart(part="master", label=f"master weights ({precision.master.value})",
                               dtype=precision.master,
                               bytes_per_param=BYTES_PER_ELEMENT[precision.master], sharded="master" in sharded))
    state_dtype = optimizer.state_dtype or precision.states
    if optimizer.states:
        parts.append(StatePart(part="optimizer",
                               label=f"{optimizer.name} states ({optimizer.states} × {state_dtype.value})",
                               dtype=state_dtype, bytes_per_param=optimizer.states * BYTES_PER_ELEMENT[state_dtype],
                               sharded="optimizer" in sharded))
    return parts


class MaxModelInputs(Inputs):
    gpus: PositiveInt
    gpu: str
    optimizer: str = "adamw"
    precision: str = "bf16-mixed"
    zero: Literal[0, 1, 2, 3] = 3
    memory_bytes: Positive = Field(description="memory per GPU used for the napkin")
    reserve_bytes: NonNegative = 0.0


class MaxModelResult(Result):
    inputs: MaxModelInputs
    parts: list[StatePart]
    bytes_per_param: float = Field(description="total bytes per parameter across the cluster (unsharded)")
    bytes_per_param_per_gpu: float = Field(description="bytes one GPU holds per model parameter")
    usable_bytes_per_gpu: float
    max_params: float
    optimizer_states: int

    @property
    def fits(self) -> bool:
        """The answer is 'it fits': some model does."""
        return self.max_params > 0


def max_model(
    hardware: HardwareSpec,
    gpus: int,
    optimizer: str = "adamw",
    precision: str = "bf16-mixed",
    zero: int = 3,
    *,
    memory_bytes: float | None = None,
    reserve_bytes: float | None = None,
) -> MaxModelResult:
    """Largest parameter count whose model state (not activations) fits G GPUs.

    Defaults reproduce CS336 lecture 2: 8 × 80e9 bytes / 16 B/param = 4.0e10 params. The lecture counts fp32
    AdamW (4 + 4 + 4 + 4); the default bf16-mixed AdamW is also 16 B/param (2 + 2 + 4 master + 8, ZeRO §3.1), and
    is what `napkin memory` defaults to, so both commands answer the same question the same way.

    ``reserve_bytes`` None holds nothing back here: the model-state-only napkin divides the nominal memory, as
    `napkin memory --params` does (reserve.reserve_of); with activations, max_model_fit keeps the default reserve.
    """
    hardware = as_hardware(hardware, "hardware")
    opt = get_optimizer(optimizer)
    prec = require_precision(hardware, precision)
    i = validated(MaxModelInputs, gpus=gpus, gpu=hardware.name, optimizer=opt.name, precision=prec.name, zero=zero,
                  memory_bytes=memory_bytes if memory_bytes is not None else hardware.memory_bytes,
                  reserve_bytes=reserve_of(reserve_bytes, model_state_only=True))
    parts = state_parts(prec, opt, i.zero)
    d = Derivation()
    for p in parts:
        d.given(p.label, f"β_{p.part}", p.bytes_per_param, "B/param",
                opt.source if p.part == "optimizer" else prec.source)
    beta = d.add("bytes per parameter", "β = Σ β_part", " + ".join(g(p.bytes_per_param) for p in parts),
                 sum(p.bytes_per_param for p in parts), "B/param", f"{LECTURE}; {ZERO}")
    G = i.gpus
    if i.zero == 0:
        per_gpu = d.add("bytes per parameter on one GPU (ZeRO-0: every GPU holds everything)", "β_gpu = β", g(beta),
                        beta, "B/param", ZERO)
    else:
        rep = [p for p in parts if not p.sharded]
        shd = [p for p in parts if p.sharded]
        rep_s = " + ".join(g(p.bytes_per_param) for p in rep) or "0"
        shd_s = " + ".join(g(p.bytes_per_param) for p in shd)
        per_gpu = d.add(f"bytes per parameter on one GPU (ZeRO-{i.zero} shards {', '.join(p.part for p in shd)})",
                        "β_gpu = Σ β_replicated + Σ β_sharded / G", f"{rep_s} + ({shd_s}) / {G}",
                        sum(p.bytes_per_param for p in rep) + sum(p.bytes_per_param for p in shd) / G, "B/param", ZERO)
    M = d.given("memory per GPU", "M", i.memory_bytes, "B",
                f"{hardware.name} nominal memory (datasheet)" if memory_bytes is None else "input")
    usable = M - i.reserve_bytes
    if i.reserve_bytes:
        usable = d.add("usable memory per GPU", "M - reserve", f"{g(M)} - {g(i.reserve_bytes)}", usable, "B", "input")
    if usable <= 0:
        from napkin.errors import InputError

        raise InputError(f"reserve ({g(i.reserve_bytes)} B) leaves no memory on a {g(M)} B GPU")
    N = d.add("largest model (model state only)", "N_max = M / β_gpu", f"{g(usable)} / {g(per_gpu)}", usable / per_gpu,
              "params", LECTURE)
    notes = ["Activations, the KV cache, temporary buffers and the CUDA context are NOT counted here"
             + ("" if reserve_bytes is not None else " (no reserve held back: the lecture's nominal memory; "
                "--reserve 2GB holds back what `napkin memory --model` does)")
             + "; `napkin memory` adds activations for a real architecture."]
    if i.zero == 3:
        notes.append(f"ZeRO-3 / FSDP shards all model state, so this is the cluster's total memory / β = "
                     f"{G} × {g(usable)} / {g(beta)} (the lecture's napkin).")
    return MaxModelResult(inputs=i, parts=parts, bytes_per_param=beta, bytes_per_param_per_gpu=per_gpu,
                          usable_bytes_per_gpu=usable, max_params=N, optimizer_states=opt.states,
                          steps=d.steps, notes=notes)
