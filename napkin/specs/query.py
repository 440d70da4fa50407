"""Catalog queries behind `napkin hardware list|show`: results with the figures a reader checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from napkin.results import Derivation, Result, g
from napkin.specs.catalog import hardware_catalog
from napkin.specs.dtypes import DType
from napkin.specs.hardware import HardwareSpec


class CatalogQuery(BaseModel):
    """What a catalog listing was asked: a name (show) or none (list), and the user's spec directories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    specs_dirs: list[str] = []


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
    return HardwareList(inputs=CatalogQuery(specs_dirs=[str(x) for x in specs_dirs or []]), specs=specs,
                        short_names=short)


def show_hardware(name: str, specs_dirs: Sequence[str | Path] | None = None) -> HardwareShow:
    cat = hardware_catalog(specs_dirs)
    spec = cat.get(name)
    d = Derivation()
    rows = []
    src = f"{spec.name}: {spec.sources[0]}"
    for dt, dense in spec.peak_flops_per_s.items():
        sparse = None
        if dt in spec.sparse_dtypes:
            sparse = d.add(f"{dt.value} sparse peak", "P_sparse = P_dense · sparsity factor",
                           f"{g(dense)} × {g(spec.sparsity_factor)}", dense * spec.sparsity_factor, "FLOP/s",
                           f"{src} (2:4 structured sparsity)")
        # Roofline ridge point (Williams et al. 2009): the arithmetic intensity where compute and memory limits meet.
        ridge = d.add(f"{dt.value} ridge point", "I* = P_dense / memory bandwidth",
                      f"{g(dense)} / {g(spec.memory_bandwidth_bytes_per_s)}",
                      dense / spec.memory_bandwidth_bytes_per_s, "FLOP/B",
                      "Williams, Waterman & Patterson 2009, Roofline, §2")
        rows.append(PeakRow(dtype=dt, dense_flops_per_s=dense, sparse_flops_per_s=sparse, ridge_flops_per_byte=ridge))
    q = CatalogQuery(name=name, specs_dirs=[str(x) for x in specs_dirs or []])
    return HardwareShow(inputs=q, spec=spec, file=str(cat.files[spec.name]), peaks=rows, steps=d.steps)
