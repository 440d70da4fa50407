"""Tables for the measured mode: bench-matmul (one shape or a sweep) and bench-allreduce."""

from __future__ import annotations

from typing import Any

from napkin.render import fmt, kv_table, renders
from napkin.units import format_bytes, format_duration, format_rate, rate_unit


def _environment(env: Any, title: str) -> Any:
    device = f"{env.device_name} ({env.device})" + (f" → {env.hardware}" if env.hardware else "")
    versions = [f"torch {env.torch_version}"]
    if env.cuda_version:
        versions.append(f"CUDA {env.cuda_version}")
    if env.hip_version:
        versions.append(f"HIP {env.hip_version}")
    rows = [("device", device)]
    if env.compute_capability:
        extras = [f"capability {env.compute_capability}"]
        if env.multiprocessors:
            extras.append(f"{env.multiprocessors} SMs")
        if env.l2_cache_bytes:
            extras.append(f"L2 {format_bytes(env.l2_cache_bytes, binary=False)}")
        if env.device_memory_bytes:
            extras.append(f"memory {format_bytes(env.device_memory_bytes, binary=False)}")
        rows.append(("device properties", ", ".join(extras)))
    else:
        rows.append(("CPU threads", str(env.cpu_threads)))
    c = env.clocks
    if c is not None:
        if c.driver_version:
            versions.append(f"driver {c.driver_version}")
        rows.append(("clocks after timing", _clocks(c)))
    rows.append(("software", ", ".join(versions) + f", Python {env.python_version}, {env.platform}"))
    libraries = getattr(env, "libraries", None)
    if libraries:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in libraries.items())))
    flags = getattr(env, "matmul_flags", None)
    if flags:
        rows.append(("matmul switches", ", ".join(f"{k}={v}" for k, v in flags.items())))
    if env.dtype is not None:
        rows.append(("dtype", env.dtype.value))
    return kv_table(title, rows)


def _clocks(c: Any) -> str:
    parts = []
    if c.sm_mhz is not None:
        parts.append(f"SM {c.sm_mhz:g}" + (f" / {c.max_sm_mhz:g} max" if c.max_sm_mhz else "") + " MHz")
    if c.memory_mhz is not None:
        parts.append(f"memory {c.memory_mhz:g} MHz")
    if c.power_w is not None:
        parts.append(f"{c.power_w:.0f} W" + (f" of {c.power_limit_w:.0f} W" if c.power_limit_w else ""))
    if c.temperature_c is not None:
        parts.append(f"{c.temperature_c:g} °C")
    return ", ".join(parts) + f" ({c.source})" if parts else f"unreadable ({c.source})"


def during(c: Any) -> str:
    """Clocks sampled while the timed calls ran (a ClockSummary): min / median SM clock, mean power, capping."""
    parts = []
    if c.sm_mhz_median is not None:
        top = f" (max {c.max_sm_mhz:g})" if c.max_sm_mhz else ""
        parts.append(f"SM min {c.sm_mhz_min:g} · median {c.sm_mhz_median:g} MHz{top}")
    if c.power_w_mean is not None:
        parts.append(f"{c.power_w_mean:.0f} W mean" + (f" of {c.power_limit_w:.0f} W" if c.power_limit_w else ""))
    if c.temperature_c_max is not None:
        parts.append(f"≤ {c.temperature_c_max:g} °C")
    if c.capped:
        parts.append(f"[bold yellow]{c.capped}-capped[/bold yellow]" + (f" ({', '.join(c.reasons)})" if c.reasons
                                                                          else ""))
    return " · ".join(parts) + f"  ({c.samples} readings, {c.source})"


def _method(lines: list[str]) -> str:
    return "[bold]method[/bold]\n" + "\n".join(f"[dim]• {ln}[/dim]" for ln in lines)


def _peak_from(peak: Any) -> str:
    return peak.hardware or ("--peak" if peak.source == "--peak (given)" else peak.source)


def _mfu(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@renders("MatmulBenchResult")
def matmul(r: Any) -> list[Any]:
    t, s = r.timing, r.timing.stats
    peak = r.peak
    ran = f"ran as {t.ran_as.m}×{t.ran_as.k} @ {t.ran_as.k}×{t.ran_as.n}, " if t.ran_as is not None and \
        (t.ran_as.k, t.ran_as.n) != (t.shape.k, t.shape.n) else ""
    rows = [
        ("shape", f"{t.shape}  ({ran}A+B+C {format_bytes(t.operand_bytes, binary=False)})"),
        ("time per call", f"min {format_duration(s.min_s)} · median {format_duration(s.median_s)} · "
                          f"max {format_duration(s.max_s)}  ({s.iters} calls)"),
        ("achieved (median)",
         f"[bold]{format_rate(t.flops_per_s)}[/bold]  (fastest call {format_rate(t.best_flops_per_s)})"),
    ]
    if s.clocks is not None:
        rows.append(("clocks during timing", during(s.clocks)))
    if t.regime is not None:
        rows.append(("regime", f"{t.regime} (timed after {t.busy_before_s:.1f} s of load)"))
    if peak.peak_flops_per_s is not None:
        rows.append((f"dense {t.dtype.value} peak", f"{fmt(peak.peak_flops_per_s, 'FLOP/s')}  ({_peak_from(peak)})"))
        rows.append(("MFU", f"[bold]{_mfu(r.mfu)}[/bold]" + ("" if r.mfu is not None else
                                                                "  (the achieved rate is above this peak: see the "
                                                                "note)")))
    else:
        rows.append(("MFU", "— (no peak: see the note)"))
    return [_environment(r.environment, "napkin bench-matmul"), kv_table("", rows), _method(r.method)]


@renders("MatmulSweepResult")
def sweep(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    best = r.best.timing.shape if r.best else None
    square = all(row.timing.shape.m == row.timing.shape.n == row.timing.shape.k for row in r.rows)
    clocks = any(row.timing.stats.clocks is not None for row in r.rows)
    regimes = any(row.timing.regime is not None for row in r.rows)
    t = Table(title=f"sweep: {'square ' if square else ''}GEMMs (median of the timed calls)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False)
    scale, rate = rate_unit([row.timing.flops_per_s for row in r.rows])  # TFLOP/s on a GPU, GFLOP/s on a CPU
    first = "M=N=K" if square else "M×N×K"
    names = [first, "median", "min", rate, "MFU", "L2 flush"] + (["SM MHz", "W"] if clocks else []) + \
        (["regime"] if regimes else [])
    for name in names:
        t.add_column(name, justify="left" if name == first else "right")
    for row in r.rows:
        g, st = row.timing, row.timing.stats
        style = "bold green" if g.shape == best else None
        dims = str(g.shape.m) if square else f"{g.shape.m}×{g.shape.n}×{g.shape.k}"
        cells = [dims, format_duration(st.median_s), format_duration(st.min_s), f"{g.flops_per_s / scale:.4g}",
                 _mfu(row.mfu), "yes" if g.l2_flush else "no"]
        if clocks:
            c = st.clocks
            cells += ["—" if c is None or c.sm_mhz_median is None else f"{c.sm_mhz_median:g}",
                      "—" if c is None or c.power_w_mean is None else f"{c.power_w_mean:.0f}" +
                      ("*" if c.capped else "")]
        if regimes:
            cells.append(g.regime or "—")
        t.add_row(*cells, style=style)
    summary = []
    if r.best is not None:
        b = r.best.timing
        summary.append(("best shape", f"{b.shape}: {format_rate(b.flops_per_s)}"
                        + (f", MFU {_mfu(r.best.mfu)}" if r.best.mfu is not None else "")))
        summary.append(("spread (best / worst)", f"{r.spread:.3g}×"))
    if r.peak.peak_flops_per_s is not None:
        summary.append((f"dense peak ({_peak_from(r.peak)})", fmt(r.peak.peak_flops_per_s, "FLOP/s")))
    summary.append(("shapes", f"{len(r.rows)} timed, {len(r.skipped)} skipped"
                    + (" (interrupted)" if r.interrupted else "")))
    if any(row.timing.stats.clocks is not None and row.timing.stats.clocks.capped for row in r.rows):
        summary.append(("W *", "the GPU was power- or thermally-capped during those calls"))
    return [_environment(r.environment, "napkin bench-matmul --sweep"), t, kv_table("", summary), _method(r.method)]


@renders("AllreduceBenchResult")
def allreduce(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    e = r.environment
    head = [("backend", f"{e.backend}, {e.world_size} ranks ({e.launcher})"),
            ("device", f"{e.device_name} ({e.device} on rank 0)"),
            ("software", ", ".join(x for x in (f"torch {e.torch_version}", e.cuda_version and f"CUDA {e.cuda_version}",
                                                  e.nccl_version and f"NCCL {e.nccl_version}") if x))]
    t = Table(title=f"all-reduce (sum, in place), {r.iters} timed calls per size", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("size (B)", "count", "dtype", "time", "slowest rank", "algbw GB/s", "busbw GB/s"):
        t.add_column(name, justify="right")
    for row in r.rows:
        mark = " *" if row.host_bound else ""
        t.add_row(f"{row.size_bytes:,.0f}", f"{row.count:,}", row.dtype.value, format_duration(row.time_s) + mark,
                  format_duration(row.max_time_s), f"{row.algbw_bytes_per_s / 1e9:.3f}",
                  f"[bold]{row.busbw_bytes_per_s / 1e9:.3f}[/bold]")
    parts: list[Any] = [kv_table("napkin bench-allreduce", head), t]
    if r.interrupted:
        parts.append(f"[bold yellow]interrupted (Ctrl-C): {len(r.rows)} size(s) done[/bold yellow]")
    return parts + [_method(r.method)]


@renders("ModelGemmsResult")
def model_gemms(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    i = r.inputs
    t = Table(title=f"{i.model}: its GEMMs at T = {i.batch} × {i.seq} = {r.tokens:,} tokens ({i.dtype.value}, median "
                    "of the timed calls)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    has_mfu = r.peak.peak_flops_per_s is not None
    scale, rate = rate_unit([row.timing.flops_per_s for row in r.rows])  # TFLOP/s on a GPU, GFLOP/s on a CPU
    for name in ("GEMM", "pass", "M×N×K", "×/step", "median", rate, "MFU", "FLOPs"):
        if name != "MFU" or has_mfu:
            t.add_column(name, justify="left" if name in ("GEMM", "pass") else "right", no_wrap=name != "GEMM",
                         overflow="fold")
    short = {"forward": "fwd", "input grad": "dX", "weight grad": "dW"}
    for labels, rows in _same_gemms(r.rows):
        row, s = rows[0], rows[0].shape
        cells = [labels, short[row.phase], f"{s.m}×{s.n}×{s.k}", str(sum(x.count for x in rows)),
                 format_duration(row.timing.stats.median_s), f"{row.timing.flops_per_s / scale:.4g}"]
        if has_mfu:
            cells.append(_mfu(row.mfu))
        t.add_row(*cells, f"{sum(x.flops for x in rows) / r.gemm_flops:.1%}")
    summary = [("GEMM FLOPs per step", f"{fmt(r.gemm_flops, 'FLOP')}, {r.coverage:.1%} of the model's (the rest: "
                                       "QKᵀ and ·V)"),
               ("GEMM time per step", format_duration(r.gemm_time_s)),
               ("achieved (FLOP-weighted)", f"[bold]{format_rate(r.flops_per_s)}[/bold]")]
    if has_mfu:
        summary.append((f"dense {i.dtype.value} peak", f"{fmt(r.peak.peak_flops_per_s, 'FLOP/s')}  "
                                                       f"({_peak_from(r.peak)})"))
        summary.append(("achievable MFU for this model", f"[bold]{_mfu(r.mfu)}[/bold]"))
    else:
        summary.append(("achievable MFU for this model", "— (no peak: see the note)"))
    return [_environment(r.environment, "napkin bench-matmul --shapes-from"), t, kv_table("", summary),
            _method(r.method)]


def _same_gemms(rows: list[Any]) -> list[tuple[str, list[Any]]]:
    """Rows of one pass and one shape merged (attention.q and .o of an MHA layer: 'attention.q/o'), in order."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.phase, row.shape.m, row.shape.n, row.shape.k), []).append(row)
    out = []
    for members in groups.values():
        labels = [m.label for m in members]
        prefix = labels[0].rsplit(".", 1)[0]
        if len(labels) > 1 and all(x.rsplit(".", 1)[0] == prefix for x in labels):
            name = prefix + "." + "/".join(x.rsplit(".", 1)[1] for x in labels)
        else:
            name = ", ".join(labels)
        out.append((name, members))
    order = {id(m): n for n, m in enumerate(rows)}
    out.sort(key=lambda item: (order[id(item[1][0])]))
    return out
