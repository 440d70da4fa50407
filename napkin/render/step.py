"""Tables for `napkin step-time`: the step, its MFU, and where the time goes (a table and a bar)."""

from __future__ import annotations

from typing import Any

from napkin.render import fmt, kv_table, renders
from napkin.units import format_bytes, format_days, format_duration

BAR_WIDTH = 60
COLORS = {"compute_gemm": "blue", "compute_attention": "cyan", "compute_scan": "bright_cyan",
          "compute_memory_bound": "bright_blue",
          "recompute": "magenta", "launch_overhead": "white", "tp_comm": "yellow", "cp_comm": "bright_yellow",
          "ep_comm": "red", "zero3_comm": "bright_red", "pp_bubble": "bright_black", "pp_comm": "green",
          "dp_comm": "bright_green", "optimizer": "bright_magenta"}
# Without colour (a pipe, NO_COLOR) each term is drawn in its own letter, the table's marks saying which is which.
GLYPHS = {"compute_gemm": "G", "compute_attention": "A", "compute_scan": "S", "compute_memory_bound": "M",
          "recompute": "R",
          "launch_overhead": "L", "tp_comm": "T", "cp_comm": "C", "ep_comm": "E", "zero3_comm": "Z",
          "pp_bubble": "B", "pp_comm": "P", "dp_comm": "D", "optimizer": "O"}


def bar(breakdown: dict[str, float], total: float) -> Any:
    """The step as one stacked bar: one colour per term, or without colour one letter per term (GGGGAAMMMT...)."""
    from napkin.render import StackedBar

    parts = [(k, round(BAR_WIDTH * v / total) if total else 0) for k, v in breakdown.items()]
    return StackedBar([(k, n) for k, n in parts if n], COLORS, GLYPHS)


def breakdown_table(r: Any) -> Any:
    from rich.table import Table

    from napkin.accounting.step_time import TERM_LABELS
    from napkin.render import Mark

    t = Table(title="where the step goes", title_justify="left")
    t.add_column("term")
    t.add_column("time per step", justify="right")
    t.add_column("share", justify="right")
    for k, v in r.breakdown.items():
        if v:
            t.add_row(Mark(TERM_LABELS[k], COLORS.get(k, "white"), GLYPHS.get(k, "?")), format_duration(v),
                      f"{v / r.step_time_s:.1%}")
    t.add_row("[bold]step[/bold]", f"[bold]{format_duration(r.step_time_s)}[/bold]", "100%")
    return t


def interval_text(r: Any) -> str:
    """A step's interval beside its time: '  (8.9–10.3 s, p10–p90 of held-back errors)'; the regime is in the JSON
    (error_bar.regime) and, outside every calibrated one, in a note."""
    b = r.error_bar
    if b is None:
        return ""
    lo, hi = b.step_time_s
    return f"  ({format_duration(lo)}–{format_duration(hi)}, " + (
        "p10–p90 of held-back errors)" if b.calibrated else "uncalibrated: the stack's widest)")


@renders("StepTimeResult")
def step_time(r: Any) -> list[Any]:
    from napkin.accounting.step_time import DEFAULT_STACK

    i = r.inputs
    c = i.cluster
    rows = [
        ("model", f"{i.model}, b={i.micro_batch} × s={i.seq}, global batch {i.global_batch} ({r.micro_batches} "
                  f"micro-batch{'es' if r.micro_batches != 1 else ''} per pipeline)"),
        ("hardware", f"{i.layout.gpus} × {i.gpu}, {i.precision}, {c.node_size} per node "
                     f"({c.intra_node_bytes_per_s / 1e9:g} GB/s in, {c.inter_node_bytes_per_s / 1e9:g} GB/s out "
                     "per GPU)"),
        ("layout", r.layout + f", recompute {i.recompute}" + ("" if i.flash else ", no flash attention")),
        ("stack", i.stack + ("  (the default; --stack pytorch-fsdp for FSDP)" if i.stack == DEFAULT_STACK else "")),
        ("step time", f"{format_duration(r.step_time_s)}" + interval_text(r)),
        ("tokens per second", f"{r.tokens_per_s:,.0f}"),
        ("MFU", f"{r.mfu:.3f}" + (f" ({r.error_bar.mfu[0]:.3f}–{r.error_bar.mfu[1]:.3f})" if r.error_bar else "")
         + f"  ({r.model_tflops_per_gpu:.1f} TFLOP/s per GPU of {fmt(r.peak_flops_per_s, 'FLOP/s')})"),
        ("HFU", f"{r.hfu:.3f}"),
        ("memory per GPU", f"{format_bytes(r.memory_bytes)} of {format_bytes(r.memory_usable_bytes)}"
                           + ("" if r.fits else "  [bold red]does not fit[/bold red]")),
    ]
    return [kv_table("napkin step-time", rows), breakdown_table(r), bar(r.breakdown, r.step_time_s)]


@renders("PlanResult")
def plan(r: Any) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    from napkin.accounting.step_time import DEFAULT_STACK, TERM_SHORT

    i = r.inputs
    t = Table(title=f"napkin plan: {i.model} on {r.gpus} × {i.gpu}, global batch {i.global_batch} × s={i.seq} "
                    f"({r.examined:,} layouts examined, {r.timed:,} timed)", title_justify="left")
    for col, just in (("#", "right"), ("layout", "left"), ("b", "right"), ("recomp.", "left"), ("step", "right"),
                      ("tokens/s", "right"), ("MFU", "right"), ("GB/GPU", "right"), ("headroom", "right"),
                      ("largest term", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for n, row in enumerate(r.top, 1):
        t.add_row(str(n), row.layout.describe(), str(row.micro_batch), row.recompute, format_duration(row.step_time_s),
                  f"{row.tokens_per_s:,.0f}", f"{row.mfu:.3f}", f"{row.memory_bytes / 1e9:.1f}",
                  f"{row.headroom_bytes / 1e9:.1f}", f"{TERM_SHORT[row.limiter]} {row.limiter_share:.0%}")
    w = r.winner
    out: list[Any] = [t, Text(f"winner: {w.layout}, micro-batch {w.inputs.micro_batch}, recompute {w.inputs.recompute}",
                              style="bold"),
                      Text(f"stack {i.stack}" + ("" if i.stack != DEFAULT_STACK else " (the default; --stack "
                                                                                       "pytorch-fsdp for FSDP)")
                           + f"; winner's step {format_duration(w.step_time_s)}{interval_text(w)}")]
    out += [breakdown_table(w), bar(w.breakdown, w.step_time_s)]
    out += [Text(f"why: {line}") for line in r.why]
    if r.days is not None:
        out.append(kv_table("", [("training time at the winner's step", format_days(r.days)),
                                 ("GPU-hours", f"{r.gpu_hours:,.0f} GPU·h")]))
    out.append(Text("Megatron-LM:", style="bold"))
    out.append(Text(r.megatron_flags))
    out.append(Text("torchtitan (job config TOML):", style="bold"))
    out.append(Text(r.torchtitan))
    return out
