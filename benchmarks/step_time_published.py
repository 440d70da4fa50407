"""`napkin.accounting.step_time` against published training runs it was NOT calibrated on: one table, one MAPE.

Run: python benchmarks/step_time_published.py [--source NAME] [--json FILE]

step_time's constants were fitted ONLY on the vTrain A100 rows in benchmarks/data/validation (see
benchmarks/step_time_accuracy.py). None of the runs below are in that data: they are the throughput tables
that papers and NVIDIA's framework docs publish with their full parallel layout, each a single measured step
time, TFLOP/s per GPU or MFU:

  * Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM"
    (SC'21, arXiv 2104.04473), Table 1: GPT 1.7B .. 1T on 32 .. 3072 A100 80GB (Selene), fp16, full
    recomputation, the interleaved schedule where used. Table 1 gives t, p, GPUs, batch and TFLOP/s; micro-batch,
    layers per virtual stage and the DDP flavour are from the paper's own launch script, Megatron-LM
    examples/sc21/run_table_1.sh. Its TFLOP/s are HARDWARE FLOPs of the paper's eq. 3,
    96·B·s·l·h²·(1 + s/6h + V/16lh) (full recomputation counted, attention not halved by the causal mask).
  * Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (MLSys'23, arXiv
    2205.05198), Tables 3 and 5: 22B, 175B, 530B, 1T on 8 .. 512 A100 80GB (Selene); measured iteration
    time with full recomputation (no sequence parallelism) and with sequence parallelism + selective
    recomputation. Interleaving (v = 3 for 175B and 530B) as in Calculon's validation configs for the same
    table (calculon-ai/calculon, validation/*_{full,seqsel}.json).
  * NVIDIA NeMo 24.07 performance summary (NVIDIA/NeMo docs/source/performance/performance_summary.md), DGX
    H100, FP8: GPT3-175B, LLAMA2-70B, LLAMA3-70B with #GPUs, GBS, MBS, seq, TP, PP, CP, VP and Model
    TFLOP/s/GPU. NeMo counts model FLOPs with its formulas (nemo/utils/flops_formulas.py: attention NOT
    halved by the causal mask; GPT3 vocab 51200, Llama 2 32000, Llama 3 128256).
  * Llama Team 2024, "The Llama 3 Herd of Models" (arXiv 2407.21783), Table 4: Llama 3.1 405B on 8K / 16K
    H100, TP 8, CP 1 / 16, PP 16, DP, seq 8192 / 131072, batch per DP rank, 380 .. 430 BF16 TFLOP/s per GPU
    (38-43% MFU, model FLOPs). Table 4 gives NO micro-batch and NO virtual-stage count, and 126 layers do not
    split into 16·v chunks, which napkin's interleaving requires: these rows run with micro-batch 1 and v = 1
    and are marked '*' (layout incomplete) and kept out of the headline MAPE.

Each published figure is compared in its own unit and FLOP convention: a TFLOP/s figure F_src / (G · t) is
turned into napkin's prediction by the same F_src (the source's own FLOP count for the step) over napkin's
step time, so a difference in FLOP bookkeeping (causal halving, recomputation, vocab padding) is not counted
as an error of the time model; the column 'napkin own' is napkin's figure with napkin's own count (hfu · peak
for hardware-FLOP sources, model TFLOP/s for model-FLOP ones, MFU beside the iteration-time rows). Error % =
(napkin − published) / published; MAPE is the mean |error|. 'fits' is r.fits: whether napkin's memory ledger
puts the run inside the GPU's memory (every published run did fit; a False is napkin's memory model being
pessimistic for that layout, reported, not dropped). Runs off by more than 25% get their breakdown printed.

The networks are the papers' own: Selene's DGX A100 has 8 x 200 Gb/s HDR per node = 25e9 B/s per GPU per
direction; DGX H100 8 x 400 Gb/s = 50e9; Llama 3's RoCE fabric 400 Gb/s per GPU = 50e9. Megatron 2021/22
predates FlashAttention (flash = False); NeMo 24.07 and Llama 3 use fused attention (flash = True). This is
a benchmark that prints figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NARAYANAN = ("Narayanan et al. 2021 (SC'21, arXiv 2104.04473), Table 1; micro-batch / virtual stages / DDP from "
             "Megatron-LM examples/sc21/run_table_1.sh")
KORTHIKANTI = ("Korthikanti et al. 2022 (arXiv 2205.05198), Tables 3 and 5; v from calculon-ai/calculon "
               "validation/*.json")
NEMO = ("NVIDIA NeMo 24.07 performance summary, DGX-H100 FP8 (NVIDIA/NeMo "
        "docs/source/performance/performance_summary.md)")
LLAMA3 = "Llama Team 2024, The Llama 3 Herd of Models (arXiv 2407.21783), Table 4"

SELENE = 25e9  # DGX A100: 8 x 200 Gb/s HDR InfiniBand per 8 GPUs = 25 GB/s per GPU per direction
DGX_H100 = 50e9  # DGX H100: 8 x 400 Gb/s ConnectX-7 per 8 GPUs = 50 GB/s per GPU per direction
META_ROCE = 50e9  # Llama 3 §3.3.1: 400 Gbps interconnects between GPUs
ERROR_FLAG = 0.25  # runs off by more than this get their breakdown printed


# ---------------------------------------------------------------------------------------------------------------
# Models


def megatron_gpt(name: str, hidden: int, heads: int, layers: int, seq: int = 2048, vocab: int = 51200) -> Any:
    """A Megatron-LM GPT of the 2021/2022 papers: pre-LN, GeLU MLP with f = 4h, learned positions, tied
    embeddings, vocabulary 51200 (Narayanan et al. 2021 §5.1; Korthikanti et al. 2022 §6)."""
    from napkin.specs.model import TransformerSpec

    return TransformerSpec.model_validate({
        "name": name, "display_name": f"Megatron-LM GPT {name} (h={hidden}, a={heads}, L={layers})",
        "family": "megatron-gpt", "layers": layers, "d_model": hidden, "heads": heads, "ffn_dim": 4 * hidden,
        "ffn_kind": "mlp", "activation": "gelu", "vocab": vocab, "max_context": seq, "train_seq": seq,
        "tied_embeddings": True, "positions": "learned", "norm": "layernorm", "attention_bias": "all",
        "mlp_bias": True, "sources": [NARAYANAN, KORTHIKANTI],
    })


# (hidden, heads, layers) of the papers' GPT models
GPT_SHAPES = {
    "gpt-1.7b": (2304, 24, 24), "gpt-3.6b": (3072, 32, 30), "gpt-7.5b": (4096, 32, 36),
    "gpt-18.4b": (6144, 48, 40), "gpt-39.1b": (8192, 64, 48), "gpt-76.1b": (10240, 80, 60),
    "gpt-145.6b": (12288, 96, 80), "gpt-310.1b": (16384, 128, 96), "gpt-529.6b": (20480, 128, 105),
    "gpt-1008b": (25600, 160, 128),
    "gpt-22b": (6144, 64, 48), "gpt-175b": (12288, 96, 96), "gpt-530b": (20480, 128, 105), "gpt-1t": (25600, 160, 128),
}


def get_spec(model: str) -> Any:
    if model in GPT_SHAPES:
        return megatron_gpt(model, *GPT_SHAPES[model])
    from napkin.specs.catalog import get_model

    return get_model(model)


# ---------------------------------------------------------------------------------------------------------------
# The runs


@dataclass(frozen=True)
class Run:
    """One published run: its layout, what it published, and how the source counts FLOPs."""

    name: str
    source: str
    model: str  # a GPT_SHAPES key or a catalog name
    gpu: str
    gpus: int
    tp: int
    pp: int
    micro_batch: int
    global_batch: int
    seq: int
    recompute: str
    metric: str  # "iter_s": seconds per iteration; "tflops": TFLOP/s per GPU in the source's FLOP count
    published: float
    flops: str = ""  # the source's FLOP count for a "tflops" metric: eq3 | nemo-gpt3 | nemo-llama | napkin-causal
    counts: str = ""  # what the published figure counts
    vp: int = 1
    cp: int = 1
    sp: bool = False
    zero: int = 0
    precision: str = "fp16-mixed"
    flash: bool = False
    overlap_grad_reduce: bool = False
    inter_node_bandwidth: float = SELENE
    complete: bool = True  # False: the source leaves part of the layout out (assumed here; see notes)
    notes: str = ""

    @property
    def layout(self) -> str:
        dp = self.gpus // (self.tp * self.cp * self.pp)
        s = f"tp{self.tp} pp{self.pp}" + (f"(v{self.vp})" if self.vp > 1 else "")
        s += f" cp{self.cp}" if self.cp > 1 else ""
        s += f" dp{dp} mb{self.micro_batch} B{self.global_batch}"
        s += " sp" if self.sp else ""
        s += f" z{self.zero}" if self.zero else ""
        return s


def _narayanan(size: str, tp: int, pp: int, nodes: int, mb: int, gbs: int, tflops: float, vp: int = 1,
               torch_ddp: bool = False) -> Run:
    return Run(name=f"Narayanan {size}", source=NARAYANAN, model=f"gpt-{size.lower()}", gpu="a100-sxm-80gb",
               gpus=8 * nodes, tp=tp, pp=pp, vp=vp, micro_batch=mb, global_batch=gbs, seq=2048, recompute="full",
               metric="tflops", published=tflops, flops="eq3", counts="hardware TFLOP/s/GPU (eq. 3, full recompute)",
               overlap_grad_reduce=torch_ddp,
               notes="fp16, full recompute (--recompute-method uniform); DDP=torch overlaps the gradient all-reduce"
               if torch_ddp else "fp16, full recompute; DDP=local (no overlap)")


def _korthikanti(size: str, gpus: int, pp: int, mb: int, gbs: int, vp: int, full_s: float,
                 seqsel_s: float) -> list[Run]:
    common = dict(source=KORTHIKANTI, model=f"gpt-{size.lower()}", gpu="a100-sxm-80gb", gpus=gpus, tp=8, pp=pp,
                  vp=vp, micro_batch=mb, global_batch=gbs, seq=2048, metric="iter_s", counts="iteration time (s)")
    return [Run(name=f"Korthikanti {size} full", recompute="full", sp=False, published=full_s,
                notes="Table 5 'full recompute' column, tensor parallelism without SP", **common),
            Run(name=f"Korthikanti {size} sp+sel", recompute="selective", sp=True, published=seqsel_s,
                notes="Table 5 'present work': sequence parallelism + selective recompute", **common)]


def _nemo(name: str, model: str, gpus: int, gbs: int, mb: int, seq: int, tp: int, pp: int, cp: int, vp: int,
          tflops: float, flops: str) -> Run:
    return Run(name=f"NeMo {name}", source=NEMO, model=model, gpu="h100", gpus=gpus, tp=tp, pp=pp, cp=cp, vp=vp,
               micro_batch=mb, global_batch=gbs, seq=seq, recompute="none", sp=True, zero=1, precision="fp8-mixed",
               flash=True, overlap_grad_reduce=True, inter_node_bandwidth=DGX_H100, metric="tflops",
               published=tflops, flops=flops, counts="model TFLOP/s/GPU (NeMo formula, non-causal)",
               notes="FP8; NeMo perf recipe defaults assumed: SP, distributed optimizer, DP overlap, no recompute")


def _llama3(gpus: int, cp: int, seq: int, per_dp: int, tflops: float) -> Run:
    dp = gpus // (8 * cp * 16)
    return Run(name=f"Llama3 405B {gpus // 1024}K cp{cp}", source=LLAMA3, model="llama3.1-405b", gpu="h100",
               gpus=gpus, tp=8, pp=16, cp=cp, vp=1, micro_batch=1, global_batch=per_dp * dp, seq=seq,
               recompute="none", sp=True, zero=2, precision="bf16-mixed", flash=True, overlap_grad_reduce=True,
               inter_node_bandwidth=META_ROCE, metric="tflops", published=tflops, flops="napkin-causal",
               counts="BF16 model TFLOP/s/GPU (Meta's count; napkin's causal count used)", complete=False,
               notes="micro-batch, v and recompute not published: mb 1, v 1 (126 layers do not split into 16·v "
                     "chunks), no recompute, SP and FSDP ~ ZeRO-2 with DP overlap assumed")


RUNS: list[Run] = [
    # Narayanan et al. 2021, Table 1 (TFLOP/s per GPU), layout from examples/sc21/run_table_1.sh
    _narayanan("1.7B", 1, 1, 4, 16, 512, 137, torch_ddp=True),
    _narayanan("3.6B", 2, 1, 8, 16, 512, 138, torch_ddp=True),
    _narayanan("7.5B", 4, 1, 16, 16, 512, 142, torch_ddp=True),
    _narayanan("18.4B", 8, 1, 32, 8, 1024, 135, torch_ddp=True),
    _narayanan("39.1B", 8, 2, 64, 4, 1536, 138),
    _narayanan("76.1B", 8, 4, 128, 2, 1792, 140, vp=3),  # 60 layers / 4 stages / 5 per virtual stage
    _narayanan("145.6B", 8, 8, 192, 2, 2304, 148, vp=2),  # 80 / 8 / 5
    _narayanan("310.1B", 8, 16, 240, 1, 2160, 155, vp=2),  # 96 / 16 / 3
    _narayanan("529.6B", 8, 35, 315, 1, 2520, 163, vp=3),  # 105 / 35 / 1
    _narayanan("1008B", 8, 64, 384, 1, 3072, 163),
    # Korthikanti et al. 2022, Table 3 (layout) and Table 5 (iteration time, s)
    *_korthikanti("22B", 8, 1, 4, 4, 1, 1.42, 1.10),
    *_korthikanti("175B", 64, 8, 1, 64, 3, 18.13, 13.75),
    *_korthikanti("530B", 280, 35, 1, 280, 3, 49.05, 37.83),
    *_korthikanti("1T", 512, 64, 1, 512, 1, 94.42, 71.49),
    # NeMo 24.07, DGX H100, FP8
    _nemo("GPT3-175B", "gpt3-175b", 128, 256, 1, 2048, 4, 8, 1, 6, 782, "nemo-gpt3"),
    _nemo("LLAMA2-70B", "llama2-70b", 64, 128, 1, 4096, 4, 4, 1, 20, 759, "nemo-llama"),
    _nemo("LLAMA3-70B", "llama3-70b", 64, 128, 1, 8192, 4, 4, 2, 5, 738, "nemo-llama"),
    # Llama 3, Table 4 (layout incomplete)
    _llama3(8192, 1, 8192, 32, 430),
    _llama3(16384, 1, 8192, 16, 400),
    _llama3(16384, 16, 131072, 16, 380),
]


# ---------------------------------------------------------------------------------------------------------------
# FLOP counts of the sources


NEMO_VOCAB = {"gpt3": 51200, "llama2": 32000, "llama3": 128256}  # NeMo's LLM_VOCAB_SIZE_MAP


def source_flops(run: Run, spec: Any) -> float:
    """FLOPs of one step as the source counts them (what its TFLOP/s figure is divided by)."""
    B, s, L, h = run.global_batch, run.seq, spec.layers, spec.d_model
    if run.flops == "eq3":  # Narayanan et al. 2021 eq. 3: hardware FLOPs with full recomputation
        return 96 * B * s * L * h * h * (1 + s / (6 * h) + spec.vocab / (16 * L * h))
    if run.flops == "nemo-gpt3":  # nemo/utils/flops_formulas.py gpt3()
        return (24 * B * s * h * h + 4 * B * s * s * h) * (3 * L) + 6 * B * s * h * NEMO_VOCAB["gpt3"]
    if run.flops == "nemo-llama":  # nemo/utils/flops_formulas.py llama2() / llama3()
        vocab = NEMO_VOCAB["llama3" if spec.vocab > 100_000 else "llama2"]
        kv = spec.kv_heads or spec.heads
        return B * s * L * h * h * (12 + 12 * kv / spec.heads + 18 * spec.ffn_dim / h + 12 * s / h
                                    + 6 * vocab / (L * h))
    if run.flops == "napkin-causal":
        from napkin.accounting.flops import count_flops

        return count_flops(spec, tokens=B * s, seq=s).model_flops
    raise ValueError(f"{run.name}: unknown FLOP count {run.flops!r}")


# ---------------------------------------------------------------------------------------------------------------
# Predictions


@dataclass
class Result:
    run: Run
    published: float
    predicted: float | None = None
    own: float | None = None  # napkin's figure with napkin's own FLOP count (MFU for iteration-time rows)
    published_step_s: float | None = None
    predicted_step_s: float | None = None
    fits: bool | None = None
    memory_gib: float | None = None
    limiter: str = ""
    breakdown: dict[str, float] | None = None
    error: str | None = None

    @property
    def err(self) -> float:
        return (self.predicted - self.published) / self.published if self.predicted is not None else math.nan


def predict(run: Run) -> Result:
    from napkin.accounting.step_time import step_time
    from napkin.specs.catalog import get_hardware

    out = Result(run, run.published)
    try:
        spec, hw = get_spec(run.model), get_hardware(run.gpu)
        r = step_time(spec, hw, gpus=run.gpus, tp=run.tp, pp=run.pp, vp=run.vp, cp=run.cp, sp=run.sp,
                      zero=run.zero, micro_batch=run.micro_batch, global_batch=run.global_batch, seq=run.seq,
                      recompute=run.recompute, precision=run.precision, flash=run.flash,
                      overlap_grad_reduce=run.overlap_grad_reduce, node_size=8,
                      inter_node_bandwidth=run.inter_node_bandwidth)
    except Exception as e:  # reported in the table, not fatal
        out.error = f"{type(e).__name__}: {e}"
        return out
    t = float(r.step_time_s)
    out.predicted_step_s, out.fits, out.limiter = t, bool(r.fits), r.limiter
    out.memory_gib = float(r.memory_bytes) / 2**30
    out.breakdown = {k: float(v) for k, v in dict(r.breakdown).items()}
    if run.metric == "iter_s":
        out.predicted, out.published_step_s, out.own = t, run.published, float(r.mfu)
    else:
        f = source_flops(run, spec)
        out.predicted = f / (run.gpus * t) / 1e12
        out.published_step_s = f / (run.gpus * run.published * 1e12)
        hardware = run.flops == "eq3"
        out.own = float(r.hfu if hardware else r.mfu) * float(r.peak_flops_per_s) / 1e12
    return out


# ---------------------------------------------------------------------------------------------------------------
# Output


def pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}%"


def mape(results: list[Result]) -> float:
    errs = [abs(r.err) for r in results if r.predicted is not None]
    return sum(errs) / len(errs) if errs else math.nan


def fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "-"
    return f"{x:.2f} s" if metric == "iter_s" else f"{x:.0f}"


def print_table(results: list[Result]) -> None:
    head = ["run", "gpu", "GPUs", "layout", "recompute", "published", "napkin", "error", "napkin own", "fits",
            "mem GiB", "limiter"]
    rows = []
    for res in results:
        r = res.run
        own = "-" if res.own is None else (f"MFU {res.own:.3f}" if r.metric == "iter_s" else f"{res.own:.0f}")
        rows.append([r.name + ("" if r.complete else " *"), r.gpu, str(r.gpus), r.layout, r.recompute,
                     fmt(res.published, r.metric), fmt(res.predicted, r.metric),
                     pct(res.err) if res.error is None else "ERROR", own,
                     "-" if res.fits is None else ("yes" if res.fits else "NO"),
                     "-" if res.memory_gib is None else f"{res.memory_gib:.0f}", res.limiter])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    right = {2, 5, 6, 7, 8, 10}
    line = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="", help="only runs whose source contains this (e.g. Korthikanti)")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="write per-run results")
    args = ap.parse_args(argv)

    runs = [r for r in RUNS if args.source.lower() in (r.source + r.name).lower()]
    t0 = time.perf_counter()
    results = [predict(r) for r in runs]
    dt = time.perf_counter() - t0

    print("napkin step_time vs published runs (none of them used for calibration: step_time was fitted on the "
          "vTrain A100 rows only)")
    print("units: '... s' = seconds per iteration; otherwise TFLOP/s per GPU in the source's own FLOP count "
          "(napkin's = that count / napkin's step time);\n'napkin own' = napkin's figure with napkin's count "
          "(hfu·peak for Narayanan, MFU·peak for NeMo / Llama 3, MFU for iteration-time rows); "
          "* = layout incomplete in the source\n")
    print_table(results)

    for res in results:
        if res.error:
            print(f"\n{res.run.name}: {res.error}")

    print("\nMAPE (|napkin − published| / published, in the published unit):")
    groups: dict[str, list[Result]] = {}
    for res in results:
        groups.setdefault(res.run.source.split(",")[0].split(" (")[0], []).append(res)
    for name, rs in groups.items():
        print(f"  {name:45s} {len(rs):2d} runs  MAPE {100 * mape(rs):5.1f}%  (mean signed error "
              f"{pct(statistics.fmean(r.err for r in rs if r.predicted is not None))})")
    full = [r for r in results if r.run.complete]
    print(f"  {'runs with the full layout published':45s} {len(full):2d} runs  MAPE {100 * mape(full):5.1f}%")
    print(f"  {'all runs (incl. * rows)':45s} {len(results):2d} runs  MAPE {100 * mape(results):5.1f}%")
    nofit = [r.run.name for r in results if r.fits is False]
    print(f"\nnot fitting napkin's memory ledger (r.fits False; every run here did fit in reality): "
          f"{', '.join(nofit) or 'none'}")

    off = [r for r in results if r.predicted is not None and abs(r.err) > ERROR_FLAG]
    if off:
        print(f"\nbreakdown of runs off by more than {ERROR_FLAG:.0%} (napkin's step time beside the published "
              "one, then napkin's terms in seconds per step):")
        for res in off:
            b = res.breakdown or {}
            top = sorted(((v, k) for k, v in b.items() if v > 0), reverse=True)
            parts = ", ".join(f"{k} {v:.3g}" for v, k in top)
            print(f"  {res.run.name}: napkin {res.predicted_step_s:.3g} s vs published {res.published_step_s:.3g} s "
                  f"({pct(res.err)}): {parts}")

    print("\nsources:")
    for src in dict.fromkeys(r.source for r in runs):
        print(f"  - {src}")
    print(f"\n{len(results)} predictions in {dt:.2f} s")

    if args.json is not None:
        args.json.write_text(json.dumps([{**asdict(r.run), "published": r.published, "predicted": r.predicted,
                                          "error": None if r.predicted is None else r.err, "own": r.own,
                                          "published_step_s": r.published_step_s,
                                          "predicted_step_s": r.predicted_step_s, "fits": r.fits,
                                          "memory_gib": r.memory_gib, "breakdown_s": r.breakdown,
                                          "failure": r.error} for r in results], indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
