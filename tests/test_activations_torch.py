"""napkin's activation estimate against the bytes a real torch model saves for backward (CPU).

The reference transformer (napkin.bench.reference, the one the parameter and FLOP checks use) runs a
forward pass and the cross-entropy under ``torch.autograd.graph.saved_tensors_hooks``; every tensor
autograd saves is recorded by its storage, each storage counted once (views share one), parameters
left out (they are model state, not activations). That sum is compared with napkin's estimate for the
same spec, micro-batch and sequence, in fp32:

- no recompute: every layer as is (eager attention, or F.scaled_dot_product_attention with ``flash``);
- selective recompute: the attention core (QKᵀ, softmax, ·V) under a reentrant checkpoint;
- full recompute: every layer under a reentrant checkpoint (its input is what ``ctx.save_for_backward``
  keeps; the inner forward runs without grad).

The reference's RMSNorm is torch's eager composite (x · rsqrt(mean(x²) + ε) · w), which also keeps
x·rsqrt: napkin is asked for that (fused_norm=False). What napkin does not count: the RoPE cos/sin tables
the reference rebuilds in every layer (4·s·d fp32 per layer), the s×s bool causal mask each eager layer
builds (s² bytes), the loss scalar; and with flash + GQA the reference expands K and V to all heads before
the kernel, where napkin assumes a GQA-native kernel. None of these but the last grows with the micro-batch.
The reference's MoE combine (index_add) also keeps its source, the weighted expert outputs (top_k·h per
token), only for its shape; a production dispatcher does not, and napkin does not count it.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from napkin.accounting import activations as act  # noqa: E402
from napkin.bench.reference import build_linear, build_model, tiny_spec  # noqa: E402
from napkin.specs.catalog import get_model  # noqa: E402

TOLERANCE = 0.10  # the bar: within 10%

ARCHS = {
    # Llama-style: GQA 4/2, SwiGLU, RMSNorm, RoPE, untied head
    "llama-like": {},
    # GPT-style: MHA, 4h GeLU MLP, LayerNorm, learned positions, tied head
    "gpt-like": dict(kv_heads=4, ffn_kind="mlp", ffn_dim=256, norm="layernorm", positions="learned",
                     tied_embeddings=True, activation="gelu"),
}
POINTS = [(1, 32, 64), (2, 64, 64), (4, 128, 64), (2, 96, 128)]  # (b, s, h)
MORE_ARCHS = {
    # OLMo 2-style: norms after the sublayers, full qk-norm, MHA
    "olmo2-like": dict(norm_placement="sublayer_output", qk_norm="full", kv_heads=4),
    # DeepSeek-style latent attention (eager only: torch's CPU SDPA has no kernel for d_v ≠ d_qk and
    # falls back to the math path, which stores the s×s matrix that a flash kernel would not)
    "mla": dict(kv_heads=None, mla=dict(q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                                        v_head_dim=16)),
    # MoE after one dense layer: top-2 of 4 experts plus a shared expert
    "moe": dict(moe=dict(experts=4, top_k=2, expert_ffn_dim=96, shared_experts=1, first_dense_layers=1)),
}


def _checkpointed(fn):
    return lambda *args: checkpoint(fn, *args, use_reentrant=True)


def measured_bytes(spec, b: int, s: int, *, flash: bool, recompute: str) -> int:
    """Unique storage bytes saved for backward by forward + cross-entropy (parameters excluded)."""
    torch.manual_seed(0)
    model = build_model(spec, "cpu", torch.float32, flash=flash)
    if recompute == "full":
        for layer in model.layers:
            layer.forward = _checkpointed(layer.forward)
    elif recompute == "selective":
        for layer in model.layers:
            attn = layer.attention
            attn._explicit = _checkpointed(attn._explicit)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}
    keep = []  # hold every packed tensor so no storage address is freed and reused during the forward

    def pack(t):
        keep.append(t)
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, spec.vocab, (b, s))
    targets = torch.randint(0, spec.vocab, (b, s))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, spec.vocab).float(), targets.reshape(-1))
    assert loss.requires_grad
    return sum(saved.values())


def napkin_bytes(spec, b: int, s: int, *, flash: bool, recompute: str) -> float:
    kw = dict(bytes_per_element=4)  # fp32, as the CPU reference runs
    fused = spec.norm != "rmsnorm"  # the reference's RMSNorm is the eager composite
    layers = 0.0
    for i in range(spec.layers):  # MoE models may start with dense layers
        layer = act.layer_terms(spec, s, b, flash=flash, fused_norm=fused, moe_layer=spec.is_moe_layer(i), **kw)
        layers += act.total(act.stored(layer, recompute, spec, s, b, **kw))
    outside = act.outside_terms(spec, s, b, fused_norm=fused, **kw)
    return layers + act.total(outside["embedding"]) + act.total(outside["output"])


CASES = [(arch, b, s, h, flash, rc) for arch in ARCHS for (b, s, h) in POINTS for flash in (False, True)
         for rc in ("none", "selective", "full") if not (flash and rc == "selective")]


@pytest.mark.torch
@pytest.mark.parametrize("arch, b, s, h, flash, recompute", CASES)
def test_estimate_within_ten_percent_of_torch(arch, b, s, h, flash, recompute):
    spec = tiny_spec(d_model=h, max_context=max(s, 128), **ARCHS[arch])
    got = measured_bytes(spec, b, s, flash=flash, recompute=recompute)
    est = napkin_bytes(spec, b, s, flash=flash, recompute=recompute)
    assert abs(est - got) / got <= TOLERANCE, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


@pytest.mark.torch
@pytest.mark.parametrize("arch", MORE_ARCHS)
@pytest.mark.parametrize("b, s, recompute", [(2, 64, "none"), (4, 128, "none"), (2, 64, "full")])
def test_more_architectures_within_ten_percent(arch, b, s, recompute):
    spec = tiny_spec(**MORE_ARCHS[arch])
    got = measured_bytes(spec, b, s, flash=False, recompute=recompute)
    est = napkin_bytes(spec, b, s, flash=False, recompute=recompute)
    assert abs(est - got) / got <= TOLERANCE, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


@pytest.mark.torch
@pytest.mark.parametrize("arch", ARCHS)
def test_every_byte_accounted_for_in_eager_attention(arch):
    # torch − napkin is exactly what napkin leaves out on purpose (none of it grows with the micro-batch):
    # per layer the s×s bool causal mask and, with RoPE, cos and sin rebuilt for q and for k (4 · s·d fp32);
    # the learned-position ids (s int64); the loss scalar (4 B)
    spec = tiny_spec(**ARCHS[arch])
    b, s = 2, 64
    got = measured_bytes(spec, b, s, flash=False, recompute="none")
    est = napkin_bytes(spec, b, s, flash=False, recompute="none")
    rope = 4 * s * spec.d_head * 4 if spec.positions == "rope" else 0
    positions = s * 8 if spec.positions == "learned" else 0
    assert got - est == spec.layers * (s * s + rope) + positions + 4


@pytest.mark.torch
def test_full_recompute_keeps_exactly_the_layer_inputs():
    # with every layer checkpointed, only the layer inputs, the embedding's ids and the output layer remain
    spec = tiny_spec(**ARCHS["gpt-like"])
    b, s = 2, 64
    got = measured_bytes(spec, b, s, flash=False, recompute="full")
    est = napkin_bytes(spec, b, s, flash=False, recompute="full")
    # what napkin leaves out here: the learned-position ids (s int64) and the loss scalar (4 B)
    assert got - est == s * 8 + 4


@pytest.mark.torch
def test_cruncher_torch_keeps_the_lecture_count_plus_the_input():
    # the lecture counts B·D per layer (the layer outputs); autograd also keeps the B×D input of layer 1
    spec = get_model("cruncher")
    B, D, L = 2, spec.d_model, spec.layers
    model = build_linear(spec, "cpu", torch.float32)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(B, D)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    assert sum(saved.values()) == (B * D * L + B * D) * 4
