"""The calibration data of benchmarks/data/validation as typed rows and napkin questions.

Why here and not in napkin/: the data is development material (tests, benchmarks, the step-time fit of issue 23),
kept in benchmarks/data/validation and shipped in the sdist, not in the wheel. napkin's accounting does no I/O
(DESIGN.md: pure functions), and a reader inside the package would point at files an installed napkin does not
have. Scripts in benchmarks/ import this module as their sibling; tests load it by path (as they load
step_time_accuracy.py).

What it reads:
  * llmfoundry_fsdp.csv: 216 measured throughputs of MPT models trained with Composer + PyTorch FSDP
    (mosaicml/llm-foundry scripts/train/benchmarking/README.md at 8c8dd48f, Apache-2.0; see NOTICE.md). Each row
    becomes a FoundryRow, its model a TransformerSpec (mpt_spec) and its run a napkin question (foundry_question:
    the keywords of napkin.accounting.step_time).
  * the vTrain files are read by step_time_accuracy.read_rows; vtrain_question turns one of its rows into the same
    kind of question (TP / PP / DP with full recomputation, as vTrain's configs ran them).

Only the standard library at import time; napkin is imported inside the functions that build specs.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data" / "validation"  # in the repository: nothing outside the clone
FOUNDRY_FILE = "llmfoundry_fsdp.csv"
FOUNDRY = ("mosaicml/llm-foundry scripts/train/benchmarking/README.md at 8c8dd48f72168c5d51e2f7b151595892a8fba43d "
           "(Apache-2.0); MPT shapes from scripts/train/yamls/pretrain/mpt-*.yaml")

# MPT sizes: (d_model, n_heads, n_layers), from llm-foundry scripts/train/yamls/pretrain/mpt-<size>.yaml (as listed
# in benchmarks/data/validation/README.md). expansion_ratio 4 and vocab_size 50368 are common to every yaml.
MPT_SHAPES: dict[str, tuple[int, int, int]] = {
    "125m": (768, 12, 12),
    "350m": (1024, 16, 24),
    "760m": (1536, 12, 24),
    "1b": (2048, 16, 24),
    "3b": (2560, 20, 32),
    "7b": (4096, 32, 32),
    "13b": (5120, 40, 40),
    "30b": (7168, 56, 48),
    "70b": (8192, 64, 80),
}
MPT_EXPANSION = 4  # mpt-*.yaml: expansion_ratio 4 (d_ff = 4·d_model, GeLU MLP)
MPT_VOCAB = 50368  # mpt-*.yaml: vocab_size 50368 (the GPT-NeoX-20B tokenizer with room to spare)

# The table's GPU column -> napkin hardware profile. The tables name the part and its memory; MosaicML's platform ran
# 8-GPU HGX nodes (SXM, NVLink), the A100 tables add 1600 Gb/s RoCE per node. The memory is what the ledger needs.
GPU_PROFILES = {"a100_40gb": "a100-sxm-40gb", "a100_80gb": "a100-sxm-80gb", "h100_80gb": "h100-sxm"}

# (Precision, MP Mode) -> napkin precision policy (napkin.accounting.model_state.PRECISIONS), per the validation
# README and Composer's FSDP mixed-precision modes:
#  amp_bf16 + DEFAULT: autocast bf16 compute; FSDP keeps the sharded parameters, gradients and Adam states in fp32
#    (4 + 4 + 8 = 16 B per parameter), gathers bf16 copies per layer and reduces in fp32. napkin's bf16-mixed counts
#    the same 16 B per parameter (bf16 weights 2 + bf16 grads 2 + fp32 master 4 + states 8).
#  bf16 + PURE: parameters, gradients and Adam states all bf16 (2 + 2 + 4 = 8 B per parameter): napkin's bf16.
#  amp_fp8 + DEFAULT: Transformer Engine FP8 GEMMs over the amp_bf16 state: napkin's fp8-mixed.
PRECISIONS = {("amp_bf16", "DEFAULT"): "bf16-mixed", ("bf16", "PURE"): "bf16", ("amp_fp8", "DEFAULT"): "fp8-mixed"}

# Sharding Strategy -> ZeRO stage (PyTorch FSDP ShardingStrategy docs: FULL_SHARD shards parameters, gradients and
# optimizer state = ZeRO-3; SHARD_GRAD_OP shards gradients and optimizer state = ZeRO-2; NO_SHARD = DDP).
ZERO = {"FULL_SHARD": 3, "SHARD_GRAD_OP": 2, "NO_SHARD": 0}
OPTIMIZER = "adamw"  # mpt-*.yaml: optimizer decoupled_adamw (two fp32/bf16 moments per parameter)

# CSV header -> FoundryRow field, and how to parse it
FOUNDRY_COLUMNS: dict[str, tuple[str, type]] = {
    "table": ("table", str),
    "Model": ("model", str),
    "SeqLen (T)": ("seq", int),
    "# GPUs": ("gpus", int),
    "GPU": ("gpu", str),
    "MFU": ("mfu_pct", float),
    "HFU": ("hfu_pct", float),
    "Model TFLOP": ("model_tflop", float),
    "MicroBatchSize": ("micro_batch", int),
    "GradAccum": ("grad_accum", int),
    "GlobalBatchSize": ("global_batch", int),
    "Throughput (S/s)": ("samples_per_s", float),
    "Throughput (T/s)": ("tokens_per_s", float),
    "Throughput (T/s/GPU)": ("tokens_per_s_per_gpu", float),
    "GlobalBatchSize (T)": ("global_batch_tokens", int),
    "Precision": ("precision", str),
    "MP Mode": ("mp_mode", str),
    "Sharding Strategy": ("sharding", str),
    "Activation Checkpointing": ("activation_checkpointing", bool),
    "Activation CPUOffload": ("activation_cpu_offload", bool),
    "NumParams": ("num_params", int),
}
_BOOL = {"True": True, "False": False}


@dataclass(frozen=True)
class FoundryRow:
    """One published llm-foundry measurement, its columns as the table has them (MFU/HFU in percent)."""

    index: int  # 0-based data row in the file
    table: str
    model: str  # MPT size: 125m .. 70b
    seq: int
    gpus: int
    gpu: str  # a100_40gb, a100_80gb, h100_80gb
    mfu_pct: float
    hfu_pct: float
    model_tflop: float
    micro_batch: int
    grad_accum: int
    global_batch: int  # sequences
    samples_per_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    global_batch_tokens: int
    precision: str  # amp_bf16, bf16, amp_fp8
    mp_mode: str  # DEFAULT, PURE
    sharding: str  # FULL_SHARD, SHARD_GRAD_OP
    activation_checkpointing: bool
    activation_cpu_offload: bool
    num_params: int

    @property
    def step_time_s(self) -> float:
        """Measured step: GlobalBatchSize (T) / Throughput (T/s) (validation README)."""
        return self.global_batch_tokens / self.tokens_per_s

    @property
    def hardware(self) -> str:
        return GPU_PROFILES[self.gpu]

    @property
    def napkin_precision(self) -> str:
        return PRECISIONS[(self.precision, self.mp_mode)]

    @property
    def zero(self) -> int:
        return ZERO[self.sharding]

    @property
    def recompute(self) -> str:
        """Activation Checkpointing True = every block recomputed (validation README): napkin's full."""
        return "full" if self.activation_checkpointing else "none"

    @property
    def name(self) -> str:
        """A short id for test reports: row, model, GPU, GPUs, seq, micro-batch, precision."""
        return (f"foundry{self.index:03d}-{self.model}-{self.gpu}-g{self.gpus}-s{self.seq}-b{self.micro_batch}-"
                f"{self.precision}{'-ckpt' if self.activation_checkpointing else ''}")


def read_foundry(data_dir: Path = DATA_DIR) -> list[FoundryRow]:
    """Every row of llmfoundry_fsdp.csv, each column parsed and each categorical value checked.

    Refuses (ValueError) an unknown or missing column, a value outside the known GPUs / precisions / sharding
    strategies, a model size without an MPT shape, GlobalBatchSize (T) != GlobalBatchSize · SeqLen, and
    GlobalBatchSize != MicroBatchSize · GradAccum · GPUs (each rank runs GradAccum micro-batches).
    """
    path = data_dir / FOUNDRY_FILE
    rows: list[FoundryRow] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        have = set(reader.fieldnames or ())
        if have != set(FOUNDRY_COLUMNS):
            raise ValueError(f"{path}: columns differ: unexpected {sorted(have - set(FOUNDRY_COLUMNS))}, missing "
                             f"{sorted(set(FOUNDRY_COLUMNS) - have)}")
        for i, rec in enumerate(reader):
            where = f"{path}: row {i + 2}"
            vals: dict[str, Any] = {}
            for col, (key, kind) in FOUNDRY_COLUMNS.items():
                raw = rec[col].strip()
                if kind is bool:
                    if raw not in _BOOL:
                        raise ValueError(f"{where}: {col} = {raw!r}, not True/False")
                    vals[key] = _BOOL[raw]
                else:
                    vals[key] = kind(raw)
            row = FoundryRow(index=i, **vals)
            for value, known, col in ((row.gpu, GPU_PROFILES, "GPU"), (row.model, MPT_SHAPES, "Model"),
                                      (row.sharding, ZERO, "Sharding Strategy"),
                                      ((row.precision, row.mp_mode), PRECISIONS, "Precision, MP Mode")):
                if value not in known:
                    raise ValueError(f"{where}: {col} {value!r} is not one of {sorted(known)}")
            if row.global_batch_tokens != row.global_batch * row.seq:
                raise ValueError(f"{where}: GlobalBatchSize (T) {row.global_batch_tokens} != GlobalBatchSize · SeqLen "
                                 f"= {row.global_batch * row.seq}")
            if row.global_batch != row.micro_batch * row.grad_accum * row.gpus:
                raise ValueError(f"{where}: GlobalBatchSize {row.global_batch} != MicroBatchSize · GradAccum · GPUs = "
                                 f"{row.micro_batch * row.grad_accum * row.gpus}")
            rows.append(row)
    return rows


@functools.cache
def mpt_spec(model: str, seq: int) -> Any:
    """The MPT of a row as a napkin TransformerSpec, as the validation README describes it: d_model / n_heads /
    n_layers per size, GeLU MLP with expansion 4, vocabulary 50368, tied embeddings, learned positions of
    max_seq_len = the row's sequence length, LayerNorm and biases on every linear layer (MPT with no_bias false).
    One spec per (size, sequence), cached."""
    d, heads, layers = MPT_SHAPES[model]
    return gpt_style_spec(name=f"mpt-{model}-s{seq}", display_name=f"MPT-{model} (llm-foundry), max_seq_len {seq}",
                          family="mpt", layers=layers, d_model=d, heads=heads, ffn_dim=MPT_EXPANSION * d,
                          vocab=MPT_VOCAB, seq=seq, source=FOUNDRY)


def gpt_style_spec(*, name: str, display_name: str, family: str, layers: int, d_model: int, heads: int, ffn_dim: int,
                   vocab: int, seq: int, source: str) -> Any:
    """A GPT-style decoder, as both calibration tables' models are (Megatron-LM GPT for vTrain, MPT for
    llm-foundry): pre-LayerNorm with biases, a GeLU MLP, biases on every linear layer, learned positions of the
    row's sequence length, tied embeddings."""
    from napkin.specs.model import TransformerSpec

    return TransformerSpec.model_validate({
        "name": name, "display_name": display_name, "family": family, "layers": layers, "d_model": d_model,
        "heads": heads, "ffn_dim": ffn_dim, "ffn_kind": "mlp", "activation": "gelu", "vocab": vocab,
        "max_context": seq, "train_seq": seq, "tied_embeddings": True, "positions": "learned", "norm": "layernorm",
        "attention_bias": "all", "mlp_bias": True, "sources": [source],
    })


def foundry_question(row: FoundryRow) -> dict[str, Any]:
    """The row as napkin.accounting.step_time keywords (model and hardware names apart): pure data parallelism over
    every GPU (no TP / PP), the ZeRO stage of its sharding strategy, full recomputation when it checkpoints,
    flash attention (mpt yamls: attn_impl flash), AdamW, and its micro / global batch and sequence as published."""
    return dict(gpus=row.gpus, tp=1, pp=1, zero=row.zero, micro_batch=row.micro_batch,
                global_batch=row.global_batch, seq=row.seq, recompute=row.recompute,
                precision=row.napkin_precision, optimizer=OPTIMIZER, flash=True)


# vTrain (step_time_accuracy.Row): how its configs ran (config/validation/*/*.json at f8dda84 and the README here)
# gpu_name "A100", its memory not stated. napkin's "a100" is a100-sxm-80gb, as in step_time_accuracy. The 40 GB part
# is ruled out by the runs themselves: without a distributed optimizer (none in the configs) the 18.4B model on TP 8,
# PP 1 keeps 2.3e9 params x 16 B = 36.8 GB of model state per GPU, and napkin's ledger puts 27 of the 62 multi-node
# runs over 40 GB (python benchmarks/calibration_memory.py --vtrain-gpu a100-sxm-40gb).
VTRAIN_HARDWARE = "a100"
VTRAIN_PRECISION = "fp16-mixed"  # Megatron-DeepSpeed mixed precision, as step_time_accuracy predicts these rows
VTRAIN_RECOMPUTE = "full"  # use_checkpoint: true
VTRAIN_FLASH = False  # Megatron-DeepSpeed's unfused softmax attention (step_time_accuracy's default)
VTRAIN_ZERO = 0  # plain data parallelism: an all-reduce of whole gradients, no distributed optimizer


def vtrain_question(row: Any) -> dict[str, Any]:
    """A vTrain row (step_time_accuracy.Row) as napkin.accounting.step_time keywords: TP / PP / DP as published,
    full recomputation, ZeRO 0, fp16 mixed precision."""
    return dict(gpus=row.gpus, tp=row.tp, pp=row.pp, zero=VTRAIN_ZERO, micro_batch=row.micro_batch,
                global_batch=row.global_batch, seq=row.seq, recompute=VTRAIN_RECOMPUTE, precision=VTRAIN_PRECISION,
                optimizer=OPTIMIZER, flash=VTRAIN_FLASH)
