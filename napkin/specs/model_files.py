"""A model given as a file: a napkin model YAML, or a Hugging Face config.json (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from napkin.errors import SpecError
from napkin.specs.catalog import format_validation_error, read_yaml


def load_model_file(path: Path) -> Any:
    """Validate one model spec from a file path (a directory means its config.json)."""
    from napkin.specs.model import MODEL_ADAPTER

    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise SpecError(f"{path}: no such file (expected a Hugging Face config.json or a napkin model YAML)")
    if path.suffix.lower() == ".json":
        from napkin.specs.hf_config import spec_from_hf_config

        return spec_from_hf_config(path)
    data = read_yaml(path)
    try:
        return MODEL_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(path, e)) from None
