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
