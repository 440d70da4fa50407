"""Questions answered by inverting the memory ledger: the largest micro-batch, the fewest GPUs,
the largest model that fits with its activations, and which catalog GPU fits at all.

Each solver uses the ledger's structure rather than a blind search: per GPU,

    total(b, DP) = R + S / DP + b · A

with R the replicated model state, S the ZeRO-sharded part and A the activations of one sequence
(every activation term is proportional to the micro-batch b). The closed-form answer is then
checked against the ledger itself at the answer and one step beyond.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.memory import MemoryInputs, MemoryResult, ModelArg, memory_ledger
from napkin.accounting.params import count_params
from napkin.errors import InputError
from napkin.results import Derivation, Result, g, minus
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import TransformerSpec
from napkin.specs.resolve import as_hardware, as_model, as_optional_model

SOLVE = "the ledger is linear in b and in 1/DP (napkin.accounting.memory)"


class MaxBatchResult(Result):
    inputs: MemoryInputs = Field(description="the setup asked about (the ledger's inputs at the answer)")
    max_batch: int = Field(description="largest micro-batch that fits (0: not even one sequence)")
    per_sequence_bytes: float = Field(description="activations of one more sequence in the micro-batch")
    fixed_bytes: float = Field(description="model state: what the ledger holds at b = 0")
    ledger: MemoryResult = Field(description="the ledger at the answer (at b = 1 when nothing fits)")


def max_micro_batch(model: ModelArg | str, hardware: HardwareSpec | str, **setup: Any) -> MaxBatchResult:
    """Largest micro-batch b whose ledger fits: b = ⌊(usable − fixed) / per-sequence⌋."""
    model, hardware = as_optional_model(model), as_hardware(hardware)
    if model is None:
        raise InputError("the largest micro-batch needs an architecture (`model`), not `params`")
    setup.pop("batch", None)
    r1 = memory_ledger(model, hardware, batch=1, **setup)
    r2 = memory_ledger(model, hardware, batch=2, **setup)
    d = Derivation()
    A = d.add("activations per sequence", "total(b=2) − total(b=1)", minus(r2.total_bytes, r1.total_bytes),
              r2.total_bytes - r1.total_bytes, "B", SOLVE)
    F = d.add("fixed part (model state)", "total(b=1) − A", minus(r1.total_bytes, A), r1.total_bytes - A,
              "B", SOLVE)
    M = r1.usable_bytes
    b = max(0, math.floor((M - F) / A)) if A > 0 else 0
    # the closed form in floats can be off by one at an exact boundary: settle it on the ledger itself
    while b > 0 and not memory_ledger(model, hardware, batch=b, **setup).fits:
        b -= 1
    while memory_ledger(model, hardware, batch=b + 1, **setup).fits:
        b += 1
    d.add("largest micro-batch", "b = ⌊(M − fixed) / A⌋", f"⌊({g(M)} − {g(F)}) / {g(A)}⌋", b, "sequences",
          SOLVE)
    ledger = memory_ledger(model, hardware, batch=max(b, 1), **setup)
    notes = [] if b else ["Not even one sequence fits: shorten --seq, recompute, shard more (--zero, --tp, --pp)."]
    return MaxBatchResult(inputs=ledger.inputs, max_batch=b, per_sequence_bytes=A, fixed_bytes=F, ledger=ledger,
                          steps=d.steps + ledger.steps,
                          notes=notes + ledger.notes)


class MinGpusResult(Result):
    inputs: MemoryInputs = Field(description="the setup asked about (the ledger's inputs at the answer)")
    gpus: int | None = Field(description="fewest GPUs (None: no data-parallel degree fits with this setup)")
    data_parallel: int | None
    replicated_bytes: float = Field(description="per GPU, not divided by DP")
    sharded_bytes: float = Field(description="per GPU at DP = 1, divided by DP under ZeRO")
    ledger: MemoryResult = Field(description="the ledger at the answer (or at the smallest layout tried)")


def min_gpus(model: ModelArg | str, hardware: HardwareSpec | str, **setup: Any) -> MinGpusResult:
    """Fewest GPUs G = TP·PP·DP for which the ledger fits: DP = ⌈S / (M − R)⌉ under ZeRO."""
    model, hardware = as_optional_model(model), as_hardware(hardware)
    setup.pop("gpus", None)
    unit = setup.get("tp", 1) * setup.get("pp", 1)
    if setup.get("zero") is None:  # the ledger's default: ZeRO-3 once there is more than one data-parallel rank
        setup = {**setup, "zero": 3}
    zero = setup["zero"]
    probe = memory_ledger(model, hardware, gpus=unit * (2 if zero else 1), **setup)
    d = Derivation()
    dp0 = probe.data_parallel
    R = d.add("replicated bytes per GPU", "Σ rows not sharded by ZeRO",
              " + ".join(g(r.bytes) for r in probe.rows if not r.sharded_over_dp),
              sum(r.bytes for r in probe.rows if not r.sharded_over_dp), "B", SOLVE)
    S = d.add("ZeRO-sharded bytes at DP = 1", "DP · Σ sharded rows",
              f"{dp0} × ({' + '.join(g(r.bytes) for r in probe.rows if r.sharded_over_dp) or '0'})",
              dp0 * sum(r.bytes for r in probe.rows if r.sharded_over_dp), "B", SOLVE)
    M = probe.usable_bytes
    one = {**setup, "zero": 0}  # one data-parallel rank: ZeRO has nothing to shard
    if R + S <= M:
        ledger = memory_ledger(model, hardware, gpus=unit, **one)
        d.add("data-parallel degree", "DP = 1 (R + S ≤ M)", f"{g(R + S)} ≤ {g(M)}", 1, "", SOLVE)
        notes = [] if not zero else ["Fits on one data-parallel rank: ZeRO is not needed (ledger shown at ZeRO-0)."]
        return MinGpusResult(inputs=ledger.inputs, gpus=unit, data_parallel=1, replicated_bytes=R, sharded_bytes=S,
                             ledger=ledger,
                             steps=d.steps, notes=notes + ledger.notes)
    if not zero or M <= R:
        why = ("without ZeRO every GPU holds the full model state" if not zero else
               f"the replicated part alone ({g(R / 1e9)} GB) exceeds the memory ({g(M / 1e9)} GB)")
        return MinGpusResult(inputs=probe.inputs, gpus=None, data_parallel=None, replicated_bytes=R, sharded_bytes=S,
                             ledger=probe,
                             steps=d.steps, notes=[f"No GPU count fits: {why}; try --zero, --tp/--pp, --recompute or "
                                                   "a smaller --batch/--seq."] + probe.notes)
    dp = max(2, math.ceil(S / (M - R)))
    while dp > 2 and memory_ledger(model, hardware, gpus=unit * (dp - 1), **setup).fits:
        dp -= 1
    while not memory_ledger(model, hardware, gpus=unit * dp, **setup).fits:
        dp += 1
    d.add("data-parallel degree", "DP = ⌈S / (M − R)⌉", f"⌈{g(S)} / ({g(M)} − {g(R)})⌉", dp, "", SOLVE)
    G = d.add("fewest GPUs", "G = TP · PP · DP", f"{unit} × {dp}", unit * dp, "GPUs", SOLVE)
    ledger = memory_ledger(model, hardware, gpus=int(G), **setup)
    return MinGpusResult(inputs=ledger.inputs, gpus=int(G), data_parallel=dp, replicated_bytes=R, sharded_bytes=S,
                         ledger=ledger,
                         steps=d.steps + ledger.steps, notes=ledger.notes)


class GpuFit(BaseModel):
    model_config = ConfigDict(frozen=True)

    gpu: str
    display_name: str
    memory_bytes: float
    total_bytes: float
    headroom_bytes: float
    fits: bool


class GpuCompareResult(Result):
    inputs: MemoryInputs = Field(description="the setup asked about (the ledger's inputs at the answer)")
    rows: list[GpuFit] = Field(description="every catalog GPU, largest memory first")
    ledger: MemoryResult = Field(description="the ledger on the first GPU (the total is the same on every GPU)")


def compare_gpus(model: ModelArg | str, hardware: list[HardwareSpec], **setup: Any) -> GpuCompareResult:
    """The same training setup on every GPU of the catalog: fits or not, and by how much."""
    model = as_optional_model(model)
    if not hardware:
        raise InputError("the hardware catalog is empty")
    if setup.pop("memory_bytes", None) is not None:  # one memory for every GPU would compare nothing
        raise InputError("`memory_bytes` replaces one GPU's memory, but comparing GPUs uses each one's own; leave "
                         "`memory_bytes` out (or ask about one GPU), and hold memory back with `reserve_bytes`")
    from napkin.accounting.model_state import get_precision

    prec = get_precision(setup.get("precision", "bf16-mixed"))
    runs = [h for h in hardware if prec.compute in h.peak_flops_per_s]  # one rule: the GPU must run the precision
    if not runs:
        raise InputError(f"no catalog GPU runs {prec.name} ({prec.compute.value} matmuls)")
    ledgers = [(h, memory_ledger(model, h, **setup)) for h in runs]
    rows = sorted((GpuFit(gpu=h.name, display_name=h.display_name, memory_bytes=r.usable_bytes,
                          total_bytes=r.total_bytes, headroom_bytes=r.headroom_bytes, fits=r.fits)
                   for h, r in ledgers), key=lambda x: (-x.memory_bytes, x.gpu))
    first = ledgers[0][1]
    notes = list(first.notes)
    skipped = [h.name for h in hardware if h not in runs]
    if skipped:
        notes.insert(0, f"left out, they cannot run {prec.name} ({prec.compute.value} matmuls): {', '.join(skipped)}")
    return GpuCompareResult(inputs=first.inputs, rows=rows, ledger=first, steps=first.steps, notes=notes)


class MaxModelFitResult(Result):
    inputs: MemoryInputs = Field(description="the setup asked about (the ledger's inputs at the answer)")
    template: str
    aspect: float = Field(description="d_model / layers used to scale the template")
    spec: TransformerSpec | None = Field(description="the largest scaled model that fits (None: not even the smallest)")
    params: float
    ledger: MemoryResult | None


def scaled_spec(template: TransformerSpec, layers: int, aspect: float, tp: int = 1) -> TransformerSpec:
    """The template's family at depth L: width h ≈ aspect·L in whole heads (head_dim and GQA group kept,
    heads a multiple of tp·group), FFN width at the template's f/h ratio rounded to 64."""
    d, group = template.d_head, template.heads // template.n_kv_heads
    unit = tp * group
    heads = max(unit, round(aspect * layers / (d * unit)) * unit)
    h = heads * d
    ffn = max(64, round(template.ffn_dim / template.d_model * h / 64) * 64)
    data = template.model_dump()
    data.update(name=f"{template.name}-scaled", display_name=f"{template.display_name} family, {layers} layers",
                aliases=[], layers=layers, d_model=h, heads=heads, kv_heads=heads // group, ffn_dim=ffn,
                head_dim=template.head_dim)
    from pydantic import ValidationError

    try:
        return TransformerSpec.model_validate(data)
    except ValidationError as e:  # e.g. a `tp` so large that the scaled model's heads are absurd
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise InputError(f"scaling {template.name} to {layers} layers at `tp` {tp} gives no valid model ({field}: "
                         f"{err['msg']}); use a smaller `tp`") from None


def max_model_fit(hardware: HardwareSpec, template: TransformerSpec, *, aspect: float | None = None,
                  **setup: Any) -> MaxModelFitResult:
    """Largest model of the template's family (scaled at a fixed aspect ratio h/L) whose full ledger,
    activations included, fits each GPU. Memory grows with L, so a doubling then a bisection finds it."""
    template = as_model(template, "template")
    hardware = as_hardware(hardware, "hardware")
    if not isinstance(template, TransformerSpec):
        raise InputError(f"`like` {template.name}: scaling needs a transformer family (e.g. llama3-8b)")
    if template.moe is not None or template.mla is not None:
        raise InputError(f"`like` {template.name}: scaling needs a dense model without MLA (e.g. llama3-8b)")
    r = aspect if aspect is not None else template.d_model / template.layers
    if not r > 0 or not math.isfinite(r):
        raise InputError(f"aspect ratio must be a positive number (d_model / layers, e.g. 128), got {r}")
    notes: list[str] = []
    gpus, tp, pp = setup.get("gpus", 1), setup.get("tp", 1), setup.get("pp", 1)
    if setup.get("zero") and gpus // max(1, tp * pp) == 1:
        setup = {**setup, "zero": 0}
        notes.append("One data-parallel rank: ZeRO has nothing to shard, so ZeRO-0 is used.")

    def ledger(L: int) -> MemoryResult:
        return memory_ledger(scaled_spec(template, L, r, tp), hardware, **setup)

    d = Derivation()
    d.given("aspect ratio d_model / layers", "r", r, "", f"{template.name}: {template.d_model} / {template.layers}"
            if aspect is None else "input")
    if not ledger(pp).fits:
        return MaxModelFitResult(inputs=ledger(pp).inputs, template=template.name, aspect=r, spec=None, params=0.0,
                                 ledger=ledger(pp),
                                 steps=d.steps, notes=notes + ["Not even one layer per pipeline stage fits."])
    lo, hi = pp, 2 * pp
    while ledger(hi).fits and hi < 1 << 14:  # 16k layers: beyond any real model
        lo, hi = hi, 2 * hi
    while hi - lo > pp:
        mid = (lo + hi) // 2 // pp * pp
        lo, hi = (mid, hi) if ledger(mid).fits else (lo, mid)
    spec = scaled_spec(template, lo, r, tp)
    best = ledger(lo)
    n = count_params(spec).params
    d.add("largest depth that fits (bisection on L, multiples of pp)", "max L : total(L) ≤ M", f"L = {lo}, h = "
          f"{spec.d_model}, heads = {spec.heads}, f = {spec.ffn_dim}", lo, "layers", SOLVE)
    d.add("parameters of that model", "count_params", g(n), n, "params", "napkin.accounting.params")
    return MaxModelFitResult(inputs=best.inputs, template=template.name, aspect=r, spec=spec, params=n, ledger=best,
                             steps=d.steps + best.steps, notes=notes + best.notes)
