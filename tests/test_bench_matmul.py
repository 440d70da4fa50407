"""bench-matmul on the CPU for real (small shapes, few calls), and on a GPU when there is one (skipped otherwise).

Nothing here asserts a speed: timings are only checked for consistency (min ≤ median ≤ max, FLOP/s = 2MNK / t).
"""

from __future__ import annotations

import re
import sys

import pytest
from torch_probe import assert_no_torch

torch = pytest.importorskip("torch")

from napkin.bench.device import BenchError, DeviceError, ShapeDoesNotFit  # noqa: E402
from napkin.bench.matmul import GemmBench, bench_matmul, matmul_precision, sweep_matmul  # noqa: E402
from napkin.bench.models import MatmulBenchResult, MatmulSweepResult  # noqa: E402
from napkin.errors import InputError  # noqa: E402
from napkin.specs.catalog import get_hardware  # noqa: E402
from napkin.specs.dtypes import DType  # noqa: E402

QUICK = dict(device="cpu", warmup_s=0.005, iters=5)  # a handful of calls: these tests check logic, not speed
QUICK_CLI = ["--device", "cpu", "--warmup-ms", "5", "--iters", "5"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _consistent(timing) -> None:
    s = timing.stats
    assert 0 < s.min_s <= s.median_s <= s.max_s and s.iters == 5 and s.warmup_iters >= 1
    assert timing.flops == 2 * timing.shape.m * timing.shape.n * timing.shape.k
    assert timing.flops_per_s == timing.flops / s.median_s and timing.best_flops_per_s == timing.flops / s.min_s


def test_cpu_measurement_is_real_and_states_its_method():
    r = bench_matmul(size=96, **QUICK)
    _consistent(r.timing)
    assert r.timing.shape.m == r.timing.shape.n == r.timing.shape.k == 96
    assert r.timing.dtype is DType.fp32 and r.timing.device == "cpu" and not r.timing.l2_flush
    env = r.environment
    assert env.device == "cpu" and env.torch_version == torch.__version__ and env.cpu_threads == torch.get_num_threads()
    assert env.dtype is DType.fp32 and env.shapes == ["96³"] and env.clocks is None
    method = " ".join(r.method)
    assert "torch.mm(A, B, out=C)" in method and "torch.randn" in method and "perf_counter" in method
    assert "5 timed calls" in method and "median" in method
    assert r.mfu is None and "--peak" in r.notes[0]
    assert [s.name for s in r.steps] == ["FLOPs of 96³", "median time per call", "achieved FLOP/s"]


def test_peak_gives_mfu_and_non_square_shapes_count_2mnk():
    r = bench_matmul(48, 40, 24, peak=1e12, **QUICK)
    _consistent(r.timing)
    assert (r.timing.shape.m, r.timing.shape.n, r.timing.shape.k) == (48, 40, 24)
    assert r.mfu == pytest.approx(r.timing.flops_per_s / 1e12)
    assert r.steps[-1].name == "MFU" and r.steps[-1].value == r.mfu


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp8"])
def test_other_dtypes_run_on_the_cpu(dtype):
    if dtype == "fp8" and not hasattr(torch, "_scaled_mm"):
        pytest.skip("this torch has no _scaled_mm")
    r = bench_matmul(size=32, dtype=dtype, **QUICK)
    _consistent(r.timing)
    assert r.timing.dtype.value == dtype
    if dtype == "fp8":
        assert "torch._scaled_mm" in r.method[0]
        assert r.timing.operand_bytes == 2 * 32 * 32 * 1 + 32 * 32 * 2  # fp8 A and B, bf16 C


def test_bad_requests_are_one_line_errors():
    with pytest.raises(InputError, match="tf32 is a tensor-core mode"):
        GemmBench("tf32", "cpu")
    with pytest.raises(InputError, match="bench-matmul times"):
        GemmBench("int8", "cpu")
    with pytest.raises(InputError, match=r"`m` must be greater than 0"):
        bench_matmul(0, 8, 8, **QUICK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"CUDA requested \(--device cuda\)"):
        GemmBench("bf16", "cuda")


def _tf32_state():
    m = torch.backends.cuda.matmul
    try:
        flag = m.allow_tf32
    except RuntimeError:  # torch >= 2.9 raises when the legacy flag and fp32_precision disagree
        flag = "mixed"
    return flag, getattr(m, "fp32_precision", None)


@pytest.mark.parametrize("user_setting", ["default", "legacy-on", "legacy-off", "new-tf32", "new-ieee"])
def test_tf32_switch_is_set_for_the_run_and_restored_exactly(user_setting):
    m = torch.backends.cuda.matmul
    saved = _tf32_state()
    try:
        if user_setting.startswith("legacy"):
            m.allow_tf32 = user_setting == "legacy-on"
        elif user_setting.startswith("new"):
            if not hasattr(m, "fp32_precision"):
                pytest.skip("this torch has no fp32_precision")
            m.fp32_precision = user_setting.removeprefix("new-")
        before = _tf32_state()
        with matmul_precision(torch, DType.fp32):
            assert m.allow_tf32 is False  # fp32 means true fp32, whatever the user had set
        assert _tf32_state() == before
        with matmul_precision(torch, DType.tf32):
            assert m.allow_tf32 is True
        assert _tf32_state() == before
        with matmul_precision(torch, DType.bf16):
            assert _tf32_state() == before  # not an fp32 matmul: left alone
    finally:
        if hasattr(m, "fp32_precision"):
            m.allow_tf32 = saved[0] if isinstance(saved[0], bool) else saved[1] != "tf32"
            m.fp32_precision = saved[1]
        else:
            m.allow_tf32 = saved[0]


def test_sweep_skips_what_does_not_fit_and_reports_best_and_spread():
    seen = []
    r = sweep_matmul([16, 48, 10**6], peak=1e12, progress=lambda i, n, s: seen.append((i, n, s and s.m)), **QUICK)
    assert [row.timing.shape.m for row in r.rows] == [16, 48]
    assert len(r.skipped) == 1 and r.skipped[0].shape.m == 10**6 and "needs" in r.skipped[0].reason
    assert any("skipped" in n for n in r.notes)
    best = max(r.rows, key=lambda row: row.timing.flops_per_s)
    worst = min(r.rows, key=lambda row: row.timing.flops_per_s)
    assert r.best == best and r.spread == best.timing.flops_per_s / worst.timing.flops_per_s >= 1
    assert r.best.mfu == pytest.approx(best.timing.flops_per_s / 1e12)
    assert seen == [(0, 3, 16), (1, 3, 48), (2, 3, 10**6), (3, 3, None)]
    assert not r.interrupted


def test_ctrl_c_during_a_sweep_keeps_the_best_so_far(monkeypatch):
    real = GemmBench.time
    calls = []

    def time_then_interrupt(self, shape):
        calls.append(shape)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, shape)

    monkeypatch.setattr(GemmBench, "time", time_then_interrupt)
    r = sweep_matmul([16, 24, 32, 40], **QUICK)
    assert r.interrupted and [row.timing.shape.m for row in r.rows] == [16, 24]
    assert r.best is not None and "interrupted" in r.notes[-1]


def test_out_of_memory_while_allocating_becomes_a_skipped_size(monkeypatch):
    def oom(self, shape):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")

    monkeypatch.setattr(GemmBench, "_gemm", oom)
    bench = GemmBench(**QUICK)
    with pytest.raises(ShapeDoesNotFit, match="out of memory"):
        bench.time((64, 64, 64))
    r = sweep_matmul([64, 128], **QUICK)
    assert r.rows == [] and len(r.skipped) == 2 and r.best is None


def test_other_torch_errors_are_one_line_bench_errors(monkeypatch):
    def refuse(self, shape):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul\nmore detail")

    monkeypatch.setattr(GemmBench, "_gemm", refuse)
    with pytest.raises(BenchError, match="CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul$"):
        GemmBench(**QUICK).time((64, 64, 64))


# -- the CLI ---------------------------------------------------------------------------------------------------------

def test_cli_prints_flop_rate_and_method(cli):
    r = cli("bench-matmul", *QUICK_CLI, "--size", "64")
    assert r.exit_code == 0, r.stderr
    assert re.search(r"achieved \(median\) +[\d.]+ [MGT]?FLOP/s", r.stdout), r.stdout
    assert "method" in r.stdout and "perf_counter" in r.stdout
    assert "MFU needs --peak" in r.stdout.replace("\n", " ")


def test_cli_json_is_the_result_model_and_save_writes_it(cli, tmp_path):
    saved = tmp_path / "m.json"
    r = cli("bench-matmul", *QUICK_CLI, "--m", "64", "--n", "32", "--k", "16", "--peak", "2T", "--json",
            "--save", str(saved))
    assert r.exit_code == 0, r.stderr
    out = MatmulBenchResult.model_validate(r.json())
    assert out == MatmulBenchResult.model_validate_json(saved.read_text())
    assert out.kind == "bench-matmul" and out.peak.peak_flops_per_s == 2e12 and out.mfu is not None


def test_cli_sweep(cli, tmp_path):
    r = cli("bench-matmul", *QUICK_CLI, "--sizes", "16,24", "--json")
    assert r.exit_code == 0, r.stderr
    out = MatmulSweepResult.model_validate(r.json())
    assert [row.timing.shape.m for row in out.rows] == [16, 24] and out.best is not None
    text = cli("bench-matmul", *QUICK_CLI, "--sizes", "16,24")
    assert "best shape" in text.stdout and "spread" in text.stdout


def test_cli_interrupted_sweep_prints_best_so_far_and_exits_130(cli, monkeypatch):
    real = GemmBench.time

    def interrupt_on_second(self, shape):
        if shape.m == 24:
            raise KeyboardInterrupt
        return real(self, shape)

    monkeypatch.setattr(GemmBench, "time", interrupt_on_second)
    r = cli("bench-matmul", *QUICK_CLI, "--sizes", "16,24,32")
    assert r.exit_code == 130
    assert "best shape" in r.stdout and "16³" in r.stdout and "interrupted" in r.stdout


def test_cli_refuses_contradictory_options(cli):
    r = cli("bench-matmul", *QUICK_CLI, "--sweep", "--size", "64")
    assert r.exit_code == 2 and "--sizes instead of --size" in r.stderr
    r = cli("bench-matmul", *QUICK_CLI, "--dtype", "tf32")
    assert r.exit_code == 2 and "tensor-core mode" in r.stderr


def test_cli_plot_without_matplotlib_names_the_extra_before_measuring(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    monkeypatch.setattr(GemmBench, "time", lambda self, shape: pytest.fail("measured before checking matplotlib"))
    r = cli("bench-matmul", *QUICK_CLI, "--sizes", "16", "--plot", str(tmp_path / "p.png"))
    assert r.exit_code == 2 and "needs matplotlib" in r.stderr and "napkin[plot]" in r.stderr


def test_cli_plot_writes_a_png(cli, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    r = cli("bench-matmul", *QUICK_CLI, "--sizes", "16,32,33", "--peak", "1T", "--plot", str(png))
    assert r.exit_code == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- issue 12: outputs checked first, saved last; what is refused ----------------------------------------------------

@pytest.mark.parametrize("flag, name", [("--save", "x.json"), ("--plot", "x.png")])
def test_an_output_path_that_cannot_be_written_is_refused_before_measuring(cli, monkeypatch, tmp_path, flag, name):
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    monkeypatch.setattr(GemmBench, "time", lambda self, shape: pytest.fail("measured before checking the path"))
    args = ["--sizes", "16"] if flag == "--plot" else ["--size", "16"]
    r = cli("bench-matmul", *QUICK_CLI, *args, flag, str(tmp_path / "nodir" / name))
    assert r.exit_code == 2 and f"{flag} " in r.stderr and "no directory" in r.stderr
    (tmp_path / name).mkdir()
    r = cli("bench-matmul", *QUICK_CLI, *args, flag, str(tmp_path / name))
    assert r.exit_code == 2 and "is a directory" in r.stderr


def test_the_result_is_printed_even_when_saving_fails(cli, monkeypatch, tmp_path):
    import napkin.bench.saved as saved

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saved.os, "replace", full_disk)
    out = tmp_path / "m.json"
    r = cli("bench-matmul", *QUICK_CLI, "--size", "32", "--save", str(out))
    assert r.exit_code == 2
    assert "achieved (median)" in r.stdout  # the measurement is not lost
    assert "No space left on device" in r.stderr and "not saved" in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # no temporary file left behind


def test_size_zero_is_refused_not_taken_as_the_default():
    with pytest.raises(InputError, match="`size` must be at least 1, got 0"):
        bench_matmul(size=0, **QUICK)
    with pytest.raises(InputError, match="`size` must be at least 1"):
        sweep_matmul(m=[16], size=0, **QUICK)


@pytest.mark.parametrize("flag", ["--seq", "--batch"])
def test_batch_and_seq_without_shapes_from_name_the_flag_they_need(cli, flag):
    r = cli("bench-matmul", *QUICK_CLI, flag, "128")
    assert r.exit_code == 2 and flag in r.stderr and "--shapes-from" in r.stderr


def test_a_negative_warmup_is_reported_in_ms(cli):
    r = cli("bench-matmul", *QUICK_CLI[:2], "--warmup-ms", "-1", "--size", "16")
    assert r.exit_code == 2 and "got -1 ms" in r.stderr
    r = cli("validate", "--device", "cpu", "--warmup-ms", "-1")
    assert r.exit_code == 2 and "got -1 ms" in r.stderr
    with pytest.raises(InputError, match="got -2.5 ms"):
        GemmBench("fp32", "cpu", warmup_s=-0.0025)


def test_a_peak_below_any_device_is_refused_before_measuring(cli, monkeypatch):
    monkeypatch.setattr(GemmBench, "time", lambda self, shape: pytest.fail("measured with an impossible peak"))
    r = cli("bench-matmul", *QUICK_CLI, "--size", "16", "--peak", "1")
    assert r.exit_code == 2 and "--peak 1 FLOP/s is below any device" in r.stderr


def test_a_peak_below_the_achieved_rate_gives_no_mfu_and_says_why(cli, monkeypatch):
    import napkin.bench.matmul as matmul

    real = matmul.time_calls

    def fast(*args, **kw):  # as if each call took a nanosecond: 2·64³ FLOPs / 1e-9 s = 524 TFLOP/s
        stats, times = real(*args, **kw)
        return stats.model_copy(update={"min_s": 1e-9, "median_s": 1e-9, "max_s": 1e-9}), times

    monkeypatch.setattr(matmul, "time_calls", fast)
    r = bench_matmul(size=64, peak=67e12, **QUICK)
    assert r.timing.flops_per_s > 67e12 and r.mfu is None
    assert any("above the dense peak" in n and "impossible" in n for n in r.notes)
    assert "MFU" not in [s.name for s in r.steps]
    s = sweep_matmul([64], peak=67e12, **QUICK)
    assert s.rows[0].mfu is None and any("above the dense peak" in n for n in s.notes)
    out = cli("bench-matmul", *QUICK_CLI, "--size", "64", "--peak", "67T")
    assert out.exit_code == 0 and "above this peak" in out.stdout


@pytest.mark.slow
def test_bench_matmul_help_does_not_import_torch():
    assert_no_torch(["bench-matmul", "--help"])


# -- on a GPU ----------------------------------------------------------------------------------------------------------

@cuda
def test_gpu_measurement_uses_cuda_events_and_the_catalog_peak():
    r = bench_matmul(size=2048, dtype="bf16", device="cuda", warmup_s=0.05, iters=20, device_warmup_s=1.0)
    assert r.timing.stats.timer == "cuda-events" and r.environment.cuda_version == torch.version.cuda
    assert r.timing.l2_flush  # every call on a GPU (issue 14: do_bench / mamf-finder's 256 MiB)
    assert r.environment.clocks is None or r.environment.clocks.source in ("nvidia-smi", "torch.cuda.clock_rate")
    if r.peak.hardware is not None:  # a catalog GPU: MFU against its dense bf16 peak
        assert 0 < r.mfu <= 1
        assert r.mfu == pytest.approx(r.timing.flops_per_s / get_hardware(r.peak.hardware).peak("bf16"))


@cuda
def test_gpu_fp32_and_tf32_both_run_and_leave_the_tf32_switch_as_it_was():
    before = torch.backends.cuda.matmul.allow_tf32
    for dtype in ("fp32", "tf32"):
        r = bench_matmul(size=1024, dtype=dtype, device="cuda", warmup_s=0.02, iters=10, device_warmup_s=0)
        assert r.timing.dtype.value == dtype and r.timing.flops_per_s > 0
    assert torch.backends.cuda.matmul.allow_tf32 == before


@cuda
def test_gpu_fp8_runs_where_the_capability_allows_it():
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) >= (8, 9):
        assert bench_matmul(size=1000, dtype="fp8", device="cuda", warmup_s=0.02, iters=10,
                            device_warmup_s=0).timing.flops_per_s > 0  # K = N = 1000: padded to 1008
    else:
        with pytest.raises(BenchError, match="not supported on this device"):
            GemmBench("fp8", "cuda")
