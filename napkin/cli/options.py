"""Shared typer options: the parsing of numbers with units happens here, the checking in the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from napkin import units
from napkin.errors import InputError

CATALOG = "Catalog"
OUTPUT = "Output"


def _parser(fn: Callable[[str, str], Any], what: str) -> Callable[[str], Any]:
    """Wrap a units parser so its InputError reads as a bad value of this option."""

    def parse(text: str) -> Any:
        if not isinstance(text, str):  # a default value, already parsed
            return text
        try:
            return fn(text, what)
        except InputError as e:
            raise typer.BadParameter(str(e)) from None

    return parse


def count(what: str) -> Callable[[str], float]:
    """Counts with SI suffixes (70e9, 70B, 1.5T, 512k)."""
    return _parser(units.parse_count, what)


def whole(what: str) -> Callable[[str], int]:
    """Positive whole numbers, suffixes allowed (1024, 1k)."""
    return _parser(units.parse_positive_int, what)


def length(what: str) -> Callable[[str], int]:
    """Lengths in tokens (a sequence, a prompt, a context, a chunk): k/K/Ki = 1024, as context lengths are said
    (8k = 8192, 128K = 131072); the outputs show the number it resolved to (s=8192, 32,768 tokens)."""
    return _parser(units.parse_length, what)


LENGTH_HELP = f" Suffixes: {units.LENGTH_RULE} (lengths are powers of two by convention; counts stay decimal)."


def flop_rate(what: str) -> Callable[[str], float]:
    """Compute rates: 989.5TFLOP/s, 200GFLOP/s, 989TFLOPS, 989.5T, or a bare number of FLOP/s (9.895e14)."""
    return _parser(units.parse_flop_rate, what)


def number(what: str) -> Callable[[str], float]:
    """Plain numbers (same grammar as counts)."""
    return _parser(units.parse_count, what)


def nbytes(what: str) -> Callable[[str], float]:
    """Byte sizes: 80GB (decimal), 80GiB (binary), or a number of bytes."""
    return _parser(units.parse_bytes, what)


def opt(*names: str, parser: Callable[[str], Any] | None = None, metavar: str | None = None,
        panel: str | None = None, **kw: Any) -> Any:
    return typer.Option(*names, parser=parser, metavar=metavar, rich_help_panel=panel, **kw)


Json = Annotated[bool, typer.Option("--json", help="Print the result model as JSON (for scripts).",
                                     rich_help_panel=OUTPUT)]
Explain = Annotated[bool, typer.Option("--explain", help="Show the derivation: every formula, the numbers put "
                                       "in, the result and its source.", rich_help_panel=OUTPUT)]
Gpus = Annotated[int, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G", help="Number of GPUs.")]
CUSTOM_GPU_HELP = ("; or one the catalog lacks, in a line: custom:peak=989TFLOP/s,memory=80GB,bw=3.35TB/s "
                   "(optional fp8=, fp32=, link=, net=, node=, tdp=)")
Gpu = Annotated[str, opt("--gpu", metavar="NAME", help="Accelerator from the hardware catalog (`napkin hardware "
                         "list`); short names like h100 or 4090 pick the default variant" + CUSTOM_GPU_HELP + ".",
                         panel=CATALOG)]
DTypeOpt = Annotated[str, opt("--dtype", metavar="DTYPE", help="Compute dtype whose peak FLOP/s is used "
                              "(fp64, fp32, tf32, bf16, fp16, fp8, int8, fp4).")]
Sparse = Annotated[bool, opt("--sparse", help="Use the 2:4-sparsity peak (2x dense on NVIDIA); MFU is "
                             "normally quoted against the dense peak.")]
Mfu = Annotated[float | None, opt("--mfu", parser=number("MFU"), metavar="F",
                                  help="Model FLOPs utilization, in (0, 1]: achieved / peak FLOP/s. Default: 0.5 "
                                       "for train-time (the lecture's), 1 for budget (the datasheet ceiling).")]
SpecsDir = Annotated[list[str] | None, typer.Option("--specs-dir", metavar="DIR", help="Extra specs directory "
                     "with hardware_specs/ and/or model_specs/ inside; overrides built-ins of the same name. "
                     "Goes before or after the command (repeatable). Also read from $NAPKIN_SPECS_DIR "
                     "(':'-separated).", rich_help_panel=CATALOG)]


def positive_bytes(what: str) -> Callable[[str], float]:
    """Byte sizes or rates that must be greater than 0 (900GB, 450e9)."""
    return _parser(units.parse_positive_bytes, what)


MODEL = "Model"
MEMORY = "Memory"
MODEL_HELP = ("Catalog model (`napkin models list`), a Hugging Face config.json, a model YAML, or a Hub id "
              "org/name[@revision] (its config.json only).")

ModelOpt = Annotated[str, opt("--model", "-m", metavar="NAME|FILE", panel=MODEL, help=MODEL_HELP)]
Seq = Annotated[int | None, opt("--seq", "-s", parser=length("sequence length"), metavar="S", panel=MODEL,
                                help="Sequence length in tokens; attention grows with it. Default: the model's "
                                     "pre-training length (its spec's train_seq), else its max context." + LENGTH_HELP)]
Recompute = Annotated[str, opt("--recompute", metavar="none|selective|full", panel=MODEL,
                               help="Activation recomputation (Korthikanti et al. 2022 §4): selective redoes the "
                                    "attention core, full each layer's forward from its input.")]
Optimizer = Annotated[str, opt("--optimizer", metavar="NAME", panel=MEMORY, help="sgd, sgd-momentum, adagrad, "
                               "rmsprop, adam, adamw, lion, adam-8bit, adafactor.")]
Precision = Annotated[str, opt("--precision", metavar="NAME", panel=MEMORY, help="fp32, fp16-mixed, bf16-mixed, "
                               "bf16-mixed-fp32-grads, bf16, fp8-mixed.")]
Zero = Annotated[int, opt("--zero", min=0, max=3, metavar="0-3", panel=MEMORY,
                          help="ZeRO stage over the data-parallel ranks: 1 shards optimizer state, 2 also "
                               "gradients, 3 (= FSDP) also parameters.")]
def _bare_number(text: Any) -> bool:
    """Whether a flag's text is a plain number with no unit (5e-324 is one: its 'e' is an exponent, not a unit)."""
    import re

    return isinstance(text, str) and re.fullmatch(r"\s*[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", text) is not None


def _memory_size(text: str) -> float:
    """A GPU's memory: a unit is required below 1 MB, where a bare number is surely GB meant as bytes."""
    value = nbytes("memory per GPU")(text)
    if _bare_number(text) and value < 1e6:
        raise typer.BadParameter(f"{text} bytes of GPU memory is surely not meant; give a unit, e.g. {text}GB or "
                                 f"{text}GiB")
    return value


Memory = Annotated[float | None, opt("--memory", parser=_memory_size, metavar="BYTES", panel=MEMORY,
                                     help="Memory per GPU in place of the datasheet's (80GB, 80GiB).")]
FitReserve = Annotated[float | None, opt("--reserve", parser=nbytes("reserve"), metavar="BYTES", panel=MEMORY,
                                         help="Memory per GPU held back from the fit: CUDA context, NCCL buffers, "
                                              "allocator fragmentation. Default 2GB (see README); 0 for the "
                                              "datasheet's nominal memory.")]
Reserve = Annotated[float, opt("--reserve", parser=nbytes("reserve"), metavar="BYTES", panel=MEMORY,
                               help="Memory per GPU held back (CUDA context, fragmentation), e.g. 2GiB.")]

PARALLEL = "Parallelism"
ACTS = "Activations"
Flash = Annotated[bool, opt("--flash-attention/--no-flash-attention", panel=ACTS,
                            help="FlashAttention stores no s×s matrix (removes the 5as/h term).")]
Tp = Annotated[int, opt("--tp", parser=whole("tensor-parallel degree"), metavar="T", panel=PARALLEL,
                        help="Tensor-parallel degree (must divide the heads and the GPUs).")]
Pp = Annotated[int, opt("--pp", parser=whole("pipeline-parallel degree"), metavar="P", panel=PARALLEL,
                        help="Pipeline stages (tp·pp must divide --gpus). Stages may be uneven (layers not a "
                             "multiple of pp): the fullest stage is counted.")]
Hfu = Annotated[float | None, opt("--hfu", parser=number("HFU"), metavar="F",
                                help="Hardware FLOPs utilization, in place of --mfu: a throughput quoted in hardware "
                                     "FLOPs (recomputation included), as Megatron-LM, OPT and BLOOM report.")]


IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")  # what matplotlib's Agg backend writes


def _image_path(text: str) -> str:
    if not isinstance(text, str):
        return text
    suffix = "." + text.rsplit(".", 1)[-1].lower() if "." in text.rsplit("/", 1)[-1] else ""
    if suffix not in IMAGE_SUFFIXES:
        raise typer.BadParameter(f"'{text}' is not an image file name; end it in {', '.join(IMAGE_SUFFIXES)}")
    return text


Plot = Annotated[str | None, opt("--plot", parser=_image_path, metavar="FILE.png", panel=OUTPUT,
                                 help="Also draw it to an image (.png, .svg, .pdf; needs matplotlib: "
                                      "pip install 'napkin\\[plot]').")]


CLUSTER = "Cluster"


def bandwidth(what: str) -> Callable[[str], float]:
    """Rates in bytes/s: 300GB/s, 200Gb/s (bits, /8), 400Gbps, 25GiB/s, or a bare number of bytes/s (4.5e11)."""
    parse = _parser(units.parse_bandwidth, what)

    def parse_rate(text: str) -> float:
        value = parse(text)
        # A bare number under 1 MB/s is surely GB/s meant as bytes/s (as --memory refuses 80 for 80GB).
        if _bare_number(text) and value < 1e6:
            raise typer.BadParameter(f"{text} bytes/s for the {what} is surely not meant; give a unit, e.g. "
                                     f"{text}GB/s (bytes) or {text}Gb/s (bits)")
        return value

    return parse_rate


def duration(what: str, positive: bool = False) -> Callable[[str], float]:
    """Times in seconds: 10us (or 10µs), 5ms, 2s, 300ns, or a bare number of seconds (1e-5); at least 0, or
    greater than 0 with ``positive`` (a step time)."""

    def parse(text: str, what: str) -> float:
        value = units.parse_duration(text, what)
        return units.require_positive(value, what) if positive else value

    return _parser(parse, what)


def days(what: str) -> Callable[[str], float]:
    """Wall-clock spans in days: 7 (a bare number is days), 36h, 2w, 90min, 3600s."""
    return _parser(units.parse_days, what)


# --check: a scripted question whose answer is the exit status (0 fits; EXIT_DOES_NOT_FIT does not; 2 bad input).
EXIT_DOES_NOT_FIT = 3
CHECK_HELP = (f"For scripts: exit with status {EXIT_DOES_NOT_FIT} when the job does not fit, 0 when it fits (2: bad "
              "input). The output is unchanged.")
Check = Annotated[bool, opt("--check", panel=OUTPUT, help=CHECK_HELP)]


def exit_if_does_not_fit(check: bool, fits: bool) -> None:
    """With --check, end with EXIT_DOES_NOT_FIT once the result is printed, when it does not fit."""
    if check and not fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


StepTime = Annotated[float | None, opt("--step-time", parser=duration("step time", positive=True), metavar="TIME",
                                       help="Time per optimizer step, in place of --tokens-per-s (needs --global-batch "
                                            "and --seq): 9s, 500ms, or a bare number of seconds.")]


NodeSize = Annotated[int | None, opt("--node-size", parser=whole("node size"), metavar="G", panel=CLUSTER,
                                     help="GPUs per scale-up domain (one NVLink/NVSwitch domain, or one PCIe "
                                          "server): 8 for DGX/HGX, 72 for GB200 NVL72. Default: the hardware "
                                          "profile's node_gpus.")]
IntraBandwidth = Annotated[float | None, opt("--intra-node-bandwidth", parser=bandwidth("intra-node bandwidth"),
                                             metavar="RATE", panel=CLUSTER,
                                             help="Bandwidth per GPU, per direction, inside the scale-up domain, "
                                                  "e.g. 300GB/s (A100 NVLink3), 450GB/s (H100 NVLink4), 32GB/s "
                                                  "(PCIe4 x16). Default: the hardware profile's.")]
InterBandwidth = Annotated[float | None, opt("--inter-node-bandwidth", parser=bandwidth("inter-node bandwidth"),
                                             metavar="RATE", panel=CLUSTER,
                                             help="Network bandwidth per GPU, per direction, between scale-up "
                                                  "domains, e.g. 25GB/s or 200Gb/s (one HDR NIC per GPU), 50GB/s "
                                                  "or 400Gb/s (NDR). Gb/s and Gbps are bits. Default: the hardware "
                                                  "profile's.")]

# The layout flags of step-time, train-time and plan (one definition each).
Vp = Annotated[int, opt("--vp", parser=whole("interleaved chunks per stage"), metavar="V", panel=PARALLEL,
                        help="Interleaved 1F1B: model chunks per pipeline stage (any layer count: uneven chunks "
                             "split as torchtitan does, or with --first/--last-stage-layers as Megatron-LM does).")]
Cp = Annotated[int, opt("--cp", parser=whole("context-parallel degree"), metavar="C", panel=PARALLEL,
                        help="Context parallelism: each sequence split over C ranks (ring attention).")]
Ep = Annotated[int, opt("--ep", parser=whole("expert-parallel degree"), metavar="E", panel=PARALLEL,
                        help="Expert parallelism: routed experts split over E of the TP×CP×DP ranks (Megatron-core "
                             "MoE; with --etp).")]
Etp = Annotated[int | None, opt("--etp", parser=whole("expert tensor-parallel degree"), metavar="T", panel=PARALLEL,
                               help="Expert tensor parallelism (Megatron --expert-tensor-parallel-size; default: "
                                    "--tp). Experts fold TP×CP×DP as ETP×EP×EDP.")]
DpShard = Annotated[int | None, opt("--dp-shard", parser=whole("HSDP shard degree"), metavar="S", panel=PARALLEL,
                                    help="HSDP: data-parallel ranks that shard (with --zero); DP / S replicas. "
                                         "ZeRO/FSDP shard over DP×CP by default.")]
FirstStage = Annotated[int | None, opt("--first-stage-layers", parser=whole("first-stage layers"), metavar="N",
                                       panel=PARALLEL, help="Layers on the first pipeline stage (Megatron "
                                       "--decoder-first-pipeline-num-layers); the others share the rest evenly.")]
LastStage = Annotated[int | None, opt("--last-stage-layers", parser=whole("last-stage layers"), metavar="N",
                                      panel=PARALLEL, help="Layers on the last pipeline stage (Megatron "
                                      "--decoder-last-pipeline-num-layers).")]
EmbeddingInSplit = Annotated[bool, opt("--embedding-in-split", panel=PARALLEL, help="Count the embedding as a layer "
                                       "of the first stage (Megatron --account-for-embedding-in-pipeline-split).")]
LossInSplit = Annotated[bool, opt("--loss-in-split", panel=PARALLEL, help="Count the loss as a layer of the last "
                                  "stage (Megatron --account-for-loss-in-pipeline-split).")]
OffloadLayers = Annotated[int, opt("--offload-layers", min=0, metavar="N", panel=PARALLEL,
                                   help="Layers per stage whose saved activations go to host memory (Megatron "
                                        "--cpu-offloading-num-layers): host memory and PCIe/C2C traffic.")]
Sp = Annotated[bool, opt("--sp", panel=PARALLEL, help="Megatron sequence parallelism: split norms and "
                         "block inputs over the TP ranks too.")]
def old_name(old: str, new: str, what: str) -> Any:
    """A flag kept under its old name: hidden from --help (which shows the new one); cli.context.renamed takes its
    value (docs/design.md, the table of names)."""
    return opt(old, parser=whole(what), metavar="N", hidden=True, help=f"The old name of {new}.")


OldBatch = Annotated[int | None, old_name("--batch", "--micro-batch", "micro-batch size")]
MicroBatch = Annotated[int, opt("--micro-batch", "-b", parser=whole("micro-batch size"), metavar="b", panel=PARALLEL,
                                help="Sequences per GPU per micro-batch.")]
GlobalBatch = Annotated[int | None, opt("--global-batch", "-B", parser=whole("global batch"), metavar="B",
                                        panel=PARALLEL, help="Sequences per optimizer step over all GPUs "
                                        "(default: micro-batch × DP, one micro-batch per step).")]
Calibration = Annotated[list[str] | None, opt("--calibration", metavar="FILE", panel=CLUSTER, help="Measured on "
                                              "this cluster: `bench-matmul --shapes-from MODEL --save FILE` sets the "
                                              "GEMM efficiency, `bench-allreduce --save FILE` the bus efficiency "
                                              "and latency (repeatable).")]
OverlapGrad = Annotated[bool | None, opt("--overlap-grad-reduce/--no-overlap-grad-reduce", panel=PARALLEL,
                                         help="Overlap the DP gradient reduction with the backward pass (default: "
                                              "the stack's: off for megatron-te, as Megatron-LM; on for "
                                              "pytorch-fsdp).")]
StackOpt = Annotated[str | None, opt("--stack", metavar="NAME", panel=CLUSTER,
                                     help="Training stack whose constants and error bars price the step: "
                                          "megatron-te (default: Megatron-Core + Transformer Engine) or "
                                          "pytorch-fsdp (llm-foundry / torchtitan); see stack_specs/.")]

Causal = Annotated[bool, opt("--causal/--no-causal", panel=MODEL,
                             help="Halve attention for the causal mask ((s+1)/2 positions per token); --no-causal "
                                  "counts the full s×s, as FlopCounterMode and PaLM/Megatron formulas do.")]

GpuOrAll = Annotated[str, opt("--gpu", metavar="NAME|all", panel=CATALOG, help="Accelerator from `napkin hardware "
                              "list` (short names like h100 or 4090 pick the default variant); 'all' asks every GPU "
                              "of the catalog, one row each" + CUSTOM_GPU_HELP + ".")]


# The shape of a transformer on the command line (added to every command that takes --model; see
# napkin.cli.context.add_shape_options): field name → (flag, what it counts, help).
SHAPE_OPTION_HELP: dict[str, tuple[str, str, str]] = {
    "layers": ("--layers", "layer count", "L, transformer blocks (with --d-model and --heads: a model without a "
               "file; with --model: that model with L layers)."),
    "d_model": ("--d-model", "hidden size", "h, the hidden size."),
    "heads": ("--heads", "head count", "a, query heads (head dim h/a)."),
    "kv_heads": ("--kv-heads", "KV head count", "k, key/value heads (GQA; 1 = MQA). Default: --heads (MHA)."),
    "ffn_dim": ("--ffn", "FFN width", "f, FFN inner width (with --experts: one expert's). Default: 4h for mlp, "
                "8h/3 rounded up to 256 for swiglu."),
    "ffn_kind": ("--ffn-kind", "FFN kind", "swiglu (3 matrices, default), geglu, or mlp (2 matrices)."),
    "vocab": ("--vocab", "vocabulary size", "V, vocabulary size. Default: 32000."),
    "experts": ("--experts", "expert count", "E, routed experts per layer (MoE in every layer; with --top-k)."),
    "top_k": ("--top-k", "experts per token", "experts each token runs through."),
}
