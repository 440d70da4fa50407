"""The CLI's command tree: built once per app for the tests (`command_tree`) and walked for those that cover every
command."""

from __future__ import annotations

from typing import Any

import typer.main

_build_tree = typer.main.get_command  # typer's own builder (conftest points typer.testing's at command_tree)
_TREES: dict[int, tuple[Any, tuple[Any, ...], Any]] = {}  # id(app) -> (app, its registrations, click command)


def _registrations(typer_app: Any) -> tuple[Any, ...]:
    """What typer builds a tree from: the app's callback, commands and groups (theirs too), by identity."""
    groups = tuple((id(g), _registrations(g.typer_instance) if g.typer_instance is not None else None)
                   for g in typer_app.registered_groups)
    return id(typer_app.registered_callback), tuple(map(id, typer_app.registered_commands)), groups


def command_tree(typer_app: Any) -> Any:
    """The click command of ``typer_app``, built on first use and again only when a command was registered since
    (typer builds the whole tree, ~25-37 ms for napkin's, on every call). The app is kept in the cache so that its id
    cannot be reused by another app while the entry lives."""
    registrations = _registrations(typer_app)
    hit = _TREES.get(id(typer_app))
    if hit is None or hit[0] is not typer_app or hit[1] != registrations:
        hit = _TREES[id(typer_app)] = (typer_app, registrations, _build_tree(typer_app))
    return hit[2]


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

    walk(command_tree(app), [])
    return out
