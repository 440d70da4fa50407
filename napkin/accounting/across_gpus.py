"""`--gpu all`: the same question asked of every GPU in the catalog, one row each.

The per-GPU answer is whatever the command computes (train-time, inference, step-time); a GPU that cannot
answer (no bf16 on a V100, no scale-out figure in its profile) gets a row with the one-line reason instead of
failing the whole table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from napkin.errors import NapkinError
from napkin.results import Result
from napkin.specs.hardware import HardwareSpec


class AcrossGpusInputs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str = Field(description="the command asked of every GPU: train-time, inference, step-time")
    gpus: list[str] = Field(description="catalog GPUs asked, in order")


class GpuAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    gpu: str
    display_name: str
    result: Any = Field(default=None, description="the command's result on this GPU (its steps left out in --json)")
    error: str | None = Field(default=None, description="why this GPU has no answer")


class AcrossGpusResult(Result):
    inputs: AcrossGpusInputs
    rows: list[GpuAnswer]


def across_gpus(command: str, hardware: list[HardwareSpec], ask: Callable[[HardwareSpec], Result]) -> AcrossGpusResult:
    """``ask`` each GPU; rows in catalog order, a NapkinError on one GPU becomes that row's reason."""
    from napkin.errors import InputError

    if not hardware:
        raise InputError("the hardware catalog is empty")
    rows = []
    for hw in hardware:
        try:
            rows.append(GpuAnswer(gpu=hw.name, display_name=hw.display_name, result=ask(hw)))
        except NapkinError as e:
            rows.append(GpuAnswer(gpu=hw.name, display_name=hw.display_name, error=str(e)))
    if all(r.error for r in rows):
        raise InputError(f"no GPU of the catalog answers: {rows[0].error}")
    missing = sum(1 for r in rows if r.error)
    notes = [f"{missing} GPU{'s have' if missing > 1 else ' has'} no answer (— rows: the reason is below the table)"] \
        if missing else []
    return AcrossGpusResult(inputs=AcrossGpusInputs(command=command, gpus=[h.name for h in hardware]), rows=rows,
                            notes=notes)
