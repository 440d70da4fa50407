"""Tables for the architecture commands: models list/show, flops, mfu."""

from __future__ import annotations

from typing import Any

from napkin.render import fmt, kv_table, renders, safe
from napkin.units import format_count


def _p(n: float) -> str:
    return format_count(n, "") if n >= 1000 else f"{n:g}"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _shape(s: Any) -> str:
    if s.kind == "linear":
        return f"L={s.layers} D={s.d_model} K={s.out_dim}"
    heads = f"{s.heads}/{s.n_kv_heads}" if s.mla is None else f"{s.heads} MLA"
    return f"L={s.layers} h={s.d_model} a/k={heads}"


def _ffn(s: Any) -> str:
    if s.kind == "linear":
        return "–"
    if s.moe is not None:
        e = s.moe
        shared = f"+{e.shared_experts}" if e.shared_experts else ""
        return f"{s.ffn_kind} {e.top_k}{shared}/{e.experts}×{e.expert_ffn_dim}"
    return f"{s.ffn_kind} {s.ffn_dim}"


@renders("ModelList")
def model_list(r: Any) -> list[Any]:
    from rich import box
    from rich.table import Table

    t = Table(title="model catalog (params in powers of 1000)", title_justify="left", box=box.SIMPLE_HEAD,
              padding=(0, 1), pad_edge=False)
    for col, just in (("name", "left"), ("shape", "left"), ("ffn", "left"), ("vocab", "right"), ("ctx", "right"),
                      ("params", "right"), ("active", "right")):
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for row in r.models:
        s = row.spec
        vocab = "–" if s.kind == "linear" else str(s.vocab)
        ctx = "–" if s.kind == "linear" else str(s.max_context)
        active = _p(row.active_params) if row.active_params != row.params else ""
        t.add_row(safe(s.name), _shape(s), _ffn(s), vocab, ctx, _p(row.params), active)
    return [t, "[dim]a/k = query/kv heads; ffn 8+1/256×2048 = top-8 of 256 routed experts + 1 shared, width 2048. "
               "`napkin models show NAME` for the breakdown.[/dim]"]


@renders("ModelShow")
def model_show(r: Any) -> list[Any]:
    from rich.table import Table

    s, pc = r.spec, r.params
    rows = [("name", safe(s.name)), ("model", safe(s.display_name)), ("aliases", safe(", ".join(s.aliases)) or "–")]
    if s.kind == "linear":
        rows.append(("shape", f"{s.layers} layers of {s.d_model}×{s.d_model}, head {s.d_model}→{s.out_dim}, no bias"))
    else:
        attn = (f"{s.heads} heads, {s.n_kv_heads} kv heads, head dim {s.d_head}" if s.mla is None else
                f"MLA, {s.heads} heads, kv latent {s.mla.kv_lora_rank}, q rank {s.mla.q_lora_rank}")
        rows += [
            ("layers × width", f"{s.layers} × {s.d_model}"),
            ("attention", attn + (f", qk-norm {s.qk_norm}" if s.qk_norm != "none" else "")
             + (f", bias {s.attention_bias}" if s.attention_bias != "none" else "")),
            ("ffn", _ffn(s) + (f" (dense layers: {s.ffn_dim})" if s.moe and s.moe_layers < s.layers else "")),
            ("vocab / context", f"{s.vocab} / {s.max_context}"),
            ("positions / norm", f"{s.positions} / {s.norm}" + (" (+bias)" if s.has_norm_bias else "")
             + (f", {s.norm_placement}" if s.norm_placement != "pre" else "")),
            ("embeddings", "tied" if s.tied_embeddings else "untied"),
        ]
        if s.block_pattern is not None:  # a hybrid: say which mixer each layer has, as block_pattern spells it
            from napkin.specs.model import BLOCK_CHARS

            kinds = ", ".join(f"{s.block_pattern.count(c)} {n}" for c, n in BLOCK_CHARS.items() if c in s.block_pattern)
            rows.insert(4, ("layer pattern", f"{kinds} (one mixer or FFN per block)"))
    rows.append(("spec file", safe(r.file) if r.file else "–"))
    t = Table(title="parameters per component", title_justify="left")
    t.add_column("component")
    t.add_column("params", justify="right")
    t.add_column("exact", justify="right")
    t.add_column("share", justify="right")
    for k, v in pc.components.items():
        t.add_row(k, _p(v), f"{v:,}", f"{v / pc.params:.1%}")
    t.add_row("[bold]total[/bold]", f"[bold]{_p(pc.params)}[/bold]", f"[bold]{pc.params:,}[/bold]", "100%")
    summary = [("active per token", f"{_p(pc.active_params)}  ({pc.active_params:,})")]
    if pc.active_params != pc.params:  # MoE: model cards quote the active count without the embedding table
        summary.append(("active, non-embedding", f"{_p(pc.active_non_embedding)}  (as model cards count it: the "
                        f"{_p(pc.embedding)} embedding table is looked up, one row per token)"))
    summary.append(("non-embedding (Kaplan N)", f"{_p(pc.non_embedding)}  ({pc.non_embedding:,})"))
    parts: list[Any] = [kv_table(safe(s.display_name), rows, justify="left")]
    if s.kind != "linear" and s.block_pattern is not None:
        parts.append(f"[dim]block pattern: {safe(s.block_pattern)}[/dim]")
    parts += [t, kv_table("", summary)]
    parts.append("[dim]sources: " + safe("; ".join(s.sources)) + "[/dim]")
    return parts


@renders("FlopCount")
def flop_count(r: Any) -> list[Any]:

    recompute = r.recompute != "none"
    what = f"B = {_p(r.tokens)} examples" if r.per == "example" else (
        f"D = {_p(r.tokens)} tokens, s = {r.seq}, {'causal' if r.causal else 'no causal halving'}")
    t = component_flops_table(f"training FLOPs of {r.model}: {what}", r, recompute)
    rows = [
        ("model FLOPs (exact, fwd + bwd)", fmt(r.model_flops, "FLOP")),
        ("hardware FLOPs" + (f" (recompute {r.recompute})" if recompute else ""), fmt(r.hardware_flops, "FLOP")),
        (f"per {r.per}: forward / model / hardware",
         f"{fmt(r.forward_flops_per_token, 'FLOP')} / {fmt(r.model_flops_per_token, 'FLOP')} / "
         f"{fmt(r.hardware_flops_per_token, 'FLOP')}"),
        (f"6ND (N = {_p(r.params)})", f"{fmt(r.six_nd, 'FLOP')}   exact/6ND = {r.model_flops / r.six_nd:.4f}"),
    ]
    if r.active_params != r.params:
        rows.append((f"6·N_active·D (N_active = {_p(r.active_params)})",
                     f"{fmt(r.six_n_active_d, 'FLOP')}   exact/6N_active·D = {r.model_flops / r.six_n_active_d:.4f}"))
    if r.per == "token":
        rows.append(("6N + 12·L·H·Q·s (PaLM, not halved)", fmt(r.palm_flops, "FLOP")))
        rows.append(("attention (QKᵀ, AV) share", f"{r.attention_share:.1%}"))
    return [t, kv_table("", rows)]


@renders("MfuResult")
def mfu_result(r: Any) -> list[Any]:
    i = r.inputs
    unit = f"{r.per}s"
    if r.model is not None:
        what = f"{r.model}, s = {r.seq}" + ("" if i.causal else ", no causal halving")
    elif r.params is not None:
        what = f"N = {_p(r.params)} params, no architecture: 6N FLOPs per token"
    else:
        what = "– (no --model or --params: MFU from the quoted FLOP/s alone)"
    rows = [
        ("model", what),
        ("hardware", f"{i.gpus} × {i.gpu}, {i.dtype.value} dense peak {fmt(r.peak_flops_per_s, 'FLOP/s')}"),
    ]
    if i.tflops_per_gpu is not None:
        rows.append(("quoted model FLOP/s per GPU", fmt(i.tflops_per_gpu * 1e12, "FLOP/s")))
    if r.tokens_per_s is not None:
        rows.append(("throughput", f"{_rate(r.tokens_per_s)} {unit}/s  ({_rate(r.tokens_per_s_per_gpu)} per GPU)"))
    if r.model_flops_per_token is not None:
        basis = "exact" if r.flops_basis == "exact" else "6N"
        rows.append((f"model FLOPs per {r.per} ({basis})", fmt(r.model_flops_per_token, "FLOP")))
    rows += [
        ("achieved model FLOP/s", fmt(r.achieved_flops_per_s, "FLOP/s")),
        ("[bold]MFU[/bold]", f"[bold]{r.mfu:.2%}[/bold]"),
    ]
    if i.recompute != "none":
        if r.hardware_flops_per_token is not None:
            rows.append((f"hardware FLOPs per token (recompute {i.recompute})",
                         fmt(r.hardware_flops_per_token, "FLOP")))
        rows.append(("[bold]HFU[/bold]", f"[bold]{r.hfu:.2%}[/bold]"))
    if r.flops_basis == "exact" and r.mfu_6n is not None:
        rows += [("MFU if counted as 6N", f"{r.mfu_6n:.2%}  ({fmt(r.six_n_flops_per_token, 'FLOP')}/{r.per})")]
    if r.per == "token" and r.mfu_palm is not None:
        rows.append(("MFU if counted as 6N + attention (PaLM)",
                     f"{r.mfu_palm:.2%}  ({fmt(r.palm_flops_per_token, 'FLOP')}/token)"))
    return [kv_table("napkin mfu", rows)]


def component_flops_table(title: str, r: Any, recompute: bool, kind: Any = None) -> Any:
    """Forward / backward (/ recompute) / model FLOPs and share per component, and the total row: the table of
    `napkin flops`, full or fine-tuning (``kind(component)`` fills a "kind" column, e.g. adapter / frozen)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("component")
    if kind is not None:
        t.add_column("kind")
    for col in ("forward", "backward", *(["recompute"] if recompute else []), "model FLOPs", "share"):
        t.add_column(col, justify="right")
    for k, c in r.components.items():
        cells = [fmt(c.forward, "FLOP"), fmt(c.backward, "FLOP")]
        if recompute:
            cells.append(fmt(c.recompute, "FLOP") if c.recompute else "–")
        model = c.forward + c.backward  # a component's model FLOPs: its forward and backward, as the total's
        t.add_row(k, *([kind(c)] if kind is not None else []), *cells, fmt(model, "FLOP"),
                  f"{model / r.model_flops:.1%}")
    tot = [fmt(r.forward_flops, "FLOP"), fmt(r.backward_flops, "FLOP")]
    if recompute:
        tot.append(fmt(r.recompute_flops, "FLOP"))
    t.add_row("[bold]total[/bold]", *([""] if kind is not None else []), *tot,
              f"[bold]{fmt(r.model_flops, 'FLOP')}[/bold]", "100%")
    return t
