"""Issue 24 item 12, the remainder: a --json error on stdout, the measured MFU formatted, the show commands not
padded to a spec file's path, and docs/memory.md's --explain excerpt cut only where it says so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args, needle", [
    (["train-time", "--gpus", "0", "--params", "7e9", "--tokens", "1T"], "GPU count must be greater than 0"),
    (["train-time", "--gpus", "8", "--params", "7e9", "--tokens", "1T", "--gpu", "h10"], "unknown hardware 'h10'"),
    (["memory", "--model", "nosuchmodel"], "unknown model"),
])
def test_a_json_error_is_a_json_object_on_stdout_and_one_line_on_stderr(cli, args, needle):
    out = cli(*args, "--json")
    assert out.exit_code == 2
    doc = json.loads(out.stdout)
    assert needle in doc["error"] and doc["exit_code"] == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0] == "napkin: error: " + doc["error"]


def test_without_json_an_error_prints_nothing_on_stdout(cli):
    out = cli("train-time", "--gpus", "0", "--params", "7e9", "--tokens", "1T")
    assert out.exit_code == 2 and out.stdout == ""


def test_json_after_a_double_dash_is_not_the_flag():
    from napkin.cli.root import wants_json

    assert wants_json(["memory", "--json"]) and not wants_json(["memory", "--", "--json"])


def test_a_measured_mfu_prints_three_significant_digits(cli, tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_bench_saved import _single

    from napkin.bench.saved import save_result

    path = tmp_path / "m.json"
    save_result(_single(0.1293321), path)
    out = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--mfu-from", str(path))
    assert out.exit_code == 0, out.stderr
    mfu = next(line for line in out.stdout.splitlines() if line.startswith("MFU"))
    assert mfu.split()[-1] == f"{0.1293321 * 0.6:.3g}" == "0.0776"  # 0.6: the default --mfu-fraction


@pytest.mark.parametrize("args, short_row", [(["hardware", "show", "h100"], "TDP"),
                                             (["models", "show", "llama3-8b"], "embeddings")])
def test_show_commands_are_not_padded_to_the_spec_files_path(cli, args, short_row):
    out = cli(*args)
    assert out.exit_code == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(short_row))
    path_row = next(line for line in out.stdout.splitlines() if line.startswith("spec file"))
    assert len(row) < 40 < len(path_row)  # the short row ends where its value does


def test_memory_docs_explain_excerpt_is_a_cut_of_the_real_output():
    doc = (ROOT / "docs" / "memory.md").read_text()
    cmd = "napkin memory --model cruncher --micro-batch 2 --optimizer adagrad --precision fp32 --explain"
    block = doc[doc.index("$ " + cmd):]
    block = block[:block.index("```")].splitlines()[1:]
    real = subprocess.run([sys.executable, "-m", "napkin", *cmd.split()[1:]], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"}, cwd=ROOT).stdout.splitlines()
    # every run of lines between two '…' is a contiguous run of the real output: nothing skipped silently
    runs, cur = [], []
    for line in block:
        if line == "…":
            runs.append(cur)
            cur = []
        else:
            cur.append(line)
    runs.append(cur)
    for run in (r for r in runs if r):
        i = real.index(run[0])
        assert real[i:i + len(run)] == run
    numbered = [int(m.group(1)) for line in block if (m := re.match(r"\s*(\d+)\. ", line))]
    assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))


# -- issue 25 items 12 and 13 (remainder) ----------------------------------------------------------------------------

def test_memory_micro_batches_without_pp_is_refused_in_one_line(cli):
    out = cli("memory", "--model", "llama3-8b", "--micro-batches", "4")
    assert out.exit_code == 2 and len(out.stderr.splitlines()) == 1
    assert "--micro-batches would be ignored without --pp" in out.stderr
    assert cli("memory", "--model", "llama3-8b", "--micro-batches", "4", "--pp", "2", "--gpus", "2").exit_code == 0
    assert cli("memory", "--model", "llama3-8b").exit_code == 0  # the default is not something typed


@pytest.mark.parametrize("start", ["0", "5"])
def test_m_range_error_shows_the_start_typed(start):
    from napkin.bench.device import range_values
    from napkin.errors import InputError

    with pytest.raises(InputError, match=rf"^--m-range {start} 100000000 1 holds"):
        range_values(int(start), 100000000, 1, "--m-range")
    with pytest.raises(InputError, match=rf"^--m-range {start} 1 1 holds no size"):
        range_values(int(start), 1, 1, "--m-range")
