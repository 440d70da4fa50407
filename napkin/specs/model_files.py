"""A model given as a file: a napkin model YAML, or a Hugging Face config.json (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from napkin.errors import SpecError
from napkin.specs.spec_files import format_validation_error, read_yaml


def _kind(path: Path) -> str:
    """'dir', 'file' or 'missing'; a path napkin may not look at is said in one line (is_dir raises)."""
    try:
        return "dir" if path.is_dir() else "file" if path.is_file() else "missing"
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None


def load_model_file(path: Path) -> Any:
    """Validate one model spec from a file path (a directory means its config.json)."""
    from napkin.specs.model import MODEL_ADAPTER

    if _kind(path) == "dir":
        if _kind(path / "config.json") != "file":
            raise SpecError(f"{path}: a folder without a config.json (expected a Hugging Face model folder, a "
                            "config.json or a napkin model YAML)")
        path = path / "config.json"
    if _kind(path) != "file":
        raise SpecError(f"{path}: no such file (expected a Hugging Face config.json or a napkin model YAML)")
    if path.suffix.lower() == ".json":
        from napkin.specs.hf_config import spec_from_hf_config

        return spec_from_hf_config(path)
    data = read_yaml(path)
    try:
        return MODEL_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(path, e)) from None
