"""The command-line interface: parses options, calls one API function, renders the result.

``napkin.cli.root`` is the typer app with every command registered (for tests and embedding);
``main()`` (the console script) registers only the command it runs, to start fast.
"""

from __future__ import annotations

from typing import Any

from napkin.cli.root import main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from napkin.cli.root import app, register

        register()
        return app
    raise AttributeError(f"module 'napkin.cli' has no attribute '{name}'")
