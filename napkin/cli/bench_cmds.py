"""Measured mode: bench-matmul, bench-allreduce. Parse, call one napkin.bench function, render.

Nothing here imports torch: the napkin.bench functions import it when a measurement starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer

from napkin.cli.context import model as resolve_model
from napkin.cli.context import state
from napkin.cli.options import (
    LENGTH_HELP,
    MODEL,
    MODEL_HELP,
    Explain,
    Json,
    Plot,
    duration,
    flop_rate,
    length,
    nbytes,
    number,
    opt,
    whole,
)
from napkin.cli.root import app

MEASURE = "Measurement"
PEAK = "Peak for MFU"

Device = Annotated[str, opt("--device", metavar="DEV", help="auto (a GPU if torch sees one, else the CPU), cpu, "
                            "cuda or cuda:N.", panel=MEASURE)]
Save = Annotated[Path | None, opt("--save", metavar="FILE", help="Write the result as JSON to FILE (a bench-matmul "
                                  "result feeds `napkin train-time --mfu-from FILE`).", panel="Output")]
AllreduceSave = Annotated[Path | None, opt("--save", metavar="FILE", help="Write the result as JSON to FILE (it "
                                           "feeds `napkin step-time --calibration FILE`: the measured bus "
                                           "efficiency and latency).", panel="Output")]
DeviceWarmup = Annotated[float | None, opt("--device-warmup", parser=duration("device warm-up"), metavar="SECONDS",
                                           help="Load the GPU this long with large GEMMs once, before the first "
                                                "shape, so figures are sustained, not boost bursts (30s, 0 for none). "
                                                "Default: 30 s on a GPU (as mamf-finder), none on the CPU.",
                                           panel=MEASURE)]
Fp8FastAccum = Annotated[bool, opt("--fp8-fast-accum", help="fp8: torch._scaled_mm(use_fast_accum=True), the faster "
                                   "lower-precision accumulation (default: full precision).", panel=MEASURE)]
def _range_opt(dim: str) -> Any:
    return opt(f"--{dim}-range", metavar="START STOP STEP", panel=MEASURE,
               help=f"Sweep {dim.upper()} over START, START+STEP, ... below STOP (mamf-finder's --{dim}_range; START 0 "
                    "means STEP). Combine with the other ranges, or fix the other dimensions with --m/--n/--k.")


def check_outputs(**paths: Any) -> None:
    """Every output path must be writable before anything is measured (a run can take minutes)."""
    from napkin.bench.saved import check_writable

    for flag, path in paths.items():
        if path is not None:
            check_writable(path, flag)


def save_then_show(result: Any, save: Path | None, plot: str | None = None, *, as_json: bool = False,
                   explain: bool = False) -> None:
    """Write --save (and --plot) first, then print: a closed or full stdout (`| head -n 1`) must not lose a
    measurement that took minutes. If writing fails, the result is still printed, the error says why and the exit
    status is 2."""
    from napkin import render
    from napkin.errors import NapkinError

    failed = []
    if save:
        from napkin.bench.saved import save_result

        try:
            save_result(result, save)
        except NapkinError as e:
            failed.append(str(e))
    if plot:
        from napkin.bench.plot import plot_sweep

        try:
            plot_sweep(result, plot)
            typer.echo(f"wrote {plot}", err=True)  # as roofline --plot does: stdout stays the result
        except NapkinError as e:
            failed.append(str(e))
    render.show(result, as_json=as_json, explain=explain)
    for message in failed:
        typer.echo(f"napkin: error: {message} (the result above was not saved)", err=True)
    if failed:
        raise typer.Exit(2)


def _list(parse: Any) -> Any:
    """Comma-separated values, each parsed like the single option (1023,1024,8k or 1MiB,64MiB), into a list.

    The option is declared ``str`` (typer would make a ``list`` option repeatable) and arrives as a list.
    """

    def parser(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        return [parse(part.strip()) for part in text.split(",") if part.strip()]

    return parser


@app.command("bench-matmul")
def bench_matmul_cmd(
    ctx: typer.Context,
    dtype: Annotated[str | None, opt("--dtype", metavar="DTYPE", help="bf16, fp16, fp32 (true fp32: TF32 off), "
                                     "tf32 or fp8 (torch._scaled_mm). Default: bf16 on a GPU, fp32 on the CPU.",
                                     panel=MEASURE)] = None,
    device: Device = "auto",
    size: Annotated[int | None, opt("--size", parser=whole("size"), metavar="S", help="Square GEMM S×S @ S×S. "
                                    "Default: 8192 on a GPU, 1024 on the CPU.", panel=MEASURE)] = None,
    m: Annotated[int | None, opt("--m", parser=whole("M"), metavar="M", help="Rows of A and C (default: --size).",
                                 panel=MEASURE)] = None,
    n: Annotated[int | None, opt("--n", parser=whole("N"), metavar="N", help="Columns of B and C (default: --size).",
                                 panel=MEASURE)] = None,
    k: Annotated[int | None, opt("--k", parser=whole("K"), metavar="K", help="The reduced dimension (default: "
                                 "--size).", panel=MEASURE)] = None,
    sweep: Annotated[bool, opt("--sweep", help="Time square GEMMs over powers of two, their neighbours (p±1) and "
                               "3p/2: 256..8192 on a GPU, 128..1024 on the CPU.", panel=MEASURE)] = False,
    sizes: Annotated[str | None, opt("--sizes", parser=_list(whole("size")), metavar="S1,S2,..",
                                           help="The sizes to sweep (implies --sweep).", panel=MEASURE)] = None,
    warmup_ms: Annotated[float, opt("--warmup-ms", parser=number("warm-up"), metavar="MS", help="Warm-up time "
                                    "before timing each shape.", panel=MEASURE)] = 250.0,
    iters: Annotated[int | None, opt("--iters", parser=whole("iterations"), metavar="N", help="Timed calls per "
                                     "shape (default: enough for ~1 s, at least 10).", panel=MEASURE)] = None,
    device_warmup: DeviceWarmup = None,
    fp8_fast_accum: Fp8FastAccum = False,
    m_range: Annotated[tuple[int, int, int] | None, _range_opt("m")] = None,
    n_range: Annotated[tuple[int, int, int] | None, _range_opt("n")] = None,
    k_range: Annotated[tuple[int, int, int] | None, _range_opt("k")] = None,
    gpu: Annotated[str | None, opt("--gpu", metavar="NAME", help="Catalog entry whose dense peak MFU is measured "
                                   "against, in place of the detected device.", panel=PEAK)] = None,
    peak: Annotated[float | None, opt("--peak", parser=flop_rate("peak FLOP/s"), metavar="RATE", help="Dense peak "
                                      "FLOP/s to measure MFU against (e.g. 67TFLOP/s, 200GFLOP/s, 67e12); needed on "
                                      "a CPU.",
                                      panel=PEAK)] = None,
    shapes_from: Annotated[str | None, opt("--shapes-from", metavar="NAME|FILE", help="Time this model's own GEMMs "
                                           "(QKV, out proj, MLP up/gate/down, LM head; forward and both backward "
                                           "GEMMs) at --batch × --seq tokens and report its FLOP-weighted MFU. "
                                           + MODEL_HELP, panel=MODEL)] = None,
    batch: Annotated[int | None, opt("--batch", "-b", parser=whole("batch"), metavar="B", help="Sequences per step "
                                     "for --shapes-from (default 1).", panel=MODEL)] = None,
    seq: Annotated[int | None, opt("--seq", "-s", parser=length("sequence length"), metavar="S", panel=MODEL,
                                   help="Sequence length for --shapes-from (default: the model's max "
                                        "context)." + LENGTH_HELP)] = None,
    plot: Plot = None,
    save: Save = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Measured matmul TFLOP/s on this device and the MFU it achieves against the dtype's dense peak.

    torch.mm into a preallocated output, timed call by call after a warm-up (CUDA events or perf_counter).

    Reports min / median / max time, 2MNK / t and MFU; the report states the method. --shapes-from MODEL times
    that model's own GEMMs and weights their rates by FLOPs: the MFU its matmuls can reach. --m-range/--n-range/
    --k-range sweep rectangular shapes (mamf-finder's grid).
    """
    from napkin.bench.matmul_question import matmul_question

    if plot:
        from napkin.bench.plot import require_matplotlib

        require_matplotlib()  # before the sweep, not after it
    check_outputs(**{"--save": save, "--plot": plot})  # a path that cannot be written fails now, not after the run
    with ProgressBar(enabled=not json) as progress:
        result = matmul_question(size=size, m=m, n=n, k=k, sweep=sweep, sizes=cast(list[int] | None, sizes),
                                 m_range=m_range, n_range=n_range, k_range=k_range, plot=bool(plot),
                                 shapes_from=resolve_model(ctx, shapes_from) if shapes_from else None, batch=batch,
                                 seq=seq, progress=progress, dtype=dtype, device=device, warmup_s=warmup_ms / 1e3,
                                 iters=iters, gpu=gpu, peak=peak, specs_dirs=state(ctx).specs_dirs,
                                 fast_accum=fp8_fast_accum, device_warmup_s=device_warmup)
    save_then_show(result, save, plot, as_json=json, explain=explain)
    if getattr(result, "interrupted", False):
        raise typer.Exit(130)  # the conventional status after Ctrl-C, once the best so far is printed


class ProgressBar:
    """A rich progress bar on stderr while long work runs (nothing with --json or when stderr is not a terminal).

    Redrawn only between steps: rich's refresh thread would compete with the timed calls for the CPU and the GIL.
    ``describe`` names a step from what the work reports (a GEMM shape, an all-reduce size, a validate phase).
    """

    def __init__(self, enabled: bool, describe: Any = None) -> None:
        import sys

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=True, auto_refresh=False,
                             disable=not (enabled and sys.stderr.isatty()))
        self._task: Any = None
        self._describe = describe or (lambda shape: f"timing {shape}")

    def __enter__(self) -> Any:
        self._bar.start()
        return self.update

    def update(self, done: int, total: int, shape: Any) -> None:
        what = self._describe(shape) if shape is not None else "done"
        if self._task is None:
            self._task = self._bar.add_task(what, total=total)
        self._bar.update(self._task, completed=done, description=what, refresh=True)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


@app.command("bench-allreduce")
def bench_allreduce_cmd(
    sizes: Annotated[str | None, opt("--sizes", parser=_list(nbytes("size")), metavar="B1,B2,..",
                                             help="Bytes per rank (1MiB,64MiB,1GiB). Default: 1 MiB..1 GiB ×4 on "
                                             "GPUs, 64 KiB..16 MiB ×4 on the CPU.", panel=MEASURE)] = None,
    dtype: Annotated[str, opt("--dtype", metavar="DTYPE", help="fp32, bf16 or fp16.", panel=MEASURE)] = "fp32",
    backend: Annotated[str, opt("--backend", metavar="NAME", help="auto (nccl on GPUs, gloo on the CPU), nccl, "
                                "gloo.", panel=MEASURE)] = "auto",
    device: Device = "auto",
    iters: Annotated[int, opt("--iters", parser=whole("iterations"), metavar="N", help="Timed calls per size "
                              "(nccl-tests' -n).", panel=MEASURE)] = 20,
    warmup_iters: Annotated[int, opt("--warmup-iters", min=0, metavar="N", help="Untimed calls per size first "
                                     "(nccl-tests' -w).", panel=MEASURE)] = 5,
    nproc: Annotated[int | None, opt("--nproc", parser=whole("process count"), metavar="N", help="Spawn N local "
                                     "processes (127.0.0.1) instead of running under torchrun.",
                                     panel=MEASURE)] = None,
    save: AllreduceSave = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """All-reduce bus bandwidth with torch.distributed: algbw = S/t, busbw = algbw·2(n−1)/n (nccl-tests).

    Launch one process per GPU: `torchrun --nproc-per-node 8 -m napkin bench-allreduce`, or `--nproc N` to let
    napkin spawn N local processes. Rank 0 prints; the others stay silent.
    """
    import os

    from napkin.bench.allreduce import Interrupted, bench_allreduce, launched_by_torchrun
    from napkin.units import format_bytes

    # under torchrun every rank runs this; only rank 0 draws (and only it hears of progress)
    rank0 = not launched_by_torchrun(os.environ) or os.environ.get("RANK") == "0"
    if rank0:
        check_outputs(**{"--save": save})
    try:
        with ProgressBar(enabled=not json and rank0,
                         describe=lambda size: f"all-reduce {format_bytes(size, binary=False)}") as progress:
            result = bench_allreduce(cast(list[float] | None, sizes), dtype=dtype, backend=backend, device=device,
                                     iters=iters, warmup_iters=warmup_iters, nproc=nproc, progress=progress)
    except Interrupted as e:
        typer.echo(f"napkin: {e}", err=True)
        raise typer.Exit(130) from None
    if result is None:  # not rank 0
        return
    save_then_show(result, save, as_json=json, explain=explain)
    if result.interrupted:
        raise typer.Exit(130)  # the sizes done so far are printed; the status says it was cut short
