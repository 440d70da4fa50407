"""Setup objects and the one-call-per-command entry points (issue 16, a thin CLI).

The ledger, its solvers and inference take setup objects (TrainingSetup, Layout, FinetuneSetup, ServingSetup);
their keyword form must build the very same objects. Each command whose flags choose between calculations
calls one library function that makes the choice: memory_question, max_model_question, train_time_question,
matmul_question. The answers here are compared with the functions they dispatch to, not with numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import napkin
from napkin.accounting.finetune import FinetuneSetup
from napkin.accounting.inference import ServingSetup, inference
from napkin.accounting.layout import Layout
from napkin.accounting.memory import TrainingSetup, ledger_setup, memory_ledger
from napkin.accounting.memory_solvers import (
    DEFAULT_TEMPLATE,
    compare_gpus,
    counts_activations,
    max_micro_batch,
    max_model_fit,
    max_model_question,
    memory_question,
    min_gpus,
)
from napkin.accounting.model_state import max_model
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware, get_model, hardware_catalog

H100 = get_hardware("h100")
LLAMA = get_model("llama3-8b")


def _same(a, b) -> None:
    """Two results are the same answer: equal JSON (inputs, steps, notes and every figure)."""
    assert json.loads(a.model_dump_json()) == json.loads(b.model_dump_json())


# --- the ledger: objects or keywords, one answer -----------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 4), seq=st.sampled_from([512, 2048]), tp=st.sampled_from([1, 2]),
       pp=st.sampled_from([1, 2]), dp=st.sampled_from([1, 2, 4]), zero=st.sampled_from([None, 0, 1, 3]),
       recompute=st.sampled_from(["none", "selective", "full"]), finetune=st.sampled_from(["full", "lora", "qlora"]))
def test_objects_and_keywords_give_the_same_ledger(batch, seq, tp, pp, dp, zero, recompute, finetune):
    gpus = tp * pp * dp
    if zero and dp == 1:
        zero = 0
    by_kw = memory_ledger(LLAMA, H100, batch=batch, seq=seq, gpus=gpus, tp=tp, pp=pp, zero=zero, recompute=recompute,
                          finetune=finetune, micro_batches=2)
    default = 3 if dp > 1 else 0  # the ledger's ZeRO default: 3 over more than one data-parallel rank
    layout = Layout(gpus=gpus, tp=tp, pp=pp, zero=default if zero is None else zero, micro_batches=2)
    by_obj = memory_ledger(LLAMA, H100, TrainingSetup(batch=batch, seq=seq, recompute=recompute), layout,
                           FinetuneSetup(finetune=finetune))
    _same(by_kw, by_obj)
    assert by_obj.inputs.layout == layout and by_obj.inputs.micro_batch == batch and by_obj.inputs.finetune == finetune


def test_ledger_setup_is_the_one_place_keywords_become_objects():
    t, lay, tune = ledger_setup(None, None, "lora", {"seq": 1024, "gpus": 8, "tp": 2, "lora_rank": 8})
    assert t == TrainingSetup(seq=1024)
    assert lay == Layout(gpus=8, tp=2, zero=3)  # DP 4: ZeRO-3 by default
    assert tune == FinetuneSetup(finetune="lora", lora_rank=8)
    assert ledger_setup(None, None, None, {"gpus": 8, "tp": 8})[1].zero == 0  # DP 1: nothing to shard
    assert ledger_setup(None, None, None, {"gpus": 1}, zero=3)[1].zero == 3  # a solver's own default


@pytest.mark.parametrize("call", [
    lambda: memory_ledger(LLAMA, H100, TrainingSetup(seq=1024), seq=2048),
    lambda: memory_ledger(LLAMA, H100, layout=Layout(gpus=8), gpus=8),
    lambda: memory_ledger(LLAMA, H100, finetune=FinetuneSetup(finetune="lora"), lora_rank=8),
    lambda: inference(LLAMA, H100, ServingSetup(batch=1, prompt=8, generate=8), batch=2),
])
def test_a_setup_given_twice_is_refused(call):
    with pytest.raises(InputError, match="not both"):
        call()


def test_an_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="bogus"):
        memory_ledger(LLAMA, H100, bogus=1)  # type: ignore[call-arg]  # the mistake under test
    with pytest.raises(TypeError, match="bogus"):
        inference(LLAMA, H100, batch=1, prompt=8, generate=8, bogus=1)  # type: ignore[call-arg]  # under test


@pytest.mark.parametrize(("build", "field"), [
    (lambda: TrainingSetup(batch=0), "`batch`"),
    (lambda: TrainingSetup(seq=-1), "`seq`"),
    (lambda: ServingSetup(batch=1, prompt=0, generate=1), "`prompt`"),
    (lambda: ServingSetup(batch=1, prompt=1, generate=1, mfu=1.5), "`mfu`"),
    (lambda: FinetuneSetup(lora_rank="many"), "`lora_rank`"),
])
def test_a_bad_setup_value_is_a_one_line_input_error(build, field):
    with pytest.raises(InputError) as e:
        build()
    assert field in str(e.value) and "\n" not in str(e.value)


def test_finetune_setup_checks_its_values_with_the_precision():
    with pytest.raises(InputError, match="`finetune` must be one of"):
        memory_ledger(LLAMA, H100, finetune=FinetuneSetup(finetune="half"))
    with pytest.raises(InputError, match="`offload` must be one of"):
        memory_ledger(LLAMA, H100, finetune=FinetuneSetup(offload="disk"))
    assert not FinetuneSetup().tuned and FinetuneSetup(paged_optimizer=True).tuned


# --- inference: a ServingSetup or its keywords ---------------------------------------------------------------------

def test_serving_setup_and_keywords_give_the_same_answer():
    sv = ServingSetup(batch=4, prompt=512, generate=64, weights_dtype="int4", kv_dtype="fp8", mfu=0.5, mbu=0.7,
                      prefill_chunk=256)
    _same(inference(LLAMA, H100, sv, gpus=2), inference(LLAMA, H100, gpus=2, batch=4, prompt=512, generate=64,
                                                        weights_dtype="int4", kv_dtype="fp8", mfu=0.5, mbu=0.7,
                                                        prefill_chunk=256))
    assert sv.weights_dtype == napkin.DType.int4  # a name is read as the DType


# --- memory_question: the one call of `napkin memory` --------------------------------------------------------------

def test_memory_question_asks_what_its_flags_say():
    t, lay = TrainingSetup(seq=4096), Layout(gpus=8, zero=3)
    _same(memory_question(LLAMA, H100, t, lay), memory_ledger(LLAMA, H100, t, lay))
    _same(memory_question(LLAMA, H100, t, lay, max_batch=True), max_micro_batch(LLAMA, H100, t, lay))
    _same(memory_question(LLAMA, H100, t, min_gpus=True, tp=2), min_gpus(LLAMA, H100, t, tp=2))
    every = list(hardware_catalog())
    _same(memory_question(LLAMA, every, t), compare_gpus(LLAMA, every, t))


def test_memory_question_one_at_a_time():
    with pytest.raises(InputError, match="one question at a time"):
        memory_question(LLAMA, H100, max_batch=True, min_gpus=True)
    with pytest.raises(InputError, match="one question at a time"):
        memory_question(LLAMA, list(hardware_catalog()), max_batch=True)
    with pytest.raises(InputError, match="`max_batch` needs an architecture"):
        memory_question(None, H100, max_batch=True, params=7e9)


def test_every_memory_answer_says_whether_it_fits():
    t, eight = TrainingSetup(seq=1024), Layout(gpus=8, zero=3)
    ledger_fits = memory_question(LLAMA, H100, t, eight)
    one_gpu = memory_question(LLAMA, H100, t)  # 16 B/param of AdamW state alone is more than 80 GB
    assert ledger_fits.fits is True and one_gpu.fits is False
    mb, none = memory_question(LLAMA, H100, t, eight, max_batch=True), memory_question(LLAMA, H100, t, max_batch=True)
    assert (mb.fits, none.fits) == (mb.max_batch > 0, none.max_batch > 0) == (True, False)
    mg, never = memory_question(LLAMA, H100, t, min_gpus=True), memory_question(LLAMA, H100, t, min_gpus=True, zero=0)
    assert (mg.fits, never.fits) == (True, False) and never.gpus is None
    rows = memory_question(LLAMA, list(hardware_catalog()), t)
    assert rows.fits == any(r.fits for r in rows.rows)


def test_min_gpus_shards_with_zero3_unless_told_otherwise():
    t = TrainingSetup(seq=4096)
    by_default = min_gpus(LLAMA, H100, t, layout=Layout(zero=3))
    assert by_default.inputs == min_gpus(LLAMA, H100, t).inputs  # keywords without zero: ZeRO-3
    assert min_gpus(LLAMA, H100, t, zero=0).gpus is None  # without ZeRO the full state never fits one H100


# --- max_model_question: model state alone, or a scaled family --------------------------------------------------

def test_max_model_question_chooses_by_its_arguments():
    _same(max_model_question(H100, 8), max_model(H100, 8))
    scaled = max_model_question(H100, 8, seq=4096, batch=1)
    _same(scaled, max_model_fit(H100, get_model(DEFAULT_TEMPLATE), TrainingSetup(seq=4096), gpus=8, zero=3))
    like = max_model_question(H100, 8, seq=2048, like="llama2-7b")
    assert like.template == get_model("llama2-7b").name
    assert max_model_question(H100, 1, finetune=FinetuneSetup(finetune="qlora"), seq=2048).template == \
        get_model(DEFAULT_TEMPLATE).name  # adapters need an architecture: always a family
    assert counts_activations(aspect=100.0) and not counts_activations(finetune=FinetuneSetup())


# --- train_time_question: which MFU the run is planned at ---------------------------------------------------------

def test_train_time_question_with_a_measured_mfu(tmp_path):
    sys.path.insert(0, "tests")
    from test_bench_saved import _single

    from napkin.bench.saved import measured_mfu, save_result
    from napkin.bench.train_question import train_time_question

    path = tmp_path / "m.json"
    save_result(_single(0.8), path)
    got = train_time_question(H100, 1024, 70e9, 15e12, mfu_from=path, mfu_fraction=0.5)
    m = measured_mfu(path, 0.5, hardware=H100.name, dtype="bf16")
    _same(got, m.apply(napkin.train_time(H100, 1024, 70e9, 15e12, mfu=m.mfu)))
    with pytest.raises(InputError, match="`mfu` or `mfu_from`, not both"):
        train_time_question(H100, 1024, 70e9, 15e12, mfu=0.4, mfu_from=path)
    with pytest.raises(InputError, match="`gpu` all"):
        train_time_question(list(hardware_catalog()), 1024, 70e9, 15e12, mfu_from=path)
    with pytest.raises(InputError, match="`mfu_fraction`"):
        train_time_question(H100, 1024, 70e9, 15e12, mfu_fraction=0.5)


def test_train_time_question_with_a_layout_or_every_gpu():
    from napkin.accounting.step_time import train_time_at_layout
    from napkin.bench.train_question import train_time_question

    at = train_time_question(H100, 64, tokens=1e12, model=LLAMA, seq=4096, layout={"tp": 2, "micro_batch": 1,
                                                                                 "global_batch": 256})
    _same(at, train_time_at_layout(LLAMA, H100, 1e12, gpus=64, seq=4096, tp=2, micro_batch=1, global_batch=256))
    with pytest.raises(InputError, match="give `model` and `tokens`"):
        train_time_question(H100, 64, 70e9, 1e12, layout={"tp": 2})
    every = train_time_question(list(hardware_catalog()), 1024, 70e9, 15e12)
    assert [r.gpu for r in every.rows] == [h.name for h in hardware_catalog()]


# --- matmul_question: flag checks before torch ----------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "message"), [
    ({"shapes_from": LLAMA, "size": 1024}, "`shapes_from` times the model's own shapes"),
    ({"batch": 2}, "`batch` size the GEMMs of a model"),
    ({"sizes": [128], "m_range": (0, 256, 128)}, "`sizes` sweeps squares"),
    ({"sweep": True, "size": 64}, "`sweep` times square sizes"),
])
def test_matmul_question_refuses_mixed_modes(kw, message):
    from napkin.bench.matmul_question import matmul_question

    with pytest.raises(InputError, match=message):
        matmul_question(**kw)


@pytest.mark.slow  # a fresh interpreter
def test_matmul_question_refuses_before_importing_torch():
    code = ("import sys\nfrom napkin.bench.matmul_question import matmul_question\ntry:\n    matmul_question(batch=2)\n"
            "except Exception as e:\n    print(type(e).__name__)\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["InputError", "False"]


def test_train_time_question_refuses_step_time_settings_without_a_layout():
    from napkin.bench.train_question import train_time_question

    with pytest.raises(InputError, match="`zero`: read by the step-time model only"):
        train_time_question(H100, 1024, 70e9, 15e12, step={"zero": 1, "precision": "bf16-mixed"})
    assert train_time_question(H100, 1024, 70e9, 15e12, step={"zero": 0, "precision": "bf16-mixed"}).days > 0
