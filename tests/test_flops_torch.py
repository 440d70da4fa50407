"""Exact FLOPs against reality: a real forward + backward under torch's FlopCounterMode (CPU, non-causal).

FlopCounterMode counts every matmul at 2 FLOPs per multiply-add and does not skip the masked half of
attention, so napkin is compared in --no-causal mode. The tolerance is the issue's 1%; the counts agree exactly.
"""

from __future__ import annotations

import pytest
from everyday import everyday

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from napkin.accounting.flops import count_flops  # noqa: E402
from napkin.bench.reference import build_linear, build_model, tiny_spec  # noqa: E402
from napkin.specs.catalog import get_model  # noqa: E402
from napkin.specs.model import resize_linear  # noqa: E402

TOL = 0.01  # the bound; napkin and the counter agree exactly on these models

CONFIGS = {
    "llama-like (GQA, SwiGLU, RoPE)": {},
    "gpt2-like (MHA, GELU MLP, learned, biases, tied)": dict(
        kv_heads=None, ffn_kind="mlp", activation="gelu", positions="learned", norm="layernorm",
        attention_bias="all", mlp_bias=True, tied_embeddings=True),
    "mixtral-like (top-2 of 4 experts)": dict(moe=dict(experts=4, top_k=2, expert_ffn_dim=96)),
    "deepseek-like (MLA, shared expert, dense first layer)": dict(
        layers=3, mla=dict(q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12),
        moe=dict(experts=8, top_k=3, shared_experts=1, expert_ffn_dim=32, first_dense_layers=1)),
    "olmo2-like (qk-norm, reordered norms, MQA)": dict(qk_norm="full", norm_placement="sublayer_output", kv_heads=1),
}


def measured(model, inputs) -> int:
    with FlopCounterMode(display=False) as counter:
        model(inputs).float().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("config", everyday(CONFIGS, every=3))  # everyday: 1 in 3
def test_forward_backward_flops_match_the_counter(config):
    torch.manual_seed(0)
    spec = tiny_spec(**CONFIGS[config])
    b, s = 2, 48
    model = build_model(spec, device="cpu", causal=False)
    real = measured(model, torch.randint(0, spec.vocab, (b, s)))
    napkin = count_flops(spec, b * s, s, causal=False).model_flops
    assert abs(napkin / real - 1) < TOL, (napkin, real)


def test_forward_only_matches_the_counter():
    spec = tiny_spec()
    model = build_model(spec, device="cpu", causal=False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, spec.vocab, (3, 40)))
    assert abs(count_flops(spec, 120, 40, causal=False).forward_flops / counter.get_total_flops() - 1) < TOL


def test_llama3_8b_on_meta_matches_the_counter():
    # The full-size architecture, no memory allocated: the counter only sees shapes.
    spec = get_model("llama3-8b")
    model = build_model(spec, device="meta", causal=False)
    real = measured(model, torch.zeros(1, 64, dtype=torch.long, device="meta"))
    assert abs(count_flops(spec, 64, 64, causal=False).model_flops / real - 1) < TOL


def test_cruncher_432_flops():
    spec = get_model("cruncher")
    x = torch.ones(2, spec.d_model, requires_grad=True)  # lecture counts the input gradient of the first layer too
    assert measured(build_linear(spec), x) == count_flops(spec, 2).model_flops == 432


def test_lecture_matmul_shape_on_meta():
    spec = resize_linear(get_model("cruncher"), width=32768, depth=1, out=8192)
    with FlopCounterMode(display=False) as counter:
        build_linear(spec, device="meta")(torch.empty(16384, 32768, device="meta"))
    assert counter.get_total_flops() == count_flops(spec, 16384).forward_flops == 43_980_465_111_040


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_flash_path_computes_the_same_function(positions):
    torch.manual_seed(0)
    spec = tiny_spec(positions=positions, kv_heads=1)
    model = build_model(spec, device="cpu")
    ids = torch.randint(0, spec.vocab, (2, 16))
    explicit = model(ids)
    model.flash = True
    assert torch.allclose(explicit, model(ids), atol=1e-5)
