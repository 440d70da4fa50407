"""`napkin hardware list|show`."""

from __future__ import annotations

from typing import Annotated

import typer

from napkin.cli.context import state
from napkin.cli.options import Explain, Json
from napkin.cli.root import app

hardware_app = typer.Typer(help="The hardware catalog: peak FLOP/s per dtype (dense and sparse), memory, "
                                "bandwidth, links, power, with sources.", no_args_is_help=True)
app.add_typer(hardware_app, name="hardware")


@hardware_app.command("list")
def hardware_list(ctx: typer.Context, json: Json = False) -> None:
    """List every accelerator, dense / sparse peaks side by side."""
    from napkin import render
    from napkin.accounting.catalog_query import list_hardware

    render.show(list_hardware(state(ctx).specs_dirs), as_json=json)


@hardware_app.command("show")
def hardware_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(
        help="Catalog name or alias, e.g. h100, a100-sxm-40gb, 'NVIDIA H100 80GB HBM3'.")],
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Show one accelerator's profile, its sources, and the ridge point per dtype."""
    from napkin import render
    from napkin.accounting.catalog_query import show_hardware

    render.show(show_hardware(name, state(ctx).specs_dirs), as_json=json, explain=explain)
