"""`napkin mfu` without an architecture (6N from --params) and from a quoted TFLOP/s per GPU.

Expected values are worked by hand from the definitions: MFU = tokens/s · FLOPs per token / (G · P)
(PaLM App. B), 6N FLOPs per token (Kaplan et al. 2020 §2.1), 8N with full recomputation (Narayanan
et al. 2021 eq. 4), H100 SXM dense bf16 P = 989.5e12 FLOP/s, fp8 1979e12.
"""

from __future__ import annotations

import json

import pytest

import napkin
from napkin.accounting.flops import count_flops
from napkin.accounting.mfu import mfu
from napkin.errors import InputError
from napkin.specs.catalog import get_model

REL = 1e-9
P_BF16 = 989.5e12  # H100 SXM dense bf16 (datasheet 1979 sparse / 2)


@pytest.fixture(scope="module")
def h100():
    return napkin.get_hardware("h100")


# --- the 6N path: --params, no architecture -------------------------------------------------------

def test_params_path_is_6n_over_cluster_peak(h100):
    r = mfu(None, h100, 8, params=7e9, tokens_per_s=3e4)
    # 6 · 7e9 · 3e4 = 1.26e15 FLOP/s achieved; 8 · 989.5e12 = 7.916e15 peak → 0.159171...
    assert r.mfu == pytest.approx(1.26e15 / 7.916e15, rel=REL)
    assert r.mfu == pytest.approx(0.15917129863567458, rel=REL)
    assert r.achieved_flops_per_s == pytest.approx(1.26e15, rel=REL)
    assert r.model_flops_per_token == r.six_n_flops_per_token == pytest.approx(4.2e10, rel=REL)
    assert r.hfu == r.mfu and r.mfu_6n == r.mfu  # no recomputation; the exact count *is* 6N here
    assert r.mfu_palm is None and r.palm_flops_per_token is None  # no architecture: no attention term
    assert r.model is None and r.seq is None and r.flops_basis == "6N" and r.params == 7e9
    assert r.tokens_per_s_per_gpu == pytest.approx(3750, rel=REL)
    assert r.model_tflops_per_gpu == pytest.approx(1.26e15 / 8 / 1e12, rel=REL)


def test_params_path_says_so_in_the_derivation(h100):
    r = mfu(None, h100, 8, params=7e9, tokens_per_s=3e4)
    step = next(s for s in r.steps if "6N" in s.name)
    assert "no architecture" in step.name and step.formula == "6 · N" and "Kaplan" in step.source
    assert any("no --model" in n and "6N" in n for n in r.notes)


def test_params_path_with_step_time(h100):
    # 8 sequences × 4096 tokens / 2 s = 16384 tokens/s; 6 · 1e9 · 16384 / (4 · 989.5e12)
    r = mfu(None, h100, 4, params=1e9, step_time_s=2.0, batch=8, seq=4096)
    assert r.tokens_per_s == pytest.approx(16384, rel=REL)
    assert r.mfu == pytest.approx(6 * 1e9 * 16384 / (4 * P_BF16), rel=REL)
    assert r.seq == 4096


def test_params_path_full_recompute_is_8n_hfu(h100):
    r = mfu(None, h100, 8, params=7e9, tokens_per_s=3e4, recompute="full")
    assert r.mfu == pytest.approx(6 * 7e9 * 3e4 / (8 * P_BF16), rel=REL)
    assert r.hfu == pytest.approx(8 * 7e9 * 3e4 / (8 * P_BF16), rel=REL)  # Narayanan et al. 2021 eq. 4
    assert r.hardware_flops_per_token == pytest.approx(5.6e10, rel=REL)


def test_params_path_fp8_peak(h100):
    r = mfu(None, h100, 8, params=7e9, tokens_per_s=3e4, dtype="fp8")
    assert r.peak_flops_per_s == pytest.approx(1979e12, rel=REL)
    assert r.mfu == pytest.approx(1.26e15 / (8 * 1979e12), rel=REL)


# --- a quoted TFLOP/s per GPU ----------------------------------------------------------------------

def test_quote_alone_is_x_over_dense_peak(h100):
    r = mfu(None, h100, tflops_per_gpu=400)
    assert r.mfu == pytest.approx(400e12 / 989.5e12, rel=REL)
    assert r.mfu == pytest.approx(0.40424456796361796, rel=REL)
    assert r.tokens_per_s is None and r.model_flops_per_token is None and r.flops_basis == "quoted"
    assert r.inputs.gpus == 1 and r.model_tflops_per_gpu == pytest.approx(400, rel=REL)
    assert any("Give --model or --params for tokens/s" in n for n in r.notes)


def test_quote_with_params_gives_tokens_per_s(h100):
    r = mfu(None, h100, 8, tflops_per_gpu=400, params=8e9)
    # 8 GPUs × 400e12 FLOP/s / (6 · 8e9 FLOP/token) = 66,666.7 tokens/s
    assert r.tokens_per_s == pytest.approx(8 * 400e12 / 48e9, rel=REL)
    assert r.tokens_per_s_per_gpu == pytest.approx(400e12 / 48e9, rel=REL)
    assert r.achieved_flops_per_s == pytest.approx(3.2e15, rel=REL)
    assert r.mfu == pytest.approx(400 / 989.5, rel=REL)


def test_quote_with_model_round_trips_through_tokens_per_s(h100):
    spec = get_model("llama3-8b")
    r = mfu(spec, h100, 8, tflops_per_gpu=400, seq=8192)
    per_token = count_flops(spec, 1, 8192).model_flops
    assert r.tokens_per_s == pytest.approx(8 * 400e12 / per_token, rel=REL)
    back = mfu(spec, h100, 8, tokens_per_s=r.tokens_per_s, seq=8192)
    assert back.mfu == pytest.approx(r.mfu, rel=REL) and back.mfu_palm == pytest.approx(r.mfu_palm, rel=REL)
    assert back.mfu_6n == pytest.approx(r.mfu_6n, rel=REL)


def test_quote_with_model_and_recompute_gives_hfu(h100):
    spec = get_model("llama2-70b")
    r = mfu(spec, h100, 64, tflops_per_gpu=300, seq=4096, recompute="selective")
    c = count_flops(spec, 1, 4096, recompute="selective")
    assert r.mfu == pytest.approx(300 / 989.5, rel=REL)
    assert r.hfu == pytest.approx(300 / 989.5 * c.hardware_flops / c.model_flops, rel=REL)


def test_quote_alone_full_recompute_hfu_is_8_over_6(h100):
    a100 = napkin.get_hardware("a100")
    r = mfu(None, a100, tflops_per_gpu=140, recompute="full")  # Megatron-LM's 140 TFLOP/s on 312 TFLOP/s A100s
    assert r.mfu == pytest.approx(140 / 312, rel=REL)
    assert r.hfu == pytest.approx(140 / 312 * 8 / 6, rel=REL)


def test_quote_above_peak_is_noted(h100):
    r = mfu(None, h100, tflops_per_gpu=1200)
    assert r.mfu > 1 and any("above 1" in n and "--tflops-per-gpu" in n for n in r.notes)


# --- the old path is unchanged, and gained fields --------------------------------------------------

def test_model_path_keeps_its_fields_and_adds_new_ones(h100):
    spec = get_model("llama3-8b")
    r = mfu(spec, h100, 8, tokens_per_s=9000, seq=8192)
    d = r.model_dump()
    for key in ("model", "inputs", "seq", "per", "tokens_per_s", "tokens_per_s_per_gpu", "peak_flops_per_s",
                "model_flops_per_token", "hardware_flops_per_token", "six_n_flops_per_token",
                "palm_flops_per_token", "achieved_flops_per_s", "mfu", "hfu", "mfu_6n", "mfu_palm", "steps", "notes"):
        assert key in d
    assert r.model == "llama3-8b" and r.seq == 8192 and r.flops_basis == "exact"
    assert r.params == 8_030_261_248
    assert r.model_tflops_per_gpu == pytest.approx(r.achieved_flops_per_s / 8 / 1e12, rel=REL)
    assert r.mfu == pytest.approx(9000 * count_flops(spec, 1, 8192).model_flops / (8 * P_BF16), rel=REL)


# --- contradictory or missing inputs: one line each ------------------------------------------------

@pytest.mark.parametrize("spec, kwargs, message", [
    ("llama3-8b", dict(gpus=8, params=8e9, tokens_per_s=1e4), "leave out `params`"),
    (None, dict(gpus=8, params=8e9, tokens_per_s=1e4, tflops_per_gpu=400), "not both"),
    (None, dict(gpus=8, params=8e9, step_time_s=1.0, batch=8, seq=2048, tflops_per_gpu=400), "not both"),
    (None, dict(gpus=8, tokens_per_s=1e4), "`model` .* or `params`"),
    (None, dict(params=8e9, tokens_per_s=1e4), "`gpus` is needed"),
    (None, dict(gpus=8, params=8e9, tokens_per_s=1e4, recompute="selective"), "selective needs `model`"),
    (None, dict(gpus=8, params=8e9, step_time_s=1.0, batch=8), "`seq`"),
    (None, dict(gpus=8, params=8e9), "`tflops_per_gpu`"),
    (None, dict(tflops_per_gpu=-1.0), "tflops_per_gpu"),
    (None, dict(gpus=8, params=-1.0, tokens_per_s=1e4), "params"),
])
def test_contradictory_inputs(h100, spec, kwargs, message):
    with pytest.raises(InputError, match=message):
        mfu(None if spec is None else get_model(spec), h100, **kwargs)


# --- the CLI ---------------------------------------------------------------------------------------

def test_cli_params_json_equals_api(cli, h100):
    run = cli("mfu", "--params", "7B", "--tokens-per-s", "30k", "--gpus", "8", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json() == json.loads(mfu(None, h100, 8, params=7e9, tokens_per_s=3e4).model_dump_json())


def test_cli_quote_json_equals_api(cli, h100):
    run = cli("mfu", "--tflops-per-gpu", "400", "-m", "llama3-8b", "--gpus", "8", "--seq", "8192", "--json")
    assert run.exit_code == 0, run.stderr
    expected = mfu(get_model("llama3-8b"), h100, 8, tflops_per_gpu=400, seq=8192)
    assert run.json() == json.loads(expected.model_dump_json())


@pytest.mark.parametrize("args, shown", [
    (["--params", "7e9", "--tokens-per-s", "3e4", "--gpus", "8"], ["model FLOPs per token (6N)", "15.92%"]),
    (["--tflops-per-gpu", "400"], ["400.0 TFLOP/s", "40.42%"]),
    (["--tflops-per-gpu", "400", "--params", "8e9", "--gpus", "8"], ["66,667 tokens/s", "40.42%"]),
])
def test_cli_tables(cli, args, shown):
    run = cli("mfu", *args)
    assert run.exit_code == 0, run.stderr
    for text in shown:
        assert text in run.stdout


@pytest.mark.parametrize("args, message", [
    (["--params", "7e9", "-m", "gpt2", "--tokens-per-s", "3e4", "--gpus", "8"], "leave out --params"),
    (["--tflops-per-gpu", "400", "--tokens-per-s", "3e4", "--params", "7e9", "--gpus", "8"], "not both"),
    (["--tokens-per-s", "3e4", "--gpus", "8"], "--params"),
    (["--tflops-per-gpu", "400", "--width", "8"], "need --model"),
    ([], "--tflops-per-gpu"),
])
def test_cli_errors_are_one_line_exit_2(cli, args, message):
    run = cli("mfu", *args)
    assert run.exit_code == 2
    out = (run.stderr or run.stdout).strip()
    assert len(out.splitlines()) == 1 and message in out and "Traceback" not in out


def test_models_show_usage_reads_name(cli):
    run = cli("models", "show", "--help", env={"COLUMNS": "100"})
    assert run.exit_code == 0
    usage = next(line for line in run.stdout.splitlines() if "Usage:" in line)
    assert "NAME" in usage and "name" not in usage.replace("NAME", "")
