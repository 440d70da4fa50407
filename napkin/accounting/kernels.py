"""Time of the kernels of one training micro-batch on one GPU: GEMMs, attention, memory-bound ops.

The roofline of each kernel (Williams et al. 2009): t = max(FLOPs / (peak · efficiency), bytes / (HBM · η_mem))
plus a fixed launch cost. A GEMM's efficiency is the best a large GEMM reaches on the part (its measured MAMF,
the hardware spec's ``matmul_efficiency``) times its wave quantization: an (m × n) output is cut into
⌈m/t_m⌉·⌈n/t_n⌉ tiles run in waves of one tile per SM, so the last wave idles SMs and the tiles pad the edges
(NVIDIA, Matrix Multiplication Background User's Guide, "Tile quantization" and "Wave quantization"; the
saw-tooth of CS336 lecture 5's FLOP/s against N). Attention runs at its own fraction of peak (FlashAttention-2,
Dao 2023 §4: 50–73% of A100 peak forward, less backward); without a fused kernel its s×s scores also pass
through HBM. Norms, activations, residual adds and rotary are memory-bound: their bytes over HBM bandwidth.
"""

from __future__ import annotations

from typing import NamedTuple

from napkin.accounting.attention_kernels import attention_fraction
from napkin.accounting.layers import Gemm, LayerKind, LayerPlan, attention_head_dims
from napkin.results import ROOFLINE
from napkin.specs.dtypes import BYTES_PER_ELEMENT, DType
from napkin.specs.model import TransformerSpec
from napkin.specs.stack import StepConstants  # the constants a training stack sets (stack_specs/*.yaml)

SRC_WAVES = ("NVIDIA Matrix Multiplication Background User's Guide (tile and wave quantization); "
             "CS336 (2025) lecture 5 (FLOP/s against matrix size)")
SRC_MAMF = "measured maximum achievable matmul FLOP/s (hardware spec's matmul_efficiency; stas00/ml-engineering)"
SRC_ROOFLINE = f"{ROOFLINE}: t = max(FLOPs / peak, bytes / bandwidth)"

DEFAULT_MATMUL_EFFICIENCY = 0.80  # where a GPU has no published MAMF: about H100's measured 795/989.5


class Device(NamedTuple):
    """What the kernel model needs of one GPU."""

    peak_flops_per_s: float
    memory_bytes_per_s: float
    sms: int | None
    gemm_efficiency: float
    vector_flops_per_s: float = 0.0  # fp32 on the CUDA cores (Mamba-1's scan); 0: unknown, the dtype's peak
    architecture: str | None = None  # the hardware spec's (Ampere, Hopper): which published attention curve applies
    attention_flops_per_s: float = 0.0  # the peak attention runs at (BF16 under FP8 GEMMs); 0: peak_flops_per_s
    cast_bytes: float = 0.0  # HBM bytes per element cast for each FP8 GEMM input (0: no FP8 GEMMs)


class Cost(NamedTuple):
    """Seconds and kernel launches of one part of a micro-batch on one GPU."""

    gemm: float = 0.0
    attention: float = 0.0
    memory_bound: float = 0.0
    kernels: int = 0
    scan: float = 0.0  # an SSM mixer's scan (Mamba-2's SSD, Mamba-1's selective scan)

    @property
    def time(self) -> float:
        return self.gemm + self.attention + self.memory_bound + self.scan

    def __add__(self, o: object) -> Cost:
        assert isinstance(o, Cost)
        return Cost(self.gemm + o.gemm, self.attention + o.attention, self.memory_bound + o.memory_bound,
                    self.kernels + o.kernels, self.scan + o.scan)

    def times(self, k: float) -> Cost:
        return Cost(self.gemm * k, self.attention * k, self.memory_bound * k, round(self.kernels * k), self.scan * k)


def wave_efficiency(m: int, n: int, sms: int | None, tm: int, tn: int) -> float:
    """Useful share of the SM-tile slots an (m × n) output occupies: m·n / (waves · SMs · t_m · t_n)."""
    if sms is None:
        return 1.0
    tiles = -(-m // tm) * -(-n // tn)
    waves = -(-tiles // sms)
    return (m * n) / (waves * sms * tm * tn)


def gemm_time(m: float, n: int, k: float, bytes_per_element: float, dev: Device, c: StepConstants) -> float:
    """One (m×k)@(k×n) GEMM: max(2mnk / (P · η_MAMF · η_waves), (mk + kn + mn)·p / (B · η_mem)) + launch."""
    if m <= 0 or n <= 0 or k <= 0:
        return 0.0
    mi = max(1, round(m))
    eff = dev.gemm_efficiency * wave_efficiency(mi, n, dev.sms, c.tile_m, c.tile_n)
    compute = 2 * m * n * k / (dev.peak_flops_per_s * eff)
    memory = (m * k + k * n + m * n) * bytes_per_element / (dev.memory_bytes_per_s * c.memory_efficiency)
    return max(compute, memory) + c.kernel_s


class LayerCost(NamedTuple):
    """One layer of one kind, one micro-batch, one GPU: forward and backward (backward = dgrad + wgrad)."""

    forward: Cost
    backward: Cost
    attention_forward: Cost  # the part of forward that selective recomputation redoes


def _weight_gemms(g: Gemm, T: int, tp: int, ep: int, p: float, dev: Device, c: StepConstants) -> tuple[Cost, Cost]:
    """Forward (Y = XW) and backward (dX = dY·Wᵀ, dW = Xᵀ·dY) of one weight matrix on one GPU."""
    i, o = g.local(tp)
    local = g.copies // ep if g.expert else g.copies
    # a routed expert sees T·top_k/E of the tokens; with EP its E/ep local experts get tokens from ep ranks
    t = T * g.active / g.copies * (ep if g.expert else 1)
    fwd = local * gemm_time(t, o, i, p, dev, c)
    bwd = local * (gemm_time(t, i, o, p, dev, c) + gemm_time(i, o, t, p, dev, c))
    if not dev.cast_bytes:
        return Cost(gemm=fwd, kernels=local), Cost(gemm=bwd, kernels=2 * local)
    # FP8 GEMMs (Transformer Engine): forward casts X and W to fp8 (with amax and a transposed copy for the
    # backward's layout), backward casts dY; each a memory-bound pass at cast_bytes per element (SRC_FP8_CAST)
    mem_bw = dev.memory_bytes_per_s * c.memory_efficiency
    cast_f = local * ((t * i + i * o) * dev.cast_bytes / mem_bw + 2 * c.kernel_s)
    cast_b = local * (t * o * dev.cast_bytes / mem_bw + c.kernel_s)
    return (Cost(gemm=fwd, memory_bound=cast_f, kernels=3 * local),
            Cost(gemm=bwd, memory_bound=cast_b, kernels=3 * local))


SRC_FP8_CAST = ("NVIDIA Transformer Engine FP8 primer (delayed scaling: amax history, per-tensor scale; inputs cast "
                "to fp8 per GEMM, Hopper's fp8 GEMMs take a transposed copy for wgrad/dgrad)")


def _attention_core(spec: TransformerSpec, kind: LayerKind, *, b: int, s: int, cp: int, tp: int, flash: bool, p: float,
                    dev: Device, c: StepConstants) -> tuple[Cost, Cost]:
    """QKᵀ and ·V of one attending layer, forward and backward, over the context its kind attends to.

    The context is ``kind.context(s)``, the rule the FLOP count uses (causal mean (s+1)/2; a sliding window or a
    chunk caps it), since flash kernels skip the masked blocks (FlashAttention-2 ``window_size``, Dao 2023 §3.1);
    without a fused kernel the whole s×s matrix is computed, then masked.
    """
    s_q = -(-s // cp)
    a, d_qk, d_v = attention_head_dims(spec)
    a_l = -(-a // tp)
    mem_bw = dev.memory_bytes_per_s * c.memory_efficiency
    ctx = kind.context(s) if flash else float(s)
    attn_flops = 2 * b * s_q * ctx * a_l * (d_qk + d_v)
    peak = dev.attention_flops_per_s or dev.peak_flops_per_s  # attention runs in BF16 even beside FP8 GEMMs
    curve = None
    if flash and c.attention_kernel != "fitted":  # the published kernel's throughput at this length and head dim
        L = min(float(s_q), 2 * ctx)  # the keys a query block sweeps: the local sequence, or twice a window
        d = (d_qk + d_v) // 2
        fwd_frac = attention_fraction(c.attention_kernel, dev.architecture, "forward", True, L, d)
        bwd_frac = attention_fraction(c.attention_kernel, dev.architecture, "backward", True, L, d)
        if fwd_frac is not None and bwd_frac is not None:
            curve = (fwd_frac * c.attention_scale, bwd_frac * c.attention_scale)
    if curve is not None:
        attn_f = attn_flops / (peak * curve[0])
        attn_b = 2.5 * attn_flops / (peak * curve[1])  # backward FLOPs 2.5× forward (FA benchmarks' count)
    else:
        attn_f = attn_flops / (peak * c.attention_efficiency)
        attn_b = 2.5 * attn_f if flash else 2 * attn_f
    # fused kernel, or QKᵀ, masked softmax, dropout, ·V; ring attention (CP) runs one block per ring step
    attn_kernels = (1 if flash else 4) * cp
    if not flash:  # the s×s scores go through HBM: write S, read it for softmax, write P, read P for ·V
        scores = b * a_l * s_q * s * p
        attn_f += 4 * scores / mem_bw
        attn_b += 8 * scores / mem_bw
    attn_f += attn_kernels * c.kernel_s
    attn_b += 2 * attn_kernels * c.kernel_s
    return Cost(attention=attn_f, kernels=attn_kernels), Cost(attention=attn_b, kernels=2 * attn_kernels)


SRC_SSD = ("Dao & Gu 2024 (Mamba-2) §6 and state-spaces/mamba ssd_combined.py: the chunked scan in chunks of Q: "
           "C·Bᵀ per chunk (2·Q·G·N per token), its masked product with x (2·(Q+1)/2·H·P), the chunk states and "
           "their read-out (2·H·P·N each), the state passing between chunks (2·H·P·N/Q); five kernels forward")
SSD_KERNELS = 5  # mamba_ssm: _chunk_cumsum, _chunk_state, _state_passing, _bmm_chunk, _chunk_scan (forward)


def ssd_flops_per_token(spec: TransformerSpec, tp: int = 1) -> float:
    """Forward FLOPs of the chunked SSD scan per token on one TP rank (heads and groups split over TP)."""
    m = spec.ssm
    assert m is not None
    H, G, P, N, Q = -(-m.heads // tp), -(-m.groups // tp), m.head_dim, m.state_size, m.chunk_size
    return 2 * Q * G * N + 2 * (Q + 1) / 2 * H * P + 2 * 2 * H * P * N + 2 * H * P * N / Q


def _ssd_scan(spec: TransformerSpec, *, b: int, s: int, cp: int, tp: int, flash: bool, p: float, dev: Device,
              c: StepConstants) -> tuple[Cost, Cost]:
    """A Mamba-2 mixer's scan, conv and gated norm (its in/out projections are GEMMs), forward and backward.

    The scan is the chunked SSD that training kernels run (SRC_SSD), not the recurrent form the FLOP count uses
    (as Megatron-LM's mamba_layer_flops): its matmul-like blocks at the attention kernels' fraction of peak, and
    its reads and writes (x, B, C, dt in; y out; the chunk states in fp32) at HBM bandwidth, whichever is longer.
    Backward is taken as 2.5× forward, FlashAttention-2's ratio (the fused SSD backward likewise recomputes its
    intra-chunk blocks); no measured SSD rows were available to fit it. The depthwise conv and the gated RMSNorm
    are memory-bound. Without fused kernels (``flash`` off: transformers' torch path) the scan's Q×Q blocks per
    head pass through HBM, as unfused attention's scores do.
    """
    m = spec.ssm
    assert m is not None
    T = b * -(-s // cp)
    H, G = -(-m.heads // tp), -(-m.groups // tp)
    d_in, conv = H * m.head_dim, H * m.head_dim + 2 * G * m.state_size
    mem_bw = dev.memory_bytes_per_s * c.memory_efficiency
    compute = T * ssd_flops_per_token(spec, tp) / ((dev.attention_flops_per_s or dev.peak_flops_per_s)
                                                    * c.attention_efficiency)
    states = T / m.chunk_size * H * m.head_dim * m.state_size * BYTES_PER_ELEMENT[DType.fp32]
    traffic = T * (conv + H + d_in) * p + 2 * states
    if not flash:
        traffic += 3 * T * m.chunk_size * H * BYTES_PER_ELEMENT[DType.fp32]  # L, C·Bᵀ and their product, per head
    scan_f = max(compute, traffic / mem_bw) + SSD_KERNELS * c.kernel_s
    scan_b = 2.5 * (scan_f - SSD_KERNELS * c.kernel_s) + 2 * SSD_KERNELS * c.kernel_s
    # depthwise causal conv over x, B, C (read, write) and the gated RMSNorm (y and z in, y out)
    elem = T * (2 * conv + 3 * d_in) * p / mem_bw
    return (Cost(scan=scan_f, memory_bound=elem + 2 * c.kernel_s, kernels=SSD_KERNELS + 2),
            Cost(scan=scan_b, memory_bound=2 * elem + 4 * c.kernel_s, kernels=2 * SSD_KERNELS + 4))


SRC_SELECTIVE_SCAN = ("Gu & Dao 2023 (Mamba) §3.3: the fused selective scan keeps the state in SRAM; 9·L·D·N FLOPs "
                      "(state-spaces/mamba flops_selective_scan_fn, issue #110) on the CUDA cores; reads u, Δ, z, B, C "
                      "and writes y once")


def _selective_scan(spec: TransformerSpec, *, b: int, s: int, cp: int, tp: int, p: float, dev: Device,
                    c: StepConstants) -> tuple[Cost, Cost]:
    """A Mamba-1 mixer's selective scan and conv (its four projections are GEMMs), forward and backward.

    The scan runs on the CUDA cores (no tensor-core form): 9·d_in·N FLOPs per token at the part's fp32 vector peak,
    or its reads and writes at HBM bandwidth, whichever is longer (SRC_SELECTIVE_SCAN). Backward is taken as 2.5×
    forward, as for the SSD scan (it reruns the forward scan from its checkpoints, then scans in reverse); no
    measured rows were available to fit it. The depthwise conv is memory-bound.
    """
    m = spec.mamba
    assert m is not None
    T = b * -(-s // cp)
    d = -(-m.d_inner // tp)
    mem_bw = dev.memory_bytes_per_s * c.memory_efficiency
    compute = 9 * T * d * m.state_size / (dev.vector_flops_per_s or dev.peak_flops_per_s)
    traffic = T * (4 * d + 2 * m.state_size) * p  # u, Δ, z, y and B, C
    scan_f = max(compute, traffic / mem_bw) + c.kernel_s
    scan_b = 2.5 * (scan_f - c.kernel_s) + 2 * c.kernel_s
    elem = T * 2 * d * p / mem_bw  # the conv: read x, write its output
    return (Cost(scan=scan_f, memory_bound=elem + c.kernel_s, kernels=2),
            Cost(scan=scan_b, memory_bound=2 * elem + 2 * c.kernel_s, kernels=4))


def mixer_kernel(kind: LayerKind) -> tuple[str, str]:
    """What ``layer_cost`` runs for a kind's mixer, and its source: for a derivation step."""
    if kind.attends:
        return "attention core", SRC_ROOFLINE
    return {"mamba2": ("SSD scan", SRC_SSD), "mamba1": ("selective scan", SRC_SELECTIVE_SCAN)}.get(
        kind.mixer, ("no mixer", SRC_ROOFLINE))


def layer_cost(plan: LayerPlan, kind: LayerKind, *, b: int, s: int, cp: int, tp: int, ep: int, sp: bool,
               flash: bool, p: float, dev: Device, c: StepConstants) -> LayerCost:
    """Forward and backward time of one layer of ``kind`` for a micro-batch of b sequences of s tokens (s/cp on
    this GPU): its GEMMs, its mixer (an attention core over the kind's context, or a Mamba-2 scan) and its
    memory-bound ops, each read off the kind's description."""
    spec: TransformerSpec = plan.spec
    T = b * -(-s // cp)
    fwd, bwd = Cost(), Cost()
    for g in kind.gemms:
        f, bw = _weight_gemms(g, T, tp, ep, p, dev, c)
        fwd, bwd = fwd + f, bwd + bw
    core_f = core_b = Cost()
    if kind.attends:
        core_f, core_b = _attention_core(spec, kind, b=b, s=s, cp=cp, tp=tp, flash=flash, p=p, dev=dev, c=c)
    elif kind.mixer == "mamba2":
        core_f, core_b = _ssd_scan(spec, b=b, s=s, cp=cp, tp=tp, flash=flash, p=p, dev=dev, c=c)
    elif kind.mixer == "mamba1":
        core_f, core_b = _selective_scan(spec, b=b, s=s, cp=cp, tp=tp, p=p, dev=dev, c=c)
    else:
        assert kind.mixer == "none", f"no kernel model for the {kind.mixer} mixer"  # a new mixer needs one here
    fwd, bwd = fwd + core_f, bwd + core_b
    # memory-bound ops per token (bytes read + written): each norm 2h, each residual add 3h, the FFN activation
    # (mlp: f in, f out; gated: 2f in, f out), rotary on q and k. A plain layer has its norms and 2 residual adds;
    # a hybrid block one norm and one add.
    h = spec.d_model
    mem_bw = dev.memory_bytes_per_s * c.memory_efficiency
    rep = tp if sp else 1  # norms and residuals: replicated over TP ranks unless sequence parallel
    n_norm, n_res = (1, 1) if plan.hybrid else (spec.norms_per_layer, 1 if spec.parallel_attention else 2)
    f_tok = 0
    if kind.moe and spec.moe is not None:
        f_tok = spec.moe.ffn_width_per_token
    elif kind.ffn == "dense":
        f_tok = spec.ffn_dim
    act = (3 if spec.ffn_matrices == 3 else 2) * f_tok / tp
    rope = 2 * (spec.heads + spec.n_kv_heads) * spec.d_head / tp if kind.attends and spec.positions == "rope" else 0.0
    elem_fwd = T * ((2 * n_norm + 3 * n_res) * h / rep + act + rope) * p / mem_bw
    n_elem = n_norm + n_res + (1 if f_tok else 0) + (1 if rope else 0)
    fwd = fwd + Cost(memory_bound=elem_fwd + n_elem * c.kernel_s, kernels=n_elem)
    bwd = bwd + Cost(memory_bound=2 * elem_fwd + 2 * n_elem * c.kernel_s, kernels=2 * n_elem)
    # selective recomputation redoes the attention core alone (Korthikanti et al. 2022 §5): nothing in a Mamba block
    return LayerCost(fwd, bwd, core_f if kind.attends else Cost())


def head_cost(plan: LayerPlan, *, b: int, s: int, cp: int, tp: int, p: float, dev: Device,
              c: StepConstants) -> tuple[Cost, Cost]:
    """The last stage's final norm, LM head (vocabulary split over TP) and fp32 cross-entropy: forward, backward."""
    T = b * -(-s // cp)
    f, bw = _weight_gemms(plan.head, T, tp, 1, p, dev, c)
    V_l = -(-plan.spec.vocab // tp)
    # cross-entropy (Megatron's vocab-parallel): logits to fp32, max, exp-sum, loss; backward writes the grad
    ce = T * V_l * (p + 3 * BYTES_PER_ELEMENT[DType.fp32]) / (dev.memory_bytes_per_s * c.memory_efficiency)
    return f + Cost(memory_bound=ce + 4 * c.kernel_s, kernels=4), bw + Cost(memory_bound=ce + 2 * c.kernel_s,
                                                                            kernels=2)
