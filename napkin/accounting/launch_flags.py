"""A predicted layout as the settings that launch it: Megatron-LM arguments and torchtitan job-config TOML.

Megatron-LM: the arguments of pretrain_gpt.py (megatron/training/arguments.py). torchtitan: the
[parallelism], [training] and [activation_checkpoint] tables of its job config (e.g. the repository's
torchtitan/models/llama3/train_configs/*.toml). ZeRO-1/2 is Megatron's distributed optimizer; ZeRO-3 is
FSDP (Megatron's --use-torch-fsdp2, torchtitan's data_parallel_shard_degree).
"""

from __future__ import annotations

from napkin.accounting.step_time import StepTimeResult
from napkin.specs.model import TransformerSpec


def megatron_flags(st: StepTimeResult, spec: TransformerSpec) -> str:
    """The layout as Megatron-LM pretrain_gpt.py arguments."""
    i, lay = st.inputs, st.inputs.layout
    f = [f"--tensor-model-parallel-size {lay.tp}", f"--pipeline-model-parallel-size {lay.pp}"]
    if lay.vp > 1:
        f.append(f"--num-layers-per-virtual-pipeline-stage {spec.layers // (lay.pp * lay.vp)}")
    if lay.cp > 1:
        f.append(f"--context-parallel-size {lay.cp}")
    if lay.ep > 1:
        f.append(f"--expert-model-parallel-size {lay.ep}")
    f += [f"--micro-batch-size {i.micro_batch}", f"--global-batch-size {i.global_batch}", f"--seq-length {i.seq}"]
    if lay.sp:
        f.append("--sequence-parallel")
    if i.recompute == "selective":
        f.append("--recompute-granularity selective")
    elif i.recompute == "full":
        f.append("--recompute-granularity full --recompute-method uniform --recompute-num-layers 1")
    if lay.zero in (1, 2):
        f.append("--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather")
    elif lay.zero == 0 and lay.dp > 1:
        f.append("--overlap-grad-reduce")
    elif lay.zero == 3:
        f.append("--use-torch-fsdp2")
    if i.precision.startswith("bf16"):
        f.append("--bf16")
    elif i.precision.startswith("fp16"):
        f.append("--fp16")
    elif i.precision.startswith("fp8"):
        f.append("--bf16 --fp8-format hybrid")
    return " ".join(f)


def torchtitan(st: StepTimeResult) -> str:
    """The layout as torchtitan job-config TOML ([parallelism], [training], [activation_checkpoint])."""
    i, lay = st.inputs, st.inputs.layout
    shard, replicate = (lay.dp, 1) if lay.zero >= 1 else (1, lay.dp)  # FSDP shards (ZeRO-3); DDP replicates
    lines = ["[parallelism]", f"data_parallel_replicate_degree = {replicate}",
             f"data_parallel_shard_degree = {shard}", f"tensor_parallel_degree = {lay.tp}",
             f"context_parallel_degree = {lay.cp}", f"pipeline_parallel_degree = {lay.pp}"]
    if lay.pp > 1:
        lines += [f'pipeline_parallel_schedule = "{"Interleaved1F1B" if lay.vp > 1 else "1F1B"}"',
                  f"pipeline_parallel_microbatch_size = {i.micro_batch}"]
    if lay.ep > 1:
        lines.append(f"expert_parallel_degree = {lay.ep}")
    lines += ["", "[training]", f"local_batch_size = {i.global_batch // lay.dp}",
              f"global_batch_size = {i.global_batch}", f"seq_len = {i.seq}", "", "[activation_checkpoint]",
              f'mode = "{i.recompute}"']
    return "\n".join(lines)
