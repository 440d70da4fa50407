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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.finetune import FinetuneSetup
from napkin.accounting.layout import Layout
from napkin.accounting.memory import (
    LedgerKeywords,
    MemoryInputs,
    MemoryResult,
    ModelArg,
    TrainingSetup,
    ledger_setup,
    memory_ledger,
)
from napkin.accounting.model_state import MaxModelResult, max_model
from napkin.accounting.params import count_params
from napkin.errors import InputError
from napkin.results import Derivation, Result, g, minus
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_model, as_optional_model
from napkin.units import format_bytes
from napkin.validation import validated

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

SOLVE = "the ledger is linear in b and in 1/DP (napkin.accounting.memory)"


class MaxBatchResult(Result):
    inputs: MemoryInputs = Field(description="the setup asked about (the ledger's inputs at the answer)")
    max_batch: int = Field(description="largest micro-batch that fits (0: not even one sequence)")
    per_sequence_bytes: float = Field(description="activations of one more sequence in the micro-batch")
    fixed_bytes: float = Field(description="model state: what the ledger holds at b = 0")
    ledger: MemoryResult = Field(description="the ledger at the answer (at b = 1 when nothing fits)")

    @property
    def fits(self) -> bool:
        """The answer is 'it fits': at least one sequence does."""
        return self.max_batch > 0


def max_micro_batch(model: ModelArg | str, hardware: HardwareSpec | str, training: TrainingSetup | None = None,
                    layout: Layout | None = None, finetune: FinetuneSetup | str | None = None, *,
                    memory_bytes: float | None = None, reserve_bytes: float | None = None,
                    **keywords: Unpack[LedgerKeywords]) -> MaxBatchResult:
    """Largest micro-batch b whose ledger fits: b = ⌊(usable − fixed) / per-sequence⌋ (``training.micro_batch`` is what
    is solved for; the setups as memory_ledger takes them)."""
    model, hardware = as_optional_model(model), as_hardware(hardware)
    if model is None:
        raise InputError("the largest micro-batch needs an architecture (`model`), not `params`")
    t, lay, tune = ledger_setup(training, layout, finetune, keywords)

    def at(b: int) -> MemoryResult:
        return memory_ledger(model, hardware, t.model_copy(update={"micro_batch": b}), lay, tune,
                             memory_bytes=memory_bytes, reserve_bytes=reserve_bytes)

    r1 = at(1)
    r2 = at(2)
    d = Derivation()
    A = d.add("activations per sequence", "total(b=2) − total(b=1)", minus(r2.total_bytes, r1.total_bytes),
              r2.total_bytes - r1.total_bytes, "B", SOLVE)
    F = d.add("fixed part (model state)", "total(b=1) − A", minus(r1.total_bytes, A), r1.total_bytes - A,
              "B", SOLVE)
    M = r1.usable_bytes
    b = max(0, math.floor((M - F) / A)) if A > 0 else 0
    # the closed form in floats can be off by one at an exact boundary: settle it on the ledger itself
    while b > 0 and not at(b).fits:
        b -= 1
    while at(b + 1).fits:
        b += 1
    d.add("largest micro-batch", "b = ⌊(M − fixed) / A⌋", f"⌊({g(M)} − {g(F)}) / {g(A)}⌋", b, "sequences",
          SOLVE)
    ledger = at(max(b, 1))
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

    @property
    def fits(self) -> bool:
        """The answer is 'it fits': some GPU count does."""
        return bool(self.gpus)


def min_gpus(model: ModelArg | str, hardware: HardwareSpec | str, training: TrainingSetup | None = None,
             layout: Layout | None = None, finetune: FinetuneSetup | str | None = None, *, params: float | None = None,
             memory_bytes: float | None = None, reserve_bytes: float | None = None,
             **keywords: Unpack[LedgerKeywords]) -> MinGpusResult:
    """Fewest GPUs G = TP·CP·PP·DP for which the ledger fits: DP = ⌈S / (M − R)⌉ under ZeRO.

    ``layout.gpus`` is what is solved for; its ZeRO stage shards (a layout from keywords without ``zero``: ZeRO-3).
    """
    model, hardware = as_optional_model(model), as_hardware(hardware)
    keywords.pop("gpus", None)
    t, lay, tune = ledger_setup(training, layout, finetune, keywords, zero=3)
    unit = lay.model_parallel  # TP · CP · PP: the GPUs of one replica (napkin.accounting.layout)
    zero = lay.zero

    def on(gpus: int, zero_stage: int = zero) -> MemoryResult:
        return memory_ledger(model, hardware, t, lay.model_copy(update={"gpus": gpus, "zero": zero_stage}), tune,
                             params=params, memory_bytes=memory_bytes, reserve_bytes=reserve_bytes)

    probe = on(unit * (2 if zero else 1))
    d = Derivation()
    dp0 = probe.data_parallel
    R = d.add("replicated bytes per GPU", "Σ rows not sharded by ZeRO",
              " + ".join(g(r.bytes) for r in probe.rows if not r.sharded_over_dp),
              sum(r.bytes for r in probe.rows if not r.sharded_over_dp), "B", SOLVE)
    S = d.add("ZeRO-sharded bytes at DP = 1", "DP · Σ sharded rows",
              f"{dp0} × ({' + '.join(g(r.bytes) for r in probe.rows if r.sharded_over_dp) or '0'})",
              dp0 * sum(r.bytes for r in probe.rows if r.sharded_over_dp), "B", SOLVE)
    M = probe.usable_bytes
    if R + S <= M:
        ledger = on(unit, 0)  # one data-parallel rank: ZeRO has nothing to shard
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
    while dp > 2 and on(unit * (dp - 1)).fits:
        dp -= 1
    while not on(unit * dp).fits:
        dp += 1
    d.add("data-parallel degree", "DP = ⌈S / (M − R)⌉", f"⌈{g(S)} / ({g(M)} − {g(R)})⌉", dp, "", SOLVE)
    G = d.add("fewest GPUs", "G = TP · CP · PP · DP", f"{unit} × {dp}", unit * dp, "GPUs", SOLVE)
    ledger = on(int(G))
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

    @property
    def fits(self) -> bool:
        """The answer is 'it fits': on at least one GPU of the catalog."""
        return any(row.fits for row in self.rows)


def compare_gpus(model: ModelArg | str, hardware: Sequence[HardwareSpec], training: TrainingSetup | None = None,
                 layout: Layout | None = None, finetune: FinetuneSetup | str | None = None, *,
                 params: float | None = None, memory_bytes: float | None = None, reserve_bytes: float | None = None,
                 **keywords: Unpack[LedgerKeywords]) -> GpuCompareResult:
    """The same training setup on every GPU of the catalog: fits or not, and by how much."""
    model = as_optional_model(model)
    if not hardware:
        raise InputError("the hardware catalog is empty")
    if memory_bytes is not None:  # one memory for every GPU would compare nothing
        raise InputError("`memory_bytes` replaces one GPU's memory, but comparing GPUs uses each one's own; leave "
                         "`memory_bytes` out (or ask about one GPU), and hold memory back with `reserve_bytes`")
    from napkin.accounting.model_state import get_precision

    t, lay, tune = ledger_setup(training, layout, finetune, keywords)
    prec = get_precision(t.precision)
    runs = [h for h in hardware if h.runs(prec.compute)]  # one rule: the GPU must run the precision
    if not runs:
        raise InputError(f"no catalog GPU runs {prec.name} ({prec.compute.value} matmuls)")
    ledgers = [(h, memory_ledger(model, h, t, lay, tune, params=params, reserve_bytes=reserve_bytes)) for h in runs]
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

    @property
    def fits(self) -> bool:
        """The answer is 'it fits': some model of the family does."""
        return self.spec is not None


MAX_ASPECT = 1e5  # d_model / layers: real models sit at 30-200 (GPT-3 175B: 128, Llama 3 8B: 128)


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


def max_model_fit(hardware: HardwareSpec, template: TransformerSpec | LinearSpec | str,
                  training: TrainingSetup | None = None, layout: Layout | None = None,
                  finetune: FinetuneSetup | str | None = None, *,
                  aspect: float | None = None, memory_bytes: float | None = None, reserve_bytes: float | None = None,
                  **keywords: Unpack[LedgerKeywords]) -> MaxModelFitResult:
    """Largest model of the template's family (scaled at a fixed aspect ratio h/L) whose full ledger,
    activations included, fits each GPU. Memory grows with L, so a doubling then a bisection finds it."""
    template = as_model(template, "template")
    hardware = as_hardware(hardware, "hardware")
    if not isinstance(template, TransformerSpec):
        raise InputError(f"`like` {template.name}: scaling needs a transformer family (e.g. llama3-8b)")
    if template.moe is not None or template.mla is not None:
        raise InputError(f"`like` {template.name}: scaling needs a dense model without MLA (e.g. llama3-8b)")
    r = aspect if aspect is not None else template.d_model / template.layers
    if not 0 < r <= MAX_ASPECT:  # NaN fails too; 1e308 · L overflowed to inf in the width
        raise InputError(f"aspect ratio must be a positive number up to {MAX_ASPECT:g} (d_model / layers, e.g. 128), "
                         f"got {r:g}")
    notes: list[str] = []
    t, lay, tune = ledger_setup(training, layout, finetune, keywords)
    tp, pp = lay.tp, lay.pp
    if lay.zero and lay.dp == 1:
        lay = lay.model_copy(update={"zero": 0})
        notes.append("One data-parallel rank: ZeRO has nothing to shard, so ZeRO-0 is used.")

    def ledger(L: int) -> MemoryResult:
        return memory_ledger(scaled_spec(template, L, r, tp), hardware, t, lay, tune, memory_bytes=memory_bytes,
                             reserve_bytes=reserve_bytes)

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


# --- one question each: the entry points `napkin memory` and `napkin max-model` call --------------------------------

MemoryAnswer = MemoryResult | MaxBatchResult | MinGpusResult | GpuCompareResult


def memory_question(model: ModelArg | str, hardware: HardwareSpec | str | Sequence[HardwareSpec],
                    training: TrainingSetup | None = None, layout: Layout | None = None,
                    finetune: FinetuneSetup | str | None = None, *, max_batch: bool = False, min_gpus: bool = False,
                    params: float | None = None, memory_bytes: float | None = None, reserve_bytes: float | None = None,
                    **keywords: Unpack[LedgerKeywords]) -> MemoryAnswer:
    """The memory question asked: the ledger; with ``max_batch`` the largest micro-batch; with ``min_gpus`` the
    fewest GPUs; with a list of GPUs for ``hardware``, the same setup on each. One at a time. Every answer has
    ``fits`` (for the ledger: it fits; for a solver: it found an answer)."""
    every = isinstance(hardware, (list, tuple))
    if sum([max_batch, min_gpus, every]) > 1:
        raise InputError("ask one question at a time: `max_batch`, `min_gpus` or `gpu` all")
    if isinstance(hardware, (list, tuple)):
        return compare_gpus(model, list(hardware), training, layout, finetune, params=params,
                            memory_bytes=memory_bytes, reserve_bytes=reserve_bytes, **keywords)
    assert isinstance(hardware, (HardwareSpec, str)), "hardware: a GPU, its name, or a list of GPUs"
    if max_batch:
        if params is not None:
            raise InputError("`max_batch` needs an architecture (`model`), not `params`")
        return max_micro_batch(model, hardware, training, layout, finetune, memory_bytes=memory_bytes,
                               reserve_bytes=reserve_bytes, **keywords)
    if min_gpus:
        return _min_gpus(model, hardware, training, layout, finetune, params=params, memory_bytes=memory_bytes,
                         reserve_bytes=reserve_bytes, **keywords)
    ledger = memory_ledger(model, hardware, training, layout, finetune, params=params, memory_bytes=memory_bytes,
                           reserve_bytes=reserve_bytes, **keywords)
    if ledger.fits or ledger.activations is None or ledger.inputs.recompute == "full":
        return ledger
    # Does not fit: would full recomputation (Korthikanti et al. 2022 §4: keep only each layer's input) make it?
    # The first fix people reach for (QLoRA of a 65B on one 48 GB GPU relies on it, Dettmers et al. 2023 §4).
    if training is not None:
        retry = memory_ledger(model, hardware, training.model_copy(update={"recompute": "full"}), layout, finetune,
                              params=params, memory_bytes=memory_bytes, reserve_bytes=reserve_bytes, **keywords)
    else:
        kw: dict[str, Any] = {**keywords, "recompute": "full"}
        retry = memory_ledger(model, hardware, None, layout, finetune, params=params, memory_bytes=memory_bytes,
                              reserve_bytes=reserve_bytes, **kw)
    if not retry.fits:
        return ledger
    hint = (f"With --recompute full (one more forward pass of the layers per step) it needs "
            f"{format_bytes(retry.total_bytes)} per GPU and fits, headroom {format_bytes(retry.headroom_bytes)}.")
    return ledger.model_copy(update={"notes": [hint, *ledger.notes]})


_min_gpus = min_gpus  # memory_question's flag of the same name shadows the function there

DEFAULT_TEMPLATE = "llama3-8b"  # the family max-model scales when activations are counted and no --like is given


def counts_activations(*, seq: int | None = None, batch: int | None = None, like: object = None,
                       aspect: float | None = None, finetune: FinetuneSetup | None = None) -> bool:
    """Whether ``max_model_question`` scales a model family (activations counted) rather than counting model state
    alone: any of seq, batch, like or aspect given, or anything but plain full fine-tuning (adapters need an
    architecture)."""
    tuned = finetune is not None and finetune.tuned
    return tuned or any(v is not None for v in (seq, batch, like, aspect))


def max_model_question(hardware: HardwareSpec | str, gpus: int, *, optimizer: str = "adamw",
                       precision: str = "bf16-mixed", zero: int = 3, memory_bytes: float | None = None,
                       reserve_bytes: float | None = None, seq: int | None = None, batch: int | None = None,
                       like: TransformerSpec | str | None = None, aspect: float | None = None,
                       recompute: str = "none", flash: bool = True, tp: int = 1, pp: int = 1,
                       finetune: FinetuneSetup | None = None) -> MaxModelResult | MaxModelFitResult:
    """The largest model that fits G GPUs: model state only (``max_model``, the lecture's napkin), or, when
    ``counts_activations`` says so, the largest of a family with its activations (``max_model_fit`` scaling
    ``like``, default DEFAULT_TEMPLATE; ``seq`` defaults to its pre-training length)."""
    if not counts_activations(seq=seq, batch=batch, like=like, aspect=aspect, finetune=finetune):
        return max_model(as_hardware(hardware, "hardware"), gpus, optimizer, precision, zero,
                         memory_bytes=memory_bytes, reserve_bytes=reserve_bytes)
    training = validated(TrainingSetup, micro_batch=batch or 1, seq=seq, optimizer=optimizer, precision=precision,
                         recompute=recompute, flash=flash)
    template = as_model(like if like is not None else DEFAULT_TEMPLATE, "like")
    return max_model_fit(as_hardware(hardware, "hardware"), template, training, finetune=finetune,
                         aspect=aspect, memory_bytes=memory_bytes, reserve_bytes=reserve_bytes, gpus=gpus, zero=zero,
                         tp=tp, pp=pp)
