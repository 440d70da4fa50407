"""`inference`: decode reads the weights once per step plus every sequence's KV cache; prefill is
compute-bound; decode turns compute-bound past the ridge point; TP all-reduces; memory solvers.

Hand arithmetic follows Pope et al. 2022 §2 (decode cost), Williams et al. 2009 (roofline),
Shoeybi et al. 2019 §3 (2 all-reduces per layer) and the ring all-reduce's 2(N-1)/N factor.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_specs import LLAMA2_7B, LLAMA3_70B, STARCODER, spec

from napkin.accounting.inference import ServingSetup, inference
from napkin.accounting.roofline import experts_touched, sum_max_affine
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware
from napkin.specs.model import MoESpec, TransformerSpec

# Mixtral 8x7B (Jiang et al. 2024 §2; config.json): 8 experts, top-2, GQA 8.
MIXTRAL = spec("mixtral-8x7b", layers=32, d_model=4096, heads=32, kv_heads=8, ffn_dim=14336, vocab=32000,
               max_context=32768, moe=MoESpec(experts=8, top_k=2, expert_ffn_dim=14336))

H100 = get_hardware("h100")
A100 = get_hardware("a100")

# Llama 2 7B by hand: 6,738,415,616 parameters; the untied embedding table (32000 × 4096 = 131,072,000) is
# looked up, not read whole, so a decode step reads 6,607,343,616 parameters (norms included).
L2_PARAMS, L2_EMB, L2_NORMS = 6_738_415_616, 32000 * 4096, 32 * 2 * 4096 + 4096
L2_READ = L2_PARAMS - L2_EMB
# Matmul FLOPs per token: 2 per weight of every matmul (head included, norms not) + QKᵀ and AV: 2·2·L·h per position.
L2_F0 = 2 * (L2_PARAMS - L2_EMB - L2_NORMS)
L2_F1 = 2 * 2 * 32 * 4096


def test_decode_step_llama2_7b_hand_arithmetic() -> None:
    r = inference(LLAMA2_7B, A100, ServingSetup(batch=1, prompt=5, generate=200))
    c = r.decode_first.context
    assert c == 6  # the first decode step attends over the 5 prompt tokens and itself
    assert r.decode_first.flops == L2_F0 + L2_F1 * c
    assert r.decode_first.bytes == L2_READ * 2 + c * 524_288  # bf16 weights once + the sequence's KV cache
    assert r.decode_first.memory_s == pytest.approx(r.decode_first.bytes / 2.039e12, rel=1e-12)
    assert r.decode_first.bound == "memory"
    # bf16 weights at batch 1: ~2 FLOPs per 2-byte weight, i.e. ~1 FLOP/B against A100's ridge 312e12/2.039e12 = 153.
    assert r.decode_first.intensity_flops_per_byte == pytest.approx(1.0, rel=0.01)
    assert r.ridge_flops_per_byte == pytest.approx(312e12 / 2.039e12)


def test_decode_weights_shared_across_the_batch() -> None:
    one = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=512, generate=64))
    eight = inference(LLAMA2_7B, H100, ServingSetup(batch=8, prompt=512, generate=64))
    c = one.decode_mean.context
    # Weights are read once per step whatever the batch; each sequence adds its own KV cache.
    assert eight.decode_mean.bytes - one.decode_mean.bytes == pytest.approx(7 * c * 524_288, rel=1e-12)
    assert eight.decode_mean.flops == pytest.approx(8 * one.decode_mean.flops, rel=1e-12)


def test_decode_total_is_the_sum_of_steps() -> None:
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=300, prompt=64, generate=50))
    brute = 0.0
    for c in range(65, 64 + 50):
        comp = 300 * (L2_F0 + L2_F1 * c) / 989.5e12
        mem = (L2_READ * 2 + 300 * c * 524_288) / 3.35e12
        brute += max(comp, mem)
    assert r.decode_time_s == pytest.approx(brute, rel=1e-9)
    assert r.decode_steps == 49 and r.tpot_s == pytest.approx(brute / 49, rel=1e-9)
    assert r.tokens_per_s_total == pytest.approx(300 / r.tpot_s)


def test_prefill_compute_bound_hand_arithmetic() -> None:
    P = 2048
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=P, generate=16))
    # Causal: mean (P + 1)/2 positions per token; logits for the last prompt position only.
    flops = P * (L2_F0 + L2_F1 * (P + 1) / 2) - (P - 1) * 2 * 4096 * 32000
    assert r.prefill.flops == pytest.approx(flops, rel=1e-12)
    assert r.prefill.bound == "compute"
    assert r.ttft_s == r.prefill.time_s == pytest.approx(flops / 989.5e12, rel=1e-12)
    half = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=P, generate=16, mfu=0.5))
    assert half.ttft_s == pytest.approx(2 * r.ttft_s, rel=1e-12)


def test_mbu_scales_memory_bound_decode() -> None:
    ideal = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=128, generate=32))
    real = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=128, generate=32, mbu=0.5))
    assert real.tpot_s == pytest.approx(2 * ideal.tpot_s, rel=1e-12)


def _hw_names() -> list[str]:
    return ["h100", "a100", "h200", "b200", "mi300x", "l4", "l40s", "v100-sxm2-32gb"]


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from([LLAMA2_7B, LLAMA3_70B, STARCODER]), gpu=st.sampled_from(_hw_names()),
       prompt=st.integers(1, 256), generate=st.integers(1, 32), w=st.sampled_from([None, "fp8", "int8", "int4"]),
       kv=st.sampled_from([None, "fp8"]))  # None: bf16, or fp16 on the V100 (which refuses bf16)
def test_decode_memory_bound_at_batch_1_compute_bound_past_the_ridge(model: TransformerSpec, gpu: str, prompt: int,
                                                                     generate: int, w: str | None,
                                                                     kv: str | None) -> None:
    hw = get_hardware(gpu)
    args = dict(weights_dtype=w, kv_dtype=kv)
    r1 = inference(model, hw, ServingSetup(batch=1, prompt=prompt, generate=generate, **args))
    assert r1.decode_mean.bound == "memory"
    assert r1.decode_mean.intensity_flops_per_byte < r1.effective_ridge_flops_per_byte
    crit = r1.critical_batch
    assert (crit is None) == (r1.kv_asymptotic_intensity <= r1.effective_ridge_flops_per_byte)
    if crit is None:  # the KV reads alone are below the ridge: no batch helps
        huge = ServingSetup(batch=10**6, prompt=prompt, generate=generate, **args)
        assert inference(model, hw, huge).decode_mean.bound == "memory"
        return
    big = inference(model, hw, ServingSetup(batch=math.floor(crit) + 1, prompt=prompt, generate=generate, **args))
    assert big.decode_mean.bound == "compute"
    assert big.decode_mean.intensity_flops_per_byte > big.effective_ridge_flops_per_byte
    if math.ceil(crit) - 1 >= 1 and math.ceil(crit) - 1 < crit:
        below = inference(model, hw, ServingSetup(batch=math.ceil(crit) - 1, prompt=prompt, generate=generate, **args))
        assert below.decode_mean.bound == "memory"


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 4096))
def test_decode_intensity_grows_with_batch(batch: int) -> None:
    a, b = (inference(LLAMA3_70B, H100, ServingSetup(batch=n, prompt=256, generate=8)).decode_mean
            .intensity_flops_per_byte for n in (batch, batch + 1))
    assert b > a


def test_long_context_mha_never_turns_compute_bound() -> None:
    # Llama 2 7B at 4k context: 2N / (c · 0.5 MiB) ≈ 6 FLOP/B from the KV reads, far below H100's ridge of 295.
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=3000, generate=1000))
    assert r.critical_batch is None and r.kv_asymptotic_intensity < 10
    assert any("no batch makes decode compute-bound" in n for n in r.notes)


def test_tensor_parallel_llama3_70b() -> None:
    one = inference(LLAMA3_70B, H100, ServingSetup(batch=1, prompt=128, generate=16), gpus=1)
    tp = inference(LLAMA3_70B, H100, ServingSetup(batch=1, prompt=128, generate=16), gpus=8)
    assert tp.weights_bytes == pytest.approx(one.weights_bytes / 8)
    assert tp.kv_cache_bytes == pytest.approx(one.kv_cache_bytes / 8)
    # Two all-reduces per layer of B·h·2 bytes; ring: 2(N−1)/N × S over one direction of NVLink (900e9 / 2).
    S = 1 * 8192 * 2
    assert tp.decode_mean.comm_s == pytest.approx(2 * 80 * (2 * 7 / 8 * S / 450e9), rel=1e-12)
    lat = inference(LLAMA3_70B, H100, ServingSetup(batch=1, prompt=128, generate=16), gpus=8, allreduce_latency_s=10e-6)
    assert lat.decode_mean.comm_s - tp.decode_mean.comm_s == pytest.approx(160 * 10e-6, rel=1e-9)
    assert one.decode_mean.comm_s == 0


def test_tp_refused_when_kv_heads_do_not_split() -> None:
    qwen = spec("q14", layers=48, d_model=5120, heads=40, kv_heads=8, ffn_dim=13824, vocab=152064,
                max_context=32768)
    with pytest.raises(InputError, match="KV heads"):
        inference(qwen, H100, ServingSetup(batch=1, prompt=100, generate=10), gpus=5)


def test_mqa_tp_replicates_the_cache() -> None:
    r = inference(STARCODER, H100, ServingSetup(batch=4, prompt=1000, generate=100), gpus=8)
    assert r.kv_cache_bytes == r.kv.total_bytes  # every GPU holds the single KV head
    assert any("replicated" in n for n in r.notes)


def test_context_beyond_max_refused_unless_allowed() -> None:
    with pytest.raises(InputError, match="`allow_longer`"):
        inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=4000, generate=200))
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=4000, generate=200), allow_longer=True)
    assert any("beyond the model's maximum" in n for n in r.notes)


def test_max_batch_is_the_largest_that_fits() -> None:
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=1000, generate=1000))
    b = r.max_batch
    assert b > 1
    assert inference(LLAMA2_7B, H100, ServingSetup(batch=b, prompt=1000, generate=1000)).fits
    assert not inference(LLAMA2_7B, H100, ServingSetup(batch=b + 1, prompt=1000, generate=1000)).fits


def test_max_context_is_the_largest_that_fits() -> None:
    mem = 20e9
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=4, prompt=100, generate=100), memory_bytes=mem, allow_longer=True)
    assert r.max_context_limit == "memory"
    n = r.max_context
    assert inference(LLAMA2_7B, H100, ServingSetup(batch=4, prompt=100, generate=n - 100), memory_bytes=mem,
                     allow_longer=True).fits
    assert not inference(LLAMA2_7B, H100, ServingSetup(batch=4, prompt=100, generate=n - 99), memory_bytes=mem,
                         allow_longer=True).fits
    capped = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=100, generate=100))
    assert (capped.max_context, capped.max_context_limit) == (4096, "model")


def test_weights_dtypes() -> None:
    r = inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=10, generate=10, weights_dtype="int4"))
    # GPTQ/AWQ keep the embedding, the untied head and the norms in 16-bit: Llama 2 7B has V = 32000, h = 4096, L = 32
    kept = 2 * 32000 * 4096 + (2 * 32 + 1) * 4096
    assert r.weights_bytes == (L2_PARAMS - kept) * 0.5 + kept * 2
    assert r.weights_bytes > L2_PARAMS * 0.5 + 0.35e9  # 262 M params at 2 bytes, not 0.5: ~0.39 GB more
    assert r.inputs.compute_dtype.value == "bf16"  # weight-only quantization
    fp8 = ServingSetup(batch=1, prompt=10, generate=10, weights_dtype="fp8")
    assert inference(LLAMA2_7B, H100, fp8).inputs.compute_dtype.value == "fp8"
    assert inference(LLAMA2_7B, A100, fp8).inputs.compute_dtype.value == "bf16"
    with pytest.raises(InputError, match="KV cache dtype"):
        inference(LLAMA2_7B, H100, ServingSetup(batch=1, prompt=10, generate=10, kv_dtype="int4"))


def test_moe_reads_only_the_experts_it_routes_to() -> None:
    assert experts_touched(MIXTRAL, 1) == pytest.approx(2)  # one token: exactly its top-2
    one = inference(MIXTRAL, H100, ServingSetup(batch=1, prompt=100, generate=10))
    many = inference(MIXTRAL, H100, ServingSetup(batch=512, prompt=100, generate=10))
    expert = 3 * 4096 * 14336 * 2  # one expert's 3 matrices, bf16
    # Batch 1 leaves 6 of 8 experts unread in each of the 32 layers; 512 tokens touch ~all of them.
    assert many.decode_mean.bytes - one.decode_mean.bytes == pytest.approx(
        32 * 6 * expert + 511 * one.decode_mean.context * many.kv.bytes_per_token, rel=1e-6)
    assert one.weights_bytes == one.params * 2  # all experts stay resident


@given(a0=st.floats(0, 10), a1=st.floats(-1, 1), m0=st.floats(0, 10), m1=st.floats(-1, 1), lo=st.integers(0, 50),
       n=st.integers(0, 60))
def test_sum_max_affine_matches_brute_force(a0: float, a1: float, m0: float, m1: float, lo: int, n: int) -> None:
    hi = lo + n - 1
    brute = sum(max(a0 + a1 * c, m0 + m1 * c) for c in range(lo, hi + 1))
    assert sum_max_affine((a0, a1), (m0, m1), lo, hi) == pytest.approx(brute, rel=1e-9, abs=1e-9)


def test_every_step_names_its_source() -> None:
    r = inference(LLAMA3_70B, H100, ServingSetup(batch=16, prompt=1000, generate=100), gpus=4)
    assert r.steps and all(s.source.strip() for s in r.steps)
    names = [s.name for s in r.steps]
    assert any(n.startswith("incremental MHA") for n in names) and any(n.startswith("incremental GQA") for n in names)
