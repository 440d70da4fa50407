"""One-shot acceptance check of napkin's measured mode on a GPU: every CUDA path, PASS/FAIL lines and a JSON report.

    python benchmarks/gpu_check.py                          # on one GPU (H100/H200 class): <= 4 minutes
    python benchmarks/gpu_check.py --json-out report.json   # where the JSON report goes (default gpu_check.json)
    python benchmarks/gpu_check.py --dry-run                # on the CPU: tiny sizes, no thresholds (the test suite)

Needs only torch and this repository (it imports napkin from the checkout it sits in). Each check runs in its own
try/except and is reported whatever happens; the whole run is bounded by --budget-s (default 230 s): a check that
would start after it is reported as SKIP, and a watchdog writes the report and exits if the run hangs.

Thresholds on a GPU (issue 14):
- bf16 8192³ reaches >= 0.70 of the detected GPU's dense bf16 peak (mamf-finder publishes 0.80 on an H100 SXM),
  and napkin's median is within 3% of a bare CUDA-event-timed loop of the same torch.mm;
- fp32 with TF32 off vs tf32: tf32 >= 3x faster, and torch's TF32 switches are as they were afterwards;
- fp8 8192³ reaches >= 0.50 of the dense fp8 peak and matches an fp32 reference of the same fp8 inputs (relative
  error <= 1e-2); K and N not multiples of 16 are padded, not refused;
- a shape too large is refused before anything is allocated, and a real out-of-memory is survived (memory is back
  and the next shape runs);
- `validate` passes on CUDA and its memory rows name the cuBLAS workspace;
- `--shapes-from llama3-8b` times every GEMM in bf16 and in fp8;
- `bench-allreduce` runs (NCCL with 2+ GPUs, gloo on the CPU with one);
- clocks and power are sampled during the timed calls, and a figure after the 30 s device warm-up is "sustained".
Exit status: 0 when every check passed (or was skipped in a dry run), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # napkin from this checkout, installed or not

THRESHOLDS = {
    "bf16_mfu": 0.70,  # mamf-finder's H100 SXM figure is 0.80 (ml-engineering MAMF table)
    "bare_loop_rel": 0.03,  # napkin's harness within 3% of a bare CUDA-event-timed loop
    "tf32_speedup": 3.0,  # TF32 tensor cores vs true FP32 (H100: 494.5 vs 67 TFLOP/s dense peaks)
    "fp8_mfu": 0.50,
    "fp8_rel_error": 1e-2,  # bf16 output of fp8 products vs an fp32 product of the same fp8 values
}
SIZES = {  # real run / dry run
    "gemm": (8192, 128),
    "fp8_odd": (1000, 40),  # K = N = 1000: CUDA's _scaled_mm needs multiples of 16, napkin pads
    "numerics": (1000, 40),
}


class Report:
    def __init__(self, dry: bool, budget_s: float, out: Path) -> None:
        self.dry, self.budget_s, self.out = dry, budget_s, out
        self.start = time.monotonic()
        self.checks: list[dict[str, Any]] = []
        self.env: dict[str, Any] = {}
        self._lock = threading.Lock()

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, name: str, fn: Callable[[], tuple[bool | None, str, dict[str, Any]]], *, needs_s: float = 5.0,
            threshold: str = "") -> dict[str, Any]:
        """Run one check: fn returns (passed, detail, values); passed None means not applicable (SKIP)."""
        t0 = time.monotonic()
        entry: dict[str, Any] = {"name": name, "threshold": threshold if not self.dry else "none (dry run)"}
        if self.left() < needs_s:
            entry.update(status="SKIP", detail=f"out of time ({self.left():.0f} s left of the {self.budget_s:g} s "
                                                f"budget, needs ~{needs_s:g} s)", values={})
        else:
            try:
                ok, detail, values = fn()
                # A dry run applies no threshold: a check that misses it there RAN (it never reads as a PASS).
                status = "SKIP" if ok is None else ("PASS" if ok else "RAN" if self.dry else "FAIL")
                entry.update(status=status, detail=detail, values=values)
            except Exception as e:  # every check is reported, whatever it raised
                last = traceback.format_exception_only(type(e), e)[-1].strip()
                entry.update(status="ERROR", detail=last, values={},
                             traceback=traceback.format_exc(limit=6).splitlines()[-12:])
        entry["elapsed_s"] = round(time.monotonic() - t0, 2)
        with self._lock:
            self.checks.append(entry)
        print(f"{entry['status']:<5} {name}: {entry['detail']}  [{entry['elapsed_s']:.1f} s]", flush=True)
        return entry

    def passed(self) -> bool:
        allowed = {"PASS", "SKIP", "RAN"} if self.dry else {"PASS"}
        return bool(self.checks) and all(c["status"] in allowed or c.get("optional") for c in self.checks)

    def write(self, note: str | None = None) -> None:
        with self._lock:
            doc = {"mode": "dry-run" if self.dry else "gpu", "passed": self.passed(), "note": note,
                   "elapsed_s": round(time.monotonic() - self.start, 1), "budget_s": self.budget_s,
                   "thresholds": THRESHOLDS, "environment": self.env, "checks": self.checks}
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, self.out)


def _rel(a: float, b: float) -> float:
    return a / b - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no thresholds")
    ap.add_argument("--json-out", default="gpu_check.json", help="where to write the JSON report")
    ap.add_argument("--budget-s", type=float, default=230.0, help="stop starting checks after this many seconds")
    ap.add_argument("--device-warmup", type=float, default=30.0, help="GPU warm-up before the first GEMM (s)")
    args = ap.parse_args()
    dry = args.dry_run
    out = Path(args.json_out)
    rep = Report(dry, args.budget_s, out)

    def watchdog() -> None:
        rep.write(note=f"watchdog: the run passed {args.budget_s + 60:g} s and was stopped")
        print(f"FAIL  watchdog: stopped after {args.budget_s + 60:g} s; report in {out}", flush=True)
        os._exit(1)

    dog = threading.Timer(args.budget_s + 60, watchdog)
    dog.daemon = True
    dog.start()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

    import napkin
    from napkin.bench import runtime
    from napkin.bench.device import ShapeDoesNotFit, choose_peak
    from napkin.bench.matmul import GemmBench, bench_matmul, matmul_precision
    from napkin.bench.models import GemmShape
    from napkin.specs.dtypes import DType

    cuda = torch.cuda.is_available() and not dry
    dev = "cuda" if cuda else "cpu"
    i = 1 if dry else 0
    gemm_n = SIZES["gemm"][i]
    quick: dict[str, Any] = dict(warmup_s=0.0, iters=3) if dry else dict(warmup_s=0.25, target_s=1.0)
    rep.env = {"torch": torch.__version__, "cuda": torch.version.cuda, "hip": torch.version.hip,
               "python": platform.python_version(), "napkin_root": str(ROOT), "device": dev,
               "napkin": getattr(napkin, "__version__", None)}
    print(f"napkin gpu_check ({'dry run, CPU' if dry else 'GPU'}): torch {torch.__version__}, budget "
          f"{args.budget_s:g} s, report -> {out}", flush=True)
    state: dict[str, Any] = {}

    # -- the device --------------------------------------------------------------------------------------------
    def environment() -> tuple[bool | None, str, dict[str, Any]]:
        if dry:
            name = runtime.device_name(torch, torch.device("cpu"))
            return True, f"CPU {name} (dry run)", {"device_name": name}
        if not torch.cuda.is_available():
            return False, "torch.cuda.is_available() is False: no GPU to check", {}
        d = torch.device("cuda")
        name = torch.cuda.get_device_name(d)
        p = choose_peak(DType.bf16, "cuda", name)
        props = torch.cuda.get_device_properties(d)
        values = {"device_name": name, "hardware": p.hardware, "capability": f"{props.major}.{props.minor}",
                  "gpus": torch.cuda.device_count(), "memory_bytes": props.total_memory}
        rep.env.update(values)
        ok = p.hardware is not None
        return ok, f"{name} -> catalog {p.hardware or 'NONE (no peak: MFU checks cannot pass)'}", values

    rep.run("device and catalog match", environment, needs_s=1)
    if not dry and not torch.cuda.is_available():  # every later check would time the CPU at GPU sizes for minutes
        rep.write(note="no CUDA device: nothing else checked (use --dry-run on a CPU)")
        print(f"FAIL  gpu_check: no CUDA device, nothing else checked; on a CPU run --dry-run; report: {out}",
              flush=True)
        return 1

    # -- bf16: MFU, the bare loop, clocks, regime, flush -------------------------------------------------------------
    def bare_loop(bench: Any, n: int, seconds: float) -> float:
        """FLOP/s of a plain loop of the same torch.mm (B column-major, out=C), timed as one span."""
        fn, held = bench._gemm(GemmShape(m=n, n=n, k=n))
        sync = runtime.synchronizer(torch, bench.device)
        for _ in range(3):
            fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        per = max(time.perf_counter() - t0, 1e-6)
        calls = max(10, int(seconds / per))
        if bench.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            sync()
            t = start.elapsed_time(end) / 1e3 / calls
        else:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            t = (time.perf_counter() - t0) / calls
        del fn, held
        runtime.empty_cache(torch, bench.device)
        return 2.0 * n**3 / t

    def bf16() -> tuple[bool | None, str, dict[str, Any]]:
        bench = GemmBench("bf16", dev, device_warmup_s=0.0 if dry else args.device_warmup, **quick)
        state["bf16_bench"] = bench
        timings, bare = [], []
        for _ in range(2):  # interleaved: napkin, bare, napkin, bare
            timings.append(bench.time((gemm_n, gemm_n, gemm_n)))
            bare.append(bare_loop(bench, gemm_n, 0.2 if dry else 1.0))
        state["bf16_timings"] = timings
        rate = sorted(t.flops_per_s for t in timings)[-1]
        p = choose_peak(DType.bf16, bench.device.type, bench.device_name)
        mfu = rate / p.peak_flops_per_s if p.peak_flops_per_s else None
        state["bf16_rel"] = _rel(max(t.flops_per_s for t in timings), max(bare))
        state["bf16_rates"] = ([t.flops_per_s for t in timings], bare)
        values = {"napkin_flops_per_s": [t.flops_per_s for t in timings], "mfu": mfu, "peak": p.peak_flops_per_s,
                  "hardware": p.hardware, "regime": [t.regime for t in timings],
                  "busy_before_s": [t.busy_before_s for t in timings], "l2_flush": timings[0].l2_flush,
                  "device_warmup": bench.warmed, "notes": bench.notes}
        if dry:
            return True, f"{gemm_n}³ bf16 on the CPU: {rate / 1e9:.3g} GFLOP/s", values
        ok = mfu is not None and mfu >= THRESHOLDS["bf16_mfu"]
        return ok, (f"{gemm_n}³ bf16: {rate / 1e12:.1f} TFLOP/s, MFU {mfu:.3f} vs {p.hardware} dense peak "
                    f"(>= {THRESHOLDS['bf16_mfu']})" if mfu is not None else "no catalog peak: no MFU"), values

    rep.run("bf16 GEMM reaches the peak fraction", bf16, needs_s=10 if dry else args.device_warmup + 15,
            threshold=f"MFU >= {THRESHOLDS['bf16_mfu']}")

    def vs_bare() -> tuple[bool | None, str, dict[str, Any]]:
        if "bf16_rel" not in state:
            return None, "the bf16 check did not run", {}
        rel = state["bf16_rel"]
        napkin_rates, bare = state["bf16_rates"]
        values = {"napkin_flops_per_s": napkin_rates, "bare_flops_per_s": bare, "relative": rel}
        return abs(rel) <= THRESHOLDS["bare_loop_rel"], (f"napkin {max(napkin_rates) / 1e12:.4g} vs bare "
                                                          f"{max(bare) / 1e12:.4g} TFLOP/s ({rel:+.1%})"), values

    rep.run("harness within 3% of a bare event-timed loop", vs_bare, needs_s=0,
            threshold=f"|napkin / bare - 1| <= {THRESHOLDS['bare_loop_rel']}")

    def clocks() -> tuple[bool | None, str, dict[str, Any]]:
        timings = state.get("bf16_timings")
        if not timings:
            return None, "the bf16 check did not run", {}
        t = timings[0]
        c = t.stats.clocks
        if dry:
            return None, "CPU: no GPU clocks to sample (dry run)", {}
        if c is None:
            return False, ("no clock readings during the timed calls: install nvidia-ml-py (pynvml) or put nvidia-smi "
                           "on PATH"), {}
        sustained = t.regime == "sustained" or args.device_warmup < 30
        values = c.model_dump() | {"regime": t.regime, "busy_before_s": t.busy_before_s, "flush": t.l2_flush}
        ok = c.samples >= 1 and c.sm_mhz_median is not None and sustained and t.l2_flush
        return ok, (f"{c.samples} readings ({c.source}): SM min {c.sm_mhz_min} / median {c.sm_mhz_median} MHz, "
                    f"{c.power_w_mean or float('nan'):.0f} W mean, capped: {c.capped}; regime {t.regime} after "
                    f"{t.busy_before_s:.1f} s; flushed {t.l2_flush}"), values

    rep.run("clocks sampled during the calls; sustained after the warm-up; caches flushed", clocks, needs_s=0,
            threshold="readings >= 1, regime sustained, flush on")

    # -- fp32 vs tf32 ---------------------------------------------------------------------------------------------
    def tf32() -> tuple[bool | None, str, dict[str, Any]]:
        m = torch.backends.cuda.matmul

        def switches() -> tuple[Any, Any]:
            try:
                flag = m.allow_tf32
            except RuntimeError:
                flag = "mixed"
            return flag, getattr(m, "fp32_precision", None)

        before = switches()
        fp32 = bench_matmul(size=gemm_n, dtype="fp32", device=dev, device_warmup_s=0.0,
                            **(quick if dry else dict(warmup_s=0.25, target_s=0.5)))
        after_fp32 = switches()
        values: dict[str, Any] = {"fp32_flops_per_s": fp32.timing.flops_per_s, "switches_before": before,
                                  "switches_after": after_fp32, "fp32_flags": fp32.environment.matmul_flags}
        if dry:
            with contextlib.suppress(Exception):
                GemmBench("tf32", "cpu")
            with matmul_precision(torch, DType.tf32):
                pass
            restored = switches() == before
            return restored, f"fp32 ran ({fp32.timing.flops_per_s / 1e9:.3g} GFLOP/s); tf32 is GPU-only; switches " \
                             f"restored: {restored}", values
        t = bench_matmul(size=gemm_n, dtype="tf32", device=dev, device_warmup_s=0.0, warmup_s=0.25, target_s=0.5)
        after = switches()
        speedup = t.timing.flops_per_s / fp32.timing.flops_per_s
        values.update(tf32_flops_per_s=t.timing.flops_per_s, speedup=speedup, switches_after=after,
                      tf32_flags=t.environment.matmul_flags)
        true_fp32 = fp32.environment.matmul_flags.get("allow_tf32") == "False"
        ok = speedup >= THRESHOLDS["tf32_speedup"] and after == before and true_fp32
        return ok, (f"fp32 {fp32.timing.flops_per_s / 1e12:.1f}, tf32 {t.timing.flops_per_s / 1e12:.1f} TFLOP/s: "
                    f"{speedup:.2f}x; switches restored: {after == before}; fp32 ran with allow_tf32=False: "
                    f"{true_fp32}"), values

    rep.run("fp32 (TF32 off) vs tf32, switches restored", tf32, needs_s=8,
            threshold=f"tf32 / fp32 >= {THRESHOLDS['tf32_speedup']}, switches unchanged")

    # -- fp8 -------------------------------------------------------------------------------------------------------
    def fp8() -> tuple[bool | None, str, dict[str, Any]]:
        r = bench_matmul(size=gemm_n, dtype="fp8", device=dev, device_warmup_s=0.0, **quick)
        values = {"flops_per_s": r.timing.flops_per_s, "mfu": r.mfu, "peak": r.peak.peak_flops_per_s,
                  "method": r.method[:2]}
        if dry:
            return True, f"{gemm_n}³ fp8 ran on the CPU ({r.timing.flops_per_s / 1e9:.3g} GFLOP/s)", values
        ok = r.mfu is not None and r.mfu >= THRESHOLDS["fp8_mfu"]
        mfu = "—" if r.mfu is None else f"{r.mfu:.3f}"
        return ok, (f"{gemm_n}³ fp8: {r.timing.flops_per_s / 1e12:.1f} TFLOP/s, MFU {mfu} "
                    f"(>= {THRESHOLDS['fp8_mfu']})"), values

    rep.run("fp8 GEMM reaches the peak fraction", fp8, needs_s=6, threshold=f"MFU >= {THRESHOLDS['fp8_mfu']}")

    def fp8_numerics() -> tuple[bool | None, str, dict[str, Any]]:
        n = SIZES["numerics"][i]
        errors = {}
        for fast in (False, True):
            bench = GemmBench("fp8", dev, fast_accum=fast, device_warmup_s=0.0, warmup_s=0.0, iters=1)
            run = bench.run_shape(GemmShape(m=n, n=n, k=n))  # K, N padded to 16 as napkin runs it
            fn, held = bench._gemm(run)
            fn()
            runtime.synchronizer(torch, bench.device)()
            a, b, c = held[0], held[1], held[2]
            ref = a.float() @ b.float()
            errors[f"use_fast_accum={fast}"] = float((c.float() - ref).norm() / ref.norm())
            del fn, held, a, b, c, ref
        odd = bench_matmul(size=SIZES["fp8_odd"][i], dtype="fp8", device=dev, device_warmup_s=0.0,
                           **(quick if dry else dict(warmup_s=0.05, target_s=0.2)))
        padded = odd.timing.ran_as is not None and odd.timing.ran_as.k % 16 == 0 and odd.timing.ran_as.n % 16 == 0
        values = {"relative_error": errors, "odd_shape_ran_as": str(odd.timing.ran_as), "padded": padded}
        err = errors["use_fast_accum=False"]
        ok = err <= THRESHOLDS["fp8_rel_error"] and padded
        return ok, (f"rel. error vs fp32 of the same fp8 inputs: {err:.2e} (fast accum "
                    f"{errors['use_fast_accum=True']:.2e}); {SIZES['fp8_odd'][i]}³ ran as {odd.timing.ran_as.m}×"
                    f"{odd.timing.ran_as.k} @ {odd.timing.ran_as.k}×{odd.timing.ran_as.n}"), values

    rep.run("fp8 numerics and padding to 16", fp8_numerics, needs_s=5,
            threshold=f"relative error <= {THRESHOLDS['fp8_rel_error']}, K and N padded")

    # -- memory: refused before allocating, a real OOM survived --------------------------------------------------------
    def too_large() -> tuple[bool | None, str, dict[str, Any]]:
        bench = GemmBench("bf16", dev, device_warmup_s=0.0, warmup_s=0.0, iters=1)
        huge = 2**20
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        try:
            bench.time((huge, huge, huge))
            return False, f"{huge}³ was not refused", {}
        except ShapeDoesNotFit as e:
            detail = str(e)
        grew = (torch.cuda.max_memory_allocated() - before) if cuda else 0
        return grew == 0, f"refused before allocating ({detail}); peak allocation grew by {grew} B", {"grew": grew}

    rep.run("a shape too large is refused before allocating", too_large, needs_s=2, threshold="no allocation")

    def real_oom() -> tuple[bool | None, str, dict[str, Any]]:
        import gc
        import weakref

        bench = GemmBench("bf16", dev, device_warmup_s=0.0, warmup_s=0.0, iters=2)
        refs: list[Any] = []
        if cuda:
            torch.cuda.synchronize()
            free0, _ = torch.cuda.mem_get_info()
            alloc0 = torch.cuda.memory_allocated()
            s = int(math.sqrt(0.2 * free0)) // 256 * 256  # each bf16 operand 2·s² = 0.4 x free: A, B fit, C not
            shape = (s, s, s)
            real_free = runtime.free_memory_bytes
            runtime.free_memory_bytes = lambda torch_, dev_: 1e18  # let it past the check: a real OOM
        else:  # the CPU cannot be run out of memory safely: inject CUDA's error after A and B are made
            real_gemm = bench._gemm

            def failing(shape_):
                fn, held = real_gemm(shape_)
                refs.extend(weakref.ref(t) for t in held)
                raise torch.OutOfMemoryError("CUDA out of memory (injected by the dry run)")

            bench._gemm = failing
            shape = (64, 64, 64)
        try:
            try:
                bench.time(shape)
                survived, why = False, "no out-of-memory happened"
            except ShapeDoesNotFit as e:
                survived, why = "out of memory" in str(e), str(e)
        finally:
            if cuda:
                runtime.free_memory_bytes = real_free
            else:
                bench._gemm = real_gemm
        gc.collect()
        values: dict[str, Any] = {"shape": shape, "error": why}
        if cuda:
            torch.cuda.synchronize()
            free1, _ = torch.cuda.mem_get_info()
            alloc1 = torch.cuda.memory_allocated()
            values.update(free_before=free0, free_after=free1, allocated_before=alloc0, allocated_after=alloc1)
            memory_back = alloc1 <= alloc0 + 64 * 2**20 and free1 >= free0 - 2**30
        else:
            memory_back = all(r() is None for r in refs)
            values["operands_freed"] = memory_back
        after = bench.time((256, 256, 256))
        ok = survived and memory_back and after.flops_per_s > 0
        return ok, (f"{shape[0]}³: {why[:90]}; memory back: {memory_back}; next shape ran: {after.flops_per_s > 0}"),\
            values

    rep.run("a real out-of-memory is survived", real_oom, needs_s=8, threshold="memory back, next shape runs")

    # -- validate ----------------------------------------------------------------------------------------------------
    def validate() -> tuple[bool | None, str, dict[str, Any]]:
        from napkin.bench.validate import validate_step

        r = validate_step(device=dev, warmup_s=0.0 if dry else 0.05, iters=3 if dry else 10)
        rows = {row.quantity: row for row in r.models[-1].rows}
        values = {"passed": r.passed, "rows": {k: [v.measured, v.predicted] for k, v in rows.items()}}
        if not cuda:
            return r.passed, f"validate passed on the CPU: {r.passed} (memory rows are CUDA-only)", values
        need = ("cuBLAS workspace", "allocated between steps", "peak rise during a step")
        have = all(k in rows for k in need)
        ws = rows["cuBLAS workspace"].measured if "cuBLAS workspace" in rows else None
        ok = r.passed and have and bool(ws)
        return ok, (f"passed {r.passed}; memory rows {'present' if have else 'MISSING'}; cuBLAS workspace "
                    f"{ws} B"), values

    rep.run("validate on this device, memory rows explained", validate, needs_s=10,
            threshold="passed, workspace named")

    # -- --shapes-from ------------------------------------------------------------------------------------------------
    def shapes_from(dtype: str) -> Callable[[], tuple[bool | None, str, dict[str, Any]]]:
        def check() -> tuple[bool | None, str, dict[str, Any]]:
            from napkin.bench.model_gemms import bench_model_gemms, model_gemm_shapes
            from napkin.bench.reference_specs import tiny_spec

            spec = tiny_spec() if dry else napkin.get_model("llama3-8b")
            batch, seq = (1, 9) if dry else (1, 4096)  # the dry run's T = 9: K of the weight gradients not /16
            r = bench_model_gemms(spec, batch=batch, seq=seq, dtype=dtype, device=dev, device_warmup_s=0.0,
                                  **(quick if dry else dict(warmup_s=0.05, target_s=0.2)))
            want = len(model_gemm_shapes(spec, batch, seq))
            values = {"rows": len(r.rows), "wanted": want, "skipped": [s.reason for s in r.skipped], "mfu": r.mfu,
                      "flops_per_s": r.flops_per_s, "coverage": r.coverage}
            ok = not r.skipped and len(r.rows) == want
            mfu = "—" if r.mfu is None else f"{r.mfu:.3f}"
            return ok, (f"{spec.name} {dtype}: {len(r.rows)}/{want} GEMMs timed, {len(r.skipped)} skipped, "
                        f"achievable MFU {mfu}"), values

        return check

    for dtype in ("bf16", "fp8"):
        rep.run(f"--shapes-from {'tiny' if dry else 'llama3-8b'} covers every GEMM in {dtype}", shapes_from(dtype),
                needs_s=10, threshold="no GEMM skipped")

    # -- bench-allreduce -----------------------------------------------------------------------------------------------
    def allreduce() -> tuple[bool | None, str, dict[str, Any]]:
        from napkin.bench.allreduce import bench_allreduce

        for var in ("RANK", "WORLD_SIZE"):
            os.environ.pop(var, None)
        gpus = torch.cuda.device_count() if cuda else 0
        if gpus >= 2:
            n, kw, sizes = min(gpus, 8), dict(device="cuda", backend="nccl"), [2**20, 64 * 2**20, 256 * 2**20]
        else:
            n, kw, sizes = 2, dict(device="cpu", backend="gloo"), ([4096, 65536] if dry else [2**20, 16 * 2**20])
        r = bench_allreduce(sizes, nproc=n, iters=5 if dry else 20, warmup_iters=1 if dry else 5, **kw)
        values = {"backend": r.environment.backend, "ranks": n,
                  "rows": [(row.size_bytes, row.busbw_bytes_per_s, row.host_bound) for row in r.rows]}
        ok = len(r.rows) == len(sizes) and all(row.busbw_bytes_per_s > 0 for row in r.rows)
        best = max(row.busbw_bytes_per_s for row in r.rows) / 1e9
        return ok, f"{r.environment.backend}, {n} ranks: {len(r.rows)} sizes, best busbw {best:.3g} GB/s", values

    rep.run("bench-allreduce runs", allreduce, needs_s=20, threshold="every size timed")

    dog.cancel()
    rep.write()
    n_pass = sum(c["status"] == "PASS" for c in rep.checks)
    n_ran = sum(c["status"] == "RAN" for c in rep.checks)
    ran = f", {n_ran} ran outside their threshold (RAN)" if n_ran else ""
    print(f"{'PASS' if rep.passed() else 'FAIL'}  gpu_check: {n_pass}/{len(rep.checks)} checks passed{ran} in "
          f"{time.monotonic() - rep.start:.0f} s ({'dry run, no thresholds' if dry else 'GPU'}); report: {out}",
          flush=True)
    return 0 if rep.passed() else 1


if __name__ == "__main__":
    sys.exit(main())
