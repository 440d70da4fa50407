"""The CLI: JSON equals the API, --explain shows sources, errors are one line with exit code 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_tree import leaf_commands

import napkin
from napkin.accounting.model_state import MaxModelResult
from napkin.accounting.training import BudgetResult, TrainTimeResult

README = Path(__file__).resolve().parent.parent / "README.md"


def all_commands():
    """Every leaf command path, e.g. ['train-time'], ['hardware', 'show']."""
    return [path for path, _ in leaf_commands()]


def test_json_equals_api(cli):
    h100 = napkin.get_hardware("h100")
    cases = [
        (["train-time", "--params", "70B", "--tokens", "15T", "--gpus", "1024", "--price-per-gpu-hour", "2"],
         TrainTimeResult, napkin.train_time(h100, 1024, 70e9, 15e12, price_per_gpu_hour=2)),
        (["max-model", "--gpus", "8", "--precision", "bf16-mixed", "--zero", "1"], MaxModelResult,
         napkin.max_model(h100, 8, precision="bf16-mixed", zero=1)),
        (["budget", "--gpus", "8", "--days", "7", "--mfu", "0.4"], BudgetResult, napkin.budget(h100, 8, 7, mfu=0.4)),
    ]
    for args, cls, api in cases:
        out = cli(*args, "--json")
        assert out.exit_code == 0, out.stderr
        assert cls.model_validate_json(out.stdout) == api


def test_explain_shows_every_step_with_its_source(cli):
    h100 = napkin.get_hardware("h100")
    api = napkin.train_time(h100, 1024, 70e9, 15e12)
    out = cli("train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--explain")
    assert out.exit_code == 0
    text = " ".join(out.stdout.split())
    for step in api.steps:
        assert step.name in text
        assert step.formula in text
        assert " ".join(step.source.split())[:30] in text
    assert all(s.source for s in api.steps)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "0"], "greater than 0"),
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "8", "--mfu", "1.5"], "(0, 1]"),
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "8", "--mfu", "0"], "(0, 1]"),
        (["train-time", "--params", "nan", "--tokens", "15e12", "--gpus", "8"], "finite"),
        (["train-time", "--params", "-7e9", "--tokens", "15e12", "--gpus", "8"], "greater than 0"),
        (["train-time", "--params", "7e9", "--tokens", "inf", "--gpus", "8"], "finite"),
        (["train-time", "--tokens", "15e12", "--gpus", "8"], "--params"),
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "8", "--gpu", "h10"],
         "unknown hardware 'h10'; did you mean: h100"),
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "8", "--dtype", "bf61"], "dtype"),
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "8", "--dtype", "fp32", "--sparse"],
         "no sparse fp32"),
        (["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "8", "--gpu", "v100"], "no bf16 peak"),
        (["max-model", "--gpus", "8", "--optimizer", "adamm"], "did you mean: adam"),
        (["max-model", "--gpus", "8", "--precision", "bf17"], "unknown precision"),
        (["max-model", "--gpus", "8", "--zero", "4"], "--zero"),
        (["max-model", "--gpus", "8", "--memory", "80XB"], "unknown unit"),
        (["budget", "--gpus", "8"], "--days"),
        (["budget", "--gpus", "8", "--days", "-1"], "greater than 0"),
        (["hardware", "show", "a10"], "did you mean"),
        (["nonsense-command"], "No such command"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, args, message):
    out = cli(*args)
    assert out.exit_code == 2, (out.stdout, out.stderr, out.exception)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("napkin: error: ")
    assert message in lines[0]
    assert "Traceback" not in out.stdout + out.stderr


def test_did_you_mean_for_gpu_names(cli):
    out = cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--gpu", "h10")
    assert "did you mean: h100, " in out.stderr and out.exit_code == 2


def test_names_are_forgiving():
    # Aliases, case, spaces and the names torch.cuda.get_device_name() returns.
    assert napkin.get_hardware("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    assert napkin.get_hardware("A100").name == "a100-sxm-80gb"
    assert napkin.get_hardware("h100_sxm").name == "h100-sxm"


def test_version_and_overview(cli):
    out = cli("--version")
    assert out.exit_code == 0 and out.stdout.strip() == f"napkin {napkin.__version__}"
    out = cli()
    assert out.exit_code == 0
    assert "train-time" in out.stdout and "Examples" in out.stdout


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help_and_a_readme_entry(cli, path):
    out = cli(*path, "--help")
    assert out.exit_code == 0
    assert "Usage" in out.stdout
    command = " ".join(path)
    assert re.search(rf"napkin {re.escape(command)}\b", README.read_text()), f"README lacks 'napkin {command}'"


def test_sparse_doubles_the_peak(cli):
    dense = cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json").json()
    sparse = cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--sparse", "--json").json()
    assert sparse["peak_flops_per_s"] == 2 * dense["peak_flops_per_s"]
    assert sparse["days"] == pytest.approx(dense["days"] / 2)


def test_cost_energy_and_flops_override(cli):
    r = cli("train-time", "--flops", "6.3e24", "--gpus", "1024", "--price-per-gpu-hour", "2.5", "--pue", "1.2",
            "--json").json()
    assert r["total_flops"] == 6.3e24
    assert r["cost"] == pytest.approx(r["gpu_hours"] * 2.5)
    assert r["energy_kwh"] == pytest.approx(700 * r["gpu_hours"] * 1.2 / 1000)  # H100 SXM TDP 700 W


def test_hardware_list_and_show(cli):
    out = cli("hardware", "list")
    assert out.exit_code == 0
    for name in ("h100-sxm", "a100-sxm-40gb", "mi300x", "v100-sxm2-32gb"):
        assert name in out.stdout
    assert "989.5" in out.stdout and "1979" in out.stdout  # dense and sparse side by side
    show = cli("hardware", "show", "h100", "--json").json()
    bf16 = next(p for p in show["peaks"] if p["dtype"] == "bf16")
    assert bf16["sparse_flops_per_s"] == 2 * bf16["dense_flops_per_s"]


def test_help_paragraphs_are_reflowed():
    from napkin.cli.root import reflow

    doc = """First line.

    A paragraph written
    over two lines.

      napkin example --kept as is
    """
    assert reflow(doc) == "First line.\n\nA paragraph written over two lines.\n\n  napkin example --kept as is"
