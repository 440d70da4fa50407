"""Catalog queries behind `napkin hardware list|show` and `napkin models list|show`: each spec with the figures a
reader checks (peaks and ridge points; parameter counts).

They live in accounting/, not specs/, because the figures come from accounting's formulas: the sparse peak from
HardwareSpec.peak, the ridge point from napkin.accounting.roofline, parameter counts from napkin.accounting.params.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from napkin.accounting.params import ParamCount, count_params
from napkin.accounting.roofline import SRC_ROOFLINE, ridge_point
from napkin.results import Derivation, Result, g
from napkin.specs.catalog import get_model, hardware_catalog, model_catalog
from napkin.specs.dtypes import DType
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec


class CatalogQuery(BaseModel):
    """What a catalog listing was asked: a name (show) or none (list), and the user's spec directories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    specs_dirs: list[str] = []


def _query(name: str | None, specs_dirs: Sequence[str | Path] | None) -> CatalogQuery:
    return CatalogQuery(name=name, specs_dirs=[str(x) for x in specs_dirs or []])


class HardwareList(Result):
    inputs: CatalogQuery
    specs: list[HardwareSpec]
    short_names: list[list[str]]


class PeakRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    dtype: DType
    dense_flops_per_s: float
    sparse_flops_per_s: float | None
    ridge_flops_per_byte: float


class HardwareShow(Result):
    inputs: CatalogQuery
    spec: HardwareSpec
    file: str
    peaks: list[PeakRow]


def list_hardware(specs_dirs: Sequence[str | Path] | None = None) -> HardwareList:
    cat = hardware_catalog(specs_dirs)
    specs = list(cat)
    short = [[a for a in cat.aliases_of(s.name) if len(a) <= 12] for s in specs]
    return HardwareList(inputs=_query(None, specs_dirs), specs=specs, short_names=short)


def show_hardware(name: str, specs_dirs: Sequence[str | Path] | None = None) -> HardwareShow:
    cat = hardware_catalog(specs_dirs)
    spec = cat.get(name)
    d = Derivation()
    rows = []
    src = f"{spec.name}: {spec.sources[0]}"
    BW = spec.memory_bandwidth_bytes_per_s
    for dt, dense in spec.peak_flops_per_s.items():
        sparse = None
        if dt in spec.sparse_dtypes:
            # P_sparse = P_dense x the datasheet's 2:4 factor: HardwareSpec.peak(sparse=True) owns it
            sparse = d.add(f"{dt.value} sparse peak", "P_sparse = P_dense · sparsity factor",
                           f"{g(dense)} × {g(spec.sparsity_factor)}", spec.peak(dt, sparse=True), "FLOP/s",
                           f"{src} (2:4 structured sparsity)")
        ridge = d.add(f"{dt.value} ridge point", "I* = P_dense / BW", f"{g(dense)} / {g(BW)}",
                      ridge_point(dense, BW), "FLOP/B", SRC_ROOFLINE)
        rows.append(PeakRow(dtype=dt, dense_flops_per_s=dense, sparse_flops_per_s=sparse, ridge_flops_per_byte=ridge))
    return HardwareShow(inputs=_query(name, specs_dirs), spec=spec, file=str(cat.files[spec.name]), peaks=rows,
                        steps=d.steps)


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
    return ModelList(inputs=_query(None, specs_dirs), models=rows)


def show_model(name: str, specs_dirs: Sequence[str | Path] | None = None, *, spec: Any = None) -> ModelShow:
    """One model (catalog name, alias, config.json or YAML path, Hub id) and its parameter breakdown; ``spec`` is
    the model already read (the CLI reads a Hub id itself, with --offline and its notice)."""
    if spec is None:
        spec = get_model(name, specs_dirs)
    cat = model_catalog(specs_dirs)
    file = str(cat.files[spec.name]) if spec.name in cat.files and cat.get(spec.name) == spec else name
    pc = count_params(spec)
    return ModelShow(inputs=_query(name, specs_dirs), spec=spec, file=file, params=pc, steps=pc.steps,
                     notes=list(spec.notes))
