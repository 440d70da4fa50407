"""`napkin validate`: one real training step on this device, measured, beside what napkin predicts for it.

Two models run forward, loss, backward and a ``torch.optim.AdamW`` step in fp32: CS336 lecture 2's Cruncher
(catalog ``cruncher``, the deep linear net) and a small GPT (napkin.bench.reference's transformer for
``tiny_spec()``, or any catalog model / config.json that fits). What is measured, and napkin's side of it:

- FLOPs: ``FlopCounterMode`` around forward + loss, then around backward + ``AdamW.step``; napkin:
  ``count_flops(spec, B·s, s, causal=False)`` (the counter never halves attention, so neither does napkin, and
  attention runs as explicit matmuls, flash=False, so the counter sees it).
- bytes saved for backward: ``SavedTensors`` (unique storages, parameters excluded); napkin:
  ``predicted_activation_bytes`` (the activations.py terms ``napkin memory`` sums, same settings).
- model state after the step: parameters, gradients and AdamW's m and v (storage bytes); napkin: count_params ×
  the fp32 AdamW bytes per parameter of model_state.py (4 + 4 + 4·2 = 16 B/param, the lecture's count).
- on CUDA, memory in the steady state: what stays allocated between steps (parameters, AdamW's m and v; napkin:
  their bytes), the rise of ``torch.cuda.max_memory_allocated`` above that during one step (gradients and
  activations; napkin: their bytes) and, apart, the cuBLAS/cuBLASLt workspace the first matmul allocated (measured
  by clearing it; napkin does not predict it): without that split the workspace, tens of MiB, swamps a small model.
- the step time with the bench harness (``time_calls``): achieved FLOP/s = counted FLOPs / median, and MFU
  against the dense fp32 peak of ``--gpu`` or the detected GPU (a CPU has one only with ``--peak``).

``finetune="lora"`` (``--finetune lora``): the GPT-side model is wrapped with peft's LoRA (napkin.bench.lora: the
adapters on the matrices napkin's accounting targets, no dropout) and AdamW updates the adapters only; the Cruncher
(a linear net, nothing for LoRA to target) is left out. napkin's side is then ``napkin memory --finetune lora
--precision fp32``'s: trainable parameters (finetune.adapter_plan, against peft's ``get_nb_trainable_parameters()``),
FLOPs (finetune_flops.finetune_flops: frozen matmuls compute dX only where their input needs a gradient, adapters dW and
dX; ≈ 4N + 6·N_adapter per token), saved bytes (finetune.lora_layer_terms), the fp32 frozen base plus the adapters'
weights, gradients and AdamW states, and on CUDA the memory rise (adapter gradients + activations). QLoRA is refused:
its nf4 base needs bitsandbytes' CUDA kernels, not napkin's fp32 reference model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.finetune import LoraSetup
from napkin.bench.device import check_fits, choose_peak, plausible_mfu
from napkin.bench.measure import SavedTensors, model_state_bytes, predicted_activation_bytes
from napkin.bench.models import BenchEnvironment, PeakChoice, TimingStats
from napkin.bench.timer import DEFAULT_TARGET_S, DEFAULT_WARMUP_S, check_warmup, time_calls
from napkin.errors import InputError
from napkin.results import DEFINITION, LECTURE, MFU_SOURCE, Derivation, Result, g
from napkin.specs.dtypes import DType
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Inputs, PositiveInt, validated

FLOPS_TOLERANCE = 0.01  # the bar: predicted FLOPs within 1% of FlopCounterMode's
DEFAULT_BATCH = {"linear": 2, "transformer": 4}  # the lecture's B = 2 for the Cruncher; 4 sequences for the GPT
DEFAULT_SEQ = 128  # tiny_spec's max context; longer models are cut to it unless --seq says otherwise
LR = 1e-4  # any learning rate: the step's cost and state do not depend on it
SRC_COUNTER = "measured: torch.utils.flop_counter.FlopCounterMode (matmuls at 2 FLOPs per multiply-add)"
SRC_FLOPS = "napkin.accounting.flops.count_flops (causal=False): matmul FLOPs per component, backward = 2 × forward"
SRC_SAVED = "measured: saved_tensors_hooks over forward + loss, unique storages, parameters excluded"
SRC_ACT = "napkin.accounting.activations (Korthikanti et al. 2022 §4, tensor by tensor), fp32, eager attention"
SRC_FT_FLOPS = ("napkin.accounting.finetune_flops.finetune_flops (causal=False): frozen forward + dX only where the "
                "input needs a gradient (Hu et al. 2021 §4.2), adapters forward + dW + dX")
SRC_FT_ACT = ("napkin.accounting.finetune.lora_layer_terms on activations.py's terms (Korthikanti et al. 2022 §4; "
              "Hu et al. 2021 §4.1: frozen matmuls keep nothing for their weights, each adapter keeps A·x), fp32")
SRC_PEFT = "measured: peft PeftModel.get_nb_trainable_parameters() (numel of the parameters that require grad)"
SRC_ADAPTERS = "napkin.accounting.finetune.adapter_plan (Hu et al. 2021, LoRA, §4.1: r·(fan_in + fan_out) per matrix)"
QLORA_REFUSED = ("`finetune` qlora cannot be validated here: its nf4 base runs on bitsandbytes' CUDA kernels, and "
                 "validate measures napkin's own fp32 reference model; validate the same adapters with `finetune` "
                 "lora, and see `napkin memory --finetune qlora` for the nf4 ledger")

# progress(done, total, phase): called as each phase starts ("cruncher: counting FLOPs and saved bytes", then
# "cruncher: timing steps", then the GPT's), and with phase None once all are done.
Progress = Callable[[int, int, str | None], Any]
PHASES_PER_MODEL = 2


class ValidateInputs(Inputs):
    model: str = Field(description="the GPT-side model (catalog name, file, or the tiny reference spec)")
    batch: PositiveInt
    seq: PositiveInt
    cruncher: bool
    cruncher_batch: PositiveInt
    device: str
    finetune: Literal["full", "lora"] = Field(default="full", description="full: every weight trains; lora: peft's "
                                              "LoRA on the GPT-side model, the base frozen")
    lora: LoraSetup | None = Field(default=None, description="the adapters (finetune lora; the base is fp32)")


class Comparison(BaseModel):
    """One measured figure beside napkin's prediction of it."""

    model_config = ConfigDict(frozen=True)

    quantity: str
    unit: Literal["FLOP", "B", "params"]
    measured: float
    predicted: float | None = Field(description="None where napkin makes no prediction of it (stated in the note)")
    rel_error: float | None = Field(description="predicted / measured − 1")
    note: str | None = None


class ModelCheck(BaseModel):
    """One model's training step: the comparisons, the step time, FLOP/s and MFU."""

    model_config = ConfigDict(frozen=True)

    model: str
    display_name: str
    kind: Literal["linear", "transformer"]
    batch: int
    seq: int = Field(description="sequence length (1 for a linear net)")
    params: int
    finetune: Literal["full", "lora"] = "full"
    trainable_params: int = Field(description="napkin's count of what AdamW updates: params (full) or the LoRA "
                                  "adapters")
    rows: list[Comparison]
    flops_within_tolerance: bool = Field(description=f"every FLOP row within {FLOPS_TOLERANCE:.0%}")
    model_state_exact: bool = Field(description="parameters, gradients and AdamW m, v: measured == predicted "
                                    "(LoRA: and the trainable parameters, against peft's count)")
    timing: TimingStats
    flops_per_step: float = Field(description="counted FLOPs of one step (forward + backward + AdamW)")
    flops_per_s: float = Field(description="flops_per_step / median step time")
    mfu: float | None = None
    peak_allocated_bytes: float | None = Field(default=None, description="torch.cuda.max_memory_allocated over a "
                                               "steady-state step (CUDA)")
    resident_bytes: float | None = Field(default=None, description="allocated between steps, the BLAS workspace "
                                         "left out (CUDA)")
    peak_rise_bytes: float | None = Field(default=None, description="max_memory_allocated during a step minus what "
                                          "was allocated before it (CUDA)")
    blas_workspace_bytes: float | None = Field(default=None, description="cuBLAS/cuBLASLt workspace, measured by "
                                               "clearing it (CUDA; None where torch cannot clear it)")


class ValidateResult(Result):
    """`napkin validate`: measured vs predicted, model by model."""

    kind: Literal["validate"] = "validate"
    inputs: ValidateInputs
    environment: BenchEnvironment
    method: list[str]
    peak: PeakChoice
    models: list[ModelCheck]
    passed: bool = Field(description="FLOPs within tolerance and model state exact for every model")


def _rel(predicted: float | None, measured: float) -> float | None:
    return None if predicted is None or measured == 0 else predicted / measured - 1


def _spec(model: str | TransformerSpec | LinearSpec | None, specs_dirs: Sequence[str | Path] | None):
    from napkin.bench.reference_specs import tiny_spec

    if model is None:
        return tiny_spec()
    if isinstance(model, (TransformerSpec, LinearSpec)):
        return model
    from napkin.specs.catalog import get_model

    return get_model(model, specs_dirs)


class _Step:
    """One model on one device: built once, then instrumented for a step and timed for many."""

    def __init__(self, torch: Any, dev: Any, spec: TransformerSpec | LinearSpec, batch: int, seq: int,
                 seed: int, lora: LoraSetup | None = None, peft: Any = None) -> None:
        import torch.nn.functional as F

        from napkin.bench.reference import build_linear, build_model

        torch.manual_seed(seed)
        self.torch, self.dev, self.spec = torch, dev, spec
        self.net: Any  # a LinearNet, a Transformer, or peft's PeftModel around one
        if isinstance(spec, LinearSpec):
            self.net = build_linear(spec, dev, torch.float32)
            # the lecture's 6·B·params counts the first layer's input gradient too: x requires grad
            x = torch.randn(batch, spec.d_model, device=dev, requires_grad=True)
            self.loss = lambda: self.net(x).mean()
        else:
            self.net = build_model(spec, dev, torch.float32, flash=False, causal=False)
            if lora is not None:  # peft's LoRA on the matrices napkin targets; every other parameter frozen
                from napkin.bench.lora import wrap

                pm = wrap(self.net, spec, lora, peft)
                self.peft_trainable = int(pm.get_nb_trainable_parameters()[0])
                self.net = pm
            ids = torch.randint(0, spec.vocab, (batch, seq), device=dev)
            targets = torch.randint(0, spec.vocab, (batch, seq), device=dev)
            V = spec.vocab
            self.loss = lambda: F.cross_entropy(self.net(ids).reshape(-1, V), targets.reshape(-1))
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]  # LoRA: the adapters only
        self.opt = torch.optim.AdamW(self.trainable, lr=LR)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss().backward()
        self.opt.step()

    def instrumented(self) -> tuple[float, float, int]:
        """The first step under the counters and the saved-tensor hooks: (forward FLOPs, step FLOPs, saved B)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fwd, SavedTensors(self.net.parameters()) as saved:
            loss = self.loss()
        with FlopCounterMode(display=False) as rest:
            loss.backward()
            self.opt.step()
        f = float(fwd.get_total_flops())
        return f, f + float(rest.get_total_flops()), saved.bytes

    def memory_in_a_step(self) -> tuple[float, float, float, float | None]:
        """(allocated between steps, max_memory_allocated during one step, its rise above the former, BLAS
        workspace) in the steady state: AdamW's states exist and cuBLAS has made its workspace (CUDA only).

        The workspace is measured by clearing it (torch._C._cuda_clearCublasWorkspaces) and given back by one more
        step, so the measured step starts as every later one does."""
        from napkin.bench import runtime

        torch, dev = self.torch, self.dev
        self.opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(dev)
        workspace = None
        before = float(torch.cuda.memory_allocated(dev))
        if runtime.clear_blas_workspaces(torch):
            torch.cuda.synchronize(dev)
            workspace = max(0.0, before - float(torch.cuda.memory_allocated(dev)))
            self.step()  # the first matmul makes the workspace again
            self.opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(dev)
        base = float(torch.cuda.memory_allocated(dev))
        torch.cuda.reset_peak_memory_stats(dev)
        self.step()
        torch.cuda.synchronize(dev)
        peak = float(torch.cuda.max_memory_allocated(dev))
        return base, peak, peak - base, workspace


def _compare(d: Derivation, name: str, quantity: str, unit: Literal["FLOP", "B", "params"], measured: float,
             predicted: float | None, src_measured: str, src_predicted: str, note: str | None = None) -> Comparison:
    m = d.given(f"{name}: {quantity}, measured", "measured", measured, unit, src_measured)
    rel = None
    if predicted is not None:
        p = d.given(f"{name}: {quantity}, napkin", "predicted", predicted, unit, src_predicted)
        rel = _rel(p, m)
        if rel is not None:
            d.add(f"{name}: {quantity}, relative error", "predicted / measured − 1", f"{g(p)} / {g(m)} − 1", rel,
                  "fraction", DEFINITION)
    return Comparison(quantity=quantity, unit=unit, measured=measured, predicted=predicted, rel_error=rel, note=note)


def _check_model(d: Derivation, torch: Any, dev: Any, spec: TransformerSpec | LinearSpec, batch: int, seq: int,
                 peak: PeakChoice, timing_kw: dict[str, Any], seed: int,
                 phase: Callable[[str], Any] = lambda what: None, lora: LoraSetup | None = None,
                 peft: Any = None) -> ModelCheck:
    from napkin.accounting.finetune import adapter_plan
    from napkin.accounting.finetune_flops import finetune_flops
    from napkin.accounting.flops import count_flops
    from napkin.accounting.model_state import get_optimizer, get_precision, state_parts
    from napkin.accounting.params import count_params
    from napkin.bench import runtime
    from napkin.specs.dtypes import BYTES_PER_ELEMENT

    linear = isinstance(spec, LinearSpec)
    s = 1 if linear else seq
    N = count_params(spec).params
    prec, opt = get_precision("fp32"), get_optimizer("adamw")
    per_param: dict[str, Any] = {p.part: p for p in state_parts(prec, opt, zero=0)}  # params 4, grads 4, m, v 2 × 4
    # what AdamW updates: every parameter (full), or the adapters on a frozen base (LoRA: finetune.adapter_plan)
    T = N if lora is None else adapter_plan(spec, lora).params  # type: ignore[arg-type]
    frozen = 0.0 if lora is None else N * BYTES_PER_ELEMENT[DType(lora.base_dtype)]  # the base: no grad, no state
    pred: dict[str, float] = {part: sp.bytes_per_param * T for part, sp in per_param.items()}
    pred["params"] += frozen
    state_pred = sum(pred.values())
    act_pred = predicted_activation_bytes(spec, batch, s, flash=False, recompute="none", bytes_per_element=4,
                                          lora=lora)
    what = f"{spec.name} (B={batch}" + ("" if linear else f", s={s}") + ") in fp32 with AdamW"
    check_fits(state_pred + act_pred, runtime.free_memory_bytes(torch, dev), what)

    phase(f"{spec.name}: counting FLOPs and saved bytes")
    run = _Step(torch, dev, spec, batch, s, seed, lora, peft)
    fwd_flops, step_flops, saved = run.instrumented()
    state = model_state_bytes(run.net, run.opt)
    name = spec.name
    if lora is None:
        fc = count_flops(spec, batch if linear else batch * s, s, causal=False)
        fwd_pred, step_pred, step_note = fc.forward_flops, fc.model_flops, None
        src_fwd, src_step = SRC_FLOPS, SRC_FLOPS + " (model FLOPs = 3 × forward)"
    else:
        ff = finetune_flops(spec, tokens=batch * s, seq=s, causal=False, lora_rank=lora.rank,
                            lora_targets=lora.targets, lora_embeddings=lora.embeddings)
        fwd_pred, step_pred = ff.forward_flops, ff.model_flops
        src_fwd, src_step = SRC_FT_FLOPS, SRC_FT_FLOPS
        step_note = (f"full training of the same tokens: {ff.full_model_flops:,.0f} FLOPs (3 × forward); LoRA / full "
                     f"= {ff.ratio_to_full:.3f}; the napkin (4N + 6·N_adapter)·D = {ff.four_nd:,.0f}")
    left_out = ["the loss scalar"]
    if isinstance(spec, TransformerSpec):
        learned_ids = spec.positions == "learned" and lora is None  # a frozen position table saves no ids
        left_out = (["RoPE's cos/sin tables"] if spec.positions == "rope" or spec.mla else []) + \
            (["the position ids"] if learned_ids else []) + left_out
    saved_note = ("torch also keeps the B×D input of the first layer (its weight gradient needs it)" if linear else
                  f"napkin leaves out what does not grow with the batch: {', '.join(left_out)}")
    if lora is not None and not lora.embeddings:
        saved_note += ("; and napkin counts every layer alike, but with a frozen embedding nothing needs a gradient "
                       "before the first adapter, so torch keeps less in the first layer (napkin is above by at most "
                       "one layer)")
    rows: list[Comparison] = []
    if lora is not None:
        rows.append(_compare(d, name, "trainable parameters", "params", float(run.peft_trainable), float(T),
                             SRC_PEFT, SRC_ADAPTERS))
    exact_rows = list(rows)  # LoRA: the trainable count must be exact, as the model state must
    rows += [
        _compare(d, name, "forward FLOPs", "FLOP", fwd_flops, fwd_pred, SRC_COUNTER + ", forward + loss", src_fwd),
        _compare(d, name, "training-step FLOPs", "FLOP", step_flops, step_pred,
                 SRC_COUNTER + ", forward + backward + AdamW.step", src_step, step_note),
        _compare(d, name, "saved for backward", "B", saved, act_pred, SRC_SAVED,
                 f"{LECTURE}: B·D·L layer outputs" if linear else SRC_FT_ACT if lora is not None else SRC_ACT,
                 saved_note),
    ]
    state_rows = []
    for part, label, got in (("params", "parameters", state.params), ("grads", "gradients", state.grads),
                             ("optimizer", "AdamW m and v", state.optimizer_per_param)):
        sp = per_param[part]
        src = f"{opt.source if part == 'optimizer' else prec.source}"
        if lora is None:
            how = f"count_params × {g(sp.bytes_per_param)} B/param ({sp.label}; {src})"
        elif part == "params":
            how = (f"napkin memory --finetune lora: the frozen fp32 base, count_params × 4 B, + the adapters, "
                   f"N_adapter × {g(sp.bytes_per_param)} B ({src})")
        else:
            how = (f"napkin memory --finetune lora: the adapters only, N_adapter × {g(sp.bytes_per_param)} B/param "
                   f"({sp.label}; {src}); the frozen base has none")
        state_rows.append(_compare(d, name, label, "B", got, pred[part], f"measured: storage bytes of {label} after "
                                   "the step", how))
    state_rows.append(_compare(d, name, "model state", "B", state.per_param_total, state_pred,
                               "measured: parameters + gradients + AdamW m and v",
                               f"{LECTURE}: fp32 AdamW, 4 + 4 + 4·2 = 16 B/param × N" if lora is None else
                               "napkin memory --finetune lora --precision fp32: 4 B × N frozen + 16 B × N_adapter"))
    rows += state_rows
    tensors = f"trainable tensor ({len(run.trainable)})" if lora is not None else \
        f"parameter tensor ({state.param_tensors})"
    rows.append(_compare(d, name, "AdamW step counters", "B", state.optimizer_other, None,
                         "measured: AdamW's other state tensors", "",
                         f"one fp32 scalar per {tensors}; napkin counts per-parameter state only"))
    peak_alloc = resident = rise = workspace = None
    if dev.type == "cuda":
        base, peak_alloc, rise, workspace = run.memory_in_a_step()
        resident = base - (workspace or 0.0)
        held, grads = pred["params"] + pred["optimizer"], pred["grads"]
        src_mem = "measured: torch.cuda.memory_allocated / max_memory_allocated, steady state (second step on)"
        if workspace is not None:
            rows.append(_compare(d, name, "cuBLAS workspace", "B", workspace, None,
                                 "measured: memory freed by torch._C._cuda_clearCublasWorkspaces", "",
                                 "allocated by cuBLAS/cuBLASLt at the first matmul, per stream "
                                 "(CUBLAS_WORKSPACE_CONFIG), and kept: not part of the model; napkin does not "
                                 "predict it"))
        rows.append(_compare(d, name, "allocated between steps", "B", resident, held, src_mem,
                             "napkin: parameters + AdamW m and v" if lora is None else
                             "napkin: frozen base + adapters + the adapters' AdamW m and v",
                             "also the inputs, AdamW's step counters and module buffers" +
                             ("" if workspace is not None else "; and the cuBLAS workspace (this torch cannot clear "
                              "it to measure it)")))
        rows.append(_compare(d, name, "peak rise during a step", "B", rise, grads + act_pred, src_mem,
                             "napkin: gradients + activations" if lora is None else
                             "napkin: adapter gradients + activations",
                             "max_memory_allocated minus what was allocated before the step: gradients and saved "
                             "activations, plus transients (the logits' gradient, activation gradients, AdamW's "
                             "temporaries)"))
    phase(f"{spec.name}: timing steps")
    stats, _ = time_calls(torch, dev, run.step, **timing_kw)
    t = d.given(f"{name}: median step time", "t", stats.median_s, "s",
                f"measured: median of {stats.iters} steps, {stats.timer}")
    rate = d.add(f"{name}: achieved FLOP/s", "counted FLOPs / t", f"{g(step_flops)} / {g(t)}", step_flops / t,
                 "FLOP/s", DEFINITION)
    mfu = None
    P = peak.peak_flops_per_s
    if plausible_mfu(rate, peak)[0] is not None and P is not None:
        mfu = d.add(f"{name}: MFU", "achieved / P", f"{g(rate)} / {g(P)}", rate / P, "fraction", MFU_SOURCE)
    flops_ok = all(r.rel_error is not None and abs(r.rel_error) <= FLOPS_TOLERANCE for r in rows if r.unit == "FLOP")
    exact = all(r.measured == r.predicted for r in exact_rows + state_rows)
    return ModelCheck(model=spec.name, display_name=spec.display_name, kind=spec.kind, batch=batch, seq=s, params=N,
                      finetune="full" if lora is None else "lora", trainable_params=T, rows=rows,
                      flops_within_tolerance=flops_ok, model_state_exact=exact, timing=stats,
                      flops_per_step=step_flops, flops_per_s=rate, mfu=mfu, peak_allocated_bytes=peak_alloc,
                      resident_bytes=resident, peak_rise_bytes=rise, blas_workspace_bytes=workspace)


def _method(torch: Any, dev: Any, stats: TimingStats | None, lora: LoraSetup | None = None,
            peft: Any = None, spec: TransformerSpec | LinearSpec | None = None) -> list[str]:
    timer = ("a pair of CUDA events around each step" if dev.type == "cuda" else
             f"time.perf_counter around each step; {torch.get_num_threads()} threads")
    from napkin.bench.lora import ALPHA_PER_RANK, LORA_DROPOUT, targets_present

    lora_lines = [] if lora is None or not isinstance(spec, TransformerSpec) else [
        f"LoRA: peft {getattr(peft, '__version__', '?')} get_peft_model on napkin's reference model (no transformers): "
        f"LoraConfig(r={lora.rank}, lora_alpha={ALPHA_PER_RANK * lora.rank}, lora_dropout={LORA_DROPOUT:g}, "
        f"bias='none', target_modules = the modules of {', '.join(targets_present(spec, lora))}"
        + (" + the embedding and an untied head" if lora.embeddings else "") + " by full name); every other "
        "parameter frozen, AdamW over the adapters only; trainable count from get_nb_trainable_parameters()"]
    return [*lora_lines,
        "each model: fp32 weights, forward + loss, loss.backward(), torch.optim.AdamW.step() (zero_grad(set_to_none) "
        "between steps); the Cruncher's input requires grad (the lecture's 6·B·params counts its gradient)",
        "FLOPs: FlopCounterMode over the first step; attention as explicit matmuls (flash=False), no causal mask, "
        "so the counter sees all of it; napkin with causal=False",
        "saved for backward: torch.autograd.graph.saved_tensors_hooks over forward + loss, each storage once, "
        "parameters left out",
        "model state: storage bytes of the parameters, their .grad and AdamW's state tensors after the first step",
        "true fp32 matmuls on CUDA (TF32 off for the run)" if dev.type == "cuda" else "CPU: torch's own kernels",
        *(["memory (CUDA), in the steady state: the cuBLAS workspace measured by clearing it "
           "(torch._C._cuda_clearCublasWorkspaces) and one more step; then what stays allocated between steps, and "
           "the rise of max_memory_allocated above it over one step (reset_peak_memory_stats first)"]
          if dev.type == "cuda" else []),
        f"step time: the bench harness (napkin.bench.timer.time_calls): warm-up, then {timer}"
        + (f", {stats.iters} timed steps" if stats else "") + "; FLOP/s and MFU from the median",
    ]


def validate_step(model: str | TransformerSpec | LinearSpec | None = None, *, batch: int | None = None,
                  seq: int | None = None, cruncher: bool = True, cruncher_batch: int = DEFAULT_BATCH["linear"],
                  device: str = "auto", gpu: str | None = None, peak: float | None = None,
                  warmup_s: float = DEFAULT_WARMUP_S, iters: int | None = None, target_s: float = DEFAULT_TARGET_S,
                  specs_dirs: Sequence[str | Path] | None = None, seed: int = 0,
                  progress: Progress | None = None, finetune: str = "full", lora_rank: int | None = None,
                  lora_targets: str | list[str] | None = None, lora_embeddings: bool = False) -> ValidateResult:
    """One AdamW training step of the Cruncher and of ``model`` (default: tiny_spec()), measured vs predicted.

    ``finetune="lora"``: ``model`` under peft's LoRA (rank ``lora_rank``, on ``lora_targets``, ``lora_embeddings``
    as for `napkin memory`), the base frozen in fp32, AdamW over the adapters; the Cruncher is left out.
    ``progress(done, total, phase)`` hears of each phase (counting, then timing, per model) as it starts."""
    from napkin.accounting.finetune import check_finetune, require_transformer, resolve_lora
    from napkin.accounting.model_state import get_precision
    from napkin.bench import runtime
    from napkin.bench.lora import check_wrappable, import_peft, targets_present
    from napkin.bench.matmul import matmul_precision

    check_warmup(warmup_s)  # before anything is built or measured
    spec = _spec(model, specs_dirs)
    mode = check_finetune(finetune)
    if mode == "qlora":
        raise InputError(QLORA_REFUSED)
    given = [n for n, v in (("lora_rank", lora_rank), ("lora_targets", lora_targets),
                            ("lora_embeddings", lora_embeddings or None)) if v is not None]
    if mode == "full" and given:
        raise InputError(f"{', '.join(f'`{n}`' for n in given)}: adapter settings, for `finetune` lora (without it "
                         "validate trains every weight)")
    lora = resolve_lora(mode, get_precision("fp32"), lora_rank=lora_rank, lora_targets=lora_targets,
                        lora_embeddings=lora_embeddings)
    if lora is not None:
        spec = require_transformer(spec, mode)
        check_wrappable(spec, lora)
    b = batch if batch is not None else DEFAULT_BATCH[spec.kind]
    s = 1 if isinstance(spec, LinearSpec) else (seq or min(DEFAULT_SEQ, spec.max_context))
    i = validated(ValidateInputs, model=spec.name, batch=b, seq=s, cruncher=cruncher, cruncher_batch=cruncher_batch,
                  device=device, finetune=mode, lora=lora)
    if isinstance(spec, TransformerSpec) and spec.positions == "learned" and s > spec.max_context:
        raise InputError(f"--seq {s} is longer than {spec.name}'s learned position table ({spec.max_context}); "
                         f"use --seq {spec.max_context} or less")
    torch = runtime.import_torch("napkin validate")
    peft = import_peft() if lora is not None else None
    dev = runtime.torch_device(torch, device)
    name = runtime.device_name(torch, dev)
    choice = choose_peak(DType.fp32, dev.type, name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    timing_kw: dict[str, Any] = {"warmup_s": warmup_s, "iters": iters, "target_s": target_s,
                                 "sampler": runtime.clock_sampler(torch, dev)}
    todo: list[tuple[Any, int, int]] = []
    if cruncher and lora is None and not (isinstance(spec, LinearSpec) and spec.name == "cruncher"):
        from napkin.specs.catalog import get_model

        todo.append((get_model("cruncher", specs_dirs), i.cruncher_batch, 1))
    todo.append((spec, i.batch, i.seq))
    d = Derivation()
    checks = []
    total, started = PHASES_PER_MODEL * len(todo), 0

    def phase(what: str) -> None:
        nonlocal started
        if progress is not None:
            progress(started, total, what)
        started += 1

    with matmul_precision(torch, DType.fp32) if dev.type == "cuda" else contextlib.nullcontext():
        for sp, bb, ss in todo:
            checks.append(_check_model(d, torch, dev, sp, bb, ss, choice, timing_kw, seed, phase,
                                       lora if sp is spec else None, peft))
            runtime.empty_cache(torch, dev)
    if progress is not None:
        progress(total, total, None)
    notes = [choice.note] if choice.note else []
    if lora is not None:
        notes.append(f"LoRA: rank-{lora.rank} adapters on {','.join(targets_present(spec, lora))}"
                     + (" + the embeddings" if lora.embeddings else "") + f" of {spec.name}, the base frozen in fp32"
                     + ("; the Cruncher is left out (a linear net: nothing for LoRA to target)" if cruncher else ""))
    for c in checks:
        if c.mfu is None and choice.peak_flops_per_s is not None:
            notes.append(f"{c.model}: " + (plausible_mfu(c.flops_per_s, choice)[1] or "no MFU"))
    if dev.type == "cpu":
        notes.append("tiny models on a CPU are bound by per-op overhead, not arithmetic: their FLOP/s says little "
                     "about the CPU's peak")
    env = runtime.environment(torch, dev, hardware=choice.hardware, dtype=DType.fp32,
                              shapes=[f"{c.model}: B={c.batch}" + (f", s={c.seq}" if c.kind == "transformer" else "")
                                      for c in checks],
                              clocks=runtime.read_clocks(torch, dev))
    passed = all(c.flops_within_tolerance and c.model_state_exact for c in checks)
    return ValidateResult(inputs=i, environment=env, method=_method(torch, dev, checks[-1].timing, lora, peft, spec),
                          peak=choice,
                          models=checks, passed=passed, steps=d.steps, notes=notes)
