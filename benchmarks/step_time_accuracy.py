"""Accuracy of `napkin.accounting.step_time` against measured Megatron-LM iteration times, beside a constant MFU.

Run: python benchmarks/step_time_accuracy.py [--data DIR] [--gpu a100] [--precision fp16-mixed] [--vocab 51200]
         [--intra-node-bandwidth B/s] [--inter-node-bandwidth B/s] [--set NAME=VALUE,...]
         [--fit NAME[,NAME...] [--fit-rows even|single|multi|all]] [--brief] [--json FILE] [--[no-]stacks]

After the vTrain tables it prints issue 23's per-stack tables (benchmarks/stack_accuracy.py): MAPE, median, max and
mean signed error per stack × GPU × precision × sequence band, on fitted and held-back rows, beside the previous
model, the FP8/BF16 ratios, and each stack's totals against the targets.

The data: 1502 measured training iterations of Megatron-LM GPT models on NVIDIA A100 GPUs with their full
parallel layout (tensor / pipeline / data parallel sizes, micro and global batch), published by the vTrain
authors (Bang et al., "vTrain: A Simulation Framework for Evaluating Cost-effective and Compute-optimal Large
Language Model Training", MICRO 2024; VIA-Research/vTrain, data/ground_truth_{single,multi}.csv at f8dda84),
kept in benchmarks/data/validation/ (see its README and NOTICE.md: 1440 rows on one 8-GPU node, 62 rows on 256 and
512 GPUs).
They were run with full activation recomputation, the 1F1B schedule, no gradient bucketing, 8 GPUs per node,
800 Gb/s between nodes (12.5 GB/s per GPU).

What it prints, per file and per model (h, heads, layers, seq; the multi-node file by parameter count): row count
and the mean / median / maximum absolute percentage error of the predicted step time against the measured one;
per model group (same model, GPU count and global batch: the layouts competing for one job) the Kendall tau-b
between predicted and measured times and the regret of running the layout predicted fastest. Beside each figure,
the same for the baseline of ONE constant MFU for every row (predicted time = model FLOPs / (G · peak · MFU_c),
MFU_c the median measured MFU), which cannot rank the layouts of a group at all (it predicts them equal). Then
the overall MAPE, the share of rows within 10% and 30%, the worst rows, the measured TFLOP/s per GPU, and the
predictor's speed (milliseconds per call, timed in process).

--fit NAME[,NAME...] calibrates the named float fields of StepConstants by coordinate descent on a log grid
(0.25x to 4x each default, 15 points; fractions kept in (0, 1]) to minimise the MAPE on the fit rows (default:
every second row of each file), then reports all rows and the held-out rows apart, and prints the fitted values
as a line to paste (and as --set to rerun with). The README's rule: a few global constants, never per row or
per model; say which rows were fitted on. This is a benchmark that prints figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data" / "validation"  # in the repository: nothing outside the clone
FILES = {"single": "vtrain_single_node.csv", "multi": "vtrain_multi_node.csv"}
VTRAIN = ("Bang et al., vTrain: A Simulation Framework for Evaluating Cost-effective and Compute-optimal Large "
          "Language Model Training, MICRO 2024 (VIA-Research/vTrain, data/ground_truth_*.csv at f8dda84)")
VOCAB = 51200  # GPT-2 BPE 50257 padded by Megatron to a multiple of 128·TP (51200 at TP 8); validation README
NODE_SIZE = 8  # vTrain's configs: 8 A100 per node with NVLink
INTER_NODE_BYTES_PER_S = 800e9 / 8 / 8  # vTrain: 800 Gb/s per node = 100 GB/s over 8 GPUs = 12.5e9 B/s per GPU
RECOMPUTE = "full"  # vTrain's configs: use_checkpoint true (full activation recomputation)
MIN_TAU_ROWS = 3  # groups smaller than this give no Kendall tau
GRID_POINTS = 15  # log grid per fitted constant
GRID_SPAN = 4.0  # 0.25x .. 4x the default

# CSV header -> Row field (the multi-node file adds the parameter count first)
COLUMNS = {
    "Parameters (billion)": "params_b",
    "# GPUs": "gpus",
    "global batch": "global_batch",
    "micro batch": "micro_batch",
    "hidden size": "hidden",
    "attention heads": "heads",
    "# layers": "layers",
    "sequence length": "seq",
    "tensor parallelism": "tp",
    "data parallelism": "dp",
    "pipeline parallelism": "pp",
    "iteration time (ms)": "measured_ms",
}


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Row:
    """One measured iteration: the job, its layout, and the measured time."""

    file: str  # "single" or "multi"
    index: int  # 0-based data row in its file
    gpus: int
    global_batch: int
    micro_batch: int
    hidden: int
    heads: int
    layers: int
    seq: int
    tp: int
    dp: int
    pp: int
    measured_ms: float
    params_b: float | None = None

    @property
    def measured_s(self) -> float:
        return self.measured_ms / 1e3

    @property
    def model(self) -> str:
        """The model's name in the tables: its shape (single node) or its parameter count (multi node)."""
        shape = f"h{self.hidden} a{self.heads} L{self.layers} s{self.seq}"
        return shape if self.params_b is None else f"{self.params_b:g}B ({shape})"

    @property
    def group(self) -> tuple[str, str, int, int]:
        """The layouts competing for one job: same file, model, GPU count and global batch."""
        return (self.file, self.model, self.gpus, self.global_batch)

    @property
    def layout(self) -> str:
        return f"tp{self.tp} pp{self.pp} dp{self.dp} mb{self.micro_batch}"


def read_rows(data_dir: Path) -> list[Row]:
    """Both vTrain files, single node first; checks GPUs = TP·DP·PP on every row."""
    rows: list[Row] = []
    for file, name in FILES.items():
        path = data_dir / name
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            unknown = set(reader.fieldnames or ()) - set(COLUMNS)
            if unknown:
                raise ValueError(f"{path}: unexpected columns {sorted(unknown)}")
            for i, rec in enumerate(reader):
                vals: dict[str, Any] = {}
                for col, key in COLUMNS.items():
                    if col in rec:
                        vals[key] = float(rec[col]) if key in ("measured_ms", "params_b") else int(rec[col])
                row = Row(file=file, index=i, **vals)
                if row.tp * row.dp * row.pp != row.gpus:
                    raise ValueError(f"{path}: row {i + 2}: tp·dp·pp = {row.tp * row.dp * row.pp} != GPUs {row.gpus}")
                rows.append(row)
    return rows


@functools.cache
def build_spec(hidden: int, heads: int, layers: int, seq: int, vocab: int = VOCAB) -> Any:
    """The Megatron-LM GPT of a vTrain row: pre-LN, GeLU MLP with f = 4h, learned positions, tied embeddings."""
    from calibration_data import gpt_style_spec

    return gpt_style_spec(name=f"vtrain-gpt-h{hidden}-a{heads}-l{layers}-s{seq}",
                          display_name=f"Megatron-LM GPT h={hidden} a={heads} L={layers} s={seq} (vTrain)",
                          family="megatron-gpt", layers=layers, d_model=hidden, heads=heads,
                          ffn_dim=4 * hidden,  # Megatron-LM GPT: d_ff = 4h
                          vocab=vocab, seq=seq, source=VTRAIN)


def spec_of(row: Row, vocab: int = VOCAB) -> Any:
    return build_spec(row.hidden, row.heads, row.layers, row.seq, vocab)


@functools.cache
def _model_flops(hidden: int, heads: int, layers: int, seq: int, vocab: int, global_batch: int) -> float:
    from napkin.accounting.flops import count_flops

    spec = build_spec(hidden, heads, layers, seq, vocab)
    return count_flops(spec, tokens=global_batch * seq, seq=seq).model_flops


def model_flops(row: Row, vocab: int = VOCAB) -> float:
    """Model FLOPs of one step (forward + backward of B·s tokens; what MFU counts, no recomputation)."""
    return _model_flops(row.hidden, row.heads, row.layers, row.seq, vocab, row.global_batch)


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def ape(predicted: float, measured: float) -> float:
    """Absolute percentage error as a fraction: |predicted − measured| / measured."""
    return abs(predicted - measured) / measured


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error (a fraction); nan for no rows."""
    errs = [ape(p, m) for p, m in zip(predicted, measured, strict=True)]
    return sum(errs) / len(errs) if errs else math.nan


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation of x and y, with ties (Kendall 1945, "The treatment of ties in ranking
    problems", Biometrika 33(3)): (n_c − n_d) / sqrt((n_0 − n_1)(n_0 − n_2)), where n_c / n_d count the concordant
    / discordant pairs, n_0 = n(n−1)/2 all pairs, n_1 / n_2 the pairs tied in x / in y. 1 = same order, −1 =
    reversed; nan when either side is constant (or fewer than 2 values). O(n²), for the small groups here.
    """
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    concordant = discordant = only_x_tied = only_y_tied = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue  # tied in both: in n_1 and n_2, in neither factor of the denominator
            if dx == 0:
                only_x_tied += 1
            elif dy == 0:
                only_y_tied += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    # n_0 − n_1 = pairs not tied in x = n_c + n_d + (tied in y only); likewise n_0 − n_2
    denom = math.sqrt((concordant + discordant + only_y_tied) * (concordant + discordant + only_x_tied))
    return (concordant - discordant) / denom if denom else math.nan


def regret(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """(measured time of the layout predicted fastest − best measured) / best measured.

    Layouts tied for the fastest prediction are picked at random: the regret is their mean (a predictor that
    calls every layout equal, like a constant MFU, gets the mean regret of a blind pick).
    """
    if not predicted:
        return math.nan
    fastest = min(predicted)
    picked = [m for p, m in zip(predicted, measured, strict=True) if p == fastest]
    best = min(measured)
    return (sum(picked) / len(picked) - best) / best


def p95(values: Sequence[float]) -> float:
    """95th percentile, nearest rank."""
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)] if s else math.nan


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def _nanmin(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return min(v) if v else math.nan


def _nanmax(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return max(v) if v else math.nan


# ---------------------------------------------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class Setup:
    """Everything but the row and the constants that a prediction takes."""

    hardware: Any
    precision: str = "fp16-mixed"
    vocab: int = VOCAB
    node_size: int = NODE_SIZE
    intra_node_bandwidth: float | None = None
    inter_node_bandwidth: float | None = INTER_NODE_BYTES_PER_S
    flash: bool = False

    @functools.cached_property
    def peak(self) -> float:
        """Dense peak FLOP/s of the precision's matmul dtype (what MFU is measured against)."""
        from napkin.accounting.model_state import get_precision

        return float(self.hardware.peak(get_precision(self.precision).compute))


def call_step_time(step_time: Callable[..., Any], setup: Setup, row: Row, constants: Any) -> Any:
    return step_time(spec_of(row, setup.vocab), setup.hardware, gpus=row.gpus, tp=row.tp, pp=row.pp,
                     micro_batch=row.micro_batch, global_batch=row.global_batch, seq=row.seq, recompute=RECOMPUTE,
                     precision=setup.precision, node_size=setup.node_size,
                     intra_node_bandwidth=setup.intra_node_bandwidth, inter_node_bandwidth=setup.inter_node_bandwidth,
                     flash=setup.flash, constants=constants)


@dataclass
class Record:
    """One row's prediction, the baseline's, and the measured figures they are compared with."""

    row: Row
    predicted_s: float | None
    error: str | None
    call_s: float
    predicted_mfu: float | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    model_flops: float = math.nan
    measured_mfu: float = math.nan
    baseline_s: float = math.nan
    fits: bool | None = None

    @property
    def ok(self) -> bool:
        return self.predicted_s is not None

    @property
    def ape(self) -> float:
        return ape(self.predicted_s, self.row.measured_s) if self.predicted_s is not None else math.nan

    @property
    def baseline_ape(self) -> float:
        return ape(self.baseline_s, self.row.measured_s)


def predict(rows: Sequence[Row], step_time: Callable[..., Any], setup: Setup, constants: Any = None,
            strict: bool = False) -> list[Record]:
    """step_time on every row, each call timed; a row whose call raises keeps the error (re-raised if strict)."""
    for r in rows:  # specs built before the timing starts
        spec_of(r, setup.vocab)
    out = []
    for r in rows:
        t0 = time.perf_counter()
        try:
            res = call_step_time(step_time, setup, r, constants)
        except Exception as e:  # a failing row is reported, not fatal (unless --strict)
            if strict:
                raise
            out.append(Record(r, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0))
            continue
        dt = time.perf_counter() - t0
        out.append(Record(r, float(res.step_time_s), None, dt, predicted_mfu=float(res.mfu),
                          breakdown={k: float(v) for k, v in dict(res.breakdown).items()},
                          fits=getattr(res, "fits", None)))
    return out


def add_baseline(records: Sequence[Record], setup: Setup, fit_on: Sequence[Record] | None = None) -> float:
    """Fill in measured MFU and the constant-MFU baseline; MFU_c = median measured MFU over `fit_on` (default all).

    Baseline time = model FLOPs per step / (G · peak · MFU_c), one MFU_c for every row.
    """
    for rec in records:
        r = rec.row
        rec.model_flops = model_flops(r, setup.vocab)
        rec.measured_mfu = rec.model_flops / (r.gpus * setup.peak * r.measured_s)
    mfu_c = statistics.median(rec.measured_mfu for rec in (fit_on if fit_on is not None else records))
    for rec in records:
        rec.baseline_s = rec.model_flops / (rec.row.gpus * setup.peak * mfu_c)
    return mfu_c


# ---------------------------------------------------------------------------------------------------------------
# Tables


def pct(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def num(x: float, digits: int = 3) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """Plain aligned text: the first `left` columns left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def accuracy(recs: Sequence[Record]) -> dict[str, float]:
    ok = [r for r in recs if r.ok]
    a = [r.ape for r in ok]
    b = [r.baseline_ape for r in ok]
    return {
        "rows": len(recs), "predicted": len(ok),
        "mape": _nanmean(a), "median_ape": statistics.median(a) if a else math.nan, "max_ape": _nanmax(a),
        "within_10": sum(x <= 0.10 for x in a) / len(a) if a else math.nan,
        "within_30": sum(x <= 0.30 for x in a) / len(a) if a else math.nan,
        "baseline_mape": _nanmean(b), "baseline_median_ape": statistics.median(b) if b else math.nan,
        "baseline_max_ape": _nanmax(b),
        "baseline_within_10": sum(x <= 0.10 for x in b) / len(b) if b else math.nan,
        "baseline_within_30": sum(x <= 0.30 for x in b) / len(b) if b else math.nan,
    }


def groups(recs: Sequence[Record]) -> list[dict[str, Any]]:
    """Kendall tau-b and regret per model group (rows that were predicted; tau only with >= 3 of them)."""
    by: dict[tuple[str, str, int, int], list[Record]] = {}
    for r in recs:
        if r.ok:
            by.setdefault(r.row.group, []).append(r)
    rank = {k: i for i, k in enumerate(_models(recs))}
    out = []
    for (file, model, gpus, batch), g in sorted(by.items(), key=lambda kv: (rank[kv[0][:2]], kv[0][2], kv[0][3])):
        pred = [r.predicted_s for r in g]
        base = [r.baseline_s for r in g]
        meas = [r.row.measured_s for r in g]
        many = len(g) >= MIN_TAU_ROWS
        out.append({
            "file": file, "model": model, "gpus": gpus, "global_batch": batch, "rows": len(g),
            "tau": kendall_tau_b(pred, meas) if many else math.nan,
            "baseline_tau": kendall_tau_b(base, meas) if many else math.nan,
            "regret": regret(pred, meas) if len(g) > 1 else math.nan,
            "baseline_regret": regret(base, meas) if len(g) > 1 else math.nan,
            "planner_regret": planner_regret(g) if len(g) > 1 else math.nan,
            "best_layout": min(g, key=lambda r: r.row.measured_s).row.layout,
            "picked_layout": min(g, key=lambda r: r.predicted_s).row.layout,  # type: ignore[arg-type,return-value]
        })
    return out


def planner_regret(g: Sequence[Record]) -> float:
    """`napkin plan`'s view of a group: it keeps the layouts the memory ledger says fit and runs the one predicted
    fastest; its regret is that layout's measured time over the best measured of the whole group, − 1."""
    fitting = [r for r in g if r.fits is not False]
    if not fitting:
        return math.nan
    pick = min(fitting, key=lambda r: r.predicted_s)  # type: ignore[arg-type,return-value]
    best = min(r.row.measured_s for r in g)
    return pick.row.measured_s / best - 1


def _models(recs: Sequence[Record]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], Row] = {}
    for r in recs:
        seen.setdefault((r.row.file, r.row.model), r.row)
    order = list(FILES)
    return sorted(seen, key=lambda k: (order.index(k[0]), seen[k].params_b or 0, seen[k].hidden, seen[k].layers))


def summarize(recs: Sequence[Record]) -> dict[str, Any]:
    gs = groups(recs)
    ranked = [g for g in gs if g["rows"] >= MIN_TAU_ROWS]
    chosen = [g for g in gs if g["rows"] > 1]
    per_model = []
    for file, model in _models(recs):
        sub = [r for r in recs if r.row.file == file and r.row.model == model]
        gm = [g for g in gs if g["file"] == file and g["model"] == model]
        gr = [g for g in gm if g["rows"] >= MIN_TAU_ROWS]
        gc = [g for g in gm if g["rows"] > 1]
        per_model.append({"file": file, "model": model, **accuracy(sub), "groups": len(gc), "tau_groups": len(gr),
                          "mean_tau": _nanmean(g["tau"] for g in gr), "min_tau": _nanmin(g["tau"] for g in gr),
                          "mean_regret": _nanmean(g["regret"] for g in gc),
                          "max_regret": _nanmax(g["regret"] for g in gc),
                          "baseline_mean_regret": _nanmean(g["baseline_regret"] for g in gc),
                          "baseline_max_regret": _nanmax(g["baseline_regret"] for g in gc)})
    per_file = {f: accuracy([r for r in recs if r.row.file == f]) for f in FILES if any(r.row.file == f for r in recs)}
    return {
        "overall": {**accuracy(recs), "tau_groups": len(ranked), "mean_tau": _nanmean(g["tau"] for g in ranked),
                    "min_tau": _nanmin(g["tau"] for g in ranked), "mean_regret": _nanmean(g["regret"] for g in chosen),
                    "max_regret": _nanmax(g["regret"] for g in chosen),
                    "planner_mean_regret": _nanmean(g["planner_regret"] for g in chosen),
                    "planner_max_regret": _nanmax(g["planner_regret"] for g in chosen),
                    "baseline_mean_regret": _nanmean(g["baseline_regret"] for g in chosen),
                    "baseline_max_regret": _nanmax(g["baseline_regret"] for g in chosen)},
        "per_file": per_file, "per_model": per_model, "groups": gs,
    }


def report(recs: Sequence[Record], title: str, brief: bool = False) -> dict[str, Any]:
    """Print the accuracy and ranking tables of `recs`; return their summary."""
    s = summarize(recs)
    print(f"\n=== {title}: {len(recs)} rows ===")
    if not recs:
        return s
    failed = [r for r in recs if not r.ok]
    if failed:
        msgs: dict[str, int] = {}
        for r in failed:
            msgs[r.error or ""] = msgs.get(r.error or "", 0) + 1
        print(f"step_time raised on {len(failed)} rows (left out of both columns below):")
        for m, n in sorted(msgs.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {n:5d} x {m[:200]}")

    print("\nAccuracy of the step time (APE = |predicted − measured| / measured), step_time | constant-MFU baseline")
    print(table(["file", "model", "rows", "MAPE", "median", "max", "|", "base MAPE", "base median", "base max"],
                [[m["file"], m["model"], m["predicted"], pct(m["mape"]), pct(m["median_ape"]), pct(m["max_ape"]), "|",
                  pct(m["baseline_mape"]), pct(m["baseline_median_ape"]), pct(m["baseline_max_ape"])]
                 for m in s["per_model"]]
                + [[f, "(all)", a["predicted"], pct(a["mape"]), pct(a["median_ape"]), pct(a["max_ape"]), "|",
                    pct(a["baseline_mape"]), pct(a["baseline_median_ape"]), pct(a["baseline_max_ape"])]
                   for f, a in s["per_file"].items()], left=2))

    if not brief:
        print(f"\nRanking per model group (same model, GPUs, global batch; tau-b needs >= {MIN_TAU_ROWS} rows; "
              "regret = measured time of the predicted-fastest layout over the best, − 1)")
        print(table(["file", "model", "GPUs", "batch", "rows", "tau", "regret", "picked", "best measured", "|",
                     "base tau", "base regret"],
                    [[g["file"], g["model"], g["gpus"], g["global_batch"], g["rows"], num(g["tau"]), pct(g["regret"]),
                      g["picked_layout"], g["best_layout"], "|", num(g["baseline_tau"]), pct(g["baseline_regret"])]
                     for g in s["groups"]], left=2))

    print("\nRanking per model (over its groups): step_time | constant-MFU baseline (constant within a group: "
          "no tau, regret of a blind pick)")
    print(table(["file", "model", "groups", "tau groups", "mean tau", "min tau", "mean regret", "max regret", "|",
                 "base mean regret", "base max regret"],
                [[m["file"], m["model"], m["groups"], m["tau_groups"], num(m["mean_tau"]), num(m["min_tau"]),
                  pct(m["mean_regret"]), pct(m["max_regret"]), "|", pct(m["baseline_mean_regret"]),
                  pct(m["baseline_max_regret"])] for m in s["per_model"]], left=2))

    o = s["overall"]
    print("\nSummary" + (f" ({o['predicted']} of {o['rows']} rows predicted)" if o["predicted"] != o["rows"] else ""))
    print(table(["", "step_time", "constant MFU"], [
        ["MAPE", pct(o["mape"]), pct(o["baseline_mape"])],
        ["median APE", pct(o["median_ape"]), pct(o["baseline_median_ape"])],
        ["max APE", pct(o["max_ape"]), pct(o["baseline_max_ape"])],
        ["rows within 10%", pct(o["within_10"]), pct(o["baseline_within_10"])],
        ["rows within 30%", pct(o["within_30"]), pct(o["baseline_within_30"])],
        [f"mean Kendall tau-b ({o['tau_groups']} groups)", num(o["mean_tau"]), "—"],
        ["min Kendall tau-b", num(o["min_tau"]), "—"],
        ["mean regret of the predicted-fastest layout", pct(o["mean_regret"]), pct(o["baseline_mean_regret"])],
        ["max regret", pct(o["max_regret"]), pct(o["baseline_max_regret"])],
        ["napkin plan's top-1 regret (fitting layouts), mean", pct(o.get("planner_mean_regret", math.nan)), "—"],
        ["napkin plan's top-1 regret, max", pct(o.get("planner_max_regret", math.nan)), "—"],
    ]))

    worst = sorted((r for r in recs if r.ok), key=lambda r: -r.ape)[:5]
    print("\nWorst rows")
    print(table(["file", "row", "model", "GPUs", "batch", "layout", "measured ms", "predicted ms", "APE", "base APE"],
                [[r.row.file, r.row.index, r.row.model, r.row.gpus, r.row.global_batch, r.row.layout,
                  f"{r.row.measured_ms:.1f}", f"{1e3 * (r.predicted_s or 0):.1f}", pct(r.ape), pct(r.baseline_ape)]
                 for r in worst], left=3))
    return s


def print_breakdown(recs: Sequence[Record]) -> None:
    """Mean share of each breakdown term in the predicted step time, per file (terms may overlap)."""
    lines = []
    for f in FILES:
        ok = [r for r in recs if r.ok and r.row.file == f and r.predicted_s]
        if not ok:
            continue
        terms = sorted({k for r in ok for k, v in r.breakdown.items() if v})  # terms zero on every row left out
        for k in terms:
            lines.append([f, k, pct(_nanmean(r.breakdown.get(k, 0.0) / r.predicted_s for r in ok)),  # type: ignore
                          f"{1e3 * _nanmean(r.breakdown.get(k, 0.0) for r in ok):.2f}"])
    if lines:
        print("\nstep_time breakdown: mean share of the predicted step time per term (terms may overlap; all-zero "
              "terms left out)")
        print(table(["file", "term", "mean share", "mean ms"], lines, left=2))


# ---------------------------------------------------------------------------------------------------------------
# Constants: --set and --fit


def _kind(info: Any) -> type | None:
    """float or int for a numeric field (float | None counts as float), else None."""
    import typing

    ann = info.annotation
    if ann in (float, int):
        return ann  # type: ignore[no-any-return]
    args = set(typing.get_args(ann))
    return float if args == {float, type(None)} else None


def float_fields(constants_cls: Any) -> dict[str, Any]:
    """StepConstants' float fields (float | None included): name -> pydantic FieldInfo."""
    return {n: f for n, f in constants_cls.model_fields.items() if _kind(f) is float}


def is_fraction(info: Any, name: str = "") -> bool:
    """A field bounded above by 1 (le/lt <= 1 in its constraints), or named like one (efficiency, fraction)."""
    for m in info.metadata:
        for bound in ("le", "lt"):
            v = getattr(m, bound, None)
            if v is not None and v <= 1:
                return True
    default = info.default
    return any(w in name for w in ("fraction", "efficiency", "overlap")) and isinstance(default, float) and default <= 1


def parse_set(text: str, constants_cls: Any) -> dict[str, float | int]:
    """'a=1.5,b=3' -> {'a': 1.5, 'b': 3}, checked against StepConstants' numeric fields."""
    fields = constants_cls.model_fields
    out: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in fields or _kind(fields[name]) is None:
            numeric = ", ".join(n for n, f in fields.items() if _kind(f) is not None)
            raise SystemExit(f"--set: '{part}' is not NAME=VALUE with NAME one of: {numeric}")
        out[name] = int(value) if _kind(fields[name]) is int else float(value)
    return out


def log_grid(default: float, fraction: bool, points: int = GRID_POINTS, span: float = GRID_SPAN) -> list[float]:
    """default · span^t for t evenly in [−1, 1] (points values); fractions clipped to (0, 1]."""
    if not default > 0:
        raise SystemExit(f"--fit: a log grid needs a positive default, got {default}")
    vals = [default * span ** (-1 + 2 * k / (points - 1)) for k in range(points)]
    if fraction:
        vals = [min(v, 1.0) for v in vals]
    return sorted(set(vals))


_FIT: dict[str, Any] = {}  # the objective's state, set before forking worker processes


def _objective(values: tuple[float, ...]) -> float:
    """MAPE on the fit rows with the fitted fields set to `values` (inf if a row that predicted at the start fails)."""
    from pydantic import ValidationError

    st = _FIT
    try:
        constants = st["cls"].model_validate({**st["base"], **dict(zip(st["names"], values, strict=True))})
    except ValidationError:
        return math.inf
    recs = predict(st["rows"], st["step_time"], st["setup"], constants)
    if any(not r.ok for r in recs):
        return math.inf
    return mape([r.predicted_s for r in recs], [r.row.measured_s for r in recs])  # type: ignore[misc]


@dataclass
class FitResult:
    values: dict[str, float]
    start_mape: float
    mape: float
    evaluations: int
    seconds: float
    stopped_early: bool
    at_edge: list[str] = field(default_factory=list)  # fields that ended on a bound of their search range


def fit_constants(names: Sequence[str], constants_cls: Any, base: dict[str, Any], rows: Sequence[Row],
                  step_time: Callable[..., Any], setup: Setup, jobs: int = 1, sweeps: int = 3,
                  budget_s: float = 100.0, log: Callable[[str], None] = print) -> FitResult:
    """Coordinate descent over `names` on a log grid, minimising the MAPE on `rows`.

    Sweep 1 scans each field's whole grid (0.25x..4x its default, 15 points) with the others held; later sweeps
    walk the grid from the current point while the MAPE falls, until a sweep changes nothing; a last pass tries
    a half, a quarter and an eighth of a grid step either side. Fractions stay in (0, 1]. Stops after the
    field in which the time budget runs out (no refinement then). Evaluations are cached and, with jobs > 1,
    run in forked processes.
    """
    fields = float_fields(constants_cls)
    bad = [n for n in names if n not in fields]
    if bad:
        raise SystemExit(f"--fit: {', '.join(bad)} not float fields of StepConstants; they are: {', '.join(fields)}")
    centre = {n: fields[n].default if fields[n].default is not None else base.get(n) for n in names}
    unset = [n for n, v in centre.items() if v is None]
    if unset:
        raise SystemExit(f"--fit: {', '.join(unset)} default to None: give a starting value with --set")
    first = predict(rows, step_time, setup, constants_cls.model_validate(base))
    rows = [r.row for r in first if r.ok]
    if len(rows) < len(first):
        log(f"  {len(first) - len(rows)} fit rows raise with the starting constants: fitting on the other {len(rows)}")
    _FIT.update(cls=constants_cls, base=dict(base), names=tuple(names), rows=rows, step_time=step_time, setup=setup)
    start = tuple(float(base[n]) if base.get(n) is not None else float(centre[n]) for n in names)
    frac = [is_fraction(fields[n], n) for n in names]
    grids = [log_grid(float(centre[n]), f) for n, f in zip(names, frac, strict=True)]
    cache: dict[tuple[float, ...], float] = {}
    t0 = time.perf_counter()

    pool = None
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        pool = multiprocessing.get_context("fork").Pool(jobs)

    def evaluate(points: list[tuple[float, ...]]) -> list[float]:
        todo = [p for p in dict.fromkeys(points) if p not in cache]
        if todo:
            vals = pool.map(_objective, todo) if pool is not None and len(todo) > 1 else [_objective(p) for p in todo]
            cache.update(zip(todo, vals, strict=True))
        return [cache[p] for p in points]

    try:
        cur = start
        best = start_mape = evaluate([cur])[0]
        stopped = False
        for sweep in range(sweeps):
            changed = False
            for i, name in enumerate(names):
                grid = grids[i]
                if sweep == 0:
                    cands = [cur[:i] + (v,) + cur[i + 1:] for v in grid]
                    scores = evaluate(cands)
                    k = min(range(len(cands)), key=scores.__getitem__)
                    if scores[k] < best:
                        cur, best, changed = cands[k], scores[k], True
                else:  # walk the grid from the nearest point while it improves
                    j = min(range(len(grid)), key=lambda m: abs(math.log(grid[m] / cur[i])))
                    for step in (-1, 1):
                        moved = False
                        while 0 <= j + step < len(grid):
                            cand = cur[:i] + (grid[j + step],) + cur[i + 1:]
                            score = evaluate([cand])[0]
                            if score >= best:
                                break
                            cur, best, changed, moved, j = cand, score, True, True, j + step
                        if moved:
                            break
                log(f"  sweep {sweep + 1}  {name} = {cur[i]:.6g}  MAPE {pct(best)}  "
                    f"({len(cache)} evaluations, {time.perf_counter() - t0:.1f} s)")
                if time.perf_counter() - t0 > budget_s:
                    stopped = True
                    break
            if stopped or not changed:
                break
        if not stopped:
            ratio = GRID_SPAN ** (2 / (GRID_POINTS - 1))  # one grid step
            for i, name in enumerate(names):
                for r in (ratio ** 0.5, ratio ** 0.25, ratio ** 0.125):
                    lo, hi = grids[i][0], grids[i][-1]  # the search range; fractions already capped at 1
                    vals = [min(max(v, lo), hi) for v in (cur[i] * r, cur[i] / r)]
                    cands = [cur[:i] + (v,) + cur[i + 1:] for v in vals]
                    scores = evaluate(cands)
                    k = min(range(len(cands)), key=scores.__getitem__)
                    if scores[k] < best:
                        cur, best = cands[k], scores[k]
                log(f"  refine   {name} = {cur[i]:.6g}  MAPE {pct(best)}  "
                    f"({len(cache)} evaluations, {time.perf_counter() - t0:.1f} s)")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        _FIT.clear()
    edges = [n for n, v, g in zip(names, cur, grids, strict=True) if v in (g[0], g[-1])]
    return FitResult(dict(zip(names, cur, strict=True)), start_mape, best, len(cache), time.perf_counter() - t0,
                     stopped, edges)


def split_rows(rows: Sequence[Row], how: str) -> tuple[list[Row], list[Row]]:
    """(fit rows, held-out rows): even = every second row of each file by index (0, 2, ...), or a whole file."""
    if how == "even":
        fit = [r for r in rows if r.index % 2 == 0]
    elif how in FILES:
        fit = [r for r in rows if r.file == how]
    elif how == "all":
        fit = list(rows)
    else:
        raise SystemExit(f"--fit-rows: one of even, single, multi, all (got {how!r})")
    ids = {(r.file, r.index) for r in fit}
    return fit, [r for r in rows if (r.file, r.index) not in ids]


# ---------------------------------------------------------------------------------------------------------------
# Output


def _clean(x: Any) -> Any:
    """NaN / inf -> None, recursively (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def record_json(r: Record) -> dict[str, Any]:
    d = {k: getattr(r.row, k) for k in r.row.__dataclass_fields__}
    d.update(model=r.row.model, layout=r.row.layout,
             predicted_ms=None if r.predicted_s is None else 1e3 * r.predicted_s,
             ape=r.ape, baseline_ms=1e3 * r.baseline_s, baseline_ape=r.baseline_ape, predicted_mfu=r.predicted_mfu,
             measured_mfu=r.measured_mfu, model_flops=r.model_flops, call_ms=1e3 * r.call_s,
             breakdown_s=r.breakdown, error=r.error)
    return d


def speed(recs: Sequence[Record]) -> dict[str, float]:
    ms = [1e3 * r.call_s for r in recs]
    return {"calls": len(ms), "mean_ms": _nanmean(ms), "p95_ms": p95(ms), "max_ms": _nanmax(ms),
            "total_s": sum(ms) / 1e3}


def constants_class(module: Any) -> Any:
    """StepConstants: exported by the step-time module, else the type of step_time's `constants` parameter."""
    cls = getattr(module, "StepConstants", None)
    if cls is None:
        import typing

        hint = typing.get_type_hints(module.step_time)["constants"]
        cls = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
    return cls


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA_DIR, help=f"folder with {' and '.join(FILES.values())}")
    ap.add_argument("--gpu", default="a100", help="hardware spec name (default a100)")
    ap.add_argument("--precision", default="fp16-mixed", help="precision policy (default fp16-mixed)")
    ap.add_argument("--flash", action="store_true", help="predict a flash-attention kernel; by default these rows "
                    "are predicted with Megatron's unfused softmax attention (the s×s scores through HBM): the "
                    "fit reaches plausible constants only that way (flash needs an attention efficiency of 0.15)")
    ap.add_argument("--vocab", type=int, default=VOCAB, help=f"vocabulary size (default {VOCAB})")
    ap.add_argument("--intra-node-bandwidth", type=float, default=None,
                    help="bytes/s per GPU per direction inside a node (default: the hardware spec's)")
    ap.add_argument("--inter-node-bandwidth", type=float, default=INTER_NODE_BYTES_PER_S,
                    help="bytes/s per GPU per direction across nodes (default 12.5e9: vTrain's 800 Gb/s per 8 GPUs)")
    ap.add_argument("--set", default="", metavar="NAME=VALUE,...", help="StepConstants fields to change")
    ap.add_argument("--fit", default="", metavar="NAME[,NAME...]", help="StepConstants float fields to fit")
    ap.add_argument("--fit-rows", default="even", choices=["even", "single", "multi", "all"],
                    help="rows to fit on (even: every second row of each file; default)")
    ap.add_argument("--fit-budget-s", type=float, default=100.0, help="stop the fit's sweeps after this (default 100)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the fit (default: CPUs)")
    ap.add_argument("--brief", action="store_true", help="leave out the per-group ranking table")
    ap.add_argument("--strict", action="store_true", help="let an exception from step_time stop the run")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="write per-row predictions and summary")
    ap.add_argument("--stacks", action=argparse.BooleanOptionalAction, default=None,
                    help="after the vTrain tables, the per-stack tables of issue 23 (stack_accuracy.py: megatron-te "
                         "on vTrain, pytorch-fsdp on llm-foundry; fitted and held back, beside the previous model); "
                         "default: on with the shipped data and no --fit")
    args = ap.parse_args(argv)

    try:
        import napkin.accounting.step_time as st
    except ModuleNotFoundError as e:
        if e.name != "napkin.accounting.step_time":
            raise
        print("napkin.accounting.step_time does not exist yet: nothing to measure", file=sys.stderr)
        return 2
    step_time = st.step_time
    StepConstants = constants_class(st)
    from napkin.specs.catalog import get_hardware

    rows = read_rows(args.data)
    hardware = get_hardware(args.gpu)
    setup = Setup(hardware=hardware, precision=args.precision, vocab=args.vocab, flash=args.flash,
                  intra_node_bandwidth=args.intra_node_bandwidth, inter_node_bandwidth=args.inter_node_bandwidth)
    base = parse_set(args.set, StepConstants)
    constants = StepConstants.model_validate({**StepConstants().model_dump(), **base})
    changed = {k: v for k, v in constants.model_dump().items() if v != StepConstants().model_dump()[k]}

    counts = {f: sum(r.file == f for r in rows) for f in FILES}
    print(f"data: {args.data} ({', '.join(f'{FILES[f]} {n} rows' for f, n in counts.items())}); vTrain, Bang et al. "
          "MICRO 2024")
    intra = ("hardware spec" if args.intra_node_bandwidth is None else f"{args.intra_node_bandwidth:.4g} B/s")
    print(f"gpu {hardware.name}, precision {args.precision} (peak {setup.peak / 1e12:.1f} TFLOP/s), recompute "
          f"{RECOMPUTE}, vocab {args.vocab}, {NODE_SIZE} GPUs per node; intra-node bandwidth: {intra}; inter-node "
          f"{args.inter_node_bandwidth:.4g} B/s per GPU per direction")
    print("constants: " + (", ".join(f"{k}={v}" for k, v in changed.items()) or "StepConstants defaults"))

    out: dict[str, Any] = {"setup": {"data": str(args.data), "gpu": hardware.name, "precision": args.precision,
                                     "vocab": args.vocab, "recompute": RECOMPUTE, "node_size": NODE_SIZE,
                                     "intra_node_bandwidth": args.intra_node_bandwidth,
                                     "inter_node_bandwidth": args.inter_node_bandwidth, "peak_flops_per_s": setup.peak}}
    fit_names = [n.strip() for n in args.fit.split(",") if n.strip()]
    fit_rows, held = (split_rows(rows, args.fit_rows) if fit_names else (rows, []))
    fit_ids = {(r.file, r.index) for r in fit_rows}
    before: list[Record] = []

    if fit_names:
        print(f"\nfitting {', '.join(fit_names)} on {len(fit_rows)} rows ({args.fit_rows}), {len(held)} held out; "
              f"{args.jobs} process(es), budget {args.fit_budget_s:g} s")
        before = predict(rows, step_time, setup, constants)
        res = fit_constants(fit_names, StepConstants, constants.model_dump(), fit_rows, step_time, setup,
                            jobs=args.jobs, budget_s=args.fit_budget_s)
        constants = StepConstants.model_validate({**constants.model_dump(), **res.values})
        print(f"fit: MAPE on the fit rows {pct(res.start_mape)} -> {pct(res.mape)} in {res.evaluations} evaluations, "
              f"{res.seconds:.1f} s" + (" (stopped at the time budget)" if res.stopped_early else ""))
        for n in res.at_edge:
            print(f"  note: {n} = {res.values[n]:.4g} is at the edge of its search range (0.25x..4x the default"
                  + (", capped at 1" if res.values[n] == 1.0 else "") + "): the optimum may lie beyond it")
        out["fit"] = {"names": fit_names, "rows": args.fit_rows, "fit_rows": len(fit_rows), "held_out_rows": len(held),
                      "values": res.values, "start_mape": res.start_mape, "mape": res.mape,
                      "evaluations": res.evaluations, "seconds": res.seconds, "stopped_early": res.stopped_early,
                      "at_edge": res.at_edge}

    recs = predict(rows, step_time, setup, constants, strict=args.strict)
    fit_recs = [r for r in recs if (r.row.file, r.row.index) in fit_ids]
    if fit_names:
        m = {(when, inside): _nanmean(r.ape for r in rs if ((r.row.file, r.row.index) in fit_ids) == inside)
             for when, rs in (("start", before), ("fitted", recs)) for inside in (True, False)}
        print(f"MAPE, starting constants -> fitted: fit rows {pct(m['start', True])} -> {pct(m['fitted', True])}, "
              f"held-out rows {pct(m['start', False])} -> {pct(m['fitted', False])}")
    mfu_c = add_baseline(recs, setup, fit_on=fit_recs if fit_names else None)
    where = f"the {len(fit_recs)} fit rows" if fit_names else f"all {len(recs)} rows"
    print(f"\nconstant-MFU baseline: MFU_c = {mfu_c:.4f}, the median measured MFU over {where} (model FLOPs / "
          f"(G · {setup.peak / 1e12:.0f} TFLOP/s · measured time));\n"
          "  predicted time = model FLOPs / (G · peak · MFU_c), one MFU_c for every row")
    print("measured model TFLOP/s per GPU (and MFU):")
    for f in FILES:
        sub = [r for r in recs if r.row.file == f]
        if sub:
            tf = [r.model_flops / (r.row.gpus * r.row.measured_s) / 1e12 for r in sub]
            mf = [r.measured_mfu for r in sub]
            print(f"  {f:6s}  {min(tf):6.1f} .. {max(tf):6.1f} TFLOP/s, median {statistics.median(tf):6.1f}  "
                  f"(MFU {min(mf):.3f} .. {max(mf):.3f})")

    out["baseline"] = {"mfu": mfu_c, "fitted_on": where}
    out["all"] = report(recs, "all rows" + (" (fitted constants)" if fit_names else ""), brief=args.brief)
    if fit_names:
        held_ids = {(r.file, r.index) for r in held}
        out["held_out"] = report([r for r in recs if (r.row.file, r.row.index) in held_ids],
                                 f"held-out rows (not in the fit: --fit-rows {args.fit_rows})", brief=args.brief)
    print_breakdown(recs)

    sp = speed(recs)
    print(f"\nspeed: step_time {sp['mean_ms']:.3f} ms mean, {sp['p95_ms']:.3f} ms p95, {sp['max_ms']:.3f} ms max per "
          f"prediction ({sp['calls']} calls, {sp['total_s']:.2f} s, in process, time.perf_counter)")
    out["speed"] = sp

    if fit_names:
        vals = {n: constants.model_dump()[n] for n in fit_names}
        print("\nfitted constants (paste):")
        print("  StepConstants(" + ", ".join(f"{k}={v:.4g}" for k, v in vals.items()) + ")")
        print("  --set " + ",".join(f"{k}={v:.4g}" for k, v in vals.items()))
    out["constants"] = constants.model_dump()
    if args.json is not None:
        out["rows"] = [record_json(r) for r in recs]
        args.json.write_text(json.dumps(_clean(out), indent=1, default=str))
        print(f"\nwrote {args.json}")
    if args.stacks or (args.stacks is None and args.data == DATA_DIR and not fit_names):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import stack_accuracy

        print("\n" + "=" * 100 + "\nper training stack (issue 23): python benchmarks/stack_accuracy.py --fit --yaml "
              "refits pytorch-fsdp and prints the intervals")
        stack_accuracy.run(jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
