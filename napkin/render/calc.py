"""Tables for train-time, budget and max-model."""

from __future__ import annotations

from typing import Any

from napkin.render import fmt, kv_table, renders
from napkin.units import format_count, format_days, format_duration


def _six(r: Any) -> str:
    """'6ND = …', and for a mixture of experts '6·N_active·D = …' beside it."""
    out = f"6ND = {fmt(r.six_nd, 'FLOP')}"
    if r.six_n_active_d is not None and r.six_n_active_d != r.six_nd:
        out += f", 6·N_active·D = {fmt(r.six_n_active_d, 'FLOP')}"
    return out


def _bar(r: Any) -> str:
    """'  (lo–hi s, 10th–90th percentile ...)' for a result carrying a step's error bar."""
    b = getattr(r, "error_bar", None)
    if b is None:
        return ""
    lo, hi = b.step_time_s
    return f"  ({lo:.3g}–{hi:.3g} s{'' if b.calibrated else ', uncalibrated regime'})"


@renders("TrainTimeResult")
def train_time(r: Any) -> list[Any]:
    i = r.inputs
    kind = "sparse" if i.sparse else "dense"
    rows = []
    if i.params is not None and i.flops is None:
        rows += [("parameters N", format_count(i.params, "params")), ("tokens D", format_count(i.tokens, "tokens"))]
    if getattr(i, "model", None):  # --model: exact FLOPs of the architecture (napkin flops)
        rows += [("model", i.model), ("tokens D", format_count(i.tokens, "tokens")),
                 ("training FLOPs", fmt(r.total_flops, "FLOP") + f"  (exact; {_six(r)})")]
        if i.recompute != "none":
            rows.append((f"hardware FLOPs (recompute {i.recompute})", fmt(r.hardware_flops, "FLOP")))
    else:
        rows.append(("training FLOPs", fmt(r.total_flops, "FLOP") + ("" if i.flops else "  (6ND)")))
        if r.hardware_flops is not None:
            rows.append(("hardware FLOPs (full recompute)", fmt(r.hardware_flops, "FLOP") + "  (8ND)"))
    rows += [
        ("hardware", f"{i.gpus} × {i.gpu}, {i.dtype.value} {kind} peak {fmt(r.peak_flops_per_s, 'FLOP/s')}"),
        ("HFU", f"{i.hfu:g}") if getattr(i, "hfu", None) else
        (("MFU", f"{i.mfu:.3g}") if r.layout is None else (f"MFU (step-time, {r.layout})", f"{i.mfu:.3f}")),
        ("cluster throughput", fmt(r.cluster_flops_per_s, "FLOP/s")),
        *([("predicted step", f"{r.step_time_s:.3g} s" + _bar(r))] if r.step_time_s is not None else []),
        ("FLOPs per day", fmt(r.flops_per_day, "FLOP/day")),
        ("training time", format_duration(r.time_s) + (
            f"  ({format_duration(r.time_s * r.error_bar.step_time_s[0] / r.step_time_s)}–"
            f"{format_duration(r.time_s * r.error_bar.step_time_s[1] / r.step_time_s)})"
            if r.error_bar is not None and r.step_time_s else "")),
        ("GPU-hours", fmt(r.gpu_hours, "GPU·h")),
    ]
    if r.cost is not None:
        rows.append(("cost", fmt(r.cost, "$")))
    if r.energy_kwh is not None:
        rows.append(("energy (at TDP" + (f", PUE {i.pue:g})" if i.pue != 1 else ")"), fmt(r.energy_kwh, "kWh")))
    return [kv_table("napkin train-time", rows)]


@renders("BudgetResult")
def budget(r: Any) -> list[Any]:
    i = r.inputs
    count = f"{i.gpus} × " if i.gpus is not None else ""
    rows = [
        ("hardware", f"{count}{i.gpu}, {i.dtype.value}{' sparse' if i.sparse else ''}, "
                     + (f"HFU {i.hfu:.3g}" if getattr(i, "hfu", None) else f"MFU {i.mfu:.3g}")),
        *([("cluster throughput", fmt(r.cluster_flops_per_s, "FLOP/s")), ("time", format_days(r.days))]
          if r.days is not None else [("one GPU's throughput", fmt(r.gpu_flops_per_s, "FLOP/s")),
                                      ("time", "— (pass --gpus)")]),
        ("compute budget C", fmt(r.total_flops, "FLOP")),
        ("GPU-hours", fmt(r.gpu_hours, "GPU·h")),
        *([("cost", fmt(r.cost, "$"))] if r.cost is not None else []),
        (f"compute-optimal N ({i.tokens_per_param:g} tokens/param)", format_count(r.optimal_params, "params")),
        ("compute-optimal D", format_count(r.optimal_tokens, "tokens")),
    ]
    if getattr(r, "model_tokens", None) is not None:
        rows += [(f"{i.model}: FLOPs per token", fmt(r.model_flops_per_token, "FLOP")),
                 (f"{i.model}: tokens the budget buys", format_count(r.model_tokens, "tokens"))]
    return [kv_table("napkin budget", rows)]


@renders("MaxModelResult")
def max_model(r: Any) -> list[Any]:
    from rich.table import Table

    i = r.inputs
    t = Table(title=f"bytes per parameter: {i.precision}, {i.optimizer} ({r.optimizer_states} states), ZeRO-{i.zero}",
              title_justify="left")
    t.add_column("part")
    t.add_column("B/param", justify="right")
    t.add_column(f"sharded over {i.gpus}", justify="center")
    t.add_column("B/param per GPU", justify="right")
    for p in r.parts:
        t.add_row(p.label, f"{p.bytes_per_param:g}", "yes" if p.sharded else "no",
                  f"{p.bytes_per_param / i.gpus if p.sharded else p.bytes_per_param:.4g}")
    t.add_row("[bold]total[/bold]", f"[bold]{r.bytes_per_param:g}[/bold]", "",
              f"[bold]{r.bytes_per_param_per_gpu:.4g}[/bold]")
    summary = kv_table("", [
        ("memory per GPU", fmt(r.usable_bytes_per_gpu, "B")),
        ("largest model (model state only)", f"{format_count(r.max_params, 'params')}  ({r.max_params:.3e})"),
    ])
    return [t, summary]
