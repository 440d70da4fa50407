"""napkin plan's bounded search: it stops where no untimed layout can enter the top, and answers as the exhaustive one.

The bound rests on two properties of the models, each checked here on the models themselves: ``StepFloor`` never
exceeds the step ``step_time`` predicts, and the memory ledger grows with the micro-batch and shrinks with each
ZeRO stage and each heavier recomputation (the search infers a fit from a ledger already drawn).
"""

from __future__ import annotations

import itertools

import pytest

from napkin.accounting.layout import Layout, layers_per_stage
from napkin.accounting.memory import TrainingSetup, memory_ledger
from napkin.accounting.plan import plan
from napkin.accounting.plan_search import divisors, shapes_of
from napkin.accounting.step_floor import StepFloor
from napkin.accounting.step_time import default_cluster, step_time
from napkin.specs.catalog import get_hardware, get_model

H100, A100 = get_hardware("h100"), get_hardware("a100")


def _same(a, b) -> None:
    assert [r.model_dump() for r in a.top] == [r.model_dump() for r in b.top]
    assert a.winner.model_dump() == b.winner.model_dump()
    assert (a.runner_up is None) == (b.runner_up is None)
    if a.runner_up is not None:
        assert a.runner_up.model_dump() == b.runner_up.model_dump()
    assert a.why == b.why and a.megatron_flags == b.megatron_flags


@pytest.mark.parametrize("model, hw, gpus, batch, seq, kw", [
    ("llama3-8b", H100, 8, 64, 4096, {}),
    ("gpt2", H100, 8, 32, 1024, {"top": 8}),
    ("llama3-8b", A100, 16, 32, 8192, {"fix": {"tp": 2}}),
    ("llama3-8b", H100, 8, 64, 4096, {"fix": {"recompute": "full", "zero": 1}}),
])
def test_bounded_search_answers_as_the_exhaustive_one(model, hw, gpus, batch, seq, kw):
    spec = get_model(model)
    fast = plan(spec, hw, gpus=gpus, global_batch=batch, seq=seq, **kw)
    full = plan(spec, hw, gpus=gpus, global_batch=batch, seq=seq, exhaustive=True, **kw)
    _same(fast, full)
    assert fast.examined == full.examined and fast.timed < full.timed  # the bound did skip layouts


@pytest.mark.slow  # exhaustive searches of a MoE and of a 64-GPU layout space: seconds
@pytest.mark.parametrize("model, gpus, batch", [("mixtral-8x7b", 32, 128), ("llama3-70b", 64, 256)])
def test_bounded_search_answers_as_the_exhaustive_one_at_scale(model, gpus, batch):
    spec = get_model(model)
    _same(plan(spec, H100, gpus=gpus, global_batch=batch, seq=4096),
          plan(spec, H100, gpus=gpus, global_batch=batch, seq=4096, exhaustive=True))


@pytest.mark.parametrize("model, gpus, batch, seq", [("llama3-8b", 16, 64, 8192), ("mixtral-8x7b", 16, 32, 4096),
                                                     ("gpt2", 8, 16, 1024)])
def test_floor_never_exceeds_the_predicted_step(model, gpus, batch, seq):
    spec = get_model(model)
    floor = StepFloor(spec, H100, seq=seq, cluster=default_cluster(H100))
    checked = 0
    for t, c, p, v, e in shapes_of(spec, gpus, batch, seq, 8, None, {}):
        dp = gpus // (t * c * p)
        for z, b, rec in itertools.product((1, 3) if dp > 1 else (0,), divisors(batch // dp), ("none", "full")):
            lay = Layout(gpus=gpus, tp=t, pp=p, vp=v, cp=c, ep=e, sp=t > 1, zero=z)
            m = batch // dp // b
            st = step_time(spec, H100, layout=lay, micro_batch=b, global_batch=batch, seq=seq,
                           recompute=rec, overlap_grad_reduce=True, ledger=False)
            lo = floor(lay, b, m, rec)
            assert 0 < lo <= st.step_time_s * (1 + 1e-12), (lay.describe(), b, rec)
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("model, gpus", [("llama3-8b", 8), ("mixtral-8x7b", 16)])
def test_memory_grows_with_the_micro_batch_and_shrinks_with_zero_and_recompute(model, gpus):
    spec = get_model(model)
    for t, c, p, v, e in shapes_of(spec, gpus, 32, 4096, 8, None, {})[::3]:
        dp = gpus // (t * c * p)
        total = {}
        for b, z, r in itertools.product(divisors(32 // dp), (1, 2, 3) if dp > 1 else (0,), range(3)):
            lay = Layout(gpus=gpus, tp=t, pp=p, vp=v, cp=c, ep=e, sp=t > 1, zero=z, micro_batches=32 // dp // b)
            rec = ("none", "selective", "full")[r]
            total[b, z, r] = memory_ledger(spec, H100, TrainingSetup(batch=b, seq=4096, recompute=rec), lay).total_bytes
        for (b, z, r), x in total.items():
            for (b2, z2, r2), y in total.items():
                if b2 >= b and z2 <= z and r2 <= r:
                    assert y >= x * (1 - 1e-12), ((t, c, p, v, e), (b, z, r), (b2, z2, r2))


def test_a_dense_ledger_holds_at_least_its_first_stage_layers_activations():
    """The search rejects a layout without its ledger when in-flight × layers × a layer's activations (from a
    ledger of the same TP, CP, SP, micro-batch and recompute) is already over the GPU."""
    spec = get_model("llama3-8b")
    checked = 0
    for t, c, p, v, _e in shapes_of(spec, 16, 64, 4096, 8, None, {}):
        dp = 16 // (t * c * p)
        for b, rec in itertools.product(divisors(64 // dp)[:3], ("none", "full")):
            lay = Layout(gpus=16, tp=t, pp=p, vp=v, cp=c, sp=t > 1, zero=1 if dp > 1 else 0,
                         micro_batches=64 // dp // b)
            mem = memory_ledger(spec, H100, TrainingSetup(batch=b, seq=4096, recompute=rec), lay)
            assert mem.activations is not None
            first = lay.in_flight("first" if p > 1 else "only") * layers_per_stage(spec.layers, p)
            assert mem.total_bytes >= first * mem.activations.per_layer_bytes
            checked += 1
    assert checked > 30


@pytest.mark.parametrize("model", ["llama3-8b", "mixtral-8x7b"])
def test_a_stages_model_state_is_a_floor_under_every_micro_batch_and_recompute(model):
    """The ledger less its activations is the stage's model state: the same at every micro-batch and recompute,
    so the search uses one ledger's state (plus the first stage's least activations) to rule out another."""
    spec = get_model(model)
    checked = 0
    for t, c, p, v, e in shapes_of(spec, 16, 64, 4096, 8, None, {})[::4]:
        dp = 16 // (t * c * p)
        for z in (1, 3) if dp > 1 else (0,):
            seen: dict[str, float] = {}
            mems = []
            for b, rec in itertools.product(divisors(64 // dp)[:3], ("none", "selective", "full")):
                lay = Layout(gpus=16, tp=t, pp=p, vp=v, cp=c, ep=e, sp=t > 1, zero=z, micro_batches=64 // dp // b)
                mem = memory_ledger(spec, H100, TrainingSetup(batch=b, seq=4096, recompute=rec), lay)
                assert mem.activations is not None
                held = mem.total_bytes - mem.activations.total_bytes
                assert held == pytest.approx(seen.setdefault(mem.stage, held), rel=1e-12)
                mems.append(mem)
            for mem in mems:
                assert all(mem.total_bytes >= x * (1 - 1e-12) for x in seen.values())
                checked += 1
    assert checked > 20


def test_step_floor_of_any_pipeline_is_under_each_pipelines_floor():
    spec = get_model("llama3-8b")
    floor = StepFloor(spec, H100, seq=8192, cluster=default_cluster(H100))
    checked = 0
    for t, c, p, v, e in shapes_of(spec, 32, 128, 8192, 8, None, {}):
        dp = 32 // (t * c * p)
        for z, b, rec in itertools.product((1, 3) if dp > 1 else (0,), divisors(128 // dp)[:4], ("none", "full")):
            lay = Layout(gpus=32, tp=t, pp=p, vp=v, cp=c, ep=e, sp=t > 1, zero=z)
            assert floor.any_pipeline(lay, b, rec, 128) <= floor(lay, b, 128 // dp // b, rec) * (1 + 1e-12)
            checked += 1
    assert checked > 100


def test_bounded_search_takes_the_calibrated_constants_and_the_cluster(tmp_path):
    """The floor is built from the same constants and links as the timing: a calibration file and a slower
    network change both alike, and the answer stays the exhaustive one."""
    from napkin.bench.models import AllreduceBenchResult, AllreduceEnvironment, AllreduceRow
    from napkin.bench.saved import save_result
    from napkin.specs.dtypes import DType

    env = AllreduceEnvironment(backend="nccl", world_size=8, device="cuda", device_name="H100", torch_version="2.13",
                               launcher="torchrun")
    rows = [AllreduceRow(size_bytes=s, count=int(s // 2), dtype=DType.bf16, time_s=t, max_time_s=t,
                         algbw_bytes_per_s=s / t, busbw_bytes_per_s=1.75 * s / t)
            for s, t in ((1e3, 40e-6), (1e9, 1.75e9 / 60e9))]  # a slow bus: 60 GB/s at 1 GB
    path = tmp_path / "ar.json"
    save_result(AllreduceBenchResult(environment=env, method=[], iters=10, warmup_iters=2, rows=rows), path)
    spec = get_model("llama3-8b")
    kw = dict(gpus=16, global_batch=32, seq=4096, calibration=[str(path)], inter_node_bandwidth=12.5e9, max_tp=4)
    fast, full = plan(spec, H100, **kw), plan(spec, H100, exhaustive=True, **kw)
    _same(fast, full)
    assert fast.winner.inputs.constants.bus_efficiency == pytest.approx(60e9 / H100.scale_up_bandwidth_bytes_per_s)
