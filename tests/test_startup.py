"""Calculator commands never import torch, and never read specs at import time."""

from __future__ import annotations

import json
import subprocess
import sys

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

PROBE = r"""
import json, sys
from napkin.cli import app
seen = {}
for args in json.loads(sys.argv[1]):
    code = app(args, standalone_mode=False)
    seen[" ".join(args)] = [code, "torch" in sys.modules]
print(json.dumps(seen))
"""


def test_calculator_commands_do_not_import_torch():
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(CALCULATOR_COMMANDS)], capture_output=True,
                         text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    for cmd, (code, torch_loaded) in seen.items():
        assert code in (0, None), cmd
        assert not torch_loaded, f"'napkin {cmd}' imported torch"


def test_import_is_lazy():
    code = ("import sys, napkin, napkin.cli; "
            "print(int('torch' in sys.modules), int('yaml' in sys.modules), int('napkin.accounting.training' in sys.modules))")
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


def test_unknown_command_still_suggests(tmp_path):
    out = subprocess.run([sys.executable, "-m", "napkin", "train-tme"], capture_output=True, text=True)
    assert out.returncode == 2 and "train-time" in out.stderr
