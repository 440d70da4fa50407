"""Shared test helpers: run the CLI in-process and check its JSON against the Python API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from napkin.cli import app


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
        return Run(runner.invoke(app, list(args), env=env, catch_exceptions=True))

    return invoke


# The fuzz tests (test_fuzz_cli.py) count every input they generate here, and what went wrong with any; the closing
# summary prints the tally so a run can be quoted ("0 tracebacks and 0 hangs over N generated inputs").
FUZZ_TALLY = {"inputs": 0, "tracebacks": 0, "hangs": 0}


@pytest.fixture(scope="session")
def fuzz_tally() -> dict[str, int]:
    return FUZZ_TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    t = FUZZ_TALLY
    if t["inputs"]:
        terminalreporter.write_sep("-", f"fuzz: {t['inputs']:,} generated inputs, {t['tracebacks']} tracebacks, "
                                        f"{t['hangs']} hangs")
