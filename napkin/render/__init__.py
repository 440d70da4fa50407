"""Rendering results: rich tables for people, JSON for scripts, the derivation for --explain.

A renderer per result type lives in a module of this package and registers itself with
``@renders("ResultClassName")``; nothing here computes, it only formats numbers already computed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from napkin.results import Result, Step

Renderer = Callable[[Any], list[Any]]  # returns rich renderables
_RENDERERS: dict[str, Renderer] = {}
_MODULES = ["napkin.render.calc", "napkin.render.catalog", "napkin.render.memory", "napkin.render.models",
            "napkin.render.bench", "napkin.render.serve",
            "napkin.render.validate", "napkin.render.step"]


def renders(*names: str) -> Callable[[Renderer], Renderer]:
    def deco(fn: Renderer) -> Renderer:
        for n in names:
            _RENDERERS[n] = fn
        return fn

    return deco


def register_module(module: str) -> None:
    """Other packages (bench, memory...) add their renderer modules here."""
    if module not in _MODULES:
        _MODULES.append(module)


def _renderer(result: Any) -> Renderer | None:
    name = type(result).__name__
    if name not in _RENDERERS:
        for m in _MODULES:
            importlib.import_module(m)
    return _RENDERERS.get(name)


def to_json(result: Result) -> str:
    return result.model_dump_json(indent=2)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def show(result: Result, *, as_json: bool = False, explain: bool = False) -> None:
    if as_json:
        import sys

        sys.stdout.write(to_json(result) + "\n")
        return
    out = console()
    fn = _renderer(result)
    if fn is None:
        raise LookupError(f"no renderer for {type(result).__name__}")
    for part in fn(result):
        out.print(_never_cut(part))
    if explain:
        out.print(explain_table(result.steps))
    for note in result.notes:
        out.print(f"[dim]note: {note}[/dim]")
    if not explain and result.steps:
        out.print("[dim](--explain shows the derivation)[/dim]")


def _never_cut(part: Any) -> Any:
    """A narrow terminal wraps a table's cells onto more lines; it never cuts a number to '12…'."""
    from rich.table import Table

    if isinstance(part, Table):
        for column in part.columns:
            column.overflow = "fold"
            column.no_wrap = False
    return part


def explain_table(steps: list[Step]) -> Any:
    """The derivation as a worked napkin: one numbered block per step."""
    from rich.text import Text

    out = Text("derivation\n", style="bold underline")
    width = len(str(len(steps)))
    for n, s in enumerate(steps, 1):
        pad = " " * (width + 2)
        out.append(f"{n:>{width}}. ", style="dim")
        out.append(s.name)
        out.append(" = ")
        out.append(fmt(s.value, s.unit), style="bold")
        out.append(f"\n{pad}{s.formula}", style="cyan")
        if s.substituted != s.formula:
            out.append(f"  =  {s.substituted}")
        out.append(f"\n{pad}source: {s.source}\n", style="dim")
    return out


def fmt(value: float | None, unit: str) -> str:
    """A value in the unit's natural style (FLOPs in sci, bytes in GB/GiB, counts in 1000s)."""
    from napkin import units

    if value is None:
        return "—"
    if unit == "FLOP/s":
        return units.format_rate(value)
    if unit in ("FLOP", "FLOP/day", "FLOPs"):
        return units.format_sci(value, unit, digits=4)
    if unit == "B":
        return units.format_bytes(value)
    if unit == "B/s":
        return units.format_bytes(value, binary=False) + "/s"
    if unit in ("params", "tokens"):
        return units.format_count(value, unit) if value >= 1000 else f"{value:g} {unit}"
    if unit == "$":
        return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.2f}"
    if unit == "days":
        return f"{value:,.2f} days"
    if unit in ("GPU·h", "kWh", "W"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"
    if unit in ("", "ratio", "fraction"):
        return f"{value:.4g}"
    return f"{value:.6g} {unit}"


def kv_table(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t
