"""napkin plan: the search finds what step_time ranks fastest among layouts that fit; flags; errors."""

from __future__ import annotations

import json

import pytest
from everyday import everyday
from typer.testing import CliRunner

from napkin.accounting.memory import memory_ledger
from napkin.accounting.plan import plan
from napkin.accounting.plan_search import shapes_of
from napkin.accounting.step_time import step_time
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware, get_model

H100 = get_hardware("h100")
GPT2 = get_model("gpt2")


def test_winner_is_the_fastest_of_a_brute_force_search():
    """Every layout of gpt2 on 8 GPUs, timed without pruning: the planner's pick is the fastest that fits."""
    r = plan(GPT2, H100, gpus=8, global_batch=32, seq=1024, top=3)
    best = None
    for t, c, p, v, e in shapes_of(GPT2, 8, 32, 1024, 8, None, {}):
        dp = 8 // (t * c * p)
        for b in range(1, 32 // dp + 1):
            if (32 // dp) % b:
                continue
            for z in ([0] if dp == 1 else [0, 1, 2, 3]):
                for rec in ("none", "selective", "full"):
                    st = step_time(GPT2, H100, gpus=8, tp=t, cp=c, pp=p, vp=v, ep=e, sp=t > 1, zero=z, micro_batch=b,
                                   global_batch=32, seq=1024, recompute=rec,
                                   overlap_grad_reduce=True)  # as plan times them (the flag it emits)
                    if st.fits and (best is None or st.step_time_s < best.step_time_s - 1e-12):
                        best = st
    assert best is not None
    assert r.winner.step_time_s == pytest.approx(best.step_time_s, rel=1e-9)
    assert [row.step_time_s for row in r.top] == sorted(row.step_time_s for row in r.top)
    assert r.winner.fits and r.timed <= r.examined


def test_every_ranked_layout_fits_the_gpu():
    r = plan(get_model("llama3-70b"), H100, gpus=64, global_batch=64, seq=4096, top=5)
    for row in r.top:
        lay = row.layout
        mem = memory_ledger(get_model("llama3-70b"), H100, layout=lay, batch=row.micro_batch, seq=4096,
                            recompute=row.recompute)
        assert mem.fits and mem.total_bytes == pytest.approx(row.memory_bytes)


def test_fix_holds_a_dimension_and_flags_say_the_layout():
    r = plan(get_model("llama3-8b"), H100, gpus=16, global_batch=32, seq=4096, fix={"tp": 2, "pp": 2})
    assert all(row.layout.tp == 2 and row.layout.pp == 2 for row in r.top)
    f = r.megatron_flags
    assert "--tensor-model-parallel-size 2" in f and "--pipeline-model-parallel-size 2" in f
    assert "--sequence-parallel" in f and "--global-batch-size 32" in f
    assert "tensor_parallel_degree = 2" in r.torchtitan and "pipeline_parallel_degree = 2" in r.torchtitan


def test_moe_plans_use_expert_parallelism():
    r = plan(get_model("deepseek-v3"), H100, gpus=256, global_batch=256, seq=4096, top=3, fix={"tp": 2})
    assert r.winner.inputs.layout.ep > 1 and "--expert-model-parallel-size" in r.megatron_flags


def test_days_from_tokens_and_fewest_gpus():
    r = plan(GPT2, H100, gpus=8, global_batch=32, seq=1024, tokens=1e9)
    assert r.days == pytest.approx(1e9 / (32 * 1024) * r.winner.step_time_s / 86400)
    one = plan(GPT2, H100, gpus=8, global_batch=64, seq=1024, tokens=10e9)
    target = 0.7 * one.days
    few = plan(GPT2, H100, global_batch=64, seq=1024, tokens=10e9, days=target)
    assert few.gpus % 8 == 0 and few.gpus > 8 and few.days <= target
    fewer = plan(GPT2, H100, gpus=few.gpus - 8, global_batch=64, seq=1024, tokens=10e9)  # one node fewer: too slow
    assert fewer.days > target


@pytest.mark.parametrize("kw, msg", [
    (dict(gpus=8, global_batch=8, seq=8192, model="llama3-405b"), "smallest per-GPU footprint"),
    (dict(gpus=8, global_batch=8, seq=1024, fix={"tq": 1}), "unknown dimension"),
    (dict(global_batch=8, seq=1024), "give `gpus`"),
    (dict(gpus=26, global_batch=3, seq=1024), "no layout"),  # 12 heads, 12 layers: nothing divides 26 GPUs and B 3
])
def test_errors_are_one_line(kw, msg):
    spec = get_model(kw.pop("model", "gpt2"))
    with pytest.raises(InputError, match=msg):
        plan(spec, H100, **kw)


def _run(args):
    from napkin.cli.root import app, register

    register("plan")
    return CliRunner().invoke(app, args)


def test_cli_json_and_table():
    args = ["plan", "--model", "gpt2", "--gpus", "8", "--global-batch", "32", "--seq", "1024", "--top", "2"]
    r = _run(args + ["--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    api = plan(GPT2, H100, gpus=8, global_batch=32, seq=1024, top=2)
    assert out["winner"]["step_time_s"] == pytest.approx(api.winner.step_time_s) and len(out["top"]) == 2
    table = _run(args + ["--tokens", "1B"])
    assert table.exit_code == 0, table.output
    assert "Megatron-LM" in table.output and "torchtitan" in table.output and "why:" in table.output
    bad = _run(args + ["--fix", "tp"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output


def test_train_time_takes_a_layout_and_a_plan():
    from napkin.accounting.plan import train_time_planned
    from napkin.accounting.step_time import step_time, train_time_at_layout

    spec = get_model("llama3-8b")
    lay = dict(gpus=16, tp=2, pp=2, micro_batch=1, global_batch=32, seq=4096, recompute="selective", sp=True)
    st = step_time(spec, H100, **lay)
    tt = train_time_at_layout(spec, H100, 1e12, **lay)
    assert tt.inputs.mfu == pytest.approx(st.mfu) and tt.layout == st.layout
    assert tt.days == pytest.approx(1e12 / (32 * 4096) * st.step_time_s / 86400, rel=1e-9)  # D/(B·s) steps × t
    assert any("predicted by step-time" in n for n in tt.notes)
    planned = train_time_planned(spec, H100, 1e12, gpus=16, global_batch=32, seq=4096)
    best = plan(spec, H100, gpus=16, global_batch=32, seq=4096)
    assert planned.step_time_s == pytest.approx(best.winner.step_time_s)


def test_train_time_cli_layout_errors():
    from napkin.cli.root import app, register

    register("train-time")
    run = CliRunner().invoke
    r = run(app, ["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--tp", "8"])
    assert r.exit_code == 2 and "give --model and --tokens" in r.output
    r = run(app, ["train-time", "--model", "gpt2", "--tokens", "1e9", "--gpus", "8", "--tp", "2", "--mfu", "0.4"])
    assert r.exit_code == 2 and "leave out --mfu" in r.output
    r = run(app, ["train-time", "--model", "gpt2", "--tokens", "1e9", "--gpus", "8", "--plan"])
    assert r.exit_code == 2 and "--global-batch and --seq" in r.output
    ok = run(app, ["train-time", "--model", "gpt2", "--tokens", "1e9", "--gpus", "8", "--tp", "2", "--global-batch",
                   "16", "--seq", "1024", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["layout"].startswith("tp2")


@pytest.mark.parametrize("gpu", everyday(sorted(h.name for h in __import__("napkin").hardware_catalog()), every=5))
def test_plan_answers_on_every_catalog_gpu(gpu):
    from napkin.specs.dtypes import DType

    hw = get_hardware(gpu)
    prec = "bf16-mixed" if DType.bf16 in hw.peak_flops_per_s else "fp16-mixed"
    extra = {}
    if hw.scale_out_bandwidth_bytes_per_s is None:  # no reference network (consumer cards, TPUs): a flag gives it
        extra = {"inter_node_bandwidth": 25e9}
    if not hw.peak_flops_per_s:  # no published peak (A10G): refused in one line, never a guess
        with pytest.raises(InputError, match="no published peak"):
            plan(get_model("gpt3-1.3b"), hw, gpus=8, global_batch=16, seq=2048, precision=prec, top=2, **extra)
        return
    r = plan(get_model("gpt3-1.3b"), hw, gpus=8, global_batch=16, seq=2048, precision=prec, top=2, **extra)
    assert r.winner.fits and r.winner.step_time_s > 0
