"""Calculator commands never import torch (the probe: tests/torch_probe.py), and never read specs at import time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch_probe import assert_no_torch

CALCULATOR_COMMANDS = [
    ["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024"],
    ["max-model", "--gpus", "8", "--optimizer", "adamw"],
    ["budget", "--gpus", "8", "--days", "7"],
    ["hardware", "list"],
    ["hardware", "show", "h100", "--explain"],
    ["train-time", "--model", "llama3-8b", "--tokens", "15T", "--gpus", "64", "--recompute", "full"],
    ["flops", "--model", "llama3-8b", "--tokens", "1T", "--seq", "8192"],
    ["mfu", "--model", "llama3-8b", "--tokens-per-s", "9000", "--gpus", "8"],
    ["memory", "--model", "llama2-7b", "--batch", "4", "--seq", "4096", "--zero", "3", "--gpus", "8"],
    ["memory", "--model", "cruncher", "--batch", "2", "--optimizer", "adagrad", "--precision", "fp32"],
    ["inference", "--model", "llama3-70b", "--gpus", "8", "--batch", "8"],
    ["roofline", "--gpu", "h100", "--model", "llama3-8b"],
    ["models", "list"],
    ["models", "show", "deepseek-v3"],
]


@pytest.mark.slow
def test_calculator_commands_do_not_import_torch():
    assert_no_torch(*CALCULATOR_COMMANDS)


@pytest.mark.slow
def test_import_is_lazy():
    code = ("import sys, napkin, napkin.cli; print(int('torch' in sys.modules), int('yaml' in sys.modules), "
            "int('napkin.accounting.training' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0", "0"]


LAZY_PROBE = r"""
import sys
from napkin.cli.root import main
sys.argv = ["napkin", "--specs-dir", sys.argv[1], "train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8",
            "--json"]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
others = [m for m in ("model_cmds", "memory_cmds", "serve_cmds", "bench_cmds", "validate_cmds", "catalog_cmds")
          if f"napkin.cli.{m}" in sys.modules]
print("OTHERS", others)
"""


@pytest.mark.slow
def test_main_registers_only_the_command_it_runs(tmp_path):
    (tmp_path / "hardware_specs").mkdir()  # a specs directory must hold hardware_specs/ or model_specs/
    out = subprocess.run([sys.executable, "-c", LAZY_PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    assert '"days"' in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "OTHERS []"


def test_command_module_map_covers_every_command():
    import importlib

    from napkin.cli import app
    from napkin.cli.root import COMMAND_MODULES

    names = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert names == set(COMMAND_MODULES)
    for cmd in app.registered_commands:
        module = importlib.import_module(f"napkin.cli.{COMMAND_MODULES[cmd.name]}")
        assert cmd.callback.__module__ == module.__name__, cmd.name


@pytest.mark.slow
def test_unknown_command_still_suggests(tmp_path):
    out = subprocess.run([sys.executable, "-m", "napkin", "train-tme"], capture_output=True, text=True)
    assert out.returncode == 2 and "train-time" in out.stderr


CONSOLE_PROBE = r"""
import atexit, sys
atexit.register(lambda: print("atexit ran", flush=True))
from napkin.cli import console
sys.argv = ["napkin", *sys.argv[1:]]
console()
"""


def _console(*args, **kw):
    return subprocess.run([sys.executable, "-c", CONSOLE_PROBE, *args], capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_console_ends_a_calculator_without_teardown_and_loses_no_output():
    import json

    out = _console("train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--json")
    assert out.returncode == 0, out.stderr
    assert abs(json.loads(out.stdout)["days"] - 143.9266) < 1e-3  # all of it, flushed: the JSON parses
    assert "atexit ran" not in out.stdout  # os._exit: no atexit handlers, no interpreter teardown
    bad = _console("train-time", "--params", "abc", "--tokens", "15e12", "--gpus", "8")
    assert bad.returncode == 2 and bad.stderr.startswith("napkin: error: ") and len(bad.stderr.splitlines()) == 1
    assert "atexit ran" not in bad.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["bench-matmul", "bench-allreduce", "validate"])
def test_console_ends_the_measured_mode_the_usual_way(command):
    """torch, CUDA and torch.distributed clean up in atexit handlers: those commands keep Python's own exit."""
    out = _console(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("atexit ran")


def test_which_commands_end_fast():
    from napkin.cli.root import COMMAND_MODULES, NORMAL_EXIT_MODULES, is_calculator

    assert {c for c in COMMAND_MODULES if not is_calculator(c)} == {"bench-matmul", "bench-allreduce", "validate"}
    assert not is_calculator(None) and not is_calculator("train-tme")
    assert NORMAL_EXIT_MODULES <= set(COMMAND_MODULES.values())


def test_only_the_command_run_is_built():
    import typer

    from napkin.cli.root import app, only, register

    register("train-time")
    built = typer.main.get_command(only("train-time"))
    assert list(built.commands) == ["train-time"]  # max-model and budget, in the same module, are not built
    assert {"max-model", "budget"} <= {c.name for c in app.registered_commands}  # and still registered
    assert list(typer.main.get_command(only("hardware")).commands) == ["hardware"]
    assert only(None) is app and only("train-tme") is app


def _napkin(*args, env=None):
    return subprocess.run([sys.executable, "-m", "napkin", *args], capture_output=True, text=True, env=env)


FULL_APP = r"""
import sys
from napkin.cli import app
app(sys.argv[1:], prog_name="napkin")
"""


@pytest.mark.slow
@pytest.mark.parametrize("args", [["train-time", "--help"], ["memory", "--help"], ["hardware", "show", "--help"],
                                  ["models", "--help"], ["flops", "--help"]])
def test_a_command_built_alone_has_the_help_of_the_whole_app(args):
    alone = _napkin(*args)
    full = subprocess.run([sys.executable, "-c", FULL_APP, *args], capture_output=True, text=True)
    assert alone.returncode == full.returncode == 0, alone.stderr + full.stderr
    assert alone.stdout == full.stdout


@pytest.mark.slow
def test_root_help_lists_every_command_wherever_help_is():
    full = _napkin("--help").stdout
    for name in ("train-time", "step-time", "plan", "flops", "memory", "inference", "bench-matmul", "validate",
                 "models", "hardware"):
        assert f" {name} " in full, name
    assert _napkin("--help", "train-time").stdout == full
    assert _napkin("-h", "memory").stdout == full


@pytest.mark.slow
def test_shell_completion_sees_every_command_and_option():
    import os

    def complete(words, cword):
        env = {**os.environ, "_NAPKIN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        return _napkin(env=env).stdout.split()

    assert complete("napkin tr", 1) == ["train-time"]
    assert {"bench-matmul", "bench-allreduce", "budget"} <= set(complete("napkin b", 1))
    assert complete("napkin train-time --tok", 2) == ["--tokens"]


EXIT_PROBE = r"""
import sys, threading, types
from napkin.cli.root import exit_now
case = sys.argv[1]
if case == "message":
    exit_now("a message")
elif case == "coverage":
    sys.modules["coverage"] = types.ModuleType("coverage")
    exit_now(0)
    del sys.modules["coverage"]
elif case == "thread":
    done = threading.Event()
    t = threading.Thread(target=done.wait)
    t.start()
    exit_now(0)
    done.set()
    t.join()
print("returned", flush=True)
exit_now(3)
print("not reached")
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", ["message", "coverage", "thread", "plain"])
def test_exit_now_leaves_the_exit_to_python_where_it_would_lose_something(case):
    out = subprocess.run([sys.executable, "-c", EXIT_PROBE, case], capture_output=True, text=True)
    assert out.stdout.splitlines() == ["returned"]  # each guard returned; the last call ended the process
    assert out.returncode == 3
