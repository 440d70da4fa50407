"""KV cache: bytes per token (MHA / GQA / MQA / MLA), per sequence, per batch, and per GPU under TP.

At decode time each layer keeps the keys and values of every past position so they are not
recomputed; the cache is what makes decoding memory-bound, and MQA / GQA shrink it by the ratio of
query heads to KV heads (Shazeer 2019; Ainslie et al. 2023). Symbols as in napkin.specs.model:
L layers, a query heads, k KV heads, d head dim.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.errors import InputError
from napkin.results import Derivation, Result, g
from napkin.specs.dtypes import DType, bytes_per_element, parse_dtype
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_model
from napkin.validation import Inputs, PositiveInt, validated

SRC_KV = ("Pope et al. 2022, Efficiently Scaling Transformer Inference, §2 (memory costs: the KV cache) and "
          "§3.3 (multiquery attention): 2·L·k·d elements per token")
SRC_MQA = "Shazeer 2019, Fast Transformer Decoding: One Write-Head is All You Need, §2 (MQA: k = 1)"
SRC_GQA = "Ainslie et al. 2023, GQA: Training Generalized Multi-Query Transformer Models, §2 (k groups)"
SRC_MLA = ("DeepSeek-V2 §2.1.2-2.1.4 (MLA caches the compressed latent c_KV and the decoupled RoPE key: "
           "(d_c + d_h^R)·L elements per token); DeepSeek-V3 §2.1.1")
SRC_TP_KV = ("Shoeybi et al. 2019, Megatron-LM §3 (attention heads split across TP ranks); vLLM / Megatron-LM "
             "replicate a KV head on tp/k ranks when tp > k (MQA: on every rank)")

SRC_CHUNK = ("Meta 2025, Llama 4 (HF modeling_llama4, attention_chunk_size): a chunked layer attends only within its "
             "chunk of w positions, so its cache needs at most w keys and values (HF keeps a w-token window for it)")
SRC_WINDOW = ("Jiang et al. 2023 (Mistral 7B) §2, rolling buffer cache: a sliding-window layer keeps the last w "
              "keys and values")
SRC_SSM_STATE = ("Dao & Gu 2024 (Mamba-2): a fixed-size recurrent state per layer (H·P·N) and the conv window "
                 "((K − 1)·conv_dim), the same for any context; HF Mamba2Cache")

Attention = Literal["MHA", "GQA", "MQA", "MLA"]


def attention_kind(spec: TransformerSpec) -> Attention:
    if spec.mla is not None:
        return "MLA"
    k = spec.n_kv_heads
    return "MHA" if k == spec.heads else ("MQA" if k == 1 else "GQA")


def kv_elements_per_layer_token(spec: TransformerSpec) -> int:
    """Cached elements per token in one attention layer: 2·k·d (K and V), or d_c + d_h^R for MLA."""
    if spec.mla is not None:
        return spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim
    return 2 * spec.n_kv_heads * spec.d_head


def kv_elements_per_token(spec: TransformerSpec) -> int:
    """Cached elements per token over all attention layers: 2·L·k·d (K and V), or (d_c + d_h^R)·L for MLA.

    Hybrid stacks count their attention layers only. Sliding-window layers hold at most w tokens: kv_cache counts
    a sequence longer than the window."""
    return spec.attention_layers * kv_elements_per_layer_token(spec)


def ssm_state_elements(spec: TransformerSpec) -> int:
    """A Mamba stack's recurrent state per sequence, whatever its length: per Mamba-2 layer H·P·N (the SSM state)
    plus (K − 1)·conv_dim (the convolution's window), HF Mamba2Cache / NemotronH's HybridMambaAttentionDynamicCache;
    per Mamba-1 layer d_in·N plus (K − 1)·d_in."""
    if spec.block_pattern is None:
        return 0
    out = 0
    if spec.ssm is not None:
        m = spec.ssm
        out += spec.block_pattern.count("M") * (m.heads * m.head_dim * m.state_size + (m.conv_kernel - 1) * m.conv_dim)
    if spec.mamba is not None:  # Mamba-1 (HF MambaCache / Jamba's cache): d_in·N state and the (K − 1)·d_in window
        m1 = spec.mamba
        out += spec.block_pattern.count("S") * (m1.d_inner * m1.state_size + (m1.conv_kernel - 1) * m1.d_inner)
    return out


def kv_bytes_per_token(spec: TransformerSpec, kv_dtype: str | DType = DType.bf16) -> float:
    """Bytes of KV cache one token adds to one sequence (all layers, all KV heads, one GPU holding all)."""
    return kv_elements_per_token(spec) * bytes_per_element(kv_dtype)


class KVShard(BaseModel):
    """How tensor parallelism splits the KV heads (and so the cache) across GPUs."""

    model_config = ConfigDict(frozen=True)

    tp: int
    kv_heads: int
    kv_heads_per_gpu: int = Field(description="KV heads (MLA: latents) each GPU stores")
    replicas: int = Field(description="GPUs holding a copy of each KV head (1 = no replication)")
    fraction_per_gpu: float = Field(description="share of one sequence's KV cache one GPU stores")
    how: str


def shard_kv(spec: TransformerSpec, tp: int) -> KVShard:
    """Split the KV heads over ``tp`` GPUs; replicate when there are fewer KV heads than GPUs.

    - k divisible by tp: each GPU holds k/tp heads (Megatron-LM's head split).
    - tp divisible by k (MQA k = 1 is the common case): each GPU holds 1 head; every head is
      replicated on tp/k GPUs, so per-GPU KV bytes stop falling with tp.
    - otherwise: refused, since heads cannot be split evenly.
    MLA: the latent is shared by all heads and cannot be split by head, so every GPU holds all of it.
    """
    if tp < 1:
        raise InputError(f"tensor-parallel degree must be at least 1, got {tp}")
    if spec.heads % tp:
        raise InputError(f"{spec.name}: {tp} GPUs do not divide its {spec.heads} query heads; tensor parallelism "
                         f"splits heads evenly (try a divisor of {spec.heads}, e.g. {_divisors(spec.heads)})")
    if spec.mla is not None:
        return KVShard(tp=tp, kv_heads=1, kv_heads_per_gpu=1, replicas=tp, fraction_per_gpu=1.0,
                       how="MLA latent replicated on every GPU (it is shared by all heads)")
    k = spec.n_kv_heads
    if k % tp == 0:
        return KVShard(tp=tp, kv_heads=k, kv_heads_per_gpu=k // tp, replicas=1, fraction_per_gpu=1 / tp,
                       how=f"{k} KV heads split {k // tp} per GPU" if tp > 1 else "single GPU")
    if tp % k == 0:
        what = "MQA: the single KV head is" if k == 1 else f"each of the {k} KV heads is"
        return KVShard(tp=tp, kv_heads=k, kv_heads_per_gpu=1, replicas=tp // k, fraction_per_gpu=1 / k,
                       how=f"{what} replicated on {tp // k} GPUs (fewer KV heads than GPUs)")
    raise InputError(f"{spec.name}: {tp} GPUs cannot split its {k} KV heads evenly (tensor parallelism needs tp "
                     f"to divide the KV heads, or a multiple of them to replicate each; try one of "
                     f"{_divisors(k)} or a multiple of {k})")


def _divisors(n: int) -> str:
    return ", ".join(str(i) for i in range(1, n + 1) if n % i == 0 and i <= 16)


class KVCacheInputs(Inputs):
    model: str = Field(description="model catalog name")
    batch: PositiveInt = 1
    context: PositiveInt = Field(description="tokens per sequence held in the cache")
    kv_dtype: DType = DType.bf16
    tp: PositiveInt = 1


class KVCacheResult(Result):
    inputs: KVCacheInputs
    attention: Attention
    layers: int
    heads: int
    kv_heads: int = Field(description="k; MLA: 1 (one shared latent)")
    head_dim: int
    elements_per_token: int
    bytes_per_token: float = Field(description="one sequence, all layers")
    bytes_per_token_mha: float = Field(description="the same model with a KV head per query head")
    saving_vs_mha: float = Field(description="MHA bytes / these bytes (GQA/MQA: heads / kv_heads)")
    bytes_per_sequence: float
    sliding_window: int | None = Field(default=None, description="w: tokens a sliding-window layer keeps")
    sliding_layers: int = Field(default=0, description="attention layers that keep only the last w tokens")
    attention_layers: int = Field(default=0, description="layers with a KV cache (hybrids: the attention ones)")
    ssm_state_bytes_per_sequence: float = Field(default=0.0, description="Mamba-2 layers' fixed recurrent state")
    total_bytes: float = Field(description="whole batch, before tensor parallelism")
    shard: KVShard
    bytes_per_gpu: float = Field(description="what one GPU stores under tensor parallelism")


def kv_cache(spec: TransformerSpec | LinearSpec | str, context: int, batch: int = 1, *,
             kv_dtype: str | DType = DType.bf16, tp: int = 1, d: Derivation | None = None) -> KVCacheResult:
    """KV cache bytes for ``batch`` sequences of ``context`` tokens, with the derivation.

    Llama 2 7B, bf16: 2·32·32·128·2 = 524,288 B per token (0.5 MiB); Llama 3 70B (GQA 8): 327,680 B.
    Pass ``d`` to append the steps to a caller's derivation.
    """
    spec = as_model(spec, "spec")
    if not isinstance(spec, TransformerSpec):
        raise InputError(f"{spec.name} is not a transformer; a KV cache holds attention's keys and values")
    i = validated(KVCacheInputs, model=spec.name, batch=batch, context=context,
                  kv_dtype=parse_dtype(kv_dtype), tp=tp)
    d = d if d is not None else Derivation()
    first = len(d.steps)  # this result carries only its own steps, also when appending to a caller's
    kind = attention_kind(spec)
    L, a, b = spec.attention_layers, spec.heads, bytes_per_element(i.kv_dtype)
    src = {"MHA": SRC_KV, "GQA": f"{SRC_KV}; {SRC_GQA}", "MQA": f"{SRC_KV}; {SRC_MQA}", "MLA": SRC_MLA}[kind]
    if spec.mla is not None:
        m = spec.mla
        k, dh = 1, m.qk_nope_head_dim + m.qk_rope_head_dim
        per_tok = d.add(f"KV cache per token ({kind}, {i.kv_dtype.value})", "(d_c + d_h^R) · L · bytes",
                        f"({m.kv_lora_rank} + {m.qk_rope_head_dim}) × {L} × {g(b)}",
                        kv_bytes_per_token(spec, i.kv_dtype), "B", src)
        # DeepSeek-V2 Table 1 compares with MHA of per-head dim d_h (= qk_nope_head_dim): 2·n_h·d_h·l.
        mha = 2 * L * a * m.qk_nope_head_dim * b
        d.add("the same heads without compression (MHA)", "2 · L · a · d_h · bytes",
              f"2 × {L} × {a} × {m.qk_nope_head_dim} × {g(b)}", mha, "B", "DeepSeek-V2 §2.1, Table 1")
    else:
        k, dh = spec.n_kv_heads, spec.d_head
        per_tok = d.add(f"KV cache per token ({kind}, {i.kv_dtype.value})", "2 · L · k · d · bytes  (K and V)",
                        f"2 × {L} × {k} × {dh} × {g(b)}", kv_bytes_per_token(spec, i.kv_dtype), "B", src)
        mha = 2 * L * a * dh * b
        if kind != "MHA":
            d.add("the same model with MHA (k = a)", "2 · L · a · d · bytes", f"2 × {L} × {a} × {dh} × {g(b)}",
                  mha, "B", SRC_KV)
    saving = mha / per_tok if per_tok else 1.0
    if kind != "MHA" and per_tok:
        d.add(f"{kind} saving vs MHA", "a / k" if kind != "MLA" else "MHA bytes / MLA bytes",
              f"{a} / {k}" if kind != "MLA" else f"{g(mha)} / {g(per_tok)}", saving, "ratio",
              {"GQA": SRC_GQA, "MQA": SRC_MQA, "MLA": SRC_MLA}[kind])
    L_sw, w = spec.sliding_layers, spec.sliding_window
    ssm_bytes = ssm_state_elements(spec) * b
    if L_sw and w is not None:
        per_layer = per_tok / L if L else 0.0
        kept = min(i.context, w)
        what, src = (("chunked layers keep at most one chunk of w tokens", SRC_CHUNK) if spec.chunked_attention
                     else ("sliding-window layers keep the last w tokens", SRC_WINDOW))
        per_seq = d.add(f"KV cache per sequence ({what})",
                        "bytes/token/layer · (L_full · s + L_window · min(s, w))",
                        f"{g(per_layer)} × ({L - L_sw} × {i.context} + {L_sw} × {kept})",
                        per_layer * ((L - L_sw) * i.context + L_sw * kept), "B", src)
    else:
        per_seq = d.add("KV cache per sequence", "bytes/token · s", f"{g(per_tok)} × {i.context}",
                        per_tok * i.context, "B", SRC_KV)
    if ssm_bytes:
        assert spec.block_pattern is not None
        parts = []
        if spec.ssm is not None:
            ssm = spec.ssm
            parts.append(f"{spec.block_pattern.count('M')} × ({ssm.heads} × {ssm.head_dim} × {ssm.state_size} + "
                         f"{ssm.conv_kernel - 1} × {ssm.conv_dim})")
        if spec.mamba is not None:
            m1 = spec.mamba
            parts.append(f"{spec.block_pattern.count('S')} × ({m1.d_inner} × {m1.state_size} + "
                         f"{m1.conv_kernel - 1} × {m1.d_inner})")
        d.add("Mamba state per sequence (any length)", "L_ssm · (state + (K − 1)·conv channels) · bytes",
              f"({' + '.join(parts)}) × {g(b)}", ssm_bytes, "B", SRC_SSM_STATE)
        per_seq = d.add("cache per sequence (KV + SSM state)", "KV + state", f"{g(per_seq)} + {g(ssm_bytes)}",
                        per_seq + ssm_bytes, "B", SRC_SSM_STATE)
    total = d.add("KV cache, whole batch", "bytes/sequence · B", f"{g(per_seq)} × {i.batch}", per_seq * i.batch, "B",
                  SRC_KV)
    shard = shard_kv(spec, i.tp)
    per_gpu = total
    if i.tp > 1:
        per_gpu = d.add(f"KV cache per GPU (TP {i.tp}: {shard.how})", "total · (KV heads per GPU) / k",
                        f"{g(total)} × {shard.kv_heads_per_gpu} / {shard.kv_heads}",
                        total * shard.fraction_per_gpu, "B", SRC_TP_KV)
    return KVCacheResult(inputs=i, attention=kind, layers=L, heads=a, kv_heads=k, head_dim=dh,
                         elements_per_token=kv_elements_per_token(spec), bytes_per_token=per_tok,
                         bytes_per_token_mha=mha, saving_vs_mha=saving, bytes_per_sequence=per_seq,
                         sliding_window=w if L_sw else None, sliding_layers=L_sw, attention_layers=L,
                         ssm_state_bytes_per_sequence=ssm_bytes, total_bytes=total,
                         shard=shard, bytes_per_gpu=per_gpu, steps=d.steps[first:])
