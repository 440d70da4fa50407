"""Calculator commands: train-time, max-model, budget. Parse, call one API function, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from napkin.cli.context import hardware, one_or_all, renamed, state
from napkin.cli.context import model as model_of
from napkin.cli.context import stack as stack_of
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
    MODEL,
    PARALLEL,
    Calibration,
    Causal,
    Check,
    Cp,
    DpShard,
    DTypeOpt,
    EmbeddingInSplit,
    Ep,
    Etp,
    Explain,
    FirstStage,
    FitReserve,
    Flash,
    GlobalBatch,
    GpuOrAll,
    Gpus,
    Hfu,
    InterBandwidth,
    IntraBandwidth,
    Json,
    LastStage,
    LossInSplit,
    Memory,
    Mfu,
    MicroBatch,
    NodeSize,
    OffloadLayers,
    OldBatch,
    Optimizer,
    Pp,
    Precision,
    Recompute,
    Seq,
    Sp,
    Sparse,
    StackOpt,
    Tp,
    Vp,
    Zero,
    count,
    exit_if_does_not_fit,
    number,
    opt,
    whole,
)
from napkin.cli.options import (
    days as days_of,
)
from napkin.cli.root import app, refuse_unused


@app.command("train-time")
def train_time_cmd(
    ctx: typer.Context,
    gpus: Gpus,
    params: Annotated[float | None, opt("--params", "-N", parser=count("parameter count"), metavar="N",
                                        help="Parameters: 70e9, 70B, 1.5T.")] = None,
    tokens: Annotated[float | None, opt("--tokens", "-D", parser=count("token count"), metavar="D",
                                        help="Training tokens: 15e12, 15T.")] = None,
    flops: Annotated[float | None, opt("--flops", parser=count("FLOP count"), metavar="C",
                                       help="Total training FLOPs, in place of 6ND.")] = None,
    gpu: GpuOrAll = "h100",
    dtype: DTypeOpt = "bf16",
    mfu: Mfu = None,
    sparse: Sparse = False,
    price: Annotated[float | None, opt("--price-per-gpu-hour", parser=number("price per GPU-hour"), metavar="$",
                                       help="Price of one GPU-hour, to print the cost.")] = None,
    pue: Annotated[float, opt("--pue", parser=number("PUE"), metavar="X",
                              help="Datacenter power usage effectiveness (>= 1) for the energy estimate.")] = 1.0,
    mfu_from: Annotated[Path | None, opt("--mfu-from", metavar="FILE", help="Plan at the MFU measured by `napkin "
                                         "bench-matmul --save FILE` × --mfu-fraction, in place of --mfu.")] = None,
    mfu_fraction: Annotated[float | None, opt("--mfu-fraction", parser=number("MFU fraction"), metavar="F",
                                              help="With --mfu-from: the share of the measured matmul MFU a "
                                              "training step reaches (default 0.6, see --explain).")] = None,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME|FILE", panel=MODEL, help="Count this "
                                     "architecture's exact FLOPs (catalog name or config.json) in place of 6ND; "
                                     "needs --tokens.")] = None,
    seq: Seq = None,
    recompute: Recompute = "none",
    hfu: Hfu = None,
    tp: Tp = None,  # type: ignore[assignment]
    pp: Pp = None,  # type: ignore[assignment]
    vp: Vp = None,  # type: ignore[assignment]
    cp: Cp = None,  # type: ignore[assignment]
    ep: Ep = None,  # type: ignore[assignment]
    micro_batch: MicroBatch = None,  # type: ignore[assignment]
    global_batch: GlobalBatch = None,
    sp: Sp = False,
    zero: Zero = 0,
    etp: Etp = None,
    dp_shard: DpShard = None,
    first_stage_layers: FirstStage = None,
    last_stage_layers: LastStage = None,
    embedding_in_split: EmbeddingInSplit = False,
    loss_in_split: LossInSplit = False,
    offload_layers: OffloadLayers = 0,
    precision: Precision = "bf16-mixed",
    node_size: NodeSize = None,
    intra_node_bandwidth: IntraBandwidth = None,
    inter_node_bandwidth: InterBandwidth = None,
    calibration: Calibration = None,
    stack: StackOpt = None,
    causal: Causal = True,
    plan: Annotated[bool, opt("--plan", panel=PARALLEL, help="Plan at the MFU of the fastest layout `napkin plan` "
                              "finds (needs --model, --tokens, --global-batch and --seq).")] = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Days, GPU-hours, cost and energy to train: C = 6ND over G GPUs at an MFU.

    The defaults are the lecture's: H100, bf16 dense peak (989.5 TFLOP/s), MFU 0.5. With a layout (--model, --tokens
    and any of --tp, --pp, --vp, --cp, --ep, --micro-batch, --global-batch) the MFU is the one `napkin step-time`
    predicts for that layout, in place of --mfu; with --plan, the fastest layout `napkin plan` finds.
    """
    from napkin import render
    from napkin.bench.train_question import train_time_question

    all_gpus = gpu.strip().lower() == "all"
    layout = dict(tp=tp, pp=pp, vp=vp, cp=cp, ep=ep, micro_batch=micro_batch, global_batch=global_batch)
    if not all_gpus or not (mfu_from is not None or plan):  # that mistake is named by the question itself
        _refuse_ignored_train_flags(ctx, model=model, mfu_from=mfu_from, plan=plan,
                                    with_layout=any(v is not None for v in layout.values()))
    if all_gpus:
        from napkin.specs.catalog import hardware_catalog
    result = train_time_question(
        list(hardware_catalog(state(ctx).specs_dirs)) if all_gpus else hardware(ctx, gpu), gpus, params, tokens,
        model=model_of(ctx, model) if model is not None else None, mfu=mfu, hfu=hfu, mfu_from=mfu_from,
        mfu_fraction=mfu_fraction, plan=plan, layout=layout, price_per_gpu_hour=price, pue=pue, seq=seq,
        recompute=recompute, flops=flops, dtype=dtype, sparse=sparse, causal=causal,
        step=dict(sp=sp, zero=zero, etp=etp, dp_shard=dp_shard, first_stage_layers=first_stage_layers,
                  last_stage_layers=last_stage_layers, embedding_in_split=embedding_in_split,
                  loss_in_split=loss_in_split, offload_layers=offload_layers, precision=precision, node_size=node_size,
                  intra_node_bandwidth=intra_node_bandwidth, inter_node_bandwidth=inter_node_bandwidth,
                  calibration=calibration, stack=stack_of(ctx, stack)))
    render.show(result, as_json=json, explain=explain)


_LAYOUT_ONLY = ("sp", "zero", "etp", "dp_shard", "first_stage_layers", "last_stage_layers", "embedding_in_split",
                "loss_in_split", "offload_layers", "precision", "node_size", "intra_node_bandwidth",
                "inter_node_bandwidth", "calibration", "stack")
_SEARCHED = ("tp", "pp", "vp", "cp", "ep", "micro_batch", "sp", "zero", "recompute", "etp", "dp_shard",
             "first_stage_layers", "last_stage_layers", "embedding_in_split", "loss_in_split", "offload_layers")


def _refuse_ignored_train_flags(ctx: typer.Context, *, model: str | None, mfu_from: Path | None, plan: bool,
                                with_layout: bool) -> None:
    """Each train-time mode reads some flags; one that its mode would drop is refused, naming what it needs."""
    if mfu_from is None:
        refuse_unused(ctx, ["mfu_fraction"], "without --mfu-from (it scales the MFU measured in that file)",
                      "give --mfu-from FILE")
    if plan or with_layout:
        if model is None:
            return  # the layout's own check comes first: it needs --model and --tokens
        how = "--plan" if plan else "a layout"
        refuse_unused(ctx, ["params", "flops", "dtype", "sparse", "causal"], f"with {how}, which counts --model's "
                      "exact FLOPs at the dense peak of --precision's compute dtype",
                      f"drop {how} to plan at an --mfu with them")
        if plan:
            refuse_unused(ctx, _SEARCHED, "with --plan, which searches them", "run `napkin step-time` for one layout")
        return
    if model is None:
        refuse_unused(ctx, ["seq", "causal"], "without --model (6ND has no sequence length)",
                      "give --model for its exact FLOPs")
    refuse_unused(ctx, _LAYOUT_ONLY, "without a layout (only the MFU step-time predicts for a layout reads them)",
                  "give --model, --tokens and a layout (--tp, --pp, --micro-batch, ...) or --plan")


@app.command("max-model")
def max_model_cmd(
    ctx: typer.Context,
    gpus: Gpus,
    optimizer: Optimizer = "adamw",
    precision: Precision = "bf16-mixed",
    zero: Zero = 3,
    gpu: GpuOrAll = "h100",
    memory: Memory = None,
    reserve: FitReserve = None,
    seq: Seq = None,
    micro_batch_: Annotated[int | None, opt("--micro-batch", "-b", parser=whole("micro-batch size"), metavar="b",
                                            panel=ACTS, help="Micro-batch size; with --seq, counts activations "
                                            "too.")] = None,
    old_batch: OldBatch = None,
    like: Annotated[str | None, opt("--like", metavar="MODEL", panel=ACTS, help="Model family to scale at a "
                                    "fixed d_model/layers (default llama3-8b when --seq/--micro-batch is "
                                    "given).")] = None,
    aspect: Annotated[float | None, opt("--aspect", parser=number("aspect ratio"), metavar="R", panel=ACTS,
                                        help="d_model / layers of the scaled family (default: the --like model's).")
                      ] = None,
    recompute: Recompute = "none",
    flash: Flash = True,
    tp: Tp = 1,
    pp: Pp = 1,
    finetune: Finetune = "full",
    lora_rank: LoraRank = None,
    lora_targets: LoraTargets = None,
    base_dtype: BaseDtype = None,
    double_quant: DoubleQuant = None,
    lora_embeddings: LoraEmbeddings = False,
    paged_optimizer: PagedOptimizer = False,
    offload: Offload = "none",
    check: Check = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Largest model that fits G GPUs: model state only (the lecture's napkin), or with activations.

    Without --seq, --micro-batch, --like or --aspect it counts parameters, gradients, master weights and optimizer
    state only. With any of them it scales a model family (--like, default llama3-8b; --seq defaults to its
    pre-training length) and counts activations too. With --finetune lora|qlora (or --offload) it always scales
    the family: the adapters need an architecture (`napkin max-model --finetune qlora --gpus 1 --gpu l4 --seq 2048`).
    """
    from napkin import render
    from napkin.accounting.finetune import FinetuneSetup
    from napkin.accounting.memory_solvers import counts_activations, max_model_question

    tune = FinetuneSetup(finetune=finetune, lora_rank=lora_rank, lora_targets=lora_targets, base_dtype=base_dtype,
                         double_quant=double_quant, lora_embeddings=lora_embeddings, paged_optimizer=paged_optimizer,
                         offload=offload)
    batch = renamed("--batch", "--micro-batch", old_batch, micro_batch_)
    if not counts_activations(seq=seq, batch=batch, like=like, aspect=aspect, finetune=tune):
        refuse_unused(ctx, ["tp", "pp", "recompute", "flash"], "without --seq, --micro-batch, --like or --aspect "
                      "(model state alone: parameters, gradients and optimizer state, sharded by --zero)",
                      "give --seq and --micro-batch to count activations")
    family = model_of(ctx, like) if like is not None else None
    result = one_or_all(ctx, gpu, "max-model", lambda hw: max_model_question(
        hw, gpus, optimizer=optimizer, precision=precision, zero=zero, memory_bytes=memory, reserve_bytes=reserve,
        seq=seq, batch=batch, like=family, aspect=aspect, recompute=recompute, flash=flash, tp=tp, pp=pp,
        finetune=tune))
    render.show(result, as_json=json, explain=explain)
    exit_if_does_not_fit(check, _fits(result))


def _fits(result: Any) -> bool:
    """A result's answer to --check; across every GPU, whether any one fits."""
    rows = getattr(result, "rows", None)
    if rows is not None:
        return any(row.result is not None and row.result.fits for row in rows)
    return bool(result.fits)


@app.command("budget")
def budget_cmd(
    ctx: typer.Context,
    gpus: Annotated[int | None, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G",
                                    help="Number of GPUs (with --flops it may be left out: N, D and the GPU-hours "
                                         "need no count; the days do).")] = None,
    days: Annotated[float | None, opt("--days", parser=days_of("wall-clock time"), metavar="T",
                                      help="Wall-clock time: days (7), or with a unit: 36h, 2w, 90min, 3600s.")
                    ] = None,
    flops: Annotated[float | None, opt("--flops", parser=count("FLOP count"), metavar="C",
                                       help="The compute budget C, in place of --days: how long it takes.")] = None,
    price: Annotated[float | None, opt("--price-per-gpu-hour", parser=number("price per GPU-hour"), metavar="$",
                                       help="Price of one GPU-hour, to print the cost.")] = None,
    gpu: GpuOrAll = "h100",
    dtype: DTypeOpt = "bf16",
    mfu: Mfu = None,
    sparse: Sparse = False,
    tokens_per_param: Annotated[float, opt("--tokens-per-param", parser=number("tokens per parameter"), metavar="R",
                                           help="D/N ratio for the compute-optimal split (Chinchilla: 20).")] = 20.0,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME|FILE", panel=MODEL, help="Also print the "
                                     "tokens the budget trains this architecture on, at its exact FLOPs per token."
                                     )] = None,
    seq: Seq = None,
    recompute: Recompute = "none",
    hfu: Hfu = None,
    causal: Causal = True,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """FLOPs a cluster delivers in T days (or how long a budget of --flops takes), and the compute-optimal N and D
    for them (C = 6ND, D = 20N).

    MFU defaults to 1 (the datasheet ceiling, as in the lecture); pass --mfu for a realistic budget.
    """
    from napkin import render
    from napkin.accounting.training import budget

    if model is None:
        refuse_unused(ctx, ["seq", "causal"], "without --model (the budget in FLOPs has no sequence length)",
                      "give --model for the tokens it buys")
        if hfu is None:
            refuse_unused(ctx, ["recompute"], "without --model or --hfu (recomputation spends hardware FLOPs; an "
                          "--mfu budget counts model FLOPs)", "give --hfu, or --model")
    spec = model_of(ctx, model) if model is not None else None
    result = one_or_all(ctx, gpu, "budget", lambda hw: budget(
        hw, gpus, days, flops=flops, price_per_gpu_hour=price, causal=causal, dtype=dtype, mfu=mfu, sparse=sparse,
        tokens_per_param=tokens_per_param, model=spec, seq=seq, recompute=recompute, hfu=hfu))  # type: ignore[arg-type]
    render.show(result, as_json=json, explain=explain)
