"""Properties of the ledger (hypothesis): sharding never adds memory, recomputation never adds
activations, and the parts always add up (that no input to `napkin memory` ends in a traceback is fuzzed in
test_fuzz_cli.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import napkin
from napkin.accounting.memory import memory_ledger
from napkin.specs.model import TransformerSpec

H100 = napkin.get_hardware("h100")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def transformers(draw) -> TransformerSpec:
    kv = draw(st.sampled_from([1, 2, 4]))
    heads = kv * draw(st.sampled_from([1, 2, 4]))
    d = draw(st.sampled_from([8, 16, 64]))
    gated = draw(st.booleans())
    moe = draw(st.none() | st.builds(dict, experts=st.just(4), top_k=st.sampled_from([1, 2]),
                                     expert_ffn_dim=st.sampled_from([32, 96]), shared_experts=st.sampled_from([0, 1])))
    return TransformerSpec.model_validate(dict(
        name="gen", display_name="generated", layers=draw(st.sampled_from([1, 2, 4, 8])), d_model=heads * d,
        heads=heads, kv_heads=kv, ffn_dim=draw(st.sampled_from([32, 100, 256])),
        ffn_kind="swiglu" if gated else "mlp", activation=draw(st.sampled_from(["gelu", "silu", "relu"])),
        vocab=draw(st.sampled_from([64, 1000])), max_context=512, tied_embeddings=draw(st.booleans()),
        positions=draw(st.sampled_from(["rope", "learned"])), norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        moe=moe, sources=["hypothesis"]))


setups = st.fixed_dictionaries({
    "batch": st.integers(1, 16),
    "seq": st.sampled_from([1, 64, 1000, 4096]),
    "precision": st.sampled_from(["fp32", "bf16-mixed", "bf16-mixed-fp32-grads", "bf16", "fp8-mixed"]),
    "optimizer": st.sampled_from(["sgd", "adagrad", "adamw", "adam-8bit", "lion"]),
    "flash": st.booleans(),
    "dropout": st.booleans(),
    "fused_norm": st.booleans(),
})


def layout(spec: TransformerSpec, tp: int, pp: int) -> bool:
    return spec.n_kv_heads % tp == 0 and spec.layers % pp == 0


@FAST
@given(spec=transformers(), setup=setups, zero=st.sampled_from([1, 2, 3]), tp=st.sampled_from([1, 2]),
       pp=st.sampled_from([1, 2]), sp=st.booleans(), dp=st.integers(2, 64), more=st.integers(1, 64))
def test_more_gpus_under_zero_never_raise_per_gpu_memory(spec, setup, zero, tp, pp, sp, dp, more):
    assume(layout(spec, tp, pp))
    kw = dict(setup, zero=zero, tp=tp, pp=pp, sp=sp)
    few = memory_ledger(spec, H100, gpus=tp * pp * dp, **kw)
    many = memory_ledger(spec, H100, gpus=tp * pp * (dp + more), **kw)
    assert many.total_bytes <= few.total_bytes * (1 + 1e-12)
    state = [r.bytes for r in many.rows if r.part in ("params", "grads", "master", "optimizer")]
    assert sum(state) <= sum(r.bytes for r in few.rows if r.part in ("params", "grads", "master", "optimizer"))


@FAST
@given(spec=transformers(), setup=setups, tp=st.sampled_from([1, 2]), sp=st.booleans())
def test_recompute_never_raises_activations(spec, setup, tp, sp):
    assume(layout(spec, tp, 1))

    def kept(policy: str) -> float:
        a = memory_ledger(spec, H100, gpus=tp, tp=tp, sp=sp, recompute=policy, **setup).activations
        return a.layers_bytes + a.outside_bytes

    none, selective, full = kept("none"), kept("selective"), kept("full")
    assert full <= selective <= none


@FAST
@given(spec=transformers(), setup=setups, zero=st.sampled_from([0, 1, 2, 3]), tp=st.sampled_from([1, 2]),
       pp=st.sampled_from([1, 2, 4]), dp=st.integers(2, 8), m=st.integers(1, 8),
       recompute=st.sampled_from(["none", "selective", "full"]))
def test_ledger_parts_add_up(spec, setup, zero, tp, pp, dp, m, recompute):
    assume(layout(spec, tp, pp))
    r = memory_ledger(spec, H100, gpus=tp * pp * dp, zero=zero, tp=tp, pp=pp, micro_batches=m, recompute=recompute,
                      **setup)
    assert sum(row.bytes for row in r.rows) == pytest.approx(r.total_bytes, rel=1e-12)
    assert all(row.bytes >= 0 for row in r.rows)
    a = r.activations
    assert a.per_layer_bytes == pytest.approx(sum(x.bytes for x in a.per_layer), rel=1e-12)
    assert r.headroom_bytes == pytest.approx(r.usable_bytes - r.total_bytes)


@FAST
@given(spec=transformers(), setup=setups, extra=st.integers(1, 8))
def test_bigger_micro_batch_never_needs_less(spec, setup, extra):
    small = memory_ledger(spec, H100, **setup)
    big = memory_ledger(spec, H100, **{**setup, "batch": setup["batch"] + extra})
    assert big.total_bytes > small.total_bytes
