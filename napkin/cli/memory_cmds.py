"""`napkin memory`: the per-GPU ledger, its solvers (--max-batch, --min-gpus) and --gpu all."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from napkin.cli.app import app
from napkin.cli.context import hardware, state
from napkin.cli.options import Explain, Json, count, nbytes, opt, whole

PARALLEL = "Parallelism"
ACTS = "Activations"

Batch = Annotated[int, opt("--batch", "-b", parser=whole("micro-batch size"), metavar="B", panel=ACTS,
                           help="Micro-batch size: sequences per GPU per micro-batch.")]
Seq = Annotated[int | None, opt("--seq", "-s", parser=whole("sequence length"), metavar="S", panel=ACTS,
                                help="Sequence length in tokens (default: the model's max context).")]
Recompute = Annotated[str, opt("--recompute", metavar="none|selective|full", panel=ACTS,
                               help="Activation recomputation (Korthikanti 2022): selective drops the attention "
                               "core, full keeps only each layer's input.")]
Flash = Annotated[bool, opt("--flash-attention/--no-flash-attention", panel=ACTS,
                            help="FlashAttention stores no s×s matrix (removes the 5as/h term).")]
Tp = Annotated[int, opt("--tp", parser=whole("tensor-parallel degree"), metavar="T", panel=PARALLEL,
                        help="Tensor-parallel degree (must divide the heads and the GPUs).")]
Pp = Annotated[int, opt("--pp", parser=whole("pipeline-parallel degree"), metavar="P", panel=PARALLEL,
                        help="Pipeline stages (tp·pp must divide --gpus; pp must divide the layers).")]
Sp = Annotated[bool, opt("--sp", panel=PARALLEL, help="Megatron sequence parallelism: split norms and "
                         "block inputs over the TP ranks too.")]
MicroBatches = Annotated[int, opt("--micro-batches", parser=whole("micro-batch count"), metavar="M", panel=PARALLEL,
                                  help="Micro-batches per step; with --pp the first stage holds min(pp, M) of them.")]
Zero = Annotated[int, opt("--zero", min=0, max=3, metavar="0-3", panel=PARALLEL,
                          help="ZeRO stage over the data-parallel ranks G/(tp·pp): 1 optimizer state, "
                          "2 + gradients, 3 (= FSDP) + parameters.")]
Optimizer = Annotated[str, opt("--optimizer", metavar="NAME", help="sgd, sgd-momentum, adagrad, rmsprop, adam, "
                               "adamw, lion, adam-8bit, adafactor.")]
Precision = Annotated[str, opt("--precision", metavar="NAME", help="fp32, fp16-mixed, bf16-mixed, "
                               "bf16-mixed-fp32-grads, bf16, fp8-mixed.")]
Memory = Annotated[float | None, opt("--memory", parser=nbytes("memory per GPU"), metavar="BYTES",
                                     help="Memory per GPU in place of the datasheet's (80GB, 80GiB).")]
Reserve = Annotated[float, opt("--reserve", parser=nbytes("reserve"), metavar="BYTES",
                               help="Memory per GPU held back (CUDA context, fragmentation), e.g. 2GiB.")]


def model_spec(ctx: typer.Context, name: str) -> Any:
    from napkin.specs.catalog import get_model

    return get_model(name, state(ctx).specs_dirs)


@app.command("memory")
def memory_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME", help="Model from the catalog (`napkin "
                                     "models list`) or a config.json / YAML path.")] = None,
    params: Annotated[float | None, opt("--params", "-N", parser=count("parameter count"), metavar="N",
                                        help="Parameter count in place of --model: model state only.")] = None,
    batch: Batch = 1,
    seq: Seq = None,
    gpus: Annotated[int, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G", panel=PARALLEL,
                             help="Number of GPUs (G = DP · TP · PP).")] = 1,
    gpu: Annotated[str, opt("--gpu", metavar="NAME|all", help="Accelerator from `napkin hardware list`; 'all' "
                            "compares every GPU of the catalog.")] = "h100",
    optimizer: Optimizer = "adamw",
    precision: Precision = "bf16-mixed",
    recompute: Recompute = "none",
    flash: Flash = True,
    zero: Zero = 0,
    tp: Tp = 1,
    pp: Pp = 1,
    sp: Sp = False,
    micro_batches: MicroBatches = 1,
    dropout: Annotated[bool, opt("--dropout", panel=ACTS, help="Count dropout masks (GPT-2/3 style training; "
                                 "Korthikanti's 34 + 5as/h).")] = False,
    fused_norm: Annotated[bool, opt("--fused-norm/--composite-norm", panel=ACTS, help="RMSNorm as a fused kernel "
                                    "(saves x) or torch's eager composite (also saves x·rsqrt).")] = True,
    memory: Memory = None,
    reserve: Reserve = 0.0,
    max_batch: Annotated[bool, opt("--max-batch", help="Solve for the largest micro-batch that fits.")] = False,
    min_gpus: Annotated[bool, opt("--min-gpus", help="Solve for the fewest GPUs (multiples of tp·pp) that "
                                  "fit.")] = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Per-GPU memory for training: parameters, gradients, master weights, optimizer states, activations.

    Example: napkin memory --model llama3-8b --batch 1 --seq 4096 --gpus 8 --zero 3
    """
    from napkin import render
    from napkin.accounting import memory_solvers as solve
    from napkin.accounting.memory import memory_ledger
    from napkin.errors import InputError

    spec = model_spec(ctx, model) if model is not None else None
    setup: dict[str, Any] = dict(batch=batch, seq=seq, gpus=gpus, optimizer=optimizer, precision=precision,
                                 recompute=recompute, flash=flash, zero=zero, tp=tp, pp=pp, sp=sp,
                                 micro_batches=micro_batches, dropout=dropout, fused_norm=fused_norm,
                                 reserve_bytes=reserve)
    if sum([max_batch, min_gpus, gpu.strip().lower() == "all"]) > 1:
        raise InputError("ask one question at a time: --max-batch, --min-gpus or --gpu all")
    if gpu.strip().lower() == "all":
        from napkin.specs.catalog import hardware_catalog

        result: Any = solve.compare_gpus(list(hardware_catalog(state(ctx).specs_dirs)), spec, params=params, **setup)
    elif max_batch:
        if params is not None:
            raise InputError("--max-batch needs an architecture (--model), not --params")
        result = solve.max_micro_batch(hardware(ctx, gpu), spec, memory_bytes=memory, **setup)
    elif min_gpus:
        result = solve.min_gpus(hardware(ctx, gpu), spec, params=params, memory_bytes=memory, **setup)
    else:
        result = memory_ledger(hardware(ctx, gpu), spec, params=params, memory_bytes=memory, **setup)
    render.show(result, as_json=json, explain=explain)
