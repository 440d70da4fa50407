"""Saved measurements and `train-time --mfu-from FILE`: reading one never needs torch.

The measurements here are written as a bench-matmul run would save them (the result model's JSON); their
numbers are inputs to the reader, not timings.
"""

from __future__ import annotations

import json

import pytest
from torch_probe import assert_no_torch

from napkin.bench.models import (
    AllreduceBenchResult,
    AllreduceEnvironment,
    BenchEnvironment,
    GemmShape,
    GemmTiming,
    MatmulBenchResult,
    MatmulSweepResult,
    PeakChoice,
    SweepRow,
    TimingStats,
)
from napkin.bench.saved import DEFAULT_MFU_FRACTION, FRACTION_SOURCE, load_measurement, measured_mfu, save_result
from napkin.errors import InputError
from napkin.specs.dtypes import DType

H100_NAME = "NVIDIA H100 80GB HBM3"


def _timing(size: int, median_s: float, dtype: DType = DType.bf16) -> GemmTiming:
    shape = GemmShape(m=size, n=size, k=size)
    stats = TimingStats(timer="cuda-events", iters=100, min_s=median_s, median_s=median_s, max_s=median_s,
                        mean_s=median_s, warmup_s=0.25, warmup_iters=100)
    return GemmTiming(shape=shape, dtype=dtype, device="cuda:0", flops=shape.flops, operand_bytes=3 * size**2 * 2,
                      l2_flush=False, stats=stats, flops_per_s=shape.flops / median_s,
                      best_flops_per_s=shape.flops / median_s)


def _env(dtype: DType = DType.bf16) -> BenchEnvironment:
    return BenchEnvironment(device="cuda:0", device_name=H100_NAME, hardware="h100-sxm", torch_version="2.13.0",
                            cpu_threads=16, python_version="3.12", platform="linux x86_64", dtype=dtype)


def _single(mfu: float | None, dtype: DType = DType.bf16, hardware: str | None = "h100-sxm") -> MatmulBenchResult:
    peak = PeakChoice(hardware=hardware, peak_flops_per_s=989.5e12 if mfu else None, source="h100-sxm datasheet")
    t = _timing(8192, 8192**3 * 2 / (mfu * 989.5e12) if mfu else 1.4e-3, dtype)
    return MatmulBenchResult(environment=_env(dtype), method=["..."], timing=t, peak=peak, mfu=mfu)


@pytest.fixture
def saved(tmp_path):
    def write(result, name="m.json"):
        path = tmp_path / name
        save_result(result, path)
        return path

    return write


def test_mfu_from_a_single_measurement_is_measured_times_the_fraction(saved):
    path = saved(_single(0.8))
    m = measured_mfu(path)
    assert m.measured_mfu == pytest.approx(0.8)
    assert m.mfu == pytest.approx(0.8 * DEFAULT_MFU_FRACTION)
    assert [s.name for s in m.steps] == ["measured matmul MFU", "realistic fraction of the matmul ceiling",
                                        "MFU for the training run"]
    assert m.steps[1].source == FRACTION_SOURCE and "Llama 3" in FRACTION_SOURCE and "MegaScale" in FRACTION_SOURCE
    assert str(path) in m.steps[0].source and H100_NAME in m.steps[0].source
    given = measured_mfu(path, 0.5)
    assert given.mfu == pytest.approx(0.4) and given.steps[1].source == "--mfu-fraction (given)"


def test_a_sweep_gives_its_best_shape(saved):
    rows = [SweepRow(timing=_timing(s, t), mfu=s**3 * 2 / t / 989.5e12) for s, t in ((1024, 4e-6), (4096, 2e-4))]
    best = max(rows, key=lambda r: r.timing.flops_per_s)
    sweep = MatmulSweepResult(environment=_env(), method=["..."], rows=rows, best=best,
                              peak=PeakChoice(hardware="h100-sxm", peak_flops_per_s=989.5e12, source="x"))
    assert measured_mfu(saved(sweep)).measured_mfu == best.mfu


def test_what_cannot_give_an_mfu_is_refused_with_the_reason(saved, tmp_path):
    no_peak = _single(None, hardware=None).model_copy(update={"peak": PeakChoice(note="MFU needs --peak")})
    with pytest.raises(InputError, match=r"has no MFU \(MFU needs --peak\).*--gpu NAME or --peak"):
        measured_mfu(saved(no_peak))
    ar = AllreduceBenchResult(environment=AllreduceEnvironment(backend="gloo", world_size=2, device="cpu",
                                                               device_name="cpu", torch_version="2.13",
                                                               launcher="torchrun"),
                              method=[], iters=1, warmup_iters=0, rows=[])
    with pytest.raises(InputError, match="bench-allreduce measurement"):
        measured_mfu(saved(ar, "ar.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "bench-matmul", "mfu": 0.5}))
    with pytest.raises(InputError, match="not a napkin measurement"):
        load_measurement(tmp_path / "bad.json")
    with pytest.raises(InputError, match="cannot read"):
        load_measurement(tmp_path / "missing.json")
    with pytest.raises(InputError, match=r"`fraction` must be at most 1, got 1\.5"):
        measured_mfu(saved(_single(0.8)), 1.5)


def test_another_part_or_dtype_is_used_with_a_note(saved):
    path = saved(_single(0.8, dtype=DType.fp32))
    m = measured_mfu(path, hardware="a100-sxm-80gb", dtype="bf16")
    assert any("measured on h100-sxm" in n for n in m.notes) and any("measured in fp32" in n for n in m.notes)
    assert measured_mfu(path, hardware="h100-sxm", dtype="fp32").notes == []


# -- the CLI ---------------------------------------------------------------------------------------------------------

LLAMA = ["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024"]


def test_train_time_with_mfu_from_equals_train_time_at_that_mfu(cli, saved):
    path = saved(_single(0.8))
    measured = cli(*LLAMA, "--mfu-from", str(path), "--json")
    assert measured.exit_code == 0, measured.stderr
    plain = cli(*LLAMA, "--mfu", repr(0.8 * DEFAULT_MFU_FRACTION), "--json")
    got, want = measured.json(), plain.json()
    assert got["days"] == pytest.approx(want["days"]) and got["inputs"]["mfu"] == pytest.approx(0.48)
    assert got["steps"][:3] == [s.model_dump() for s in measured_mfu(path, hardware="h100-sxm", dtype="bf16").steps]
    assert got["steps"][3:] == want["steps"]


def test_train_time_refuses_mfu_and_mfu_from_together(cli, saved):
    r = cli(*LLAMA, "--mfu", "0.4", "--mfu-from", str(saved(_single(0.8))))
    assert r.exit_code == 2 and "--mfu or --mfu-from, not both" in r.stderr


def test_explain_shows_the_fraction_and_its_source(cli, saved):
    r = cli(*LLAMA, "--mfu-from", str(saved(_single(0.8))), "--mfu-fraction", "0.5", "--explain")
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "measured matmul MFU" in text and "--mfu-fraction (given)" in text and "MFU_matmul · f" in text


@pytest.mark.slow
def test_reading_a_measurement_does_not_import_torch(saved):
    assert_no_torch([*LLAMA, "--mfu-from", str(saved(_single(0.8)))])


# -- issue 12: --save replaces the file in one rename ------------------------------------------------------------------

def test_a_failed_save_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    from pathlib import Path

    path = tmp_path / "m.json"
    save_result(_single(0.8), path)
    good = path.read_text()
    real = Path.write_text

    def half_then_disk_full(self, data, *a, **kw):  # the disk fills up halfway through the JSON
        real(self, data[: len(data) // 2], *a, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_disk_full)
    with pytest.raises(InputError, match="No space left on device"):
        save_result(_single(0.5), path)
    monkeypatch.undo()
    assert path.read_text() == good and load_measurement(path).mfu == 0.8  # not truncated, not replaced
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left


def test_a_save_replaces_the_file_and_keeps_its_permissions(tmp_path):
    import os

    path = tmp_path / "m.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    save_result(_single(0.5), path)
    assert load_measurement(path).mfu == 0.5 and (path.stat().st_mode & 0o777) == 0o640
