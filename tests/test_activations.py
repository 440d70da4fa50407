"""Activations per layer against Korthikanti et al. 2022 (Reducing Activation Recomputation in Large
Transformer Models), and the terms napkin derives for gated MLPs, RMSNorm, GQA and no dropout.

The paper's setting (§4.1): GPT block, LayerNorm, 4h GeLU MLP, dropout, 16-bit activations (2 B), 1-byte
masks. Its Table 2, per layer:
  no parallelism            sbh(34 + 5as/h)
  tensor parallel (t)       sbh(10 + 24/t + 5as/(ht))
  tensor + sequence par.    sbh/t (34 + 5as/h)
  TP + selective recompute  sbh(10 + 24/t);  TP + SP + selective: 34sbh/t
  full recompute            2sbh  (2sbh/t with SP)
The paper drops the norms' per-token statistics (8 bytes per token for LayerNorm), so they are
left out of the sums compared here.
"""

from __future__ import annotations

import pytest

from napkin.accounting import activations as act
from napkin.accounting.layers import layer_plan
from napkin.specs.model import TransformerSpec

s, b = 2048, 4  # any s, b: every term is proportional to s·b (the s² terms to s²·b)


def spec(**over) -> TransformerSpec:
    base = dict(name="gpt", display_name="GPT-style", layers=24, d_model=2048, heads=16, ffn_dim=4 * 2048,
                ffn_kind="mlp", activation="gelu", vocab=50304, max_context=2048, tied_embeddings=True,
                positions="learned", norm="layernorm", sources=["Korthikanti et al. 2022"])
    return TransformerSpec.model_validate({**base, **over})


def paper_sum(terms):
    return sum(x.bytes for x in terms if "stats" not in x.name)


GPT = spec()
h, a = GPT.d_model, GPT.heads


@pytest.mark.parametrize("t, sp, expected", [
    (1, False, s * b * h * (34 + 5 * a * s / h)),
    (2, False, s * b * h * (10 + 24 / 2 + 5 * a * s / (h * 2))),
    (8, False, s * b * h * (10 + 24 / 8 + 5 * a * s / (h * 8))),
    (8, True, s * b * h / 8 * (34 + 5 * a * s / h)),
])
def test_korthikanti_table_2_no_recompute(t, sp, expected):
    terms = act.layer_terms(GPT, s, b, bytes_per_element=2, tp=t, sp=sp, flash=False, dropout=True)
    assert paper_sum(terms) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t, sp, expected", [
    (8, False, s * b * h * (10 + 24 / 8)),
    (8, True, s * b * h * 34 / 8),
])
def test_korthikanti_selective_recompute(t, sp, expected):
    full = act.layer_terms(GPT, s, b, bytes_per_element=2, tp=t, sp=sp, flash=False, dropout=True)
    kept = act.stored(full, "selective", GPT, s, b, bytes_per_element=2, tp=t, sp=sp)
    assert paper_sum(kept) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t, sp, expected", [(1, False, 2 * s * b * h), (8, False, 2 * s * b * h),
                                             (8, True, 2 * s * b * h / 8)])
def test_korthikanti_full_recompute(t, sp, expected):
    full = act.layer_terms(GPT, s, b, bytes_per_element=2, tp=t, sp=sp, flash=False, dropout=True)
    assert act.total(act.stored(full, "full", GPT, s, b, bytes_per_element=2, tp=t, sp=sp)) == expected


def test_paper_attention_and_mlp_split():
    terms = act.layer_terms(GPT, s, b, bytes_per_element=2, flash=False, dropout=True)
    attn = paper_sum([x for x in terms if x.block == "attention" and "norm" not in x.name])
    mlp = paper_sum([x for x in terms if x.block == "mlp" and "norm" not in x.name])
    norms = paper_sum([x for x in terms if "norm input" in x.name])
    assert attn == pytest.approx(11 * s * b * h + 5 * a * s * s * b)  # §4.1 attention block
    assert mlp == pytest.approx(19 * s * b * h)  # §4.1 MLP
    assert norms == pytest.approx(4 * s * b * h)  # two LayerNorm inputs


def test_flash_attention_removes_the_s_squared_term():
    eager = act.layer_terms(GPT, s, b, bytes_per_element=2, flash=False, dropout=True)
    flash = act.layer_terms(GPT, s, b, bytes_per_element=2, flash=True, dropout=True)
    lse = sum(x.bytes for x in flash if "log-sum-exp" in x.name)
    assert lse == s * b * a * 4  # fp32 row statistics
    assert paper_sum(flash) - lse == pytest.approx(34 * s * b * h)
    assert paper_sum(eager) - paper_sum(flash) + lse == pytest.approx(5 * a * s * s * b)


def test_no_dropout_keeps_one_softmax_copy_and_no_masks():
    terms = act.layer_terms(GPT, s, b, bytes_per_element=2, flash=False, dropout=False)
    # 34 - 2 residual masks - 1 ... : masks (2sbh·1 B) and the dropped-out copy (2as²b) and its mask (as²b) go
    assert paper_sum(terms) == pytest.approx(s * b * h * 32 + 2 * a * s * s * b)


def test_gated_mlp_keeps_four_f_wide_tensors():
    llama = spec(ffn_kind="swiglu", activation="silu", ffn_dim=5504, norm="rmsnorm", positions="rope")
    mlp = [x for x in act.layer_terms(llama, s, b, bytes_per_element=2) if x.block == "mlp"]
    f_wide = [x for x in mlp if x.width == "f"]
    assert len(f_wide) == 4  # gate pre-activation, σ(gate), up, product
    assert sum(x.bytes for x in f_wide) == 4 * s * b * 5504 * 2


@pytest.mark.parametrize("kind, expected", [("mlp", 1), ("swiglu", 3)])
def test_relu_saves_its_output_once(kind, expected):
    relu = spec(ffn_kind=kind, activation="relu")
    f_wide = [x for x in act.layer_terms(relu, s, b, bytes_per_element=2) if x.width == "f"]
    assert len(f_wide) == expected


def test_rmsnorm_stats_and_composite_norm():
    rms = spec(norm="rmsnorm")
    fused = act.layer_terms(rms, s, b, bytes_per_element=2)
    composite = act.layer_terms(rms, s, b, bytes_per_element=2, fused_norm=False)
    assert act.total(composite) - act.total(fused) == 2 * s * b * h * 2  # x·rsqrt of both norms
    assert sum(x.bytes for x in fused if "stats" in x.name) == 2 * s * b * 4  # one fp32 1/rms per token and norm
    ln = act.layer_terms(GPT, s, b, bytes_per_element=2)
    assert sum(x.bytes for x in ln if "stats" in x.name) == 2 * s * b * 8  # mean and 1/σ


def test_gqa_keys_and_values():
    gqa = spec(heads=16, kv_heads=4)
    d = h // 16

    def kv(flash):
        return sum(x.bytes for x in act.layer_terms(gqa, s, b, bytes_per_element=2, flash=flash) if x.name in "KV")

    assert kv(True) == 2 * s * b * 4 * d * 2  # flash kernels read the k shared heads
    assert kv(False) == 2 * s * b * 16 * d * 2  # eager attention saves the expanded copies


def test_output_layer_keeps_fp32_log_probs_split_by_tp():
    out = act.outside_terms(GPT, s, b, bytes_per_element=2, tp=4)["output"]
    logp = next(x for x in out if x.name == "log-probabilities")
    assert logp.bytes == 4 * s * b * GPT.vocab / 4  # Korthikanti §4.3: 4sbv/t


def test_bytes_scale_with_precision():
    two = act.total(act.layer_terms(GPT, s, b, bytes_per_element=2, flash=False))
    four = act.total(act.layer_terms(GPT, s, b, bytes_per_element=4, flash=False))
    stats = sum(x.bytes for x in act.layer_terms(GPT, s, b, bytes_per_element=2) if "stats" in x.name)
    assert four - stats == pytest.approx(2 * (two - stats))


def test_moe_layer_counts_top_k_experts():
    moe = spec(ffn_kind="swiglu", activation="silu",
               moe=dict(experts=8, top_k=2, expert_ffn_dim=1024, shared_experts=1, first_dense_layers=1))
    terms = act.layer_terms(moe, s, b, bytes_per_element=2)  # default: the plan's last kind, the MoE layer
    experts = sum(x.bytes for x in terms if x.name.startswith("experts "))
    shared = sum(x.bytes for x in terms if x.name.startswith("shared experts "))
    assert experts == 4 * s * b * 2 * 1024 * 2  # 4 f-wide tensors × top_k experts per token
    assert shared == 4 * s * b * 1024 * 2
    first = layer_plan(moe).kind_at(0)
    assert first.ffn == "dense"
    dense = act.layer_terms(moe, s, b, bytes_per_element=2, kind=first)
    assert not any(x.name.startswith("experts") for x in dense)
