"""Tables for `napkin validate`: per model, each measured figure beside napkin's prediction and the error."""

from __future__ import annotations

from typing import Any

from napkin.render import kv_table, renders
from napkin.render.bench import _environment, _method, _peak_from, during
from napkin.units import format_duration, format_rate


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f} B" if unit == "B" else f"{v:,.0f}"  # exact: "exact" must be checkable by eye


def _error(row: Any) -> str:
    if row.predicted is None:
        return "[dim]not predicted[/dim]"
    if row.predicted == row.measured:
        return "[green]exact[/green]"
    if row.rel_error is None:
        return "—"
    pct = f"{row.rel_error * 100:+.3g}%"
    return f"{row.predicted - row.measured:+,.0f} B ({pct})" if row.unit == "B" else pct


def _model(c: Any, lora: Any = None) -> list[Any]:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    shape = f"B={c.batch}" + (f", s={c.seq}" if c.kind == "transformer" else "")
    title = f"{escape(c.model)} — {escape(c.display_name)}: {shape}, {c.params:,} params, fp32 AdamW"
    if c.finetune == "lora" and lora is not None:
        title += f" on rank-{lora.rank} LoRA adapters ({c.trainable_params:,} trainable), the base frozen"
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("", "measured", "napkin", "napkin vs measured"):
        t.add_column(name, justify="left" if not name else "right", no_wrap=bool(name))
    notes = []
    for row in c.rows:
        mark = ""
        if row.note:
            notes.append(row.note)
            mark = f" [dim]({len(notes)})[/dim]"
        t.add_row(row.quantity + mark, _value(row.measured, row.unit),
                  _value(row.predicted, row.unit), _error(row))
    s = c.timing
    rows = [("step time", f"min {format_duration(s.min_s)} · median {format_duration(s.median_s)} · max "
                          f"{format_duration(s.max_s)}  ({s.iters} steps)"),
            *([("clocks during timing", during(s.clocks))] if s.clocks is not None else []),
            ("achieved (median)",
             f"[bold]{format_rate(c.flops_per_s)}[/bold]  ({c.flops_per_step:,.0f} FLOPs per step)"),
            ("MFU", "—" if c.mfu is None else f"[bold]{c.mfu:.4f}[/bold]")]
    ok = "[green]✓[/green]"
    bad = "[red]✗[/red]"
    state = "trainable count and model state exact" if c.finetune == "lora" else "model state exact"
    rows.append(("check", f"FLOPs within 1% {ok if c.flops_within_tolerance else bad} · {state} "
                          f"{ok if c.model_state_exact else bad}"))
    out: list[Any] = [t]
    out += [f"[dim]  ({n}) {text}[/dim]" for n, text in enumerate(notes, 1)]
    out.append(kv_table("", rows))
    return out


@renders("ValidateResult")
def validate(r: Any) -> list[Any]:
    parts: list[Any] = [_environment(r.environment, "napkin validate")]
    if r.peak.peak_flops_per_s is not None:
        from napkin.render import fmt

        parts.append(kv_table("", [("dense fp32 peak", f"{fmt(r.peak.peak_flops_per_s, 'FLOP/s')}  "
                                                         f"({_peak_from(r.peak)})")]))
    for c in r.models:
        parts.append("")
        parts += _model(c, r.inputs.lora)
    verdict = ("[bold green]PASS[/bold green]: FLOPs within 1% and model state exact for every model" if r.passed
               else "[bold red]FAIL[/bold red]: see the ✗ above")
    parts += ["", verdict, _method(r.method)]
    return parts
