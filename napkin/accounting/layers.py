"""The layer plan: one description of a model's layers that every count in napkin reads.

A transformer is a stack of L blocks of at most two kinds (dense-FFN and MoE layers, placed by the spec),
plus the embedding before them and the final norm and LM head after. For each kind the plan lists every
weight matrix as a ``Gemm``: its shape, how many copies a layer holds (routed experts), how many of them a
token runs through (top-k), how Megatron-LM splits it over tensor-parallel ranks, and whether expert
parallelism splits it. Parameter counts (params.py), FLOPs (flops.py), the roofline, the GEMM benchmark,
activations and pipeline staging (step_time.py, memory.py) all read this plan, so the shape of a layer is
written once.

Shapes follow the reference implementations (HF transformers' GPT-2, Llama, Mistral, Mixtral, Qwen2,
OLMo 2, DeepSeek-V3 modeling files; nanoGPT); tests/test_params_torch.py checks them against ``numel()``.
Tensor-parallel splits follow Shoeybi et al. 2019 (Megatron-LM) §3: Q, K, V and the FFN's up/gate
projections are column-parallel (fan_out / t), the attention output and FFN down projections are
row-parallel (fan_in / t); the router is replicated; the LM head is split over the vocabulary.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from napkin.specs.model import TransformerSpec

Split = Literal["column", "row", "vocab", "none"]


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


class Gemm(NamedTuple):
    """One weight matrix of a layer as the GEMMs of a step see it."""

    name: str = ""          # e.g. attention.q, ffn.up, ffn.experts.down, head
    component: str = ""     # the parameter / FLOP component it adds to (attention.q, ffn.dense, ffn.experts, head)
    linear: Linear = Linear(1, 1)
    copies: int = 1         # instances a layer holds (routed experts: E)
    active: int = 1         # instances one token runs through (routed experts: top_k)
    split: Split = "none"   # how tensor parallelism divides it
    expert: bool = False    # divided over the expert-parallel ranks

    @property
    def params(self) -> int:
        return self.copies * self.linear.params

    @property
    def flops_per_token(self) -> int:
        """Forward FLOPs one token spends in this matrix: 2·in·out per active copy (CS336 lecture 2)."""
        return 2 * self.active * self.linear.weights

    def local(self, tp: int) -> tuple[int, int]:
        """(fan_in, fan_out) on one tensor-parallel rank."""
        i, o = self.linear.fan_in, self.linear.fan_out
        if self.split == "column" or self.split == "vocab":
            return i, -(-o // tp)
        if self.split == "row":
            return -(-i // tp), o
        return i, o


Mixer = Literal["attention", "latent", "window", "chunked", "mamba2", "mamba1", "none"]
Ffn = Literal["dense", "moe", "none"]
ATTENTION_MIXERS: tuple[Mixer, ...] = ("attention", "latent", "window", "chunked")  # the mixers with an attention core

_MIXER_WORD = {"attention": "full-attention ", "latent": "", "window": "sliding-window ",
               "chunked": "chunked-attention ", "mamba2": "Mamba-2 ", "mamba1": "Mamba ",
               "none": ""}

SRC_CAUSAL = "causal mask: token i attends to i+1 positions, mean (s+1)/2 (what FlashAttention-style kernels skip)"
SRC_WINDOW = ("Beltagy et al. 2020 (Longformer) §3.1 / Mistral 7B §2: a sliding-window layer attends to the last w "
              "positions, so its attention is O(s·w), not O(s²)")
SRC_CHUNK = ("Meta 2025, Llama 4 (HF modeling_llama4, attention_chunk_size): a chunked layer's token attends only "
             "to the earlier positions of its own chunk of w, so the mean context is ≤ (w + 1)/2")


def mean_context(seq: float, causal: bool) -> float:
    """Positions the average token attends to in a sequence of `seq`: (s + 1)/2 under a causal mask, else s."""
    return (seq + 1) / 2 if causal else float(seq)


def window_context(seq: float, window: int | None, causal: bool, chunked: bool = False) -> float:
    """Positions the average token attends to in a sliding-window layer of window w.

    causal: token i sees min(i + 1, w) positions; the mean over a sequence of s is (s + 1)/2 while s ≤ w, else
    (w(w + 1)/2 + (s − w)·w)/s. Not causal (one token decoding over a cache of s entries): min(s, w).
    chunked (Llama 4's chunked attention, chunks of w): token i sees i mod w + 1 positions; over s = n·w + r the
    mean is (n·w(w + 1)/2 + r(r + 1)/2)/s. Not causal: the token at position s sees (s − 1) mod w + 1.
    """
    if window is None:
        return mean_context(seq, causal)
    if chunked:  # SRC_CHUNK: HF modeling_llama4's chunked mask, position i attends to i − (i mod w) .. i
        if seq <= 0:
            return 0.0
        if not causal:
            return float((math.ceil(seq) - 1) % window + 1)
        n, r = divmod(seq, window)
        return (n * window * (window + 1) / 2 + r * (r + 1) / 2) / seq
    if not causal:
        return float(min(seq, window))
    if seq <= window:
        return (seq + 1) / 2
    return (window * (window + 1) / 2 + (seq - window) * window) / seq


class LayerKind(NamedTuple):
    """The layers of one kind: what mixes positions, what the FFN is, how many such layers, the matrices each holds.

    Every count in napkin reads a layer through its kind: parameters and FLOPs (its GEMMs and ``context``), the
    kernel times (kernels.layer_cost), the saved activations (activations.layer_terms) and the step-time and
    memory sums over pipeline stages, all keyed by ``key``. A plain transformer has one kind per (attention span,
    FFN) pair that occurs (dense and MoE layers; full and sliding-window layers); a hybrid stack (``block_pattern``)
    has one kind per block type, each one mixer or one FFN: Mamba-2, attention, a dense MLP or an MoE.
    """

    mixer: Mixer  # attention (full), latent (MLA), window (sliding), chunked (Llama 4), mamba2, mamba1, or none
    ffn: Ffn
    count: int  # type: ignore[assignment]  # shadows tuple.count(), which no caller of a LayerKind uses
    gemms: tuple[Gemm, ...]
    norm_params: int  # the block's norms (2: pre-attention and pre-MLP; 4: Gemma's pre and post; 1: parallel/hybrid)
    attention_norm_params: int  # parameters inside the mixer outside its GEMMs (q/k norms, MLA norms, sinks, SSM)
    extras: tuple[tuple[str, int], ...] = ()  # those parameters by component (q/k norms, sinks, SSM conv, ...)
    window: int | None = None  # w of a window / chunked mixer

    @property
    def key(self) -> str:
        """The kind's name in every table keyed by kind: its mixer and its FFN (e.g. ``window+moe``)."""
        return f"{self.mixer}+{self.ffn}"

    @property
    def moe(self) -> bool:
        return self.ffn == "moe"

    @property
    def attends(self) -> bool:
        """The mixer has an attention core (QKᵀ and ·V over a context)."""
        return self.mixer in ATTENTION_MIXERS

    @property
    def label(self) -> str:
        if self.mixer == "none":
            return "MoE layer" if self.moe else "MLP layer"
        if self.ffn == "none":
            return "attention layer" if self.mixer in ("attention", "latent") else f"{_MIXER_WORD[self.mixer]}layer"
        return f"{_MIXER_WORD[self.mixer]}{'MoE' if self.moe else 'dense'} layer"

    def context(self, seq: float, causal: bool = True) -> float:
        """Positions the mean token of a sequence of ``seq`` attends to in this layer (0 without attention): the one
        rule for the attention FLOPs (flops.py) and the attention kernel time (kernels.py)."""
        if not self.attends:
            return 0.0
        if self.window is None:
            return mean_context(seq, causal)
        return window_context(seq, self.window, causal, self.mixer == "chunked")

    @property
    def params(self) -> int:
        """Parameters of one layer of this kind (counted once per kind: a planner asks thousands of times)."""
        return _kind_params(self)[0]

    @property
    def expert_params(self) -> int:
        """Parameters of one layer's routed experts (the part expert parallelism splits)."""
        return _kind_params(self)[1]


_KIND_PARAMS: dict[int, tuple[LayerKind, tuple[int, int]]] = {}


def _kind_params(k: LayerKind) -> tuple[int, int]:
    hit = _KIND_PARAMS.get(id(k))
    if hit is not None and hit[0] is k:
        return hit[1]
    if len(_KIND_PARAMS) > 4096:
        _KIND_PARAMS.clear()
    got = (sum(x.params for x in k.gemms) + k.norm_params + k.attention_norm_params,
           sum(x.params for x in k.gemms if x.expert))
    _KIND_PARAMS[id(k)] = (k, got)
    return got


class LayerPlan(NamedTuple):
    """A transformer's layers, embedding and head, as one description."""

    spec: TransformerSpec
    kinds: tuple[LayerKind, ...]
    attention_norms: dict[str, int]  # norms inside every attention block, by the component that holds them
    head: Gemm
    embedding_params: dict[str, int]  # embedding.tokens, embedding.positions
    final_norm_params: int
    prefix: tuple[tuple[int, ...], ...] = ()  # prefix[k][i]: layers of kinds[k] among layers 0..i−1

    def kind_at(self, layer: int) -> LayerKind:
        """The kind of layer ``layer`` (0-based)."""
        return next(k for k, pre in zip(self.kinds, self.prefix, strict=True) if pre[layer + 1] > pre[layer])

    def weight_flops_per_token(self) -> dict[str, int]:
        """Forward FLOPs one token spends in the weight matrices, by component, summed over the layers (head last)."""
        out: dict[str, int] = {}
        for k in self.kinds:
            for gm in k.gemms:
                out[gm.component] = out.get(gm.component, 0) + k.count * gm.flops_per_token
        out["head"] = self.head.flops_per_token
        return out

    def counts_in(self, lo: int, hi: int) -> list[tuple[LayerKind, int]]:
        """(kind, layers of that kind) among layers lo..hi−1: a pipeline stage's share, from the prefix counts."""
        L = len(self.prefix[0]) - 1 if self.prefix else 0
        lo, hi = max(0, min(lo, L)), max(0, min(hi, L))
        out = []
        for k, pre in zip(self.kinds, self.prefix, strict=True):
            n = pre[hi] - pre[lo] if hi > lo else 0
            if n:
                out.append((k, n))
        return out

    @property
    def hybrid(self) -> bool:
        """A stack of single-mixer blocks (block_pattern), not attention + FFN in every layer."""
        return self.spec.block_pattern is not None


def norm_params(spec: TransformerSpec, width: int) -> int:
    return width * (2 if spec.has_norm_bias else 1)


def attention_linears(spec: TransformerSpec) -> dict[str, Linear]:
    """The projections of one attention block, by component name."""
    h, a = spec.d_model, spec.heads
    if spec.mla is not None:
        m = spec.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        out: dict[str, Linear] = {}
        b = spec.attention_bias == "all"  # modeling_deepseek_v2/v3: attention_bias on q_a, kv_a and o only
        if m.q_lora_rank:
            out["q_a"] = Linear(h, m.q_lora_rank, b)  # down-projection (its RMSNorm: attention_norms)
            out["q_b"] = Linear(m.q_lora_rank, a * qk)
        else:
            out["q"] = Linear(h, a * qk)
        out["kv_a"] = Linear(h, m.kv_lora_rank + m.qk_rope_head_dim, b)  # latent + the shared RoPE key
        out["kv_b"] = Linear(m.kv_lora_rank, a * (m.qk_nope_head_dim + m.v_head_dim))
        out["o"] = Linear(a * m.v_head_dim, h, b)
        return out
    k, d = spec.n_kv_heads, spec.d_head
    qkv_b = spec.attention_bias in ("qkv", "all")
    return {"q": Linear(h, a * d, qkv_b), "k": Linear(h, k * d, qkv_b), "v": Linear(h, k * d, qkv_b),
            "o": Linear(a * d, h, spec.attention_bias == "all")}


# How Megatron-LM splits each attention projection over TP ranks. MLA (Megatron-core's MLA): the down-projections
# q_a and kv_a are replicated, the up-projections q_b / kv_b column-parallel over heads, o row-parallel.
_ATTN_SPLIT: dict[str, Split] = {"q": "column", "k": "column", "v": "column", "o": "row", "q_a": "none",
                                 "q_b": "column", "kv_a": "none", "kv_b": "column"}


def attention_norms(spec: TransformerSpec) -> dict[str, int]:
    """Norm parameters inside one attention block, keyed by the component that holds them."""
    if spec.mla is not None:
        m = spec.mla
        out = {"kv_a": norm_params(spec, m.kv_lora_rank)}  # kv_a_layernorm on the latent
        if m.q_lora_rank:
            out["q_a"] = norm_params(spec, m.q_lora_rank)  # q_a_layernorm
        return out
    a, k, d = spec.heads, spec.n_kv_heads, spec.d_head
    out = {}
    if spec.qk_norm == "per_head":  # one norm of width d shared by the heads (Qwen3, Gemma 3)
        out["qk_norm"] = norm_params(spec, d) * 2
    elif spec.qk_norm == "full":  # over the whole projection (OLMo 2, OLMoE)
        out["qk_norm"] = norm_params(spec, a * d) + norm_params(spec, k * d)
    if spec.attention_sinks:  # modeling_gpt_oss: self.sinks = nn.Parameter(torch.empty(num_attention_heads))
        out["sinks"] = a
    return out


def attention_head_dims(spec: TransformerSpec) -> tuple[int, int, int]:
    """(a, d_qk, d_v): query heads, the width of q·k per head, the width of v per head."""
    if spec.mla is not None:
        m = spec.mla
        return spec.heads, m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    return spec.heads, spec.d_head, spec.d_head


def ffn_linears(spec: TransformerSpec, width: int) -> list[Linear]:
    """One FFN (dense layer, or one expert) of inner width f: [gate, up, down] or [up, down]."""
    h, b = spec.d_model, spec.mlp_bias
    up = [Linear(h, width, b)] * (spec.ffn_matrices - 1)
    return [*up, Linear(width, h, b)]


def ffn_names(spec: TransformerSpec) -> list[str]:
    """Names of ffn_linears' matrices, in its order."""
    return ["gate", "up", "down"] if spec.ffn_matrices == 3 else ["up", "down"]


def router_linear(spec: TransformerSpec) -> Linear:
    assert spec.moe is not None
    return Linear(spec.d_model, spec.moe.experts, spec.moe.router_bias)


def _ffn_gemms(spec: TransformerSpec, prefix: str, component: str, width: int, copies: int, active: int,
               expert: bool) -> list[Gemm]:
    return [Gemm(f"{prefix}.{n}", component, lin, copies, active, "row" if n == "down" else "column", expert)
            for n, lin in zip(ffn_names(spec), ffn_linears(spec, width), strict=True)]


def _moe_gemms(spec: TransformerSpec) -> list[Gemm]:
    assert spec.moe is not None
    e = spec.moe
    ffn = [Gemm("ffn.router", "ffn.router", router_linear(spec))]
    ffn += _ffn_gemms(spec, "ffn.experts", "ffn.experts", e.expert_ffn_dim, e.experts, e.top_k, True)
    if e.shared_experts:
        ffn += _ffn_gemms(spec, "ffn.shared", "ffn.shared_experts", e.shared_width,
                          e.shared_experts, e.shared_experts, False)
        if e.shared_expert_gate:  # modeling_qwen2_moe: shared_expert_gate = nn.Linear(h, 1, bias=False)
            ffn.append(Gemm("ffn.shared_expert_gate", "ffn.shared_expert_gate", Linear(spec.d_model, 1)))
    return ffn


def _attention_gemms(spec: TransformerSpec) -> list[Gemm]:
    return [Gemm(f"attention.{n}", f"attention.{n}", lin, split=_ATTN_SPLIT.get(n, "none"))
            for n, lin in attention_linears(spec).items()]


def _attention_mixer(spec: TransformerSpec, sliding: bool) -> tuple[Mixer, int | None]:
    """The mixer of an attention layer and its window: full, latent (MLA), sliding-window or chunked."""
    if sliding and spec.sliding_window is not None:
        return ("chunked" if spec.chunked_attention else "window"), spec.sliding_window
    return ("latent" if spec.mla is not None else "attention"), None


def _kind(spec: TransformerSpec, sliding: bool, moe: bool, count: int) -> LayerKind:
    attn = _attention_gemms(spec)
    if moe and spec.moe is not None:
        ffn = _moe_gemms(spec)
    else:
        ffn = _ffn_gemms(spec, "ffn", "ffn.dense", spec.ffn_dim, 1, 1, False)
    extras = attention_norms(spec)
    mixer, window = _attention_mixer(spec, sliding)
    return LayerKind(mixer=mixer, ffn="moe" if moe else "dense", count=count, gemms=tuple(attn + ffn),
                     norm_params=spec.norms_per_layer * norm_params(spec, spec.d_model),
                     attention_norm_params=sum(extras.values()),
                     extras=tuple((f"attention.{k}", v) for k, v in extras.items()), window=window)


# Mamba-2 (Dao & Gu 2024 §7; HF modeling_mamba2 / modeling_nemotron_h Mamba2Mixer): in_proj and out_proj are GEMMs;
# the depthwise conv1d, the per-head dt_bias / A_log / D and the gated RMSNorm are the other parameters.
SRC_MAMBA2 = ("Dao & Gu 2024, Transformers are SSMs (Mamba-2) §7; HF modeling_mamba2: in_proj h→2·d_in+2·G·N+H, "
              "conv1d over d_in+2·G·N channels, dt_bias/A_log/D per head, gated RMSNorm d_in, out_proj d_in→h")


def ssm_linears(spec: TransformerSpec) -> dict[str, Linear]:
    """The two projections of a Mamba-2 mixer."""
    m = spec.ssm
    assert m is not None
    h = spec.d_model
    return {"in_proj": Linear(h, 2 * m.d_inner + 2 * m.groups * m.state_size + m.heads, m.proj_bias),
            "out_proj": Linear(m.d_inner, h, m.proj_bias)}


def ssm_extras(spec: TransformerSpec) -> dict[str, int]:
    """A Mamba-2 mixer's parameters outside its GEMMs, by component."""
    m = spec.ssm
    assert m is not None
    return {"ssm.conv": m.conv_dim * m.conv_kernel + (m.conv_dim if m.conv_bias else 0),
            "ssm.heads": 3 * m.heads,  # dt_bias, A_log, D
            "ssm.norm": m.d_inner}  # the gated RMSNorm's weight


# Mamba-1 (Gu & Dao 2023 §3.4; HF modeling_mamba / modeling_jamba MambaMixer): in_proj, x_proj, dt_proj and out_proj
# are GEMMs; the depthwise conv1d, A_log (d_in × N), D and Jamba's Δ/B/C norms are the other parameters.
SRC_MAMBA1 = ("Gu & Dao 2023, Mamba §3.4; HF modeling_jamba JambaMambaMixer: in_proj h→2·d_in, conv1d over d_in, "
              "x_proj d_in→r+2N, dt_proj r→d_in (+bias), A_log d_in·N, D d_in, out_proj d_in→h (Jamba: Δ/B/C norms)")


def mamba1_linears(spec: TransformerSpec) -> dict[str, Linear]:
    """The four projections of a Mamba-1 mixer."""
    m = spec.mamba
    assert m is not None
    h, d = spec.d_model, m.d_inner
    return {"in_proj": Linear(h, 2 * d, m.proj_bias), "x_proj": Linear(d, m.dt_rank + 2 * m.state_size),
            "dt_proj": Linear(m.dt_rank, d, True), "out_proj": Linear(d, h, m.proj_bias)}


def mamba1_extras(spec: TransformerSpec) -> dict[str, int]:
    """A Mamba-1 mixer's parameters outside its GEMMs, by component."""
    m = spec.mamba
    assert m is not None
    d = m.d_inner
    out = {"ssm.conv": d * m.conv_kernel + (d if m.conv_bias else 0), "ssm.A_D": d * m.state_size + d}
    if m.inner_norms:
        out["ssm.norm"] = m.dt_rank + 2 * m.state_size  # dt_layernorm, b_layernorm, c_layernorm weights
    return out


_MAMBA1_SPLIT: dict[str, Split] = {"in_proj": "column", "x_proj": "row", "dt_proj": "column", "out_proj": "row"}


def _hybrid_kind(spec: TransformerSpec, char: str, count: int) -> LayerKind:
    norm = norm_params(spec, spec.d_model)  # one pre-norm per block
    if char == "S":
        gemms = [Gemm(f"ssm.{n}", f"ssm.{n}", lin, split=_MAMBA1_SPLIT[n]) for n, lin in mamba1_linears(spec).items()]
        extras = mamba1_extras(spec)
        return LayerKind(mixer="mamba1", ffn="none", count=count, gemms=tuple(gemms), norm_params=norm,
                         attention_norm_params=sum(extras.values()), extras=tuple(extras.items()))
    if char == "M":
        gemms = [Gemm(f"ssm.{n}", f"ssm.{n}", lin, split="column" if n == "in_proj" else "row")
                 for n, lin in ssm_linears(spec).items()]
        extras = ssm_extras(spec)
        return LayerKind(mixer="mamba2", ffn="none", count=count, gemms=tuple(gemms), norm_params=norm,
                         attention_norm_params=sum(extras.values()), extras=tuple(extras.items()))
    if char == "*":
        extras = {f"attention.{k}": v for k, v in attention_norms(spec).items()}
        mixer, window = _attention_mixer(spec, spec.sliding_window is not None)
        return LayerKind(mixer=mixer, ffn="none", count=count, gemms=tuple(_attention_gemms(spec)), norm_params=norm,
                         attention_norm_params=sum(extras.values()), extras=tuple(extras.items()), window=window)
    if char == "E":
        return LayerKind(mixer="none", ffn="moe", count=count, gemms=tuple(_moe_gemms(spec)), norm_params=norm,
                         attention_norm_params=0)
    return LayerKind(mixer="none", ffn="dense", count=count,
                     gemms=tuple(_ffn_gemms(spec, "ffn", "ffn.dense", spec.ffn_dim, 1, 1, False)),
                     norm_params=norm, attention_norm_params=0)


_PLANS: dict[int, LayerPlan] = {}  # by id(spec); specs are frozen, and the entry keeps its spec alive


def layer_plan(spec: TransformerSpec) -> LayerPlan:
    """The plan of ``spec`` (cached per spec object: a planner asks for it thousands of times)."""
    hit = _PLANS.get(id(spec))
    if hit is not None and hit.spec is spec:
        return hit
    if len(_PLANS) > 256:
        _PLANS.clear()
    plan = _PLANS[id(spec)] = _build(spec)
    return plan


_HYBRID_ORDER = "MS*-E"  # the order of a hybrid's kinds (and so of its components in every breakdown)


def _layer_keys(spec: TransformerSpec) -> list[tuple[int, ...]]:
    """One sort key per layer naming its kind: (block char's rank,) in a hybrid, else (MoE, sliding)."""
    if spec.block_pattern is not None:
        return [(_HYBRID_ORDER.index(c),) for c in spec.block_pattern]
    return [(int(spec.is_moe_layer(i)), spec.sliding_layers_between(i, i + 1)) for i in range(spec.layers)]


def _build(spec: TransformerSpec) -> LayerPlan:
    h, V = spec.d_model, spec.vocab
    keys = _layer_keys(spec)
    order = sorted(set(keys))
    counts = {k: 0 for k in order}
    prefix = {k: [0] for k in order}
    for key in keys:
        counts[key] += 1
        for k in order:
            prefix[k].append(counts[k])
    if spec.block_pattern is not None:
        kinds = tuple(_hybrid_kind(spec, _HYBRID_ORDER[k[0]], counts[k]) for k in order)
    else:
        kinds = tuple(_kind(spec, bool(k[1]), bool(k[0]), counts[k]) for k in order)
    emb = {"embedding.tokens": V * h}
    if spec.positions == "learned":
        emb["embedding.positions"] = spec.max_context * h
    return LayerPlan(spec=spec, kinds=kinds, attention_norms=attention_norms(spec),
                     head=Gemm("head", "head", Linear(h, V), split="vocab"), embedding_params=emb,
                     final_norm_params=norm_params(spec, h), prefix=tuple(tuple(prefix[k]) for k in order))
