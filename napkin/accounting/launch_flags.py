"""A predicted layout as the settings that launch it: Megatron-LM arguments and torchtitan job-config TOML.

Megatron-LM: the arguments of pretrain_gpt.py (megatron/training/arguments.py). torchtitan: the
[parallelism], [training] and [activation_checkpoint] tables of its job config (torchtitan/config/job_config.py;
e.g. the repository's torchtitan/models/llama3/train_configs/*.toml). The ZeRO stage napkin priced is the one the
flags launch:

- ZeRO-1 (optimizer state sharded): Megatron's distributed optimizer (--use-distributed-optimizer). torchtitan has
  no ZeRO-1; its nearest is FSDP that keeps the gathered parameters from forward to backward (ZeRO-2 below): the
  same traffic, less memory than the ZeRO-1 ledger.
- ZeRO-2 (+ gradients sharded): FSDP2 without resharding after forward. Megatron: --use-torch-fsdp2
  --torch-fsdp2-no-reshard-after-forward ("Set to enable FSDP ZeRO-2", arguments.py); torchtitan:
  fsdp_reshard_after_forward = "never". Written as plain full-shard FSDP it would run as ZeRO-3.
- ZeRO-3 (+ parameters sharded): FSDP2 resharding after forward. Megatron: --use-torch-fsdp2 (reshards by default);
  torchtitan: fsdp_reshard_after_forward = "always", since its "default" does not reshard when pipeline parallelism
  is on (reshard_after_forward = not pp_enabled in torchtitan's apply_fsdp), which would run as ZeRO-2.
"""

from __future__ import annotations

from napkin.accounting.step_time import StepTimeResult
from napkin.specs.model import TransformerSpec


def megatron_flags(st: StepTimeResult, spec: TransformerSpec) -> str:
    """The layout as Megatron-LM pretrain_gpt.py arguments."""
    i, lay = st.inputs, st.inputs.layout
    f = [f"--tensor-model-parallel-size {lay.tp}", f"--pipeline-model-parallel-size {lay.pp}"]
    if lay.vp > 1:  # any layer count: the chunks per rank, not layers per chunk (which must divide evenly)
        f.append(f"--num-virtual-stages-per-pipeline-rank {lay.vp}")
    if lay.first_stage_layers is not None:
        f.append(f"--decoder-first-pipeline-num-layers {lay.first_stage_layers}")
    if lay.last_stage_layers is not None:
        f.append(f"--decoder-last-pipeline-num-layers {lay.last_stage_layers}")
    if lay.embedding_in_split:
        f.append("--account-for-embedding-in-pipeline-split")
    if lay.loss_in_split:
        f.append("--account-for-loss-in-pipeline-split")
    if lay.cp > 1:
        f.append(f"--context-parallel-size {lay.cp}")
    if lay.ep > 1:
        f.append(f"--expert-model-parallel-size {lay.ep}")
    if lay.etp is not None and lay.etp != lay.tp:
        f.append(f"--expert-tensor-parallel-size {lay.etp}")
    if lay.offload_layers:
        f.append(f"--cpu-offloading --cpu-offloading-num-layers {lay.offload_layers}")
    f += [f"--micro-batch-size {i.micro_batch}", f"--global-batch-size {i.global_batch}", f"--seq-length {i.seq}"]
    if lay.sp:
        f.append("--sequence-parallel")
    if i.recompute == "selective":
        f.append("--recompute-granularity selective")
    elif i.recompute == "full":
        f.append("--recompute-granularity full --recompute-method uniform --recompute-num-layers 1")
    if lay.zero == 1:
        f.append("--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather")
    elif lay.zero == 0 and lay.dp > 1:
        f.append("--overlap-grad-reduce")
    elif lay.zero == 2:
        f.append("--use-torch-fsdp2 --torch-fsdp2-no-reshard-after-forward")  # arguments.py: "FSDP ZeRO-2"
    elif lay.zero == 3:
        f.append("--use-torch-fsdp2")  # reshards after forward by default: ZeRO-3
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
    # FSDP shards (ZeRO-1..3) over dp_shard (× CP: torchtitan's dp_shard_cp mesh); HSDP replicates across; DDP
    # replicates only
    shard, replicate = (lay.shard // lay.cp, lay.replicate) if lay.zero >= 1 else (1, lay.dp)
    lines = ["[parallelism]", f"data_parallel_replicate_degree = {replicate}",
             f"data_parallel_shard_degree = {shard}"]
    if lay.zero >= 1 and lay.shard > 1:
        # ZeRO-1/2: parameters stay gathered from forward to backward; ZeRO-3: resharded after every forward (the
        # "default" policy would not reshard under PP). torchtitan job_config.py: "default", "always" or "never".
        lines.append(f'fsdp_reshard_after_forward = "{"always" if lay.zero == 3 else "never"}"')
    lines += [f"tensor_parallel_degree = {lay.tp}", f"context_parallel_degree = {lay.cp}",
              f"pipeline_parallel_degree = {lay.pp}"]
    if lay.pp > 1:
        lines += [f'pipeline_parallel_schedule = "{"Interleaved1F1B" if lay.vp > 1 else "1F1B"}"',
                  f"pipeline_parallel_microbatch_size = {i.micro_batch}"]
    if lay.ep > 1:
        lines.append(f"expert_parallel_degree = {lay.ep}")
        lines.append(f"expert_tensor_parallel_degree = {lay.expert_tp}")
    lines += ["", "[training]", f"local_batch_size = {i.global_batch // lay.dp}",
              f"global_batch_size = {i.global_batch}", f"seq_len = {i.seq}", "", "[activation_checkpoint]",
              f'mode = "{i.recompute}"']
    return "\n".join(lines)
