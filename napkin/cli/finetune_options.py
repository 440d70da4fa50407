"""The fine-tuning flags shared by `memory`, `flops` and `max-model` (one definition each).

Here and not in options.py so that the fine-tune flags live beside each other; importing this module registers no
command (the console script registers only the command it runs).
"""

from __future__ import annotations

from typing import Annotated

from napkin.cli.options import opt, whole

FINETUNE = "Fine-tuning"

Finetune = Annotated[str, opt("--finetune", metavar="full|lora|qlora", panel=FINETUNE,
                              help="full: every weight trains (default); lora: low-rank adapters on a frozen base; "
                                   "qlora: LoRA on an nf4 base with double quantization (Dettmers et al. 2023).")]
LoraRank = Annotated[int | None, opt("--lora-rank", parser=whole("LoRA rank"), metavar="R", panel=FINETUNE,
                                     help="Rank r of every adapter (default 16).")]
LoraTargets = Annotated[str | None, opt("--lora-targets", metavar="attn|mlp|all|LIST", panel=FINETUNE,
                                        help="Matrices that get an adapter: attn, mlp, all (default, as peft's "
                                             "all-linear), or a list of q,k,v,o,router,gate,up,down.")]
BaseDtype = Annotated[str | None, opt("--base-dtype", metavar="bf16|fp16|fp32|int8|nf4", panel=FINETUNE,
                                      help="Storage of the frozen base (lora: the --precision's weight dtype; qlora: "
                                           "nf4).")]
DoubleQuant = Annotated[bool | None, opt("--double-quant/--no-double-quant", panel=FINETUNE, show_default=False,
                                         help="nf4 base: quantize the absmax constants again (QLoRA §3; default on).")]
LoraEmbeddings = Annotated[bool, opt("--lora-embeddings", panel=FINETUNE,
                                     help="Also put adapters on the token embedding and an untied LM head.")]
PagedOptimizer = Annotated[bool, opt("--paged-optimizer", panel=FINETUNE,
                                     help="Optimizer states in unified memory (bitsandbytes paged AdamW): counted on "
                                          "the GPU, paged to the host only under pressure.")]
Offload = Annotated[str, opt("--offload", metavar="none|optimizer|optimizer+params", panel=FINETUNE,
                             help="Keep the optimizer (ZeRO-Offload) or the optimizer and the parameters (FSDP CPU "
                                  "offload) in host memory: the GPU ledger without them, the host memory and the PCIe "
                                  "traffic per step.")]

