"""Shared test helpers: run the CLI in-process and check its JSON against the Python API.

typer's ``CliRunner.invoke(app, ...)`` turns the Typer app into a click command tree on every call (~25-37 ms for
napkin's: every command's parser). Here the tree is built once per app and reused for as long as the app's
registrations stay as they are (`cli_tree.command_tree`); typer.testing's builder is pointed at it for the whole
session, so a test that calls ``CliRunner().invoke(app, ...)`` itself saves the same. Each call still runs in a fresh
click context with its own stdout, stderr and environment, and nothing a call parses is kept on the tree
(tests/test_cli_fixture.py checks both).

Tests marked ``slow`` (processes spawned, a wheel built, the README tour run, the long fuzzers) are left out of the
everyday loop, ``python -m pytest -m "not slow"``; CI runs them all.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import typer.testing
from cli_tree import command_tree
from typer.testing import CliRunner

from napkin.cli import app

typer.testing._get_command = command_tree  # what typer's CliRunner.invoke calls on every invoke


class Run:
    def __init__(self, result: Any) -> None:
        self.exit_code: int = result.exit_code
        self.stdout: str = result.stdout
        self.stderr: str = result.stderr
        self.exception = result.exception

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli():
    """cli("train-time", "--gpus", "8", ...) -> Run with exit_code, stdout, stderr."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Run:
        return Run(runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=True))

    return invoke


# torch on the CPU: one thread. The tests' models are tiny, so a second intra-op thread buys nothing, and on a busy
# 2-core machine every parallel region waits for a thread that is not scheduled: seven torch-heavy test files
# (-m "not slow") took 10.8-35.8 s with torch's default 2 threads, 9.5-9.8 s with one. Set in this process only (once
# torch is imported), so that what spawned processes measure (the README tour, torchrun ranks) is a user's.
_torch_threads_set = False


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures run torch
def pytest_runtest_setup(item: Any) -> None:
    global _torch_threads_set
    torch = sys.modules.get("torch")
    if not _torch_threads_set and torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(1)
        _torch_threads_set = True


# The fuzz tests (test_fuzz_cli.py) count every input they generate here, and what went wrong with any; the closing
# summary prints the tally so a run can be quoted ("0 tracebacks and 0 hangs over N generated inputs").
FUZZ_TALLY = {"inputs": 0, "tracebacks": 0, "hangs": 0}


@pytest.fixture(scope="session")
def fuzz_tally() -> dict[str, int]:
    return FUZZ_TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    t = FUZZ_TALLY
    refused = sys.modules.get("test_fuzz_config_keys")
    if refused is not None and refused.REFUSED[0]:
        terminalreporter.write_sep("-", f"config.json keys: {refused.REFUSED[0]:,} inputs refused in one line")
    if t["inputs"]:
        terminalreporter.write_sep("-", f"fuzz: {t['inputs']:,} generated inputs, {t['tracebacks']} tracebacks, "
                                        f"{t['hangs']} hangs")
