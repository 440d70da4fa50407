"""Tables for `napkin memory` (the ledger, its solvers, --gpu all) and the activation-aware max-model."""

from __future__ import annotations

from typing import Any

from napkin.render import Packed, fmt, kv_table, renders, safe
from napkin.units import format_bytes, format_count

BAR_WIDTH = 60  # characters of the stacked bar for the GPU's whole memory
COLORS = {"params": "blue", "grads": "magenta", "master": "cyan", "optimizer": "yellow", "activations": "green",
          "embedding": "green", "output": "red", "recompute": "bright_green", "frozen": "bright_blue",
          "quant": "bright_cyan", "dequant": "bright_magenta"}
# Without colour (a pipe, NO_COLOR) each part is drawn in its own letter: PPPPGGGMMMMOOOOOOOOAAAA....
GLYPHS = {"params": "P", "grads": "G", "master": "M", "optimizer": "O", "activations": "A", "embedding": "E",
          "output": "L", "recompute": "R", "frozen": "F", "quant": "Q", "dequant": "D"}
SHORT = {"params": "params", "grads": "grads", "master": "master", "optimizer": "optimizer",
         "activations": "activations", "embedding": "embedding", "output": "logits/loss", "recompute": "recompute",
         "frozen": "frozen base", "quant": "quant constants", "dequant": "dequant workspace"}


def _mark(part: str, label: str) -> Any:
    from napkin.render import Mark

    return Mark(label, COLORS[part], GLYPHS[part])


def _gb(x: float) -> str:
    return format_bytes(x)


def _count(n: float) -> str:
    return format_count(n, "params") if n >= 1000 else f"{n:g} params"


def _setup(r: Any) -> str:
    i, p = r.inputs, r.inputs.layout
    parts = [i.model or _count(i.params)]
    if r.seq:
        parts.append(f"b={i.micro_batch} × s={r.seq}")
    elif i.model:
        parts.append(f"B={i.micro_batch}")
    layout = f"{p.gpus} × {i.gpu}"
    if p.gpus > 1 or p.tp > 1 or p.pp > 1:
        extra = (f" · CP {p.cp}" if p.cp > 1 else "") + (f" · EP {p.ep}" if p.ep > 1 else "") \
            + (f" (VP {p.vp})" if p.vp > 1 else "")
        layout += f" (DP {r.data_parallel} · TP {p.tp}{' + SP' if p.sp and p.tp > 1 else ''} · PP {p.pp}{extra})"
    parts += [layout, i.precision, i.optimizer, f"ZeRO-{p.zero}"]
    if r.seq:
        parts.append(("flash" if i.flash else "no flash") + f", recompute {i.recompute}")
    lora = getattr(i, "lora", None)
    if lora is not None:
        parts.append(f"{i.finetune} r={lora.rank} on {_targets(lora)}, {lora.base_dtype} base"
                     + (" (double quant)" if lora.base_dtype == "nf4" and lora.double_quant else ""))
    if getattr(i, "offload", "none") != "none":
        parts.append(f"offload {i.offload}")
    return ", ".join(parts)


def _targets(lora: Any) -> str:
    from napkin.accounting.finetune import TARGET_GROUPS

    t = list(lora.targets)
    name = next((k for k in ("all", "attn", "mlp") if t == list(TARGET_GROUPS[k])), ",".join(t))
    return name + (" + embeddings" if lora.embeddings else "")


def bar(r: Any) -> Any:
    """A stacked bar of the ledger's shares of the GPU's usable memory (or of the total, when it overflows).

    In colour: one colour per part, the legend's ■ keyed to it; without colour: one letter per part (PPPGGOOOAA..),
    the legend naming each letter."""
    from rich.console import Group
    from rich.text import Text

    from napkin.render import Legend, StackedBar

    scale = max(r.usable_bytes, r.total_bytes)
    parts = [(row.part, round(BAR_WIDTH * row.bytes / scale)) for row in r.rows]
    used = sum(n for _, n in parts)
    if r.fits:
        line = StackedBar(parts, COLORS, GLYPHS, free=max(0, BAR_WIDTH - used),
                          tail=f"  {r.total_bytes / r.usable_bytes:.0%} of {fmt(r.usable_bytes, 'B')}")
    else:
        line = StackedBar(parts, COLORS, GLYPHS, marker=round(BAR_WIDTH * r.usable_bytes / scale),
                          tail=Text(f"  {r.total_bytes / r.usable_bytes:.0%}: over by {_gb(-r.headroom_bytes)}",
                                    style="bold red"))
    share: dict[str, float] = {}
    for row in r.rows:  # one legend entry per part (a fine-tune ledger has two frozen-base rows)
        share[row.part] = share.get(row.part, 0.0) + row.bytes / r.total_bytes
    legend = [_mark(part, f"{SHORT[part]} {v:.0%}") for part, v in share.items() if v >= 0.005]
    return Group(line, Legend(legend))


@renders("MemoryResult")
def memory(r: Any) -> list[Any]:
    from rich.table import Table

    title = "napkin memory: " + _setup(r) + (f" — {r.stage} pipeline stage" if r.stage != "only" else "")
    t = Table(title=title, title_justify="left")
    t.add_column("per GPU")
    t.add_column("bytes", justify="right")
    t.add_column("share", justify="right")
    t.add_column("ZeRO", justify="center")
    for row in r.rows:
        t.add_row(_mark(row.part, row.label), _gb(row.bytes), f"{row.bytes / r.total_bytes:.1%}",
                  f"/ {r.groups.get('shard', r.data_parallel)}" if row.sharded_over_dp else "")
    t.add_row("[bold]total[/bold]", f"[bold]{_gb(r.total_bytes)}[/bold]", "100%", "")
    verdict = (f"[green]fits[/green], headroom {_gb(r.headroom_bytes)}" if r.fits
               else f"[bold red]does not fit[/bold red]: short by {_gb(-r.headroom_bytes)}")
    summary = [("parameters", _count(r.params)
                + (f" ({_count(r.params_on_gpu)} on this GPU before ZeRO)"
                   if r.params_on_gpu != r.params else "")),
               (f"memory of one {r.inputs.gpu}", _gb(r.usable_bytes + r.reserve_bytes)),
               ("reserve (context, NCCL, fragmentation)", _gb(r.reserve_bytes)),
               ("usable", _gb(r.usable_bytes)), ("verdict", verdict)]
    if r.inputs.finetune != "full":
        summary.insert(1, ("trainable (adapters)", f"{_count(r.trainable_params)} "
                           f"({r.trainable_params / r.params:.3%} of the parameters)"))
    if r.checkpoint is not None:
        ck = r.checkpoint
        summary.append(("checkpoint on disk", _gb(ck.total_bytes)))
        if ck.resume_extra_bytes:
            summary.append(("+ optimizer state to resume", _gb(ck.resume_extra_bytes)))
    out: list[Any] = [t, kv_table("", summary), bar(r)]
    if r.checkpoint is not None:
        out.append("checkpoint = " + " + ".join(p.label for p in r.checkpoint.parts))
    if r.offload is not None:
        out.append(offload_table(r.offload))
    if r.activation_offload is not None:
        o = r.activation_offload
        rows = [("layers per stage offloaded", str(o.layers)), ("host memory per GPU", _gb(o.host_bytes)),
                ("transfer buffer on the GPU", _gb(o.buffer_bytes)),
                ("GPU → host per step (and back)", _gb(o.to_host_bytes_per_step))]
        if o.transfer_time_s is not None:
            rows.append((f"at {fmt(o.host_link_bandwidth_bytes_per_s, 'B/s')} per direction",
                         f"{o.transfer_time_s:.3g} s per step (hidden only where it overlaps compute)"))
        out.append(kv_table("activation offload", rows))
    if r.activations is not None:
        out.append(activation_table(r))
    return out


def offload_table(o: Any) -> Any:
    rows = [("moved to host memory", ", ".join(o.moved) or "nothing"),
            ("host memory per GPU", _gb(o.host_bytes)),
            ("GPU → host per step", _gb(o.to_host_bytes_per_step)),
            ("host → GPU per step", _gb(o.from_host_bytes_per_step))]
    if o.transfer_time_s is not None:
        rows.append((f"at {fmt(o.host_link_bandwidth_bytes_per_s, 'B/s')} per direction",
                     f"{o.transfer_time_s:.3g} s per step (hidden only where it overlaps compute)"))
    return kv_table(f"offload {o.mode}", rows)


def activation_table(r: Any) -> Any:
    from rich.table import Table

    a = r.activations
    if len(a.kinds) > 1:  # layers of several kinds: each kind's count and bytes, the heaviest kind's tensors below
        shown = max(a.kinds, key=lambda k: k.per_layer_bytes)
        parts = " + ".join(f"{k.layers} {k.label}s × {format_bytes(k.per_layer_bytes, binary=False)}"
                           for k in a.kinds)
        title = (f"activations: {a.in_flight} micro-batch in flight × ({parts}) = {_gb(a.layers_bytes)}; one "
                 f"{shown.label} below")
    else:
        title = (f"activations: {a.layers_on_gpu} layers × {a.in_flight} micro-batch in flight × one layer below "
                 f"= {_gb(a.layers_bytes)}")
    t = Table(title=title, title_justify="left", box=None, pad_edge=False)
    t.add_column("kept for backward", style="bold")
    t.add_column("per token", justify="right")
    t.add_column("B/elt", justify="right")
    t.add_column("split", justify="center")
    t.add_column("bytes", justify="right")
    split = {"tp": "/t", "sp": "/t if SP", "none": "—"}
    for x in a.per_layer:
        t.add_row(x.name, x.width, f"{x.bytes_per_element:g}", split[x.split], format_bytes(x.bytes, binary=False))
    one = f"one {max(a.kinds, key=lambda k: k.per_layer_bytes).label}" if len(a.kinds) > 1 else "one layer"
    t.add_row(f"[bold]{one}[/bold]", "", "", "", f"[bold]{format_bytes(a.per_layer_bytes, binary=False)}[/bold]")
    if a.outside:
        t.add_row("[dim]outside the layers[/dim]", "", "", "", "")
        for x in a.outside:
            t.add_row(x.name, x.width, f"{x.bytes_per_element:g}", split[x.split], format_bytes(x.bytes, binary=False))
    if a.working_set_bytes:
        t.add_row("recompute working set", "", "", "", format_bytes(a.working_set_bytes, binary=False))
    return Packed(t)


@renders("MaxBatchResult")
def max_batch(r: Any) -> list[Any]:
    rows = [("activations per sequence", _gb(r.per_sequence_bytes)), ("fixed (model state)", _gb(r.fixed_bytes)),
            ("largest micro-batch", f"[bold]{r.max_batch}[/bold] sequences")]
    return [kv_table("napkin memory --max-batch", rows)] + (memory(r.ledger) if r.max_batch else [bar(r.ledger)])


@renders("MinGpusResult")
def min_gpus(r: Any) -> list[Any]:
    rows = [("replicated per GPU", _gb(r.replicated_bytes)), ("ZeRO-sharded at DP = 1", _gb(r.sharded_bytes)),
            ("fewest GPUs", f"[bold]{r.gpus}[/bold] (DP {r.data_parallel})" if r.gpus else "[red]none fits[/red]")]
    return [kv_table("napkin memory --min-gpus", rows)] + (memory(r.ledger) if r.gpus else [])


@renders("GpuCompareResult")
def compare(r: Any) -> list[Any]:
    from rich.table import Table

    t = Table(title="which GPU? " + _setup(r.ledger).replace(f" × {r.ledger.inputs.gpu}", " × GPU"),
              title_justify="left")
    t.add_column("GPU")
    t.add_column("memory", justify="right")
    t.add_column("fits", justify="center")
    t.add_column("headroom / shortfall", justify="right")
    for x in r.rows:
        t.add_row(f"{safe(x.display_name)} [dim]({safe(x.gpu)})[/dim]", format_bytes(x.memory_bytes, binary=False),
                  "[green]yes[/green]" if x.fits else "[red]no[/red]",
                  _gb(x.headroom_bytes) if x.fits else f"[red]short by {_gb(-x.headroom_bytes)}[/red]")
    need = r.rows[0].total_bytes if r.rows else 0.0
    return [t, kv_table("", [("needs per GPU", _gb(need))])]


@renders("MaxModelFitResult")
def max_model_fit(r: Any) -> list[Any]:
    if r.spec is None:
        return [kv_table("napkin max-model (with activations)", [("largest model", "[red]none fits[/red]")])]
    s = r.spec
    rows = [("family scaled", f"{r.template}, d_model / layers = {r.aspect:g}"),
            ("largest model", f"[bold]{format_count(r.params, 'params')}[/bold]  ({r.params:.3e})"),
            ("shape", f"{s.layers} layers, d_model {s.d_model}, {s.heads} heads ({s.n_kv_heads} kv), ffn {s.ffn_dim}")]
    return [kv_table("napkin max-model (activations included)", rows)] + memory(r.ledger)


@renders("FinetuneFlopsResult")
def finetune_flops(r: Any) -> list[Any]:
    from napkin.render.models import component_flops_table

    i = r.inputs
    recompute = i.recompute != "none"
    t = component_flops_table(f"{i.finetune} FLOPs of {r.model}: D = {format_count(r.tokens, 'tokens')}, "
                              f"s = {r.seq}, r = {i.lora.rank} on {_targets(i.lora)}", r, recompute,
                              kind=lambda c: "adapter" if c.trainable else "frozen")
    rows = [
        ("trainable (adapters)", f"{_count(r.trainable_params)} ({r.trainable_params / r.params:.3%} of "
                                 f"{_count(r.params)})"),
        ("model FLOPs (fwd + bwd)", f"{fmt(r.model_flops, 'FLOP')}  ({fmt(r.model_flops_per_token, 'FLOP')}/token)"),
        ("hardware FLOPs" + (f" (recompute {i.recompute})" if recompute else ""), fmt(r.hardware_flops, "FLOP")),
        ("full fine-tuning, same tokens", f"{fmt(r.full_model_flops, 'FLOP')}   {i.finetune} / full = "
                                          f"{r.ratio_to_full:.3f}"),
        ("napkin (4N + 6·N_adapter)·D", f"{fmt(r.four_nd, 'FLOP')}   exact / napkin = "
                                        f"{r.model_flops / r.four_nd:.4f}"),
    ]
    return [t, kv_table("", rows)]
