"""Serving one model: memory (weights, KV cache, workspace), prefill and decode time, TTFT, tokens/s.

Prefill processes the B·s_p prompt tokens at once and is compute-bound; each decode step processes
one token per sequence and must read every weight once (shared by the batch) plus each sequence's
KV cache, which makes it memory-bound until the batch is large (Pope et al. 2022 §2; CS336 lecture 3).
Every phase is timed on the roofline: max(FLOPs / (peak · MFU), bytes / (bandwidth · MBU)), plus the
tensor-parallel all-reduces, and the bound that sets the time is named.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from napkin.accounting.collectives import ring_allreduce_factor
from napkin.accounting.kv_cache import KVCacheResult, kv_cache
from napkin.accounting.params import count_params
from napkin.accounting.roofline import (
    SRC_MOE,
    SRC_ROOFLINE,
    PhaseCost,
    phase_cost,
    ridge_point,
    sum_max_affine,
    weights_read_params,
)
from napkin.errors import InputError
from napkin.results import DEFINITION, Derivation, Result, g, minus
from napkin.specs.dtypes import BYTES_PER_ELEMENT, DType, bytes_per_element, parse_dtype
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_model
from napkin.validation import AtLeastOne, Fraction, Inputs, NonNegative, Positive, PositiveInt, Setup, validated

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

SRC_DECODE = ("Pope et al. 2022, Efficiently Scaling Transformer Inference, §2: a forward pass reads every weight "
              "once (shared by its tokens) and each sequence's KV cache")
SRC_MBU = "Databricks 2023, LLM Inference Performance Engineering: Best Practices (MBU = achieved / peak bandwidth)"
SRC_TP = "Shoeybi et al. 2019, Megatron-LM §3, Fig. 3: 2 all-reduces per layer in the forward pass (attention, MLP)"
SRC_RING = ("Patarasuk & Yuan 2009, Bandwidth Optimal All-reduce Algorithms; nccl-tests PERFORMANCE.md: a ring "
            "all-reduce sends and receives 2(n−1)/n · S bytes per GPU of n")
SRC_FLOPS = "napkin.accounting.flops.forward_flops_per_token (Kaplan et al. 2020 §2.1; Korthikanti et al. 2022 App. A)"
SRC_WS = ("napkin estimate: one layer's live activations per token in flight (residual h, block input h, FFN "
          "inner 2f/TP, or 3f/TP gated) in the compute dtype, plus fp32 logits of each sequence's last position (V/TP)")

# Prefill is chunked by default, as serving engines do: vLLM V1 always chunks (max_num_batched_tokens 8192 for its
# OpenAI server on GPUs of 70 GiB and more: EngineArgs.get_batch_defaults, vllm/engine/arg_utils.py) and SGLang's
# --chunked-prefill-size is 8192 by default (sglang/srt/server_args.py). None prefills the whole batch at once.
DEFAULT_PREFILL_CHUNK = 8192
SRC_CHUNKED_PREFILL = ("Agrawal et al. 2023, SARATHI: chunked prefills (arXiv 2308.16369); vLLM V1 and SGLang chunk "
                       "prefill by default, 8192 tokens per pass (vLLM max_num_batched_tokens, SGLang "
                       "--chunked-prefill-size)")
WEIGHT_DTYPES = {DType.fp32, DType.bf16, DType.fp16, DType.fp8, DType.int8, DType.int4, DType.fp4}
KV_DTYPES = {DType.fp32, DType.bf16, DType.fp16, DType.fp8, DType.int8}
# activations and all-reduce payloads are bf16/fp16 (with fp8 matmuls too: their outputs are bf16)
ACT_BYTES = BYTES_PER_ELEMENT[DType.bf16]
LOGIT_BYTES = BYTES_PER_ELEMENT[DType.fp32]  # the sampled position's logits, in fp32


class ServingSetup(Setup):
    """What is served, apart from the model and the GPUs: B sequences of s_p prompt + s_g generated tokens, the
    dtypes of the weights, the KV cache and the matmuls, the prefill chunking, and the fractions of peak FLOP/s
    (MFU) and bandwidth (MBU) reached. MFU = MBU = 1 is the ideal lower bound on every time."""

    batch: PositiveInt = Field(description="B, sequences served together")
    prompt: PositiveInt = Field(description="s_p, prompt tokens per sequence")
    generate: PositiveInt = Field(description="s_g, generated tokens per sequence")
    weights_dtype: DType | str | None = Field(default=None, description="a name is read as a DType (parse_dtype); "
                                              "None: bf16, or fp16 on a GPU without bf16 (V100)")
    kv_dtype: DType | str | None = Field(default=None, description="None: bf16, or fp16 on a GPU without bf16")
    compute_dtype: DType | str | None = Field(default=None, description="dtype of the matmuls (None: from the weights "
                                        "and the GPU, see _resolve_compute)")
    prefill_chunk: PositiveInt | None = Field(default=DEFAULT_PREFILL_CHUNK, description="tokens per prefill pass "
                                              "(default 8192, as vLLM and SGLang; None: the whole B·s_p at once)")
    mfu: Fraction = Field(default=1.0, description="fraction of peak FLOP/s reached (1 = ideal lower bound)")
    mbu: Fraction = Field(default=1.0, description="fraction of memory bandwidth reached (1 = ideal)")

    @field_validator("weights_dtype", "kv_dtype", "compute_dtype", mode="before")
    @classmethod
    def _dtype(cls, v: object) -> object:
        return v if v is None else parse_dtype(v)  # type: ignore[arg-type]  # an unknown name: UnknownNameError


class ServingKeywords(TypedDict, total=False):
    """Keyword convenience for inference(): ServingSetup's fields, turned into one there."""

    batch: int
    prompt: int
    generate: int
    weights_dtype: str | DType | None
    kv_dtype: str | DType | None
    compute_dtype: str | DType | None
    prefill_chunk: int | None
    mfu: float
    mbu: float


class InferenceInputs(Inputs):
    model: str = Field(description="model catalog name")
    gpu: str
    batch: PositiveInt
    prompt: PositiveInt = Field(description="s_p, prompt tokens per sequence")
    generate: PositiveInt = Field(description="s_g, generated tokens per sequence")
    gpus: PositiveInt = Field(default=1, description="tensor-parallel degree TP")
    weights_dtype: DType = DType.bf16
    kv_dtype: DType = DType.bf16
    compute_dtype: DType = Field(description="dtype of the matmuls, whose dense peak is used")
    mfu: Fraction = Field(default=1.0, description="fraction of peak FLOP/s reached (1 = ideal lower bound)")
    mbu: Fraction = Field(default=1.0, description="fraction of memory bandwidth reached (1 = ideal)")
    prefill_chunk: PositiveInt | None = Field(default=DEFAULT_PREFILL_CHUNK, description="tokens per prefill pass "
                                              "(default 8192, as vLLM and SGLang; None: the whole B·s_p at once)")
    memory_bytes: Positive
    reserve_bytes: NonNegative = 0.0
    link_bytes_per_s: AtLeastOne | None = Field(default=None, description="scale-up link bandwidth per GPU, "
                                              "both directions")
    allreduce_latency_s: NonNegative = 0.0
    allow_longer: bool = False


class InferenceResult(Result):
    inputs: InferenceInputs
    params: int
    active_params: int
    kv: KVCacheResult
    weights_bytes: float = Field(description="per GPU")
    kv_cache_bytes: float = Field(description="per GPU, at the full context s_p + s_g")
    workspace_bytes: float = Field(description="per GPU, transient activations and logits")
    total_bytes: float
    usable_bytes: float
    fits: bool
    headroom_bytes: float = Field(description="usable - total (negative: the shortfall)")
    max_batch: int = Field(description="largest batch that fits at this s_p + s_g (0: the weights alone do not fit)")
    max_context: int = Field(description="largest s_p + s_g that fits at this batch, capped by the model unless "
                             "allow_longer")
    max_context_limit: str = Field(description="what sets max_context: memory or the model's max_context")
    peak_flops_per_s: float
    bandwidth_bytes_per_s: float
    ridge_flops_per_byte: float = Field(description="datasheet ridge: peak / bandwidth")
    effective_ridge_flops_per_byte: float = Field(description="(peak · MFU) / (bandwidth · MBU)")
    prefill: PhaseCost
    decode_first: PhaseCost
    decode_last: PhaseCost
    decode_mean: PhaseCost = Field(description="decode step at the mean context (time averages to this when one "
                                   "bound holds throughout)")
    decode_steps: int
    decode_time_s: float
    ttft_s: float = Field(description="time to first token: the prefill")
    tpot_s: float = Field(description="mean time per output token in decode")
    tokens_per_s_per_sequence: float
    tokens_per_s_total: float = Field(description="decode tokens/s over the batch")
    end_to_end_s: float
    critical_batch: float | None = Field(description="batch above which decode is compute-bound at the mean "
                                         "context; None: never (KV reads alone are below the ridge)")
    kv_asymptotic_intensity: float | None = Field(description="FLOPs per KV byte per sequence: decode's intensity "
                                                  "as B grows without bound; None without a KV cache")


class DecodeFlops(BaseModel):
    """Forward FLOPs of one new token attending over c positions: F(c) = F0 + F1·c (attention is linear in c)."""

    model_config = ConfigDict(frozen=True)

    f0: float = Field(description="context-independent FLOPs per token (weight matmuls, LM head)")
    f1: float = Field(description="FLOPs per token per attended position (QKᵀ and AV)")

    def at(self, c: float) -> float:
        return self.f0 + self.f1 * c


def decode_flops(spec: TransformerSpec, d: Derivation) -> DecodeFlops:
    """F0 = F(0) and F1 = F(1) − F(0) from forward_flops_per_token: attention is linear in the context.

    causal=False: the new token's one query attends to every cached position (KV cache of c entries).
    """
    from napkin.accounting.flops import forward_flops_per_token

    F0, F1 = (sum(forward_flops_per_token(spec, c, causal=False).values()) for c in (0, 1))
    f0 = d.add("decode FLOPs per token, context-independent (matmuls, LM head)", "F0 = F(c = 0)", g(F0), F0, "FLOP",
               SRC_FLOPS)
    f1 = d.add("decode FLOPs per token per attended position (QKᵀ, AV)", "F1 = F(1) − F(0)", minus(F1, F0),
               F1 - F0, "FLOP", SRC_FLOPS)
    return DecodeFlops(f0=f0, f1=f1)


def prefill_flops_per_sequence(spec: TransformerSpec, s_p: int, d: Derivation) -> float:
    """s_p tokens under the causal mask (mean (s_p + 1)/2 positions); the LM head on the last position only."""
    from napkin.accounting.flops import forward_flops_per_token

    comps = forward_flops_per_token(spec, s_p, causal=True)  # the mean token of a causal sequence of s_p
    per_tok, head = sum(comps.values()), comps["head"]
    return d.add("prefill FLOPs per sequence", "s_p · F_causal(s_p) − (s_p − 1) · F_head",
                 f"{s_p} × {g(per_tok)} − {s_p - 1} × {g(head)}", s_p * per_tok - (s_p - 1) * head, "FLOP",
                 f"{SRC_FLOPS}; causal mean (s_p + 1)/2; logits of the last prompt position only (vLLM, TensorRT-LLM)")


HALF_BYTES = BYTES_PER_ELEMENT[DType.bf16]
SRC_KEPT_16BIT = ("AutoGPTQ / AutoAWQ / llm-compressor quantize the nn.Linear layers inside the decoder blocks; the "
                  "token embedding, the LM head (GPTQ lm_head=False, AWQ modules_to_not_convert) and the norms stay "
                  "16-bit: an int4 Llama 3 8B checkpoint is ~5.7 GB, not 4.0 GB")


def _kept_16bit(spec: TransformerSpec, c: dict[str, int], *, read: bool) -> int:
    """Parameters a quantized checkpoint keeps in 16-bit (SRC_KEPT_16BIT): the embeddings, the LM head and the norms.
    ``read``: those a forward pass reads whole (a tied table is the head; an untied one is looked up, not read)."""
    norms = sum(v for k, v in c.items() if k.startswith("norms."))
    if read:
        return norms + (c.get("embedding.tokens", 0) if spec.tied_embeddings else c.get("head", 0))
    return norms + sum(v for k, v in c.items() if k.startswith("embedding.")) + c.get("head", 0)


def _read_bytes(spec: TransformerSpec, c: dict[str, int], params_read: float, bw_: float) -> float:
    """Bytes of ``params_read`` weights read: the quantized blocks at ``bw_``, what stays 16-bit at 2."""
    if bw_ >= HALF_BYTES:
        return params_read * bw_
    kept = _kept_16bit(spec, c, read=True)
    return (params_read - kept) * bw_ + kept * HALF_BYTES


def _half_or(given: str | DType | None, hw: HardwareSpec, what: str) -> DType:
    """A storage dtype; None is bf16, or fp16 on a GPU without bf16 (V100: its datasheet has no bf16, and the
    training commands refuse it there too)."""
    has_bf16 = hw.runs(DType.bf16)
    if given is None:
        return DType.bf16 if has_bf16 else DType.fp16
    d = parse_dtype(given)
    if d == DType.bf16 and not has_bf16:
        raise InputError(f"{hw.name} has no bf16 on its datasheet ({what} in bf16 would not run there); use fp16, "
                         "the default on it")
    return d


def _resolve_compute(w: DType, hw: HardwareSpec, compute: str | DType | None) -> DType:
    if compute is not None:
        return parse_dtype(compute)
    # fp8 weights run fp8 matmuls (W8A8) where the GPU has an fp8 peak; int8/int4 are weight-only
    # (W8A16/W4A16: dequantized in the kernel, bf16 matmuls), as gpt-fast / AWQ / Marlin kernels do.
    # Half precision is bf16 where the GPU has it, else fp16 (V100 has no bf16).
    half = DType.bf16 if hw.runs(DType.bf16) and w != DType.fp16 else DType.fp16
    if w == DType.fp8 and DType.fp8 in hw.peak_flops_per_s:
        return DType.fp8
    return DType.fp32 if w == DType.fp32 else half


def inference(
    spec: TransformerSpec | LinearSpec | str, hardware: HardwareSpec, serving: ServingSetup | None = None, *,
    gpus: int = 1, memory_bytes: float | None = None, reserve_bytes: float = 0.0,
    link_bytes_per_s: float | None = None, allreduce_latency_s: float = 0.0, allow_longer: bool = False,
    **keywords: Unpack[ServingKeywords],
) -> InferenceResult:
    """Serving napkin for ``serving`` (ServingSetup: B sequences of s_p prompt + s_g generated tokens, dtypes,
    prefill chunk, MFU/MBU) on TP = ``gpus`` tensor-parallel GPUs: ``inference("llama3-8b", "h100",
    ServingSetup(batch=8, prompt=1024, generate=256))``. For short, ServingSetup's fields may be keywords instead
    (``batch=8, prompt=1024, generate=256``), turned into the object here and nowhere else.

    The defaults (MFU = MBU = 1, no all-reduce latency) give the ideal lower bound on every time.
    """
    spec = as_model(spec, "spec")
    hardware = as_hardware(hardware, "hardware")
    if not isinstance(spec, TransformerSpec):
        raise InputError(f"{getattr(spec, 'name', spec)} is not a transformer; serving needs attention and a KV cache")
    if serving is None:
        unknown = sorted(set(keywords) - set(ServingSetup.model_fields))
        if unknown:
            raise TypeError(f"inference() got an unexpected keyword argument '{unknown[0]}'")
        serving = validated(ServingSetup, **keywords)
    elif keywords:
        raise InputError(f"give the serving setup as serving=ServingSetup(...) or as keywords ({', '.join(keywords)}), "
                         "not both")
    if gpus == 1 and (link_bytes_per_s is not None or allreduce_latency_s):  # accepted and ignored before
        raise InputError("`link_bandwidth` and `allreduce_latency` time the tensor-parallel all-reduces between GPUs; "
                         "one GPU has none: leave them out, or give `gpus` above 1")
    sv = serving
    i = validated(
        InferenceInputs, model=spec.name, gpu=hardware.name, batch=sv.batch, prompt=sv.prompt, generate=sv.generate,
        gpus=gpus, weights_dtype=(w := _half_or(sv.weights_dtype, hardware, "weights")),
        kv_dtype=_half_or(sv.kv_dtype, hardware, "KV cache"),
        compute_dtype=_resolve_compute(w, hardware, sv.compute_dtype), mfu=sv.mfu,
        mbu=sv.mbu,
        prefill_chunk=sv.prefill_chunk,
        memory_bytes=memory_bytes if memory_bytes is not None else hardware.memory_bytes, reserve_bytes=reserve_bytes,
        link_bytes_per_s=hardware.interconnect_bandwidth_bytes_per_s if link_bytes_per_s is None else link_bytes_per_s,
        allreduce_latency_s=allreduce_latency_s, allow_longer=allow_longer)
    _check(spec, hardware, i)
    d = Derivation()
    tp, B, s_p, s_g = i.gpus, i.batch, i.prompt, i.generate
    S = s_p + s_g
    # --- memory ---------------------------------------------------------------------------------
    pc = count_params(spec)
    bw_ = bytes_per_element(i.weights_dtype)
    kept = _kept_16bit(spec, pc.components, read=False) if bw_ < HALF_BYTES else 0
    if kept:
        W_all = d.add(f"weights ({i.weights_dtype.value}; embedding, head and norms in 16-bit)",
                      "(N − N_16) · bytes + N_16 · 2", f"({g(pc.params)} − {g(kept)}) × {g(bw_)} + {g(kept)} × 2",
                      (pc.params - kept) * bw_ + kept * HALF_BYTES, "B", SRC_KEPT_16BIT)
    else:
        W_all = d.add(f"weights ({i.weights_dtype.value})", "N · bytes", f"{g(pc.params)} × {g(bw_)}", pc.params * bw_,
                      "B", "count_params (napkin.accounting.params); dtype sizes (napkin.specs.dtypes)")
    W = W_all if tp == 1 else d.add(f"weights per GPU (TP {tp})", "weights / TP", f"{g(W_all)} / {tp}", W_all / tp,
                                    "B", SRC_TP)
    kv = kv_cache(spec, S, B, kv_dtype=i.kv_dtype, tp=tp, d=d)
    kv_tok = kv.bytes_per_token * kv.shard.fraction_per_gpu  # per sequence, per GPU
    ws_tok = _workspace_per_token(spec, tp)
    logits_seq = spec.vocab / tp * LOGIT_BYTES  # fp32 logits of the last position, vocab-parallel head
    in_flight = B * s_p if i.prefill_chunk is None else min(B * s_p, i.prefill_chunk)
    ws = d.add("workspace per GPU (prefill, flash attention)",
               f"tokens in flight · (2h + {spec.ffn_matrices}·f/TP) · {g(ACT_BYTES)} bytes + B · V/TP · "
               f"{g(LOGIT_BYTES)} bytes",
               f"{in_flight} × {g(ws_tok)} + {B} × {g(logits_seq)}", in_flight * ws_tok + B * logits_seq, "B", SRC_WS)
    total = d.add("memory per GPU", "weights + KV cache + workspace", f"{g(W)} + {g(kv.bytes_per_gpu)} + {g(ws)}",
                  W + kv.bytes_per_gpu + ws, "B", DEFINITION)
    usable = i.memory_bytes - i.reserve_bytes
    # Largest batch: memory is affine in B (KV, prompt workspace and logits per sequence).
    per_seq = kv_tok * S + logits_seq + (s_p * ws_tok if i.prefill_chunk is None else 0)
    fixed = W + (0 if i.prefill_chunk is None else i.prefill_chunk * ws_tok)
    max_b = max(0, math.floor((usable - fixed) / per_seq))
    d.add("largest batch that fits", "⌊(M − weights − fixed workspace) / bytes per sequence⌋",
          f"⌊({g(usable)} − {g(fixed)}) / {g(per_seq)}⌋", max_b, "sequences", DEFINITION)
    if kv_tok > 0:
        ctx_mem = max(0, math.floor((usable - W - ws) / (B * kv_tok)))
        max_ctx, limit = (ctx_mem, "memory")
        if not i.allow_longer and spec.max_context < ctx_mem:
            max_ctx, limit = spec.max_context, "model"
        d.add("largest context that fits at this batch (workspace held at this prompt)",
              "⌊(M − weights − workspace) / (B · KV bytes per token per GPU)⌋",
              f"⌊({g(usable)} − {g(W)} − {g(ws)}) / ({B} × {g(kv_tok)})⌋", ctx_mem, "tokens", DEFINITION)
    else:  # no attention layer (a pure Mamba stack): the cache is a fixed state, memory sets no context limit
        max_ctx, limit = spec.max_context, "model"
    # --- the roofline ---------------------------------------------------------------------------
    peak = d.given(f"{hardware.display_name} dense {i.compute_dtype.value} peak", "P",
                   hardware.peak(i.compute_dtype), "FLOP/s", f"{hardware.name}: {hardware.sources[0]}")
    BW = d.given("memory bandwidth", "BW", hardware.memory_bandwidth_bytes_per_s, "B/s",
                 f"{hardware.name}: {hardware.sources[0]}")
    ridge = d.add("ridge point", "I* = P / BW", f"{g(peak)} / {g(BW)}", ridge_point(peak, BW), "FLOP/B",
                  SRC_ROOFLINE)
    eff_peak, eff_bw = peak * i.mfu, BW * i.mbu
    eff_ridge = ridge * i.mfu / i.mbu
    if i.mfu != 1 or i.mbu != 1:
        d.add("effective ridge point", "I* · MFU / MBU", f"{g(ridge)} × {g(i.mfu)} / {g(i.mbu)}", eff_ridge, "FLOP/B",
              SRC_MBU)
    ar_prefill = _allreduce(d, spec, i, in_flight, "prefill") * math.ceil(B * s_p / in_flight)
    ar_decode = _allreduce(d, spec, i, B, "decode step")
    # --- prefill ----------------------------------------------------------------------------------
    f_seq = prefill_flops_per_sequence(spec, s_p, d)
    f_pre = f_seq * B / tp
    passes = math.ceil(B * s_p / in_flight)
    w_pre = _read_bytes(spec, pc.components, weights_read_params(spec, in_flight), bw_)
    b_pre = passes * w_pre / tp + B * s_p * kv_tok
    prefill = phase_cost(d, "prefill", s_p, B * s_p, f_pre, b_pre, eff_peak, eff_bw, ar_prefill,
                         flops_formula="B · prefill FLOPs per sequence / TP", flops_numbers=f"{B} × {g(f_seq)} / {tp}",
                         flops_source=SRC_FLOPS, bytes_formula="passes · weights read / TP + B · s_p · KV bytes/token",
                         bytes_numbers=f"{passes} × {g(w_pre)} / {tp} + {B} × {s_p} × {g(kv_tok)}",
                         bytes_source=SRC_DECODE)
    # --- decode -----------------------------------------------------------------------------------
    fl = decode_flops(spec, d)
    w_dec = d.add("weights read per decode step, per GPU", "(params − embedding table" + (" − idle experts"
                  if spec.moe else "") + ") · bytes / TP" + (" (embedding, head and norms at 2 bytes)" if kept else ""),
                  f"{g(weights_read_params(spec, B))} × {g(bw_)} / {tp}",
                  _read_bytes(spec, pc.components, weights_read_params(spec, B), bw_) / tp, "B",
                  f"{SRC_DECODE}; the embedding lookup reads one row per token" + (f"; {SRC_MOE}" if spec.moe else ""))

    def step(c: float, label: str) -> PhaseCost:
        return phase_cost(d, label, c, B, B * fl.at(c) / tp, w_dec + B * c * kv_tok, eff_peak, eff_bw, ar_decode,
                          flops_formula="B · (F0 + F1·c) / TP", flops_numbers=f"{B} × ({g(fl.f0)} + {g(fl.f1)} × "
                          f"{g(c)}) / {tp}", flops_source=SRC_FLOPS,
                          bytes_formula="weights read + B · c · KV bytes/token per GPU",
                          bytes_numbers=f"{g(w_dec)} + {B} × {g(c)} × {g(kv_tok)}", bytes_source=SRC_DECODE)

    c_first, c_last = s_p + 1, s_p + max(s_g - 1, 1)
    first, last = step(c_first, "decode step (first)"), step(c_last, "decode step (last)")
    mean = step(s_p + max(s_g, 2) / 2, "decode step (mean context)")
    n_steps = s_g - 1  # the prefill emits token 1; s_g - 1 decode steps emit the rest
    # Both compute and memory time are affine in the context c, so the sum over steps is exact in closed form.
    a = (B * fl.f0 / tp / eff_peak, B * fl.f1 / tp / eff_peak)
    m = (w_dec / eff_bw, B * kv_tok / eff_bw)
    t_dec = sum_max_affine(a, m, c_first, s_p + s_g - 1) + n_steps * ar_decode
    d.add("decode time (all steps)", "Σ_{c=s_p+1}^{s_p+s_g−1} max(compute(c), memory(c)) + (s_g−1) · all-reduce",
          f"{n_steps} steps, c = {c_first}..{s_p + s_g - 1}", t_dec, "s", SRC_DECODE)
    tpot = t_dec / n_steps if n_steps else first.time_s
    d.add("time per output token", "decode time / (s_g − 1)", f"{g(t_dec)} / {n_steps}" if n_steps else
          "one step at c = s_p + 1 (s_g = 1)", tpot, "s", DEFINITION)
    per_seq_rate = d.add("tokens/s per sequence", "1 / TPOT", f"1 / {g(tpot)}", 1 / tpot, "tokens/s", DEFINITION)
    total_rate = d.add("tokens/s, whole batch", "B / TPOT", f"{B} / {g(tpot)}", B / tpot, "tokens/s", DEFINITION)
    e2e = d.add("end-to-end latency", "TTFT + decode time", f"{g(prefill.time_s)} + {g(t_dec)}",
                prefill.time_s + t_dec, "s", DEFINITION)
    # Batch where decode turns compute-bound: B·F/peak = (W + B·K)/BW → B* = (W/BW) / (F/peak − K/BW).
    F_seq, K_seq = fl.at(mean.context) / tp, mean.context * kv_tok
    asym: float | None = None  # no KV cache (a pure Mamba stack): nothing read grows with the batch but weights
    if K_seq > 0:
        asym = d.add("decode intensity as B → ∞ (KV reads only)", "F per sequence / KV bytes per sequence",
                     f"{g(F_seq)} / {g(K_seq)}", F_seq / K_seq, "FLOP/B", SRC_DECODE)
    crit = None
    if asym is None or asym > eff_ridge:
        # a large batch reads every weight (MoE: every expert)
        w_all = _read_bytes(spec, pc.components, weights_read_params(spec, 1e9), bw_) / tp
        crit = d.add("critical batch (decode turns compute-bound)", "B* = (W/BW) / (F/peak − K/BW)",
                     f"({g(w_all)} / {g(eff_bw)}) / ({g(F_seq)} / {g(eff_peak)} − {g(K_seq)} / {g(eff_bw)})",
                     (w_all / eff_bw) / (F_seq / eff_peak - K_seq / eff_bw), "sequences",
                     f"{SRC_DECODE}; {SRC_ROOFLINE}")
    _asymptotics(d, spec, B, mean.context)
    notes = _notes(spec, i, kv, first, last, crit, asym, eff_ridge, max_b, total <= usable)
    return InferenceResult(
        inputs=i, params=pc.params, active_params=pc.active_params, kv=kv, weights_bytes=W,
        kv_cache_bytes=kv.bytes_per_gpu, workspace_bytes=ws, total_bytes=total, usable_bytes=usable,
        fits=total <= usable, headroom_bytes=usable - total, max_batch=max_b, max_context=max_ctx,
        max_context_limit=limit, peak_flops_per_s=peak, bandwidth_bytes_per_s=BW, ridge_flops_per_byte=ridge,
        effective_ridge_flops_per_byte=eff_ridge, prefill=prefill, decode_first=first, decode_last=last,
        decode_mean=mean, decode_steps=n_steps, decode_time_s=t_dec, ttft_s=prefill.time_s, tpot_s=tpot,
        tokens_per_s_per_sequence=per_seq_rate, tokens_per_s_total=total_rate, end_to_end_s=e2e,
        critical_batch=crit, kv_asymptotic_intensity=asym, steps=d.steps, notes=notes)


def _asymptotics(d: Derivation, spec: TransformerSpec, B: int, c: float) -> None:
    """CS336 lecture 3 (after Shazeer 2019): memory accesses per arithmetic operation of incremental attention.

    Θ(c/h + 1/B) with a K and V per head (Shazeer writes n/d + 1/b: n context, d model width, b batch): long
    contexts keep decoding memory-bound whatever the batch; with k KV heads (MQA k = 1) the c-term shrinks by a/k.
    Inverse of these = arithmetic intensity (elements).
    """
    if spec.mla is not None or not spec.attention_layers:
        return
    h, a, k = spec.d_model, spec.heads, spec.n_kv_heads
    d.add("incremental MHA: memory / arithmetic", "c/h + 1/B", f"{g(c)}/{h} + 1/{B}", c / h + 1 / B, "ratio",
          "Shazeer 2019 §2.4.1 (Θ(n/d + 1/b)); CS336 lecture 3, KV caching")
    if k != a:
        d.add(f"incremental {'MQA' if k == 1 else 'GQA'}: memory / arithmetic", "1/h + c·k/(h·a) + 1/B",
              f"1/{h} + {g(c)}×{k}/({h}×{a}) + 1/{B}", 1 / h + c * k / (h * a) + 1 / B, "ratio",
              "Shazeer 2019 §3.1 (MQA: Θ(1/d + n/(dh) + 1/b)); k KV heads: Ainslie et al. 2023; CS336 lecture 3")


def _check(spec: TransformerSpec, hw: HardwareSpec, i: InferenceInputs) -> None:
    if i.weights_dtype not in WEIGHT_DTYPES:
        raise InputError(f"weights dtype {i.weights_dtype.value} is not a serving format; use one of "
                         f"{', '.join(sorted(x.value for x in WEIGHT_DTYPES))}")
    if i.kv_dtype not in KV_DTYPES:
        raise InputError(f"KV cache dtype {i.kv_dtype.value} is not supported; use one of "
                         f"{', '.join(sorted(x.value for x in KV_DTYPES))}")
    S = i.prompt + i.generate
    if S > spec.max_context and not i.allow_longer:
        raise InputError(f"prompt + generate = {i.prompt} + {i.generate} = {S} tokens exceeds {spec.name}'s maximum "
                         f"context of {spec.max_context}; shorten them or pass `allow_longer` to extrapolate")
    if i.reserve_bytes >= i.memory_bytes:
        raise InputError(f"reserve ({g(i.reserve_bytes)} B) leaves no memory on a {g(i.memory_bytes)} B GPU")
    if i.gpus > 1 and i.link_bytes_per_s is None:
        raise InputError(f"{hw.name} has no interconnect bandwidth in its profile; pass `link_bandwidth` for "
                         f"tensor parallelism over {i.gpus} GPUs")
    hw.peak(i.compute_dtype)  # refuses a dtype the datasheet has no peak for, with the ones it has


def _workspace_per_token(spec: TransformerSpec, tp: int) -> float:
    f = spec.ffn_dim
    if spec.moe is not None:
        e = spec.moe
        routed = e.ffn_width_per_token
        f = max(f if spec.moe_layers < spec.layers else 0, routed)
    return (2 * spec.d_model + spec.ffn_matrices * f / tp) * ACT_BYTES


def _allreduce(d: Derivation, spec: TransformerSpec, i: InferenceInputs, tokens: int, what: str) -> float:
    """Time of the 2·L all-reduces of one forward pass over ``tokens`` tokens (0 on one GPU)."""
    tp = i.gpus
    if tp == 1:
        return 0.0
    assert i.link_bytes_per_s is not None
    size = d.add(f"all-reduce payload ({what})", f"tokens · h · {g(ACT_BYTES)} bytes",
                 f"{tokens} × {spec.d_model} × {g(ACT_BYTES)}", tokens * spec.d_model * ACT_BYTES, "B", SRC_TP)
    one = d.add(f"one ring all-reduce ({what})", "α + 2(TP−1)/TP · S / (link / 2)",
                f"{g(i.allreduce_latency_s)} + 2 × {tp - 1}/{tp} × {g(size)} / ({g(i.link_bytes_per_s)} / 2)",
                i.allreduce_latency_s + ring_allreduce_factor(tp) * size / (i.link_bytes_per_s / 2), "s",
                f"{SRC_RING}; link per direction = datasheet total / 2")
    return d.add(f"all-reduces per forward pass ({what})", "2 · L · one", f"2 × {spec.layers} × {g(one)}",
                 2 * spec.layers * one, "s", SRC_TP)


def _notes(spec: TransformerSpec, i: InferenceInputs, kv: KVCacheResult, first: PhaseCost, last: PhaseCost,
           crit: float | None, asym: float | None, ridge: float, max_b: int, fits: bool) -> list[str]:
    n = []
    if i.mfu == 1 and i.mbu == 1:
        n.append("MFU = MBU = 1: every time is the ideal lower bound; real servers reach roughly 0.5-0.8 of peak "
                 "bandwidth in decode (pass --mbu, --mfu).")
    if first.bound != last.bound:
        n.append(f"decode turns from {first.bound}-bound to {last.bound}-bound as the KV cache grows.")
    if crit is None:
        helps = "GQA/MQA, a shorter context or an fp8 cache help" if bytes_per_element(i.kv_dtype) > 1 else \
            "GQA/MQA or a shorter context help; the cache is already 1 byte per element"
        n.append(f"no batch makes decode compute-bound at this context: even as B grows, the KV reads alone give "
                 f"{asym:.3g} FLOP/B, below the ridge {ridge:.3g} ({helps}).")
    elif crit > max_b:
        n.append(f"decode would turn compute-bound above batch {crit:.0f}, but only {max_b} sequences fit.")
    if i.gpus > 1:
        n.append(f"tensor parallelism over {i.gpus} GPUs: {kv.shard.how}; all-reduces are not overlapped with "
                 f"compute; norms (replicated) are counted as if split.")
        n.append("the link is the GPU's total scale-up bandwidth: NVSwitch gives all of it to any peer, but a "
                 "point-to-point mesh (AMD Infinity Fabric: 7 links) gives one pair 1/7 of it, and TP past one node "
                 "crosses the slower scale-out network: pass --link-bandwidth for those.")
        if i.allreduce_latency_s == 0:
            n.append("all-reduce latency α = 0 (bandwidth term only); small decode all-reduces are latency-bound "
                     "in practice (~5-20 µs each on NVLink): pass --allreduce-latency.")
    tokens = i.batch * i.prompt
    if i.prefill_chunk is None:
        n.append(f"prefill of all {tokens:,} prompt tokens in one pass (--prefill-chunk none); serving engines chunk "
                 f"it by default (vLLM, SGLang: {DEFAULT_PREFILL_CHUNK} tokens per pass), which needs less workspace.")
    else:
        passes = math.ceil(tokens / i.prefill_chunk)
        how = ("the vLLM and SGLang default" if i.prefill_chunk == DEFAULT_PREFILL_CHUNK else "--prefill-chunk")
        n.append(f"prefill chunked at {i.prefill_chunk:,} tokens per pass ({how}): {tokens:,} prompt tokens in "
                 f"{passes} pass{'es' if passes > 1 else ''}; the workspace holds one chunk. --prefill-chunk none "
                 "prefills the whole batch at once.")
    if i.weights_dtype in (DType.int4, DType.int8, DType.fp4):
        n.append(f"{i.weights_dtype.value} weights are weight-only quantized (matmuls in {i.compute_dtype.value}); "
                 f"the embedding, LM head and norms stay 16-bit, as GPTQ/AWQ checkpoints keep them; group scales "
                 f"(~3% for int4 at group size 128) are not counted.")
    if spec.mla is not None:
        n.append("MLA: the cache holds the compressed latent (DeepSeek-V2 §2.1.2); attention FLOPs are counted per "
                 "head (d_qk, d_v) as if K and V were up-projected; the absorbed kernels that attend in the latent "
                 "do ~3× more attention FLOPs per cached position.")
    if not fits:
        n.append("does NOT fit: the times are what the GPU would take if memory allowed.")
    if i.prompt + i.generate > spec.max_context:
        n.append(f"context beyond the model's maximum ({spec.max_context}), allowed by --allow-longer.")
    return n
