"""step-time: collectives against nccl-tests' definitions, the bubble, properties, CLI = API, hostile layouts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from napkin.accounting.collectives import Link, bus_factor, collective_time, place
from napkin.accounting.kernels import StepConstants, wave_efficiency
from napkin.accounting.step_time import TERMS, step_time
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware, get_model
from napkin.specs.model import TransformerSpec

A100 = get_hardware("a100")
H100 = get_hardware("h100")


def gpt(h: int = 1024, heads: int = 16, layers: int = 8, s: int = 1024) -> TransformerSpec:
    return TransformerSpec.model_validate(dict(
        name=f"gpt-{h}-{layers}", display_name="test GPT", layers=layers, d_model=h, heads=heads, ffn_dim=4 * h,
        ffn_kind="mlp", vocab=51200, max_context=s, tied_embeddings=True, positions="learned", norm="layernorm",
        attention_bias="all", mlp_bias=True, sources=["test"]))


# --- collectives: nccl-tests doc/PERFORMANCE.md
def test_bus_factors_are_nccl_tests_definitions():
    assert bus_factor("all-reduce", 8) == pytest.approx(2 * 7 / 8)  # 1.75
    assert bus_factor("reduce-scatter", 8) == pytest.approx(7 / 8)
    assert bus_factor("all-gather", 4) == pytest.approx(3 / 4)
    assert bus_factor("all-to-all", 2) == pytest.approx(1 / 2)
    assert bus_factor("p2p", 2) == 1.0
    assert bus_factor("all-reduce", 1) == 0.0


def test_collective_time_by_hand():
    link = Link(100e9, 10e-6, "intra-node", 8)
    # 1 GB all-reduce over 8 ranks: 10 µs + 1.75 × 1e9 / 100e9 = 0.01751 s
    assert collective_time("all-reduce", 1e9, 8, link) == pytest.approx(10e-6 + 0.0175)
    # reduce-scatter + all-gather move the same bytes as the all-reduce (ZeRO / SP)
    rs_ag = collective_time("reduce-scatter", 1e9, 8, link) + collective_time("all-gather", 1e9, 8, link)
    assert rs_ag - 10e-6 == pytest.approx(collective_time("all-reduce", 1e9, 8, link))
    assert collective_time("all-reduce", 1e9, 1, link) == 0.0


def test_placement_in_megatron_order():
    intra, inter = Link(300e9, 1e-5, "intra-node", 1), Link(25e9, 2e-5, "inter-node", 1)
    assert place(8, 1, 8, intra, inter).tier == "intra-node"            # TP 8 in a DGX
    dp = place(32, 8, 8, intra, inter)                                    # DP over nodes, one member per node
    assert (dp.tier, dp.members_per_node, dp.bandwidth_bytes_per_s) == ("inter-node", 1, 25e9)
    dp4 = place(16, 2, 8, intra, inter)                                   # TP 2: 4 DP members per node share 4 NICs
    assert (dp4.members_per_node, dp4.bandwidth_bytes_per_s) == (4, 100e9)
    assert place(16, 1, 8, intra, inter).bandwidth_bytes_per_s == 200e9  # never beyond 8 NICs here
    assert place(16, 1, 8, Link(150e9, 0, "intra-node", 1), inter).bandwidth_bytes_per_s == 150e9  # capped by NVLink


def test_wave_quantization():
    assert wave_efficiency(128 * 108, 128, 108, 128, 128) == pytest.approx(1.0)  # exactly one full wave
    assert wave_efficiency(128 * 109, 128, 108, 128, 128) == pytest.approx(109 / 216)  # a 2nd wave of one tile
    assert wave_efficiency(64, 128, 108, 128, 128) == pytest.approx(64 / (108 * 128))


# --- the step
def _step(spec=None, **kw):
    args = dict(gpus=8, tp=2, pp=2, micro_batch=2, global_batch=16, seq=1024, recompute="full")
    args.update(kw)
    return step_time(spec or gpt(), A100, **args)


def test_breakdown_adds_up_to_the_step():
    r = _step()
    assert set(r.breakdown) == set(TERMS)
    assert sum(r.breakdown.values()) == pytest.approx(r.step_time_s)
    assert r.tokens_per_s == pytest.approx(16 * 1024 / r.step_time_s)
    assert r.mfu == pytest.approx(r.model_flops / (r.step_time_s * 8 * A100.peak("bf16")))
    assert r.hfu > r.mfu  # full recomputation adds hardware FLOPs


def test_bubble_is_narayanan():
    r = _step(pp=4, tp=1, gpus=8, global_batch=16, micro_batch=1)  # DP 2, m = 8
    assert r.micro_batches == 8
    stage = (r.step_time_s - r.breakdown["pp_bubble"] - r.breakdown["pp_comm"] - r.breakdown["dp_comm"]
             - r.breakdown["optimizer"]) / 8
    assert r.breakdown["pp_bubble"] == pytest.approx(3 * stage)  # (P − 1) · t_stage = (P−1)/m of m·t_stage
    vi = _step(spec=gpt(layers=8), pp=4, vp=2, tp=1, gpus=8, global_batch=16, micro_batch=1)
    assert vi.breakdown["pp_bubble"] == pytest.approx(r.breakdown["pp_bubble"] / 2, rel=1e-6)
    assert vi.breakdown["pp_comm"] > r.breakdown["pp_comm"]  # V× the sends


def test_more_bandwidth_is_never_slower():
    slow = _step(gpus=32, tp=8, pp=1, global_batch=32, micro_batch=1, inter_node_bandwidth=12.5e9)
    fast = _step(gpus=32, tp=8, pp=1, global_batch=32, micro_batch=1, inter_node_bandwidth=50e9)
    assert fast.step_time_s < slow.step_time_s
    assert fast.breakdown["dp_comm"] < slow.breakdown["dp_comm"]
    faster = _step(gpus=32, tp=8, pp=1, global_batch=32, micro_batch=1, inter_node_bandwidth=50e9,
                   intra_node_bandwidth=600e9)
    assert faster.breakdown["tp_comm"] < fast.breakdown["tp_comm"]


def test_overlap_and_recompute_directions():
    base = _step(gpus=16, tp=8, pp=1, global_batch=16, micro_batch=1)
    assert _step(gpus=16, tp=8, pp=1, global_batch=16, micro_batch=1, overlap_grad_reduce=True).step_time_s \
        <= base.step_time_s
    none = _step(recompute="none")
    assert none.breakdown["recompute"] == 0 and none.step_time_s < _step(recompute="full").step_time_s


def test_a_layout_that_does_not_fit_says_so():
    r = step_time(get_model("llama3-70b"), H100, gpus=8, tp=1, pp=1, micro_batch=1, global_batch=8, seq=4096)
    assert not r.fits and any("does not fit" in n for n in r.notes)


def test_moe_mla_and_cp_layouts_run():
    ds = step_time(get_model("deepseek-v3"), H100, gpus=1024, tp=2, pp=8, ep=16, micro_batch=1, global_batch=1024,
                   seq=4096)
    assert ds.breakdown["ep_comm"] > 0
    cp = step_time(get_model("llama3-8b"), H100, gpus=16, tp=2, cp=4, micro_batch=1, global_batch=8, seq=32768)
    assert cp.data_parallel == 2 and cp.step_time_s > 0


@pytest.mark.parametrize("kw, msg", [
    (dict(tp=3, gpus=12), "must divide the attention heads"),
    (dict(global_batch=10), "global batch 10 must be a multiple"),
    (dict(gpus=6), "must divide gpus"),
    (dict(first_stage_layers=3, pp=1), "they need `pp` 2 or more"),
    (dict(first_stage_layers=9), "do not fit 8 layers"),
    (dict(pp=4, gpus=16, first_stage_layers=1), "must split evenly over the other"),
    (dict(vp=2, embedding_in_split=True), "must split evenly over pp·vp"),
    (dict(first_stage_layers=4, loss_in_split=True), "not both"),
    (dict(ep=2), "has none"),
    (dict(cp=2, seq=1022, tp=1, gpus=8), "multiple of 4"),
])
def test_hostile_layouts_are_one_line_errors(kw, msg):
    with pytest.raises(InputError, match=msg):
        _step(**kw)


def test_constants_come_from_one_object():
    slow = _step(constants=StepConstants(gemm_efficiency=0.4))
    assert slow.breakdown["compute_gemm"] > _step().breakdown["compute_gemm"]


# --- CLI
ARGS = ["step-time", "--model", "gpt2", "--gpu", "a100", "--gpus", "8", "--tp", "2", "--pp", "2", "--micro-batch", "2",
        "--global-batch", "16", "--seq", "1024", "--recompute", "full"]


def _run(args):
    from napkin.cli.root import app, register

    register("step-time")
    return CliRunner().invoke(app, args)


def test_cli_json_equals_api():
    r = _run(ARGS + ["--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    api = step_time(get_model("gpt2"), A100, gpus=8, tp=2, pp=2, micro_batch=2, global_batch=16, seq=1024,
                    recompute="full")
    assert out["step_time_s"] == pytest.approx(api.step_time_s)
    for key in ("tokens_per_s", "mfu", "hfu", "model_tflops_per_gpu", "breakdown", "fits", "memory_bytes"):
        assert key in out


def test_cli_table_and_explain():
    r = _run(ARGS + ["--explain", "--inter-node-bandwidth", "200Gb/s"])
    assert r.exit_code == 0, r.output
    assert "where the step goes" in r.output and "pipeline bubble" in r.output and "derivation" in r.output


@pytest.mark.parametrize("extra, msg", [
    (["--tp", "5"], "must divide"), (["--inter-node-bandwidth", "fast"], "bandwidth"),
    (["--global-batch", "0"], "greater than 0"), (["--gpu", "h1000"], "h100"),
])
def test_cli_errors_are_one_line_exit_2(extra, msg):
    r = _run(ARGS + extra)
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output


# --- the layout in the memory ledger: CP splits activations, EP splits the routed experts
def test_memory_ledger_learns_cp_and_ep():
    from napkin.accounting.memory import memory_ledger

    spec = get_model("llama3-8b")
    one = memory_ledger(spec, H100, gpus=8, tp=2, seq=8192)
    cp4 = memory_ledger(spec, H100, gpus=8, tp=2, cp=4, seq=8192)
    assert cp4.activations.layers_bytes == pytest.approx(one.activations.layers_bytes / 4)  # s/cp tokens per GPU
    ds = get_model("deepseek-v3")
    e1 = memory_ledger(ds, H100, gpus=256, tp=2, pp=8, seq=4096)
    e8 = memory_ledger(ds, H100, gpus=256, tp=2, pp=8, ep=8, seq=4096)
    assert e8.params_on_gpu < e1.params_on_gpu / 4  # routed experts dominate DeepSeek-V3's parameters
    with pytest.raises(InputError, match="must divide the routed experts"):
        memory_ledger(ds, H100, gpus=768, tp=2, pp=8, ep=48, seq=4096)  # DP 48; 256 experts / 48


def test_layer_plan_is_the_one_shape_source():
    from napkin.accounting.layers import layer_plan
    from napkin.accounting.params import count_params

    for name in ("llama3-8b", "deepseek-v3", "gpt2"):
        spec = get_model(name)
        plan = layer_plan(spec)
        assert sum(k.count for k in plan.kinds) == spec.layers
        body = sum(k.count * k.params for k in plan.kinds)
        pc = count_params(spec)
        outside = pc.components["norms.final"] + sum(plan.embedding_params.values()) + pc.components.get("head", 0)
        assert body + outside == pc.params  # the plan's layers and what is outside them add up to the count


def _precision_for(hw):
    from napkin.specs.dtypes import DType

    return "bf16-mixed" if DType.bf16 in hw.peak_flops_per_s else "fp16-mixed"


@pytest.mark.parametrize("gpu", sorted(h.name for h in __import__("napkin").hardware_catalog()))
@pytest.mark.parametrize("model, layout", [
    ("gpt2", dict(gpus=16, tp=2, pp=2, vp=2, micro_batch=2, global_batch=32, seq=1024, sp=True)),   # dense, MHA
    ("llama3-8b", dict(gpus=16, tp=2, cp=2, micro_batch=1, global_batch=8, seq=8192, zero=3)),        # GQA, CP
    ("deepseek-v3", dict(gpus=512, tp=2, pp=8, ep=8, micro_batch=1, global_batch=64, seq=4096,       # MoE + MLA
                         recompute="full", zero=1)),
])
def test_every_catalog_gpu_and_architecture(gpu, model, layout):
    hw = get_hardware(gpu)
    if hw.scale_out_bandwidth_bytes_per_s is None:  # no reference network (consumer cards, TPUs): asked for
        with pytest.raises(InputError, match="no scale-out bandwidth in its profile"):
            step_time(get_model(model), hw, precision=_precision_for(hw), **layout)
        layout = {**layout, "inter_node_bandwidth": 25e9}
    if not hw.peak_flops_per_s:  # no published peak (A10G): said in one line, never a guess
        with pytest.raises(InputError, match="no published peak"):
            step_time(get_model(model), hw, precision=_precision_for(hw), **layout)
        return
    r = step_time(get_model(model), hw, precision=_precision_for(hw), **layout)
    assert r.step_time_s > 0 and 0 < r.mfu < 1 and sum(r.breakdown.values()) == pytest.approx(r.step_time_s)


def test_a_config_json_model(tmp_path):
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=1024, intermediate_size=2816,
               num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
               max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="silu")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = _run(["step-time", "--model", str(path), "--gpus", "8", "--tp", "4", "--micro-batch", "2", "--global-batch",
              "8", "--seq", "2048", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["step_time_s"] > 0


def test_calibration_from_a_real_cpu_measurement(tmp_path):
    """bench-matmul --save on this CPU, then step-time --calibration: the GEMM efficiency drops to what was measured."""
    pytest.importorskip("torch")
    from napkin.bench.matmul import bench_matmul
    from napkin.bench.saved import save_result

    m = bench_matmul(size=256, dtype="bf16", device="cpu", warmup_s=0.01, iters=3)
    path = tmp_path / "gemm.json"
    save_result(m, path)
    with pytest.raises(InputError, match="no catalog GPU: it cannot calibrate"):  # a CPU says nothing of an A100
        _step(gpus=8, tp=1, pp=1, global_batch=16, calibration=str(path))
    m = bench_matmul(size=256, dtype="bf16", device="cpu", warmup_s=0.01, iters=3, gpu=A100.name)  # asked: named
    save_result(m, path)
    plain = _step(gpus=8, tp=1, pp=1, global_batch=16)
    cal = _step(gpus=8, tp=1, pp=1, global_batch=16, calibration=str(path))
    assert cal.breakdown["compute_gemm"] > plain.breakdown["compute_gemm"]  # a CPU is slower than an A100's model
    assert any("calibrated from" in n for n in cal.notes)
    assert cal.inputs.constants.gemm_efficiency < 0.87
    with pytest.raises(InputError, match="computes in fp16"):
        _step(gpus=8, tp=1, pp=1, global_batch=16, calibration=str(path), precision="fp16-mixed")


def test_calibration_from_an_allreduce_file(tmp_path):
    from napkin.bench.models import AllreduceBenchResult, AllreduceEnvironment, AllreduceRow
    from napkin.bench.saved import save_result
    from napkin.specs.dtypes import DType

    env = AllreduceEnvironment(backend="nccl", world_size=8, device="cuda", device_name="A100", torch_version="2.13",
                               launcher="torchrun")
    rows = [AllreduceRow(size_bytes=s, count=int(s // 2), dtype=DType.bf16, time_s=t, max_time_s=t,
                         algbw_bytes_per_s=s / t, busbw_bytes_per_s=1.75 * s / t)
            for s, t in ((1e3, 20e-6), (1e9, 1.75e9 / 150e9))]  # 150 GB/s busbw at 1 GB, 20 µs at 1 kB
    r = AllreduceBenchResult(environment=env, method=[], iters=10, warmup_iters=2, rows=rows)
    path = tmp_path / "ar.json"
    save_result(r, path)
    cal = _step(calibration=str(path))
    assert cal.inputs.constants.bus_efficiency == pytest.approx(150e9 / 300e9)
    assert cal.inputs.constants.intra_latency_s == pytest.approx(20e-6)


def test_gpu_all_asks_every_catalog_gpu():
    from napkin.cli.root import app, register

    for cmd in ("train-time", "step-time", "inference"):
        register(cmd)
    run = CliRunner().invoke
    tt = run(app, ["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--gpu", "all", "--json"])
    assert tt.exit_code == 0, tt.output
    rows = {r["gpu"]: r for r in json.loads(tt.output)["rows"]}
    assert rows["h100-sxm"]["result"]["days"] == pytest.approx(143.9266, rel=1e-5)  # the lecture's answer
    assert rows["v100-sxm2-32gb"]["error"] and "bf16" in rows["v100-sxm2-32gb"]["error"]
    st = run(app, ["step-time", "--model", "gpt2", "--gpus", "8", "--tp", "2", "--seq", "1024", "--gpu", "all"])
    assert st.exit_code == 0 and "h100-sxm" in st.output and "v100-sxm2-32gb: " in st.output
    inf = run(app, ["inference", "--model", "llama3-8b", "--gpu", "all", "--json"])
    assert inf.exit_code == 0 and len(json.loads(inf.output)["rows"]) >= 14
