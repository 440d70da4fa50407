"""`napkin plan`: search the layouts that fit and rank them by predicted step time. Parse, call, render."""

from __future__ import annotations

from typing import Annotated

import typer

from napkin.cli.context import hardware, one_or_all
from napkin.cli.context import model as model_of
from napkin.cli.options import (
    LENGTH_HELP,
    Calibration,
    Explain,
    GpuOrAll,
    InterBandwidth,
    IntraBandwidth,
    Json,
    ModelOpt,
    NodeSize,
    Precision,
    count,
    length,
    opt,
    whole,
)
from napkin.cli.options import (
    days as days_of,
)
from napkin.cli.root import app


def _fix(text: str) -> dict[str, int | str]:
    """'tp=8,pp=4,recompute=full' → {'tp': 8, 'pp': 4, 'recompute': 'full'}."""
    out: dict[str, int | str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise typer.BadParameter(f"'{part}' is not NAME=VALUE; e.g. --fix tp=8,pp=4")
        k, v = (x.strip() for x in part.split("=", 1))
        k = k.replace("-", "_")
        if k in out:  # tp=8,tp=1 took the last silently
            raise typer.BadParameter(f"{k} is fixed twice ({k}={out[k]}, {k}={v}); give it once")
        if k == "recompute":
            out[k] = v
        else:
            try:
                out[k] = int(v)
            except ValueError:
                raise typer.BadParameter(f"{k}={v}: {k} takes a whole number") from None
    return out


@app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    global_batch: Annotated[int, opt("--global-batch", "-B", parser=whole("global batch"), metavar="B",
                                     help="Sequences per optimizer step over all GPUs.")],
    seq: Annotated[int, opt("--seq", "-s", parser=length("sequence length"), metavar="S",
                            help="Sequence length in tokens." + LENGTH_HELP)],
    gpus: Annotated[int | None, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G",
                                    help="GPUs to lay out (leave out with --days to find the fewest).")] = None,
    gpu: GpuOrAll = "h100",
    tokens: Annotated[float | None, opt("--tokens", "-D", parser=count("token count"), metavar="D",
                                        help="Training tokens: days and GPU-hours at the winner's step.")] = None,
    days: Annotated[float | None, opt("--days", parser=days_of("days"), metavar="X",
                                      help="With --tokens and no --gpus: the fewest GPUs (whole nodes) that train "
                                           "in X days.")] = None,
    precision: Precision = "bf16-mixed",
    top: Annotated[int, opt("--top", parser=whole("top count"), metavar="K", help="Layouts to list.")] = 5,
    max_tp: Annotated[int | None, opt("--max-tp", parser=whole("largest TP"), metavar="T",
                                      help="Largest tensor-parallel degree (default: the node size; more lets TP "
                                           "cross nodes).")] = None,
    fix: Annotated[str | None, opt("--fix", metavar="K=V,...", help="Hold dimensions fixed: tp, pp, vp, cp, ep, "
                                   "micro_batch, zero, recompute (e.g. tp=8,pp=4).")] = None,
    node_size: NodeSize = None,
    intra_node_bandwidth: IntraBandwidth = None,
    inter_node_bandwidth: InterBandwidth = None,
    calibration: Calibration = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Find the fastest layout that fits: every TP, CP, PP, VP, EP, micro-batch, recompute and ZeRO, ranked by
    `napkin step-time`, with the winner explained and emitted as Megatron-LM and torchtitan settings.

    Example: napkin plan --model llama3-70b --gpu h100 --gpus 1024 --global-batch 1024 --seq 8192 --tokens 15T

    Fewest GPUs: napkin plan --model llama3-8b --gpu h100 --global-batch 512 --seq 8192 --tokens 15T --days 30
    """
    from napkin import render
    from napkin.accounting.plan import plan

    spec = model_of(ctx, model)
    kw = dict(global_batch=global_batch, seq=seq, gpus=gpus, tokens=tokens, days=days, precision=precision, top=top,
              max_tp=max_tp, fix=_fix(fix) if fix else None, node_size=node_size,
              intra_node_bandwidth=intra_node_bandwidth, inter_node_bandwidth=inter_node_bandwidth,
              calibration=calibration)
    con = None if json else render.console()
    if gpu.strip().lower() == "all":  # one plan per catalog GPU, one row each
        result = one_or_all(ctx, gpu, "plan", lambda hw: plan(spec, hw, **kw))  # type: ignore[arg-type]
    elif con is None or not con.is_terminal:  # a bar only where someone watches (rich.progress: ~10 ms to load)
        result = plan(spec, hardware(ctx, gpu), **kw)  # type: ignore[arg-type]
    else:
        from rich.progress import Progress

        with Progress(transient=True, console=con) as bar:
            task = bar.add_task("searching layouts", total=None)
            result = plan(spec, hardware(ctx, gpu),
                          progress=lambda n, total: bar.update(task, completed=n, total=total),
                          **kw)  # type: ignore[arg-type]
    render.show(result, as_json=json, explain=explain)
    if getattr(result, "interrupted", False):  # an AcrossGpusResult (--gpu all) has no such field
        raise typer.Exit(130)  # the conventional status after Ctrl-C, once the best so far is printed
