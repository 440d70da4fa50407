"""The measured mode's decisions, as pure functions: no torch and no GPU needed.

Device-name → catalog matching, which peak MFU is against, the L2-flush decision, fp8 support, out-of-memory
detection, nvidia-smi parsing, the sweep's sizes, the iteration plan, nccl-tests' bus bandwidth, and the
derivation of a measurement checked against the lecture's measured-MFU numbers (DESIGN.md).
"""

from __future__ import annotations

import pytest
from torch_probe import run_fresh

from napkin.bench.allreduce import algorithm_bandwidth, bus_bandwidth, launched_by_torchrun
from napkin.bench.device import (
    FLUSH_BYTES,
    DeviceError,
    ShapeDoesNotFit,
    check_fits,
    choose_peak,
    cpu_model_name,
    fp8_support,
    is_out_of_memory,
    l2_flush_plan,
    match_hardware,
    parse_nvidia_smi,
    resolve_device,
)
from napkin.bench.matmul import matmul_steps, sweep_sizes
from napkin.bench.models import GemmShape, GemmTiming, PeakChoice, TimingStats
from napkin.bench.timer import MAX_ITERS, MIN_ITERS, plan_iters
from napkin.errors import InputError, UnknownNameError
from napkin.results import Derivation
from napkin.specs.catalog import get_hardware
from napkin.specs.dtypes import DType

H100_L2 = 50 * 2**20  # torch.cuda.get_device_properties(...).L2_cache_size on an H100 SXM (50 MiB)


# -- --device ------------------------------------------------------------------------------------------------------

def test_auto_device_is_the_gpu_when_torch_sees_one_else_the_cpu():
    assert resolve_device("auto", cuda_available=False, cuda_count=0) == "cpu"
    assert resolve_device("auto", cuda_available=True, cuda_count=4, current=2) == "cuda:2"
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == "cuda:1"
    assert resolve_device("CUDA", cuda_available=True, cuda_count=2, current=1) == "cuda:1"


def test_cuda_requested_but_absent_says_why():
    with pytest.raises(DeviceError, match="CPU-only build"):
        resolve_device("cuda", cuda_available=False, cuda_count=0, cuda_build=None)
    with pytest.raises(DeviceError, match="built for CUDA 12.4.*CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda:0", cuda_available=False, cuda_count=0, cuda_build="12.4")
    with pytest.raises(DeviceError, match="only 2 CUDA device"):
        resolve_device("cuda:2", cuda_available=True, cuda_count=2)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu", cuda_available=True, cuda_count=1)


# -- device name → catalog → dense peak -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "entry"), [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),  # what torch.cuda.get_device_name() prints on an H100 SXM
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
    ("NVIDIA H200", "h200"),
    # issue 14 (10): these reported TFLOP/s without MFU
    ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA H200 NVL", "h200-nvl"),
    ("NVIDIA H800", "h800"),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
    ("Tesla V100-SXM2-16GB", "v100-sxm2-16gb"),
])
def test_torch_device_names_match_their_catalog_entry(name, entry):
    assert match_hardware(name).name == entry


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "AMD EPYC"])
def test_devices_not_in_the_catalog_match_nothing(name):
    assert match_hardware(name) is None


def test_mfu_is_against_the_dense_peak_of_the_detected_device():
    choice = choose_peak(DType.bf16, "cuda", "NVIDIA H100 80GB HBM3")
    h100 = get_hardware("h100-sxm")
    assert choice.hardware == "h100-sxm"
    assert choice.peak_flops_per_s == 1979e12 / 2  # CS336 lecture 2: H100 bf16 dense = 1979e12 / 2
    assert choice.peak_flops_per_s == h100.peak("bf16") < h100.peak("bf16", sparse=True)
    assert "dense bf16" in choice.source and choice.note is None


def test_gpu_overrides_detection_and_peak_overrides_both():
    by_name = choose_peak(DType.bf16, "cuda", "NVIDIA H100 80GB HBM3", gpu="a100")
    assert (by_name.hardware, by_name.peak_flops_per_s) == ("a100-sxm-80gb", get_hardware("a100").peak("bf16"))
    given = choose_peak(DType.fp32, "cpu", "AMD EPYC", peak=1.5e12)
    assert (given.peak_flops_per_s, given.source) == (1.5e12, "--peak (given)")
    with pytest.raises(UnknownNameError, match="did you mean"):
        choose_peak(DType.bf16, "cuda", "NVIDIA H100 80GB HBM3", gpu="h10")
    with pytest.raises(InputError, match="no fp8 peak"):  # asked for by name: an A100 has no FP8 row
        choose_peak(DType.fp8, "cuda", "x", gpu="a100")
    with pytest.raises(InputError, match="--peak must be greater than 0"):
        choose_peak(DType.fp32, "cpu", "AMD EPYC", peak=0.0)


def test_no_peak_means_no_mfu_and_a_note_saying_how_to_get_one():
    cpu = choose_peak(DType.fp32, "cpu", "AMD EPYC")
    assert cpu.peak_flops_per_s is None and "--peak" in cpu.note
    unknown = choose_peak(DType.bf16, "cuda", "NVIDIA GeForce RTX 3090")
    assert unknown.peak_flops_per_s is None and "--gpu" in unknown.note and "--peak" in unknown.note
    detected_no_row = choose_peak(DType.fp8, "cuda", "NVIDIA A100-SXM4-80GB")
    assert detected_no_row.peak_flops_per_s is None and "no fp8 peak" in detected_no_row.note


# -- L2 flush, fp8, memory ------------------------------------------------------------------------------------------

def _operands(n: int, bytes_per: int) -> int:
    return 3 * n * n * bytes_per  # A, B and C of an n³ GEMM


def test_caches_are_flushed_before_every_call_on_a_gpu_with_256_mib_as_do_bench_does():
    # issue 14 (7): the old rule looked at A+B+C, so a skinny A and B beside a big C were never flushed.
    assert l2_flush_plan("cpu", H100_L2) == (False, 0)
    assert l2_flush_plan("cuda", None) == (True, FLUSH_BYTES) == (True, 256 * 2**20)  # L2 size unknown: flush anyway
    assert l2_flush_plan("cuda", H100_L2) == (True, 256 * 2**20)  # 2 × 50 MiB < 256 MiB
    assert l2_flush_plan("cuda", 192 * 2**20) == (True, 384 * 2**20)  # a bigger cache: twice it


@pytest.mark.parametrize(("capability", "ok"), [((7, 0), False), ((8, 0), False), ((8, 6), False), ((8, 9), True),
                                                 ((9, 0), True), ((10, 0), True)])
def test_fp8_needs_ada_or_hopper(capability, ok):
    supported, why = fp8_support("cuda", has_scaled_mm=True, has_fp8_dtype=True, capability=capability)
    assert supported is ok
    if not ok:
        assert "not supported on this device" in why and f"{capability[0]}.{capability[1]}" in why


def test_fp8_on_rocm_the_cpu_and_old_torch():
    assert fp8_support("cuda", has_scaled_mm=True, has_fp8_dtype=True, rocm_arch="gfx942:sramecc+:xnack-")[0]
    assert not fp8_support("cuda", has_scaled_mm=True, has_fp8_dtype=True, rocm_arch="gfx90a")[0]
    assert fp8_support("cpu", has_scaled_mm=True, has_fp8_dtype=True)[0]
    ok, why = fp8_support("cuda", has_scaled_mm=False, has_fp8_dtype=False, capability=(9, 0))
    assert not ok and "_scaled_mm" in why


def test_out_of_memory_is_recognised_from_torch_and_allocator_errors():
    class OutOfMemoryError(RuntimeError):  # the name torch gives its CUDA OOM (torch.OutOfMemoryError)
        pass

    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 1099511627776 bytes"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_a_shape_that_cannot_fit_is_refused_before_allocating():
    check_fits(80e9, None, "unknown free memory")  # nothing known: let the allocator decide
    check_fits(8e9, 10e9, "fits")
    with pytest.raises(ShapeDoesNotFit, match=r"65536³ in bf16 needs 25.77 GB .* only 10.00 GB"):
        check_fits(_operands(65536, 2), 10e9, "65536³ in bf16")


# -- environment header -----------------------------------------------------------------------------------------------

def test_nvidia_smi_line_is_parsed_and_unsupported_fields_are_none():
    c = parse_nvidia_smi("1980, 1980, 2619, 312.45, 700.00, 47, 550.54.15")
    assert (c.sm_mhz, c.max_sm_mhz, c.memory_mhz, c.power_w, c.power_limit_w, c.temperature_c) == \
        (1980, 1980, 2619, 312.45, 700, 47)
    assert c.driver_version == "550.54.15" and c.source == "nvidia-smi"
    partial = parse_nvidia_smi("1410, 1410, 1593, [N/A], [Not Supported], 35, 535.104.05")
    assert partial.power_w is None and partial.power_limit_w is None and partial.sm_mhz == 1410
    assert parse_nvidia_smi("garbage") is None


def test_cpu_name_comes_from_proc_cpuinfo():
    info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t: fpu\n"
    assert cpu_model_name(info) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model_name("processor : 0\n") is None


# -- sweep sizes and the iteration plan ------------------------------------------------------------------------------

def test_sweep_walks_powers_of_two_their_neighbours_and_three_halves():
    assert sweep_sizes(128, 1024) == [128, 129, 192, 255, 256, 257, 384, 511, 512, 513, 768, 1023, 1024]
    gpu = sweep_sizes(256, 8192)
    assert {8191, 8192, 6144, 4095, 4096, 4097} <= set(gpu) and max(gpu) == 8192 and min(gpu) == 256
    with pytest.raises(InputError):
        sweep_sizes(1024, 512)


def test_iterations_fill_the_target_time_within_bounds():
    assert plan_iters(0.01, target_s=1.0) == 100
    assert plan_iters(1e-7, target_s=1.0) == MAX_ITERS
    assert plan_iters(5.0, target_s=1.0) == MIN_ITERS
    assert plan_iters(5.0, iters=3) == 3
    with pytest.raises(InputError, match="--iters"):
        plan_iters(0.01, iters=0)


# -- the derivation of a measurement ---------------------------------------------------------------------------------

def _timing(shape: GemmShape, median_s: float, dtype: DType = DType.fp32) -> GemmTiming:
    stats = TimingStats(timer="cuda-events", iters=10, min_s=median_s, median_s=median_s, max_s=median_s,
                        mean_s=median_s, warmup_s=0.25, warmup_iters=3)
    return GemmTiming(shape=shape, dtype=dtype, device="cuda:0", flops=shape.flops, operand_bytes=0, l2_flush=False,
                      stats=stats, flops_per_s=shape.flops / median_s, best_flops_per_s=shape.flops / median_s)


def test_measured_mfu_reproduces_the_lecture():
    # DESIGN.md, "measured MFU": (B,D)@(D,K), B=16384, D=32768, K=8192 in fp32 on an H100 took 0.1627 s:
    # 54.1 TFLOP/s, MFU ≈ 0.80 against the lecture's 67.5e12.
    shape = GemmShape(m=16384, k=32768, n=8192)
    assert shape.flops == 8_796_093_022_208  # DESIGN.md "matmul FLOPs": 2BDK
    d = Derivation()
    mfu = matmul_steps(d, _timing(shape, 0.1627), PeakChoice(peak_flops_per_s=67.5e12, source="CS336 lecture 2"))
    by_name = {s.name: s for s in d.steps}
    assert by_name["achieved FLOP/s"].value == pytest.approx(54.1e12, rel=1e-3)
    assert mfu == pytest.approx(0.80, abs=0.005)
    assert [s.unit for s in d.steps] == ["FLOP", "s", "FLOP/s", "FLOP/s", "fraction"]
    assert all(s.source for s in d.steps)


def test_without_a_peak_the_derivation_stops_at_flops_per_second():
    d = Derivation()
    assert matmul_steps(d, _timing(GemmShape(m=64, n=64, k=64), 1e-5), PeakChoice()) is None
    assert d.steps[-1].name == "achieved FLOP/s"


# -- all-reduce ------------------------------------------------------------------------------------------------------

def test_bus_bandwidth_is_nccl_tests_formula():
    # nccl-tests doc/PERFORMANCE.md: busbw = algbw · 2(n-1)/n; equal to algbw for 2 ranks, 1.75x for 8.
    assert algorithm_bandwidth(1e9, 0.01) == 1e11
    assert bus_bandwidth(100e9, 2) == 100e9
    assert bus_bandwidth(100e9, 8) == pytest.approx(175e9)
    assert bus_bandwidth(100e9, 1) == 0


def test_torchrun_is_recognised_by_its_environment():
    assert launched_by_torchrun({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert not launched_by_torchrun({"LOCAL_RANK": "0"})


# -- without torch ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_without_torch_the_bench_commands_name_the_extra_and_help_still_works():
    matmul, allreduce, help_ = run_fresh(["bench-matmul", "--device", "cpu"], ["bench-allreduce", "--nproc", "2"],
                                         ["bench-matmul", "--help"], block=("torch",))  # as if torch were not installed
    for out in (matmul, allreduce):
        assert out.exit_code == 2, out.args
        assert "needs torch, which is not installed" in out.stderr and "napkin[bench]" in out.stderr
        assert "Traceback" not in out.stderr
    assert help_.exit_code == 0 and "--sweep" in help_.stdout and "--peak" in help_.stdout
