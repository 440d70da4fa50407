"""Exact matmul FLOPs of an architecture, per component, forward and backward; 6ND beside them.

Every matrix shape comes from napkin.accounting.params (attention_linears, ffn_linears, router_linear,
attention_head_dims): the same helpers that count the parameters. What is counted is what
``torch.utils.flop_counter.FlopCounterMode`` counts: matmuls at 2 FLOPs per multiply-add. Embedding
lookups, norms, activations, softmax, RoPE, residual adds and bias adds are left out (O(h) per token
against O(h²) for the matmuls).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.compute import six_nd
from napkin.accounting.layers import (
    SRC_CAUSAL,
    SRC_CHUNK,
    SRC_MAMBA1,
    SRC_MAMBA2,
    SRC_WINDOW,
    Linear,
    attention_head_dims,
    attention_linears,
    layer_plan,
    mamba1_linears,
    mean_context,
    ssm_linears,
    window_context,
)
from napkin.accounting.params import count_params
from napkin.errors import InputError
from napkin.results import DEFINITION, KAPLAN, LECTURE, PALM, Derivation, Result, g, minus
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_model
from napkin.validation import MAX_EXACT_INT, Inputs, Recompute

RECOMPUTE_CHOICES = ("none", "selective", "full")

SRC_MATMUL = f"{LECTURE}: (m×k)@(k×n) costs 2·m·k·n FLOPs (one multiply and one add per term)"
SRC_ATTN = "Korthikanti et al. 2022, App. A: QKᵀ 2·b·s²·h and attention over V 2·b·s²·h per layer"
SRC_SCAN = ("Dao & Gu 2024 (Mamba-2) §6: the SSM's recurrent form per token and head: h ← A·h + B·xᵀ (N·P "
            "multiply-adds), y = C·h (N·P)")
SRC_SCAN1 = ("Gu & Dao 2023 (Mamba) §3.2, Algorithm 2: per token and channel h ← exp(Δ·A)·h + Δ·B·x (N multiply-adds), "
             "y = C·h (N); the recurrent form, as for Mamba-2")
SRC_BWD = f"{KAPLAN}; backward = 2 × forward for matmuls (gradients w.r.t. inputs and weights)"
SRC_SELECTIVE = "Korthikanti et al. 2022, §5: selective recomputation redoes QKᵀ, softmax and attention over V"
SRC_FULL = ("Narayanan et al. 2021 (Megatron-LM), eq. 3: full recomputation adds one forward of every layer "
            "(not the LM head): 96·B·s·l·h²·(1 + s/6h + V/16lh)")
SRC_PALM = f"{PALM}: 6N + 12·L·H·Q·T FLOPs per token (attention not halved)"
SRC_LINEAR = f"{LECTURE}: deep linear network, forward 2·B·(D²·L + D·K), backward 2 × forward"

ATTENTION_CORE = ("attention.scores", "attention.values")


class Term(NamedTuple):
    """One component's forward FLOPs for one token, with its formula."""

    name: str
    flops: float
    formula: str
    substituted: str
    source: str


class ComponentFlops(BaseModel):
    model_config = ConfigDict(frozen=True)

    forward: float
    backward: float
    recompute: float = Field(description="forward work done again in the backward pass (hardware FLOPs only)")

    @property
    def model(self) -> float:
        return self.forward + self.backward

    @property
    def hardware(self) -> float:
        return self.forward + self.backward + self.recompute


class FlopInputs(Inputs):
    model: str
    tokens: float
    seq: int
    causal: bool
    recompute: Recompute


class FlopCount(Result):
    inputs: FlopInputs
    model: str
    tokens: float = Field(description="D: tokens (linear net: examples B)")
    per: Literal["token", "example"] = Field(default="token", description="what `tokens` counts")
    seq: int = Field(description="s: sequence length (1 for a linear net)")
    causal: bool
    recompute: Recompute
    params: int
    active_params: int
    components: dict[str, ComponentFlops]
    forward_flops: float
    backward_flops: float
    recompute_flops: float
    model_flops: float = Field(description="forward + backward (what MFU counts)")
    hardware_flops: float = Field(description="model FLOPs + recomputation (what HFU counts)")
    forward_flops_per_token: float
    model_flops_per_token: float
    hardware_flops_per_token: float
    attention_flops: float = Field(description="model FLOPs of QKᵀ and attention over V")
    attention_share: float = Field(description="attention_flops / model_flops")
    six_nd: float = Field(description="6·N·D with N the total parameters (Kaplan 2020; the lecture's napkin)")
    six_n_active_d: float = Field(description="6·N_active·D (MoE: parameters a token touches)")
    palm_flops: float = Field(description="(6·N_active + 12·L·H·Q·s)·D, PaLM's MFU numerator (attention not halved)")


_SYMBOLS = {  # formula symbols for each projection's (fan_in, fan_out), by component name
    "q": ("h", "a·d"), "k": ("h", "k·d"), "v": ("h", "k·d"), "o": ("a·d", "h"),
    "q_a": ("h", "r_q"), "q_b": ("r_q", "a·d_qk"), "kv_a": ("h", "r_kv + d_rope"), "kv_b": ("r_kv", "a·(d_nope + d_v)"),
}


def _ssm_terms(F: dict[str, int], n: int, linears: dict[str, Linear], conv: tuple[int, str], K: int,
               state: tuple[int, str, str, str], src: str, src_scan: str) -> list[Term]:
    """An SSM mixer's terms over its n layers: its projections (GEMMs), its depthwise conv over `conv` channels,
    and its recurrent scan: per token a state update and a read-out over the `state` elements (2 FLOPs each)."""
    (C, c_sym), (S, s_sym, update, s_num) = conv, state
    out = [Term(f"ssm.{name}", F[f"ssm.{name}"], f"2·L_ssm·{lin.fan_in}·{lin.fan_out}",
                f"2 × {n} × {lin.fan_in} × {lin.fan_out}", f"{SRC_MATMUL}; {src}") for name, lin in linears.items()]
    out.append(Term("ssm.conv", 2 * n * C * K, f"2·L_ssm·{c_sym}·K (depthwise conv)", f"2 × {n} × {C} × {K}", src))
    out.append(Term("ssm.scan", 2 * n * 2 * S, f"2·L_ssm·2·{s_sym} (state update {update} and read-out C·h per "
                    "token)", f"2 × {n} × 2 × {s_num}", src_scan))
    return out


def _terms(spec: TransformerSpec, seq: float, causal: bool, masked: bool = True) -> list[Term]:
    """Forward FLOPs of one token per component in a sequence of `seq` positions (causal: the mean token; not
    causal: a token over `seq` cached positions), each attending layer over its own context (LayerKind.context).
    masked=False: every layer over all `seq` positions, as an unfused kernel computes the s×s scores and then
    masks them (what FlopCounterMode counts, and kernels.py's time without flash)."""
    h, V = spec.d_model, spec.vocab
    plan = layer_plan(spec)
    F = plan.weight_flops_per_token()  # the values; the formulas below say them in symbols
    L_at = spec.attention_layers
    la = "L_attn" if plan.hybrid else "L"
    terms = []
    if L_at:
        for name, lin in attention_linears(spec).items():
            i, o = _SYMBOLS.get(name, ("in", "out"))
            if spec.mla is not None and name in ("q", "o"):
                i, o = ("h", "a·d_qk") if name == "q" else ("a·d_v", "h")
            terms.append(Term(f"attention.{name}", F[f"attention.{name}"], f"2·{la}·{i}·{o}",
                              f"2 × {L_at} × {lin.fan_in} × {lin.fan_out}", SRC_MATMUL))
        a, d_qk, d_v = attention_head_dims(spec)
        # each attending kind's mean context from its own rule (LayerKind.context: the kernels read the same)
        spans = [(k.count, k.context(seq, causal) if masked else float(seq), masked and k.window is not None)
                 for k in plan.kinds if k.attends]
        L_sw = sum(n for n, _, w in spans if w)
        L_full = L_at - L_sw
        context = next((c for _, c, w in spans if not w), mean_context(seq, causal))
        cw = next((c for _, c, w in spans if w), context)
        for key, dd, what in (("attention.scores", d_qk, "q·kᵀ"), ("attention.values", d_v, "softmax · v")):
            flops = 2 * a * dd * sum(n * c for n, c, _ in spans)
            if L_sw:
                formula = f"2·a·d·(L_full·c + L_window·c_w) ({what}; c_w: positions inside the window)"
                subst = f"2 × {a} × {dd} × ({L_full} × {g(context)} + {L_sw} × {g(cw)})"
                src = f"{SRC_ATTN}; {SRC_WINDOW}"
            else:
                formula = f"2·{la}·a·{'d_qk' if dd == d_qk and key.endswith('scores') else 'd_v'}·c ({what} over c " \
                          "positions)"
                subst = f"2 × {L_at} × {a} × {dd} × {g(context)}"
                src = SRC_ATTN
            terms.append(Term(key, flops, formula, subst, src))
    pattern = spec.block_pattern or ""
    if spec.ssm is not None and "M" in pattern:
        m = spec.ssm
        terms += _ssm_terms(F, pattern.count("M"), ssm_linears(spec), (m.conv_dim, "(d_in + 2·G·N)"), m.conv_kernel,
                            (m.heads * m.head_dim * m.state_size, "H·P·N", "B·x", f"{m.heads} × {m.head_dim} × "
                             f"{m.state_size}"), SRC_MAMBA2, SRC_SCAN)
    if spec.mamba is not None and "S" in pattern:
        m1 = spec.mamba
        terms += _ssm_terms(F, pattern.count("S"), mamba1_linears(spec), (m1.d_inner, "d_in"), m1.conv_kernel,
                            (m1.d_inner * m1.state_size, "d_in·N", "Δ·B·x", f"{m1.d_inner} × {m1.state_size}"),
                            SRC_MAMBA1, SRC_SCAN1)
    n_moe = sum(k.count for k in plan.kinds if k.moe)
    n_dense = sum(k.count for k in plan.kinds if k.ffn == "dense")
    m_ = spec.ffn_matrices
    if n_dense:
        terms.append(Term("ffn.dense", F["ffn.dense"], f"2·L_dense·{m_}·h·f",
                          f"2 × {n_dense} × {m_} × {h} × {spec.ffn_dim}", SRC_MATMUL))
    if n_moe and spec.moe is not None:
        e = spec.moe
        src = "Fedus et al. 2022 (Switch) §2: each token runs top_k experts; DeepSeek-V3 §2.1.2 (shared experts)"
        terms.append(Term("ffn.router", F["ffn.router"], "2·L_moe·h·E",
                          f"2 × {n_moe} × {h} × {e.experts}", src))
        terms.append(Term("ffn.experts", F["ffn.experts"],
                          f"2·L_moe·top_k·{m_}·h·f_e", f"2 × {n_moe} × {e.top_k} × {m_} × {h} × {e.expert_ffn_dim}",
                          src))
        if e.shared_experts:
            f_s = e.shared_width
            terms.append(Term("ffn.shared_experts", F["ffn.shared_experts"],
                              f"2·L_moe·n_shared·{m_}·h·f_s",
                              f"2 × {n_moe} × {e.shared_experts} × {m_} × {h} × {f_s}", src))
            if e.shared_expert_gate:
                terms.append(Term("ffn.shared_expert_gate", F["ffn.shared_expert_gate"], "2·L_moe·h·1",
                                  f"2 × {n_moe} × {h}", "HF modeling_qwen2_moe (shared_expert_gate)"))
    terms.append(Term("head", 2 * h * V, "2·h·V (LM head, tied or not)", f"2 × {h} × {V}", SRC_MATMUL))
    return terms


def forward_flops_per_token(spec: TransformerSpec | LinearSpec | str, context: float, *,
                            causal: bool = True) -> dict[str, float]:
    """Forward FLOPs of one token per component, in a sequence of `context` positions. Sum for the total.

    causal=False: the token attends to all `context` positions: decoding with a KV cache of `context`
    entries (this token included) costs 2·2·a·d·context per layer in attention.
    causal=True: the mean token of a causal sequence of length `context`, which attends to (context + 1)/2
    positions; `context` tokens × this = the sequence's forward FLOPs (prefill, training).
    """
    spec = as_model(spec, "spec")
    if not isinstance(spec, TransformerSpec):
        raise InputError(f"forward_flops_per_token needs a transformer spec, got kind '{spec.kind}'")
    if context < 0:
        raise InputError(f"context must be at least 0 positions, got {context}")
    return {t.name: t.flops for t in _terms(spec, context, causal)}


# A bound that says why: the largest corpora are ~1e14 tokens; beyond 1e30 a product with a parameter count
# (up to ~1e13) and the FLOPs per token leaves the float range and every figure would print as inf.
MAX_TOKENS = 1e30


def _check(tokens: float, seq: float, recompute: str) -> None:  # seq: any number a caller passed, checked whole
    if isinstance(tokens, bool) or not isinstance(tokens, (int, float)):
        raise TypeError(f"tokens must be a number, not {type(tokens).__name__}")
    try:
        value = float(tokens)
    except OverflowError:  # an int beyond the float range (~1.8e308)
        value = math.inf
    if not tokens > 0 or math.isnan(value):
        raise InputError(f"tokens must be a positive number, got {tokens}")
    if value > MAX_TOKENS:
        raise InputError(f"tokens must be at most {MAX_TOKENS:g} (the largest corpora are ~1e14 tokens; beyond it "
                         f"the FLOP counts leave the float range), got {value:g}")
    if isinstance(seq, bool) or not isinstance(seq, (int, float)):
        raise TypeError(f"seq must be a whole number of positions, not {type(seq).__name__}")
    if isinstance(seq, float) and not seq.is_integer():
        raise InputError(f"seq must be a whole number of positions, got {seq}")
    if seq < 1 or seq > MAX_EXACT_INT:
        shown = seq if seq < 1 else f"a number above 2^53 = {MAX_EXACT_INT:,}"
        raise InputError(f"seq must be a positive whole number of positions (at most 2^53), got {shown}")
    if recompute not in RECOMPUTE_CHOICES:
        raise InputError(f"recompute must be one of {', '.join(RECOMPUTE_CHOICES)}, got '{recompute}'")


def count_flops(spec: TransformerSpec | LinearSpec, tokens: float, seq: int = 1, *, causal: bool = True,
                recompute: Recompute = "none") -> FlopCount:
    """Training FLOPs of `tokens` tokens in sequences of `seq`: exact per component, beside 6ND.

    Model FLOPs = forward + backward (backward = 2 × forward). Hardware FLOPs add recomputation:
    'selective' redoes the attention core's forward, 'full' every layer's forward (not the LM head).
    A linear net (the Cruncher) takes `tokens` = examples B; `seq` is ignored.
    """
    spec = as_model(spec, "spec")
    _check(tokens, seq, recompute)
    d = Derivation()
    pc = count_params(spec)
    if isinstance(spec, LinearSpec):
        terms = _linear_terms(spec)
        seq, causal = 1, False
    else:
        ctx = mean_context(seq, causal)
        if causal:
            d.add("mean attended positions", "c = (s + 1) / 2", f"({seq} + 1) / 2", ctx, "positions", SRC_CAUSAL)
        else:
            d.add("attended positions", "c = s (no causal halving)", str(seq), ctx, "positions",
                  "Korthikanti et al. 2022, App. A")
        if spec.sliding_window is not None and spec.sliding_layers and causal:
            chunked = spec.chunked_attention
            d.add(f"mean attended positions, {'chunked' if chunked else 'sliding-window'} layers",
                          "c_w = Σ (i mod w + 1) / s" if chunked else "c_w = Σ min(i, w) / s",
                          f"w = {spec.sliding_window}, s = {seq}",
                          window_context(seq, spec.sliding_window, True, chunked), "positions",
                          SRC_CHUNK if chunked else SRC_WINDOW)
        terms = _terms(spec, seq, causal, masked=causal)
    D = tokens
    per: Literal["token", "example"] = "example" if isinstance(spec, LinearSpec) else "token"
    comps: dict[str, ComponentFlops] = {}
    for t in terms:
        fwd = t.flops * D
        rec = 0.0
        if recompute == "selective" and t.name in ATTENTION_CORE or recompute == "full" and t.name != "head":
            rec = fwd
        comps[t.name] = ComponentFlops(forward=fwd, backward=2 * fwd, recompute=rec)
        d.add(f"{t.name} forward per {per}", t.formula, t.substituted, t.flops, "FLOP", t.source)
    per_tok = sum(t.flops for t in terms)
    d.add(f"forward per {per}", "Σ components", " + ".join(g(t.flops) for t in terms), per_tok, "FLOP", "sum")
    sym = "B" if per == "example" else "D"
    fwd = d.add("forward", f"{sym} · forward per {per}", f"{g(D)} × {g(per_tok)}", D * per_tok, "FLOP", DEFINITION)
    bwd = d.add("backward", "2 · forward", f"2 × {g(fwd)}", 2 * fwd, "FLOP", SRC_BWD)
    rec = sum(c.recompute for c in comps.values())
    if recompute == "selective":
        core = sum(comps[n].forward for n in ATTENTION_CORE if n in comps)
        d.add("recompute (selective)", "forward of QKᵀ and attention over V", g(core), rec, "FLOP", SRC_SELECTIVE)
    elif recompute == "full":
        d.add("recompute (full)", "forward − LM head forward", minus(fwd, comps['head'].forward), rec, "FLOP",
              SRC_FULL)
    model = d.add("model FLOPs", "forward + backward = 3 · forward", f"{g(fwd)} + {g(bwd)}", fwd + bwd, "FLOP", SRC_BWD)
    hw = d.add("hardware FLOPs", "model FLOPs + recompute", f"{g(model)} + {g(rec)}", model + rec, "FLOP",
               SRC_FULL if recompute != "none" else f"{DEFINITION} (no recomputation)")
    attn = sum(comps[n].model for n in ATTENTION_CORE if n in comps)
    if isinstance(spec, LinearSpec):
        share = 0.0
        six = six_act = palm = d.add("6·B·params", "6 · params · B", f"6 × {g(pc.params)} × {g(D)}",
                                     six_nd(pc.params, D), "FLOP", SRC_LINEAR)
    else:
        share = d.add("attention share", "(QKᵀ + attention over V) / model FLOPs", f"{g(attn)} / {g(model)}",
                      attn / model, "fraction", SRC_ATTN)
        six = d.add("6ND", "6 · N · D", f"6 × {g(pc.params)} × {g(D)}", six_nd(pc.params, D), "FLOP", KAPLAN)
        six_act = six
        if pc.active_params != pc.params:
            six_act = d.add("6·N_active·D", "6 · N_active · D", f"6 × {g(pc.active_params)} × {g(D)}",
                            six_nd(pc.active_params, D), "FLOP", KAPLAN + "; active parameters for MoE")
        a, d_qk, d_v = attention_head_dims(spec)
        L = spec.attention_layers  # PaLM App. B: attention 12·L·H·Q·T per token (H·Q = a·d; d_qk + d_v = 2Q)
        palm = d.add("PaLM model FLOPs", "(6·N_active + 6·L·a·(d_qk + d_v)·s) · D  (= 12·L·H·Q·T)",
                     f"(6 × {g(pc.active_params)} + 6 × {L} × {a} × ({d_qk} + {d_v}) × {seq}) × {g(D)}",
                     (6 * pc.active_params + 6 * L * a * (d_qk + d_v) * seq) * D, "FLOP", SRC_PALM)
    d.add("exact / 6ND", "model FLOPs / 6ND", f"{g(model)} / {g(six)}", model / six, "ratio", DEFINITION)
    notes = []
    if isinstance(spec, TransformerSpec):
        if seq > spec.max_context:
            notes.append(f"seq {seq} is longer than the model's max context ({spec.max_context}).")
        notes.append("exact = matmuls only (as FlopCounterMode counts): embedding lookups, norms, softmax and "
                     "activations are left out; 6ND also counts the embedding matrix as if it were a matmul.")
    return FlopCount(
        inputs=FlopInputs(model=spec.name, tokens=D, seq=seq, causal=causal, recompute=recompute),
        model=spec.name, tokens=D, per=per, seq=seq, causal=causal, recompute=recompute, params=pc.params,
        active_params=pc.active_params, components=comps, forward_flops=fwd, backward_flops=bwd, recompute_flops=rec,
        model_flops=model, hardware_flops=hw, forward_flops_per_token=per_tok, model_flops_per_token=model / D,
        hardware_flops_per_token=hw / D, attention_flops=attn, attention_share=share, six_nd=six,
        six_n_active_d=six_act, palm_flops=palm, steps=d.steps, notes=notes,
    )


def _linear_terms(spec: LinearSpec) -> list[Term]:
    D, L, K = spec.d_model, spec.layers, spec.out_dim
    out = []
    if L:
        out.append(Term("layers", 2 * L * D * D, "2·L·D² (per example)", f"2 × {L} × {D}²", SRC_LINEAR))
    out.append(Term("head", 2 * D * K, "2·D·K (per example)", f"2 × {D} × {K}", SRC_LINEAR))
    return out


def training_flops(spec: TransformerSpec | LinearSpec, *, tokens: float | None = None, batch: int | None = None,
                   seq: int | None = None, causal: bool = True, recompute: Recompute = "none") -> FlopCount:
    """`napkin flops`: tokens given directly, or as batch × seq; seq defaults to the model's pre-training length.

    A linear net takes the batch B (examples) as --tokens or --batch; it has no sequence.
    """
    spec = as_model(spec, "spec")
    if tokens is not None and batch is not None:
        raise InputError("give `tokens` D or `batch` B (D = B·seq), not both")
    if tokens is None and batch is None:
        raise InputError("give `tokens` D (training tokens; linear net: examples B), or `batch` with `seq`")
    if batch is not None and batch < 1:
        raise InputError(f"`batch` must be a positive whole number, got {batch}")
    note = None
    if isinstance(spec, LinearSpec):
        s = 1
    elif seq is None:
        s, note = spec.default_seq()
    else:
        s = seq
    D = tokens if tokens is not None else float(batch or 0) * s  # linear net: s = 1, so D = B
    out = count_flops(spec, D, s, causal=causal, recompute=recompute)
    if note:
        out = out.model_copy(update={"notes": [note, *out.notes]})
    return out
