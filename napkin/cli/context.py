"""What the root command hands to every subcommand: the user's spec directories."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer


@dataclass
class State:
    specs_dirs: list[str] = field(default_factory=list)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def hardware(ctx: typer.Context, name: str):  # -> HardwareSpec
    from napkin.specs.catalog import get_hardware

    return get_hardware(name, state(ctx).specs_dirs)


def model(ctx: typer.Context, name: str):  # -> TransformerSpec | LinearSpec
    """A catalog model, a config.json or a model YAML, with the user's spec directories."""
    from napkin.specs.catalog import get_model

    return get_model(name, state(ctx).specs_dirs)
