"""Plain-torch reference models built from napkin specs: the "reality" napkin's counts are checked against.

- ``build_model(spec)``: a decoder-only transformer for a TransformerSpec (MHA/GQA/MQA, MLA, plain or gated
  FFN, MoE with top-k routing and shared experts, learned/rotary/ALiBi positions, LayerNorm/RMSNorm,
  biases, tied head). ``forward(input_ids[b, s]) -> logits[b, s, V]``.
- ``build_linear(spec)``: CS336 lecture 2's deep linear network (the "Cruncher"). ``forward(x[b, D]) -> [b, out]``.
- ``tiny_spec(**overrides)``: a small valid TransformerSpec for CPU tests.

Written from the specs' fields, independently of napkin.accounting (it is what that module is checked
against). Attention is explicit matmuls (q @ kᵀ, softmax, @ v) so FlopCounterMode sees every FLOP;
``model.flash = True`` switches to ``F.scaled_dot_product_attention`` (on CPU FlopCounterMode does not count
its attention FLOPs: count with flash=False), GQA-native (``enable_gqa``) on torch >= 2.5. ``model.causal``
toggles the mask (the counter never halves). RoPE's cos/sin tables are built once per forward, for all layers.
Parameter names follow count_params' component keys; ``param_breakdown(model)`` sums numel() per key.

This module imports torch at the top: only tests and napkin.bench code import it, never the calculators.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napkin.bench.reference_specs import component_of, param_breakdown, tiny_spec  # noqa: F401 (re-exported)
from napkin.specs.model import LinearSpec, TransformerSpec

ROPE_THETA = 10_000.0  # Su et al. 2021 (RoFormer) base; napkin specs do not carry per-model theta
INIT_STD = 0.02  # GPT-2 / nanoGPT initialisation, keeps CPU forward passes finite
# scaled_dot_product_attention(enable_gqa=True) arrived in torch 2.5
SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019: x / rms(x) · w (+ b when the spec asks for a norm bias)."""

    def __init__(self, width: int, bias: bool, eps: float = 1e-6, **fk: Any) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width, **fk))
        self.bias = nn.Parameter(torch.zeros(width, **fk)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


def _norm(spec: TransformerSpec, width: int, fk: dict[str, Any]) -> nn.Module:
    if spec.norm == "rmsnorm":
        return RMSNorm(width, spec.has_norm_bias, **fk)
    return nn.LayerNorm(width, bias=spec.has_norm_bias, **fk)


def _act(spec: TransformerSpec) -> Any:
    name = spec.activation or {"swiglu": "silu", "geglu": "gelu", "mlp": "gelu"}[spec.ffn_kind]
    if spec.ffn_kind == "swiglu" or name in ("silu", "swish"):
        return F.silu
    if name == "relu":
        return F.relu
    return lambda x: F.gelu(x, approximate="tanh")


Rope = tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin), each [s, d_rot]: built once per forward


def rope_tables(s: int, d: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles (Su et al. 2021) for positions 0..s-1, HF's rotate-half layout [s, d]."""
    inv = 1.0 / ROPE_THETA ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    ang = torch.arange(s, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding (Su et al. 2021) on the last dim of x[b, heads, s, d] with precomputed (cos, sin)."""
    cos, sin = rope
    d = x.shape[-1]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _alibi(heads: int, s: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Press et al. 2022 (ALiBi): bias −m_h·(i − j), slopes 2^(−8h/H)."""
    slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)], device=device, dtype=dtype)
    pos = torch.arange(s, device=device, dtype=dtype)
    return -slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs()


class Attention(nn.Module):
    """Multi-head attention with GQA/MQA (k kv heads shared by a/k query heads) or MLA (DeepSeek-V2/V3)."""

    def __init__(self, spec: TransformerSpec, fk: dict[str, Any]) -> None:
        super().__init__()
        h, a = spec.d_model, spec.heads
        self.heads, self.positions, self.mla = a, spec.positions, spec.mla
        self.causal, self.flash = True, False
        if spec.mla is not None:
            m = spec.mla
            self.d_nope, self.d_rope, self.d_v = m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
            self.kv_lora = m.kv_lora_rank
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                self.q_a = nn.ModuleDict({"proj": nn.Linear(h, m.q_lora_rank, bias=False, **fk),
                                          "norm": _norm(spec, m.q_lora_rank, fk)})
                self.q_b = nn.Linear(m.q_lora_rank, a * qk, bias=False, **fk)
            else:
                self.q = nn.Linear(h, a * qk, bias=False, **fk)
            self.kv_a = nn.ModuleDict({"proj": nn.Linear(h, m.kv_lora_rank + m.qk_rope_head_dim, bias=False, **fk),
                                       "norm": _norm(spec, m.kv_lora_rank, fk)})
            self.kv_b = nn.Linear(m.kv_lora_rank, a * (m.qk_nope_head_dim + m.v_head_dim), bias=False, **fk)
            self.o = nn.Linear(a * m.v_head_dim, h, bias=False, **fk)
            return
        k, d = spec.n_kv_heads, spec.d_head
        self.kv_heads, self.d = k, d
        qkv_b = spec.attention_bias in ("qkv", "all")
        self.q = nn.Linear(h, a * d, bias=qkv_b, **fk)
        self.k = nn.Linear(h, k * d, bias=qkv_b, **fk)
        self.v = nn.Linear(h, k * d, bias=qkv_b, **fk)
        self.o = nn.Linear(a * d, h, bias=spec.attention_bias == "all", **fk)
        if spec.attention_sinks:  # GPT-OSS: a learned sink logit per head (parameters only; not in the softmax here)
            self.sinks = nn.Parameter(torch.zeros(a, **fk))
        self.qk_norm_kind = spec.qk_norm
        if spec.qk_norm == "per_head":
            self.qk_norm = nn.ModuleDict({"q": _norm(spec, d, fk), "k": _norm(spec, d, fk)})
        elif spec.qk_norm == "full":
            self.qk_norm = nn.ModuleDict({"q": _norm(spec, a * d, fk), "k": _norm(spec, k * d, fk)})

    def _qkv(self, x: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [b, a, s, d]; k and v with their own k heads (the caller expands them where it must)."""
        b, s, _ = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.qk_norm_kind == "full":
            q, k = self.qk_norm["q"](q), self.qk_norm["k"](k)
        q = q.view(b, s, self.heads, self.d).transpose(1, 2)
        k = k.view(b, s, self.kv_heads, self.d).transpose(1, 2)
        v = v.view(b, s, self.kv_heads, self.d).transpose(1, 2)
        if self.qk_norm_kind == "per_head":
            q, k = self.qk_norm["q"](q), self.qk_norm["k"](k)
        if rope is not None:
            q, k = _rope(q, rope), _rope(k, rope)
        return q, k, v

    def _qkv_mla(self, x: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s, _ = x.shape
        a = self.heads
        q = self.q_b(self.q_a["norm"](self.q_a["proj"](x))) if hasattr(self, "q_b") else self.q(x)
        q = q.view(b, s, a, self.d_nope + self.d_rope).transpose(1, 2)
        q_nope, q_rope = q.split([self.d_nope, self.d_rope], dim=-1)
        latent, k_rope = self.kv_a["proj"](x).split([self.kv_lora, self.d_rope], dim=-1)
        kv = self.kv_b(self.kv_a["norm"](latent)).view(b, s, a, self.d_nope + self.d_v).transpose(1, 2)
        k_nope, v = kv.split([self.d_nope, self.d_v], dim=-1)
        assert rope is not None  # MLA's decoupled key is always rotary (DeepSeek-V2 §2.1.3)
        k_rope = _rope(k_rope.view(b, 1, s, self.d_rope), rope).expand(b, a, s, self.d_rope)
        q = torch.cat([q_nope, _rope(q_rope, rope)], -1)
        k = torch.cat([k_nope, k_rope], -1)
        return q, k, v

    @property
    def rope_dim(self) -> int | None:
        """Width of the rotated part of q and k, or None without RoPE."""
        if self.mla is not None:
            return self.d_rope
        return self.d if self.positions == "rope" else None

    def forward(self, x: torch.Tensor, rope: Rope = None) -> torch.Tensor:
        b, s, _ = x.shape
        if rope is None and self.rope_dim is not None:  # called on its own: build the tables here
            rope = rope_tables(s, self.rope_dim, x.device, x.dtype)
        q, k, v = self._qkv_mla(x, rope) if self.mla is not None else self._qkv(x, rope)
        bias = _alibi(self.heads, s, x.device, q.dtype) if self.positions == "alibi" else None
        if self.flash:
            out = self._flash(q, k, v, bias)
        else:
            k, v = self._expand_kv(k), self._expand_kv(v)
            out = self._explicit(q, k, v, bias)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))

    def _expand_kv(self, t: torch.Tensor) -> torch.Tensor:
        """GQA/MQA: each of the k kv heads serves a/k query heads; eager matmuls need them copied (HF repeat_kv)."""
        group = self.heads // t.shape[1]
        return t if group == 1 else t.repeat_interleave(group, dim=1)

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # Vaswani et al. 2017 eq. 1: softmax(q·kᵀ / sqrt(d)) · v, as two matmuls FlopCounterMode counts.
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        if bias is not None:
            scores = scores + bias
        if self.causal:
            s = q.shape[-2]
            mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return p @ v

    def _flash(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if bias is not None and self.causal:
            s = q.shape[-2]
            bias = bias.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        gqa: dict[str, Any] = {}
        if k.shape[1] != q.shape[1] and SDPA_GQA:  # the kernel reads the k KV heads as they are: no copies saved
            gqa["enable_gqa"] = True
        elif k.shape[1] != q.shape[1]:
            k, v = self._expand_kv(k), self._expand_kv(v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=self.causal and bias is None, **gqa)


class FFN(nn.Module):
    """Dense FFN: w2(act(w1 x)) (Vaswani 2017) or w2(act(w1 x) ⊙ w3 x) (Shazeer 2020); Llama's w1/w2/w3 names."""

    def __init__(self, spec: TransformerSpec, width: int, fk: dict[str, Any]) -> None:
        super().__init__()
        h, bias = spec.d_model, spec.mlp_bias
        self.act = _act(spec)
        self.w1 = nn.Linear(h, width, bias=bias, **fk)
        self.w3 = nn.Linear(h, width, bias=bias, **fk) if spec.ffn_matrices == 3 else None
        self.w2 = nn.Linear(width, h, bias=bias, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.w1(x))
        return self.w2(y * self.w3(x) if self.w3 is not None else y)


class Experts(nn.Module):
    """n FFNs stored stacked ([n, out, in] like nn.Linear's weight): cheap to build for 256 experts on meta."""

    def __init__(self, spec: TransformerSpec, n: int, width: int, fk: dict[str, Any]) -> None:
        super().__init__()
        h, self.act, self.n = spec.d_model, _act(spec), n
        self.w1 = nn.Parameter(torch.empty(n, width, h, **fk))
        self.w3 = nn.Parameter(torch.empty(n, width, h, **fk)) if spec.ffn_matrices == 3 else None
        self.w2 = nn.Parameter(torch.empty(n, h, width, **fk))
        bias = spec.mlp_bias
        self.b1 = nn.Parameter(torch.zeros(n, width, **fk)) if bias else None
        self.b3 = nn.Parameter(torch.zeros(n, width, **fk)) if bias and self.w3 is not None else None
        self.b2 = nn.Parameter(torch.zeros(n, h, **fk)) if bias else None

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        def b(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[e]

        y = self.act(F.linear(x, self.w1[e], b(self.b1)))
        if self.w3 is not None:
            y = y * F.linear(x, self.w3[e], b(self.b3))
        return F.linear(y, self.w2[e], b(self.b2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, summed (the shared experts of DeepSeekMoE)."""
        out = self.expert(0, x)
        for e in range(1, self.n):
            out = out + self.expert(e, x)
        return out


class MoE(nn.Module):
    """Top-k routed experts (Shazeer 2017; Fedus 2022 Switch) plus always-on shared experts (DeepSeekMoE)."""

    def __init__(self, spec: TransformerSpec, fk: dict[str, Any]) -> None:
        super().__init__()
        e = spec.moe
        assert e is not None
        self.top_k, self.n = e.top_k, e.experts
        self.router = nn.Linear(spec.d_model, e.experts, bias=e.router_bias, **fk)
        self.experts = Experts(spec, e.experts, e.expert_ffn_dim, fk)
        self.shared_experts = (Experts(spec, e.shared_experts, e.shared_width, fk)
                               if e.shared_experts else None)
        self.shared_expert_gate = (nn.Linear(spec.d_model, 1, bias=False, **fk)
                                   if e.shared_experts and e.shared_expert_gate else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        T = x.shape[0]
        probs = torch.softmax(self.router(x), dim=-1, dtype=torch.float32)
        if x.is_meta:  # no data on meta: route round-robin, which sends the same T·k tokens through experts
            idx = (torch.arange(T)[:, None] * self.top_k + torch.arange(self.top_k)[None, :]) % self.n
        else:
            idx = probs.topk(self.top_k, dim=-1).indices.cpu()
        w = probs.gather(1, idx.to(probs.device))
        w = (w / w.sum(-1, keepdim=True)).to(x.dtype)  # Mixtral: renormalise the top-k weights
        out = torch.zeros_like(x)
        for e in range(self.n):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            tok_d = tok.to(x.device)
            y = self.experts.expert(e, x[tok_d]) * w[tok_d, slot.to(x.device)][:, None]
            out = out.index_add(0, tok_d, y)
        if self.shared_experts is not None:
            shared = self.shared_experts(x)
            if self.shared_expert_gate is not None:  # Qwen2-MoE: sigmoid(x·w) scales the shared expert
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            out = out + shared
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, spec: TransformerSpec, i: int, fk: dict[str, Any]) -> None:
        super().__init__()
        self.pre = spec.norm_placement == "pre"
        self.norms = spec.norms_per_layer
        self.norm_attn = _norm(spec, spec.d_model, fk)
        self.attention = Attention(spec, fk)
        if self.norms != 1:  # 1: Falcon-7B's norm, shared by the parallel attention and MLP
            self.norm_ffn = _norm(spec, spec.d_model, fk)
        if self.norms == 4:  # Gemma 2/3: a norm on each sub-layer's output too
            self.norm_attn_post = _norm(spec, spec.d_model, fk)
            self.norm_ffn_post = _norm(spec, spec.d_model, fk)
        self.ffn: nn.Module = MoE(spec, fk) if spec.is_moe_layer(i) else FFN(spec, spec.ffn_dim, fk)

    def forward(self, x: torch.Tensor, rope: Rope = None) -> torch.Tensor:
        if self.norms == 1:  # parallel attention and MLP on one normalised input
            y = self.norm_attn(x)
            return x + self.attention(y, rope) + self.ffn(y)
        if self.norms == 4:
            x = x + self.norm_attn_post(self.attention(self.norm_attn(x), rope))
            return x + self.norm_ffn_post(self.ffn(self.norm_ffn(x)))
        if self.pre:
            x = x + self.attention(self.norm_attn(x), rope)
            return x + self.ffn(self.norm_ffn(x))
        x = x + self.norm_attn(self.attention(x, rope))  # OLMo 2's reordered norm
        return x + self.norm_ffn(self.ffn(x))


class Transformer(nn.Module):
    def __init__(self, spec: TransformerSpec, fk: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        h, V = spec.d_model, spec.vocab
        emb = {"tokens": nn.Embedding(V, h, **fk)}
        if spec.positions == "learned":
            emb["positions"] = nn.Embedding(spec.max_context, h, **fk)
        self.embedding = nn.ModuleDict(emb)
        self.layers = nn.ModuleList(Block(spec, i, fk) for i in range(spec.layers))
        self.norm_final = _norm(spec, h, fk)
        self.head = None if spec.tied_embeddings else nn.Linear(h, V, bias=False, **fk)

    def _attentions(self) -> list[Attention]:
        return [m for m in self.modules() if isinstance(m, Attention)]

    def blocks(self) -> list[Block]:
        """The layers as Blocks (nn.ModuleList types its items as any Module)."""
        return [b for b in self.layers if isinstance(b, Block)]

    @property
    def causal(self) -> bool:
        return all(a.causal for a in self._attentions())

    @causal.setter
    def causal(self, value: bool) -> None:
        for a in self._attentions():
            a.causal = value

    @property
    def flash(self) -> bool:
        return all(a.flash for a in self._attentions())

    @flash.setter
    def flash(self, value: bool) -> None:
        for a in self._attentions():
            a.flash = value

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding["tokens"](input_ids)
        if "positions" in self.embedding:
            x = x + self.embedding["positions"](torch.arange(input_ids.shape[1], device=input_ids.device))
        rope = None
        blocks = self.blocks()
        d_rot = blocks[0].attention.rope_dim if blocks else None
        if d_rot is not None:  # one cos/sin table for every layer, as HF's rotary_emb does once per forward
            rope = rope_tables(input_ids.shape[1], d_rot, x.device, x.dtype)
        for layer in blocks:
            x = layer(x, rope)
        x = self.norm_final(x)
        if self.head is not None:
            return self.head(x)
        # tied: the token embedding's weight (an nn.Embedding, or peft's lora.Embedding around one under
        # `napkin validate --finetune lora --lora-embeddings`, which is no nn.Embedding but has its .weight)
        weight = self.embedding["tokens"].weight
        assert isinstance(weight, torch.Tensor)
        return F.linear(x, weight)


class LinearNet(nn.Module):
    """CS336 lecture 2's Cruncher: L bias-free D×D layers, then a bias-free D→out head."""

    def __init__(self, spec: LinearSpec, fk: dict[str, Any]) -> None:
        super().__init__()
        D = spec.d_model
        self.layers = nn.ModuleList(nn.Linear(D, D, bias=False, **fk) for _ in range(spec.layers))
        self.head = nn.Linear(D, spec.out_dim, bias=False, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _init(model: nn.Module) -> None:
    """N(0, 0.02) weights, zero biases, unit norms (GPT-2); nn.init skips work on meta tensors."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if ".norm" in name or name.startswith("norm") or ".qk_norm." in name:
                p.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "bias" or leaf in ("b1", "b2", "b3"):
                p.zero_()
            else:
                p.normal_(0.0, INIT_STD)


def build_model(spec: TransformerSpec, device: str | torch.device = "meta", dtype: torch.dtype | None = None,
                *, flash: bool = False, causal: bool = True) -> Transformer:
    """The reference transformer for a spec. On 'meta' nothing is allocated (numel() and FLOP counting only)."""
    if not isinstance(spec, TransformerSpec):
        raise TypeError(f"build_model needs a TransformerSpec, got {type(spec).__name__} (use build_linear)")
    model = Transformer(spec, {"device": device, "dtype": dtype})
    if torch.device(device).type != "meta":
        _init(model)
    model.causal, model.flash = causal, flash
    return model


def build_linear(spec: LinearSpec, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LinearNet:
    if not isinstance(spec, LinearSpec):
        raise TypeError(f"build_linear needs a LinearSpec, got {type(spec).__name__} (use build_model)")
    return LinearNet(spec, {"device": device, "dtype": dtype})
