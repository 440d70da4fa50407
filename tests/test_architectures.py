"""Every supported config.json model type against transformers' own implementation.

The tests write their config files themselves (small shapes, and "minimal" ones that leave structural keys out
so that each family's defaults are exercised). Where transformers is installed, the parameter count must equal
``sum(p.numel())`` of ``AutoModelForCausalLM.from_config`` built on the meta device, and napkin's defaults must be
the values transformers' config classes give a missing key; without it those tests are skipped. The rest (sliding
windows in FLOPs and the KV cache, hybrid stacks, one-line refusals) needs neither.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

from napkin.accounting.flops import count_flops, forward_flops_per_token, window_context
from napkin.accounting.kv_cache import kv_cache
from napkin.accounting.params import count_params
from napkin.errors import SpecError
from napkin.specs.hf_config import FAMILIES, SUPPORTED, spec_from_config_dict, spec_from_hf_config

SMALL = dict(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, vocab_size=128, max_position_embeddings=256)

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(model_type="llama", **SMALL),
    "llama-minimal": dict(model_type="llama", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                          intermediate_size=96, vocab_size=128, max_position_embeddings=256),
    "llama-biases-tied": dict(model_type="llama", **SMALL, attention_bias=True, mlp_bias=True,
                              tie_word_embeddings=True),
    "mistral": dict(model_type="mistral", **SMALL, sliding_window=32),
    "mistral-minimal": dict(model_type="mistral", num_hidden_layers=2, hidden_size=256, num_attention_heads=16,
                            intermediate_size=96, vocab_size=128, max_position_embeddings=256),
    "mixtral": dict(model_type="mixtral", **SMALL, num_local_experts=4, num_experts_per_tok=2),
    "mixtral-minimal": dict(model_type="mixtral", num_hidden_layers=2, hidden_size=256, num_attention_heads=16,
                            intermediate_size=32, vocab_size=128, max_position_embeddings=256),
    "qwen2": dict(model_type="qwen2", **SMALL),
    "qwen3": dict(model_type="qwen3", **SMALL, head_dim=32),
    "qwen3-minimal": dict(model_type="qwen3", num_hidden_layers=2, hidden_size=64, num_attention_heads=32,
                          intermediate_size=96, vocab_size=128, max_position_embeddings=256),
    "olmo2": dict(model_type="olmo2", **SMALL),
    "llama4_text": dict(model_type="llama4_text", **SMALL, head_dim=16, intermediate_size_mlp=128,
                        num_local_experts=4, num_experts_per_tok=1, attention_chunk_size=32),
    "llama4_text-interleaved": dict(model_type="llama4_text", **{**SMALL, "intermediate_size": 48}, head_dim=16,
                                    intermediate_size_mlp=128, num_local_experts=4, num_experts_per_tok=2,
                                    interleave_moe_layer_step=2, attention_chunk_size=32, use_qk_norm=False),
    "llama4_text-minimal": dict(model_type="llama4_text", num_hidden_layers=2, hidden_size=64, num_attention_heads=8,
                                vocab_size=128, max_position_embeddings=256),
    "nemotron": dict(model_type="nemotron", **SMALL),
    "nemotron-biases": dict(model_type="nemotron", **SMALL, attention_bias=True, mlp_bias=True),
    "granite": dict(model_type="granite", **SMALL, embedding_multiplier=12.0, residual_multiplier=0.22),
    "phi3": dict(model_type="phi3", **SMALL, sliding_window=64, pad_token_id=0),
    "gemma": dict(model_type="gemma", **SMALL, head_dim=16),
    "gemma-minimal": dict(model_type="gemma", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                          num_key_value_heads=1, intermediate_size=96, vocab_size=128, max_position_embeddings=256),
    "gemma2": dict(model_type="gemma2", **SMALL, head_dim=16, sliding_window=32),
    "gemma3_text": dict(model_type="gemma3_text", **{**SMALL, "num_hidden_layers": 7}, head_dim=16,
                        sliding_window=32),
    "qwen2_moe": dict(model_type="qwen2_moe", **SMALL, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32, shared_expert_intermediate_size=48, decoder_sparse_step=2),
    "qwen2_moe-minimal": dict(model_type="qwen2_moe", num_hidden_layers=2, hidden_size=64, num_attention_heads=16,
                              intermediate_size=96, vocab_size=128, max_position_embeddings=256),
    "qwen3_moe": dict(model_type="qwen3_moe", **SMALL, head_dim=32, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32),
    "qwen3_moe-minimal": dict(model_type="qwen3_moe", num_hidden_layers=2, hidden_size=64, num_attention_heads=8,
                              intermediate_size=96, vocab_size=128, max_position_embeddings=256),
    "olmoe": dict(model_type="olmoe", **SMALL, num_experts=4, num_experts_per_tok=2),
    "deepseek_v2": dict(model_type="deepseek_v2", **SMALL, q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=16,
                        qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
                        moe_intermediate_size=32, n_shared_experts=2, first_k_dense_replace=1),
    "deepseek_v2-qlora-bias": dict(model_type="deepseek_v2", **SMALL, q_lora_rank=24, kv_lora_rank=16,
                                   qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4,
                                   num_experts_per_tok=2, moe_intermediate_size=32, attention_bias=True),
    "deepseek_v3": dict(model_type="deepseek_v3", **SMALL, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16,
                        qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
                        moe_intermediate_size=32, first_k_dense_replace=1, n_group=1, topk_group=1),
    "deepseek_v3-minimal": dict(model_type="deepseek_v3", num_hidden_layers=4, hidden_size=64,
                                num_attention_heads=4, intermediate_size=96, vocab_size=128,
                                max_position_embeddings=256, n_routed_experts=8, moe_intermediate_size=32,
                                n_group=1, topk_group=1),
    "gpt_neox": dict(model_type="gpt_neox", **{k: v for k, v in SMALL.items() if k != "num_key_value_heads"}),
    "falcon-7b-like": dict(model_type="falcon", num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
                           vocab_size=128),
    "falcon-40b-like": dict(model_type="falcon", num_hidden_layers=4, hidden_size=64, num_attention_heads=8,
                            num_kv_heads=2, new_decoder_architecture=True, vocab_size=128),
    "falcon-sequential-bias": dict(model_type="falcon", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                   multi_query=False, parallel_attn=False, bias=True, vocab_size=128),
    "starcoder2": dict(model_type="starcoder2", **SMALL),
    "gpt_oss": dict(model_type="gpt_oss", **SMALL, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                    sliding_window=32),
    "gpt2": dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=256),
    "mamba2": dict(model_type="mamba2", num_hidden_layers=3, hidden_size=64, num_heads=8, head_dim=16,
                   state_size=16, n_groups=2, vocab_size=128, expand=2),
    "jamba": dict(model_type="jamba", num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96, vocab_size=128, num_experts=4, num_experts_per_tok=2,
                  attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2),
    "nemotron_h": dict(model_type="nemotron_h", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, intermediate_size=96, vocab_size=128, mamba_num_heads=8, mamba_head_dim=16,
                       ssm_state_size=16, n_groups=2, hybrid_override_pattern="M-M*-ME", n_routed_experts=4,
                       num_experts_per_tok=2, moe_intermediate_size=32, moe_shared_expert_intermediate_size=48,
                       n_shared_experts=1),
}


def _transformers():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    transformers.logging.set_verbosity_error()
    return transformers, torch


def hf_param_count(cfg: dict[str, Any]) -> int:
    transformers, torch = _transformers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(**cfg)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_every_supported_model_type_has_a_test_config():
    assert {c["model_type"] for c in CONFIGS.values()} == set(SUPPORTED)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_equals_transformers_on_meta(name, tmp_path):
    cfg = CONFIGS[name]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = spec_from_hf_config(path)  # the file path, as the CLI reads it
    counted = count_params(spec)
    assert sum(counted.components.values()) == counted.params
    assert counted.params == hf_param_count(cfg)


def test_minimal_deepseek_v3_takes_transformers_defaults():
    # issue 12: q_lora_rank (1536), n_shared_experts (1) and first_k_dense_replace (3) as DeepseekV3Config has them
    spec = spec_from_config_dict(CONFIGS["deepseek_v3-minimal"])
    assert spec.mla.q_lora_rank == 1536 and spec.moe.shared_experts == 1 and spec.moe.first_dense_layers == 3
    assert spec.mla.kv_lora_rank == 512 and spec.moe.top_k == 8 and spec.moe_layers == 1


def test_family_defaults_as_transformers_config_classes_have_them():
    transformers, _ = _transformers()
    for mt, fam in FAMILIES.items():
        config = transformers.AutoConfig.for_model(mt)
        for key, value in fam.defaults.items():
            if value is None:
                continue  # derived in __init__ (kv heads from heads, head_dim from h / a): checked by the counts
            if not hasattr(config, key):  # a key this class does not define: napkin's default adds nothing
                assert value in (False, [], 0), f"{mt}.{key}"
                continue
            assert getattr(config, key) == value, f"{mt}.{key}"


@pytest.mark.parametrize("mt, key, value", [("mistral", "num_key_value_heads", 8),
                                            ("mixtral", "num_key_value_heads", 8),
                                            ("qwen3", "head_dim", 128), ("gemma", "head_dim", 256)])
def test_missing_keys_take_the_family_default(mt, key, value):
    cfg = {k: v for k, v in CONFIGS[f"{mt}-minimal"].items()}
    assert key not in cfg
    spec = spec_from_config_dict(cfg)
    assert {"num_key_value_heads": spec.kv_heads, "head_dim": spec.head_dim}[key] == value


BAD = [
    (dict(CONFIGS["llama"], tie_word_embeddings="false"), "tie_word_embeddings: must be true or false"),
    (dict(CONFIGS["deepseek_v3"], moe_layer_freq=2), "moe_layer_freq: 2 is not supported"),
    (dict(CONFIGS["llama"], num_dense_layers=2), "num_dense_layers: napkin does not know how this key changes"),
    (dict(CONFIGS["qwen3_moe"], mlp_only_layers=[0]), "mlp_only_layers: dense layers at listed positions"),
    (dict(CONFIGS["gemma2"], layer_types=["full_attention", "sliding_attention"] * 2),
     "layer_types: full-attention layers at [0, 2]"),
    (dict(CONFIGS["llama"], model_type="bloom"), "model_type: 'bloom' is not supported"),
    (dict(CONFIGS["llama4_text"], no_rope_layers=[1, 0]), "no_rope_layers: 2 entries for 4 layers"),
    (dict(CONFIGS["llama4_text"], no_rope_layers=5), "no_rope_layers: must be a list of whole numbers"),
    (dict(CONFIGS["llama4_text"], layer_types=["linear_attention"] * 4), "layer_types: 'linear_attention' layers"),
    (dict(CONFIGS["llama4_text"], interleave_moe_layer_step=0), "interleave_moe_layer_step: must be at least 1"),
    (dict(CONFIGS["qwen2"]), None),  # a well-formed config passes
]


@pytest.mark.parametrize("cfg, message", BAD)
def test_refusals_name_the_key(cfg, message):
    if message is None:
        spec_from_config_dict(cfg, "x/config.json")
        return
    with pytest.raises(SpecError) as err:
        spec_from_config_dict(cfg, "x/config.json")
    assert str(err.value).startswith("x/config.json: ") and message in str(err.value)


def test_multimodal_config_reads_its_text_config():
    text = {k: v for k, v in CONFIGS["gemma3_text"].items() if k != "model_type"}
    cfg = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": text,
           "vision_config": {"hidden_size": 32}}
    spec = spec_from_config_dict(cfg)
    assert spec.family == "gemma3_text" and spec.norms_per_layer == 4 and spec.qk_norm == "per_head"
    assert any("vision tower" in n for n in spec.notes)


# --- catalog entries against transformers built from their published config.json

# The shape keys of each entry's published config.json (Llama 4: the text_config of Llama4ForConditionalGeneration;
# Nemotron-4 ships a NeMo model_config.yaml, written here as the transformers config it converts to).
_SCOUT = dict(model_type="llama4_text", hidden_size=5120, intermediate_size=8192, intermediate_size_mlp=16384,
              num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8, head_dim=128, vocab_size=202048,
              num_local_experts=16, num_experts_per_tok=1, interleave_moe_layer_step=1, attention_chunk_size=8192,
              max_position_embeddings=10485760, use_qk_norm=True, attention_bias=False, hidden_act="silu",
              tie_word_embeddings=False, no_rope_layers=[],
              rope_scaling={"rope_type": "llama3", "factor": 16.0, "high_freq_factor": 1.0, "low_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192})
_MAVERICK = dict(_SCOUT, num_local_experts=128, interleave_moe_layer_step=2, max_position_embeddings=1048576,
                 use_qk_norm=False, rope_scaling=None)
_NEMOTRON4 = dict(model_type="nemotron", num_key_value_heads=8, vocab_size=256000, max_position_embeddings=4096,
                  hidden_act="relu2", partial_rotary_factor=0.5, tie_word_embeddings=False)
_OLMO2 = dict(model_type="olmo2", hidden_size=5120, num_attention_heads=40, vocab_size=100352,
              max_position_embeddings=4096, tie_word_embeddings=False)
PUBLISHED: dict[str, dict[str, Any]] = {
    "llama4-scout": _SCOUT,
    "llama4-maverick": _MAVERICK,
    "nemotron4-15b": dict(_NEMOTRON4, num_hidden_layers=32, hidden_size=6144, num_attention_heads=48,
                          intermediate_size=24576),
    "nemotron4-340b": dict(_NEMOTRON4, num_hidden_layers=96, hidden_size=18432, num_attention_heads=96,
                           intermediate_size=73728),
    "nemotron-h-8b": dict(model_type="nemotron_h", hidden_size=4096, num_hidden_layers=52,
                          hybrid_override_pattern="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=21504,
                          mamba_num_heads=128, mamba_head_dim=64, ssm_state_size=128, n_groups=8, conv_kernel=4,
                          expand=2, use_conv_bias=True, mamba_proj_bias=False, mlp_hidden_act="relu2",
                          vocab_size=131072, max_position_embeddings=8192, tie_word_embeddings=False),
    "nemotron-nano-9b-v2": dict(model_type="nemotron_h", hidden_size=4480, num_hidden_layers=56,
                                hybrid_override_pattern="M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
                                num_attention_heads=40, num_key_value_heads=8, head_dim=128, intermediate_size=15680,
                                mamba_num_heads=128, mamba_head_dim=80, ssm_state_size=128, n_groups=8,
                                conv_kernel=4, use_conv_bias=True, mamba_proj_bias=False, mlp_hidden_act="relu2",
                                vocab_size=131072, max_position_embeddings=131072, tie_word_embeddings=False),
    "mixtral-8x22b": dict(model_type="mixtral", hidden_size=6144, intermediate_size=16384, num_hidden_layers=56,
                          num_attention_heads=48, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                          vocab_size=32000, max_position_embeddings=65536, sliding_window=None,
                          tie_word_embeddings=False),
    "olmo2-13b": dict(_OLMO2, num_hidden_layers=40, num_key_value_heads=40, intermediate_size=13824),
    "olmo2-32b": dict(_OLMO2, num_hidden_layers=64, num_key_value_heads=8, intermediate_size=27648),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_catalog_entry_equals_its_config_json_and_transformers(name):
    from napkin.specs.catalog import get_model

    cfg = PUBLISHED[name]
    yaml_spec, read = get_model(name), spec_from_config_dict(cfg)
    shape = ("layers", "d_model", "heads", "n_kv_heads", "d_head", "ffn_dim", "ffn_kind", "vocab", "max_context",
             "tied_embeddings", "norm", "moe", "ssm", "block_pattern", "sliding_window", "full_attention_every",
             "chunked_attention")
    assert {k: getattr(yaml_spec, k) for k in shape} == {k: getattr(read, k) for k in shape}
    assert count_params(yaml_spec).params == count_params(read).params == hf_param_count(cfg)


def test_llama4_multimodal_config_reads_its_language_model():
    cfg = {"model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"],
           "text_config": _MAVERICK, "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 1408}}
    spec = spec_from_config_dict(cfg)
    assert spec.family == "llama4_text" and any("vision tower" in n for n in spec.notes)
    assert spec.moe_layers == 24 and spec.is_moe_layer(1) and not spec.is_moe_layer(0)
    assert (spec.sliding_window, spec.full_attention_every, spec.sliding_layers) == (8192, 4, 36)
    assert spec.chunked_attention and spec.moe.shared_experts == 1 and spec.moe.expert_ffn_dim == 8192
    assert spec.ffn_dim == 16384 and spec_from_config_dict(_SCOUT).train_seq == 8192


def test_llama4_moe_layers_off_the_interleave_are_refused():
    cfg = dict(CONFIGS["llama4_text-interleaved"], moe_layers=[0, 1])
    with pytest.raises(SpecError, match="moe_layers: MoE layers at \\[0, 1\\]"):
        spec_from_config_dict(cfg, "x/config.json")


def test_chunked_attention_context_by_hand():
    # chunks of 32: token i sees i mod 32 + 1 positions; s = 100 = 3 chunks of 32 and 4 tokens
    assert window_context(100, 32, True, chunked=True) == (3 * 32 * 33 / 2 + 4 * 5 / 2) / 100
    assert window_context(20, 32, True, chunked=True) == window_context(20, 32, True) == 10.5
    assert window_context(100, 32, False, chunked=True) == 4  # the 100th token opens the 4th chunk: 4 positions
    assert window_context(96, 32, False, chunked=True) == 32


def test_chunked_attention_flops_by_hand():
    spec = spec_from_config_dict(CONFIGS["llama4_text"])  # 4 layers: 3 chunked (w = 32), 1 global; a = 4, d = 16
    assert (spec.chunked_attention, spec.sliding_layers, spec.full_attention_every) == (True, 3, 4)
    s = 100
    out = count_flops(spec, tokens=s, seq=s)
    c, cw = (s + 1) / 2, (3 * 32 * 33 / 2 + 4 * 5 / 2) / s
    assert out.components["attention.scores"].forward == pytest.approx(2 * 4 * 16 * (1 * c + 3 * cw) * s)
    sliding = spec.model_copy(update={"chunked_attention": False})
    assert count_flops(sliding, tokens=s, seq=s).components["attention.scores"].forward > \
        out.components["attention.scores"].forward


def test_chunked_attention_needs_a_window():
    from napkin.specs.model import TransformerSpec

    fields = spec_from_config_dict(CONFIGS["llama"]).model_dump()
    with pytest.raises(ValueError, match="chunked_attention needs sliding_window"):
        TransformerSpec.model_validate({**fields, "chunked_attention": True})


# --- sliding windows: FLOPs and KV cache by hand arithmetic


def test_gemma3_windows_every_sixth_layer_global():
    spec = spec_from_config_dict(CONFIGS["gemma3_text"])  # 7 layers: 5 local, 1 global (layer 5), 1 local
    assert (spec.sliding_window, spec.full_attention_every, spec.sliding_layers) == (32, 6, 6)


def test_window_mean_context_by_hand():
    assert window_context(10, 32, True) == 5.5  # shorter than the window: (s + 1)/2
    assert window_context(100, 32, True) == (32 * 33 / 2 + 68 * 32) / 100
    assert window_context(100, 32, False) == 32


def test_sliding_attention_flops_by_hand():
    spec = spec_from_config_dict(CONFIGS["gpt_oss"])  # 4 layers, 2 sliding (w = 32), a = 4, d = 16
    s = 256
    out = count_flops(spec, tokens=s, seq=s)
    c, cw = (s + 1) / 2, (32 * 33 / 2 + (s - 32) * 32) / s
    assert out.components["attention.scores"].forward == pytest.approx(2 * 4 * 16 * (2 * c + 2 * cw) * s)
    full = count_flops(spec, tokens=s, seq=s, causal=False)  # what FlopCounterMode counts: every s×s
    assert full.components["attention.scores"].forward == pytest.approx(2 * 4 * 4 * 16 * s * s)
    decode = forward_flops_per_token(spec, 200, causal=False)
    assert decode["attention.values"] == pytest.approx(2 * 4 * 16 * (2 * 200 + 2 * 32))


def test_sliding_kv_cache_by_hand():
    spec = spec_from_config_dict(CONFIGS["gemma2"])  # 4 layers alternating, w = 32, k = 2, d = 16
    r = kv_cache(spec, context=200, batch=1)
    per_layer_token = 2 * 2 * 16 * 2  # K and V, 2 heads, d 16, bf16
    assert r.sliding_layers == 2 and r.sliding_window == 32
    assert r.bytes_per_sequence == per_layer_token * (2 * 200 + 2 * 32)
    short = kv_cache(spec, context=16)
    assert short.bytes_per_sequence == per_layer_token * 4 * 16


def test_mistral_window_in_every_layer():
    spec = spec_from_config_dict(CONFIGS["mistral"])
    assert spec.sliding_layers == spec.layers and spec.full_attention_every is None


# --- hybrid / state-space stacks


def test_mamba2_has_no_kv_cache_but_a_fixed_state():
    spec = spec_from_config_dict(CONFIGS["mamba2"])
    r = kv_cache(spec, context=1000)
    m = spec.ssm
    state = 3 * (8 * 16 * 16 + 3 * (128 + 2 * 2 * 16))  # L · (H·P·N + (K−1)·conv_dim)
    assert r.attention_layers == 0 and r.bytes_per_token == 0
    assert r.bytes_per_sequence == state * 2 == kv_cache(spec, context=10).bytes_per_sequence
    assert m.conv_dim == 128 + 2 * 2 * 16


def test_nemotron_h_pattern_counts_each_block_once():
    spec = spec_from_config_dict(CONFIGS["nemotron_h"])
    assert spec.block_pattern == "M-M*-ME" and spec.attention_layers == 1 and spec.moe_layers == 1
    flops = forward_flops_per_token(spec, 100)
    assert flops["attention.scores"] == pytest.approx(2 * 1 * 4 * 16 * 50.5)
    assert flops["ffn.dense"] == 2 * 2 * 2 * 64 * 96  # two '-' blocks, 2 matrices
    assert flops["ssm.in_proj"] == 3 * 2 * 64 * (2 * 128 + 2 * 2 * 16 + 8)
    r = kv_cache(spec, context=100)
    assert r.attention_layers == 1 and r.ssm_state_bytes_per_sequence > 0


def test_hybrid_config_goes_through_memory_step_time_and_flops(cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["nemotron_h"]))
    out = cli("memory", "--model", str(path), "--seq", "128", "--json")
    assert out.exit_code == 0, out.stderr
    names = {x["name"] for x in json.loads(out.stdout)["activations"]["per_layer"]}
    assert names & {"in_proj output", "MLP activation output", "context"}  # the heaviest kind's own tensors
    out = cli("step-time", "--model", str(path), "--gpu", "h100", "--gpus", "1", "--seq", "128", "--explain")
    assert out.exit_code == 0, out.stderr
    assert "Mamba-2 layer" in out.stdout and "attention layer" in out.stdout
    out = cli("flops", "--model", str(path), "--tokens", "1e9", "--seq", "128", "--json")
    assert out.exit_code == 0 and "ssm.scan" in json.loads(out.stdout)["components"]


# --- the sequence default of a config.json


def _llama31(**extra: Any) -> dict[str, Any]:
    return dict(model_type="llama", **{**SMALL, "max_position_embeddings": 131072}, **extra)


def test_seq_defaults_to_the_pretraining_context_of_rope_scaling():
    cfg = _llama31(rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192})
    spec = spec_from_config_dict(cfg)
    assert spec.train_seq == 8192 and spec.default_seq()[0] == 8192
    assert spec_from_config_dict(_llama31(original_max_position_embeddings=4096)).train_seq == 4096  # Phi-3 style


def test_unknown_pretraining_context_is_said_first(cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_llama31()))
    out = cli("train-time", "--model", str(path), "--tokens", "1e12", "--gpus", "8")
    assert out.exit_code == 0, out.stderr
    first = out.stderr.splitlines()[0]
    assert "does not say its pre-training context" in first and "131072" in first
    given = cli("train-time", "--model", str(path), "--tokens", "1e12", "--gpus", "8", "--seq", "4096")
    assert "pre-training context" not in given.stderr


# --- shapes on the command line


def test_shape_flags_build_llama3_8b(cli):
    out = cli("flops", "--layers", "32", "--d-model", "4096", "--heads", "32", "--kv-heads", "8", "--ffn", "14336",
              "--vocab", "128256", "--tokens", "1e9", "--json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["params"] == 8_030_261_248  # the catalog's llama3-8b, exactly


def test_shape_flags_change_a_named_model_and_moe(cli):
    out = cli("memory", "--model", "llama3-8b", "--layers", "16", "--seq", "1024", "--json")
    assert out.exit_code == 0, out.stderr
    moe = cli("flops", "--layers", "4", "--d-model", "512", "--heads", "8", "--experts", "8", "--top-k", "2",
              "--tokens", "1e6", "--seq", "128", "--json")
    assert moe.exit_code == 0, moe.stderr
    assert "ffn.experts" in json.loads(moe.stdout)["components"]


@pytest.mark.parametrize("args, message", [
    (["--d-model", "64", "--heads", "4"], "needs --layers"),
    (["--layers", "2", "--d-model", "64", "--heads", "5"], "--heads: heads (5) must divide d_model (64)"),
    (["--layers", "2", "--d-model", "64", "--heads", "4", "--experts", "4"], "--experts and --top-k go together"),
    (["--layers", "2", "--d-model", "64", "--heads", "4", "--ffn-kind", "relu"], "not an FFN kind"),
    ([], "give --model"),
])
def test_shape_errors_are_one_line(cli, args, message):
    out = cli("flops", *args, "--tokens", "1e6", "--seq", "64")
    assert out.exit_code == 2 and message in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["flops", "mfu", "memory", "inference", "step-time", "plan", "train-time",
                                     "roofline"])
def test_every_command_taking_model_takes_a_shape(cli, command):
    out = cli(command, "--help")
    assert out.exit_code == 0 and "--d-model" in out.stdout and "--offline" in out.stdout


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_model_type_is_also_a_napkin_yaml(name, tmp_path):
    """Every architecture a config.json can name can be written as a napkin model YAML and read back as the same
    spec (issue 13: each type resolves from a Hub id, a config.json and a YAML)."""
    import yaml

    from napkin.specs.model_files import load_model_file

    spec = spec_from_config_dict(CONFIGS[name])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    back = load_model_file(path)
    assert back.model_dump(exclude={"source"}) == spec.model_dump(exclude={"source"})
    assert count_params(back).params == count_params(spec).params
    assert count_flops(back, 4096, 512).model_flops == count_flops(spec, 4096, 512).model_flops
