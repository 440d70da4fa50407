"""The command-line interface: parses options, calls one API function, renders the result.

``napkin.cli.app`` is the typer app with every command registered (for tests and embedding); ``main()`` runs
the command in sys.argv with only that command registered and built, and ``console()`` (the console script,
``python -m napkin``) runs it and then ends the process: a calculator command without the interpreter's
teardown (see napkin.cli.root.console). Importing this package imports neither typer nor any command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "console", "main"]


def console() -> None:
    """The console script: napkin.cli.root.console, with the garbage collector off while typer and the command's
    modules load (importing typer alone runs ~30 collections that free next to nothing); root.console turns it
    back on once they have."""
    import gc
    import sys

    if sys.stdout is None:  # started with stdout closed (`napkin models list >&-`): Python leaves sys.stdout None
        if sys.stderr is not None:
            sys.stderr.write("napkin: error: standard output is closed (>&-): there is nowhere to print the result\n")
        raise SystemExit(2)
    gc.disable()
    from napkin.cli.root import console as run

    run()


def __getattr__(name: str) -> Any:
    if name == "app":
        from napkin.cli.root import app, register

        register()
        return app
    if name == "main":
        from napkin.cli.root import main

        return main
    raise AttributeError(f"module 'napkin.cli' has no attribute '{name}'")
