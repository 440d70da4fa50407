"""Fine-tuning FLOPs: a LoRA / QLoRA step component by component (split from finetune.py, which owns the adapters,
the frozen base, offload and the checkpoint).

A frozen matmul's backward is the activation gradient only, 1 × its forward (full training: 2 ×), and only where
its input needs a gradient (nothing before the first adapter does); the adapters cost 2·r·(in + out) forward and
twice that backward: ~4N + 6·N_adapter per token in place of 6N (Hu et al. 2021 §4.2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.finetune import (
    DATAFLOW,
    GATES,
    HU,
    HU_FLOPS,
    AdapterPlan,
    LoraSetup,
    adapter_plan,
    check_finetune,
    require_transformer,
    resolve_lora,
    targeted,
)
from napkin.accounting.layers import Gemm, layer_plan
from napkin.accounting.model_state import get_precision
from napkin.results import DEFINITION, KAPLAN, Derivation, Result, g, minus
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, Recompute


class _Flow(BaseModel):
    """Per token, summed over the layers: forward and backward FLOPs by component under LoRA."""

    frozen_bwd: dict[str, float]  # backward of each frozen component (weight matmuls: dX only; attention core)
    adapter_bwd: dict[str, float]  # backward of each adapter matrix
    skipped: dict[str, float]  # frozen forward whose dX is not needed (input needs no gradient)


def lora_flow(spec: TransformerSpec, lora: LoraSetup, core_forward: dict[str, float]) -> _Flow:
    """Walk the layers in order, tracking whether the residual stream needs a gradient, to know which matmuls
    compute dX (``core_forward``: attention.scores / attention.values forward per token, all layers)."""
    plan, r, L = layer_plan(spec), lora.rank, spec.layers
    frozen: dict[str, float] = {}
    adapt: dict[str, float] = {}
    skipped: dict[str, float] = {}

    def add(dst: dict[str, float], key: str, v: float) -> None:
        dst[key] = dst.get(key, 0.0) + v

    def matmul(gm: Gemm, needs_dx: bool) -> bool:
        """Account one matrix whose input needs a gradient or not; returns whether its output needs one."""
        f = gm.flops_per_token
        if needs_dx:
            add(frozen, gm.component, f)
        else:
            add(frozen, gm.component, 0.0)
            add(skipped, gm.component, f)
        if targeted(gm, lora):
            i, o = gm.linear.fan_in, gm.linear.fan_out
            # B: dW and dX (2·r·out each); A: dW (2·r·in) and dX (2·r·in) when its input needs a gradient
            add(adapt, gm.name, gm.active * (4 * r * o + 2 * r * i * (2 if needs_dx else 1)))
            return True
        return needs_dx

    resid = lora.embeddings  # an embedding adapter makes the embedding output require grad
    for layer in range(L):
        kind = plan.kind_at(layer)
        g_ = {gm.name.split(".", 1)[1] if gm.name.startswith("attention.") else gm.name: gm for gm in kind.gemms}
        if spec.mla is not None:
            if "q_a" in g_:
                q_out = matmul(g_["q_b"], matmul(g_["q_a"], resid))
            else:
                q_out = matmul(g_["q"], resid)
            kv_a = matmul(g_["kv_a"], resid)
            k_out = v_out = matmul(g_["kv_b"], kv_a) or kv_a
        else:
            q_out, k_out, v_out = (matmul(g_[n], resid) for n in ("q", "k", "v"))
        # QKᵀ: dQ when q needs a gradient, dK when k does; P·V: dP when the scores do, dV when v does
        sc, va = core_forward.get("attention.scores", 0.0) / L, core_forward.get("attention.values", 0.0) / L
        add(frozen, "attention.scores", sc * (q_out + k_out))
        add(frozen, "attention.values", va * ((q_out or k_out) + v_out))
        ctx = q_out or k_out or v_out
        resid = matmul(g_["o"], ctx) or resid
        h2, outs = resid, []
        for prefix in ("ffn", "ffn.experts", "ffn.shared"):
            mats = [gm for gm in kind.gemms if gm.name.rsplit(".", 1)[0] == prefix and gm.name not in GATES]
            if not mats:
                continue
            ups = [matmul(gm, h2) for gm in mats if not gm.name.endswith(".down")]
            down = next(gm for gm in mats if gm.name.endswith(".down"))
            outs.append(matmul(down, any(ups)))
        for gate in GATES:
            if gate in g_:
                outs.append(matmul(g_[gate], h2))
        resid = h2 or any(outs)
    matmul(plan.head, resid)
    if lora.embeddings:
        h = spec.d_model
        adapt["embedding.tokens"] = 4 * r * h  # B: dW and dX; A is an embedding lookup (no matmul)
        if not spec.tied_embeddings:
            adapt["head"] = adapt.get("head", 0.0) + 4 * r * spec.vocab + 4 * r * h  # B, A: dW and dX
    return _Flow(frozen_bwd=frozen, adapter_bwd=adapt, skipped=skipped)


class ComponentFlopsFT(BaseModel):
    model_config = ConfigDict(frozen=True)

    forward: float
    backward: float
    recompute: float = 0.0
    trainable: bool = Field(description="an adapter (weight gradients computed) or frozen (activation gradients)")


class FinetuneFlopInputs(Inputs):
    model: str
    tokens: float
    seq: int
    causal: bool
    recompute: Recompute
    finetune: Literal["lora", "qlora"]
    lora: LoraSetup


class FinetuneFlopsResult(Result):
    inputs: FinetuneFlopInputs
    model: str
    tokens: float = Field(description="D: training tokens")
    seq: int
    params: int
    active_params: int
    trainable_params: int = Field(description="adapter parameters (what the optimizer updates)")
    adapters: AdapterPlan
    components: dict[str, ComponentFlopsFT] = Field(description="frozen components (backward = activation "
                                                      "gradients only) and lora.<matrix> adapters")
    forward_flops: float
    backward_flops: float
    recompute_flops: float
    model_flops: float = Field(description="forward + backward actually computed (what MFU counts)")
    hardware_flops: float
    model_flops_per_token: float
    adapter_flops: float = Field(description="model FLOPs of the adapters alone")
    full_model_flops: float = Field(description="the same tokens with full fine-tuning: 3 × forward of the base")
    ratio_to_full: float = Field(description="model_flops / full_model_flops")
    four_nd: float = Field(description="(4·N_active + 6·N_adapter,active)·D: the napkin for a LoRA step")




def finetune_flops(spec: TransformerSpec | LinearSpec | str, *, tokens: float | None = None, batch: int | None = None,
                   seq: int | None = None, causal: bool = True, recompute: Recompute = "none", finetune: str = "lora",
                   lora_rank: int | None = None, lora_targets: str | list[str] | None = None,
                   lora_embeddings: bool = False) -> FinetuneFlopsResult:
    """Training FLOPs of a LoRA / QLoRA fine-tune (``finetune="full"``: training_flops' FlopCount): the frozen
    base's forward, its activation gradients (no weight gradients), the adapters' forward and backward; beside full
    fine-tuning of the same tokens and 4N + 6N_a."""
    from napkin.accounting.flops import ATTENTION_CORE, SRC_BWD, SRC_FULL, SRC_SELECTIVE, training_flops
    from napkin.accounting.params import count_params
    from napkin.specs.resolve import as_model

    spec = as_model(spec, "spec")
    mode = check_finetune(finetune)
    if mode == "full":  # every weight trains: the full-training count (adapter arguments refused)
        resolve_lora(mode, get_precision("bf16-mixed"), lora_rank=lora_rank, lora_targets=lora_targets,
                     lora_embeddings=lora_embeddings)
        return training_flops(spec, tokens=tokens, batch=batch, seq=seq, causal=causal,  # type: ignore[return-value]
                              recompute=recompute)
    spec = require_transformer(spec, mode)
    lora = resolve_lora(mode, get_precision("bf16-mixed"), lora_rank=lora_rank, lora_targets=lora_targets,
                        lora_embeddings=lora_embeddings)
    assert lora is not None
    base = training_flops(spec, tokens=tokens, batch=batch, seq=seq, causal=causal, recompute=recompute)
    D, s = base.tokens, base.seq
    pc = count_params(spec)
    ad = adapter_plan(spec, lora)
    d = Derivation()
    d.add("trainable parameters (LoRA adapters)", "Σ r·(fan_in + fan_out)·copies·layers",
          f"{lora.rank} × {ad.params // lora.rank}", ad.params, "params", HU)
    fwd_tok = {k: c.forward / D for k, c in base.components.items()}
    core = {k: fwd_tok[k] for k in ATTENTION_CORE if k in fwd_tok}
    flow = lora_flow(spec, lora, core)
    frozen_fwd = sum(fwd_tok.values())
    w_fwd = sum(v for k, v in fwd_tok.items() if k not in ATTENTION_CORE)
    skipped = sum(flow.skipped.values())
    d.add("frozen forward per token", "Σ components (as in full training)", g(frozen_fwd), frozen_fwd, "FLOP",
          "napkin.accounting.flops (count_flops)")
    w_dx = d.add("frozen matmuls' backward per token (dX only, no dW)", "Σ 1 × forward of each matrix whose input "
                 "needs a gradient", minus(w_fwd, skipped), w_fwd - skipped, "FLOP", f"{HU_FLOPS}; {DATAFLOW}")
    core_fwd = sum(core.values())
    core_bwd = sum(flow.frozen_bwd.get(k, 0.0) for k in ATTENTION_CORE)
    d.add("attention backward per token (QKᵀ and P·V)", "2 × forward (dQ, dK; dP, dV)", minus(2 * core_fwd,
          2 * core_fwd - core_bwd), core_bwd, "FLOP", f"{SRC_BWD}; {DATAFLOW}")
    a_fwd = sum(m.forward_flops_per_token for m in ad.matrices)
    a_bwd = sum(flow.adapter_bwd.values())
    d.add("adapter forward per token", "Σ 2·r·(fan_in + fan_out)·active·layers (embedding: 2·r·h)", g(a_fwd), a_fwd,
          "FLOP", HU)
    d.add("adapter backward per token", "2 × forward (dW and dX of A and B; A's dX only where its input needs it)",
          minus(2 * a_fwd, 2 * a_fwd - a_bwd), a_bwd, "FLOP", f"{SRC_BWD}; {DATAFLOW}")
    comps: dict[str, ComponentFlopsFT] = {}
    layer_fwd_tok = 0.0
    for k, c in base.components.items():
        bwd = flow.frozen_bwd.get(k, 0.0) * D
        comps[k] = ComponentFlopsFT(forward=c.forward, backward=bwd, recompute=c.recompute, trainable=False)
    for m in ad.matrices:
        f = m.forward_flops_per_token * D
        rec = f if recompute == "full" and m.name != "head" and m.name != "embedding.tokens" else 0.0
        if m.name not in ("head", "embedding.tokens"):
            layer_fwd_tok += m.forward_flops_per_token
        comps[f"lora.{m.name}"] = ComponentFlopsFT(forward=f, backward=flow.adapter_bwd.get(m.name, 0.0) * D,
                                                   recompute=rec, trainable=True)
    per_fwd = d.add("forward per token", "frozen + adapters", f"{g(frozen_fwd)} + {g(a_fwd)}", frozen_fwd + a_fwd,
                    "FLOP", "sum")
    per_bwd = d.add("backward per token", "frozen dX + attention + adapters", f"{g(w_dx)} + {g(core_bwd)} + {g(a_bwd)}",
                    w_dx + core_bwd + a_bwd, "FLOP", "sum")
    fwd = d.add("forward", "D · forward per token", f"{g(D)} × {g(per_fwd)}", D * per_fwd, "FLOP", DEFINITION)
    bwd = d.add("backward", "D · backward per token", f"{g(D)} × {g(per_bwd)}", D * per_bwd, "FLOP", DEFINITION)
    rec = base.recompute_flops
    if recompute == "full":
        rec = d.add("recompute (full)", "frozen layers' forward + adapters' forward (not the head)",
                    f"{g(base.recompute_flops)} + {g(D * layer_fwd_tok)}", base.recompute_flops + D * layer_fwd_tok,
                    "FLOP", SRC_FULL)
    elif recompute == "selective":
        rec = d.add("recompute (selective)", "forward of QKᵀ and attention over V", g(base.recompute_flops),
                    base.recompute_flops, "FLOP", SRC_SELECTIVE)
    model = d.add("model FLOPs", "forward + backward", f"{g(fwd)} + {g(bwd)}", fwd + bwd, "FLOP", HU_FLOPS)
    hw = d.add("hardware FLOPs", "model FLOPs + recompute", f"{g(model)} + {g(rec)}", model + rec, "FLOP",
               DEFINITION)
    full = d.add("full fine-tuning model FLOPs (same tokens)", "3 × forward of the base",
                 f"3 × {g(base.forward_flops)}", base.model_flops, "FLOP", SRC_BWD)
    ratio = d.add("LoRA / full fine-tuning", "model FLOPs / full", f"{g(model)} / {g(full)}", model / full, "ratio",
                  DEFINITION)
    n_act = a_fwd / 2
    four = d.add("napkin: (4N + 6·N_adapter)·D", "(4 · N_active + 6 · N_adapter,active) · D",
                 f"(4 × {g(pc.active_params)} + 6 × {g(n_act)}) × {g(D)}", (4 * pc.active_params + 6 * n_act) * D,
                 "FLOP", f"{HU_FLOPS}; {KAPLAN}")
    notes = list(base.notes)
    notes.insert(0, "Frozen weights: forward 2N, backward only the activation gradients 2N (no weight gradients), "
                 "so ≈ 4N per token + 6 per adapter parameter, against 6N for full fine-tuning.")
    if mode == "qlora":
        notes.append("QLoRA dequantizes each nf4 weight to bf16 for its matmul (elementwise, not counted; the "
                     "matmuls run in bf16 as here).")
    if spec.moe is not None and any(n.startswith("ffn.experts.") for n in (m.name for m in ad.matrices)):
        notes.append("Experts: one adapter per expert matrix (gate, up, down separate); a fused gate_up_proj "
                     "(transformers 5) takes one adapter for both, r·h fewer parameters per expert.")
    return FinetuneFlopsResult(
        inputs=FinetuneFlopInputs(model=spec.name, tokens=D, seq=s, causal=causal, recompute=recompute,
                                  finetune=mode, lora=lora),  # type: ignore[arg-type]
        model=spec.name, tokens=D, seq=s, params=pc.params, active_params=pc.active_params, trainable_params=ad.params,
        adapters=ad, components=comps, forward_flops=fwd, backward_flops=bwd, recompute_flops=rec, model_flops=model,
        hardware_flops=hw, model_flops_per_token=model / D, adapter_flops=D * (a_fwd + a_bwd),
        full_model_flops=full, ratio_to_full=ratio, four_nd=four, steps=d.steps, notes=notes)
