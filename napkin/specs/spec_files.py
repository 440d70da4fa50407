"""Reading one spec file and saying what is wrong with it: shared by the catalogs (napkin.specs.catalog) and by a
model given as a file (napkin.specs.model_files), so that neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

# Tags of discriminated unions (model kinds) that pydantic puts first in an error's location.
_UNION_TAGS = {"transformer", "linear"}


MAX_ERROR_LINES = 20  # a file with 2,000,000 bad entries: the first 20 lines and a count, not 2,000,015 lines


def _given(value: Any) -> str:
    """A given value in an error, bounded: never the repr of a whole (alias-expanded) structure."""
    import reprlib

    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{value[:40]!r} (a string)"
    short = reprlib.Repr()  # (keyword arguments only from Python 3.12)
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, 40, 40
    return short.repr(value)[:60]


def format_validation_error(path: Path | str, err: ValidationError, prefix: str = "") -> str:
    """pydantic errors as ``file: field: message``, one per line."""
    lines = []
    errors = err.errors(include_input=True, include_url=False)
    for e in errors[:MAX_ERROR_LINES]:
        parts = list(e["loc"])
        if len(parts) > 1 and parts[0] in _UNION_TAGS:
            parts = parts[1:]
        loc = ".".join(_key(p) for p in parts) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the shipped specs for the fields)"
        elif e["type"] in ("int_type", "bool_type"):  # strict fields: say what was given, a boolean or a string
            want = "a whole number" if e["type"] == "int_type" else "true or false"
            msg = f"expected {want}, got {_given(e.get('input'))}"
        lines.append(f"{path}: {prefix}{_short(loc, 120)}: {_short(msg, 200)}")
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"{path}: ... and {len(errors) - MAX_ERROR_LINES:,} more errors ({len(errors):,} in all)")
    return "\n".join(lines)


def _key(part: Any) -> str:
    """A location part as printed: a field name or list index as it is, anything else (a key that is a line of
    /etc/shadow) not echoed: the file and the place are named, not its content."""
    import re

    text = str(part)
    return text if re.fullmatch(r"[A-Za-z_][\w-]{0,63}|\d{1,9}", text) else "(a key that is no field name)"


def _short(text: str, limit: int) -> str:
    """A message part from the file (a field name, pydantic's message quoting a value): printable, bounded."""
    clean = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def read_yaml(path: Path) -> Any:
    """One spec file (napkin.specs.safe_load: duplicate keys, over-long integers and deep nesting refused)."""
    from napkin.specs.safe_load import read_yaml as safe_read_yaml  # yaml is imported only when a file is read

    return safe_read_yaml(path)
