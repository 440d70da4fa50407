"""Catalog queries behind `napkin models list|show`: each spec with its parameter counts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from napkin.accounting.params import ParamCount, count_params
from napkin.specs.query import CatalogQuery
from napkin.results import Result
from napkin.specs.catalog import get_model, model_catalog
from napkin.specs.model import LinearSpec, TransformerSpec


class ModelRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: TransformerSpec | LinearSpec
    params: int
    active_params: int


class ModelList(Result):
    inputs: CatalogQuery
    models: list[ModelRow]


class ModelShow(Result):
    inputs: CatalogQuery
    spec: TransformerSpec | LinearSpec
    file: str | None
    params: ParamCount


def list_models(specs_dirs: Sequence[str | Path] | None = None) -> ModelList:
    rows = []
    for spec in model_catalog(specs_dirs):
        pc = count_params(spec)
        rows.append(ModelRow(spec=spec, params=pc.params, active_params=pc.active_params))
    return ModelList(inputs=CatalogQuery(specs_dirs=[str(x) for x in specs_dirs or []]), models=rows)


def show_model(name: str, specs_dirs: Sequence[str | Path] | None = None) -> ModelShow:
    """One model (catalog name, alias, config.json or YAML path) and its parameter breakdown."""
    spec: Any = get_model(name, specs_dirs)
    cat = model_catalog(specs_dirs)
    file = str(cat.files[spec.name]) if spec.name in cat.files and cat.get(spec.name) == spec else name
    pc = count_params(spec)
    q = CatalogQuery(name=name, specs_dirs=[str(x) for x in specs_dirs or []])
    return ModelShow(inputs=q, spec=spec, file=file, params=pc, steps=pc.steps, notes=list(spec.notes))
