"""Tables for `napkin inference` and `napkin roofline`, and the roofline PNG (matplotlib, imported lazily)."""

from __future__ import annotations

from typing import Any

from napkin.errors import InputError, MissingExtraError
from napkin.render import fmt, kv_table, renders
from napkin.units import format_bytes, format_count, format_duration, format_rate


def _gb(x: float) -> str:
    return format_bytes(x) if x >= 0 else "−" + format_bytes(-x)


def _sci(x: float) -> str:
    """4.47e12: compact, for table cells."""
    m, e = f"{x:.2e}".split("e")
    return f"{m}e{int(e)}"


def _bytes(x: float) -> str:
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def _intensity(x: float) -> str:
    return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"


@renders("InferenceResult")
def inference(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    i, kv = r.inputs, r.kv
    tp = f"{i.gpus} × " if i.gpus > 1 else ""
    head = kv_table(
        f"napkin inference: {i.model} on {tp}{i.gpu}",
        [("batch × (prompt + generate)", f"{i.batch} × ({i.prompt:,} + {i.generate:,}) tokens"),
         ("parameters", format_count(r.params, "params") + (
             f" ({format_count(r.active_params, 'active')})" if r.active_params != r.params else "")),
         ("dtypes", f"weights {i.weights_dtype.value}, KV cache {i.kv_dtype.value}, matmuls {i.compute_dtype.value}"),
         ("efficiency", f"MFU {i.mfu:.3g}, MBU {i.mbu:.3g}"
          + ("  (ideal lower bound)" if i.mfu == i.mbu == 1 else ""))])
    saving = f"  ({kv.attention}: {kv.saving_vs_mha:.3g}× less than MHA)" if kv.attention != "MHA" else "  (MHA)"
    per_gpu = " per GPU" if i.gpus > 1 else ""
    mem = kv_table(f"memory{per_gpu}", [
        ("weights", _gb(r.weights_bytes)),
        ("KV cache per token", f"{kv.bytes_per_token / 1024:,.1f} KiB{saving}"),
        (f"KV cache ({i.batch} × {i.prompt + i.generate:,} tokens)", _gb(r.kv_cache_bytes)),
        ("workspace (activations, logits)", _gb(r.workspace_bytes)),
        ("total", _gb(r.total_bytes)),
        ("usable", _gb(r.usable_bytes)),
        ("fits" if r.fits else "DOES NOT FIT", f"headroom {_gb(r.headroom_bytes)}" if r.fits
         else f"short by {_gb(-r.headroom_bytes)}"),
        ("largest batch at this context", f"{r.max_batch:,}"),
        ("largest context at this batch", f"{r.max_context:,} tokens (limited by {r.max_context_limit})"),
    ])
    t = Table(title=f"time{per_gpu}: ridge {r.ridge_flops_per_byte:,.0f} FLOP/B = {fmt(r.peak_flops_per_s, 'FLOP/s')}"
                    f" / {format_bytes(r.bandwidth_bytes_per_s, binary=False)}/s",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    phases = (r.prefill, r.decode_first, r.decode_mean, r.decode_last)
    t.add_column("", no_wrap=True)
    for name in ("prefill", "decode first", "decode mean", "decode last"):
        t.add_column(name, justify="right", no_wrap=True)
    rows = [("context", lambda p: f"{p.context:,.0f}"), ("tokens", lambda p: f"{p.tokens:,}"),
            ("FLOPs", lambda p: _sci(p.flops)), ("bytes", lambda p: _bytes(p.bytes)),
            ("FLOP/B", lambda p: _intensity(p.intensity_flops_per_byte)),
            ("compute time", lambda p: format_duration(p.compute_s)),
            ("memory time", lambda p: format_duration(p.memory_s))]
    if r.inputs.gpus > 1:
        rows.append(("all-reduce time", lambda p: format_duration(p.comm_s)))
    rows += [("time", lambda p: format_duration(p.time_s)), ("bound", lambda p: p.bound)]
    for label, cell in rows:
        style = "bold" if label in ("time", "bound") else None
        t.add_row(label, *[cell(p) for p in phases], style=style)
    crit = ("never at this context" if r.critical_batch is None else f"{r.critical_batch:,.0f} sequences")
    summary = kv_table("serving", [
        ("time to first token (prefill)", f"{format_duration(r.ttft_s)}  ({r.prefill.bound}-bound)"),
        ("time per output token (decode)", f"{format_duration(r.tpot_s)}  ({r.decode_mean.bound}-bound)"),
        ("tokens/s per sequence", f"{r.tokens_per_s_per_sequence:,.1f}"),
        ("tokens/s, whole batch", f"{r.tokens_per_s_total:,.1f}"),
        ("end-to-end latency", format_duration(r.end_to_end_s)),
        ("decode turns compute-bound above batch", crit),
    ])
    return [head, mem, t, summary]


@renders("RooflineResult")
def roofline(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    i = r.inputs
    head = kv_table(f"napkin roofline: {i.gpu}, {i.dtype.value}", [
        ("compute roof (dense peak)", format_rate(r.peak_flops_per_s)),
        ("memory slope (bandwidth)", format_bytes(r.bandwidth_bytes_per_s, binary=False) + "/s"),
        ("ridge point", f"{r.ridge_flops_per_byte:,.1f} FLOP/B  (below: memory-bound; above: compute-bound)"),
    ] + ([("dtypes", f"weights {i.weights_dtype.value}, KV cache {i.kv_dtype.value}")] if r.ops else []))
    out = [head]
    if r.ops:
        t = Table(title=f"{i.model}, one layer: batch {i.batch}, prompt {i.prompt:,}, KV context {i.context:,}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("operation", "FLOPs", "bytes", "FLOP/B", "TFLOP/s", "of peak", "bound"):
            t.add_column(col, justify="left" if col in ("operation", "bound") else "right", no_wrap=True)
        for o in r.ops:
            t.add_row(o.name, _sci(o.flops), _bytes(o.bytes), _intensity(o.intensity_flops_per_byte),
                      f"{o.attainable_flops_per_s / 1e12:,.4g}",
                      f"{100 * o.attainable_flops_per_s / r.peak_flops_per_s:.3g}%", o.bound)
        out.append(t)
    return out


def plot_roofline(result: Any, path: str) -> str:
    """Write the roofline as a log-log PNG; needs the `plot` extra (matplotlib), imported here only."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "--plot (the roofline PNG)") from None
    from napkin.accounting.roofline import attainable

    P, BW, ridge = result.peak_flops_per_s, result.bandwidth_bytes_per_s, result.ridge_flops_per_byte
    lo = min([ridge / 1e3] + [o.intensity_flops_per_byte / 3 for o in result.ops])
    hi = max([ridge * 1e2] + [o.intensity_flops_per_byte * 3 for o in result.ops])
    xs = [lo * (hi / lo) ** (j / 200) for j in range(201)]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.loglog(xs, [attainable(P, BW, x) / 1e12 for x in xs], color="black", lw=2, label="roofline")
    ax.axvline(ridge, color="gray", ls="--", lw=1)
    ax.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, P / 1e12), textcoords="offset points", xytext=(5, -15),
                fontsize=8)
    for o in result.ops:
        ax.scatter([o.intensity_flops_per_byte], [o.attainable_flops_per_s / 1e12], zorder=3, label=o.name)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable TFLOP/s")
    i = result.inputs
    ax.set_title(f"{i.gpu} {i.dtype.value}" + (f": {i.model}, batch {i.batch}" if i.model else ""))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as e:
        raise InputError(f"cannot write the plot to '{path}': {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
