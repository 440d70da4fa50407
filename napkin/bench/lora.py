"""napkin's reference transformer under peft's LoRA, for `napkin validate --finetune lora`.

peft wraps any ``nn.Module`` by module name (``LoraConfig(target_modules=[...])``), so the adapters go on the
reference model of napkin.bench.reference and transformers is not needed. The module names are chosen from the
layer plan (napkin.accounting.layers) with the same rule napkin's accounting uses (finetune.targeted), so a
matrix gets an adapter in the measurement exactly when napkin counts one:

- ``layers.<i>.attention.{q,k,v,o}`` (MLA: ``q_a.proj``, ``q_b``, ``kv_a.proj``, ``kv_b``) → attention.<name>;
- ``layers.<i>.ffn.w1`` → ffn.gate (gated FFN) or ffn.up (plain MLP), ``ffn.w3`` → ffn.up, ``ffn.w2`` → ffn.down;
- ``layers.<i>.ffn.router`` / ``ffn.shared_expert_gate`` → the router targets;
- ``embedding.tokens`` (peft's lora.Embedding) and an untied ``head`` with ``lora_embeddings``.

The reference model stores routed and shared experts as stacked ``[n, out, in]`` parameters, not ``nn.Linear``
modules: peft's LoRA layers cannot wrap them one expert at a time (its ``target_parameters`` adds B·A to the whole
stacked weight each forward, another computation than napkin's per-token adapters), so expert targets are refused.

torch and peft are imported inside the functions: importing this module imports neither.
"""

from __future__ import annotations

import warnings
from typing import Any

from napkin.accounting.finetune import TARGETS, LoraSetup, role, targeted
from napkin.accounting.layers import layer_plan
from napkin.errors import InputError, MissingExtraError
from napkin.specs.model import TransformerSpec

LORA_DROPOUT = 0.0  # napkin's activations assume no adapter dropout (peft's default is 0.0 too)
# lora_alpha only scales B·A·x by alpha / r (one multiply by a Python float: no FLOPs counted, nothing saved); any
# value gives the same accounting. 2·r is the common recipe (Raschka 2023, "Practical tips for finetuning LLMs").
ALPHA_PER_RANK = 2


def import_peft(purpose: str = "napkin validate --finetune lora") -> Any:
    """peft, or a one-line MissingExtraError naming the install."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import peft
    except ImportError:
        raise MissingExtraError("peft", "", purpose, install="pip install peft") from None
    return peft


def targets_present(spec: TransformerSpec, lora: LoraSetup) -> list[str]:
    """The requested targets this model has a matrix for (a dense model has no router), in napkin's order."""
    have = {r for kind in layer_plan(spec).kinds for gm in kind.gemms if targeted(gm, lora) for r in role(gm)}
    return [t for t in TARGETS if t in have and t in lora.targets]


def check_wrappable(spec: TransformerSpec, lora: LoraSetup) -> None:
    """Refuse targets the reference model keeps as stacked parameters (routed and shared experts)."""
    stacked = sorted({gm.name for kind in layer_plan(spec).kinds for gm in kind.gemms
                      if targeted(gm, lora) and (gm.expert or gm.name.startswith("ffn.shared."))})
    if stacked:
        raise InputError(f"`lora_targets`: napkin's reference model stores {spec.name}'s experts as stacked tensors, "
                         f"which peft's LoRA layers cannot wrap ({', '.join(stacked)}); validate with `lora_targets` "
                         "attn or q,k,v,o,router")


def plan_name(module: str, spec: TransformerSpec) -> str | None:
    """The layer plan's matrix name of a reference-model module name (None: not a block matrix)."""
    parts = module.split(".")
    if len(parts) < 4 or parts[0] != "layers":
        return None
    block, rest = parts[2], [p for p in parts[3:] if p != "proj"]  # MLA's q_a.proj / kv_a.proj → q_a / kv_a
    if block == "attention" and len(rest) == 1:
        return f"attention.{rest[0]}"
    if block == "ffn" and len(rest) == 1:
        ffn = {"w1": "gate" if spec.ffn_matrices == 3 else "up", "w3": "up", "w2": "down"}
        return f"ffn.{ffn.get(rest[0], rest[0])}"
    return None


def target_modules(net: Any, spec: TransformerSpec, lora: LoraSetup) -> list[str]:
    """Full module names of ``net`` (a reference Transformer) that get an adapter under ``lora``."""
    from torch import nn

    plan = layer_plan(spec)
    out: list[str] = []
    for name, module in net.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        pn = plan_name(name, spec)
        if pn is None:
            continue
        i = int(name.split(".")[1])
        gm = next((gm for gm in plan.kind_at(i).gemms if gm.name == pn), None)
        if gm is None:
            raise InputError(f"internal: reference module {name} has no matrix {pn} in {spec.name}'s layer plan")
        if targeted(gm, lora):
            out.append(name)
    if lora.embeddings:
        out.append("embedding.tokens")
        if not spec.tied_embeddings:
            out.append("head")
    return out


def wrap(net: Any, spec: TransformerSpec, lora: LoraSetup, peft: Any) -> Any:
    """``net`` under peft's LoRA (rank ``lora.rank`` on target_modules(...), no dropout, bias="none"): every other
    parameter frozen. Returns the PeftModel; ``get_nb_trainable_parameters()`` gives peft's own count."""
    names = target_modules(net, spec, lora)
    config = peft.LoraConfig(r=lora.rank, lora_alpha=ALPHA_PER_RANK * lora.rank, lora_dropout=LORA_DROPOUT,
                             target_modules=names, bias="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns about custom (non-transformers) models
        return peft.get_peft_model(net, config)
