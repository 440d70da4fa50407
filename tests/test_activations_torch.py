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
the reference builds once per forward (2·s·d fp32, shared by every layer), the s×s bool causal mask each
eager layer builds (s² bytes), the loss scalar. None of these grows with the micro-batch. With flash and GQA
the reference hands the kernel the k KV heads as they are (``enable_gqa=True``, torch >= 2.5), as napkin assumes.
The reference's MoE combine (index_add) also keeps its source, the weighted expert outputs (top_k·h per
token), only for its shape; a production dispatcher does not, and napkin does not count it.
"""

from __future__ import annotations

import pytest
from everyday import everyday

torch = pytest.importorskip("torch")

from napkin.bench.measure import SavedTensors, predicted_activation_bytes, reference_saved_bytes  # noqa: E402
from napkin.bench.reference import build_linear, tiny_spec  # noqa: E402
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


CASES = [(arch, b, s, h, flash, rc) for arch in ARCHS for (b, s, h) in POINTS for flash in (False, True)
         for rc in ("none", "selective", "full") if not (flash and rc == "selective")]


@pytest.mark.torch
@pytest.mark.parametrize("arch, b, s, h, flash, recompute", everyday(CASES, every=10))  # everyday: 1 in 10
def test_estimate_within_ten_percent_of_torch(arch, b, s, h, flash, recompute):
    spec = tiny_spec(d_model=h, max_context=max(s, 128), **ARCHS[arch])
    got = reference_saved_bytes(spec, b, s, flash=flash, recompute=recompute)
    est = predicted_activation_bytes(spec, b, s, flash=flash, recompute=recompute)
    assert abs(est - got) / got <= TOLERANCE, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


@pytest.mark.torch
@pytest.mark.parametrize("arch", MORE_ARCHS)
@pytest.mark.parametrize("b, s, recompute", everyday([(2, 64, "none"), (4, 128, "none"), (2, 64, "full")], every=3))
def test_more_architectures_within_ten_percent(arch, b, s, recompute):
    spec = tiny_spec(**MORE_ARCHS[arch])
    got = reference_saved_bytes(spec, b, s, flash=False, recompute=recompute)
    est = predicted_activation_bytes(spec, b, s, flash=False, recompute=recompute)
    assert abs(est - got) / got <= TOLERANCE, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


@pytest.mark.torch
@pytest.mark.parametrize("flash", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_byte_accounted_for(arch, flash):
    # torch − napkin is exactly what napkin leaves out on purpose (none of it grows with the micro-batch):
    # per eager layer the s×s bool causal mask (the flash kernel masks inside); with RoPE, the cos and sin
    # tables built once per forward (2 · s·d fp32, shared by every layer's q and k); the learned-position ids
    # (s int64); the loss scalar (4 B). With flash + GQA nothing else: K and V reach the kernel unexpanded.
    if flash and ARCHS[arch].get("kv_heads", 2) < 4 and torch.__version__ < (2, 5):
        pytest.skip("enable_gqa needs torch >= 2.5; older torch expands K and V before the kernel")
    spec = tiny_spec(**ARCHS[arch])
    b, s = 2, 64
    got = reference_saved_bytes(spec, b, s, flash=flash, recompute="none")
    est = predicted_activation_bytes(spec, b, s, flash=flash, recompute="none")
    masks = 0 if flash else spec.layers * s * s
    rope = 2 * s * spec.d_head * 4 if spec.positions == "rope" else 0
    positions = s * 8 if spec.positions == "learned" else 0
    assert got - est == masks + rope + positions + 4


@pytest.mark.torch
def test_full_recompute_keeps_exactly_the_layer_inputs():
    # with every layer checkpointed, only the layer inputs, the embedding's ids and the output layer remain
    spec = tiny_spec(**ARCHS["gpt-like"])
    b, s = 2, 64
    got = reference_saved_bytes(spec, b, s, flash=False, recompute="full")
    est = predicted_activation_bytes(spec, b, s, flash=False, recompute="full")
    # what napkin leaves out here: the learned-position ids (s int64) and the loss scalar (4 B)
    assert got - est == s * 8 + 4


@pytest.mark.torch
def test_cruncher_torch_keeps_the_lecture_count_plus_the_input():
    # the lecture counts B·D per layer (the layer outputs); autograd also keeps the B×D input of layer 1
    spec = get_model("cruncher")
    B, D, L = 2, spec.d_model, spec.layers
    model = build_linear(spec, "cpu", torch.float32)
    with SavedTensors(model.parameters()) as saved:
        model(torch.randn(B, D)).sum()
    assert saved.bytes == (B * D * L + B * D) * 4
    assert predicted_activation_bytes(spec, B) == B * D * L * 4
