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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from napkin.bench.device import check_fits, choose_peak, plausible_mfu
from napkin.bench.measure import SavedTensors, model_state_bytes, predicted_activation_bytes
from napkin.bench.models import BenchEnvironment, PeakChoice, TimingStats
from napkin.bench.timer import DEFAULT_TARGET_S, DEFAULT_WARMUP_S, check_warmup, time_calls
from napkin.errors import InputError
from napkin.results import DEFINITION, LECTURE, Derivation, Result, g
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
MFU_SOURCE = "definition of MFU (Chowdhery et al. 2022, PaLM, App. B): achieved FLOP/s / dense peak FLOP/s"

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


class Comparison(BaseModel):
    """One measured figure beside napkin's prediction of it."""

    model_config = ConfigDict(frozen=True)

    quantity: str
    unit: Literal["FLOP", "B"]
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
    rows: list[Comparison]
    flops_within_tolerance: bool = Field(description=f"every FLOP row within {FLOPS_TOLERANCE:.0%}")
    model_state_exact: bool = Field(description="parameters, gradients and AdamW m, v: measured == predicted")
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
                 seed: int) -> None:
        import torch.nn.functional as F

        from napkin.bench.reference import build_linear, build_model

        torch.manual_seed(seed)
        self.torch, self.dev, self.spec = torch, dev, spec
        if isinstance(spec, LinearSpec):
            self.net = build_linear(spec, dev, torch.float32)
            # the lecture's 6·B·params counts the first layer's input gradient too: x requires grad
            x = torch.randn(batch, spec.d_model, device=dev, requires_grad=True)
            self.loss = lambda: self.net(x).mean()
        else:
            self.net = build_model(spec, dev, torch.float32, flash=False, causal=False)
            ids = torch.randint(0, spec.vocab, (batch, seq), device=dev)
            targets = torch.randint(0, spec.vocab, (batch, seq), device=dev)
            V = spec.vocab
            self.loss = lambda: F.cross_entropy(self.net(ids).reshape(-1, V), targets.reshape(-1))
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR)

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


def _compare(d: Derivation, name: str, quantity: str, unit: Literal["FLOP", "B"], measured: float,
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
                 phase: Callable[[str], Any] = lambda what: None) -> ModelCheck:
    from napkin.accounting.flops import count_flops
    from napkin.accounting.model_state import get_optimizer, get_precision, state_parts
    from napkin.accounting.params import count_params
    from napkin.bench import runtime

    linear = isinstance(spec, LinearSpec)
    s = 1 if linear else seq
    N = count_params(spec).params
    prec, opt = get_precision("fp32"), get_optimizer("adamw")
    per_param = {p.part: p for p in state_parts(prec, opt, zero=0)}  # params 4, grads 4, optimizer 2 × 4 B
    state_pred = sum(p.bytes_per_param for p in per_param.values()) * N
    act_pred = predicted_activation_bytes(spec, batch, s, flash=False, recompute="none", bytes_per_element=4)
    what = f"{spec.name} (B={batch}" + ("" if linear else f", s={s}") + ") in fp32 with AdamW"
    check_fits(state_pred + act_pred, runtime.free_memory_bytes(torch, dev), what)

    phase(f"{spec.name}: counting FLOPs and saved bytes")
    run = _Step(torch, dev, spec, batch, s, seed)
    fwd_flops, step_flops, saved = run.instrumented()
    state = model_state_bytes(run.net, run.opt)
    fc = count_flops(spec, batch if linear else batch * s, s, causal=False)
    name = spec.name
    left_out = ["the loss scalar"]
    if isinstance(spec, TransformerSpec):
        left_out = (["RoPE's cos/sin tables"] if spec.positions == "rope" or spec.mla else []) + \
            (["the position ids"] if spec.positions == "learned" else []) + left_out
    rows = [
        _compare(d, name, "forward FLOPs", "FLOP", fwd_flops, fc.forward_flops, SRC_COUNTER + ", forward + loss",
                 SRC_FLOPS),
        _compare(d, name, "training-step FLOPs", "FLOP", step_flops, fc.model_flops,
                 SRC_COUNTER + ", forward + backward + AdamW.step", SRC_FLOPS + " (model FLOPs = 3 × forward)"),
        _compare(d, name, "saved for backward", "B", saved, act_pred, SRC_SAVED,
                 f"{LECTURE}: B·D·L layer outputs" if linear else SRC_ACT,
                 "torch also keeps the B×D input of the first layer (its weight gradient needs it)" if linear else
                 f"napkin leaves out what does not grow with the batch: {', '.join(left_out)}"),
    ]
    state_rows = []
    for part, label, got in (("params", "parameters", state.params), ("grads", "gradients", state.grads),
                             ("optimizer", "AdamW m and v", state.optimizer_per_param)):
        sp = per_param[part]
        state_rows.append(_compare(d, name, label, "B", got, sp.bytes_per_param * N,
                             f"measured: storage bytes of {label} after the step",
                             f"count_params × {g(sp.bytes_per_param)} B/param ({sp.label}; "
                             f"{opt.source if part == 'optimizer' else prec.source})"))
    state_rows.append(_compare(d, name, "model state", "B", state.per_param_total, state_pred,
                               "measured: parameters + gradients + AdamW m and v",
                               f"{LECTURE}: fp32 AdamW, 4 + 4 + 4·2 = 16 B/param × N"))
    rows += state_rows
    rows.append(_compare(d, name, "AdamW step counters", "B", state.optimizer_other, None,
                         "measured: AdamW's other state tensors", "",
                         f"one fp32 scalar per parameter tensor ({state.param_tensors}); napkin counts per-parameter "
                         "state only"))
    peak_alloc = resident = rise = workspace = None
    if dev.type == "cuda":
        base, peak_alloc, rise, workspace = run.memory_in_a_step()
        resident = base - (workspace or 0.0)
        held = per_param["params"].bytes_per_param * N + per_param["optimizer"].bytes_per_param * N
        grads = per_param["grads"].bytes_per_param * N
        src_mem = "measured: torch.cuda.memory_allocated / max_memory_allocated, steady state (second step on)"
        if workspace is not None:
            rows.append(_compare(d, name, "cuBLAS workspace", "B", workspace, None,
                                 "measured: memory freed by torch._C._cuda_clearCublasWorkspaces", "",
                                 "allocated by cuBLAS/cuBLASLt at the first matmul, per stream (CUBLAS_WORKSPACE_CONFIG)"
                                 ", and kept: not part of the model; napkin does not predict it"))
        rows.append(_compare(d, name, "allocated between steps", "B", resident, held, src_mem,
                             "napkin: parameters + AdamW m and v",
                             "also the inputs, AdamW's step counters and module buffers" +
                             ("" if workspace is not None else "; and the cuBLAS workspace (this torch cannot clear "
                              "it to measure it)")))
        rows.append(_compare(d, name, "peak rise during a step", "B", rise, grads + act_pred, src_mem,
                             "napkin: gradients + activations",
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
    if plausible_mfu(rate, peak)[0] is not None:
        P = peak.peak_flops_per_s
        mfu = d.add(f"{name}: MFU", "achieved / P", f"{g(rate)} / {g(P)}", rate / P, "fraction", MFU_SOURCE)
    flops_ok = all(r.rel_error is not None and abs(r.rel_error) <= FLOPS_TOLERANCE for r in rows if r.unit == "FLOP")
    exact = all(r.measured == r.predicted for r in state_rows)
    return ModelCheck(model=spec.name, display_name=spec.display_name, kind=spec.kind, batch=batch, seq=s, params=N,
                      rows=rows, flops_within_tolerance=flops_ok, model_state_exact=exact, timing=stats,
                      flops_per_step=step_flops, flops_per_s=rate, mfu=mfu, peak_allocated_bytes=peak_alloc,
                      resident_bytes=resident, peak_rise_bytes=rise, blas_workspace_bytes=workspace)


def _method(torch: Any, dev: Any, stats: TimingStats | None) -> list[str]:
    timer = ("a pair of CUDA events around each step" if dev.type == "cuda" else
             f"time.perf_counter around each step; {torch.get_num_threads()} threads")
    return [
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
                  progress: Progress | None = None) -> ValidateResult:
    """One AdamW training step of the Cruncher and of ``model`` (default: tiny_spec()), measured vs predicted.

    ``progress(done, total, phase)`` hears of each phase (counting, then timing, per model) as it starts."""
    from napkin.bench import runtime
    from napkin.bench.matmul import matmul_precision

    check_warmup(warmup_s)  # before anything is built or measured
    spec = _spec(model, specs_dirs)
    b = batch if batch is not None else DEFAULT_BATCH[spec.kind]
    s = 1 if isinstance(spec, LinearSpec) else (seq or min(DEFAULT_SEQ, spec.max_context))
    i = validated(ValidateInputs, model=spec.name, batch=b, seq=s, cruncher=cruncher, cruncher_batch=cruncher_batch,
                  device=device)
    if isinstance(spec, TransformerSpec) and spec.positions == "learned" and s > spec.max_context:
        raise InputError(f"--seq {s} is longer than {spec.name}'s learned position table ({spec.max_context}); "
                         f"use --seq {spec.max_context} or less")
    torch = runtime.import_torch("napkin validate")
    dev = runtime.torch_device(torch, device)
    name = runtime.device_name(torch, dev)
    choice = choose_peak(DType.fp32, dev.type, name, gpu=gpu, peak=peak, specs_dirs=specs_dirs)
    timing_kw: dict[str, Any] = {"warmup_s": warmup_s, "iters": iters, "target_s": target_s,
                                 "sampler": runtime.clock_sampler(torch, dev)}
    todo: list[tuple[Any, int, int]] = []
    if cruncher and not (isinstance(spec, LinearSpec) and spec.name == "cruncher"):
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
            checks.append(_check_model(d, torch, dev, sp, bb, ss, choice, timing_kw, seed, phase))
            runtime.empty_cache(torch, dev)
    if progress is not None:
        progress(total, total, None)
    notes = [choice.note] if choice.note else []
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
    return ValidateResult(inputs=i, environment=env, method=_method(torch, dev, checks[-1].timing), peak=choice,
                          models=checks, passed=passed, steps=d.steps, notes=notes)
