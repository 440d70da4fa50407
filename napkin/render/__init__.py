"""Rendering results: rich tables for people, JSON for scripts, the derivation for --explain.

A renderer per result type lives in a module of this package and registers itself with
``@renders("ResultClassName")``; nothing here computes, it only formats numbers already computed.

Where the output goes decides how it looks (``console()``): on a terminal, rich with colour, tables folded to
its width; on a pipe or a file, plain text that never wraps and has no trailing spaces, so ``grep`` and ``cut``
see one row per line. A stream that cannot encode Unicode (``PYTHONIOENCODING=ascii``, a C locale) gets ASCII
stand-ins (``ascii_fallback``) instead of a UnicodeEncodeError.
"""

from __future__ import annotations

import codecs
import importlib
import re
import sys
import unicodedata
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # imported for annotations only: `import napkin.render` stays cheap (the CLI's start-up)
    from napkin.results import Result, Step

Renderer = Callable[[Any], list[Any]]  # returns rich renderables
_RENDERERS: dict[str, Renderer] = {}
_MODULES = ["napkin.render.calc", "napkin.render.catalog", "napkin.render.memory", "napkin.render.models",
            "napkin.render.bench", "napkin.render.serve",
            "napkin.render.validate", "napkin.render.step", "napkin.render.across"]

def renders(*names: str) -> Callable[[Renderer], Renderer]:
    def deco(fn: Renderer) -> Renderer:
        for n in names:
            _RENDERERS[n] = fn
        return fn

    return deco


def _renderer(result: Any) -> Renderer | None:
    name = type(result).__name__
    if name not in _RENDERERS:
        for m in _MODULES:
            importlib.import_module(m)
    return _RENDERERS.get(name)


def to_json(result: Result) -> str:
    return result.to_json()  # nested results without the steps the outer result already holds


# --- where the output goes ---------------------------------------------------------------------------------------

PIPE_WIDTH = 10_000  # columns of a console that is not a terminal: wide enough that no table ever wraps
_TRAILING_SPACE = re.compile(r"[ \t]+(?=\n)")

# ASCII stand-ins for the characters napkin prints, for a stream that cannot encode them. Box drawing is rich's
# (it draws ASCII boxes itself on such a stream); what is left is in napkin's own text.
ASCII_FALLBACK: dict[str, str] = {
    "\u00b7": ".", "\u00d7": "x", "\u00b5": "u", "\u03bc": "u", "\u2212": "-", "\u2013": "-", "\u2014": "--",
    "\u2192": "->", "\u2190": "<-", "\u2248": "~", "\u2264": "<=", "\u2265": ">=", "\u2260": "!=", "\u00b1": "+/-",
    "\u00b2": "^2", "\u00b3": "^3", "\u1d40": "^T", "\u2308": "ceil(", "\u2309": ")", "\u230a": "floor(",
    "\u230b": ")", "\u2026": "...", "\u2022": "*", "\u221e": "inf", "\u2299": "(.)", "\u00b0": " deg",
    "\u00a7": "S", "\u2713": "ok", "\u2717": "X", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u25a0": "#", "\u2588": "#", "\u2593": "#", "\u2592": "=", "\u2591": ".", "\u258c": "|", "\u2502": "|",
    "\u2500": "-", "\u2501": "-", "\u2503": "|", "\u2550": "=", "\u00a0": " ",
    "\u03a3": "Sum", "\u03b1": "alpha", "\u03b2": "beta", "\u03b3": "gamma", "\u03b5": "eps", "\u03b7": "eta",
    "\u03c3": "sigma", "\u0398": "Theta", "\u03b8": "theta", "\u03a8": "Psi", "\u03bb": "lambda",
}
FALLBACK_ERRORS = "napkin-ascii"  # the codec error handler that applies ASCII_FALLBACK


def ascii_fallback(text: str) -> str:
    """``text`` in ASCII: napkin's stand-ins (× → x, µ → u, · → ., ■ → #), else the letter without its accent,
    else ?."""
    out = []
    for ch in text:
        if ord(ch) < 128:
            out.append(ch)
        elif ch in ASCII_FALLBACK:
            out.append(ASCII_FALLBACK[ch])
        else:
            base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
            out.append(base or "?")
    return "".join(out)


def _fallback_errors(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return ascii_fallback(err.object[err.start:err.end]), err.end


codecs.register_error(FALLBACK_ERRORS, _fallback_errors)


def can_encode(stream: Any, sample: str = "\u2500\u00d7\u00b5\u00b7\u25a0\u2588\u2014\u2192") -> bool:
    """Whether ``stream`` takes napkin's Unicode (UTF-8 does; ascii, latin-1 and cp1252 do not)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def prepare_streams() -> None:
    """stdout and stderr that cannot encode Unicode write ASCII stand-ins instead of raising (help and errors too)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not can_encode(stream) and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=FALLBACK_ERRORS)
            except (ValueError, OSError):  # a closed or detached stream: nothing to write on anyway
                pass


class _Output:
    """The file a console writes on: strips trailing spaces off a pipe's lines, and replaces what the stream
    cannot encode with ASCII stand-ins. Everything else (isatty, encoding) is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.plain = False  # set by console(): not a terminal
        self._ascii = not can_encode(stream)

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty()) if isatty is not None else False

    def write(self, text: str) -> int:
        if self.plain:
            text = _TRAILING_SPACE.sub("", text)
        if self._ascii:
            text = text.encode(self.encoding, errors=FALLBACK_ERRORS).decode(self.encoding)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def console(file: Any = None) -> Any:
    """A rich console on ``file`` (default stdout). A terminal gets colour and its width; a pipe or a file gets
    plain text with no trailing spaces, PIPE_WIDTH wide so that rows never wrap (whatever $COLUMNS says: a row
    is one line for grep), and ASCII where the encoding needs it."""
    from rich.console import Console

    out = _Output(sys.stdout if file is None else file)
    con = Console(file=cast(IO[str], out), highlight=False)  # _Output is a text stream by duck typing
    if not con.is_terminal:
        out.plain = True
        con.width = PIPE_WIDTH
    return con


def plain(con: Any) -> bool:
    """No colour on this console (not a terminal, NO_COLOR, TERM=dumb): a renderer marks parts with glyphs."""
    return con.color_system is None or con.no_color


def show(result: Result, *, as_json: bool = False, explain: bool = False) -> None:
    if as_json:
        text = to_json(result)
        if not can_encode(sys.stdout, text):
            import json

            text = json.dumps(json.loads(text), indent=2, ensure_ascii=True)  # \u00d7 escapes: the same JSON
        sys.stdout.write(text + "\n")
        return
    out = console()
    fn = _renderer(result)
    if fn is None:
        raise LookupError(f"no renderer for {type(result).__name__}")
    for part in fn(result):
        out.print(_never_cut(part, wrap_title=out.is_terminal))
    if explain:
        out.print(explain_table(result.steps))
    for note in result.notes:
        out.print(f"[dim]note: {safe(note)}[/dim]")
    if not explain and result.steps:
        out.print("[dim](--explain shows the derivation)[/dim]")


def _never_cut(part: Any, wrap_title: bool = True) -> Any:
    """A narrow terminal wraps a table's cells onto more lines; it never cuts a number to '12…'.

    Off a terminal the console is PIPE_WIDTH wide, so no row wraps; a title longer than its table stays on one
    line too (rich wraps titles to the table's width), with ``wrap_title=False``.
    """
    from rich.table import Table
    from rich.text import Text

    if isinstance(part, Packed):
        _never_cut(part.table, wrap_title)
    elif isinstance(part, Table):
        for column in part.columns:
            column.overflow = "fold"
            column.no_wrap = False
        if not wrap_title and part.title:
            title = Text.from_markup(part.title) if isinstance(part.title, str) else part.title.copy()
            title.no_wrap, title.overflow = True, "ignore"
            part.title = title
    return part


# --- marks that read without colour ------------------------------------------------------------------------------

class Mark:
    """A part's mark beside its label: a coloured ■ on a colour terminal, the part's own glyph (a letter) without
    colour, where every ■ would look the same."""

    def __init__(self, label: str, color: str, glyph: str) -> None:
        self.label, self.color, self.glyph = label, color, glyph

    def text(self, console: Any) -> Any:
        from rich.text import Text

        glyph = self.glyph if plain(console) else "\u25a0"
        return Text.assemble((glyph, self.color), " ", Text.from_markup(self.label))

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.text(console)

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.text(console))


class Legend:
    """Marks on one line, three spaces apart (a bar's key); it wraps as text does on a narrow terminal."""

    def __init__(self, marks: list[Mark]) -> None:
        self.marks = marks

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        yield Text("   ").join(m.text(console) for m in self.marks)


class StackedBar:
    """A bar of parts, ``cells`` characters each: █ in each part's colour on a colour terminal; without colour
    each part drawn in its own glyph (PPPPGGGOOOOAA....), so the shares read on a pipe or with NO_COLOR."""

    def __init__(self, parts: list[tuple[str, int]], colors: dict[str, str], glyphs: dict[str, str], *,
                 free: int = 0, marker: int | None = None, tail: Any = "") -> None:
        self.parts, self.colors, self.glyphs = parts, colors, glyphs
        self.free, self.marker, self.tail = free, marker, tail

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        bare = plain(console)
        out = Text()
        for key, n in self.parts:
            out.append((self.glyphs.get(key, "?") if bare else "\u2588") * n, style=self.colors.get(key, "white"))
        if self.marker is not None:  # where the GPU's memory ends, inside an overflowing bar
            out = out[:self.marker] + Text("|" if bare else "\u258c", style="bold red") + out[self.marker:]
        if self.free:
            out.append(("." if bare else "\u2591") * self.free, style="dim")
        yield Text.assemble(out, self.tail)


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
    if unit == "days":  # a short run in the unit a person reads: '3.13 min (0.00218 days)'
        if abs(value) >= 1 or value == 0:
            return f"{value:,.2f} days"
        return f"{units.format_duration(value * units.SECONDS_PER_DAY)} ({value:.3g} days)"
    if unit in ("GPU·h", "kWh", "W"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"
    if unit in ("", "ratio", "fraction"):
        return f"{value:.4g}"
    return f"{value:.6g} {unit}"


_CONTROL = {c: None for c in range(32) if c not in (9, 10)} | {127: None} | {c: None for c in range(0x80, 0xA0)}


def safe(text: Any) -> str:
    """Text from a file (a spec's name, notes, sources; a config.json's architectures) printed as itself: rich
    markup escaped (``[/x]`` raised MarkupError) and control characters dropped (ESC sequences from a config
    cleared the screen, set the window title, made OSC 8 links)."""
    from rich.markup import escape

    return escape(str(text).translate(_CONTROL))


def kv_table(title: str, rows: list[tuple[str, str]], justify: str = "right") -> Any:
    """Label / value rows; values right-aligned (figures line up), or left where they are descriptions (`models
    show`, `hardware show`: a long spec-file path would push every value out to its width)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify=justify)  # type: ignore[arg-type]
    for k, v in rows:
        t.add_row(k, v)
    return Packed(t)


class Packed:
    """A box-less rich Table drawn as one row of multi-line cells, a column each, where it fits the console: the
    same text, several times faster (rich measures and lays out every cell, and a ledger has a hundred: 7 ms of
    `napkin memory`'s 12 ms of rendering). Where it would wrap, or has what lines cannot carry (boxes, row
    styles, sections, multi-line cells, other renderables), the table itself is drawn. Attributes are the table's,
    so a caller can still add rows."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        import copy

        from rich.text import Text

        t = self.table
        lines = self._lines(console)
        if lines is None:
            yield t
            return
        widths = [max([x.cell_len for x in col] + [Text.from_markup(str(c.header)).cell_len if t.show_header else 0])
                  for c, col in zip(t.columns, lines, strict=True)]
        if sum(widths) + 2 * (len(widths) - 1) > options.max_width:
            yield t
            return
        packed = copy.copy(t)
        packed.columns = []
        for c, col in zip(t.columns, lines, strict=True):
            c2 = copy.copy(c)
            c2._cells = [Text("\n").join(col)]
            packed.columns.append(c2)
        packed.rows = packed.rows[:1]
        yield packed

    def _lines(self, console: Any) -> list[list[Any]] | None:
        """Each column's cells as Text, or None where packing would not draw the same table."""
        from rich.text import Text

        t = self.table
        if t.box is not None or t.show_lines or t.row_styles or not t.rows or t.padding != (0, 1, 0, 1) \
                or not (t.pad_edge is False and t.collapse_padding is False and t.expand is False):
            return None
        if any(r.style or r.end_section for r in t.rows) or any(
                c.width or c.min_width or c.max_width or c.ratio for c in t.columns):
            return None
        out = []
        for c in t.columns:
            col = []
            for cell in c._cells:
                x = console.render_str(cell) if isinstance(cell, str) else cell
                if not isinstance(x, Text) or "\n" in x.plain:
                    return None
                col.append(x)
            out.append(col)
        return out
