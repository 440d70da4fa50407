"""`napkin inference` and `napkin roofline`: serving memory and time, and the roofline. Parse, call, render."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from napkin import units
from napkin.cli.context import hardware, one_or_all
from napkin.cli.context import model as model_of
from napkin.cli.options import (
    LENGTH_HELP,
    Check,
    Explain,
    GpuOrAll,
    Json,
    Memory,
    ModelOpt,
    Plot,
    Reserve,
    bandwidth,
    duration,
    exit_if_does_not_fit,
    length,
    number,
    opt,
    whole,
)
from napkin.cli.root import app, refuse_unused
from napkin.errors import InputError

if TYPE_CHECKING:  # annotations only: the command imports what it runs when it runs
    from napkin.accounting.across_gpus import AcrossGpusResult
    from napkin.accounting.inference import InferenceResult
    from napkin.specs.hardware import HardwareSpec

WORKLOAD = "Workload"
DEFAULT_PREFILL_CHUNK = 8192  # napkin.accounting.inference.DEFAULT_PREFILL_CHUNK (not imported: startup stays lean)
PRECISION = "Precision and efficiency"
PARALLEL = "Tensor parallelism"
LIMITS = "Memory"


def _seconds(text: Any) -> Any:
    """A latency: 10us (or 10µs), 5ms, 2s, 300ns, or a bare number of seconds (10e-6); at least 0."""
    if not isinstance(text, str):
        return text
    if text.strip().startswith("-"):
        try:
            units.parse_duration(text.strip()[1:], "all-reduce latency")
        except InputError:
            pass
        else:
            raise typer.BadParameter(f"all-reduce latency must be at least 0 seconds, got {text}")
    return duration("all-reduce latency")(text)


Batch = Annotated[int, opt("--batch", "-b", parser=whole("batch size"), metavar="B", panel=WORKLOAD,
                           help="Sequences decoded together.")]
Prompt = Annotated[int, opt("--prompt", "-p", parser=length("prompt length"), metavar="P", panel=WORKLOAD,
                            help="Prompt tokens per sequence." + LENGTH_HELP)]
Generate = Annotated[int, opt("--generate", "-n", parser=length("tokens to generate"), metavar="G", panel=WORKLOAD,
                              help="Tokens generated per sequence (the prefill emits the first)." + LENGTH_HELP)]
WeightsDType = Annotated[str | None, opt("--weights-dtype", metavar="DTYPE", panel=PRECISION,
                                         help="bf16, fp16, fp32, fp8 (W8A8: fp8 matmuls where the GPU has them, else "
                                              "bf16), fp4, int8 or int4 (weight-only: bf16 matmuls; embedding, head "
                                              "and norms stay 16-bit, as GPTQ/AWQ keep them). Default: bf16, fp16 "
                                              "on a GPU without bf16 (V100).")]
KVDType = Annotated[str | None, opt("--kv-dtype", metavar="DTYPE", panel=PRECISION,
                                    help="KV cache dtype: bf16, fp16, fp32, fp8, int8. Default: bf16, fp16 on a GPU "
                                         "without bf16 (V100).")]
ComputeDType = Annotated[str | None, opt("--compute-dtype", metavar="DTYPE", panel=PRECISION,
                                         help="Matmul dtype whose dense peak is used (default: from the weights).")]
Mfu = Annotated[float, opt("--mfu", parser=number("MFU"), metavar="F", panel=PRECISION,
                           help="Fraction of the dense peak FLOP/s reached, in (0, 1]. 1 = ideal lower bound.")]
Mbu = Annotated[float, opt("--mbu", parser=number("MBU"), metavar="F", panel=PRECISION,
                           help="Fraction of the memory bandwidth reached, in (0, 1]. 1 = ideal lower bound; "
                                "tuned decode kernels reach ~0.6-0.8.")]
TpGpus = Annotated[int, opt("--gpus", "-g", parser=whole("GPU count"), metavar="N", panel=PARALLEL,
                            help="Tensor-parallel GPUs: weights and KV heads split N ways (KV heads replicated "
                                 "when N exceeds them, e.g. MQA).")]
Link = Annotated[float | None, opt("--link-bandwidth", parser=bandwidth("link bandwidth"), metavar="RATE",
                                   panel=PARALLEL, help="Scale-up link bandwidth per GPU, both directions: 900GB/s "
                                                        "(NVLink4), 200Gb/s (bits, /8) or a bare number of bytes/s "
                                                        "(default: the GPU profile's).")]
Latency = Annotated[float, opt("--allreduce-latency", parser=_seconds, metavar="TIME",
                               panel=PARALLEL, help="Fixed cost of one all-reduce: 10us (or 10µs), 5ms, or a bare "
                                                    "number of seconds (default 0: bandwidth term only).")]
def _chunk(text: Any) -> Any:
    """--prefill-chunk: a length in tokens, or 'none' for the whole batch in one pass (returned as 0, which a length
    cannot be)."""
    if isinstance(text, str) and text.strip().lower() in ("none", "off"):
        return 0
    return length("prefill chunk")(text)


Chunk = Annotated[int, opt("--prefill-chunk", parser=_chunk, metavar="TOKENS|none", panel=LIMITS,
                           help="Tokens per prefill pass (chunked prefill, as vLLM and SGLang do by default with "
                                "8192); 'none' prefills the whole batch at once." + LENGTH_HELP)]
AllowLonger = Annotated[bool, opt("--allow-longer", panel=WORKLOAD,
                                  help="Allow prompt + generate beyond the model's maximum context.")]



@app.command("inference")
def inference_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    batch: Batch = 1,
    prompt: Prompt = 1024,
    generate: Generate = 256,
    gpu: GpuOrAll = "h100",
    gpus: TpGpus = 1,
    weights_dtype: WeightsDType = None,
    kv_dtype: KVDType = None,
    compute_dtype: ComputeDType = None,
    mfu: Mfu = 1.0,
    mbu: Mbu = 1.0,
    link_bandwidth: Link = None,
    allreduce_latency: Latency = 0.0,
    prefill_chunk: Chunk = DEFAULT_PREFILL_CHUNK,
    memory: Memory = None,
    reserve: Reserve = 0.0,
    allow_longer: AllowLonger = False,
    check: Check = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Serving napkin: weights + KV cache memory, prefill and decode time on the roofline, TTFT and tokens/s.

    Prefill is timed as max(FLOPs / peak, bytes / bandwidth), decode per step the same, with the bound
    named; MFU = MBU = 1 gives the ideal lower bound.

    With --check the exit status answers "does it fit?": 0 when weights + KV cache fit the GPUs, 3 when they do not
    (2: bad input); the output is the same.
    """
    from napkin import render
    from napkin.accounting.inference import ServingSetup, inference

    spec = model_of(ctx, model)
    serving = ServingSetup(batch=batch, prompt=prompt, generate=generate, weights_dtype=weights_dtype,
                           kv_dtype=kv_dtype, compute_dtype=compute_dtype, prefill_chunk=prefill_chunk or None, mfu=mfu,
                           mbu=mbu)

    def ask(hw: HardwareSpec) -> InferenceResult:
        return inference(spec, hw, serving, gpus=gpus, memory_bytes=memory, reserve_bytes=reserve,
                         link_bytes_per_s=link_bandwidth, allreduce_latency_s=allreduce_latency,
                         allow_longer=allow_longer)

    result: AcrossGpusResult | InferenceResult
    if gpu.strip().lower() == "all":
        from napkin.accounting.across_gpus import across_gpus
        from napkin.cli.context import state
        from napkin.specs.catalog import hardware_catalog

        result = across_gpus("inference", list(hardware_catalog(state(ctx).specs_dirs)), ask)
        fits = any(row.result is not None and row.result.fits for row in result.rows)
    else:
        result = ask(hardware(ctx, gpu))
        fits = result.fits
    render.show(result, as_json=json, explain=explain)
    exit_if_does_not_fit(check, fits)


@app.command("roofline")
def roofline_cmd(
    ctx: typer.Context,
    gpu: GpuOrAll = "h100",
    dtype: Annotated[str | None, opt("--dtype", metavar="DTYPE", help="Matmul dtype whose dense peak is the roof "
                                     "(default: bf16, fp16 on a GPU without bf16).")] = None,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME|FILE", help="Place one layer's operations of "
                                     "this model on the roofline.")] = None,
    batch: Annotated[int, opt("--batch", "-b", parser=whole("batch size"), metavar="B", help="Sequences.")] = 1,
    prompt: Annotated[int, opt("--prompt", "-p", parser=length("prompt length"), metavar="P",
                               help="Prompt tokens per sequence (prefill)." + LENGTH_HELP)] = 1024,
    context: Annotated[int, opt("--context", "-c", parser=length("context"), metavar="C",
                                help="Positions in the KV cache at the decode step." + LENGTH_HELP)] = 1024,
    weights_dtype: WeightsDType = None,
    kv_dtype: KVDType = None,
    plot: Plot = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """The roofline of a GPU (memory slope, compute roof, ridge point), with a model's operations placed on it."""
    from napkin import render
    from napkin.accounting.roofline import roofline

    if not model:
        refuse_unused(ctx, ["batch", "prompt", "context", "weights_dtype", "kv_dtype"], "without --model (they size "
                      "a model's operations; the roofline alone is the GPU's)", "give --model")
    spec = model_of(ctx, model) if model else None
    result = one_or_all(ctx, gpu, "roofline", lambda hw: roofline(
        hw, dtype, spec, batch=batch, prompt=prompt, context=context, weights_dtype=weights_dtype, kv_dtype=kv_dtype))
    if plot and getattr(result, "rows", None) is not None:
        raise InputError("--plot draws one GPU's roofline; name one with --gpu (not all)")
    if plot:
        from napkin.render.serve import plot_roofline

        plot_roofline(result, plot)  # before printing: a missing extra fails without half an output
    render.show(result, as_json=json, explain=explain)
    if plot:
        typer.echo(f"wrote {plot}", err=True)
