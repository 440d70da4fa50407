"""`napkin models`, `napkin flops`, `napkin mfu` and train-time/budget --model through the CLI."""

from __future__ import annotations

import json
import re

import pytest

import napkin
from napkin.accounting.catalog_query import show_model
from napkin.accounting.flops import count_flops, training_flops
from napkin.accounting.mfu import mfu
from napkin.accounting.params import count_params
from napkin.specs.catalog import get_model, model_catalog

REL = 1e-9


def test_models_list_has_the_issue_catalog(cli):
    out = cli("models", "list", "--json")
    assert out.exit_code == 0, out.stderr
    rows = {r["spec"]["name"]: r for r in out.json()["models"]}
    wanted = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-125m", "gpt3-350m", "gpt3-760m", "gpt3-1.3b",
              "gpt3-2.7b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b", "llama2-7b", "llama2-13b", "llama2-70b",
              "llama3-8b", "llama3-70b", "llama3.1-8b", "llama3.1-70b", "llama3.1-405b", "mistral-7b",
              "mixtral-8x7b", "qwen2.5-7b", "qwen2.5-72b", "deepseek-v3", "olmo2-7b", "cruncher"]
    assert set(wanted) <= set(rows)
    for name, row in rows.items():
        assert row["params"] == count_params(get_model(name)).params


@pytest.mark.parametrize("spec", list(model_catalog()), ids=lambda s: s.name)
def test_every_catalog_entry_cites_a_config_or_paper(spec):
    assert spec.sources and all(s.startswith("https://huggingface.co/") and s.endswith("config.json")
                                or re.search(r"\b20\d\d\b", s) for s in spec.sources), spec.sources


def test_models_show_json_equals_api_and_human_shows_exact_counts(cli):
    out = cli("models", "show", "deepseek-v3", "--json")
    assert out.json() == json.loads(show_model("deepseek-v3").to_json())
    human = cli("models", "show", "gpt2")
    assert "124,439,808" in human.stdout and "embedding.positions" in human.stdout


def test_models_show_unknown_name_suggests(cli):
    out = cli("models", "show", "llama3-7b")
    assert out.exit_code == 2 and "did you mean" in out.stderr and "llama3-8b" in out.stderr


def test_cruncher_432_through_the_cli(cli):
    out = cli("flops", "--model", "cruncher", "--tokens", "2", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["model_flops"] == 432
    assert cli("flops", "-m", "cruncher", "--batch", "2", "--json").json()["model_flops"] == 432


def test_lecture_linear_net_and_matmul_through_the_cli(cli):
    net = cli("flops", "-m", "cruncher", "--width", "32768", "--depth", "1", "--out", "8192", "-D", "16384", "--json")
    r = net.json()
    assert r["forward_flops"] == pytest.approx(2 * 16384 * 32768**2 + 2 * 16384 * 32768 * 8192, rel=REL)
    assert r["backward_flops"] == 2 * r["forward_flops"]
    mm = cli("flops", "-m", "cruncher", "--width", "32768", "--depth", "0", "--out", "8192", "-D", "16384", "--json")
    assert mm.json()["forward_flops"] == 8_796_093_022_208  # 2BDK


def test_flops_json_equals_api_and_explain_cites_sources(cli):
    out = cli("flops", "-m", "mixtral-8x7b", "-D", "1T", "--seq", "4096", "--recompute", "selective", "--json")
    api = training_flops(get_model("mixtral-8x7b"), tokens=1e12, seq=4096, recompute="selective")
    assert out.json() == json.loads(api.to_json())
    ex = cli("flops", "-m", "llama3-8b", "-D", "1T", "--seq", "4096", "--explain")
    for source in ("Korthikanti", "Kaplan", "PaLM"):
        assert source in ex.stdout
    nc = cli("flops", "-m", "llama3-8b", "-D", "1T", "--seq", "4096", "--no-causal", "--json").json()
    causal = count_flops(get_model("llama3-8b"), 1e12, 4096)
    assert nc["attention_flops"] / causal.attention_flops == pytest.approx(4096 / (4097 / 2), rel=REL)
    assert nc["model_flops"] == pytest.approx(count_flops(get_model("llama3-8b"), 1e12, 4096, causal=False).model_flops)


@pytest.mark.parametrize("args, message", [
    (["flops", "-m", "llama3-8b", "-D", "1T", "--width", "64"], "resize a linear net"),
    (["flops", "-m", "llama3-8b", "-D", "1T", "--batch", "4"], "--tokens D"),
    (["flops", "-m", "llama3-8b"], "--tokens D"),
    (["flops", "-m", "llama3-8b", "-D", "1T", "--recompute", "half"], "recompute must be one of"),
    (["flops", "-m", "cruncher", "-D", "2", "--depth", "-1"], "--depth"),
    (["mfu", "-m", "llama3-8b", "--gpus", "8"], "--tokens-per-s"),
    (["train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--recompute", "selective"], "needs --model"),
    (["train-time", "-m", "llama3-8b", "--tokens", "1T", "--gpus", "8", "--mfu", "0.4", "--hfu", "0.5"], "not both"),
])
def test_bad_flags_are_one_line_exit_2(cli, args, message):
    out = cli(*args)
    assert out.exit_code == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_mfu_json_equals_api(cli):
    out = cli("mfu", "-m", "llama3-8b", "--tokens-per-s", "9000", "--gpus", "8", "--seq", "8192", "--json")
    api = mfu(get_model("llama3-8b"), napkin.get_hardware("h100"), 8, tokens_per_s=9000, seq=8192)
    assert out.json() == json.loads(api.to_json())
    human = cli("mfu", "-m", "llama3-8b", "--step-time", "2", "--batch", "64", "--seq", "4096", "--gpus", "64",
                "--recompute", "selective")
    assert "MFU" in human.stdout and "HFU" in human.stdout and "6N + attention" in human.stdout


def test_train_time_and_budget_with_model(cli):
    tt = cli("train-time", "-m", "llama3-70b", "--tokens", "15T", "--seq", "8192", "--gpus", "1024", "--json").json()
    assert tt["total_flops"] == pytest.approx(count_flops(get_model("llama3-70b"), 15e12, 8192).model_flops, rel=REL)
    assert tt["six_nd"] == pytest.approx(6 * 70_553_706_496 * 15e12, rel=REL)
    human = cli("train-time", "-m", "llama3-8b", "--tokens", "15T", "--seq", "8192", "--gpus", "1024", "--hfu", "0.5",
                "--recompute", "selective")
    assert "HFU" in human.stdout and "exact" in human.stdout
    b = cli("budget", "--gpus", "8", "--days", "7", "-m", "llama3-8b", "--seq", "8192", "--json").json()
    assert b["model_tokens"] == pytest.approx(4.7875968e21 / count_flops(get_model("llama3-8b"), 1, 8192).model_flops)


def test_a_hybrid_shows_its_layer_pattern(cli):
    from napkin.specs.catalog import get_model

    spec = get_model("nemotron-h-8b")
    p = spec.block_pattern
    assert p is not None and len(p) == spec.layers
    out = cli("models", "show", "nemotron-h-8b")
    assert out.exit_code == 0
    assert f"{p.count('M')} Mamba-2, {p.count('*')} attention, {p.count('-')} MLP" in out.stdout
    assert f"block pattern: {p}" in out.stdout
    assert "layer pattern" not in cli("models", "show", "llama3-8b").stdout
