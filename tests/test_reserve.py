"""Headroom (issue 22 item 3): a documented default reserve held back from every fit, `--reserve` on memory,
max-model, step-time and plan, kept by `memory --min-gpus`, `max-model` and `plan`, and a headroom column in plan."""

from __future__ import annotations

import pytest

from napkin.accounting.memory import memory_ledger
from napkin.accounting.memory_solvers import max_model_fit, min_gpus
from napkin.accounting.model_state import max_model
from napkin.accounting.plan import plan
from napkin.accounting.reserve import DEFAULT_RESERVE_BYTES, RESERVE_PARTS
from napkin.accounting.step_time import step_time
from napkin.specs.catalog import get_hardware, get_model

H100 = get_hardware("h100")
LLAMA8 = get_model("llama3-8b")


def test_the_default_reserve_is_its_sourced_parts_and_below_what_the_calibration_runs_spare():
    assert DEFAULT_RESERVE_BYTES == pytest.approx(sum(p.bytes for p in RESERVE_PARTS))
    assert all(p.source and p.bytes > 0 for p in RESERVE_PARTS)
    # the pure-BF16 llm-foundry rows on A100-40GB trained with 3.13 GB the ledger does not count (calibration_memory)
    assert DEFAULT_RESERVE_BYTES < 3.13e9


def test_the_ledger_holds_the_reserve_back_and_explains_it():
    r = memory_ledger(LLAMA8, H100, seq=4096, gpus=8)
    assert r.reserve_bytes == DEFAULT_RESERVE_BYTES
    assert r.usable_bytes == pytest.approx(H100.memory_bytes - DEFAULT_RESERVE_BYTES)
    assert r.headroom_bytes == pytest.approx(r.usable_bytes - r.total_bytes)
    step = next(s for s in r.steps if s.key.startswith("reserve"))
    assert "NCCL" in step.formula and "86509" in step.source  # each part named, with its source
    mine = memory_ledger(LLAMA8, H100, seq=4096, gpus=8, reserve_bytes=5e9)
    assert mine.headroom_bytes == pytest.approx(r.headroom_bytes - (5e9 - DEFAULT_RESERVE_BYTES))
    none = memory_ledger(LLAMA8, H100, seq=4096, gpus=8, reserve_bytes=0)
    assert none.usable_bytes == H100.memory_bytes


def test_a_run_that_fits_only_in_the_reserve_does_not_fit():
    # the largest micro-batch that fits without a reserve, asked again with the default one
    b = 1
    while memory_ledger(LLAMA8, H100, batch=b + 1, seq=4096, gpus=8, reserve_bytes=0).fits:
        b += 1
    tight = memory_ledger(LLAMA8, H100, batch=b, seq=4096, gpus=8, reserve_bytes=0)
    with_default = memory_ledger(LLAMA8, H100, batch=b, seq=4096, gpus=8)
    assert with_default.fits == (tight.headroom_bytes >= DEFAULT_RESERVE_BYTES)


def test_min_gpus_keeps_the_reserve():
    r = min_gpus(LLAMA8, H100, seq=2048, batch=1, recompute="full")
    assert r.gpus is not None and r.ledger.headroom_bytes >= 0
    assert r.ledger.reserve_bytes == DEFAULT_RESERVE_BYTES
    assert r.ledger.total_bytes <= H100.memory_bytes - DEFAULT_RESERVE_BYTES
    if r.gpus > 1:  # one GPU fewer does not fit with the reserve
        assert not memory_ledger(LLAMA8, H100, seq=2048, batch=1, recompute="full", gpus=r.gpus - 1).fits
    big = min_gpus(LLAMA8, H100, seq=2048, batch=1, recompute="full", reserve_bytes=20e9)
    assert big.gpus is not None and big.gpus >= r.gpus and big.ledger.total_bytes <= 60e9


def test_max_model_keeps_the_reserve_with_activations_and_the_lecture_without():
    assert max_model(H100, 8).max_params == pytest.approx(4.0e10)  # the lecture's napkin on nominal memory
    assert max_model(H100, 8, reserve_bytes=DEFAULT_RESERVE_BYTES).max_params == pytest.approx(8 * 78e9 / 16)
    fit = max_model_fit(H100, LLAMA8, seq=4096, gpus=8)
    assert fit.ledger.reserve_bytes == DEFAULT_RESERVE_BYTES and fit.ledger.fits
    nominal = max_model_fit(H100, LLAMA8, seq=4096, gpus=8, reserve_bytes=0)
    assert fit.params <= nominal.params


def test_step_time_and_plan_keep_the_reserve():
    st = step_time(LLAMA8, H100, gpus=8, tp=2, seq=4096, global_batch=16, micro_batch=2)
    assert st.memory_usable_bytes == pytest.approx(H100.memory_bytes - DEFAULT_RESERVE_BYTES)
    st30 = step_time(LLAMA8, H100, gpus=8, tp=2, seq=4096, global_batch=16, micro_batch=2, reserve_bytes=30e9)
    assert st30.memory_usable_bytes == pytest.approx(50e9)
    r = plan(LLAMA8, H100, gpus=8, global_batch=32, seq=4096, top=3)
    for row in r.top:
        assert row.headroom_bytes == pytest.approx(H100.memory_bytes - DEFAULT_RESERVE_BYTES - row.memory_bytes)
        assert row.headroom_bytes >= 0  # no layout planned into the reserve
    tight = plan(LLAMA8, H100, gpus=8, global_batch=32, seq=4096, top=3, reserve_bytes=40e9)
    assert all(row.memory_bytes <= 40e9 for row in tight.top)


@pytest.mark.parametrize("args", [
    ["memory", "--model", "llama3-8b", "--seq", "4096", "--gpus", "8"],
    ["memory", "--model", "llama3-8b", "--seq", "4096", "--min-gpus"],
    ["max-model", "--gpus", "8", "--seq", "4096"],
    ["step-time", "--model", "llama3-8b", "--gpus", "8", "--seq", "4096"],
])
def test_every_command_that_decides_a_fit_takes_reserve(cli, args):
    a = cli(*args, "--json")
    b = cli(*args, "--reserve", "10GB", "--json")
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr

    def usable(j: dict) -> float:
        for k in ("usable_bytes", "memory_usable_bytes"):
            if k in j:
                return j[k]
        return usable(j["ledger"])

    assert usable(a.json()) - usable(b.json()) == pytest.approx(10e9 - DEFAULT_RESERVE_BYTES)
    bad = cli(*args, "--reserve", "90GB")
    assert bad.exit_code == 2 and "reserve" in bad.stderr and "Traceback" not in bad.stderr


def test_plan_takes_reserve_and_shows_headroom(cli):
    r = cli("plan", "--model", "gpt2", "--gpus", "8", "--global-batch", "32", "--seq", "1024", "--top", "2",
            "--reserve", "4GB")
    assert r.exit_code == 0, r.stderr
    assert "headroom" in r.stdout
    j = cli("plan", "--model", "gpt2", "--gpus", "8", "--global-batch", "32", "--seq", "1024", "--top", "2",
            "--reserve", "4GB", "--json").json()
    assert j["inputs"]["reserve_bytes"] == 4e9
    assert all(row["headroom_bytes"] == pytest.approx(76e9 - row["memory_bytes"]) for row in j["top"])
