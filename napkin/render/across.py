"""The `--gpu all` table: one row per catalog GPU, the columns of the command asked."""

from __future__ import annotations

from typing import Any

from napkin.render import renders
from napkin.units import format_bandwidth, format_bytes, format_count, format_duration, format_rate


def _columns(command: str) -> list[tuple[str, Any]]:
    if command == "train-time":
        return [("days", lambda r: f"{r.days:,.2f}"), ("GPU-hours", lambda r: f"{r.gpu_hours:,.0f}"),
                ("cost", lambda r: "—" if r.cost is None else f"${r.cost:,.0f}"),
                ("energy kWh", lambda r: "—" if r.energy_kwh is None else f"{r.energy_kwh:,.0f}")]
    if command == "inference":
        return [("fits", lambda r: "yes" if r.fits else "no"), ("memory/GPU", lambda r: format_bytes(r.total_bytes)),
                ("TTFT", lambda r: format_duration(r.ttft_s)),
                ("decode tokens/s", lambda r: f"{r.tokens_per_s_total:,.0f}")]
    if command == "step-time":
        return [("step", lambda r: format_duration(r.step_time_s)), ("tokens/s", lambda r: f"{r.tokens_per_s:,.0f}"),
                ("MFU", lambda r: f"{r.mfu:.3f}"), ("memory/GPU", lambda r: format_bytes(r.memory_bytes)),
                ("fits", lambda r: "yes" if r.fits else "no")]
    if command == "plan":
        return [("GPUs", lambda r: f"{r.gpus:,}"), ("fastest layout", lambda r: r.top[0].describe),
                ("step", lambda r: format_duration(r.winner.step_time_s)), ("MFU", lambda r: f"{r.winner.mfu:.3f}"),
                ("days", lambda r: "—" if r.days is None else f"{r.days:,.2f}")]
    if command == "budget":
        return [("days", lambda r: "—" if r.days is None else f"{r.days:,.2f}"),
                ("FLOPs", lambda r: f"{r.total_flops:.3e}"), ("GPU-hours", lambda r: f"{r.gpu_hours:,.0f}"),
                ("cost", lambda r: "—" if r.cost is None else f"${r.cost:,.0f}"),
                ("optimal N", lambda r: format_count(r.optimal_params))]
    if command == "max-model":
        return [("memory/GPU", lambda r: format_bytes(_usable(r))),
                ("largest model", lambda r: format_count(_largest(r), "params"))]
    if command == "roofline":
        return [("peak", lambda r: format_rate(r.peak_flops_per_s)),
                ("bandwidth", lambda r: format_bandwidth(r.bandwidth_bytes_per_s)),
                ("ridge FLOP/B", lambda r: f"{r.ridge_flops_per_byte:,.0f}")]
    return []


def _usable(r: Any) -> float:
    """Memory per GPU of a max-model answer: model state only, or a family's ledger."""
    if hasattr(r, "usable_bytes_per_gpu"):
        return float(r.usable_bytes_per_gpu)
    return float(r.ledger.usable_bytes) if r.ledger is not None else 0.0


def _largest(r: Any) -> float:
    return float(r.max_params if hasattr(r, "max_params") else r.params)


@renders("AcrossGpusResult")
def across(r: Any) -> list[Any]:
    from rich.table import Table

    cols = _columns(r.inputs.command)
    t = Table(title=f"napkin {r.inputs.command} on every catalog GPU", title_justify="left")
    t.add_column("gpu")
    for name, _ in cols:
        t.add_column(name, justify="right")
    for row in r.rows:
        if row.error:
            t.add_row(f"[dim]{row.gpu}[/dim]", *["—"] * len(cols))
        else:
            t.add_row(row.gpu, *[fn(row.result) for _, fn in cols])
    out: list[Any] = [t]
    from rich.text import Text

    for row in r.rows:
        if row.error:
            from napkin.errors import for_cli  # the reason as the flags a reader of this table types

            out.append(Text(f"— {row.gpu}: {for_cli(row.error)}", style="dim"))
    return out
