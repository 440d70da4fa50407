"""Tables for the catalogs (hardware list / show)."""

from __future__ import annotations

from typing import Any

from napkin.render import fmt, kv_table, renders, safe
from napkin.specs.dtypes import DType

# fp16 equals bf16 and int8 equals fp8 on every catalog part that has both; `hardware show` lists all.
_COLUMNS = [(DType.fp32, False), (DType.bf16, False), (DType.bf16, True), (DType.fp8, False),
            (DType.fp8, True)]


def _tflops(spec: Any, d: DType, sparse: bool) -> str:
    if d not in spec.peak_flops_per_s:
        return "–"
    if sparse and d not in spec.sparse_dtypes:
        return "–"
    return f"{spec.peak(d, sparse) / 1e12:.5g}"


@renders("HardwareList")
def hardware_list(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    t = Table(title="hardware catalog: peak TFLOP/s (sparse = 2:4 structured sparsity)", title_justify="left",
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    t.add_column("name", no_wrap=True)
    t.add_column("mem\nGB", justify="right", no_wrap=True)
    t.add_column("mem BW\nTB/s", justify="right", no_wrap=True)
    for d, sparse in _COLUMNS:
        t.add_column(d.value + ("\nsparse" if sparse else "\ndense"), justify="right", no_wrap=True)
    t.add_column("TDP\nW", justify="right", no_wrap=True)
    for s in r.specs:
        t.add_row(safe(s.name), f"{s.memory_bytes / 1e9:g}", f"{s.memory_bandwidth_bytes_per_s / 1e12:g}",
                  *[_tflops(s, d, sp) for d, sp in _COLUMNS], "–" if s.tdp_w is None else f"{s.tdp_w:g}")
    short = ", ".join(f"{safe(a)} → {safe(s.name)}" for s, names in zip(r.specs, r.short_names, strict=True)
                      for a in names if len(a) <= 5)
    notes = ("[dim]fp16 = bf16 and int8 (TOPS) = fp8 where a part has both; tf32 = bf16 / 2; `napkin hardware show "
             "NAME` lists every dtype, fp64 and fp4 included.[/dim]")
    return [t, f"[dim]short names: {short}[/dim]", notes]


def _step_time_rows(s: Any) -> list[tuple[str, str]]:
    """The figures a step-time model reads: matmul ceiling, scale-up domain, links (per GPU, per direction)."""
    from napkin.units import format_bandwidth, format_rate

    rows = []
    if s.achievable_matmul_flops_per_s is not None:
        rows.append(("matmul ceiling (MAMF)", f"{s.matmul_efficiency:g} × dense {s.matmul_dtype.value} = "
                                              f"{format_rate(s.achievable_matmul_flops_per_s)}"))
    else:
        rows.append(("matmul ceiling (MAMF)", "not measured"))
    if s.node_gpus:
        rows.append(("scale-up domain", f"{s.node_gpus} GPUs"))
    if s.interconnect_bandwidth_bytes_per_s:
        link = f"{format_bandwidth(s.interconnect_bandwidth_bytes_per_s)} both directions"
        rows.append(("scale-up link", f"{s.interconnect} {link}" if s.interconnect else link))
    for label, value, bits in (("scale-up, per direction", s.scale_up_bandwidth_bytes_per_s, False),
                               ("scale-out, per direction", s.scale_out_bandwidth_bytes_per_s, True),
                               ("host link, per direction", s.host_link_bandwidth_bytes_per_s, False)):
        if value is not None:
            rows.append((label, format_bandwidth(value, bits=bits) + " per GPU"))
    return rows


@renders("HardwareShow")
def hardware_show(r: Any) -> list[Any]:
    from rich.table import Table

    s = r.spec
    rows = [
        ("name", safe(s.name)),
        ("product", safe(s.display_name + (f" ({s.architecture})" if s.architecture else ""))),
        ("aliases", safe(", ".join(s.aliases)) or "–"),
        ("memory (nominal)", fmt(s.memory_bytes, "B") + (f" {s.memory_type}" if s.memory_type else "")),
    ]
    if s.memory_nvidia_smi_mib:
        rows.append(("memory (nvidia-smi)", f"{s.memory_nvidia_smi_mib:g} MiB"))
    rows.append(("memory bandwidth", fmt(s.memory_bandwidth_bytes_per_s, "B/s")))
    if s.sm_count:
        rows.append(("compute units" if s.vendor == "amd" else "SMs", f"{s.sm_count}"))
    rows += _step_time_rows(s)
    rows.append(("TDP", "not published" if s.tdp_w is None else f"{s.tdp_w:g} W"))
    rows.append(("spec file", safe(r.file)))
    t = Table(title="peak compute", title_justify="left")
    t.add_column("dtype")
    t.add_column("dense TFLOP/s", justify="right")
    t.add_column("sparse TFLOP/s", justify="right")
    t.add_column("ridge point (FLOP/byte)", justify="right")
    for p in r.peaks:
        sparse = f"{p.sparse_flops_per_s / 1e12:g}" if p.sparse_flops_per_s is not None else "–"
        t.add_row(p.dtype.value, f"{p.dense_flops_per_s / 1e12:g}", sparse, f"{p.ridge_flops_per_byte:.0f}")
    parts = [kv_table(safe(s.display_name), rows, justify="left"), t]
    if s.notes:
        parts.append("\n".join(f"[dim]• {safe(n)}[/dim]" for n in s.notes))
    parts.append("[dim]sources: " + safe("; ".join(s.sources)) + "[/dim]")
    return parts
