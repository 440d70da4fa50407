"""Parameter counts against reality: numel() of the plain-torch reference model, per component."""

from __future__ import annotations

import pytest
from everyday import everyday

torch = pytest.importorskip("torch")

from napkin.accounting.params import count_params  # noqa: E402
from napkin.bench.reference import build_linear, build_model, param_breakdown, tiny_spec  # noqa: E402
from napkin.specs.catalog import get_model, model_catalog  # noqa: E402

VARIANTS = {
    "gqa-swiglu-rope": {},
    "mha-gelu-learned-biases-tied": dict(kv_heads=None, ffn_kind="mlp", activation="gelu", positions="learned",
                                         norm="layernorm", attention_bias="all", mlp_bias=True, tied_embeddings=True),
    "mqa-geglu": dict(kv_heads=1, ffn_kind="geglu"),
    "qkv-bias": dict(attention_bias="qkv"),
    "qk-norm-full-reordered": dict(qk_norm="full", norm_placement="sublayer_output"),
    "qk-norm-per-head-rms-bias": dict(qk_norm="per_head", norm_bias=True, head_dim=24),
    "moe-shared-dense-first": dict(moe=dict(experts=4, top_k=2, shared_experts=1, expert_ffn_dim=32,
                                            first_dense_layers=1, router_bias=True), layers=3),
    "moe-every-2-mlp-bias": dict(ffn_kind="mlp", mlp_bias=True, layers=4,
                                 moe=dict(experts=3, top_k=1, expert_ffn_dim=48, every=2, shared_experts=2,
                                          shared_ffn_dim=16)),
    "mla": dict(mla=dict(q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)),
    "mla-full-rank-q": dict(mla=dict(q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                                     v_head_dim=8), heads=3),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tiny_variants_match_numel_per_component(variant: str) -> None:
    spec = tiny_spec(**VARIANTS[variant])
    model = build_model(spec, device="meta")
    counted = count_params(spec)
    assert param_breakdown(model) == counted.components
    assert sum(p.numel() for p in model.parameters()) == counted.params


def test_llama3_8b_matches_numel_on_meta() -> None:
    spec = get_model("llama3-8b")
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).params == 8_030_261_248


def test_cruncher_matches_numel() -> None:
    spec = get_model("cruncher")
    net = build_linear(spec)
    assert sum(p.numel() for p in net.parameters()) == count_params(spec).params == 36
    assert net(torch.ones(2, spec.d_model)).shape == (2, spec.out_dim)


def test_moe_active_params_are_the_ones_a_token_touches() -> None:
    spec = tiny_spec(moe=dict(experts=4, top_k=2, shared_experts=1, expert_ffn_dim=32))
    model = build_model(spec, device="meta")
    one_expert = sum(p[0].numel() for p in model.layers[0].ffn.experts.parameters())
    idle = spec.layers * (4 - 2) * one_expert
    assert count_params(spec).active_params == sum(p.numel() for p in model.parameters()) - idle


@pytest.mark.parametrize("name", everyday(model_catalog().names(), every=5))  # everyday: 1 in 5
def test_every_catalog_model_matches_numel_on_meta(name: str) -> None:
    spec = get_model(name)
    if getattr(spec, "block_pattern", None) is not None:  # the reference model has no Mamba-2 blocks
        pytest.skip("hybrid stack: counted against transformers' own model in tests/test_architectures.py")
    model = build_linear(spec, device="meta") if spec.kind == "linear" else build_model(spec)
    counted = count_params(spec)
    assert sum(p.numel() for p in model.parameters()) == counted.params
    assert param_breakdown(model) == counted.components
