"""`napkin step-time`: one training step predicted from its layout. Parse, call one API function, render."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from napkin.cli.context import hardware
from napkin.cli.context import model as model_of
from napkin.cli.context import stack as stack_of
from napkin.cli.options import (
    Calibration,
    Cp,
    DpShard,
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
    InterBandwidth,
    IntraBandwidth,
    Json,
    LastStage,
    LossInSplit,
    MicroBatch,
    ModelOpt,
    NodeSize,
    OffloadLayers,
    OverlapGrad,
    Pp,
    Precision,
    Recompute,
    Seq,
    Sp,
    StackOpt,
    Tp,
    Vp,
    Zero,
)
from napkin.cli.root import app

if TYPE_CHECKING:  # annotations only: the command imports what it runs when it runs
    from napkin.accounting.across_gpus import AcrossGpusResult
    from napkin.accounting.step_time import StepTimeResult
    from napkin.specs.hardware import HardwareSpec


@app.command("step-time")
def step_time_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    gpus: Gpus,
    gpu: GpuOrAll = "h100",
    tp: Tp = 1,
    pp: Pp = 1,
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
    micro_batch: MicroBatch = 1,
    global_batch: GlobalBatch = None,
    seq: Seq = None,
    recompute: Recompute = "none",
    sp: Sp = False,
    zero: Zero = 0,
    precision: Precision = "bf16-mixed",
    flash: Flash = True,
    overlap_grad_reduce: OverlapGrad = None,
    stack: StackOpt = None,
    node_size: NodeSize = None,
    intra_node_bandwidth: IntraBandwidth = None,
    inter_node_bandwidth: InterBandwidth = None,
    calibration: Calibration = None,
    reserve: FitReserve = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Predict one training step from its parallel layout: time, tokens/s, MFU, and where the time goes.

    GPUs = TP · CP · DP · PP; m = global batch / (micro-batch · DP) micro-batches per pipeline.

    Example:

      napkin step-time --model llama3-70b --gpu h100 --gpus 1024 --tp 8 --pp 4 --micro-batch 1
        --global-batch 1024 --seq 8192 --recompute selective --sp
    """
    from napkin import render
    from napkin.accounting.step_time import step_time

    spec = model_of(ctx, model)
    stk = stack_of(ctx, stack)

    def ask(hw: HardwareSpec) -> StepTimeResult:
        return step_time(spec, hw, gpus=gpus, tp=tp, pp=pp, vp=vp, cp=cp, ep=ep, sp=sp, zero=zero, etp=etp,
                         dp_shard=dp_shard, first_stage_layers=first_stage_layers,
                         last_stage_layers=last_stage_layers, embedding_in_split=embedding_in_split,
                         loss_in_split=loss_in_split, offload_layers=offload_layers,
                         micro_batch=micro_batch, global_batch=global_batch, seq=seq,
                         recompute=recompute,  # type: ignore[arg-type]  # a str: step_time refuses a bad one
                         precision=precision, flash=flash, overlap_grad_reduce=overlap_grad_reduce,
                         node_size=node_size, intra_node_bandwidth=intra_node_bandwidth,
                         inter_node_bandwidth=inter_node_bandwidth, stack=stk, calibration=calibration,
                         reserve_bytes=reserve)

    result: AcrossGpusResult | StepTimeResult
    if gpu.strip().lower() == "all":
        from napkin.accounting.across_gpus import across_gpus
        from napkin.cli.context import state
        from napkin.specs.catalog import hardware_catalog

        result = across_gpus("step-time", list(hardware_catalog(state(ctx).specs_dirs)), ask)
    else:
        result = ask(hardware(ctx, gpu))
    render.show(result, as_json=json, explain=explain)
