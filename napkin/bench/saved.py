"""Saved measurements: ``--save FILE`` writes one; ``train-time --mfu-from FILE`` turns one into an MFU.

Reading a measurement never imports torch: a laptop without it plans with numbers taken on the cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

from napkin.bench.model_gemms import ModelGemmsResult
from napkin.bench.models import AllreduceBenchResult, MatmulBenchResult, MatmulSweepResult
from napkin.errors import InputError
from napkin.results import Derivation, Result, g
from napkin.specs.dtypes import DType, parse_dtype
from napkin.validation import Fraction, Inputs, validated

R = TypeVar("R", bound=Result)
_Kinds = MatmulBenchResult | MatmulSweepResult | ModelGemmsResult | AllreduceBenchResult
Measurement = Annotated[_Kinds, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[_Kinds] = TypeAdapter(Measurement)

DEFAULT_MFU_FRACTION = 0.6  # a training step reaches roughly 0.5-0.65 of the best matmul's throughput (sources below)
FRACTION_SOURCE = (
    "napkin's default, from published runs against measured matmul ceilings: Llama 3 (Dubey et al. 2024, Table 4) "
    "trained at 38-43% bf16 MFU on H100s, whose best bf16 matmul reaches ~80% (0.38/0.80 to 0.43/0.80 = 0.48-0.54); "
    "MegaScale (Jiang et al. 2024) reached 55.2% MFU on A100s, whose best bf16 matmul reaches ~87% (0.55/0.87 = 0.63)"
)


def check_writable(path: str | Path, what: str = "--save") -> None:
    """Refuse, before anything is measured, an output path that cannot be written or is no regular file: a missing
    or read-only directory, a directory, a device, a FIFO, /proc or /sys (napkin.file_guards.save_target)."""
    from napkin.file_guards import save_target

    save_target(path, what)


def save_result(result: Result, path: str | Path) -> None:
    """Write the result model as JSON (what --json prints), for --mfu-from and for later comparison.

    The JSON goes to a temporary file in the same directory, which then replaces ``path`` in one rename: a
    failure on the way (a full disk, Ctrl-C) leaves the previous file as it was, never a truncated one. Only a
    regular file (or a new path) is replaced: a symlink is written through to its target and stays a link, and a
    device, FIFO or anything under /proc or /sys is refused (napkin.file_guards.save_target)."""
    import tempfile

    from napkin.file_guards import save_target

    target = save_target(path)
    text = result.model_dump_json(indent=2) + "\n"
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        tmp.write_text(text, encoding="utf-8")
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)  # mkstemp makes it 0600; the file gets what a plain write would have given it
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise InputError(f"cannot write '{path}': {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_measurement(path: str | Path) -> _Kinds:
    """A measurement saved by `napkin bench-matmul --save` (a GEMM, a sweep, or a model's GEMMs) or
    `napkin bench-allreduce --save`."""
    from napkin.file_guards import read_small_file

    text = read_small_file(path, "the JSON of `napkin bench-matmul --save` or `bench-allreduce --save`")
    try:
        return _ADAPTER.validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"'{path}' is not a napkin measurement (the JSON of `napkin bench-matmul --save`): "
                         f"{where}: {first['msg']}") from None


class MeasuredMfuInputs(Inputs):
    file: str
    fraction: Fraction = DEFAULT_MFU_FRACTION


class MeasuredMfu(Result):
    """The MFU a training run is planned at: the measured matmul MFU × a realistic fraction."""

    inputs: MeasuredMfuInputs
    measured_mfu: float
    mfu: float
    hardware: str | None
    dtype: DType

    def apply(self, result: R) -> R:
        """``result`` with these steps in front of its own and these notes after them."""
        return result.model_copy(update={"steps": self.steps + result.steps, "notes": result.notes + self.notes})


def measured_mfu(path: str | Path, fraction: float | None = None, *, hardware: str | None = None,
                 dtype: str | DType | None = None) -> MeasuredMfu:
    """MFU to plan with, from a saved bench-matmul measurement (a sweep gives its best shape).

    ``fraction`` defaults to DEFAULT_MFU_FRACTION. ``hardware`` (catalog name) and ``dtype`` are what the plan
    uses; a measurement of another part or dtype is still used, with a note.
    """
    given = fraction is not None
    i = validated(MeasuredMfuInputs, file=str(path), fraction=fraction if given else DEFAULT_MFU_FRACTION)
    m = load_measurement(path)
    if isinstance(m, AllreduceBenchResult):
        raise InputError(f"'{path}' holds a bench-allreduce measurement; --mfu-from needs `napkin bench-matmul --save`")
    on = f" on {m.environment.device_name}" + (f" ({m.peak.hardware})" if m.peak.hardware else "")
    if isinstance(m, ModelGemmsResult):  # --shapes-from: the FLOP-weighted MFU of the model's own GEMMs
        row_mfu, rate, measured_dtype = m.mfu, m.flops_per_s, m.inputs.dtype
        what = f"the GEMMs of {m.inputs.model} at T = {m.tokens} tokens, {measured_dtype.value}{on}"
    else:
        row = m.best if isinstance(m, MatmulSweepResult) else m
        row_mfu = row.mfu if row is not None else None
        rate = row.timing.flops_per_s if row is not None else 0.0
        measured_dtype = row.timing.dtype if row is not None else DType.fp32
        what = f"{row.timing.shape if row is not None else '?'} {measured_dtype.value}{on}"
    if row_mfu is None:
        why = m.peak.note or "no peak FLOP/s was known"
        raise InputError(f"'{path}' has no MFU ({why}); measure again with --gpu NAME or --peak FLOP/s")
    d = Derivation()
    measured = d.given("measured matmul MFU", "MFU_matmul", row_mfu, "fraction",
                       f"{path}: napkin bench-matmul, {what}, {rate / 1e12:.4g} TFLOP/s")
    f = d.given("realistic fraction of the matmul ceiling", "f", i.fraction, "fraction",
                "--mfu-fraction (given)" if given else FRACTION_SOURCE)
    mfu = d.add("MFU for the training run", "MFU_matmul · f", f"{g(measured)} × {g(f)}", measured * f, "fraction",
                "napkin: a training step also runs attention, norms, communication and stalls below matmul speed")
    notes = []
    if hardware is not None and m.peak.hardware is None:
        notes.append(f"the MFU was measured on {m.environment.device_name}, which is not {hardware} (nor any catalog "
                     "GPU): it says little about the planned run; measure on the target GPU")
    if hardware is not None and m.peak.hardware is not None and hardware != m.peak.hardware:
        notes.append(f"the MFU was measured on {m.peak.hardware}; the plan uses {hardware}: MFU transfers between "
                     "parts only roughly")
    if dtype is not None and parse_dtype(dtype) != measured_dtype:
        notes.append(f"the MFU was measured in {measured_dtype.value}; the plan uses {parse_dtype(dtype).value}")
    return MeasuredMfu(inputs=i, measured_mfu=measured, mfu=mfu, hardware=m.peak.hardware, dtype=measured_dtype,
                       steps=d.steps, notes=notes)
