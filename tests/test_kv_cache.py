"""KV cache bytes against hand arithmetic, the MQA/GQA saving, and the tensor-parallel split.

Per token and sequence the cache holds K and V for every layer and KV head: 2 · L · k · d elements
(Pope et al. 2022, Efficiently Scaling Transformer Inference, §2 and §3.3; MQA: Shazeer 2019 §2, k = 1;
GQA: Ainslie et al. 2023 §2, 1 < k < a).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from serving_specs import LLAMA2_7B, LLAMA3_70B, STARCODER, spec

from napkin.accounting.kv_cache import attention_kind, kv_bytes_per_token, kv_cache, shard_kv
from napkin.errors import InputError
from napkin.specs.model import MLASpec

# DeepSeek-V3 (§2.1.1, config.json): MLA caches the 512-wide latent plus the 64-wide RoPE key per layer.
DEEPSEEK_V3 = spec("deepseek-v3", layers=61, d_model=7168, heads=128, ffn_dim=18432, vocab=129280,
                   max_context=163840, mla=MLASpec(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                                                   qk_rope_head_dim=64, v_head_dim=128))


def test_llama2_7b_mha_hand_arithmetic() -> None:
    # 2 (K and V) × 32 layers × 32 KV heads × 128 dims × 2 bytes (bf16) = 524,288 B = 0.5 MiB per token.
    r = kv_cache(LLAMA2_7B, context=4096, batch=1)
    assert r.attention == "MHA"
    assert r.bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524_288
    # A full 4096-token sequence: 524,288 × 4096 = 2 GiB.
    assert r.bytes_per_sequence == 2 * 2**30
    assert r.saving_vs_mha == 1


def test_llama3_70b_gqa_hand_arithmetic() -> None:
    # 2 × 80 layers × 8 KV heads × 128 × 2 B = 327,680 B (320 KiB) per token; MHA would be 64 heads: 2,621,440 B.
    r = kv_cache(LLAMA3_70B, context=8192, batch=4)
    assert r.attention == "GQA"
    assert r.bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680
    assert r.bytes_per_token_mha == 2 * 80 * 64 * 128 * 2 == 2_621_440
    assert r.saving_vs_mha == 64 / 8
    assert r.total_bytes == 327_680 * 8192 * 4


def test_mqa_hand_arithmetic() -> None:
    # StarCoder, MQA: 2 × 40 layers × 1 KV head × 128 × 2 B = 20,480 B per token; MHA (48 heads) = 983,040 B.
    r = kv_cache(STARCODER, context=8192)
    assert r.attention == "MQA"
    assert r.bytes_per_token == 2 * 40 * 1 * 128 * 2 == 20_480
    assert r.bytes_per_token_mha == 983_040
    assert r.saving_vs_mha == 48


def test_mla_caches_the_latent() -> None:
    # DeepSeek-V2 §2.1.2 / V3 §2.1.1: (d_c + d_h^R) · L = (512 + 64) × 61 elements × 2 B = 70,272 B per token.
    r = kv_cache(DEEPSEEK_V3, context=1)
    assert r.attention == "MLA"
    assert r.bytes_per_token == (512 + 64) * 61 * 2 == 70_272
    # DeepSeek-V2 Table 1's MHA comparison: 2 · n_h · d_h · l with d_h = 128.
    assert r.bytes_per_token_mha == 2 * 128 * 128 * 61 * 2


def test_fp8_cache_halves_bf16() -> None:
    assert kv_bytes_per_token(LLAMA3_70B, "fp8") * 2 == kv_bytes_per_token(LLAMA3_70B, "bf16")


@given(layers=st.integers(1, 128), kv=st.integers(1, 16), groups=st.integers(1, 16), d=st.sampled_from([64, 128, 256]),
       dtype=st.sampled_from(["bf16", "fp8", "fp32"]))
def test_saving_is_heads_over_kv_heads(layers: int, kv: int, groups: int, d: int, dtype: str) -> None:
    heads = kv * groups
    s = spec("m", layers=layers, d_model=heads * d, heads=heads, kv_heads=kv, ffn_dim=4 * d, vocab=1000,
             max_context=4096)
    mha = spec("m", layers=layers, d_model=heads * d, heads=heads, kv_heads=heads, ffn_dim=4 * d, vocab=1000,
               max_context=4096)
    r = kv_cache(s, context=100, kv_dtype=dtype)
    assert r.saving_vs_mha == pytest.approx(heads / kv, rel=1e-12)
    assert kv_bytes_per_token(mha, dtype) / kv_bytes_per_token(s, dtype) == pytest.approx(heads / kv, rel=1e-12)
    assert attention_kind(s) == ("MHA" if groups == 1 else "MQA" if kv == 1 else "GQA")


def test_steps_reproduce_the_answer() -> None:
    r = kv_cache(LLAMA3_70B, context=1000, batch=2, tp=8)
    values = {s.name.split(" (")[0]: s.value for s in r.steps}
    assert values["KV cache per token"] == r.bytes_per_token
    assert values["KV cache, whole batch"] == r.total_bytes
    assert r.steps[-1].value == r.bytes_per_gpu


def test_tp_splits_kv_heads() -> None:
    r = kv_cache(LLAMA3_70B, context=1000, tp=8)
    assert (r.shard.kv_heads_per_gpu, r.shard.replicas) == (1, 1)
    assert r.bytes_per_gpu == r.total_bytes / 8
    r4 = kv_cache(LLAMA3_70B, context=1000, tp=4)
    assert r4.shard.kv_heads_per_gpu == 2 and r4.bytes_per_gpu == r.total_bytes / 4


def test_tp_beyond_kv_heads_replicates() -> None:
    # 16 GPUs, 8 KV heads: each head lives on 2 GPUs, so per-GPU KV stops falling at tp = 8.
    r = kv_cache(LLAMA3_70B, context=1000, tp=16)
    assert (r.shard.kv_heads_per_gpu, r.shard.replicas) == (1, 2)
    assert r.bytes_per_gpu == r.total_bytes / 8


def test_mqa_is_replicated_on_every_gpu() -> None:
    r = kv_cache(STARCODER, context=1000, tp=8)
    assert r.shard.replicas == 8 and r.bytes_per_gpu == r.total_bytes
    assert "replicated" in r.shard.how


def test_mla_latent_is_replicated() -> None:
    assert kv_cache(DEEPSEEK_V3, context=10, tp=8).bytes_per_gpu == kv_cache(DEEPSEEK_V3, context=10).total_bytes


def test_tp_not_dividing_kv_heads_is_refused() -> None:
    # 40 query heads split 5 ways is fine, but 8 KV heads neither split 5 ways nor replicate evenly on 5 GPUs.
    s = spec("q14", layers=48, d_model=5120, heads=40, kv_heads=8, ffn_dim=13824, vocab=152064, max_context=32768)
    with pytest.raises(InputError, match="cannot split its 8 KV heads"):
        shard_kv(s, 5)


def test_tp_not_dividing_query_heads_is_refused() -> None:
    with pytest.raises(InputError, match="do not divide its 64 query heads"):
        shard_kv(LLAMA3_70B, 3)


def test_bad_context_is_one_line() -> None:
    with pytest.raises(InputError) as e:
        kv_cache(LLAMA2_7B, context=0)
    assert "\n" not in str(e.value) and "context" in str(e.value)


@pytest.mark.parametrize("name, per_token", [
    ("llama2-7b", 2 * 32 * 32 * 128 * 2),     # MHA: kv_heads left out of the YAML means k = a
    ("llama2-70b", 2 * 80 * 8 * 128 * 2),     # GQA 8
    ("llama3-70b", 2 * 80 * 8 * 128 * 2),
    ("mistral-7b", 2 * 32 * 8 * 128 * 2),
    ("deepseek-v3", (512 + 64) * 61 * 2),     # MLA latent
])
def test_shipped_catalog_matches_hand_arithmetic(name: str, per_token: int) -> None:
    from napkin.specs.catalog import get_model

    assert kv_bytes_per_token(get_model(name)) == per_token
