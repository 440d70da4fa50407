"""Reading one spec file and saying what is wrong with it: shared by the catalogs (napkin.specs.catalog) and by a
model given as a file (napkin.specs.model_files), so that neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

# Tags of discriminated unions (model kinds) that pydantic puts first in an error's location.
_UNION_TAGS = {"transformer", "linear"}


def _given(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{value[:40]!r} (a string)"
    return f"{value!r:.40}"


def format_validation_error(path: Path | str, err: ValidationError, prefix: str = "") -> str:
    """pydantic errors as ``file: field: message``, one per line."""
    lines = []
    for e in err.errors():
        parts = list(e["loc"])
        if len(parts) > 1 and parts[0] in _UNION_TAGS:
            parts = parts[1:]
        loc = ".".join(str(p) for p in parts) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the shipped specs for the fields)"
        elif e["type"] in ("int_type", "bool_type"):  # strict fields: say what was given, a boolean or a string
            want = "a whole number" if e["type"] == "int_type" else "true or false"
            msg = f"expected {want}, got {_given(e.get('input'))}"
        lines.append(f"{path}: {prefix}{loc}: {msg}")
    return "\n".join(lines)


def read_yaml(path: Path) -> Any:
    """One spec file (napkin.specs.safe_load: duplicate keys, over-long integers and deep nesting refused)."""
    from napkin.specs.safe_load import read_yaml as safe_read_yaml  # yaml is imported only when a file is read

    return safe_read_yaml(path)
