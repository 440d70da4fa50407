"""Units where people type and read them, --specs-dir anywhere, --check for scripts, and help that is current.

Durations print in the unit a person reads (minutes for a short run, days kept in --json); bandwidths, latencies
and day spans take their units on the command line, and a bad unit lists the ones that flag accepts.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from napkin import units
from napkin.errors import InputError

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _one_line_error(out, *needles: str) -> None:
    assert out.exit_code == 2, (out.stdout, out.stderr, out.exception)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napkin: error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _param(command: list[str], name: str):
    """The click option `name` of `napkin <command>` (its help text, as --help prints it)."""
    import typer

    from napkin.cli import app

    cmd = typer.main.get_command(app)
    for part in command:
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    return next(p for p in cmd.params if name in p.opts)


# --- 2. durations in the unit a person reads -----------------------------------------------------------------------

def test_short_training_run_prints_minutes_not_zero_days(cli):
    out = cli("train-time", "--params", "124e6", "--tokens", "1e9", "--gpus", "8")
    assert out.exit_code == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("training time"))
    assert row.split()[-2:] == ["3.13", "min"] and "0.00 days" not in out.stdout


def test_short_run_json_keeps_days_and_seconds(cli):
    r = cli("train-time", "--params", "124e6", "--tokens", "1e9", "--gpus", "8", "--json").json()
    assert r["time_s"] == pytest.approx(187.9737, rel=1e-6)
    assert r["days"] == pytest.approx(r["time_s"] / 86400, rel=1e-12)


def test_long_training_run_still_prints_days(cli):
    out = cli("train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024")
    assert "143.93 days" in out.stdout


def test_hours_and_minutes():
    assert units.format_days(1.5 / 24) == "1.50 h"
    assert units.format_days(0.0021756218) == "3.13 min"
    assert units.format_days(143.9266) == "143.93 days"


def test_explain_shows_a_short_time_in_minutes_and_days(cli):
    out = cli("train-time", "--params", "124e6", "--tokens", "1e9", "--gpus", "8", "--explain")
    assert "3.13 min (0.00218 days)" in out.stdout


def test_budget_under_a_day_prints_hours(cli):
    out = cli("budget", "--gpus", "8", "--days", "6h")
    row = next(line for line in out.stdout.splitlines() if line.startswith("time"))
    assert row.split()[-2:] == ["6.00", "h"]


# --- 3. units where users type them --------------------------------------------------------------------------------

def _inference(cli, *args: str) -> dict:
    out = cli("inference", "--model", "llama3-70b", "--gpus", "8", *args, "--json")
    assert out.exit_code == 0, out.stderr
    return out.json()["inputs"]


@pytest.mark.parametrize("text, value", [("900GB/s", 900e9), ("200Gb/s", 25e9), ("400Gbps", 50e9),
                                         ("25GiB/s", 25 * 2**30), ("4.5e11", 4.5e11)])
def test_link_bandwidth_takes_a_rate(cli, text, value):
    assert _inference(cli, "--link-bandwidth", text)["link_bytes_per_s"] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text, value", [("10us", 1e-5), ("10µs", 1e-5), ("5ms", 5e-3), ("300ns", 3e-7),
                                         ("10e-6", 1e-5), ("0", 0.0)])
def test_allreduce_latency_takes_a_time(cli, text, value):
    assert _inference(cli, "--allreduce-latency", text)["allreduce_latency_s"] == pytest.approx(value, rel=1e-12)


def test_bad_latency_unit_lists_the_time_units(cli):
    out = cli("inference", "--model", "llama3-70b", "--allreduce-latency", "10x")
    _one_line_error(out, "--allreduce-latency", "ns, us (or µs), ms or s")
    assert "k, M, B" not in out.stderr


def test_bad_link_unit_lists_the_rate_units(cli):
    out = cli("inference", "--model", "llama3-70b", "--gpus", "8", "--link-bandwidth", "900XB/s")
    _one_line_error(out, "--link-bandwidth", "GB/s", "Gb/s")
    out = cli("inference", "--model", "llama3-70b", "--gpus", "8", "--link-bandwidth", "900GB")
    _one_line_error(out, "a size, not a rate", "900GB/s")


def test_negative_latency_is_refused(cli):
    _one_line_error(cli("inference", "--model", "llama3-70b", "--allreduce-latency", "-2us"),
                    "all-reduce latency must be at least 0 seconds")


@pytest.mark.parametrize("text, days", [("7", 7.0), ("7d", 7.0), ("36h", 1.5), ("2w", 14.0), ("90min", 0.0625),
                                        ("86400s", 1.0), ("1.5 days", 1.5)])
def test_parse_days(text, days):
    assert units.parse_days(text) == days


@pytest.mark.parametrize("text, says", [("3x", "use s, min, h, d or w"), ("7m", "use s, min, h, d or w"),
                                        ("-1", "greater than 0"), ("0h", "greater than 0"), ("nan", "finite"),
                                        ("abc", "expected a number")])
def test_parse_days_refusals(text, says):
    with pytest.raises(InputError, match=says):
        units.parse_days(text)


def test_budget_days_take_units(cli):
    base = cli("budget", "--gpus", "8", "--days", "14", "--json").json()
    assert cli("budget", "--gpus", "8", "--days", "2w", "--json").json()["total_flops"] == base["total_flops"]
    r = cli("budget", "--gpus", "8", "--days", "36h", "--json").json()
    assert r["inputs"]["days"] == 1.5
    _one_line_error(cli("budget", "--gpus", "8", "--days", "3x"), "--days", "s, min, h, d or w")


def test_step_time_parser_takes_a_time():
    from napkin.cli.options import duration

    parse = duration("step time", positive=True)
    assert parse("9s") == 9.0 and parse("500ms") == 0.5 and parse("2") == 2.0
    import typer

    with pytest.raises(typer.BadParameter, match="greater than 0"):
        parse("0s")
    with pytest.raises(typer.BadParameter, match="ns, us"):
        parse("9x")


# --- 4. --specs-dir: a wrong folder says so; the flag goes after the command too ------------------------------------

def _gpu_dir(root: Path) -> Path:
    from napkin.specs.catalog import builtin_dir

    spec = yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    spec.update(name="my-gpu", display_name="My GPU", aliases=["mine"])
    (root / "hardware_specs").mkdir(parents=True)
    (root / "hardware_specs" / "my-gpu.yaml").write_text(yaml.safe_dump(spec))
    return root


def test_specs_dir_without_spec_folders_is_one_line(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("not a spec")
    out = cli("--specs-dir", str(tmp_path), "hardware", "list")
    _one_line_error(out, str(tmp_path), "hardware_specs/", "model_specs/")


def test_specs_dir_with_yaml_directly_says_where_it_goes(cli, tmp_path):
    (tmp_path / "my-gpu.yaml").write_text("name: my-gpu\n")
    out = cli("hardware", "list", "--specs-dir", str(tmp_path))
    _one_line_error(out, str(tmp_path), "my-gpu.yaml", "hardware_specs")


def test_env_specs_dir_is_checked_too(cli, tmp_path):
    _one_line_error(cli("hardware", "list", env={"NAPKIN_SPECS_DIR": str(tmp_path)}), str(tmp_path),
                    "NAPKIN_SPECS_DIR")


@pytest.mark.parametrize("where", ["before", "after", "after=", "between"])
def test_specs_dir_before_or_after_the_command(cli, tmp_path, where):
    d = str(_gpu_dir(tmp_path))
    args = {"before": ["--specs-dir", d, "hardware", "show", "mine", "--json"],
            "after": ["hardware", "show", "mine", "--json", "--specs-dir", d],
            "after=": ["hardware", "show", "mine", f"--specs-dir={d}", "--json"],
            "between": ["hardware", "--specs-dir", d, "show", "mine", "--json"]}[where]
    out = cli(*args)
    assert out.exit_code == 0, out.stderr
    assert out.json()["spec"]["name"] == "my-gpu"


def test_specs_dir_after_the_command_in_a_calculator(cli, tmp_path):
    d = str(_gpu_dir(tmp_path))
    out = cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--gpu", "mine", "--json",
              "--specs-dir", d)
    assert out.exit_code == 0, out.stderr


def test_specs_dir_without_a_directory(cli):
    _one_line_error(cli("hardware", "list", "--specs-dir"), "--specs-dir needs a directory")


@pytest.mark.slow  # a fresh interpreter
def test_console_script_registers_one_command_with_specs_dir_after_it(tmp_path):
    d = str(_gpu_dir(tmp_path))
    probe = ("import sys; from napkin.cli.root import main\n"
             "sys.argv = ['napkin', 'hardware', 'list', '--json', '--specs-dir', sys.argv[1]]\n"
             "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "print('OTHERS', [m for m in ('calc', 'model_cmds', 'memory_cmds') if 'napkin.cli.' + m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe, d], capture_output=True, text=True, check=True)
    assert '"my-gpu"' in out.stdout and out.stdout.strip().splitlines()[-1] == "OTHERS []"


# --- 5. --check: the exit status says whether it fits ----------------------------------------------------------------

@pytest.mark.parametrize("args, code", [
    (["memory", "--model", "llama3-8b", "--seq", "4096"], 3),  # 153 GB on one 80 GB H100
    (["memory", "--model", "llama3-8b", "--seq", "4096", "--gpus", "8", "--zero", "3"], 0),
    (["memory", "--model", "llama3-70b", "--max-batch"], 3),
    (["memory", "--model", "llama3-8b", "--seq", "4096", "--min-gpus"], 0),
    (["inference", "--model", "llama3-70b"], 3),  # 141 GB of bf16 weights on one GPU
    (["inference", "--model", "llama3-8b"], 0),
])
def test_check_exit_status(cli, args, code):
    plain = cli(*args)
    checked = cli(*args, "--check")
    assert checked.exit_code == code, checked.stderr
    assert plain.exit_code == 0 and checked.stdout == plain.stdout and checked.stderr == ""


def test_check_with_json_prints_the_same_json(cli):
    args = ["memory", "--model", "llama3-8b", "--seq", "4096", "--json"]
    plain, checked = cli(*args), cli(*args, "--check")
    assert checked.exit_code == 3 and checked.json() == plain.json() and plain.json()["fits"] is False


def test_check_bad_input_is_still_2(cli):
    assert cli("memory", "--model", "nope", "--check").exit_code == 2


@pytest.mark.parametrize("command", [["memory"], ["inference"]])
def test_check_is_documented(command):
    from napkin.cli import app  # noqa: F401 - registers the commands
    from napkin.cli.root import app as root_app

    info = next(c for c in root_app.registered_commands if c.name == command[0])
    assert "3" in _param(command, "--check").help and "exit" in _param(command, "--check").help
    assert "--check" in info.callback.__doc__ and " 3 " in info.callback.__doc__


# --- 7. help that says what the code does ---------------------------------------------------------------------------

def test_seq_help_names_the_pre_training_length():
    text = _param(["memory"], "--seq").help
    assert "pre-training" in text and "train_seq" in text
    assert "Default: the model's max context." not in text


def test_pp_help_allows_uneven_stages():
    text = _param(["memory"], "--pp").help
    assert "must divide the layers" not in text and "fullest stage" in text


def test_pp_uneven_really_runs(cli):
    out = cli("memory", "--model", "llama3-8b", "--pp", "3", "--gpus", "3", "--json")  # 32 layers over 3 stages
    assert out.exit_code == 0, out.stderr


def test_bench_allreduce_save_names_step_time_calibration():
    text = _param(["bench-allreduce"], "--save").help
    assert "step-time --calibration" in text and "--mfu-from" not in text
    assert "train-time --mfu-from" in _param(["bench-matmul"], "--save").help


# --- 8. help text, plots, CPU rates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--help"], ["memory", "--help"], ["train-time", "--help"], ["hardware", "list",
                                  "--help"], ["bench-matmul", "--help"], ["step-time", "--help"]])
def test_flags_show_no_bool_placeholder(cli, args):
    out = cli(*args, env={"COLUMNS": "160"})
    assert out.exit_code == 0 and "Usage" in out.stdout
    assert "<bool>" not in out.stdout


def test_rate_unit_follows_the_largest_value():
    assert units.rate_unit([2.993e8, 1.2e9]) == (1e9, "GFLOP/s")
    assert units.rate_unit([2.993e8]) == (1e6, "MFLOP/s")
    assert units.rate_unit([4.1e14, 9e11]) == (1e12, "TFLOP/s")
    assert units.format_rate(2.993e8) == "299.3 MFLOP/s" and units.format_rate(2.993e11) == "299.3 GFLOP/s"


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_cpu_sweep_prints_giga_or_mega_not_tera(cli):
    out = cli("bench-matmul", "--device", "cpu", "--sizes", "64,128", "--warmup-ms", "1", "--iters", "3")
    assert out.exit_code == 0, out.stderr
    header = next(line for line in out.stdout.splitlines() if "M=N=K" in line)
    assert "TFLOP/s" not in header and ("GFLOP/s" in header or "MFLOP/s" in header)
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["64"], ["128"])]
    assert rows and all(float(r[5]) >= 1 for r in rows)  # never 0.0002993


@pytest.mark.skipif(not (HAS_TORCH and HAS_MPL), reason="needs torch and matplotlib")
def test_plot_says_where_it_wrote(cli, tmp_path):
    path = tmp_path / "sweep.png"
    out = cli("bench-matmul", "--device", "cpu", "--sizes", "32,64", "--warmup-ms", "1", "--iters", "3", "--plot",
              str(path))
    assert out.exit_code == 0, out.stderr
    assert path.stat().st_size > 0 and f"wrote {path}" in out.stderr


def test_json_output_unchanged_by_days_units(cli):
    a = cli("budget", "--gpus", "8", "--days", "7", "--json").json()
    b = cli("budget", "--gpus", "8", "--days", "168h", "--json").json()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
