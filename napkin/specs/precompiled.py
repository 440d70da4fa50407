"""The built-in specs, precompiled: every shipped YAML document parsed and validated once, by
``tools/compile_specs.py``, and stored as JSON (``builtin_specs.json`` beside this module, shipped in the wheel).

A command that reads only the built-in catalogs then imports no YAML parser and parses no YAML, which is most of
what loading a catalog costs at start-up (benchmarks/startup_time.py).

- The JSON holds each document as napkin's YAML loader gave it (a multi-spec file's ``defaults`` merged into each
  entry), with its file and its location prefix. The catalog validates those documents with the same pydantic
  models as documents read from YAML, so a spec is the same whichever way it was read, and an error in one still
  names its YAML file.
- It also holds the SHA-256 of every YAML file it was made from. Where a folder's files are not exactly those,
  byte for byte (a YAML edited, added or removed without rerunning the tool), ``documents`` returns None and the
  catalog reads the YAML files: never a stale spec, only a slower start. tests/test_precompiled_specs.py fails
  while the JSON is out of date.
- User specs (``--specs-dir``, ``NAPKIN_SPECS_DIR``) are never precompiled: they are read from YAML, through
  napkin.specs.safe_load, every time.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

FORMAT = 1  # the layout of the JSON file below; a file of another format is ignored (the YAML is read)
PATH = Path(__file__).with_name("builtin_specs.json")
TOOL = "tools/compile_specs.py"

Document = tuple[Path, str, dict[str, Any]]  # (YAML file, location prefix such as 'specs.0.', the document)


def digest(data: bytes) -> str:
    """A YAML file's fingerprint in the JSON: its SHA-256, in hex."""
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1)
def stored() -> dict[str, Any] | None:
    """The precompiled JSON as written by the tool, or None where it is missing, unreadable or of another format."""
    from pydantic_core import from_json  # pydantic's JSON parser, loaded already: `json` is not imported for this

    try:
        data = from_json(PATH.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def fingerprints(files: list[Path]) -> dict[str, str] | None:
    """File name → digest of each file (all in one folder); None where one cannot be read (reading the YAML then
    says why, in one line)."""
    try:
        return {p.name: digest(p.read_bytes()) for p in files}
    except OSError:
        return None


def documents(folder: str, files: list[Path]) -> list[Document] | None:
    """The precompiled documents of the built-in spec folder ``folder`` ('hardware_specs', 'model_specs') whose
    YAML files are ``files``, in file order; None unless the JSON was made from exactly these files."""
    data = stored()
    entry = data.get(folder) if data is not None else None
    if not isinstance(entry, dict) or not files:
        return None
    if entry.get("files") != fingerprints(files):
        return None
    by_name = {p.name: p for p in files}
    return [(by_name[name], prefix, doc) for name, prefix, doc in entry["documents"]]
