"""`napkin models list|show`, `napkin flops`, `napkin mfu`: architectures, their exact FLOPs, MFU/HFU."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from napkin.cli.context import hardware, renamed, state
from napkin.cli.context import model as model_of
from napkin.cli.finetune_options import Finetune, LoraEmbeddings, LoraRank, LoraTargets
from napkin.cli.options import (
    MODEL,
    MODEL_HELP,
    Causal,
    DTypeOpt,
    Explain,
    Gpu,
    Json,
    ModelOpt,
    Recompute,
    Seq,
    StepTime,
    count,
    number,
    old_name,
    opt,
    whole,
)
from napkin.cli.root import app

LINEAR = "Linear net (cruncher) shape"

Width = Annotated[int | None, opt("--width", parser=whole("width"), metavar="D", panel=LINEAR,
                                  help="Linear net only: width D of the D×D layers (the matmul's inner dim).")]
Depth = Annotated[int | None, opt("--depth", min=0, metavar="L", panel=LINEAR,
                                  help="Linear net only: number of D×D layers; 0 leaves the head alone: one "
                                       "(B,D)@(D,K) matmul, 2BDK FLOPs.")]
Out = Annotated[int | None, opt("--out", parser=whole("head width"), metavar="K", panel=LINEAR,
                                help="Linear net only: the head's output width K.")]

models_app = typer.Typer(help="The architecture catalog: shapes, sources, parameters per component.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def resolve_model(ctx: typer.Context, name: str, width: int | None = None, depth: int | None = None,
           out: int | None = None) -> Any:
    from napkin.specs.model import resize_linear

    return resize_linear(model_of(ctx, name), width, depth, out)


@models_app.command("list")
def models_list(ctx: typer.Context, json: Json = False) -> None:
    """List every model: shape, total and active parameters."""
    from napkin import render
    from napkin.accounting.catalog_query import list_models

    render.show(list_models(state(ctx).specs_dirs), as_json=json)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                        help="Catalog name or alias (llama3-8b, gpt2), a config.json / YAML path, "
                                             "or a Hugging Face Hub id org/name[@revision] (its config.json only, "
                                             "cached; at most NAPKIN_HUB_TIMEOUT s, default 30).")],
    offline: Annotated[bool, opt("--offline", help="Hub ids: read config.json from the Hub cache only, never the "
                                                   "network (also HF_HUB_OFFLINE=1).")] = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """One model's shape and its parameters per component: total, active (MoE), non-embedding.

    NAME may be a Hub id (meta-llama/Llama-3.2-1B): napkin fetches its config.json only, once, into the Hub cache.
    """
    from napkin import render
    from napkin.accounting.catalog_query import show_model
    from napkin.cli.context import hub_offline

    hub_offline(ctx, name, offline)
    spec = model_of(ctx, name)  # as --model reads it: a Hub id with --offline and the terminal's notice
    render.show(show_model(name, state(ctx).specs_dirs, spec=spec), as_json=json, explain=explain)


@app.command("flops")
def flops_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    tokens: Annotated[float | None, opt("--tokens", "-D", parser=count("token count"), metavar="D",
                                        help="Training tokens (15T, 1e12). Linear net: the batch B of examples.")
                      ] = None,
    batch: Annotated[int | None, opt("--batch", "-b", parser=whole("batch"), metavar="B",
                                     help="Sequences, in place of --tokens: D = B·S. Linear net: examples.")] = None,
    seq: Seq = None,
    recompute: Recompute = "none",
    causal: Causal = True,
    width: Width = None,
    depth: Depth = None,
    out: Out = None,
    finetune: Finetune = "full",
    lora_rank: LoraRank = None,
    lora_targets: LoraTargets = None,
    lora_embeddings: LoraEmbeddings = False,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """Exact training FLOPs per component (forward, backward = 2 × forward, recompute) beside 6ND.

    Counts every matmul from the architecture's shapes: QKV/out projections (GQA, MLA), attention scores
    and values (causal-halved unless --no-causal), MLP (2 or 3 matrices), MoE router, top-k and shared
    experts, LM head. Model FLOPs (MFU) vs hardware FLOPs (HFU, with --recompute).

    The lecture's examples run through the linear net ("cruncher": L D×D layers and a D→K head, B examples):

      napkin flops -m cruncher --tokens 2                                → 432 (6·B·params)

      napkin flops -m cruncher --width 32768 --depth 1 --out 8192 -D 16384  → fwd 2BD²+2BDK = 4.398e13

      napkin flops -m cruncher --width 32768 --depth 0 --out 8192 -D 16384  → one matmul: 2BDK = 8.796e12

    Fine-tuning (--finetune lora|qlora): frozen matrices cost forward + activation gradients only (no weight
    gradients), the adapters forward + backward: ≈ 4N + 6·N_adapter per token, beside full fine-tuning.
    """
    from napkin import render
    from napkin.accounting.finetune_flops import finetune_flops

    spec = resolve_model(ctx, model, width, depth, out)
    result = finetune_flops(spec, tokens=tokens, batch=batch, seq=seq, causal=causal,
                            recompute=recompute, finetune=finetune, lora_rank=lora_rank,  # type: ignore[arg-type]
                            lora_targets=lora_targets, lora_embeddings=lora_embeddings)
    render.show(result, as_json=json, explain=explain)


@app.command("mfu")
def mfu_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, opt("--model", "-m", metavar="NAME|FILE", panel=MODEL,
                                     help=MODEL_HELP + " Counts the exact FLOPs per token; leave it out with "
                                     "--params (6N per token) or a --tflops-per-gpu quote alone.")] = None,
    gpus: Annotated[int | None, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G",
                                    help="Number of GPUs (needed with a throughput; with --tflops-per-gpu, 1 if "
                                         "left out).")] = None,
    tokens_per_s: Annotated[float | None, opt("--tokens-per-s", parser=count("tokens per second"), metavar="X",
                                              help="Observed training throughput, whole cluster (tokens/s).")] = None,
    step_time: StepTime = None,
    global_batch: Annotated[int | None, opt("--global-batch", "-B", parser=whole("global batch"), metavar="B",
                                            help="Sequences per step, whole cluster (with --step-time).")] = None,
    batch: Annotated[int | None, old_name("--batch", "--global-batch", "global batch")] = None,
    tflops_per_gpu: Annotated[float | None, opt("--tflops-per-gpu", parser=number("TFLOP/s per GPU"), metavar="X",
                                                help="A quoted model TFLOP/s per GPU, in place of a throughput: "
                                                     "MFU = X / dense peak; tokens/s too with --model or "
                                                     "--params.")] = None,
    params: Annotated[float | None, opt("--params", "-N", parser=count("parameter count"), metavar="N",
                                        panel=MODEL, help="Parameters, in place of --model: 6N FLOPs per token "
                                                          "(no architecture; attention left out).")] = None,
    seq: Seq = None,
    gpu: Gpu = "h100",
    dtype: DTypeOpt = "bf16",
    recompute: Recompute = "none",
    causal: Causal = True,
    width: Width = None,
    depth: Depth = None,
    out: Out = None,
    json: Json = False,
    explain: Explain = False,
) -> None:
    """MFU and HFU from an observed throughput, against the dtype's dense peak; 6N vs 6N + attention beside.

    MFU counts model FLOPs (forward + backward, exact); HFU adds recomputation (--recompute), as
    Megatron-LM, OPT and BLOOM report.

      napkin mfu -m llama3-8b --tokens-per-s 9000 --gpus 8       → exact FLOPs per token

      napkin mfu --params 7e9 --tokens-per-s 3e4 --gpus 8        → 6N per token, no architecture

      napkin mfu --tflops-per-gpu 400 --gpu h100 -m llama3-8b    → MFU = 400 / 989.5, and tokens/s
    """
    from napkin import render
    from napkin.accounting.mfu import mfu

    if model is None and (width, depth, out) != (None, None, None):
        from napkin.errors import InputError

        raise InputError("--width, --depth and --out reshape a linear net: they need --model cruncher")
    spec = None if model is None else resolve_model(ctx, model, width, depth, out)
    result = mfu(spec, hardware(ctx, gpu), gpus, tokens_per_s=tokens_per_s, step_time_s=step_time,
                 global_batch=renamed("--batch", "--global-batch", batch, global_batch),
                 seq=seq, dtype=dtype, causal=causal, params=params, tflops_per_gpu=tflops_per_gpu,
                 recompute=recompute)  # type: ignore[arg-type]  # a str: mfu's input model refuses a bad one
    render.show(result, as_json=json, explain=explain)
