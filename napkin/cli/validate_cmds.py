"""`napkin validate`: a real training step, measured beside napkin's predictions. Parse, call one function, render.

Nothing here imports torch: napkin.bench.validate imports it when the measurement starts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from napkin.cli.bench_cmds import MEASURE, PEAK, Device, ProgressBar
from napkin.cli.context import model as resolve_model
from napkin.cli.context import renamed, state
from napkin.cli.finetune_options import Finetune, LoraEmbeddings, LoraRank, LoraTargets
from napkin.cli.options import (
    LENGTH_HELP,
    MODEL,
    Explain,
    Json,
    OldBatch,
    flop_rate,
    length,
    number,
    opt,
    whole,
)
from napkin.cli.root import app


@app.command("validate")
def validate_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME|FILE", panel=MODEL,
                                     help="The GPT-side model: a catalog model, a Hugging Face config.json or a "
                                          "model YAML (it must fit this device in fp32 with AdamW). Default: a tiny "
                                          "reference GPT (2 layers, d_model 64, GQA 4/2, SwiGLU, RoPE).")] = None,
    old_batch: OldBatch = None,
    batch: Annotated[int | None, opt("--micro-batch", "-b", parser=whole("micro-batch size"), metavar="b", panel=MODEL,
                                     help="Micro-batch of that model (default: 4 sequences; 2 for a linear "
                                          "net).")] = None,
    seq: Annotated[int | None, opt("--seq", "-s", parser=length("sequence length"), metavar="S", panel=MODEL,
                                   help="Sequence length (default: 128, or the model's max context if "
                                        "shorter)." + LENGTH_HELP)] = None,
    cruncher: Annotated[bool, opt("--cruncher/--no-cruncher", panel=MODEL,
                                  help="Also run CS336 lecture 2's Cruncher (deep linear net, D=4, L=2).")] = True,
    cruncher_batch: Annotated[int, opt("--cruncher-batch", parser=whole("batch"), metavar="B", panel=MODEL,
                                       help="The Cruncher's batch (the lecture's B = 2).")] = 2,
    device: Device = "auto",
    finetune: Finetune = "full",
    lora_rank: LoraRank = None,
    lora_targets: LoraTargets = None,
    lora_embeddings: LoraEmbeddings = False,
    warmup_ms: Annotated[float, opt("--warmup-ms", parser=number("warm-up"), metavar="MS", panel=MEASURE,
                                    help="Warm-up time before timing each model's step.")] = 250.0,
    iters: Annotated[int | None, opt("--iters", parser=whole("iterations"), metavar="N", panel=MEASURE,
                                     help="Timed steps per model (default: enough for ~1 s, at least 10).")] = None,
    gpu: Annotated[str | None, opt("--gpu", metavar="NAME", panel=PEAK,
                                   help="Catalog entry whose dense fp32 peak MFU is measured against, in place of "
                                        "the detected device.")] = None,
    peak: Annotated[float | None, opt("--peak", parser=flop_rate("peak FLOP/s"), metavar="RATE", panel=PEAK,
                                      help="Dense fp32 peak FLOP/s for MFU (needed on a CPU): 67TFLOP/s, "
                                           "200GFLOP/s or 6.7e13.")] = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """One real training step (forward, backward, AdamW) measured beside napkin's predictions.

    The lecture's Cruncher and a small GPT run in fp32 on this device.

    Compared: FLOPs (FlopCounterMode), bytes saved for backward, model state, peak memory (CUDA).

    Then the step is timed: FLOP/s and MFU. Exit 1 if FLOPs are off by > 1% or model state is not exact.

    --finetune lora: the GPT-side model under peft's LoRA (pip install peft), AdamW on the adapters only; also
    compared: trainable parameters against peft's count. qlora is refused (its nf4 base needs bitsandbytes on CUDA).
    """
    from napkin import render
    from napkin.bench.validate import validate_step

    spec = resolve_model(ctx, model) if model else None
    with ProgressBar(enabled=not json, describe=str) as progress:  # each phase: counting, then timing, per model
        result = validate_step(spec, batch=renamed("--batch", "--micro-batch", old_batch, batch),
                               seq=seq, cruncher=cruncher, cruncher_batch=cruncher_batch,
                               device=device, gpu=gpu, peak=peak, warmup_s=warmup_ms / 1e3, iters=iters,
                               specs_dirs=state(ctx).specs_dirs, progress=progress, finetune=finetune,
                               lora_rank=lora_rank, lora_targets=lora_targets, lora_embeddings=lora_embeddings)
    render.show(result, as_json=json, explain=explain)
    if not result.passed:
        raise typer.Exit(1)
