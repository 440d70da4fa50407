"""Issue 25 items 5, 6 and 8: --calibration works on every command that takes it, and what it reads is checked.

The files are written as bench-allreduce / bench-matmul would save them (their result models), then edited the
way a hand-edited or corrupted file would be. Every refusal is one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import math

import pytest

from napkin.bench.models import (
    AllreduceBenchResult,
    AllreduceEnvironment,
    AllreduceRow,
    BenchEnvironment,
    GemmShape,
    GemmTiming,
    MatmulBenchResult,
    PeakChoice,
    TimingStats,
)
from napkin.bench.saved import save_result
from napkin.specs.dtypes import DType

STEP = ["step-time", "--model", "llama3-8b", "--gpus", "8", "--tp", "8", "--seq", "4096", "--global-batch", "8"]
TRAIN = ["train-time", "--model", "llama3-8b", "--tokens", "1T", "--gpus", "8", "--tp", "8", "--seq", "4096",
         "--global-batch", "8"]
PLAN = ["plan", "--model", "llama3-8b", "--gpus", "8", "--seq", "4096", "--global-batch", "8", "--max-tp", "8"]


def _allreduce(device: str = "cuda", world: int = 8) -> AllreduceBenchResult:
    env = AllreduceEnvironment(backend="nccl", world_size=world, device=device, device_name="H100",
                               torch_version="2.13", launcher="torchrun")
    rows = [AllreduceRow(size_bytes=s, count=int(s // 2), dtype=DType.bf16, time_s=t, max_time_s=t,
                         algbw_bytes_per_s=s / t, busbw_bytes_per_s=1.75 * s / t)
            for s, t in ((1e3, 40e-6), (1e9, 1.75e9 / 300e9))]  # 300 GB/s busbw at 1 GB, 40 µs at 1 kB
    return AllreduceBenchResult(environment=env, method=[], iters=10, warmup_iters=2, rows=rows)


def _gemm(hardware: str | None = "h100-sxm", median_s: float = 1.4e-3) -> MatmulBenchResult:
    shape = GemmShape(m=8192, n=8192, k=8192)
    stats = TimingStats(timer="cuda-events", iters=100, min_s=median_s, median_s=median_s, max_s=median_s,
                        mean_s=median_s, warmup_s=0.25, warmup_iters=100)
    t = GemmTiming(shape=shape, dtype=DType.bf16, device="cuda:0", flops=shape.flops, operand_bytes=3 * 8192**2 * 2,
                   l2_flush=False, stats=stats, flops_per_s=shape.flops / median_s,
                   best_flops_per_s=shape.flops / median_s)
    env = BenchEnvironment(device="cuda:0" if hardware else "cpu", device_name="NVIDIA H100" if hardware else "cpu",
                           hardware=hardware, torch_version="2.13.0", cpu_threads=16, python_version="3.12",
                           platform="linux x86_64", dtype=DType.bf16)
    peak = PeakChoice(hardware=hardware, peak_flops_per_s=989.5e12, source="datasheet")
    return MatmulBenchResult(environment=env, method=["..."], timing=t, peak=peak,
                             mfu=shape.flops / median_s / 989.5e12)


def _one_line(r, *needles: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stdout[-500:], r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.mark.parametrize("command", [STEP, TRAIN, PLAN], ids=["step-time", "train-time", "plan"])
def test_calibration_works_and_shows_its_source_and_effect(cli, tmp_path, command):
    ar = tmp_path / "ar.json"
    save_result(_allreduce(), ar)
    plain = cli(*command, "--json")
    r = cli(*command, "--calibration", str(ar), "--json")
    assert plain.exit_code == 0 and r.exit_code == 0, r.stderr
    notes = r.json()["notes"]
    assert any(f"calibrated from {ar}: intra-node bus efficiency 0.667" in n for n in notes), notes
    assert r.stdout != plain.stdout  # it changed the answer
    text = cli(*command, "--calibration", str(ar))
    assert "calibrated from" in text.stdout  # said in the people's output as well


def _edited(tmp_path, result, edit) -> str:
    data = json.loads(result.model_dump_json())
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return str(path)


def _set_median(v):
    def edit(d):
        d["timing"]["stats"]["median_s"] = v
    return edit


def _set_busbw(v):
    def edit(d):
        d["rows"][1]["busbw_bytes_per_s"] = v
    return edit


def _set_time(v):
    def edit(d):
        d["rows"][0]["time_s"] = v
    return edit


BAD_GEMM = [(_set_median(0), "median_s"), (_set_median(-1.4e-3), "median_s"), (_set_median(1e400), "median_s"),
            (_set_median("fast"), "median_s")]
BAD_ALLREDUCE = [(_set_busbw(-300e9), "busbw_bytes_per_s"), (_set_busbw(math.inf), "busbw_bytes_per_s"),
                 (_set_time(0), "time_s"), (_set_time(-40e-6), "time_s")]


@pytest.mark.parametrize("edit, field", BAD_GEMM)
def test_a_bad_gemm_measurement_is_refused_by_field(cli, tmp_path, edit, field):
    path = _edited(tmp_path, _gemm(), edit)
    _one_line(cli(*STEP, "--gpu", "h100-sxm", "--calibration", path), field, "not a napkin measurement")
    _one_line(cli("train-time", "--gpus", "8", "--params", "8e9", "--tokens", "1T", "--mfu-from", path), field)


@pytest.mark.parametrize("edit, field", BAD_ALLREDUCE)
def test_a_bad_allreduce_measurement_is_refused_by_field(cli, tmp_path, edit, field):
    path = _edited(tmp_path, _allreduce(), edit)
    for command in (STEP, PLAN):
        _one_line(cli(*command, "--calibration", path), field)


def test_a_measurement_of_no_catalog_gpu_does_not_calibrate_one(cli, tmp_path):
    cpu = tmp_path / "cpu.json"
    save_result(_gemm(hardware=None, median_s=4.0), cpu)
    for command in (STEP, TRAIN, PLAN):
        _one_line(cli(*command, "--calibration", str(cpu)), "no catalog GPU", "bench-matmul --gpu h100-sxm")
    named = tmp_path / "h100.json"
    save_result(_gemm(), named)
    ok = cli(*STEP, "--calibration", str(named), "--json")
    assert ok.exit_code == 0 and any("large-GEMM efficiency" in n for n in ok.json()["notes"])
    for device, world in (("cpu", 8), ("cuda", 1)):
        path = tmp_path / f"ar-{device}-{world}.json"
        save_result(_allreduce(device, world), path)
        _one_line(cli(*STEP, "--calibration", str(path)), "says nothing of h100-sxm's links")


@pytest.mark.parametrize("flag", ["--calibration", "--mfu-from"])
def test_calibration_and_mfu_from_refuse_what_is_not_a_small_regular_file(cli, tmp_path, flag):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # no writer: a plain open would block for ever
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GB, sparse
    cmd = STEP if flag == "--calibration" else ["train-time", "--gpus", "8", "--params", "8e9", "--tokens", "1T"]
    _one_line(cli(*cmd, flag, str(fifo)), "is a FIFO")
    _one_line(cli(*cmd, flag, str(big)), "far larger than")
    _one_line(cli(*cmd, flag, str(tmp_path)), "is a directory")


# -- issue 25 item 9: plan --tokens --days stops at the first Ctrl-C ---------------------------------------------------

FEWEST = ["plan", "--model", "llama3-8b", "--global-batch", "64", "--seq", "4096", "--tokens", "1T", "--days", "30"]


@pytest.mark.parametrize("fraction", [0, 0.5])
def test_plan_fewest_gpus_stops_at_the_first_ctrl_c_while_asking(cli, monkeypatch, fraction):
    """Ctrl-C while the GPU counts are asked, fewest first: no count asked meets the deadline yet, so there is no
    answer; it stops there (no further count asked) with one line and exit 2."""
    import napkin.accounting.plan_fewest as fewest

    real, calls = fewest._Probe.meets, [0]

    def counting(self, G):
        calls[0] += 1
        return real(self, G)

    monkeypatch.setattr(fewest._Probe, "meets", counting)
    plain = cli(*FEWEST, "--json")
    assert plain.exit_code == 0, plain.stderr
    total, calls[0] = calls[0], 0
    assert total > 1  # counts below the answer were asked
    stop_at = int(fraction * (total - 1)) + 1  # a Ctrl-C before the count that meets the deadline

    def meets(self, G):
        calls[0] += 1
        if calls[0] >= stop_at:
            raise KeyboardInterrupt
        return real(self, G)

    monkeypatch.setattr(fewest._Probe, "meets", meets)
    r = cli(*FEWEST, "--json")
    assert calls[0] == stop_at  # nothing asked after the Ctrl-C
    assert r.exit_code == 2 and "interrupted (Ctrl-C) while asking GPU counts" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_plan_fewest_gpus_ctrl_c_in_the_final_search_keeps_the_count(cli, monkeypatch):
    """Ctrl-C in the layout search of the count found: that count is the answer, its layouts those timed so far."""
    import napkin.accounting.plan as plan_module

    plain = cli(*FEWEST, "--json")
    real, calls = plan_module.step_time, [0]

    def step_time(*a, **kw):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(plan_module, "step_time", step_time)
    r = cli(*FEWEST, "--json")
    assert r.exit_code == 130, r.stderr
    out = r.json()
    assert out["interrupted"] is True and out["gpus"] == plain.json()["gpus"]
    assert out["notes"][0].startswith("interrupted (Ctrl-C):")
