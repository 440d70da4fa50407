"""Activations saved for backward, derived tensor by tensor from the architecture.

The reference is Korthikanti et al. 2022, Reducing Activation Recomputation in Large Transformer
Models, §4 (eq. 1-2, Table 2): a GPT block with LayerNorm, a 4h GeLU MLP, dropout, 16-bit
activations and 1-byte dropout masks saves

    per layer = s·b·h·(34 + 5·a·s/h) bytes
              = attention 11·sbh + 5·as²b  +  MLP 19·sbh  +  two LayerNorms 4·sbh.

napkin does not hard-code 34: it lists each tensor the backward pass needs, with its width per
token, and sums. With p bytes per activation element (2 in the paper) that list is

  norms      each norm saves its input x (p·h) and per-vector statistics in fp32 (LayerNorm: mean and
             1/σ, 8 B; RMSNorm: 1/rms, 4 B, the paper drops both). A composite RMSNorm (torch's eager
             F.rms_norm: x · rsqrt(mean(x²) + ε) · w) also saves x·rsqrt, the input of the ·w (p·h);
             fused kernels (Apex, Transformer Engine) recompute it.
  attention  the norm's output, input of the Q/K/V projections (p·h, the paper's 2sbh);
             Q after RoPE (p·a·d) and K (p·k·d) for QKᵀ (the paper's 4sbh with k = a, a·d = h);
             the softmax output (p·a·s per token: softmax backward and the ·V matmul share it);
             V (p·k·d, the paper's 2sbh); the context, input of the output projection (p·a·d).
             GQA: flash kernels take k KV heads as they are; an eager implementation expands K and
             V to a heads first (repeat_kv copies), and the matmuls save those copies (p·a·d each).
             RoPE multiplies by cos/sin tables that need no grad: it keeps only those s×d tables,
             which do not grow with the batch (not counted).
  flash      FlashAttention (Dao et al. 2022) never stores the s×s matrix: it saves Q, K, V, its
             output (the context above, same storage) and the row log-sum-exp (fp32, a per token).
  MLP        the norm's output, input of the up (and gate) projection (p·h, the paper's 2sbh);
             plain MLP: the activation's input (p·f) and its output, input of the down projection
             (p·f): the paper's 8sbh + 8sbh with f = 4h. ReLU saves its output, not its input,
             and that is the down projection's input: one p·f.
             gated (SwiGLU/GeGLU, Shazeer 2020): the gate pre-activation g for σ' (p·f), σ(g) and
             the up projection u for the product's backward (2·p·f), the product σ(g)·u, input of
             the down projection (p·f): 4·p·f in all (3 for ReGLU, whose ReLU saves its output).
  dropout    a 1-byte mask after attention and after the MLP (the paper's 2·sbh) and on the
             attention probabilities (as²b), plus the dropped-out probabilities the ·V matmul
             reads (p·as²b): that is the paper's 5as²b = 2 + 1 + 2. Modern LLMs train without
             dropout: then the softmax output alone (p·as²b) remains, and no masks.
  qk-norm    OLMo 2 normalises q and k: their norms keep the projections ((a+k)·d) and statistics.
  MLA        DeepSeek's latent attention keeps the kv_a output [c_KV | k_rope] (its norm reads the c_KV
             view, which keeps the whole storage), the normalised c_KV and c_Q (inputs of their
             up-projections), Q and K with a·(d_nope + d_rope) per token, V with a·d_v.
  MoE        per token: router probabilities (fp32, E) and top-k ids (int64), its copies dispatched to
             top_k experts (top_k·h), each expert's FFN tensors (top_k·f_e wide), the expert outputs
             kept for the gate-weighted combine (top_k·h); shared experts as a dense FFN. Dropless
             routing (capacity factor 1), no expert parallelism.

Parallelism (Korthikanti §4.2): tensor parallelism divides what lives inside the attention
heads and the MLP width by t; without sequence parallelism the block inputs, norms and residual
masks are replicated (the paper's 10·sbh), with it they are split along the sequence too (/t).
Selective recomputation (§5) drops the attention core (softmax, its dropout, the flash
log-sum-exp) and recomputes it; full recomputation keeps only each layer's input (p·h) and
rebuilds one layer at a time in backward. Outside the layers (§4.3): token ids (int64) for the
embedding backward, the final norm and the LM head's input, and the cross-entropy's
log-probabilities, 4·s·b·V/t bytes in fp32.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.layers import LayerKind, layer_plan
from napkin.specs.dtypes import BYTES_PER_ELEMENT, INT64_BYTES, DType
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Recompute

KORTHIKANTI = "Korthikanti et al. 2022, Reducing Activation Recomputation, §4.1 (sbh(34 + 5as/h))"
KORT_TP = "Korthikanti et al. 2022 §4.2 (tensor and sequence parallelism)"
KORT_FULL = "Korthikanti et al. 2022 §5, Table 2 (full recompute keeps the layer inputs: 2sbhL)"
FP32_BYTES = BYTES_PER_ELEMENT[DType.fp32]  # norm statistics, router probabilities, log-probabilities: kept in fp32
KORT_OUT = "Korthikanti et al. 2022 §4.3 (output layer: fp32 cross-entropy logits 4sbv/t)"
FLASH = "Dao et al. 2022, FlashAttention, §3.1 (saves O and the softmax statistics, not the s×s matrix)"
GLU = "Shazeer 2020, GLU Variants Improve Transformer, eq. 5-6 (gate, up, product)"
NORM = "Ba et al. 2016 (LayerNorm: mean, 1/σ); Zhang & Sennrich 2019 (RMSNorm: 1/rms)"
GQA = "Ainslie et al. 2023, GQA §2 (k KV heads); HF transformers repeat_kv in eager attention"
MOE = "Fedus et al. 2022, Switch Transformer §2.1 (router probabilities, dispatched token copies)"
MLA = "DeepSeek-V2 §2.1 (MLA: latent c_Q, c_KV and their norms; decoupled RoPE key shared by heads)"
MAMBA1 = "Gu & Dao 2023 (Mamba) §3.4: the block's norm, in_proj (x, z), conv, x_proj (Δ, B, C), dt_proj, scan, out_proj"
MAMBA1_FUSED = ("state-spaces/mamba selective_scan_interface (SelectiveScanFn saves u, Δ, B, C, z and the state every "
                "2048 positions) and causal-conv1d, as HF modeling_jamba's cuda_kernels_forward calls them")
MAMBA1_TORCH = ("transformers modeling_jamba slow_forward (the scan as a loop over positions), the tensors autograd "
                "saves, counted on a CPU (tests/test_layer_kinds.py)")
MAMBA2 = "Dao & Gu 2024 (Mamba-2) §7: the block's norm, in_proj (z, x, B, C, dt), conv, SSD scan, gated norm, out_proj"
MAMBA2_FUSED = ("state-spaces/mamba ssd_combined.py, MambaSplitConv1dScanCombinedFn: saves zxbcdt, the scan output and "
                "the gated norm's rstd; recomputes the conv, the norm output and out_proj's input in backward")
MAMBA2_TORCH = ("transformers modeling_mamba2 torch path (mamba2_chunk_scan, Mamba2RMSNormGated), the tensors autograd "
                "saves, counted on a CPU (tests/test_activations_torch.py)")

Split = Literal["tp", "sp", "none"]  # divided by t always / only under sequence parallelism / never
Block = Literal["attention", "mlp", "mixer", "layer", "embedding", "output"]  # where in the model a saved tensor sits


class ActTerm(BaseModel):
    """One tensor (or group) a layer keeps for backward."""

    model_config = ConfigDict(frozen=True)

    block: Block
    name: str
    stores: str = Field(description="which tensor this is and who needs it in backward")
    width: str = Field(description="elements per token, in symbols")
    elements_per_token: float
    bytes_per_element: float
    split: Split = Field(description="tp: divided by t; sp: divided by t only with sequence parallelism")
    core: bool = Field(default=False, description="inside the attention core (dropped by selective recompute)")
    source: str
    bytes: float = Field(description="s·b·width·bytes, divided by t where it applies: one micro-batch, one GPU")


class _Ctx:
    """The numbers every term needs: sequence, micro-batch, element bytes, TP degree, SP."""

    def __init__(self, s: int, b: int, p: float, t: int, sp: bool) -> None:
        self.s, self.b, self.p, self.t, self.sp = s, b, p, t, sp

    def term(self, block: Block, name: str, stores: str, width: str, per_token: float, nbytes: float | None = None,
             split: Split = "tp", source: str = KORTHIKANTI, core: bool = False) -> ActTerm:
        nb = self.p if nbytes is None else nbytes
        div = self.t if split == "tp" or (split == "sp" and self.sp) else 1
        return ActTerm(block=block, name=name, stores=stores, width=width, elements_per_token=per_token,
                       bytes_per_element=nb, split=split, core=core, source=source,
                       bytes=self.s * self.b * per_token * nb / div)


def _norm(c: _Ctx, spec: TransformerSpec, block: Block, where: str, fused_norm: bool, *, width: float | None = None,
          sym: str = "h", rows: float = 1, split: Split = "sp", kind: str | None = None) -> list[ActTerm]:
    """A norm over ``width`` elements per token (``rows`` normalised vectors per token): input, statistics and,
    for a composite RMSNorm, x·rsqrt."""
    w = spec.d_model if width is None else width
    kind = kind or spec.norm
    out = [c.term(block, f"{where} norm input", f"x entering the {where} norm (its backward needs x)", sym, w,
                  split=split, source=KORTHIKANTI)]
    if kind == "layernorm":
        out.append(c.term(block, f"{where} norm stats", "mean and 1/σ per vector, fp32", f"{2 * rows:g}", 2 * rows,
                          FP32_BYTES, split, NORM))
    else:
        out.append(c.term(block, f"{where} norm stats", "1/rms per vector, fp32", f"{rows:g}", rows, FP32_BYTES, split,
                          NORM))
        if not fused_norm:
            out.append(c.term(block, f"{where} norm x·rsqrt", "x·rsqrt(mean(x²)+ε), input of the ·weight "
                              "(composite RMSNorm only)", sym, w, split=split, source=NORM))
    return out


def _attention(c: _Ctx, spec: TransformerSpec, flash: bool, dropout: bool, fused_norm: bool) -> list[ActTerm]:
    h, a, s = spec.d_model, spec.heads, c.s
    out = _norm(c, spec, "attention", "pre-attention", fused_norm)
    out.append(c.term("attention", "QKV input", "the norm's output, input of the Q, K, V projections", "h", h,
                      split="sp"))
    if spec.mla is not None:
        m = spec.mla
        dq, dv = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
        # c_KV is a view of the kv_a output [c_KV | k_rope]: its norm keeps that whole storage alive
        latents = [("c_KV", m.kv_lora_rank, m.kv_lora_rank + m.qk_rope_head_dim, "r_kv+d_rope")]
        if m.q_lora_rank:
            latents.append(("c_Q", m.q_lora_rank, m.q_lora_rank, "r_q"))
        for name, r, stored_w, sym in latents:
            norm = _norm(c, spec, "attention", name, fused_norm, width=r, sym=sym, kind="rmsnorm")
            out.append(norm[0].model_copy(update={"elements_per_token": stored_w,
                                                  "bytes": norm[0].bytes * stored_w / r, "source": MLA}))
            out += norm[1:]
            out.append(c.term("attention", f"{name} norm output", f"normalized {name}, input of its up-projection",
                              sym.split("+")[0], r, split="sp", source=MLA))
        out.append(c.term("attention", "Q", "queries for QKᵀ", "a·(d_nope+d_rope)", a * dq, source=MLA))
        out.append(c.term("attention", "K", "keys for QKᵀ (the RoPE key is copied to every head)",
                          "a·(d_nope+d_rope)", a * dq, source=MLA))
        out.append(c.term("attention", "V", "values for the ·V matmul", "a·d_v", a * dv, source=MLA))
        ctx_w, ctx_sym = a * dv, "a·d_v"
    else:
        k, d = spec.n_kv_heads, spec.d_head
        if spec.qk_norm != "none":  # OLMo 2: norms on the q and k projections (per head, or over all heads)
            out += _norm(c, spec, "attention", "q/k", fused_norm, width=(a + k) * d, sym="(a+k)·d", split="tp",
                         rows=(a + k) if spec.qk_norm == "per_head" else 2)
        kv_w, kv_sym = (k * d, "k·d") if flash or k == a else (a * d, "a·d (repeat_kv)")
        out.append(c.term("attention", "Q", "queries after RoPE, for QKᵀ", "a·d", a * d))
        out.append(c.term("attention", "K", "keys after RoPE, for QKᵀ", kv_sym, kv_w, source=GQA))
        out.append(c.term("attention", "V", "values, for the ·V matmul", kv_sym, kv_w, source=GQA))
        ctx_w, ctx_sym = a * d, "a·d"
    if flash:
        out.append(c.term("attention", "softmax log-sum-exp", "row statistics the flash backward recomputes from",
                          "a", a, 4, core=True, source=FLASH))
    else:
        out.append(c.term("attention", "softmax output", "attention probabilities (softmax backward, and ·V "
                          "without dropout)", "a·s", a * s, core=True))
        if dropout:
            out.append(c.term("attention", "attention dropout mask", "1-byte mask on the probabilities", "a·s",
                              a * s, 1, core=True))
            out.append(c.term("attention", "dropped-out probabilities", "input of the ·V matmul", "a·s", a * s,
                              core=True))
    out.append(c.term("attention", "context", "attention output, input of the output projection"
                      + (" (the flash kernel's saved O)" if flash else ""), ctx_sym, ctx_w))
    if dropout:
        out.append(c.term("attention", "residual dropout mask", "1-byte mask after the output projection", "h", h, 1,
                          "sp"))
    return out


def _ffn(c: _Ctx, spec: TransformerSpec, width: float, sym: str, label: str, source: str) -> list[ActTerm]:
    """Inner tensors of one FFN of inner width f (per token, summed over the experts a token visits)."""
    relu = (spec.activation or "").lower() in ("relu", "relu2")  # saves its output, shared with the next matmul
    if spec.ffn_matrices == 3:
        out = [] if relu else [c.term("mlp", f"{label} gate pre-activation", "g = x·W_gate, for σ'(g)", sym, width,
                                      source=source)]
        out += [c.term("mlp", f"{label} σ(gate)", "σ(g), for the product's backward", sym, width, source=GLU),
                c.term("mlp", f"{label} up", "u = x·W_up, for the product's backward", sym, width, source=GLU),
                c.term("mlp", f"{label} σ(gate)·up", "product, input of the down projection", sym, width, source=GLU)]
        return out
    out = [] if relu else [c.term("mlp", f"{label} activation input", "x·W_1, for the activation's backward", sym,
                                  width, source=source)]
    return out + [c.term("mlp", f"{label} activation output", "input of the down projection", sym, width,
                         source=source)]


def _mlp(c: _Ctx, spec: TransformerSpec, moe_layer: bool, dropout: bool, fused_norm: bool,
         own_norm: bool | None = None) -> list[ActTerm]:
    h = spec.d_model
    out: list[ActTerm] = []
    if spec.norms_per_layer != 1 if own_norm is None else own_norm:  # Falcon-7B: one norm shared with attention
        out += _norm(c, spec, "mlp", "pre-MLP", fused_norm)
        out.append(c.term("mlp", "MLP input", "the norm's output, input of the up/gate projections (and router)", "h",
                          h, split="sp"))
    if moe_layer and spec.moe is not None:
        e = spec.moe
        out.append(c.term("mlp", "router probabilities", "softmax over experts, fp32", "E", e.experts, FP32_BYTES, "sp",
                          MOE))
        out.append(c.term("mlp", "router top-k indices", "int64 expert ids, to gather the gate weights back", "top_k",
                          e.top_k, INT64_BYTES, "sp", MOE))
        out.append(c.term("mlp", "dispatched tokens", "each token copied to its top-k experts", "top_k·h",
                          e.top_k * h, split="sp", source=MOE))
        out += _ffn(c, spec, e.top_k * e.expert_ffn_dim, "top_k·f_e", "experts", MOE)
        out.append(c.term("mlp", "expert outputs", "for the gate-weighted combine", "top_k·h", e.top_k * h,
                          split="sp", source=MOE))
        if e.shared_experts:
            f_s = e.shared_experts * e.shared_width
            out += _ffn(c, spec, f_s, "n_shared·f_s", "shared experts", MOE)
    else:
        out += _ffn(c, spec, spec.ffn_dim, "f", "MLP", KORTHIKANTI)
    if spec.norms_per_layer == 4 and own_norm is None:  # Gemma 2/3: a norm on the MLP's output too
        out += _norm(c, spec, "mlp", "post-MLP", fused_norm)
    if dropout:
        out.append(c.term("mlp", "residual dropout mask", "1-byte mask after the MLP", "h", h, 1, "sp"))
    return out


def _mamba2(c: _Ctx, spec: TransformerSpec, fused: bool, fused_norm: bool) -> list[ActTerm]:
    """A Mamba-2 block: its pre-norm, the in_proj input, then what the scan keeps (fused kernels, or the torch path)."""
    m = spec.ssm
    assert m is not None
    h, s = spec.d_model, c.s
    H, G, P, N, Q, K = m.heads, m.groups, m.head_dim, m.state_size, m.chunk_size, m.conv_kernel
    d_in, conv = m.d_inner, m.conv_dim
    d_proj = 2 * d_in + 2 * G * N + H
    out = _norm(c, spec, "mixer", "pre-mixer", fused_norm)
    out.append(c.term("mixer", "in_proj input", "the norm's output, input of in_proj", "h", h, split="sp",
                      source=MAMBA2))
    out.append(c.term("mixer", "in_proj output", "z, x, B, C, dt: the scan's saved input (the conv and the scan are "
                      "rebuilt from it)" if fused else "z, x, B, C, dt", "2·d_in+2·G·N+H", d_proj, source=MAMBA2))
    if fused:
        out.append(c.term("mixer", "scan output", "y before the gated norm (the norm output and out_proj's input are "
                          "recomputed in backward)", "d_in", d_in, source=MAMBA2_FUSED))
        out.append(c.term("mixer", "gated norm stats", "1/rms per group, fp32", "G", G, FP32_BYTES,
                          source=MAMBA2_FUSED))
        return out
    # transformers' torch path (modeling_mamba2 / modeling_nemotron_h on a CPU): counted tensor by tensor
    out.append(c.term("mixer", "conv input", "x, B, C padded by K − 1 positions", "(d_in+2·G·N)·(s+K−1)/s",
                      conv * (s + K - 1) / s, source=MAMBA2_TORCH))
    out.append(c.term("mixer", "conv output", "x, B, C after the conv (SiLU's input)", "d_in+2·G·N", conv,
                      source=MAMBA2_TORCH))
    chunks = -(-s // Q)  # the sequence is padded to whole chunks for the chunked tensors
    pad = chunks * Q / s
    out.append(c.term("mixer", "B and C per head", "B and C repeated to the heads and their chunked einsum operands "
                      "(5 tensors), fp32", "5·H·N·pad", 5 * H * N * pad, FP32_BYTES, source=MAMBA2_TORCH))
    out.append(c.term("mixer", "chunked x", "x·Δ in chunks and its einsum operands (4 tensors), fp32", "4·d_in·pad",
                      4 * d_in * pad, FP32_BYTES, source=MAMBA2_TORCH))
    out.append(c.term("mixer", "scan output and gated norm", "the d_in-wide tensors after the scan (5: x·Δ, y + D·x, "
                      "the gated norm's fp32 input, its output, out_proj's input), fp32", "5·d_in", 5 * d_in,
                      FP32_BYTES, source=MAMBA2_TORCH))
    out.append(c.term("mixer", "intra-chunk blocks", "L = exp(segsum(A)), C·Bᵀ and their product per head, fp32",
                      "3·Q·H·pad", 3 * Q * H * pad, FP32_BYTES, source=MAMBA2_TORCH))
    out.append(c.term("mixer", "chunk states", "the states of every chunk (with the initial one) and their einsum "
                      "operand, fp32", "H·P·N·(2c+1)/s", H * P * N * (2 * chunks + 1) / s, FP32_BYTES,
                      source=MAMBA2_TORCH))
    out.append(c.term("mixer", "Δ and A·Δ", "dt, softplus(dt + bias), A·Δ (3 per token) and its chunked cumulative "
                      "sums (2), fp32", "3·H + 2·H·pad", 3 * H + 2 * H * pad, FP32_BYTES, source=MAMBA2_TORCH))
    out.append(c.term("mixer", "gated norm stats", "1/rms per group, fp32", "G", G, FP32_BYTES, source=MAMBA2_TORCH))
    return out


def _mamba1(c: _Ctx, spec: TransformerSpec, fused: bool, fused_norm: bool) -> list[ActTerm]:
    """A Mamba-1 block: its pre-norm, the in_proj input, the projections' inputs and the selective scan's state."""
    m = spec.mamba
    assert m is not None
    h, s, d, N, r, K = spec.d_model, c.s, m.d_inner, m.state_size, m.dt_rank, m.conv_kernel
    src = MAMBA1_FUSED if fused else MAMBA1_TORCH
    out = _norm(c, spec, "mixer", "pre-mixer", fused_norm)
    out.append(c.term("mixer", "in_proj input", "the norm's output, input of in_proj", "h", h, split="sp",
                      source=MAMBA1))
    out.append(c.term("mixer", "in_proj output", "x (the conv's input) and the gate z", "2·d_in", 2 * d, source=src))
    out.append(c.term("mixer", "x_proj output", "Δ of rank r, B and C", "r+2N", r + 2 * N, source=src))
    if m.inner_norms:  # Jamba's RMSNorms on Δ, B and C: their outputs (and x·rsqrt on the torch path), statistics
        w = (r + 2 * N) * (1 if fused_norm else 2)
        out.append(c.term("mixer", "Δ, B, C norms", "the normalized Δ (dt_proj's input), B and C"
                          + ("" if fused_norm else ", and x·rsqrt of each"), "r+2N" if fused_norm else "2·(r+2N)", w,
                          source=src))
        out.append(c.term("mixer", "Δ, B, C norm stats", "1/rms of Δ, B and C, fp32", "3", 3, FP32_BYTES,
                          source=src))
    if fused:
        out.append(c.term("mixer", "conv output", "x after the conv (x_proj's input and the scan's u)", "d_in", d,
                          source=src))
        out.append(c.term("mixer", "Δ", "dt_proj's output, the scan's step sizes", "d_in", d, source=src))
        out.append(c.term("mixer", "scan checkpoints", "the scan's state at the end of every 2048 positions, fp32",
                          "2·d_in·N/2048", 2 * d * N / 2048, FP32_BYTES, source=src))
        out.append(c.term("mixer", "gated scan output", "y · silu(z), out_proj's input", "d_in", d, source=src))
        return out
    out.append(c.term("mixer", "conv input", "x padded by K − 1 positions", "d_in·(s+K−1)/s", d * (s + K - 1) / s,
                      source=src))
    out.append(c.term("mixer", "d_in-wide tensors", "the conv output, SiLU's output (x_proj's and the scan's input), "
                      "the gate, Δ before and after softplus, the scan output and out_proj's input (7)", "7·d_in",
                      7 * d, source=src))
    out.append(c.term("mixer", "discretized A and B·Δ", "exp(Δ·A) and Δ·B per position, channel and state", "2·d_in·N",
                      2 * d * N, source=src))
    out.append(c.term("mixer", "scan states", "the state after every position (the recurrence's saved operands)",
                      "d_in·N·(s+1)/s", d * N * (s + 1) / s, source=src))
    return out


def layer_terms(spec: TransformerSpec, s: int, b: int, *, bytes_per_element: float, tp: int = 1, sp: bool = False,
                flash: bool = True, dropout: bool = False, fused_norm: bool = True,
                kind: LayerKind | None = None) -> list[ActTerm]:
    """Every tensor one layer of ``kind`` saves for backward (no recomputation), for one micro-batch.

    ``kind`` defaults to the plan's last kind (a plain MoE model's MoE layer). A plain layer keeps its attention
    and its FFN; a hybrid block its one mixer (Mamba-2 or attention) or its one FFN, after its one norm. ``flash``
    means fused kernels: FlashAttention, and mamba_ssm's fused SSD scan for a Mamba-2 mixer.
    """
    plan = layer_plan(spec)
    kind = plan.kinds[-1] if kind is None else kind
    c = _Ctx(s, b, bytes_per_element, tp, sp)
    if plan.hybrid:
        if kind.mixer == "mamba2":
            return _mamba2(c, spec, flash, fused_norm)
        if kind.mixer == "mamba1":
            return _mamba1(c, spec, flash, fused_norm)
        if kind.attends:
            return _attention(c, spec, flash, dropout, fused_norm)
        return _mlp(c, spec, kind.moe, dropout, fused_norm, own_norm=True)
    attn = _attention(c, spec, flash, dropout, fused_norm)
    if spec.norms_per_layer == 4:  # Gemma 2/3: a norm on the attention's output before the residual add
        attn += _norm(c, spec, "attention", "post-attention", fused_norm)
    return attn + _mlp(c, spec, kind.moe, dropout, fused_norm)


def stored(terms: list[ActTerm], recompute: Recompute, spec: TransformerSpec, s: int, b: int,
           bytes_per_element: float, tp: int = 1, sp: bool = False) -> list[ActTerm]:
    """What a layer keeps under a recompute policy (Korthikanti §5, Table 2)."""
    if recompute == "none":
        return terms
    if recompute == "selective":
        return [x for x in terms if not x.core]
    c = _Ctx(s, b, bytes_per_element, tp, sp)
    return [c.term("layer", "layer input (checkpoint)", "the block's input; the layer is recomputed in backward",
                   "h", spec.d_model, split="sp", source=KORT_FULL)]


def outside_terms(spec: TransformerSpec, s: int, b: int, *, bytes_per_element: float, tp: int = 1, sp: bool = False,
                  dropout: bool = False, fused_norm: bool = True) -> dict[str, list[ActTerm]]:
    """Tensors saved outside the layers: the embedding (first stage) and the output layer (last stage)."""
    c = _Ctx(s, b, bytes_per_element, tp, sp)
    emb = [c.term("embedding", "token ids", "int64 indices for the embedding backward", "1", 1, INT64_BYTES,
                  "none", KORT_OUT)]
    if dropout:
        emb.append(c.term("embedding", "embedding dropout mask", "1-byte mask on the embeddings", "h", spec.d_model, 1,
                          "sp", KORT_OUT))
    out = [x.model_copy(update={"block": "output"}) for x in _norm(c, spec, "output", "final", fused_norm)]
    out.append(c.term("output", "LM head input", "the final norm's output, input of the head", "h", spec.d_model,
                      split="sp", source=KORT_OUT))
    out.append(c.term("output", "log-probabilities", "cross-entropy's log-softmax of the logits, fp32", "V",
                      spec.vocab, FP32_BYTES, "tp", KORT_OUT))
    out.append(c.term("output", "targets", "int64 labels for the loss", "1", 1, INT64_BYTES, "none",
                      KORT_OUT))
    return {"embedding": emb, "output": out}


def total(terms: list[ActTerm]) -> float:
    return sum(x.bytes for x in terms)


def linear_net_activation_elements(spec: LinearSpec, batch: int) -> int:
    """The lecture's Cruncher: the B×D output of each of its L layers, B·D·L elements (CS336 lecture 2)."""
    return batch * spec.d_model * spec.layers
