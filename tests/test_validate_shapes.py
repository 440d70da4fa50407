"""`napkin bench-matmul --shapes-from MODEL`: the model's own GEMMs, timed on the CPU (tiny model, few calls).

The shapes are checked against napkin's FLOP count (they must add up to its matmul FLOPs outside attention);
the timings only for consistency, never for speed.
"""

from __future__ import annotations

import pytest
import yaml

from napkin.accounting.flops import ATTENTION_CORE, count_flops
from napkin.bench.model_gemms import PHASES, model_gemm_shapes
from napkin.bench.reference_specs import tiny_spec
from napkin.errors import InputError
from napkin.specs.catalog import get_model

MOE = {"moe": {"experts": 4, "top_k": 2, "expert_ffn_dim": 96, "shared_experts": 1, "first_dense_layers": 1}}
MLA = {"kv_heads": None, "mla": {"q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
                                 "v_head_dim": 12}}


def _gemm_flops(shapes) -> float:
    return sum(count * s.flops for _, _, s, count in shapes)


def _non_attention_flops(spec, b: int, s: int) -> float:
    fc = count_flops(spec, b * s, s)
    return sum(c.model for name, c in fc.components.items() if name not in ATTENTION_CORE)


@pytest.mark.parametrize("overrides", [{}, MLA, {"ffn_kind": "mlp", "activation": "gelu", "tied_embeddings": True}],
                         ids=["llama-like", "mla", "gpt-like"])
def test_shapes_add_up_to_napkins_matmul_flops_outside_attention(overrides):
    spec = tiny_spec(**overrides)
    shapes = model_gemm_shapes(spec, 2, 48)
    assert _gemm_flops(shapes) == _non_attention_flops(spec, 2, 48)


def test_each_weight_runs_forward_and_both_backward_gemms():
    spec = tiny_spec()  # h 64, GQA 4/2 heads of 16: k·d = 32; SwiGLU f 160; V 256
    T = 3 * 40
    shapes = {(label, phase): (s.m, s.n, s.k, count) for label, phase, s, count in model_gemm_shapes(spec, 3, 40)}
    assert shapes[("attention.k", "forward")] == (T, 32, 64, 2)  # (T × h) @ (h × k·d), once per layer
    assert shapes[("attention.k", "input grad")] == (T, 64, 32, 2)  # dX = dY·Wᵀ
    assert shapes[("attention.k", "weight grad")] == (64, 32, T, 2)  # dW = Xᵀ·dY: the tokens are the reduction
    assert shapes[("mlp.down", "forward")] == (T, 64, 160, 2)
    assert shapes[("head", "forward")] == (T, 256, 64, 1)
    assert {label for label, _ in shapes} == {"attention.q", "attention.k", "attention.v", "attention.o", "mlp.gate",
                                             "mlp.up", "mlp.down", "head"}
    assert {phase for _, phase in shapes} == set(PHASES)


def test_moe_experts_get_their_share_of_the_tokens():
    spec = tiny_spec(**MOE)
    T = 2 * 64
    shapes = {(label, phase): (s.m, count) for label, phase, s, count in model_gemm_shapes(spec, 2, 64)}
    assert shapes[("moe.experts.up", "forward")] == (T * 2 // 4, 1 * 4)  # T·top_k/E tokens, E experts, 1 MoE layer
    assert shapes[("moe.shared.up", "forward")] == (T, 1) and shapes[("mlp.up", "forward")] == (T, 1)
    assert shapes[("moe.router", "forward")] == (T, 1)
    # T·top_k divisible by E: the shapes carry exactly napkin's FLOPs
    assert _gemm_flops(model_gemm_shapes(spec, 2, 64)) == _non_attention_flops(spec, 2, 64)


# -- timed on the CPU (torch) ------------------------------------------------------------------------------------------

QUICK = {"device": "cpu", "warmup_s": 0.0, "iters": 3}


def test_timed_gemms_give_the_flop_weighted_rate():
    pytest.importorskip("torch")
    from napkin.bench.model_gemms import bench_model_gemms

    spec = tiny_spec()
    r = bench_model_gemms(spec, batch=2, seq=16, peak=1e12, **QUICK)
    assert r.tokens == 32 and r.inputs.dtype.value == "fp32"
    assert r.gemm_flops == pytest.approx(sum(row.flops for row in r.rows))
    assert r.gemm_time_s == pytest.approx(sum(row.count * row.timing.stats.median_s for row in r.rows))
    assert r.flops_per_s == pytest.approx(r.gemm_flops / r.gemm_time_s)
    assert r.mfu == pytest.approx(r.flops_per_s / 1e12)
    # one timing per distinct shape, shared by the GEMMs that have it
    distinct = {(row.shape.m, row.shape.n, row.shape.k, row.shape.layout) for row in r.rows}
    assert len({id(row.timing) for row in r.rows}) <= len(distinct) <= len(r.rows)
    assert all(row.timing.stats.iters == 3 for row in r.rows)
    fc = count_flops(spec, 32, 16)
    assert r.model_flops == fc.model_flops and r.coverage == pytest.approx(r.gemm_flops / fc.model_flops)
    assert r.coverage == pytest.approx(1 - fc.attention_flops / fc.model_flops)


def test_a_linear_net_is_refused_with_what_to_do_instead():
    pytest.importorskip("torch")
    from napkin.bench.model_gemms import bench_model_gemms

    with pytest.raises(InputError, match="needs a transformer.*--m B --k 4 --n 4"):
        bench_model_gemms(get_model("cruncher"), **QUICK)


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(layers=1).model_dump(mode="json", exclude_none=True)))
    return str(path)


def test_cli_shapes_from_a_model_file(cli, tiny_yaml):
    pytest.importorskip("torch")
    args = ["bench-matmul", "--device", "cpu", "--warmup-ms", "0", "--iters", "3", "--shapes-from", tiny_yaml,
            "--batch", "2", "--seq", "8"]
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["kind"] == "bench-matmul-model" and out["tokens"] == 16 and out["mfu"] is None
    assert {row["label"] for row in out["rows"]} >= {"attention.q", "mlp.gate", "mlp.up", "mlp.down", "head"}
    text = cli(*args, "--peak", "1T")
    assert text.exit_code == 0, text.stderr
    flat = " ".join(text.stdout.split())
    assert "achievable MFU for this model" in flat and "(--peak)" in flat
    # the table has one row per pass and shape: q and o (64→64), k and v (64→32), gate and up (64→160) share theirs
    from napkin.bench.model_gemms import ModelGemmsResult
    from napkin.render.bench import _same_gemms

    groups = _same_gemms(ModelGemmsResult.model_validate(out).rows)
    assert [name for name, _ in groups][:9:3] == ["attention.q/o", "attention.k/v", "mlp.gate/up"]
    assert len(groups) == 5 * 3 and sum(len(rows) for _, rows in groups) == len(out["rows"])


def test_cli_refuses_shapes_from_with_other_shape_options(cli, tmp_path):
    r = cli("bench-matmul", "--device", "cpu", "--shapes-from", "llama3-8b", "--size", "64")
    assert r.exit_code == 2 and "--shapes-from times the model's own shapes" in r.stderr


def test_saved_model_gemms_feed_train_time(cli, tiny_yaml, tmp_path):
    """--save of a --shapes-from run is what `train-time --mfu-from` plans with: its FLOP-weighted MFU × fraction."""
    pytest.importorskip("torch")
    path = tmp_path / "gemms.json"
    r = cli("bench-matmul", "--device", "cpu", "--warmup-ms", "0", "--iters", "3", "--shapes-from", tiny_yaml,
            "--batch", "2", "--seq", "8", "--peak", "1T", "--save", str(path), "--json")
    assert r.exit_code == 0, r.stderr
    measured = r.json()["mfu"]
    assert 0 < measured <= 1
    plan = cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--mfu-from", str(path),
               "--mfu-fraction", "0.5", "--json")
    assert plan.exit_code == 0, plan.stderr
    assert plan.json()["inputs"]["mfu"] == pytest.approx(measured * 0.5)
