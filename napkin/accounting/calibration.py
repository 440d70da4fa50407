"""`step-time --calibration FILE`: replace the step-time model's GEMM and bus efficiencies with measured ones.

A GEMM file (``napkin bench-matmul --shapes-from MODEL --save`` or any ``bench-matmul --save``) re-fits the
large-GEMM ceiling so the model reproduces the measured time of every shape in it: η_new = η · Σ t_model / Σ
t_measured, the wave quantization kept. An all-reduce file (``napkin bench-allreduce --save``) sets the bus
efficiency of the tier it ran on from its largest message (busbw / link) and that tier's latency from its
smallest (the α of the α–β model). Reading a file never imports torch.
"""

from __future__ import annotations

from napkin.accounting.kernels import DEFAULT_MATMUL_EFFICIENCY, Device, StepConstants, gemm_time
from napkin.errors import InputError
from napkin.specs.dtypes import BYTES_PER_ELEMENT
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import TransformerSpec

MIN_EFFICIENCY = 1e-4  # a measured ceiling 10,000x below the datasheet is a broken file or the wrong device
MAX_LATENCY_S = 1.0  # the smallest all-reduce's time is a latency: microseconds, never seconds


def calibrate(files: str | list[str], c: StepConstants, hw: HardwareSpec, spec: TransformerSpec,
              precision: str) -> tuple[StepConstants, list[str]]:
    """The constants with what the saved measurements say, and one note per replaced constant."""
    from napkin.accounting.model_state import get_precision
    from napkin.bench.model_gemms import ModelGemmsResult
    from napkin.bench.models import AllreduceBenchResult, MatmulBenchResult, MatmulSweepResult
    from napkin.bench.saved import load_measurement

    notes: list[str] = []
    compute = get_precision(precision).compute
    for path in [files] if isinstance(files, str) else files:
        r = load_measurement(path)
        if isinstance(r, AllreduceBenchResult):
            c, note = _allreduce(r, c, hw, path)
            notes.append(note)
            continue
        env = r.environment
        if env.hardware is None:  # a CPU, or a GPU napkin did not recognise: it says nothing of hw (issue 25 item 6)
            raise InputError(f"'{path}' was measured on {env.device_name}, which is no catalog GPU: it cannot "
                             f"calibrate {hw.name}; measure on a {hw.name}, or, where napkin did not recognise the "
                             f"GPU, name it when measuring (`bench-matmul --gpu {hw.name} ... --save`)")
        if env.hardware != hw.name:
            raise InputError(f"'{path}' was measured on {env.hardware}, not {hw.name}: pass --gpu {env.hardware} or a "
                             f"measurement taken on {hw.name}")
        if isinstance(r, ModelGemmsResult):
            dtype = r.inputs.dtype
        elif isinstance(r, MatmulSweepResult):
            dtype = r.rows[0].timing.dtype if r.rows else compute
        else:
            dtype = r.timing.dtype
        if dtype != compute:
            raise InputError(f"'{path}' timed {dtype.value} GEMMs but {precision} computes in {compute.value}; "
                             f"measure with `dtype` {compute.value}")
        if isinstance(r, ModelGemmsResult):
            shapes = [(row.shape.m, row.shape.n, row.shape.k, row.count, row.timing.stats.median_s) for row in r.rows]
        elif isinstance(r, MatmulSweepResult):
            shapes = [(x.timing.shape.m, x.timing.shape.n, x.timing.shape.k, 1, x.timing.stats.median_s)
                      for x in r.rows]
        else:
            assert isinstance(r, MatmulBenchResult)
            tm = r.timing
            shapes = [(tm.shape.m, tm.shape.n, tm.shape.k, 1, tm.stats.median_s)]
        if not shapes:
            raise InputError(f"'{path}' holds no timed GEMM")
        eff = c.gemm_efficiency or hw.matmul_efficiency or DEFAULT_MATMUL_EFFICIENCY
        dev = Device(hw.peak(compute), hw.memory_bandwidth_bytes_per_s, hw.sm_count, eff)
        p = BYTES_PER_ELEMENT[compute]
        modelled = sum(n * (gemm_time(m, nn, k, p, dev, c) - c.kernel_s) for m, nn, k, n, _ in shapes)
        measured = sum(n * t for *_, n, t in shapes)
        new = eff * modelled / measured
        if not new >= MIN_EFFICIENCY:
            raise InputError(f"'{path}': its GEMMs ran at {new:.3g} of {hw.name}'s dense peak (Σ t_measured = "
                             f"{measured:.3g} s for Σ t_model = {modelled:.3g} s): not a measurement of this device")
        if new > 1:
            notes.append(f"{path}: the measured GEMMs beat the model's dense peak ({new:.2f} × peak); efficiency "
                         "capped at 1 — is the device the one named?")
            new = 1.0
        c = c.model_copy(update={"gemm_efficiency": new})
        notes.append(f"calibrated from {path}: large-GEMM efficiency {eff:.3f} → {new:.3f} (measured {len(shapes)} "
                     f"shapes, Σ t_model / Σ t_measured = {modelled / measured:.3f})")
    return c, notes


def _allreduce(r: object, c: StepConstants, hw: HardwareSpec, path: str) -> tuple[StepConstants, str]:
    from napkin.bench.models import AllreduceBenchResult

    assert isinstance(r, AllreduceBenchResult)
    if not r.rows:
        raise InputError(f"'{path}' holds no all-reduce sizes")
    if r.environment.device == "cpu" or r.environment.world_size < 2:
        what = "on the CPU" if r.environment.device == "cpu" else "on one rank (it moves nothing)"
        raise InputError(f"'{path}' was measured {what} ({r.environment.backend}, {r.environment.world_size} "
                         f"rank(s)): it says nothing of {hw.name}'s links; measure with `bench-allreduce` on the "
                         "GPUs of the cluster, 2 or more ranks")
    big = max(r.rows, key=lambda x: x.size_bytes)
    small = min(r.rows, key=lambda x: x.size_bytes)
    n = r.environment.world_size
    if small.time_s > MAX_LATENCY_S:
        raise InputError(f"'{path}': its smallest all-reduce ({small.size_bytes:g} B) took {small.time_s:.3g} s; a "
                         f"latency is microseconds (at most {MAX_LATENCY_S:g} s read): is the file right?")
    link: float | None  # bytes/s per GPU on the link the ranks' all-reduce crosses
    if n <= (hw.node_gpus or 8):
        link = hw.scale_up_bandwidth_bytes_per_s or (hw.interconnect_bandwidth_bytes_per_s or 0) / 2
        if not link:
            raise InputError(f"{hw.name} has no scale-up bandwidth to calibrate against; add it to its profile")
        eff = _bus(big.busbw_bytes_per_s / link, path, link)
        c = c.model_copy(update={"bus_efficiency": eff, "intra_latency_s": small.time_s})
        return c, (f"calibrated from {path}: intra-node bus efficiency {eff:.3f} ({big.busbw_bytes_per_s / 1e9:.1f} "
                   f"GB/s busbw over {n} ranks / {link / 1e9:.0f} GB/s), latency {small.time_s * 1e6:.1f} µs")
    link = hw.scale_out_bandwidth_bytes_per_s
    if not link:
        raise InputError(f"{hw.name} has no scale-out bandwidth to calibrate against; add it to its profile")
    eff = _bus(big.busbw_bytes_per_s / link, path, link)
    c = c.model_copy(update={"network_efficiency": eff, "inter_latency_s": small.time_s})
    return c, (f"calibrated from {path}: inter-node efficiency {eff:.3f} ({big.busbw_bytes_per_s / 1e9:.1f} GB/s "
               f"busbw over {n} ranks / {link / 1e9:.0f} GB/s per GPU), latency {small.time_s * 1e6:.1f} µs")


def _bus(eff: float, path: str, link: float) -> float:
    """The measured bus efficiency, capped at 1; one far below the link's is refused (a 0 divided by zero)."""
    if not eff >= MIN_EFFICIENCY:
        raise InputError(f"'{path}': its largest all-reduce reached {eff * link / 1e9:.3g} GB/s of bus bandwidth, "
                         f"{eff:.2g} of the {link / 1e9:.0f} GB/s link: not a measurement of these links")
    return min(1.0, eff)
