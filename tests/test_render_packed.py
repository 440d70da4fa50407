"""render.Packed: a box-less table drawn as one row of multi-line cells prints exactly what the table prints."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from napkin.render import Packed, kv_table


def _table() -> Table:
    t = Table(title="activations: a title longer than the table it sits on, which rich wraps", title_justify="left",
              box=None, pad_edge=False)
    t.add_column("kept for backward", style="bold")
    t.add_column("per token", justify="right")
    t.add_column("split", justify="center")
    t.add_column("bytes", justify="right")
    for i in range(12):
        t.add_row(f"tensor {'x' * (i % 5)}", "h" * (1 + i % 3), ["/t", "/t if SP", "—"][i % 3], f"{1.5 ** i:.2f} MB")
    t.add_row("[bold]one layer[/bold]", "", "", "[bold]42.00 MB[/bold]")
    t.add_row("[dim]outside the layers[/dim]", "", "", "")
    t.add_row("log-probabilities", "V", "/t", "2.10 GB")
    return t


def _draw(renderable: object, width: int, color: bool) -> str:
    c = Console(file=io.StringIO(), width=width, force_terminal=color, color_system="truecolor" if color else None,
                highlight=False)
    c.print(renderable)
    return c.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [200, 80, 60, 40, 20])
@pytest.mark.parametrize("color", [False, True])
def test_packed_draws_what_the_table_draws(width, color):
    assert _draw(Packed(_table()), width, color) == _draw(_table(), width, color)


def test_packed_falls_back_where_lines_cannot_carry_the_table():
    t = _table()
    t.add_row("two\nlines", "h", "/t", "1 B")  # a multi-line cell: rows would not line up
    assert Packed(t)._lines(Console()) is None
    boxed = Table("a", "b")
    boxed.add_row("1", "2")
    assert Packed(boxed)._lines(Console()) is None
    for width in (100, 30):  # the table itself: the same text
        assert _draw(Packed(t), width, False) == _draw(t, width, False)


def test_kv_table_takes_rows_after_it_is_built():
    t = kv_table("napkin x", [("a", "1")])
    t.add_row("b", "2")
    out = _draw(t, 100, False)
    assert out.splitlines()[-2:] == ["a  1", "b  2"]
