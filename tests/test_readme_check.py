"""The README tour is real output: `python tools/update_readme.py --check` passes on an unchanged tree.

Measured lines (bench-matmul and validate timings, the device, threads, versions) are compared by
their labels only (tools/update_readme.py, MEASURED), so this passes on any machine, twice in a row.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "update_readme.py"
TORCH_COMMANDS = re.compile(r"^\$ napkin (bench-\S+|validate)\b", re.M)  # the tour's commands that import torch


def _load_tool():
    spec = importlib.util.spec_from_file_location("update_readme", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env() -> dict[str, str]:
    # The tool runs `napkin` through bash: put this interpreter's scripts (the venv's napkin) first on PATH.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@pytest.mark.slow
def test_readme_check_passes():
    readme = (ROOT / "README.md").read_text()
    if TORCH_COMMANDS.search(readme) and importlib.util.find_spec("torch") is None:
        pytest.skip("the README tour runs bench-matmul / validate, which need torch")
    out = subprocess.run([sys.executable, str(TOOL), "--check"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"README tour is stale; run `python tools/update_readme.py`:\n{out.stderr[-4000:]}"


def test_measured_lines_compare_by_label():
    tool = _load_tool()
    a = ("```console\n$ napkin bench-matmul --device cpu | head -n 4\n"
         "device                    Intel(R) Xeon(R) Processor (cpu)\n"
         "shape                                                  512³  (A+B+C 3.15 MB)\n"
         "time per call      min 683.5 µs · median 699.1 µs · max 776.5 µs  (20 calls)\n"
         "achieved (median)                384.0 GFLOP/s  (fastest call 392.7 GFLOP/s)\n```\n")
    b = ("```console\n$ napkin bench-matmul --device cpu | head -n 4\n"
         "device                                      AMD EPYC (cpu)\n"
         "shape                                                512³  (A+B+C 3.15 MB)\n"
         "time per call      min 5.88 ms · median 7.99 ms · max 11.31 ms  (20 calls)\n"
         "achieved (median)                33.6 GFLOP/s  (fastest call 45.7 GFLOP/s)\n```\n")
    assert tool.normalise(a) == tool.normalise(b)
    # A calculated figure beside them still counts.
    assert tool.normalise(a) != tool.normalise(b.replace("512³", "1024³"))


def test_calculated_lines_are_not_hidden():
    tool = _load_tool()
    # step-time's predicted "step time" is calculated: only validate's "step time  min … max …" is measured.
    for line in ("step time                                                                               9.52 s",
                 "MFU                                                                                    28.61%",
                 "training time                                          143.93 days"):
        assert tool.normalise_line(line) == line
    block = "```console\n$ napkin train-time --gpus 8\ntraining time      143.93 days\n```\n"
    assert tool.normalise(block) != tool.normalise(block.replace("143.93", "143.94"))
    assert tool.normalise(block) != tool.normalise(block.replace("      ", "   "))  # no measured line: exact
