"""The CLI's command tree, walked once for the tests that cover every command."""

from __future__ import annotations

from typing import Any

import typer


def leaf_commands() -> list[tuple[list[str], Any]]:
    """Every leaf command as (path, click command), e.g. (['hardware', 'show'], <Command>)."""
    from napkin.cli import app

    out: list[tuple[list[str], Any]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return out
