"""The roofline: a GPU's memory slope, compute roof and ridge point, with a model's operations on it.

Attainable FLOP/s = min(peak, I · bandwidth) for an operation of arithmetic intensity I (FLOPs per
byte moved to and from memory); the ridge point I* = peak / bandwidth separates memory-bound
(I < I*) from compute-bound (I > I*) work (Williams, Waterman & Patterson 2009).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.errors import InputError
from napkin.results import ROOFLINE, Derivation, Result, g
from napkin.specs.dtypes import DType, bytes_per_element, parse_dtype
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_optional_model
from napkin.validation import Inputs, PositiveInt, validated

SRC_ROOFLINE = ROOFLINE
SRC_MATMUL = ("FLOPs: napkin.accounting.flops.forward_flops_per_token; bytes: the layer's weights once plus "
              "each projection's input and output (Pope et al. 2022 §2)")
SRC_ATTN = ("FLOPs: napkin.accounting.flops (QKᵀ and AV); bytes: Dao et al. 2022, FlashAttention §3 (Q, K, V "
            "read once, O written once, S = QKᵀ never written)")
SRC_MOE = ("uniform, independent top-k routing: n tokens touch E·(1 − (1 − k/E)^n) of E experts on average "
           "(Fedus et al. 2022 §2.1 router; expectation over experts)")
SRC_ELEM = "definition: one FLOP per output element; every operand read and the result written once"

Bound = Literal["compute", "memory", "communication"]  # communication: TP all-reduces outlast both


def ridge_point(peak_flops_per_s: float, bandwidth_bytes_per_s: float) -> float:
    """I* = peak / bandwidth, FLOP/B."""
    return peak_flops_per_s / bandwidth_bytes_per_s


def attainable(peak_flops_per_s: float, bandwidth_bytes_per_s: float, intensity: float) -> float:
    """Roofline: min(peak, I · bandwidth)."""
    return min(peak_flops_per_s, intensity * bandwidth_bytes_per_s)


def bound_of(compute_s: float, memory_s: float) -> Literal["compute", "memory"]:
    """The limit that sets the time: the larger of compute time and memory time (ties: compute)."""
    return "compute" if compute_s >= memory_s else "memory"


class PhaseCost(BaseModel):
    """One phase of serving (the prefill of a batch, or one decode step) on one GPU, timed on the roofline."""

    model_config = ConfigDict(frozen=True)

    phase: str
    context: float = Field(description="positions attended (prefill: s_p; decode: this step's context c)")
    tokens: int = Field(description="tokens processed (prefill: B·s_p; decode step: B)")
    flops: float = Field(description="FLOPs per GPU")
    bytes: float = Field(description="bytes read/written per GPU (weights, KV cache)")
    intensity_flops_per_byte: float
    compute_s: float
    memory_s: float
    comm_s: float = Field(description="tensor-parallel all-reduces (not overlapped)")
    time_s: float
    bound: Bound


def phase_cost(d: Derivation, label: str, context: float, tokens: int, flops: float, nbytes: float, peak: float,
               bw: float, comm: float, *, flops_formula: str, flops_numbers: str, flops_source: str,
               bytes_formula: str, bytes_numbers: str, bytes_source: str) -> PhaseCost:
    """Time a phase as max(FLOPs / peak, bytes / bandwidth) + communication, recording each step."""
    d.add(f"{label}: FLOPs per GPU", flops_formula, flops_numbers, flops, "FLOP", flops_source)
    d.add(f"{label}: bytes per GPU", bytes_formula, bytes_numbers, nbytes, "B", bytes_source)
    c_s, m_s = flops / peak, nbytes / bw
    inten = d.add(f"{label}: arithmetic intensity", "FLOPs / bytes", f"{g(flops)} / {g(nbytes)}", flops / nbytes,
                  "FLOP/B", SRC_ROOFLINE)
    bound: Bound = "communication" if comm > max(c_s, m_s) else bound_of(c_s, m_s)
    t = d.add(f"{label}: time ({bound}-bound)", "max(FLOPs / peak, bytes / BW) + all-reduce",
              f"max({g(c_s)}, {g(m_s)}) + {g(comm)}", max(c_s, m_s) + comm, "s", SRC_ROOFLINE)
    return PhaseCost(phase=label, context=context, tokens=tokens, flops=flops, bytes=nbytes,
                     intensity_flops_per_byte=inten, compute_s=c_s, memory_s=m_s, comm_s=comm, time_s=t, bound=bound)


def sum_max_affine(a: tuple[float, float], m: tuple[float, float], lo: int, hi: int) -> float:
    """Σ_{c=lo}^{hi} max(a0 + a1·c, m0 + m1·c), exactly: split the range where the two lines cross.

    Decode's compute time and memory time are both affine in the context c, so this sums all steps
    in closed form, even when the bound changes partway through the generation.
    """
    if hi < lo:
        return 0.0

    def line_sum(line: tuple[float, float], x: int, y: int) -> float:
        n = y - x + 1
        return 0.0 if n <= 0 else n * line[0] + line[1] * (x + y) * n / 2

    def diff(c: float) -> float:
        return (a[0] + a[1] * c) - (m[0] + m[1] * c)

    if (diff(lo) >= 0) == (diff(hi) >= 0):
        return line_sum(a if diff(lo) >= 0 else m, lo, hi)
    k = min(max(math.floor((m[0] - a[0]) / (a[1] - m[1])), lo), hi - 1)
    first, second = (a, m) if diff(lo) >= 0 else (m, a)
    return line_sum(first, lo, k) + line_sum(second, k + 1, hi)


Phase = Literal["prefill", "decode", "any"]  # when an operation runs: a serving phase, or both
Op = tuple[str, Phase, float, float, str, str, str]  # (name, phase, FLOPs, bytes, formula, substituted, source)


class RooflineOp(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    phase: Phase
    flops: float = Field(description="FLOPs of the operation, one layer, whole batch")
    bytes: float = Field(description="bytes moved to/from memory, one layer, whole batch")
    intensity_flops_per_byte: float
    attainable_flops_per_s: float
    bound: Bound
    time_s: float = Field(description="max(FLOPs / peak, bytes / bandwidth): lower bound on its time")


class RooflineInputs(Inputs):
    gpu: str
    dtype: DType = DType.bf16
    model: str | None = Field(default=None, description="model catalog name")
    batch: PositiveInt = 1
    prompt: PositiveInt = 1024
    context: PositiveInt = Field(default=1024, description="positions attended at the decode step")
    weights_dtype: DType = DType.bf16
    kv_dtype: DType = DType.bf16


class RooflineResult(Result):
    inputs: RooflineInputs
    peak_flops_per_s: float
    bandwidth_bytes_per_s: float
    ridge_flops_per_byte: float
    ops: list[RooflineOp]


def roofline(hardware: HardwareSpec, dtype: str | DType | None = None,
             spec: TransformerSpec | LinearSpec | str | None = None, *,
             batch: int = 1, prompt: int = 1024, context: int = 1024, weights_dtype: str | DType | None = None,
             kv_dtype: str | DType | None = None) -> RooflineResult:
    """The GPU's roofline; with ``spec``, one layer's operations at prefill and at a decode step placed on it.

    Operations (per layer, whole batch): the weight matmuls (QKV, output, FFN) at prefill (B·P tokens)
    and decode (B tokens), attention at prefill (flash attention over P) and decode (over the KV cache of
    ``context`` positions), and two elementwise operations (residual add; a gated activation).
    A dtype left out is bf16, or fp16 on a GPU without bf16 (V100).
    """
    spec = as_optional_model(spec, "spec")
    hardware = as_hardware(hardware, "hardware")
    if spec is not None and not isinstance(spec, TransformerSpec):
        raise InputError(f"{getattr(spec, 'name', spec)} is not a transformer; the roofline places attention and "
                         "matmul operations of a transformer (omit `model` for the GPU's roofline alone)")
    half = DType.bf16 if DType.bf16 in hardware.peak_flops_per_s else DType.fp16  # V100: no bf16

    def dt(x: str | DType | None) -> DType:
        return half if x is None else parse_dtype(x)

    i = validated(RooflineInputs, gpu=hardware.name, dtype=dt(dtype), model=spec.name if spec else None,
                  batch=batch, prompt=prompt, context=context, weights_dtype=dt(weights_dtype), kv_dtype=dt(kv_dtype))
    d = Derivation()
    P = d.given(f"{hardware.display_name} dense {i.dtype.value} peak", "P", hardware.peak(i.dtype), "FLOP/s",
                f"{hardware.name}: {hardware.sources[0]}")
    BW = d.given("memory bandwidth", "BW", hardware.memory_bandwidth_bytes_per_s, "B/s",
                 f"{hardware.name}: {hardware.sources[0]}")
    ridge = d.add("ridge point", "I* = P / BW", f"{g(P)} / {g(BW)}", ridge_point(P, BW), "FLOP/B", SRC_ROOFLINE)
    ops: list[RooflineOp] = []
    if spec is not None:
        for name, phase, flops, nbytes, formula, numbers, src in _ops(spec, i):
            d.add(f"{name}: intensity", formula, numbers, flops / nbytes, "FLOP/B", src)
            c_s, m_s = flops / P, nbytes / BW
            ops.append(RooflineOp(name=name, phase=phase, flops=flops, bytes=nbytes,
                                  intensity_flops_per_byte=flops / nbytes,
                                  attainable_flops_per_s=attainable(P, BW, flops / nbytes), bound=bound_of(c_s, m_s),
                                  time_s=max(c_s, m_s)))
    notes = ["Per-layer operations use the layer's own shapes; the bytes count weights, KV cache and the "
             "activations read and written once (perfect caching within an operation)."] if spec else []
    if spec is not None and max(i.prompt, i.context) > spec.max_context:
        notes.append(f"prompt or context beyond {spec.name}'s maximum of {spec.max_context} tokens.")
    return RooflineResult(inputs=i, peak_flops_per_s=P, bandwidth_bytes_per_s=BW, ridge_flops_per_byte=ridge,
                          ops=ops, steps=d.steps, notes=notes)


def experts_touched(spec: TransformerSpec, tokens: float) -> float:
    """Routed experts per MoE layer that ``tokens`` tokens hit, on average: E·(1 − (1 − k/E)^n)."""
    assert spec.moe is not None
    e = spec.moe
    return e.experts * (1 - (1 - e.top_k / e.experts) ** tokens)


def weights_read_params(spec: TransformerSpec, tokens: float, *, blocks_only: bool = False) -> float:
    """Parameters a forward pass over ``tokens`` tokens reads from memory (each weight once).

    An untied (or learned-position) embedding table is not read whole: the lookup touches one row per
    token, left out. MoE: only the experts the tokens are routed to (uniform routing; SRC_MOE).
    ``blocks_only``: the attention and FFN weights of the layers alone (no embeddings, head or norms).
    """
    from napkin.accounting.params import count_params, ffn_matrix_params

    c = count_params(spec).components
    if blocks_only:
        n = float(sum(v for k, v in c.items() if k.startswith(("attention.", "ffn."))))
    else:
        n = float(sum(c.values()))
        if not spec.tied_embeddings:
            n -= c["embedding.tokens"]
        n -= c.get("embedding.positions", 0)
    if spec.moe is not None:
        e = spec.moe
        n -= spec.moe_layers * (e.experts - experts_touched(spec, tokens)) * ffn_matrix_params(spec, e.expert_ffn_dim)
    return n


def _ops(spec: TransformerSpec, i: RooflineInputs) -> list[Op]:
    """(name, phase, FLOPs, bytes, formula, substituted, source) for one (average) layer."""
    from napkin.accounting.flops import ATTENTION_CORE, forward_flops_per_token, mean_context
    from napkin.accounting.kv_cache import kv_elements_per_token
    from napkin.accounting.layers import attention_head_dims, layer_plan

    L, h = spec.layers, spec.d_model
    a, d_qk, d_v = attention_head_dims(spec)
    bw, bkv, ba = bytes_per_element(i.weights_dtype), bytes_per_element(i.kv_dtype), bytes_per_element(i.dtype)
    f0 = forward_flops_per_token(spec, 0, causal=False)
    f_lin = sum(v for k, v in f0.items() if k not in ATTENTION_CORE and k != "head") / L  # per token, per layer
    f1 = forward_flops_per_token(spec, 1, causal=False)  # one query over one position: QKᵀ and AV per position
    f_pos = sum(f1.get(k, 0.0) - f0.get(k, 0.0) for k in ATTENTION_CORE) / L  # 0 in an attention-free stack
    # Activations each matmul reads and writes, per token: Σ (fan_in + fan_out) over the projections a token
    # runs through in one layer (an MoE model's MoE layer: top_k routed + shared experts + router).
    plan = layer_plan(spec)
    kind = next((k for k in plan.kinds if k.moe), plan.kinds[0])
    io = sum(gm.active * (gm.linear.fan_in + gm.linear.fan_out) for gm in kind.gemms)
    B, Pn, c = i.batch, i.prompt, i.context
    out: list[Op] = []
    phases: tuple[tuple[Phase, int], ...] = (("prefill", B * Pn), ("decode", B))
    for phase, n in phases:
        W = weights_read_params(spec, n, blocks_only=True) / L
        out.append((f"matmuls ({phase})", phase, n * f_lin, W * bw + n * io * ba,
                    "n·F_lin / (W·b_w + n·io·b_a)", f"{n} × {g(f_lin)} / ({g(W)} × {g(bw)} + {n} × {io} × {g(ba)})",
                    SRC_MATMUL))
    kv_layer = kv_elements_per_token(spec) / L
    if not spec.attention_layers:  # a pure Mamba or MLP stack: no attention core to place on the roofline
        n_el = B * Pn * h
        out.append(("residual add", "any", n_el, 3 * n_el * ba, "n / (3·n·b_a)", f"{n_el} / (3 × {n_el} × {g(ba)})",
                    SRC_ELEM))
        return out
    # Prefill attention (causal, flash): mean (P + 1)/2 positions per query; read Q, K, V once, write O.
    ctx = mean_context(Pn, causal=True)
    f_pre = B * Pn * f_pos * ctx
    b_pre = B * Pn * (a * d_qk + kv_layer + a * d_v) * ba
    out.append(("attention (prefill)", "prefill", f_pre, b_pre, "B·P·F_pos·(P+1)/2 / (B·P·(a·d_qk + kv + a·d_v)·b_a)",
                f"{B} × {Pn} × {g(f_pos)} × {g(ctx)} / ({B} × {Pn} × {g(a * d_qk + kv_layer + a * d_v)} × {g(ba)})",
                SRC_ATTN))
    # Decode attention: one query per sequence over the c cached positions, read from the KV cache.
    f_dec = B * f_pos * c
    b_dec = B * c * kv_layer * bkv + B * (a * d_qk + a * d_v) * ba
    out.append(("attention (decode)", "decode", f_dec, b_dec, "B·F_pos·c / (B·c·kv·b_kv + B·(q + o)·b_a)",
                f"{B} × {g(f_pos)} × {c} / ({B} × {c} × {g(kv_layer)} × {g(bkv)} + …)",
                f"{SRC_ATTN}; Pope et al. 2022 §3.3 (decode attention reads the whole KV cache)"))
    # Elementwise: residual add (1 FLOP, 2 reads + 1 write per element) over the prefill tokens.
    n_el = B * Pn * h
    out.append(("residual add", "any", n_el, 3 * n_el * ba, "n / (3·n·b_a)",
                f"{n_el} / (3 × {n_el} × {g(ba)})", SRC_ELEM))
    return out
