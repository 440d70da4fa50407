"""DESIGN.md's reference numbers (CS336 2025, lecture 2) through the API and the CLI, to 1e-6."""

import pytest

import napkin
from napkin.specs.dtypes import bytes_per_element

REL = 1e-6


@pytest.fixture(scope="module")
def h100():
    return napkin.get_hardware("h100")


def test_training_days(h100):
    # 6·70e9·15e12 FLOPs; H100 bf16 dense 1979e12/2; MFU 0.5; 1024 GPUs.
    r = napkin.train_time(h100, gpus=1024, params=70e9, tokens=15e12, dtype="bf16", mfu=0.5)
    assert r.total_flops == pytest.approx(6.3e24, rel=REL)
    assert r.peak_flops_per_s == pytest.approx(1979e12 / 2, rel=REL)
    assert r.flops_per_day == pytest.approx(4.37723136e22, rel=REL)
    assert r.days == pytest.approx(143.9266, rel=REL)


def test_training_days_cli(cli):
    out = cli("train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["days"] == pytest.approx(143.9266, rel=REL)
    human = cli("train-time", "--params", "70B", "--tokens", "15T", "--gpus", "1024")
    assert "143.93 days" in human.stdout


def test_largest_model(h100):
    # 8 × 80e9 bytes; AdamW in fp32: 4 + 4 + (4 + 4) = 16 B/param → 4.0e10 params.
    r = napkin.max_model(h100, gpus=8, optimizer="adamw")
    assert r.bytes_per_param == 16
    assert r.max_params == pytest.approx(4.0e10, rel=REL)


def test_largest_model_cli(cli):
    out = cli("max-model", "--gpus", "8", "--optimizer", "adamw", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["max_params"] == pytest.approx(4.0e10, rel=REL)
    assert out.json()["bytes_per_param"] == 16


def test_cluster_budget(h100, cli):
    # 8 H100 for one week at dense bf16 peak.
    r = napkin.budget(h100, gpus=8, days=7)
    assert r.total_flops == pytest.approx(4.7875968e21, rel=REL)
    out = cli("budget", "--gpus", "8", "--days", "7", "--json")
    assert out.json()["total_flops"] == pytest.approx(4.7875968e21, rel=REL)


def test_tensor_memory():
    # fp32 4×8 tensor: 128 bytes; GPT-3 FFN matrix 12288·4 × 12288 fp32: 2,415,919,104 bytes (2304 MiB).
    assert 4 * 8 * bytes_per_element("fp32") == 128
    ffn = 12288 * 4 * 12288 * bytes_per_element("float32")
    assert ffn == 2_415_919_104
    assert ffn / 2**20 == 2304
