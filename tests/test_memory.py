"""The per-GPU ledger: the lecture's Cruncher, the parallel layouts, the CLI and its errors."""

from __future__ import annotations

import pytest

import napkin
from napkin.accounting.memory import MemoryResult, memory_ledger
from napkin.accounting.memory_solvers import (
    GpuCompareResult,
    compare_gpus,
    max_micro_batch,
    max_model_fit,
    min_gpus,
    scaled_spec,
)
from napkin.accounting.reserve import DEFAULT_RESERVE_BYTES
from napkin.errors import InputError
from napkin.specs.catalog import get_model, hardware_catalog
from napkin.specs.dtypes import DType


@pytest.fixture(scope="module")
def h100():
    return napkin.get_hardware("h100")


@pytest.fixture(scope="module")
def llama():
    return get_model("llama3-8b")


# --- the lecture's Cruncher: B=2, D=4, L=2, AdaGrad, fp32 -> 496 bytes -----------------------------------------


def test_cruncher_496_bytes(h100):
    r = memory_ledger(get_model("cruncher"), h100, batch=2, optimizer="adagrad", precision="fp32")
    by = {row.part: row.bytes for row in r.rows}
    # params D²·L + D = 36; activations B·D·L = 16; one AdaGrad state; all fp32 (4 B)
    assert by == {"params": 36 * 4, "grads": 36 * 4, "optimizer": 36 * 4, "activations": 16 * 4}
    assert r.total_bytes == 496
    assert r.params == 36


def test_cruncher_through_the_cli(cli, h100):
    args = ["memory", "--model", "cruncher", "--batch", "2", "--optimizer", "adagrad", "--precision", "fp32"]
    out = cli(*args, "--json")
    assert out.exit_code == 0, out.stderr
    api = memory_ledger(get_model("cruncher"), h100, batch=2, optimizer="adagrad", precision="fp32")
    assert MemoryResult.model_validate(out.json()) == api
    human = cli(*args)
    assert human.exit_code == 0, human.stderr
    assert "496 B" in human.stdout and "144 B" in human.stdout and "64 B" in human.stdout


# --- the ledger --------------------------------------------------------------------------------------------------


def test_parts_add_to_total_and_headroom(h100, llama):
    r = memory_ledger(llama, h100, batch=2, seq=2048, gpus=8, zero=2, tp=2, sp=True)
    assert sum(row.bytes for row in r.rows) == pytest.approx(r.total_bytes, rel=1e-12)
    assert r.headroom_bytes == pytest.approx(80e9 - DEFAULT_RESERVE_BYTES - r.total_bytes)  # the default reserve
    assert r.reserve_bytes == DEFAULT_RESERVE_BYTES and r.usable_bytes == 80e9 - DEFAULT_RESERVE_BYTES
    assert r.fits == (r.headroom_bytes >= 0)
    a = r.activations
    assert a.total_bytes == pytest.approx(a.layers_bytes + a.outside_bytes + a.working_set_bytes)
    assert a.layers_bytes == pytest.approx(llama.layers * a.per_layer_bytes)


def test_params_alone_gives_model_state_only(h100):
    r = memory_ledger(hardware=h100, params=7e9, precision="bf16-mixed", optimizer="adamw")
    assert r.activations is None
    assert r.total_bytes == pytest.approx(16 * 7e9)
    assert any("activations need an architecture" in n for n in r.notes)


def test_seq_defaults_to_the_pre_training_length(h100, llama):
    r = memory_ledger(llama, h100, batch=1)
    assert r.seq == llama.default_seq()[0]
    assert any(n.startswith("seq defaults to") for n in r.notes)


def test_tensor_parallel_divides_weights(h100, llama):
    one = memory_ledger(llama, h100, seq=1024, gpus=4, tp=1, zero=0)
    four = memory_ledger(llama, h100, seq=1024, gpus=4, tp=4, zero=0)
    assert four.params_on_gpu == pytest.approx(one.params_on_gpu / 4)
    assert four.activations.per_layer_bytes < one.activations.per_layer_bytes


def test_pipeline_first_stage_holds_in_flight_micro_batches(h100, llama):
    # 1F1B: the first of p stages keeps min(p, m) micro-batches; the last stage keeps one (and the logits)
    r = memory_ledger(llama, h100, seq=2048, gpus=4, pp=4, micro_batches=16)
    first = r if r.stage == "first" else None
    assert r.stage in ("first", "last") and r.other_stage_total_bytes is not None
    assert r.total_bytes >= r.other_stage_total_bytes
    if first is not None:
        assert first.activations.in_flight == 4
        assert first.activations.layers_on_gpu == llama.layers // 4
    few = memory_ledger(llama, h100, seq=2048, gpus=4, pp=4, micro_batches=2)
    assert max(few.total_bytes, few.other_stage_total_bytes) <= max(r.total_bytes, r.other_stage_total_bytes)


def test_recompute_adds_a_working_set_row(h100, llama):
    r = memory_ledger(llama, h100, seq=2048, recompute="full")
    work = next(row for row in r.rows if row.part == "recompute")
    a = r.activations
    assert work.bytes == pytest.approx(a.per_layer_bytes_no_recompute - a.per_layer_bytes)


def test_fp8_mixed_counts_a_cached_fp8_weight_copy(h100):
    r = memory_ledger(hardware=h100, params=1e9, precision="fp8-mixed", optimizer="adamw")
    assert r.total_bytes == pytest.approx((2 + 1 + 2 + 4 + 8) * 1e9)


# --- solvers -----------------------------------------------------------------------------------------------------


def test_max_micro_batch_is_the_boundary(h100, llama):
    setup = dict(seq=4096, gpus=8, zero=3, precision="bf16-mixed")
    r = max_micro_batch(llama, h100, **setup)
    assert r.max_batch >= 1
    assert memory_ledger(llama, h100, batch=r.max_batch, **setup).fits
    assert not memory_ledger(llama, h100, batch=r.max_batch + 1, **setup).fits
    assert r.ledger.inputs.micro_batch == r.max_batch


def test_max_micro_batch_zero_when_nothing_fits(h100):
    r = max_micro_batch(get_model("llama3-8b"), h100, seq=8192, gpus=1, precision="fp32")
    assert r.max_batch == 0 and not r.ledger.fits


def test_min_gpus_is_the_boundary(h100, llama):
    setup = dict(batch=1, seq=4096, zero=3, tp=2, precision="fp32")  # 8B · 16 B / 2 + activations > 80 GB
    r = min_gpus(llama, h100, **setup)
    assert r.gpus is not None and r.data_parallel >= 2 and r.gpus == 2 * r.data_parallel
    assert memory_ledger(llama, h100, gpus=r.gpus, **setup).fits
    fewer = r.gpus - 2
    smaller = setup if fewer // 2 > 1 else {**setup, "zero": 0}  # one data-parallel rank: nothing to shard
    assert not memory_ledger(llama, h100, gpus=fewer, **smaller).fits


def test_min_gpus_needs_no_zero_when_one_replica_fits(h100, llama):
    r = min_gpus(llama, h100, batch=1, seq=1024, zero=3, tp=4)
    assert r.gpus == 4 and r.data_parallel == 1 and r.ledger.inputs.layout.zero == 0
    assert "ZeRO is not needed" in r.notes[0]


def test_min_gpus_without_zero_cannot_shard(h100, llama):
    r = min_gpus(llama, h100, batch=1, seq=4096, zero=0, precision="fp32")
    assert r.gpus is None and "without ZeRO" in r.notes[0]


def test_max_model_with_activations_is_the_boundary(h100, llama):
    setup = dict(seq=4096, batch=1, gpus=8, zero=3, precision="bf16-mixed")
    r = max_model_fit(h100, llama, **setup)
    assert r.spec is not None and r.ledger.fits
    bigger = scaled_spec(llama, r.spec.layers + 1, r.aspect)
    assert not memory_ledger(bigger, h100, **setup).fits
    assert r.spec.d_model % r.spec.heads == 0 and r.spec.heads % r.spec.n_kv_heads == 0
    # activations only ever lower the answer against the model-state-only napkin
    state_only = napkin.max_model(h100, 8, "adamw", "bf16-mixed", zero=3)
    assert r.params < state_only.max_params


def test_compare_gpus_lists_the_catalog(h100, llama):
    hw = list(hardware_catalog())
    r = compare_gpus(llama, hw, batch=1, seq=4096, gpus=8, zero=3)
    assert isinstance(r, GpuCompareResult)
    bf16 = {h.name for h in hw if h.runs(DType.bf16)}  # a part with no published peaks (A10G) is not refused
    assert {x.gpu for x in r.rows} == bf16 and "v100-sxm2-32gb" not in bf16  # a V100 cannot run bf16-mixed
    assert "cannot run bf16-mixed" in r.notes[0]
    fp16 = compare_gpus(llama, hw, batch=1, seq=4096, gpus=8, zero=3, precision="fp16-mixed")
    assert {x.gpu for x in fp16.rows} == {h.name for h in hw if h.runs(DType.fp16)}  # TPUs: no fp16 matmuls
    for x in r.rows:
        assert x.fits == (x.headroom_bytes >= 0)
        assert x.headroom_bytes == pytest.approx(x.memory_bytes - x.total_bytes)
    assert len({round(x.total_bytes) for x in r.rows}) == 1  # the setup's needs do not depend on the GPU


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_memory_json_equals_api(cli, h100, llama):
    out = cli("memory", "--model", "llama3-8b", "--batch", "2", "--seq", "2048", "--gpus", "8", "--zero", "3",
              "--tp", "2", "--sp", "--recompute", "selective", "--json")
    assert out.exit_code == 0, out.stderr
    api = memory_ledger(llama, h100, batch=2, seq=2048, gpus=8, zero=3, tp=2, sp=True, recompute="selective")
    assert MemoryResult.model_validate(out.json()) == api


def test_memory_human_output_has_gb_and_gib(cli):
    out = cli("memory", "--model", "llama3-8b", "--batch", "1", "--seq", "4096", "--gpus", "8", "--zero", "3")
    assert out.exit_code == 0, out.stderr
    assert "GB (" in out.stdout and "GiB)" in out.stdout and "fits" in out.stdout and "P params" in out.stdout


def test_gpu_all_and_solvers_through_the_cli(cli):
    base = ["memory", "--model", "llama3-8b", "--batch", "1", "--seq", "4096", "--gpus", "8", "--zero", "3"]
    out = cli(*base, "--gpu", "all")
    assert out.exit_code == 0, out.stderr
    assert "H100" in out.stdout and "yes" in out.stdout and "no" in out.stdout
    assert cli(*base, "--max-batch", "--json").json()["max_batch"] >= 1
    assert cli(*base, "--min-gpus", "--json").json()["gpus"] >= 1
    fit = cli("max-model", "--gpus", "8", "--seq", "4096", "--batch", "1", "--precision", "bf16-mixed", "--json")
    assert fit.exit_code == 0, fit.stderr and fit.json()["params"] > 1e9


@pytest.mark.parametrize("args, message", [
    (["--model", "llama3-8b", "--gpus", "8", "--tp", "3"], "tp·pp = 3·1 = 3 must divide gpus (8)"),
    (["--model", "llama3-8b", "--gpus", "6", "--tp", "6"], "tp (6) must divide the attention heads"),
    (["--model", "llama3-8b", "--gpus", "16", "--tp", "16"], "tp (16) must divide the kv heads of llama3-8b (8)"),
    (["--model", "llama3-8b", "--gpus", "8", "--tp", "4", "--pp", "4"], "must divide gpus"),
    (["--model", "gpt2", "--gpus", "16", "--pp", "16"], "pp (16) exceeds the layers of gpt2 (12)"),
    (["--model", "llama3-8b", "--gpus", "8", "--tp", "8", "--zero", "1"], "ZeRO-1 shards over data-parallel ranks"),
    (["--model", "llama3-8b", "--zero", "3"], "DP = gpus / (tp·pp) = 1 / 1 = 1"),
    (["--model", "llama3-8b", "--batch", "0"], "micro-batch size must be greater than 0"),
    (["--model", "cruncher", "--gpus", "2", "--tp", "2"], "deep linear network"),
    (["--params", "7e9", "--gpus", "2", "--tp", "2"], "need an architecture"),
    (["--model", "llama3-8b", "--recompute", "some"], "recompute"),
    (["--model", "llama3-8b", "--precision", "bf17"], "unknown precision"),
    (["--model", "llama3-8b", "--params", "7e9"], "either a model"),
    ([], "either a model"),
])
def test_invalid_combinations_are_one_line_exit_2(cli, args, message):
    out = cli("memory", *args)
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0] and lines[0].startswith("napkin: error:")


@pytest.mark.parametrize("args, message", [
    (["--like", "cruncher"], "needs a transformer family"),
    (["--seq", "100", "--aspect", "0"], "aspect ratio must be a positive number"),
    (["--seq", "4096", "--tp", "3"], "must divide gpus (8)"),
    (["--seq", "0"], "sequence length must be greater than 0"),
])
def test_max_model_with_activations_errors(cli, args, message):
    out = cli("max-model", "--gpus", "8", *args)
    assert out.exit_code == 2
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr


def test_uneven_pipeline_counts_the_fullest_stage(h100):
    # Llama 3 405B trained with PP16 over 126 layers (Dubey et al. 2024 §3.3.2): allowed, and a stage holds
    # ⌈126 / 16⌉ = 8 layers (napkin's upper bound for the stages it shows).
    from napkin.specs.catalog import get_model

    spec = get_model("llama3.1-405b")
    r = memory_ledger(spec, h100, batch=1, seq=8192, gpus=128, tp=8, pp=16, recompute="full")
    assert r.activations is not None and r.activations.layers_on_gpu == 8


def test_max_model_and_memory_answer_the_same_question_the_same_way(h100):
    """Issue 11: `max-model --gpus 8` said 40 B fits while `memory --params 40B --gpus 8` said it did not."""
    from napkin.accounting.model_state import max_model

    mm = max_model(h100, 8)  # defaults: bf16-mixed AdamW (16 B/param), ZeRO-3
    assert mm.max_params == pytest.approx(4.0e10)  # the lecture's napkin, unchanged
    led = memory_ledger(hardware=h100, params=mm.max_params, gpus=8)  # memory's defaults are the same
    assert led.inputs.precision == mm.inputs.precision and led.inputs.layout.zero == mm.inputs.zero
    assert led.fits and led.total_bytes == pytest.approx(80e9)
    assert not memory_ledger(hardware=h100, params=mm.max_params * 1.01, gpus=8).fits


@pytest.mark.parametrize("call", ["memory", "max-model", "step-time"])
def test_a_precision_the_gpu_cannot_run_is_refused_everywhere(call):
    from napkin.accounting.model_state import max_model
    from napkin.accounting.step_time import step_time
    from napkin.specs.catalog import get_hardware

    v100 = get_hardware("v100")
    with pytest.raises(InputError, match="cannot run fp8-mixed.*fp16-mixed"):
        if call == "memory":
            memory_ledger(get_model("gpt2"), v100, seq=1024, precision="fp8-mixed")
        elif call == "max-model":
            max_model(v100, 8, precision="fp8-mixed")
        else:
            step_time(get_model("gpt2"), v100, gpus=8, seq=1024, precision="fp8-mixed")


def test_a_ledger_that_fits_only_with_full_recompute_says_so():
    from napkin.accounting.memory_solvers import memory_question
    from napkin.units import format_bytes

    ask = dict(finetune="qlora", batch=1, seq=2048)
    short = memory_question("llama3-70b", "h100", **ask)
    full = memory_question("llama3-70b", "h100", recompute="full", **ask)
    assert not short.fits and full.fits
    assert short.notes[0].startswith("With --recompute full") and format_bytes(full.total_bytes) in short.notes[0]
    assert not any("--recompute full" in n for n in full.notes)  # already recomputing: nothing to suggest
    hopeless = memory_question("llama3-70b", "h100", batch=1, seq=2048)  # full training: 1 TB short either way
    assert not hopeless.fits and not any(n.startswith("With --recompute full") for n in hopeless.notes)
