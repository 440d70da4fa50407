"""The step-time accuracy harness (benchmarks/step_time_accuracy.py): its statistics, CSV reader and fit loop.

Expected values are worked by hand in the comments, not computed by the harness's code. The harness runs here
against a small stand-in predictor defined below, so these tests do not depend on napkin.accounting.step_time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting.flops import count_flops
from napkin.accounting.params import count_params
from napkin.specs.catalog import get_hardware
from napkin.specs.model import TransformerSpec

ROOT = Path(__file__).resolve().parents[1]


def _load():
    name = "step_time_accuracy_bench"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "step_time_accuracy.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and forked fit workers look the module up by name
    spec.loader.exec_module(mod)
    return mod


bench = _load()
DATA = bench.DATA_DIR


# A stand-in for napkin.accounting.step_time (same call signature and result fields), for these tests only.
class StandInConstants(BaseModel):
    model_config = ConfigDict(frozen=True)

    compute_efficiency: float = Field(default=0.5, gt=0, le=1)  # achieved fraction of peak in the matmuls
    latency_s: float = 2e-4  # per layer and micro-batch
    chunks: int = 1  # an int field: not fitted


def stand_in_step_time(spec, hardware, *, gpus, tp, pp, micro_batch, global_batch, seq, recompute="full",
                       precision="fp16-mixed", node_size=8, intra_node_bandwidth=None,
                       inter_node_bandwidth=12.5e9, flash=False, constants=None):
    c = constants or StandInConstants()
    fl = count_flops(spec, tokens=global_batch * seq, seq=seq, recompute=recompute)
    peak = hardware.peak("fp16")
    m = global_batch // (gpus // (tp * pp)) // micro_batch  # micro-batches per pipeline
    compute = fl.hardware_flops / (gpus * peak * c.compute_efficiency)
    bubble = compute * (pp - 1) / m  # 1F1B bubble (Narayanan et al. 2021)
    latency = c.latency_s * spec.layers / pp * m
    total = compute + bubble + latency
    return SimpleNamespace(step_time_s=total, mfu=fl.model_flops / (gpus * peak * total),
                           tokens_per_s=global_batch * seq / total,
                           breakdown={"compute": compute, "bubble": bubble, "latency": latency})


def _fake_module(monkeypatch):
    mod = types.ModuleType("napkin.accounting.step_time")
    mod.step_time = stand_in_step_time
    mod.StepConstants = StandInConstants
    monkeypatch.setitem(sys.modules, "napkin.accounting.step_time", mod)
    import napkin.accounting  # `import a.b as m` reads the parent's attribute first, once the real module is loaded

    monkeypatch.setattr(napkin.accounting, "step_time", mod, raising=False)


# --- Kendall tau-b -------------------------------------------------------------------------------------------


def test_tau_perfect_and_reversed():
    assert bench.kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert bench.kendall_tau_b([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0


def test_tau_one_swap():
    # x = 1,2,3,4; y = 1,3,2,4: 6 pairs, only (2,3) discordant: C = 5, D = 1, no ties -> (5 − 1) / 6
    assert bench.kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_tau_with_ties():
    # x = 1,2,2,3; y = 1,2,3,3. Pairs: (0,1) C, (0,2) C, (0,3) C, (1,2) tied in x only, (1,3) C, (2,3) tied in y
    # only. C = 4, D = 0; n0 = 6, n1 = 1, n2 = 1: tau_b = 4 / sqrt(5 · 5) = 0.8 (tau-a would be 4/6).
    assert bench.kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)


def test_tau_with_a_pair_tied_in_both():
    # x = 1,1,2,3; y = 1,1,2,2. (0,1) tied in both; (0,2) (0,3) (1,2) (1,3) C; (2,3) tied in y only.
    # C = 4, D = 0; n0 = 6, n1 = 1, n2 = 2: tau_b = 4 / sqrt(5 · 4) = 0.894427...
    assert bench.kendall_tau_b([1, 1, 2, 3], [1, 1, 2, 2]) == pytest.approx(4 / math.sqrt(20))


def test_tau_undefined_for_a_constant_side():
    assert math.isnan(bench.kendall_tau_b([5, 5, 5], [1, 2, 3]))
    assert math.isnan(bench.kendall_tau_b([1], [1]))


# --- MAPE and regret -----------------------------------------------------------------------------------------


def test_mape_by_hand():
    # |1.1 − 1| / 1 = 0.1, |0.9 − 1| / 1 = 0.1, |2 − 1.6| / 1.6 = 0.25 -> mean 0.15
    assert bench.ape(2.0, 1.6) == pytest.approx(0.25)
    assert bench.mape([1.1, 0.9, 2.0], [1.0, 1.0, 1.6]) == pytest.approx(0.15)
    assert math.isnan(bench.mape([], []))


def test_regret_by_hand():
    # predicted fastest is the measured fastest: no regret
    assert bench.regret([1.1, 0.9, 2.0], [1.0, 0.8, 1.6]) == 0.0
    # order reversed: picks measured 3 against a best of 1 -> (3 − 1) / 1
    assert bench.regret([1, 2, 3], [3, 2, 1]) == pytest.approx(2.0)
    # a tie for fastest is a blind pick between measured 2 and 4: mean 3, best 1 -> 2
    assert bench.regret([1, 1, 2], [2, 4, 1]) == pytest.approx(2.0)
    # a constant predictor: mean of all measured (1, 2, 3 -> 2) over the best (1), − 1
    assert bench.regret([7, 7, 7], [1, 2, 3]) == pytest.approx(1.0)


def test_p95_nearest_rank():
    assert bench.p95(list(range(1, 21))) == 19  # ceil(0.95 · 20) = 19th value
    assert bench.p95([3.0]) == 3.0


def test_log_grid():
    g = bench.log_grid(2.0, fraction=False)
    assert len(g) == 15 and g[0] == pytest.approx(0.5) and g[-1] == pytest.approx(8.0) and 2.0 in g
    f = bench.log_grid(0.5, fraction=True)
    assert max(f) == 1.0 and min(f) == pytest.approx(0.125) and all(0 < v <= 1 for v in f)
    assert len(f) == len(set(f)) < 15  # points above 1 collapse onto 1


def test_fraction_fields_and_set():
    fields = bench.float_fields(StandInConstants)
    assert set(fields) == {"compute_efficiency", "latency_s"}
    assert bench.is_fraction(fields["compute_efficiency"], "compute_efficiency")
    assert not bench.is_fraction(fields["latency_s"], "latency_s")
    assert bench.parse_set("latency_s=1e-4, chunks=2", StandInConstants) == {"latency_s": 1e-4, "chunks": 2}
    with pytest.raises(SystemExit):
        bench.parse_set("nope=1", StandInConstants)


def test_split_rows():
    rows = [bench.Row("single", i, 8, 16, 1, 1024, 16, 12, 1024, 1, 8, 1, 100.0) for i in range(5)]
    rows += [bench.Row("multi", i, 8, 16, 1, 1024, 16, 12, 1024, 1, 8, 1, 100.0, 1.0) for i in range(3)]
    fit, held = bench.split_rows(rows, "even")
    assert [(r.file, r.index) for r in fit] == [("single", 0), ("single", 2), ("single", 4), ("multi", 0),
                                                ("multi", 2)]
    assert len(held) == 3
    fit, held = bench.split_rows(rows, "multi")
    assert len(fit) == 3 and all(r.file == "single" for r in held)
    assert bench.split_rows(rows, "all")[1] == []


# --- the data --------------------------------------------------------------------------------------------------


def test_the_data_ships_inside_the_clone():
    # issue 22 item 5: a fresh clone runs the benchmark's data checks; no path outside the repository is read
    assert DATA.resolve().is_relative_to(ROOT.resolve())
    assert all((DATA / f).is_file() for f in bench.FILES.values())
    assert bench.DATA_DIR == ROOT / "benchmarks" / "data" / "validation"


def test_reads_both_files_and_builds_specs():
    rows = bench.read_rows(DATA)
    assert sum(r.file == "single" for r in rows) == 1440
    assert sum(r.file == "multi" for r in rows) == 62
    first = rows[0]  # 2,16,8,1024,16,24,1024,1,1,2,372.160408
    assert (first.gpus, first.global_batch, first.micro_batch, first.hidden, first.heads, first.layers, first.seq,
            first.tp, first.dp, first.pp) == (2, 16, 8, 1024, 16, 24, 1024, 1, 1, 2)
    assert first.measured_ms == pytest.approx(372.160408) and first.params_b is None
    m0 = next(r for r in rows if r.file == "multi")  # 18.4,256,1024,8,6144,48,40,2048,8,32,1,9603.6
    assert (m0.params_b, m0.gpus, m0.hidden, m0.layers, m0.tp, m0.dp, m0.pp) == (18.4, 256, 6144, 40, 8, 32, 1)
    assert m0.measured_s == pytest.approx(9.6036)
    shapes = {(r.hidden, r.heads, r.layers, r.seq) for r in rows}
    assert len(shapes) == 10  # 8 single-node shapes, 2 multi-node models
    for r in {(r.hidden, r.heads, r.layers, r.seq): r for r in rows}.values():
        spec = bench.spec_of(r)
        assert isinstance(spec, TransformerSpec)
        assert (spec.layers, spec.d_model, spec.heads, spec.ffn_dim, spec.vocab) == (r.layers, r.hidden, r.heads,
                                                                                     4 * r.hidden, 51200)
        assert spec.tied_embeddings and spec.positions == "learned" and spec.mlp_bias
        assert bench.spec_of(r) is spec  # cached per shape
    # the GPT specs reproduce the file's parameter counts (billions, 3 significant figures)
    for r in (r for r in rows if r.params_b is not None):
        assert count_params(bench.spec_of(r)).params / 1e9 == pytest.approx(r.params_b, rel=0.005)


def test_baseline_on_the_data():
    rows = bench.read_rows(DATA)
    recs = [bench.Record(r, None, None, 0.0) for r in rows]
    setup = bench.Setup(hardware=get_hardware("a100"))
    mfu_c = bench.add_baseline(recs, setup)
    assert 0.1 < mfu_c < 0.8  # an A100 Megatron run: tens of percent of the fp16 peak
    # the baseline at the median MFU: half the rows predicted faster than measured, half slower
    faster = sum(r.baseline_s < r.row.measured_s for r in recs)
    assert abs(faster - len(recs) / 2) <= 1


# --- the harness end to end, against the stand-in ------------------------------------------------------------


def _rows(n: int = 24) -> list:
    shapes = [(1024, 16, 12), (2048, 16, 16)]
    layouts = [(8, 1, 8, 1), (8, 2, 2, 2), (8, 4, 1, 2), (8, 1, 4, 2), (4, 2, 2, 1), (4, 1, 1, 4)]  # G, tp, pp, b
    out = []
    for h, a, L in shapes:
        for g, tp, pp, b in layouts:
            for batch in (16, 32):
                out.append(bench.Row("single", len(out), g, batch, b, h, a, L, 1024, tp, g // (tp * pp), pp, 100.0))
    return out[:n]


def test_fit_recovers_a_known_constant():
    setup = bench.Setup(hardware=get_hardware("a100"))
    truth = StandInConstants(compute_efficiency=0.4)
    rows = [dataclasses.replace(r, measured_ms=1e3 * stand_in_step_time(
        bench.spec_of(r), setup.hardware, gpus=r.gpus, tp=r.tp, pp=r.pp, micro_batch=r.micro_batch,
        global_batch=r.global_batch, seq=r.seq, constants=truth).step_time_s) for r in _rows()]
    res = bench.fit_constants(["compute_efficiency"], StandInConstants, StandInConstants().model_dump(), rows,
                              stand_in_step_time, setup, jobs=1, log=lambda s: None)
    assert res.start_mape > 0.1
    assert res.values["compute_efficiency"] == pytest.approx(0.4, rel=0.03)
    assert res.mape < 0.03


def test_report_runs_on_the_stand_in(capsys):
    setup = bench.Setup(hardware=get_hardware("a100"))
    rows = _rows()
    recs = bench.predict(rows, stand_in_step_time, setup)
    bench.add_baseline(recs, setup)
    s = bench.report(recs, "stand-in")
    out = capsys.readouterr().out
    assert "Kendall tau-b" in out and "Worst rows" in out
    assert s["overall"]["rows"] == len(rows) and s["overall"]["predicted"] == len(rows)
    # groups: 2 models x 2 batches x {G=8: 4 layouts, G=4: 2 layouts}
    assert sorted(g["rows"] for g in s["groups"]) == [2] * 4 + [4] * 4
    assert all(math.isnan(g["baseline_tau"]) for g in s["groups"])  # a constant MFU cannot rank a group


def test_a_raising_row_is_reported_not_fatal():
    setup = bench.Setup(hardware=get_hardware("a100"))

    def flaky(spec, hw, **kw):
        if kw["pp"] == 4:
            raise ValueError("no such layout")
        return stand_in_step_time(spec, hw, **kw)

    recs = bench.predict(_rows(), flaky, setup)
    bad = [r for r in recs if not r.ok]
    assert bad and all(r.error == "ValueError: no such layout" for r in bad)
    with pytest.raises(ValueError):
        bench.predict(_rows(), flaky, setup, strict=True)


def test_main_with_a_fit_and_json(tmp_path, monkeypatch, capsys):
    _fake_module(monkeypatch)
    for name in bench.FILES.values():  # the first rows of each file
        lines = (DATA / name).read_text().splitlines()
        (tmp_path / name).write_text("\n".join(lines[:31]) + "\n")
    out = tmp_path / "out.json"
    assert bench.main(["--data", str(tmp_path), "--fit", "compute_efficiency", "--jobs", "1", "--brief",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held-out rows" in text and "StepConstants(compute_efficiency=" in text and "ms p95" in text
    d = json.loads(out.read_text())
    assert len(d["rows"]) == 60 and d["fit"]["fit_rows"] == 30 and d["fit"]["held_out_rows"] == 30
    assert d["fit"]["mape"] <= d["fit"]["start_mape"]
    assert set(d["rows"][0]) >= {"predicted_ms", "measured_ms", "ape", "baseline_ms", "layout", "breakdown_s"}


def test_constants_class_from_the_signature():
    def annotated(spec, hardware, *, constants: StandInConstants | None = None):  # no StepConstants exported
        return None

    assert bench.constants_class(SimpleNamespace(step_time=annotated)) is StandInConstants
    assert bench.constants_class(SimpleNamespace(step_time=annotated, StepConstants=int)) is int
