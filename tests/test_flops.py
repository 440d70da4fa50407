"""Exact FLOP counts: the lecture's numbers, breakdowns that add up, attention growing with s, recompute."""

from __future__ import annotations

import pytest

from napkin.accounting.flops import ATTENTION_CORE, count_flops, forward_flops_per_token, training_flops
from napkin.accounting.params import count_params
from napkin.errors import InputError
from napkin.specs.catalog import get_model, model_catalog
from napkin.specs.model import resize_linear

REL = 1e-9
B, D, K = 16384, 32768, 8192  # DESIGN.md: the lecture's matmul and linear-net shapes


def test_cruncher_is_six_b_params():
    # CS336 lecture 2: B = 2, D = 4, 2 layers, params D²·L + D = 36 → 6·B·params = 432.
    r = count_flops(get_model("cruncher"), 2)
    assert r.model_flops == 432 == 6 * 2 * count_params(get_model("cruncher")).params
    assert r.forward_flops == 144 and r.backward_flops == 288


def test_lecture_linear_net_forward_and_backward():
    net = resize_linear(get_model("cruncher"), width=D, depth=1, out=K)
    r = count_flops(net, B)
    assert r.forward_flops == pytest.approx(2 * B * D * D + 2 * B * D * K, rel=REL)
    assert r.forward_flops == pytest.approx(4.398e13, rel=1e-3)
    assert r.backward_flops == 2 * r.forward_flops


def test_lecture_matmul_is_a_linear_net_without_hidden_layers():
    r = count_flops(resize_linear(get_model("cruncher"), width=D, depth=0, out=K), B)
    assert r.forward_flops == 2 * B * D * K == 8_796_093_022_208


@pytest.mark.parametrize("name", ["llama3-8b", "mixtral-8x7b", "deepseek-v3", "gpt2", "olmo2-7b", "cruncher"])
@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_steps_and_components_add_up(name, recompute):
    r = count_flops(get_model(name), 1e9, 2048, recompute=recompute)
    steps = {s.name: s.value for s in r.steps}
    per = "example" if name == "cruncher" else "token"
    parts = [v for k, v in steps.items() if k.endswith(f" forward per {per}") and k != f"forward per {per}"]
    assert len(parts) == len(r.components)
    assert sum(parts) == pytest.approx(steps[f"forward per {per}"], rel=REL)
    assert sum(c.forward for c in r.components.values()) == pytest.approx(r.forward_flops, rel=REL)
    assert sum(c.backward for c in r.components.values()) == pytest.approx(r.backward_flops, rel=REL)
    assert sum(c.recompute for c in r.components.values()) == pytest.approx(r.recompute_flops, rel=REL)
    assert r.hardware_flops == pytest.approx(steps["hardware FLOPs"], rel=REL)
    assert r.model_flops == pytest.approx(3 * r.forward_flops, rel=REL)


def test_model_flops_are_six_times_the_matmul_weights_plus_attention():
    # An independent route: 6·D per weight of every matmul (embedding lookup and norms are not matmuls).
    spec = get_model("llama3-8b")
    pc = count_params(spec)
    matmul_weights = pc.params - pc.components["embedding.tokens"] - pc.components["norms.layers"] - pc.components[
        "norms.final"]
    r = count_flops(spec, 1e6, 4096, causal=False)
    L, a, d, s = spec.layers, spec.heads, spec.d_head, 4096
    attention = 3 * 2 * 2 * L * a * d * s * 1e6  # fwd QKᵀ + AV (Korthikanti App. A), ×3 for fwd + bwd
    assert r.model_flops == pytest.approx(6 * matmul_weights * 1e6 + attention, rel=REL)
    assert r.attention_flops == pytest.approx(attention, rel=REL)
    # PaLM App. B's 12·L·H·Q·T is the same attention term, non-causal.
    assert r.palm_flops - r.six_n_active_d == pytest.approx(attention, rel=REL)


@pytest.mark.parametrize("name", ["gpt2", "llama3-8b", "deepseek-v3"])
def test_attention_share_grows_with_sequence_length(name):
    shares = [count_flops(get_model(name), 1e9, s).attention_share for s in (128, 1024, 8192, 32768)]
    assert shares == sorted(shares) and shares[0] < shares[-1]
    ratios = [count_flops(get_model(name), 1e9, s).model_flops / (6 * count_params(get_model(name)).active_params * 1e9)
              for s in (128, 32768)]
    assert ratios[0] < ratios[1]  # exact / 6ND drifts up as attention grows


def test_causal_halving():
    spec = get_model("llama3-8b")
    causal, full = count_flops(spec, 1e9, 4096), count_flops(spec, 1e9, 4096, causal=False)
    assert causal.attention_flops / full.attention_flops == pytest.approx((4096 + 1) / 2 / 4096, rel=REL)
    proj = [k for k in causal.components if k not in ATTENTION_CORE]
    assert all(causal.components[k] == full.components[k] for k in proj)


def test_recompute_adds_hardware_flops_only():
    spec = get_model("llama3-70b")
    none, sel, full = (count_flops(spec, 1e9, 8192, recompute=r) for r in ("none", "selective", "full"))
    assert none.model_flops == sel.model_flops == full.model_flops == none.hardware_flops
    assert sel.recompute_flops == pytest.approx(sum(sel.components[k].forward for k in ATTENTION_CORE), rel=REL)
    # Megatron-LM eq. 3: full recomputation redoes every layer's forward but not the LM head's.
    assert full.recompute_flops == pytest.approx(full.forward_flops - full.components["head"].forward, rel=REL)
    assert none.hardware_flops < sel.hardware_flops < full.hardware_flops


def test_moe_counts_top_k_and_shared_experts():
    spec = get_model("deepseek-v3")
    f = forward_flops_per_token(spec, 1, causal=False)
    e = spec.moe
    one_expert = 3 * spec.d_model * e.expert_ffn_dim
    assert f["ffn.experts"] == 2 * spec.moe_layers * e.top_k * one_expert
    assert f["ffn.shared_experts"] == 2 * spec.moe_layers * e.shared_experts * one_expert
    assert f["ffn.router"] == 2 * spec.moe_layers * spec.d_model * e.experts
    assert f["ffn.dense"] == 2 * 3 * 3 * spec.d_model * spec.ffn_dim  # first_k_dense_replace = 3
    # active parameters ≈ FLOPs/2 per token (the exact count leaves out the embedding lookup and norms)
    no_attn = sum(v for k, v in f.items() if k not in ATTENTION_CORE)
    pc = count_params(spec)
    assert no_attn / 2 == pytest.approx(pc.active_params - pc.embedding, rel=1e-4)


def test_decode_token_attends_to_the_whole_cache():
    spec = get_model("llama3-8b")
    a, d, L = spec.heads, spec.d_head, spec.layers
    f1, f2 = forward_flops_per_token(spec, 1000, causal=False), forward_flops_per_token(spec, 1001, causal=False)
    assert f2["attention.scores"] + f2["attention.values"] - f1["attention.scores"] - f1["attention.values"] == \
        2 * 2 * a * d * L
    mean = forward_flops_per_token(spec, 1000)  # causal: the average token of a 1000-token sequence
    assert mean["attention.scores"] == pytest.approx(2 * L * a * d * 1001 / 2, rel=REL)
    assert sum(mean.values()) * 1000 == pytest.approx(count_flops(spec, 1000, 1000).forward_flops, rel=REL)


def test_training_flops_batch_times_seq_and_default_seq():
    spec = get_model("llama3-8b")
    assert training_flops(spec, batch=4, seq=2048).tokens == 4 * 2048
    r = training_flops(spec, tokens=1e9)  # Llama 3 pre-trained on 8,192-token sequences (its spec's train_seq)
    assert r.seq == spec.train_seq == 8192 and "pre-training sequence length" in r.notes[0]
    # a spec without train_seq falls back to its max context, and says so
    no_train = spec.model_copy(update={"train_seq": None, "max_context": 4096})
    r = training_flops(no_train, tokens=1e9)
    assert r.seq == 4096 and "max context" in r.notes[0]
    assert training_flops(get_model("cruncher"), batch=2).model_flops == 432


@pytest.mark.parametrize("kwargs, message", [
    (dict(tokens=0, seq=10), "tokens must be a positive"),
    (dict(tokens=1e9, seq=0), "seq must be a positive"),
    (dict(tokens=1e9, seq=10, recompute="some"), "recompute must be one of"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        count_flops(get_model("gpt2"), **kwargs)


def test_every_catalog_model_counts():
    for spec in model_catalog():
        r = count_flops(spec, 1e6, 2048)
        assert r.model_flops > 0 and 0.5 < r.model_flops / r.six_n_active_d < 2, spec.name
