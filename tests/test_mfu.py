"""MFU / HFU from an observed throughput, and train-time / budget with --model."""

from __future__ import annotations

import pytest

import napkin
from napkin.accounting.flops import count_flops
from napkin.accounting.mfu import mfu
from napkin.accounting.training import budget, train_time
from napkin.errors import InputError
from napkin.specs.catalog import get_model

REL = 1e-9


@pytest.fixture(scope="module")
def h100():
    return napkin.get_hardware("h100")


def test_mfu_is_model_flops_over_dense_peak(h100):
    spec = get_model("llama3-8b")
    r = mfu(spec, h100, 8, tokens_per_s=9000, seq=8192)
    per_token = count_flops(spec, 1, 8192).model_flops
    assert r.mfu == pytest.approx(9000 * per_token / (8 * 989.5e12), rel=REL)
    assert r.hfu == r.mfu  # no recomputation: hardware FLOPs = model FLOPs
    assert r.mfu_6n == pytest.approx(9000 * 6 * 8_030_261_248 / (8 * 989.5e12), rel=REL)
    assert r.mfu_6n < r.mfu < r.mfu_palm  # 6N leaves attention out; PaLM's term does not halve it


def test_step_time_equals_tokens_per_second(h100):
    spec = get_model("llama3-70b")
    a = mfu(spec, h100, 64, tokens_per_s=64 * 4096 / 3.5, seq=4096)
    b = mfu(spec, h100, 64, step_time_s=3.5, batch=64, seq=4096)
    assert a.mfu == pytest.approx(b.mfu, rel=REL) and b.tokens_per_s == pytest.approx(64 * 4096 / 3.5, rel=REL)


@pytest.mark.parametrize("recompute", ["selective", "full"])
def test_hfu_counts_recomputation(h100, recompute):
    spec = get_model("llama2-70b")
    r = mfu(spec, h100, 512, tokens_per_s=4e5, seq=4096, recompute=recompute)
    c = count_flops(spec, 1, 4096, recompute=recompute)
    assert r.hfu / r.mfu == pytest.approx(c.hardware_flops / c.model_flops, rel=REL)
    assert r.hfu > r.mfu


def test_mfu_against_the_fp8_peak_is_lower(h100):
    spec = get_model("llama3-8b")
    assert mfu(spec, h100, 8, tokens_per_s=9000, seq=8192, dtype="fp8").mfu == pytest.approx(
        mfu(spec, h100, 8, tokens_per_s=9000, seq=8192).mfu / 2, rel=REL)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "`tokens_per_s`, or as `step_time_s`"),
    (dict(tokens_per_s=1e4, step_time_s=1.0, batch=8, seq=2048), "not both"),
    (dict(step_time_s=1.0, seq=2048), "`global_batch`"),
    (dict(step_time_s=1.0, batch=8), "`seq`"),
    (dict(tokens_per_s=-1.0), "tokens_per_s"),
])
def test_bad_throughput(h100, kwargs, message):
    with pytest.raises(InputError, match=message):
        mfu(get_model("llama3-8b"), h100, 8, **kwargs)


def test_train_time_with_model_uses_the_exact_count(h100):
    spec = get_model("llama3-70b")
    r = train_time(h100, 1024, tokens=15e12, model=spec, seq=8192)
    exact = count_flops(spec, 15e12, 8192).model_flops
    assert r.total_flops == pytest.approx(exact, rel=REL)
    assert r.six_nd == pytest.approx(6 * 70_553_706_496 * 15e12, rel=REL)
    assert r.days == pytest.approx(exact / (1024 * 989.5e12 * 0.5 * 86400), rel=REL)


def test_train_time_hfu_divides_hardware_flops(h100):
    spec = get_model("llama3-8b")
    r = train_time(h100, 64, tokens=1e12, model=spec, seq=8192, recompute="full", hfu=0.6)
    c = count_flops(spec, 1e12, 8192, recompute="full")
    assert r.hardware_flops == pytest.approx(c.hardware_flops, rel=REL)
    assert r.days == pytest.approx(c.hardware_flops / (64 * 989.5e12 * 0.6 * 86400), rel=REL)
    # Quoting HFU and MFU of the same run gives the same days: MFU = HFU · model / hardware FLOPs.
    same = train_time(h100, 64, tokens=1e12, model=spec, seq=8192, recompute="full",
                      mfu=0.6 * c.model_flops / c.hardware_flops)
    assert same.days == pytest.approx(r.days, rel=REL)


@pytest.mark.parametrize("kwargs, message", [
    (dict(params=7e9, tokens=1e12, recompute="selective"), "`recompute` selective needs `model`"),
    (dict(params=7e9, tokens=1e12, hfu=0.4), "add `recompute` full"),
    (dict(tokens=1e12, mfu=0.5, hfu=0.5), "not both"),
    (dict(params=7e9, tokens=1e12, model=get_model("gpt2")), "leave out `params`"),
    (dict(model=get_model("gpt2")), "needs `tokens`"),
])
def test_train_time_model_errors(h100, kwargs, message):
    with pytest.raises(InputError, match=message):
        train_time(h100, 8, **kwargs)


def test_budget_with_model_gives_tokens(h100):
    spec = get_model("llama3-8b")
    r = budget(h100, 8, 7, model=spec, seq=8192, mfu=0.4)
    assert r.model_tokens == pytest.approx(r.total_flops / count_flops(spec, 1, 8192).model_flops, rel=REL)
    hw = budget(h100, 8, 7, model=spec, seq=8192, hfu=0.4, recompute="full")
    assert hw.model_tokens < r.model_tokens  # the same hardware FLOP/s buys fewer tokens when some are recomputed


def test_hfu_with_params_divides_8nd_narayanan_eq4():
    """Narayanan et al. 2021 §5.1: GPT-3 175B on 300B tokens, 1024 A100 at 140 TFLOP/s (HFU 0.4487) ≈ 34 days."""
    from napkin.specs.catalog import get_hardware

    a100 = get_hardware("a100")
    r = train_time(a100, 1024, params=175e9, tokens=300e9, hfu=140e12 / 312e12, recompute="full")
    assert r.days == pytest.approx(8 * 175e9 * 300e9 / (1024 * 140e12) / 86400, rel=1e-9)  # eq. 4: 8TP/(nX)
    assert 33.5 < r.days < 34.5
    assert r.hardware_flops == pytest.approx(8 * 175e9 * 300e9)
    assert any("C_hw (hardware FLOPs)" in s.formula for s in r.steps)  # --explain names what it divides
    with pytest.raises(InputError, match="add `recompute` full"):
        train_time(a100, 1024, params=175e9, tokens=300e9, hfu=0.4487)


def test_budget_hfu_converts_hardware_to_model_flops():
    from napkin.accounting.training import budget
    from napkin.specs.catalog import get_hardware

    h = get_hardware("h100")
    m = budget(h, 8, 7, mfu=0.3)
    hw = budget(h, 8, 7, hfu=0.4, recompute="full")  # 0.4 HFU with full recompute = 0.3 MFU of model FLOPs
    assert hw.optimal_params == pytest.approx(m.optimal_params, rel=1e-9)
    with pytest.raises(InputError, match="add `recompute` full"):
        budget(h, 8, 7, hfu=0.4)


def test_budget_from_flops_and_its_price():
    from napkin.specs.catalog import get_hardware

    h = get_hardware("h100")
    week = budget(h, 8, 7)
    back = budget(h, 8, flops=week.total_flops, price_per_gpu_hour=2.0)
    assert back.days == pytest.approx(7) and back.gpu_hours == pytest.approx(7 * 24 * 8)
    assert back.cost == pytest.approx(7 * 24 * 8 * 2.0)
    with pytest.raises(InputError, match="one of the two"):
        budget(h, 8, 7, flops=1e21)


def test_no_causal_counts_the_whole_attention():
    from napkin.specs.catalog import get_hardware

    h, spec = get_hardware("h100"), get_model("llama3-8b")
    causal = train_time(h, 64, tokens=1e12, model=spec, seq=8192)
    full = train_time(h, 64, tokens=1e12, model=spec, seq=8192, causal=False)
    assert full.total_flops == pytest.approx(count_flops(spec, 1e12, 8192, causal=False).model_flops)
    assert full.total_flops > causal.total_flops
    b = budget(h, 8, 7, model=spec, seq=8192, causal=False, mfu=0.4)
    assert b.model_flops_per_token == pytest.approx(count_flops(spec, 1, 8192, causal=False).model_flops)
