"""Issue 22 "Done when": the published layouts of production runs are accepted, explained and priced.

Each case enters a layout as its framework runs it (uneven pipelines, EP over TP×DP with its own ETP/EDP, FSDP over
CP, HSDP, FP8, activation offload) and checks what follows from the layout, not a stored answer.
"""

from __future__ import annotations

import pytest

from napkin.accounting.layers import layer_plan
from napkin.accounting.layout import Layout, stage_counts
from napkin.accounting.memory import memory_ledger
from napkin.accounting.step_time import step_time
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware, get_model

H100 = get_hardware("h100")
GB200 = get_hardware("gb200")


def _explained(st) -> None:
    assert st.step_time_s > 0 and st.mfu > 0 and st.fits is not None
    assert any(s.key.startswith("derived-groups") for s in st.steps)


def test_llama31_405b_tp8_pp16_vp8_with_embedding_and_loss_in_the_split():
    spec = get_model("llama3.1-405b")
    lay = Layout(gpus=16384, tp=8, pp=16, vp=8, embedding_in_split=True, loss_in_split=True, zero=1, sp=True,
                 micro_batches=16)
    stages = lay.stages(spec.layers)
    # (126 + 2) / (16 · 8) = 1 slot per chunk; the embedding and the loss take the first and last chunks' slots
    assert [st.layers for st in stages] == [7] + [8] * 14 + [7]
    assert stages[0].chunks[0] == (0, 0) and stages[-1].chunks[-1] == (126, 126)
    # interleaved: stage i holds 2(P−i−1) + (V−1)·P + 1 chunk micro-batches (Megatron-core schedules)
    assert sum(lay.model_copy(update={"micro_batches": 64}).chunk_in_flight(1)) == 2 * 14 + 7 * 16 + 1
    assert sum(lay.chunk_in_flight(1)) == 16 * 8  # capped at m·V
    st = step_time(spec, H100, layout=lay.model_copy(update={"micro_batches": 1}), micro_batch=1, global_batch=2048,
                   seq=8192, recompute="full")
    _explained(st)
    assert st.fits and st.micro_batches == 16
    mem = memory_ledger(spec, H100, layout=lay, seq=8192, recompute="full")
    assert mem.stage_layers == [7] + [8] * 14 + [7] and mem.fits
    assert mem.other_stage_total_bytes is not None and mem.total_bytes >= mem.other_stage_total_bytes
    # Megatron-LM refuses pp·vp not dividing L without the embedding/loss slots; napkin splits as torchtitan does
    plain = Layout(gpus=16384, tp=8, pp=16, vp=8, zero=1, micro_batches=16)
    assert sum(st.layers for st in plain.stages(spec.layers)) == 126


def test_deepseek_v3_pp16_ep64_with_uneven_first_and_last_stages():
    spec = get_model("deepseek-v3")
    st = step_time(spec, H100, gpus=2048, tp=1, pp=16, ep=64, first_stage_layers=3, last_stage_layers=2, zero=1,
                   micro_batch=1, global_batch=4096, seq=4096, recompute="full")
    _explained(st)
    assert st.fits
    lay = st.inputs.layout
    stages = lay.stages(spec.layers)
    assert [s.layers for s in stages] == [3] + [4] * 14 + [2]
    plan = layer_plan(spec)
    assert {k.key for k, _ in stage_counts(plan, stages[0])} == {"latent+dense"}  # the three dense layers
    # the slowest stage is a full MoE stage of four layers, not a ⌈61/16⌉ guess on the first and last
    assert max(s.layers for s in st.stages) == 4
    assert lay.expert_dp == 2  # EDP = TP·CP·DP / (ETP·EP) = 128 / 64


def test_qwen3_235b_ep32_over_dp16_is_accepted_with_its_expert_groups():
    spec = get_model("qwen3-235b-a22b")
    st = step_time(spec, H100, gpus=256, tp=2, pp=8, ep=32, etp=1, zero=1, sp=True, micro_batch=1, global_batch=512,
                   seq=4096, recompute="full")
    _explained(st)
    lay = st.inputs.layout
    assert (lay.dp, lay.ep, lay.expert_tp, lay.expert_dp) == (16, 32, 1, 1)
    assert [s.layers for s in lay.stages(spec.layers)] == [12] * 6 + [11, 11] or sum(
        s.layers for s in lay.stages(spec.layers)) == 94
    mem = memory_ledger(spec, H100, layout=lay.model_copy(update={"micro_batches": st.micro_batches}), seq=4096,
                        recompute="full")
    assert mem.groups["expert_dp"] == 1 and mem.groups["expert_tp"] == 1
    with pytest.raises(InputError, match="etp·ep"):  # EP·ETP must fold into TP·CP·DP
        step_time(spec, H100, gpus=256, tp=2, pp=8, ep=64, etp=1, micro_batch=1, global_batch=512, seq=4096)


def test_torchtitan_fsdp_over_cp8_on_an_8b():
    spec = get_model("llama3-8b")
    mem = memory_ledger(spec, H100, gpus=8, cp=8, zero=3, seq=131072, recompute="full")
    assert mem.data_parallel == 1 and mem.groups["shard"] == 8  # "FSDP 1, CP 8": dp_shard_cp = 8
    params = next(r for r in mem.rows if r.part == "params")
    assert params.sharded_over_dp and params.bytes == pytest.approx(mem.params * 2 / 8, rel=1e-6)
    st = step_time(spec, H100, gpus=8, cp=8, zero=3, micro_batch=1, global_batch=1, seq=131072, recompute="full")
    _explained(st)
    assert st.fits and st.breakdown["cp_comm"] >= 0


def test_a_70b_hsdp_run_shards_inside_each_replica():
    spec = get_model("llama3-70b")
    full = memory_ledger(spec, H100, gpus=128, zero=3, seq=4096, recompute="full")
    hsdp = memory_ledger(spec, H100, gpus=128, zero=3, dp_shard=32, seq=4096, recompute="full")
    assert hsdp.groups["replicate"] == 4 and hsdp.groups["shard"] == 32
    p_full = next(r.bytes for r in full.rows if r.part == "params")
    p_hsdp = next(r.bytes for r in hsdp.rows if r.part == "params")
    assert p_hsdp == pytest.approx(p_full * 128 / 32, rel=1e-9)
    st = step_time(spec, H100, gpus=128, zero=3, dp_shard=32, micro_batch=1, global_batch=128, seq=4096,
                   recompute="full")
    _explained(st)
    assert st.fits and "hsdp 4×32" in st.layout
    with pytest.raises(InputError, match="dp_shard"):
        memory_ledger(spec, H100, gpus=64, zero=3, dp_shard=24, seq=4096)


def test_a_70b_on_gb200_fits_with_activation_offload():
    spec = get_model("llama3-70b")
    kw = dict(gpus=64, tp=2, pp=4, vp=5, zero=1, micro_batch=1, global_batch=128, seq=8192)
    without = step_time(spec, GB200, **kw)
    offloaded = step_time(spec, GB200, offload_layers=20, **kw)
    assert not without.fits and offloaded.fits
    _explained(offloaded)
    lay = offloaded.inputs.layout
    mem = memory_ledger(spec, GB200, layout=lay, seq=8192)
    o = mem.activation_offload
    assert o is not None and o.layers == 20 and o.host_bytes > 0
    assert o.to_host_bytes_per_step == pytest.approx(lay.micro_batches * 20 * mem.activations.per_layer_bytes)
    assert o.transfer_time_s == pytest.approx(o.to_host_bytes_per_step / GB200.host_link_bandwidth_bytes_per_s)
    row = next(r for r in mem.rows if r.part == "activations")
    assert row.bytes == pytest.approx(mem.activations.layers_bytes - o.host_bytes + o.buffer_bytes, rel=1e-9)


def test_zero3_with_expert_parallelism_gathers_experts_over_their_own_group():
    spec = get_model("deepseek-v3")
    kw = dict(gpus=256, tp=1, pp=4, ep=64, micro_batch=1, global_batch=1024, seq=4096, recompute="full", ledger=False)
    z1 = step_time(spec, H100, zero=1, **kw)
    z3 = step_time(spec, H100, zero=3, **kw)
    # EDP = 64 / 64 = 1: the experts are not gathered at all; the dense weights over DP = 64 hide behind compute
    assert z3.inputs.layout.expert_shard == 1
    assert z3.step_time_s < 1.2 * z1.step_time_s


def test_fp8_rows_keep_gemm_inputs_in_fp8_and_no_weight_copy_under_fsdp():
    spec = get_model("llama3-8b")
    bf16 = memory_ledger(spec, H100, gpus=8, zero=3, seq=8192, precision="bf16-mixed")
    fp8 = memory_ledger(spec, H100, gpus=8, zero=3, seq=8192, precision="fp8-mixed")
    assert fp8.total_bytes < bf16.total_bytes
    assert not any("cached" in r.label for r in fp8.rows)  # FSDP casts the gathered layer: no resident copy
    names = {x.name: x for x in fp8.activations.per_layer}
    assert names["QKV input (fp8)"].bytes_per_element == 1 and names["pre-attention norm input"].bytes_per_element == 2
    z1 = memory_ledger(spec, H100, gpus=8, zero=1, seq=8192, precision="fp8-mixed")
    assert any("cached fp8" in r.label for r in z1.rows)  # resident weights keep the fp8 copy across micro-batches


@pytest.mark.parametrize("args", [
    ["memory", "--model", "llama3.1-405b", "--gpus", "16384", "--tp", "8", "--pp", "16", "--vp", "8",
     "--embedding-in-split", "--loss-in-split", "--seq", "8192", "--zero", "1", "--recompute", "full"],
    ["step-time", "--model", "qwen3-235b-a22b", "--gpus", "256", "--tp", "2", "--pp", "8", "--ep", "32", "--etp", "1",
     "--zero", "1", "--seq", "4096", "--global-batch", "512", "--recompute", "full"],
    ["memory", "--model", "llama3-70b", "--gpus", "128", "--zero", "3", "--dp-shard", "32", "--seq", "4096"],
    ["step-time", "--model", "deepseek-v3", "--gpus", "2048", "--pp", "16", "--ep", "64", "--first-stage-layers", "3",
     "--last-stage-layers", "2", "--zero", "1", "--seq", "4096", "--global-batch", "4096", "--recompute", "full"],
    ["memory", "--model", "llama3-70b", "--gpu", "gb200", "--gpus", "64", "--tp", "2", "--pp", "4", "--vp", "5",
     "--zero", "1", "--seq", "8192", "--micro-batches", "16", "--offload-layers", "20"],
])
def test_the_cli_takes_the_new_layout_flags_and_explains_the_groups(cli, args):
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    j = r.json()
    groups = j.get("groups") or next(s for s in j["steps"] if s["key"].startswith("derived-groups"))
    assert groups
    e = cli(*args, "--explain")
    assert e.exit_code == 0 and ("derived groups" in e.stdout or "ranks that shard" in e.stdout
                                 or "Pipeline split" in e.stdout or "offload" in e.stdout)


def test_bad_new_flags_are_one_line_errors(cli):
    for args, msg in ((["--first-stage-layers", "100"], "do not fit"), (["--dp-shard", "3"], "dp_shard"),
                      (["--etp", "2"], "has none"), (["--offload-layers", "99"], "offload")):
        r = cli("memory", "--model", "llama3-8b", "--gpus", "8", "--pp", "2", "--zero", "1", *args)
        assert r.exit_code == 2 and msg.replace("_", "-") in r.stderr.replace("_", "-"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_train_time_takes_the_production_layout_flags(cli):
    """train-time with a layout prices it with step_time: the new layout flags reach it, and alone are refused."""
    base = ["train-time", "--model", "llama3-70b", "--tokens", "15T", "--gpus", "128", "--tp", "4", "--pp", "2",
            "--global-batch", "512", "--seq", "8192", "--zero", "3"]
    hsdp = cli(*base, "--dp-shard", "8", "--json")
    plain = cli(*base, "--json")
    assert hsdp.exit_code == 0 and plain.exit_code == 0, hsdp.stderr + plain.stderr
    assert "hsdp" in hsdp.json()["layout"] and "hsdp" not in plain.json()["layout"]
    alone = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--dp-shard", "4")
    assert alone.exit_code == 2 and "--dp-shard would be ignored" in alone.stderr
