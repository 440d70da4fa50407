"""Parameter counts per component: the one source of truth every other module imports.

Shapes follow the reference implementations (HF transformers' GPT-2, Llama, Mistral, Mixtral, Qwen2,
OLMo 2, DeepSeek-V3 modeling files; nanoGPT). Each count is checked against ``numel()`` of a torch
model built on the meta device (tests/test_params_torch.py).
"""

from __future__ import annotations

from pydantic import Field

from napkin.accounting.layers import SRC_MAMBA1, ffn_linears, layer_plan
from napkin.results import Derivation, Result, g, minus
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_model
from napkin.validation import Inputs

SRC_ATTN = "Vaswani et al. 2017 §3.2; GQA: Ainslie et al. 2023 §2 (k·d-wide K and V projections)"
SRC_MLA = "DeepSeek-V2 §2.1 (MLA), DeepSeek-V3 §2.1.1; HF modeling_deepseek_v3 (q_a/q_b, kv_a/kv_b projections)"
SRC_FFN = "Vaswani et al. 2017 §3.3 (2 matrices); Shazeer 2020, GLU Variants, eq. 5-6 (3 matrices)"
SRC_MOE = "Fedus et al. 2022 (Switch) §2.1 router h·E; DeepSeek-V3 §2.1.2 (shared + routed experts)"
SRC_EMB = "Radford et al. 2019 (GPT-2) / nanoGPT: wte V·h, wpe s_max·h; tied head reuses wte"
SRC_NORM = "Ba et al. 2016 (LayerNorm: weight + bias); Zhang & Sennrich 2019 (RMSNorm: weight only)"
SRC_LINEAR = "CS336 lecture 2: deep linear network, params D²·L + D"
SRC_NORM_GEMMA = ("Gemma 2 report §2 (Team Gemma 2024): RMSNorm on the input and the output of each sub-layer, "
                  "4 per block; HF modeling_gemma2")
SRC_SSM = ("Dao & Gu 2024 (Mamba-2) §7; HF modeling_mamba2: conv1d (d_in+2GN)·K (+ bias), dt_bias/A_log/D per head, "
           "gated norm d_in")


class ParamInputs(Inputs):
    model: str


class ParamCount(Result):
    inputs: ParamInputs
    model: str
    components: dict[str, int] = Field(description="parameters per component, summed over layers; adds to total")
    params: int = Field(description="total parameters")
    active_params: int = Field(description="parameters used per token (MoE: top-k routed + shared experts)")
    embedding: int = Field(description="token (and learned position) embeddings")
    non_embedding: int = Field(description="total minus embeddings (Kaplan et al. 2020's N)")
    active_non_embedding: int = Field(default=0, description="active minus embeddings: the 'active' figure of MoE "
                                      "model cards (gpt-oss-120b: 5.1 B), which leave out the table a token reads "
                                      "one row of")


def ffn_matrix_params(spec: TransformerSpec, width: int) -> int:
    """One FFN (dense layer, or one expert) of inner width f: m·h·f weights (+ biases)."""
    return sum(lin.params for lin in ffn_linears(spec, width))


def _formula(spec: TransformerSpec, component: str) -> tuple[str, str]:
    """(formula, source) of one component's per-layer count, in the paper's symbols."""
    if component.startswith("attention."):
        n = "L_attn" if spec.block_pattern is not None else "L"
        return f"{n} · {component.split('.', 1)[1]}", SRC_MLA if spec.mla else SRC_ATTN
    if component.startswith("ssm."):
        return f"L_ssm · {component.split('.', 1)[1]}", SRC_MAMBA1 if spec.mamba is not None else SRC_SSM
    if component == "ffn.dense":
        return f"L_dense · {spec.ffn_matrices}·h·f" + (" (+ biases)" if spec.mlp_bias else ""), SRC_FFN
    return f"L_moe · {component.split('.', 1)[1]}", SRC_MOE


_COUNTS: dict[int, tuple[TransformerSpec | LinearSpec, ParamCount]] = {}  # by id(spec): results are frozen


def count_params(spec: TransformerSpec | LinearSpec) -> ParamCount:
    """Total, active and per-component parameter counts, with one derivation step per component (cached per spec)."""
    spec = as_model(spec, "spec")
    hit = _COUNTS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_COUNTS) > 256:
        _COUNTS.clear()
    out = _count(spec)
    _COUNTS[id(spec)] = (spec, out)
    return out


def _count(spec: TransformerSpec | LinearSpec) -> ParamCount:
    if isinstance(spec, LinearSpec):
        return _linear(spec)
    d = Derivation()
    c: dict[str, int] = {}
    L, h, V = spec.layers, spec.d_model, spec.vocab

    def put(key: str, value: int, formula: str, numbers: str, source: str) -> None:
        c[key] = value
        d.add(key, formula, numbers, value, "params", source)

    plan = layer_plan(spec)
    for key, n in plan.embedding_params.items():
        put(key, n, "V·h" if key == "embedding.tokens" else "s_max·h",
            f"{V} × {h}" if key == "embedding.tokens" else f"{spec.max_context} × {h}", SRC_EMB)
    # per-layer components, summed over the layer kinds that hold them (attention: every layer)
    per_layer: dict[str, list[tuple[int, int]]] = {}
    for kind in plan.kinds:
        comp: dict[str, int] = {}
        for gm in kind.gemms:
            comp[gm.component] = comp.get(gm.component, 0) + gm.params
        for name, n in kind.extras:  # q/k norms, sinks, MLA latent norms, the SSM's conv/heads/norm
            comp[name] = comp.get(name, 0) + n
        for key, n in comp.items():
            per_layer.setdefault(key, []).append((kind.count, n))
    for key, parts in sorted(per_layer.items(), key=lambda kv: not kv[0].startswith("attention.")):
        formula, src = _formula(spec, key)
        if len({n for _, n in parts}) == 1:  # the same in every kind (attention): one product
            parts = [(sum(k for k, _ in parts), parts[0][1])]
        put(key, sum(k * n for k, n in parts), formula, " + ".join(f"{k} × {n}" for k, n in parts), src)
    per_layer_norms = plan.kinds[0].norm_params
    n_norms = 1 if plan.hybrid else spec.norms_per_layer
    put("norms.layers", L * per_layer_norms,
        f"L · {n_norms} norm{'s' if n_norms > 1 else ''} · h" + (" · 2 (weight, bias)" if spec.has_norm_bias else ""),
        f"{L} × {per_layer_norms}", SRC_NORM_GEMMA if n_norms == 4 else SRC_NORM)
    put("norms.final", plan.final_norm_params, "h" + (" · 2" if spec.has_norm_bias else ""), str(h), SRC_NORM)
    if not spec.tied_embeddings:
        put("head", plan.head.params, "V·h (untied LM head)", f"{V} × {h}", SRC_EMB)
    total = sum(c.values())
    d.add("total parameters", "Σ components", " + ".join(g(v) for v in c.values()), total, "params", "sum")
    active = total
    if spec.moe is not None:
        e = spec.moe
        n_moe = sum(k.count for k in plan.kinds if k.moe)
        idle = n_moe * (e.experts - e.top_k) * ffn_matrix_params(spec, e.expert_ffn_dim)
        active = total - idle
        d.add("active parameters", "total − L_moe·(E − top_k)·expert",
              f"{g(total)} − {n_moe} × ({e.experts} − {e.top_k})"
              f" × {ffn_matrix_params(spec, e.expert_ffn_dim)}", active, "params", SRC_MOE)
    emb = c["embedding.tokens"] + c.get("embedding.positions", 0)
    d.add("non-embedding parameters", "total − embeddings", minus(total, emb), total - emb, "params",
          "Kaplan et al. 2020 §2.1 (N excludes embeddings)")
    return ParamCount(inputs=ParamInputs(model=spec.name), model=spec.name, components=c, params=total,
                      active_params=active, embedding=emb, non_embedding=total - emb,
                      active_non_embedding=active - emb, steps=d.steps)


def _linear(spec: LinearSpec) -> ParamCount:
    d = Derivation()
    D, L = spec.d_model, spec.layers
    layers = d.add("layers", "D²·L", f"{D}² × {L}", D * D * L, "params", SRC_LINEAR)
    head = d.add("head", "D·out", f"{D} × {spec.out_dim}", D * spec.out_dim, "params", SRC_LINEAR)
    total = int(layers + head)
    d.add("total parameters", "D²·L + D·out", f"{g(layers)} + {g(head)}", total, "params", SRC_LINEAR)
    return ParamCount(inputs=ParamInputs(model=spec.name), model=spec.name,
                      components={"layers": int(layers), "head": int(head)}, params=total,
                      active_params=total, embedding=0, non_embedding=total, active_non_embedding=total,
                      steps=d.steps)
