"""`napkin memory`: the per-GPU ledger, its solvers (--max-batch, --min-gpus) and --gpu all."""

from __future__ import annotations

from typing import Annotated

import typer

from napkin.cli.context import hardware, renamed, state
from napkin.cli.context import model as model_of
from napkin.cli.finetune_options import (
    BaseDtype,
    DoubleQuant,
    Finetune,
    LoraEmbeddings,
    LoraRank,
    LoraTargets,
    Offload,
    PagedOptimizer,
)
from napkin.cli.options import (
    ACTS,
    CUSTOM_GPU_HELP,
    PARALLEL,
    Check,
    Cp,
    DpShard,
    EmbeddingInSplit,
    Ep,
    Etp,
    Explain,
    FirstStage,
    FitReserve,
    Flash,
    Json,
    LastStage,
    LossInSplit,
    Memory,
    OffloadLayers,
    OldBatch,
    Optimizer,
    Pp,
    Precision,
    Recompute,
    Seq,
    Sp,
    Tp,
    Vp,
    Zero,
    count,
    exit_if_does_not_fit,
    opt,
    whole,
)
from napkin.cli.root import app, refuse_unused

MicroBatchOpt = Annotated[int | None, opt("--micro-batch", "-b", parser=whole("micro-batch size"), metavar="b",
                                          panel=ACTS, help="Micro-batch size: sequences per GPU per micro-batch "
                                          "(default 1).")]
MicroBatches = Annotated[int, opt("--micro-batches", parser=whole("micro-batch count"), metavar="M", panel=PARALLEL,
                                  help="Micro-batches per step; with --pp the first stage holds min(pp, M) of them.")]



@app.command("memory")
def memory_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME", help="Model from the catalog (`napkin "
                                     "models list`) or a config.json / YAML path.")] = None,
    params: Annotated[float | None, opt("--params", "-N", parser=count("parameter count"), metavar="N",
                                        help="Parameter count in place of --model: model state only.")] = None,
    micro_batch: MicroBatchOpt = None,
    batch: OldBatch = None,
    seq: Seq = None,
    gpus: Annotated[int, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G", panel=PARALLEL,
                             help="Number of GPUs (G = DP · TP · PP).")] = 1,
    gpu: Annotated[str, opt("--gpu", metavar="NAME|all", help="Accelerator from `napkin hardware list`; 'all' "
                            "compares every GPU of the catalog" + CUSTOM_GPU_HELP + ".")] = "h100",
    optimizer: Optimizer = "adamw",
    precision: Precision = "bf16-mixed",
    recompute: Recompute = "none",
    flash: Flash = True,
    zero: Zero = None,  # type: ignore[assignment]  # default: 3 over more than one DP rank, else 0
    tp: Tp = 1,
    pp: Pp = 1,
    sp: Sp = False,
    vp: Vp = 1,
    cp: Cp = 1,
    ep: Ep = 1,
    etp: Etp = None,
    dp_shard: DpShard = None,
    first_stage_layers: FirstStage = None,
    last_stage_layers: LastStage = None,
    embedding_in_split: EmbeddingInSplit = False,
    loss_in_split: LossInSplit = False,
    offload_layers: OffloadLayers = 0,
    micro_batches: MicroBatches = 1,
    dropout: Annotated[bool, opt("--dropout", panel=ACTS, help="Count dropout masks (GPT-2/3 style training; "
                                 "Korthikanti's 34 + 5as/h).")] = False,
    fused_norm: Annotated[bool, opt("--fused-norm/--composite-norm", panel=ACTS, help="RMSNorm as a fused kernel "
                                    "(saves x) or torch's eager composite (also saves x·rsqrt).")] = True,
    memory: Memory = None,
    reserve: FitReserve = None,
    finetune: Finetune = "full",
    lora_rank: LoraRank = None,
    lora_targets: LoraTargets = None,
    base_dtype: BaseDtype = None,
    double_quant: DoubleQuant = None,
    lora_embeddings: LoraEmbeddings = False,
    paged_optimizer: PagedOptimizer = False,
    offload: Offload = "none",
    max_batch: Annotated[bool, opt("--max-batch", help="Solve for the largest micro-batch that fits.")] = False,
    min_gpus: Annotated[bool, opt("--min-gpus", help="Solve for the fewest GPUs (multiples of tp·pp) that "
                                  "fit.")] = False,
    check: Check = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Per-GPU memory for training: parameters, gradients, master weights, optimizer states, activations.

    Example: napkin memory --model llama3-8b --micro-batch 1 --seq 4096 --gpus 8 --zero 3

    Fine-tuning: --finetune lora|qlora (adapters on a frozen base; --lora-rank, --lora-targets, --base-dtype),
    --offload optimizer|optimizer+params (host memory and PCIe traffic); every ledger also gives the checkpoint size.

    With --check the exit status answers "does it fit?": 0 when it fits, 3 when it does not (2: bad input); the
    output is the same. With --max-batch, 3 means not even one sequence fits; with --min-gpus, no GPU count
    fits; with --gpu all, no GPU of the catalog fits.
    """
    from napkin import render
    from napkin.accounting.finetune import FinetuneSetup
    from napkin.accounting.memory import TrainingSetup
    from napkin.accounting.memory_solvers import memory_question

    if pp <= 1:  # micro-batches set how many activations a pipeline stage holds in flight; nothing else reads them
        refuse_unused(ctx, ["micro_batches"], "without --pp (the ledger reads the micro-batch count only for a "
                      "pipeline stage's in-flight activations)", "give --pp 2 or more")
    every = gpu.strip().lower() == "all"
    if every:
        from napkin.specs.catalog import hardware_catalog
    result = memory_question(
        model_of(ctx, model) if model is not None else None,
        list(hardware_catalog(state(ctx).specs_dirs)) if every else hardware(ctx, gpu),
        TrainingSetup(micro_batch=renamed("--batch", "--micro-batch", batch, micro_batch) or 1,
                      seq=seq, optimizer=optimizer, precision=precision, recompute=recompute,
                      flash=flash, dropout=dropout, fused_norm=fused_norm),
        finetune=FinetuneSetup(finetune=finetune, lora_rank=lora_rank, lora_targets=lora_targets, base_dtype=base_dtype,
                               double_quant=double_quant, lora_embeddings=lora_embeddings,
                               paged_optimizer=paged_optimizer, offload=offload),
        max_batch=max_batch, min_gpus=min_gpus, params=params, memory_bytes=memory, reserve_bytes=reserve,
        gpus=gpus, tp=tp, pp=pp, vp=vp, cp=cp, ep=ep, sp=sp, zero=zero, micro_batches=micro_batches, etp=etp,
        dp_shard=dp_shard, first_stage_layers=first_stage_layers, last_stage_layers=last_stage_layers,
        embedding_in_split=embedding_in_split, loss_in_split=loss_in_split, offload_layers=offload_layers)
    render.show(result, as_json=json, explain=explain)
    exit_if_does_not_fit(check, result.fits)
