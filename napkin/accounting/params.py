"""Parameter counts per component: the one source of truth every other module imports.

Shapes follow the reference implementations (HF transformers' GPT-2, Llama, Mistral, Mixtral, Qwen2,
OLMo 2, DeepSeek-V3 modeling files; nanoGPT). Each count is checked against ``numel()`` of a torch
model built on the meta device (tests/test_params_torch.py).
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import Field

from napkin.results import Derivation, Result, g
from napkin.specs.model import LinearSpec, TransformerSpec

SRC_ATTN = "Vaswani et al. 2017 §3.2; GQA: Ainslie et al. 2023 §2 (k·d-wide K and V projections)"
SRC_MLA = "DeepSeek-V2 §2.1 (MLA), DeepSeek-V3 §2.1.1; HF modeling_deepseek_v3 (q_a/q_b, kv_a/kv_b projections)"
SRC_FFN = "Vaswani et al. 2017 §3.3 (2 matrices); Shazeer 2020, GLU Variants, eq. 5-6 (3 matrices)"
SRC_MOE = "Fedus et al. 2022 (Switch) §2.1 router h·E; DeepSeek-V3 §2.1.2 (shared + routed experts)"
SRC_EMB = "Radford et al. 2019 (GPT-2) / nanoGPT: wte V·h, wpe s_max·h; tied head reuses wte"
SRC_NORM = "Ba et al. 2016 (LayerNorm: weight + bias); Zhang & Sennrich 2019 (RMSNorm: weight only)"
SRC_LINEAR = "CS336 lecture 2: deep linear network, params D²·L + D"


class ParamCount(Result):
    model: str
    components: dict[str, int] = Field(description="parameters per component, summed over layers; adds to total")
    total: int
    active: int = Field(description="parameters used per token (MoE: top-k routed + shared experts)")
    embedding: int = Field(description="token (and learned position) embeddings")
    non_embedding: int = Field(description="total minus embeddings (Kaplan et al. 2020's N)")


class Linear(NamedTuple):
    """One weight matrix (fan_in × fan_out) and its optional bias: the shape both params and FLOPs use."""

    fan_in: int
    fan_out: int
    bias: bool = False

    @property
    def weights(self) -> int:
        return self.fan_in * self.fan_out

    @property
    def params(self) -> int:
        return self.weights + (self.fan_out if self.bias else 0)


def norm_params(spec: TransformerSpec, width: int) -> int:
    return width * (2 if spec.has_norm_bias else 1)


def attention_linears(spec: TransformerSpec) -> dict[str, Linear]:
    """The projections of one attention block, by component name."""
    h, a = spec.d_model, spec.heads
    if spec.mla is not None:
        m = spec.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        out: dict[str, Linear] = {}
        if m.q_lora_rank:
            out["q_a"] = Linear(h, m.q_lora_rank)  # down-projection (its RMSNorm: attention_norms)
            out["q_b"] = Linear(m.q_lora_rank, a * qk)
        else:
            out["q"] = Linear(h, a * qk)
        out["kv_a"] = Linear(h, m.kv_lora_rank + m.qk_rope_head_dim)  # latent + the shared RoPE key
        out["kv_b"] = Linear(m.kv_lora_rank, a * (m.qk_nope_head_dim + m.v_head_dim))
        out["o"] = Linear(a * m.v_head_dim, h)
        return out
    k, d = spec.n_kv_heads, spec.d_head
    qkv_b = spec.attention_bias in ("qkv", "all")
    return {"q": Linear(h, a * d, qkv_b), "k": Linear(h, k * d, qkv_b), "v": Linear(h, k * d, qkv_b),
            "o": Linear(a * d, h, spec.attention_bias == "all")}


def attention_norms(spec: TransformerSpec) -> dict[str, int]:
    """Norm parameters inside one attention block, keyed by the component that holds them."""
    if spec.mla is not None:
        m = spec.mla
        out = {"kv_a": norm_params(spec, m.kv_lora_rank)}  # kv_a_layernorm on the latent
        if m.q_lora_rank:
            out["q_a"] = norm_params(spec, m.q_lora_rank)  # q_a_layernorm
        return out
    a, k, d = spec.heads, spec.n_kv_heads, spec.d_head
    if spec.qk_norm == "per_head":  # one norm of width d shared by the heads (Qwen3, Gemma 3)
        return {"qk_norm": norm_params(spec, d) * 2}
    if spec.qk_norm == "full":  # over the whole projection (OLMo 2)
        return {"qk_norm": norm_params(spec, a * d) + norm_params(spec, k * d)}
    return {}


def attention_head_dims(spec: TransformerSpec) -> tuple[int, int, int]:
    """(a, d_qk, d_v): query heads, the width of q·k per head, the width of v per head."""
    if spec.mla is not None:
        m = spec.mla
        return spec.heads, m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    return spec.heads, spec.d_head, spec.d_head


def attention_params(spec: TransformerSpec) -> dict[str, int]:
    """Parameters of one attention block, per projection (weights + biases + the norms it holds)."""
    out = {name: lin.params for name, lin in attention_linears(spec).items()}
    for name, n in attention_norms(spec).items():
        out[name] = out.get(name, 0) + n
    return out


def ffn_linears(spec: TransformerSpec, width: int) -> list[Linear]:
    """One FFN (dense layer, or one expert) of inner width f: [gate, up, down] or [up, down]."""
    h, b = spec.d_model, spec.mlp_bias
    up = [Linear(h, width, b)] * (spec.ffn_matrices - 1)
    return [*up, Linear(width, h, b)]


def ffn_matrix_params(spec: TransformerSpec, width: int) -> int:
    """One FFN (dense layer, or one expert) of inner width f: m·h·f weights (+ biases)."""
    return sum(lin.params for lin in ffn_linears(spec, width))


def router_linear(spec: TransformerSpec) -> Linear:
    assert spec.moe is not None
    return Linear(spec.d_model, spec.moe.experts, spec.moe.router_bias)


def moe_params(spec: TransformerSpec) -> dict[str, int]:
    """One MoE FFN block: router, routed experts, shared experts."""
    assert spec.moe is not None
    e = spec.moe
    out = {
        "router": router_linear(spec).params,
        "experts": e.experts * ffn_matrix_params(spec, e.expert_ffn_dim),
    }
    if e.shared_experts:
        out["shared_experts"] = e.shared_experts * ffn_matrix_params(spec, e.shared_ffn_dim or e.expert_ffn_dim)
    return out


def count_params(spec: TransformerSpec | LinearSpec) -> ParamCount:
    """Total, active and per-component parameter counts, with one derivation step per component."""
    if isinstance(spec, LinearSpec):
        return _linear(spec)
    d = Derivation()
    c: dict[str, int] = {}
    L, h, V = spec.layers, spec.d_model, spec.vocab

    def put(key: str, value: int, formula: str, numbers: str, source: str) -> None:
        c[key] = value
        d.add(key, formula, numbers, value, "params", source)

    put("embedding.tokens", V * h, "V·h", f"{V} × {h}", SRC_EMB)
    if spec.positions == "learned":
        put("embedding.positions", spec.max_context * h, "s_max·h", f"{spec.max_context} × {h}", SRC_EMB)
    for name, n in attention_params(spec).items():
        put(f"attention.{name}", L * n, f"L · {name}", f"{L} × {n}", SRC_MLA if spec.mla else SRC_ATTN)
    n_moe = spec.moe_layers
    n_dense = L - n_moe
    if n_dense:
        n = ffn_matrix_params(spec, spec.ffn_dim)
        put("ffn.dense", n_dense * n, f"L_dense · {spec.ffn_matrices}·h·f" + (" (+ biases)" if spec.mlp_bias else ""),
            f"{n_dense} × {spec.ffn_matrices} × {h} × {spec.ffn_dim}", SRC_FFN)
    if n_moe:
        for name, n in moe_params(spec).items():
            put(f"ffn.{name}", n_moe * n, f"L_moe · {name}", f"{n_moe} × {n}", SRC_MOE)
    per_layer_norms = 2 * norm_params(spec, h)
    put("norms.layers", L * per_layer_norms, "L · 2 norms · h" + (" · 2 (weight, bias)" if spec.has_norm_bias else ""),
        f"{L} × {per_layer_norms}", SRC_NORM)
    put("norms.final", norm_params(spec, h), "h" + (" · 2" if spec.has_norm_bias else ""), str(h), SRC_NORM)
    if not spec.tied_embeddings:
        put("head", V * h, "V·h (untied LM head)", f"{V} × {h}", SRC_EMB)
    total = sum(c.values())
    d.add("total parameters", "Σ components", " + ".join(g(v) for v in c.values()), total, "params", "sum")
    active = total
    if spec.moe is not None:
        e = spec.moe
        idle = n_moe * (e.experts - e.top_k) * ffn_matrix_params(spec, e.expert_ffn_dim)
        active = total - idle
        d.add("active parameters", "total − L_moe·(E − top_k)·expert", f"{g(total)} − {n_moe} × ({e.experts} − {e.top_k})"
              f" × {ffn_matrix_params(spec, e.expert_ffn_dim)}", active, "params", SRC_MOE)
    emb = c["embedding.tokens"] + c.get("embedding.positions", 0)
    d.add("non-embedding parameters", "total − embeddings", f"{g(total)} − {g(emb)}", total - emb, "params",
          "Kaplan et al. 2020 §2.1 (N excludes embeddings)")
    return ParamCount(model=spec.name, components=c, total=total, active=active, embedding=emb,
                      non_embedding=total - emb, steps=d.steps)


def _linear(spec: LinearSpec) -> ParamCount:
    d = Derivation()
    D, L = spec.d_model, spec.layers
    layers = d.add("layers", "D²·L", f"{D}² × {L}", D * D * L, "params", SRC_LINEAR)
    head = d.add("head", "D·out", f"{D} × {spec.out_dim}", D * spec.out_dim, "params", SRC_LINEAR)
    total = int(layers + head)
    d.add("total parameters", "D²·L + D·out", f"{g(layers)} + {g(head)}", total, "params", SRC_LINEAR)
    return ParamCount(model=spec.name, components={"layers": int(layers), "head": int(head)}, total=total, active=total,
                      embedding=0, non_embedding=total, steps=d.steps)
