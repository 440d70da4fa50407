"""Output that is not a terminal: a pipe gets whole rows, no trailing spaces, ASCII where the encoding needs it,
bars that read without colour, a quiet end when the reader leaves, and progress only on a terminal.

Every test runs `python -m napkin ...` in a subprocess with stdout a pipe, as a shell pipeline would (so each is
marked slow; the two that call napkin in-process are not).
"""

from __future__ import annotations

import importlib.util
import os
import pty
import re
import subprocess
import sys

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "NAPKIN_SPECS_DIR")}
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.update(extra)
    return env


def napkin(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """napkin with stdout and stderr pipes (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "napkin", *args], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", env=_env(**env), timeout=300, check=False)


# --- whole rows, no trailing spaces -------------------------------------------------------------------------------

@pytest.mark.slow
def test_piped_hardware_list_keeps_each_row_on_one_line():
    out = napkin("hardware", "list")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "a100" in line and not line.startswith("short names")]
    assert [row.split()[0] for row in rows] == ["a100-pcie-40gb", "a100-pcie-80gb", "a100-sxm-40gb", "a100-sxm-80gb"]
    assert all(len(row.split()) == 9 for row in rows), rows  # name + 8 figures, nothing folded onto the next line
    assert "b" not in [line.strip() for line in out.stdout.splitlines()]  # the tail of 'a100-pcie-80gb' alone


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["hardware", "list"],
    ["memory", "--model", "llama3-8b", "--seq", "4096"],
    ["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--explain"],
    ["inference", "--model", "llama3-70b", "--gpus", "8"],
])
def test_piped_output_has_no_trailing_spaces(args):
    out = napkin(*args)
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.splitlines() if line != line.rstrip()] == []


@pytest.mark.slow
def test_piped_table_title_stays_on_one_line():
    out = napkin("memory", "--model", "llama3-8b", "--seq", "4096", "--gpus", "8", "--zero", "3")
    first = out.stdout.splitlines()[0]
    assert first.startswith("napkin memory: llama3-8b") and first.endswith("recompute none")


@pytest.mark.slow
def test_columns_does_not_wrap_a_pipe():
    out = napkin("hardware", "list", COLUMNS="40")
    assert [line.split()[0] for line in out.stdout.splitlines() if line.startswith(" a100")] == [
        "a100-pcie-40gb", "a100-pcie-80gb", "a100-sxm-40gb", "a100-sxm-80gb"]


# --- a reader that leaves ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args", [["hardware", "list"], ["models", "list"], ["hardware", "list", "--json"],
                                  ["memory", "--model", "llama3-8b", "--seq", "4096", "--explain"], ["--help"]])
def test_closed_pipe_ends_quietly(args):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before napkin writes anything (`| head -0`, or head after its line)
    try:
        out = subprocess.run([sys.executable, "-m", "napkin", *args], stdout=write, stderr=subprocess.PIPE,
                             text=True, env=_env(), timeout=120, check=False)
    finally:
        os.close(write)
    assert out.stderr == "" and out.returncode == 0  # head-friendly: the reader took what it wanted (issue 24)


@pytest.mark.slow
def test_head_sees_the_first_line_and_nothing_on_stderr():
    shell = f"'{sys.executable}' -m napkin models list | head -1"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, env=_env(),
                         check=False)
    assert out.stdout.startswith("model catalog") and out.stderr == ""


@pytest.mark.slow
def test_head_gets_exit_0_every_time_under_pipefail():
    """Whether napkin finished writing before `head -1` left is a race; the status must not depend on it (issue 24
    item 11: seven 1s in 12 runs). 20 runs of each, as a shell script with `set -o pipefail` would see them."""
    for args in ("models list", "hardware list", "memory --model llama3-8b --explain"):
        shell = f"'{sys.executable}' -m napkin {args} | head -1"
        codes = [subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, env=_env(),
                                check=False).returncode for _ in range(20)]
        assert codes == [0] * 20, (args, codes)


# --- a stdout that cannot encode Unicode ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["memory", "--model", "llama3-8b", "--seq", "4096"],
    ["memory", "--model", "llama3-8b", "--seq", "4096", "--explain"],
    ["hardware", "show", "h100", "--explain"],
    ["step-time", "--model", "llama3-8b", "--gpus", "8", "--tp", "2", "--micro-batch", "1", "--global-batch", "64",
     "--seq", "4096"],
    ["inference", "--model", "llama3-70b", "--gpus", "8", "--explain"],
    ["memory", "--help"],
])
def test_ascii_stdout_gets_ascii_fallbacks(args):
    out = napkin(*args, PYTHONIOENCODING="ascii")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "UnicodeEncodeError" not in out.stderr
    assert out.stdout.isascii() and out.stdout.strip()


@pytest.mark.slow
def test_ascii_fallbacks_read_as_the_unicode_does():
    out = napkin("memory", "--model", "llama3-8b", "--seq", "4096", PYTHONIOENCODING="ascii")
    assert "b=1 x s=4096, 1 x h100-sxm" in out.stdout  # × → x
    assert "+----" in out.stdout and "| total" in out.stdout  # rich draws an ASCII box


@pytest.mark.slow
def test_ascii_json_is_the_same_json():
    import json

    utf = napkin("memory", "--model", "llama3-8b", "--seq", "4096", "--json")
    ascii_ = napkin("memory", "--model", "llama3-8b", "--seq", "4096", "--json", PYTHONIOENCODING="ascii")
    assert ascii_.returncode == 0, ascii_.stderr
    assert ascii_.stdout.isascii() and json.loads(ascii_.stdout) == json.loads(utf.stdout)  # \u escapes, no loss


def test_ascii_fallback_function():
    from napkin.render import ascii_fallback

    assert ascii_fallback("8 × h100 · 10 µs — ≈ 2²") == "8 x h100 . 10 us -- ~ 2^2"
    assert ascii_fallback("█■░▌") == "##.|"
    assert ascii_fallback("naïve ✓").isascii()


# --- bars without colour --------------------------------------------------------------------------------------------

def _bar_line(text: str) -> str:
    return next(line for line in text.splitlines() if re.fullmatch(r"[A-Z.|]{20,}.*", line))


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"NO_COLOR": "1", "FORCE_COLOR": "1"}])
def test_memory_bar_has_a_glyph_per_part_without_colour(env):
    out = napkin("memory", "--model", "llama3-8b", "--seq", "4096", "--gpus", "8", "--zero", "3", **env)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)  # NO_COLOR on a terminal keeps bold: drop the escapes
    bar = _bar_line(text).split()[0]
    assert {"P", "G", "M", "O", "A", "."} <= set(bar)
    assert "█" not in text and "■" not in text  # every part would look the same without colour
    legend = next(line for line in text.splitlines() if line.startswith("P params"))
    assert "G grads" in legend and "O optimizer" in legend and "A activations" in legend
    assert "P parameters (bf16)" in text  # the table's rows carry the same letters


@pytest.mark.slow
def test_memory_bar_marks_the_end_of_memory_when_it_overflows():
    out = napkin("memory", "--model", "llama3-8b", "--seq", "4096")
    assert "|" in _bar_line(out.stdout).split()[0] and "over by" in out.stdout


@pytest.mark.slow
def test_step_time_bar_has_a_glyph_per_term_without_colour():
    out = napkin("step-time", "--model", "llama3-8b", "--gpus", "8", "--tp", "2", "--micro-batch", "1",
                 "--global-batch", "64", "--seq", "4096")
    assert out.returncode == 0, out.stderr
    bar = _bar_line(out.stdout)
    assert "G" in bar and "T" in bar and len(set(bar)) >= 3 and "█" not in out.stdout
    assert "G GEMMs (forward + backward)" in out.stdout and "T exposed TP communication" in out.stdout


@pytest.mark.slow
def test_colour_terminal_keeps_the_coloured_blocks():
    out = napkin("memory", "--model", "llama3-8b", "--seq", "4096", "--gpus", "8", "--zero", "3", FORCE_COLOR="1")
    assert "█" in out.stdout and "■" in out.stdout and "\x1b[" in out.stdout
    assert not re.search(r"^P{3,}", out.stdout, re.MULTILINE)


# --- progress: on a terminal only, never with --json ----------------------------------------------------------------

def _with_tty_stderr(args: list[str]) -> tuple[int, str, str]:
    """napkin with stdout a pipe and stderr a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "napkin", *args], stdout=subprocess.PIPE, stderr=slave,
                            env=_env(COLUMNS="120"))
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: napkin has exited
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.stdout.read() if proc.stdout else b""
    code = proc.wait(timeout=300)
    os.close(master)
    return code, stdout.decode("utf-8", "replace"), shown.decode("utf-8", "replace")


@needs_torch
@pytest.mark.slow
def test_allreduce_shows_progress_on_a_terminal_never_with_json():
    args = ["bench-allreduce", "--nproc", "2", "--sizes", "64KiB,1MiB", "--iters", "2", "--warmup-iters", "1"]
    code, stdout, shown = _with_tty_stderr(args)
    assert code == 0 and "busbw" in stdout
    assert "all-reduce 65.54 kB" in shown or "all-reduce 1.05 MB" in shown
    code, stdout, shown = _with_tty_stderr([*args, "--json"])
    assert code == 0 and stdout.lstrip().startswith("{") and "all-reduce" not in shown


@needs_torch
@pytest.mark.slow
def test_validate_shows_each_phase_on_a_terminal():
    _, stdout, shown = _with_tty_stderr(["validate", "--device", "cpu", "--iters", "3", "--warmup-ms", "1"])
    assert "PASS" in stdout or "FAIL" in stdout
    assert "cruncher: counting FLOPs" in shown and "timing steps" in shown


@needs_torch
def test_validate_reports_every_phase_in_order():
    from napkin.bench.validate import validate_step
    from napkin.specs.catalog import get_model

    seen: list[tuple[int, int, str | None]] = []
    validate_step(get_model("cruncher"), device="cpu", iters=2, warmup_s=0.0,
                  progress=lambda done, total, what: seen.append((done, total, what)))
    assert seen == [(0, 2, "cruncher: counting FLOPs and saved bytes"), (1, 2, "cruncher: timing steps"),
                    (2, 2, None)]


@pytest.mark.slow
@needs_torch
def test_spawned_allreduce_reports_each_size_to_the_launcher():
    from napkin.bench.allreduce import bench_allreduce

    seen: list[tuple[int, int, float | None]] = []
    bench_allreduce([2**12, 2**14], nproc=2, iters=2, warmup_iters=0,
                    progress=lambda done, total, size: seen.append((done, total, size)))
    assert seen == [(0, 2, 2**12), (1, 2, 2**14), (2, 2, None)]
