"""Every calibration run (benchmarks/data/validation: vTrain, llm-foundry) entered as published: accepted, and it fits.

Issue 22 item 5: each of these 1718 runs trained, so napkin must accept its layout as published and its memory
ledger must fit it on its GPU. Each row is one test case (the llm-foundry rows, the vTrain multi-node rows and a
spread of the single-node rows in the everyday loop; every row in CI). A row napkin gets wrong is listed in
KNOWN_GAPS with the reason and runs as a strict xfail, so the list has to shrink when the ledger is fixed.

The loader (benchmarks/calibration_data.py) is checked here too: its columns, its refusals, and the MPT specs
against the table's NumParams column. Figures: `python benchmarks/calibration_memory.py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from napkin.accounting.params import count_params
from napkin.accounting.step_time import step_time
from napkin.specs.catalog import get_hardware

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, file: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


cd = _load("calibration_data", "calibration_data.py")
bench = _load("step_time_accuracy_bench", "step_time_accuracy.py")  # the name test_step_time_accuracy_harness uses

VTRAIN = bench.read_rows(bench.DATA_DIR)
FOUNDRY = cd.read_foundry()
SINGLE_NODE_EVERY = 16  # the everyday loop runs every 16th single-node vTrain row (90 of 1440); CI runs them all

# Rows napkin refuses or says do not fit although they ran: {row id: why}. Measured on this branch (see the module
# docstring): none. An entry runs as xfail(strict=True), so fixing the ledger turns it into a failure until the
# entry is removed.
KNOWN_GAPS: dict[str, str] = {}


def _vtrain_id(r) -> str:
    return f"vtrain-{r.file}{r.index}-h{r.hidden}-L{r.layers}-g{r.gpus}-tp{r.tp}-pp{r.pp}-dp{r.dp}-b{r.micro_batch}"


def _cases() -> list:
    out = []
    for r in VTRAIN:
        rid = _vtrain_id(r)
        marks = [pytest.mark.slow] if r.file == "single" and r.index % SINGLE_NODE_EVERY else []
        if rid in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[rid]))
        out.append(pytest.param("vtrain", r, id=rid, marks=marks))
    for f in FOUNDRY:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[f.name])] if f.name in KNOWN_GAPS else []
        out.append(pytest.param("foundry", f, id=f.name, marks=marks))
    return out


def _question(kind: str, row) -> tuple:
    """(spec, hardware, step_time keywords, data-parallel degree and micro-batches per step as published)."""
    if kind == "vtrain":
        m = row.global_batch // (row.micro_batch * row.dp)  # Megatron: global = micro · DP · micro-batches
        return bench.spec_of(row), get_hardware(cd.VTRAIN_HARDWARE), cd.vtrain_question(row), row.dp, m
    return (cd.mpt_spec(row.model, row.seq), get_hardware(row.hardware), cd.foundry_question(row), row.gpus,
            row.grad_accum)


# --- the loader -------------------------------------------------------------------------------------------------


def test_reads_every_llmfoundry_table():
    # row counts per table from benchmarks/data/validation/README.md
    tables = {}
    for f in FOUNDRY:
        tables[f.table] = tables.get(f.table, 0) + 1
    assert tables == {"H100 80GB BF16 (Large Scale, >= 128 GPUs)": 18, "H100 80GB BF16": 52, "H100 80GB FP8": 7,
                      "A100 80GB with 1600 Gbps node-node interconnect (RoCE)": 61,
                      "A100 40GB with 1600 Gbps node-node interconnect (RoCE)": 78}
    # the first data line, read by eye: "H100 80GB BF16 (Large Scale, >= 128 GPUs)",70b,2048,512,h100_80gb,41.25,
    # 55.0,408,8,1,4096,251,515636,1007,8388608,amp_bf16,DEFAULT,FULL_SHARD,True,False,64862437376
    f = FOUNDRY[0]
    assert (f.model, f.seq, f.gpus, f.gpu, f.micro_batch, f.grad_accum, f.global_batch) == \
        ("70b", 2048, 512, "h100_80gb", 8, 1, 4096)
    assert (f.mfu_pct, f.hfu_pct, f.model_tflop, f.samples_per_s, f.tokens_per_s, f.tokens_per_s_per_gpu) == \
        (41.25, 55.0, 408.0, 251.0, 515636.0, 1007.0)
    assert (f.global_batch_tokens, f.precision, f.mp_mode, f.sharding, f.num_params) == \
        (8388608, "amp_bf16", "DEFAULT", "FULL_SHARD", 64862437376)
    assert f.activation_checkpointing is True and f.activation_cpu_offload is False
    assert f.step_time_s == pytest.approx(8388608 / 515636)  # GlobalBatchSize (T) / Throughput (T/s) = 16.27 s
    assert (f.hardware, f.napkin_precision, f.zero, f.recompute) == ("h100-sxm", "bf16-mixed", 3, "full")


def test_the_question_follows_the_published_settings():
    by = {}
    for f in FOUNDRY:
        by.setdefault((f.precision, f.mp_mode, f.sharding, f.activation_checkpointing), f)
    # every combination the tables hold, and how napkin is asked
    for (prec, mode, shard, ckpt), f in by.items():
        q = cd.foundry_question(f)
        assert q["zero"] == {"FULL_SHARD": 3, "SHARD_GRAD_OP": 2}[shard]
        assert q["recompute"] == ("full" if ckpt else "none")
        assert q["precision"] == {("amp_bf16", "DEFAULT"): "bf16-mixed", ("bf16", "PURE"): "bf16",
                                  ("amp_fp8", "DEFAULT"): "fp8-mixed"}[(prec, mode)]
        assert (q["gpus"], q["tp"], q["pp"], q["micro_batch"], q["global_batch"], q["seq"]) == \
            (f.gpus, 1, 1, f.micro_batch, f.global_batch, f.seq)
    assert sum(f.sharding == "SHARD_GRAD_OP" for f in FOUNDRY) == 6  # the ZeRO-2 rows exist and are asked as such
    assert {f.gpu for f in FOUNDRY} == set(cd.GPU_PROFILES)


def test_the_reader_refuses_what_it_does_not_know(tmp_path):
    lines = (cd.DATA_DIR / cd.FOUNDRY_FILE).read_text().splitlines()
    header, first = lines[0], lines[1]
    for bad, what in ((first.replace("amp_bf16,DEFAULT", "amp_fp16,DEFAULT"), "Precision"),
                      (first.replace(",h100_80gb,", ",tpu_v5,"), "GPU"),
                      (first.replace(",FULL_SHARD,", ",HYBRID_SHARD,"), "Sharding"),
                      (first.replace(",8388608,", ",8388609,"), "GlobalBatchSize (T)"),
                      (first.replace(",True,False,", ",yes,False,"), "Activation Checkpointing")):
        (tmp_path / cd.FOUNDRY_FILE).write_text(header + "\n" + bad + "\n")
        with pytest.raises(ValueError, match=what.split()[0]):
            cd.read_foundry(tmp_path)
    (tmp_path / cd.FOUNDRY_FILE).write_text(header.replace("NumParams", "Params") + "\n" + first + "\n")
    with pytest.raises(ValueError, match="columns differ"):
        cd.read_foundry(tmp_path)


def test_mpt_specs_reproduce_numparams_on_every_row():
    # by hand, MPT with biases and learned positions: V·d + S·d (embeddings) + L·(12d² + 13d) (Wqkv 3d² + 3d,
    # out_proj d² + d, up 4d² + 4d, down 4d² + d, two LayerNorms 4d) + 2d (final LayerNorm). 125m at s = 2048:
    # 50368·768 + 2048·768 + 12·(12·768² + 13·768) + 2·768 = 125,311,488, the table's NumParams.
    wrong = []
    for f in FOUNDRY:
        d, _, L = cd.MPT_SHAPES[f.model]
        by_hand = cd.MPT_VOCAB * d + f.seq * d + L * (12 * d * d + 13 * d) + 2 * d
        napkin = count_params(cd.mpt_spec(f.model, f.seq)).params
        if not napkin == by_hand == f.num_params:
            wrong.append((f.name, napkin, by_hand, f.num_params))
    assert not wrong, wrong
    assert len({(f.model, f.seq) for f in FOUNDRY}) > 50  # the check covers many (size, max_seq_len) pairs


def test_known_gaps_name_real_rows():
    ids = {_vtrain_id(r) for r in VTRAIN} | {f.name for f in FOUNDRY}
    assert len(ids) == len(VTRAIN) + len(FOUNDRY) == 1502 + 216  # ids are unique
    assert set(KNOWN_GAPS) <= ids


# --- every run, as published ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "row"), _cases())
def test_every_calibration_run_is_accepted_and_fits(kind, row):
    spec, hardware, q, dp, micro_batches = _question(kind, row)
    st = step_time(spec, hardware, **q)  # raises (InputError) if napkin refuses the layout as published
    lay = st.inputs.layout
    assert (lay.gpus, lay.tp, lay.pp, lay.dp, lay.zero) == (q["gpus"], q["tp"], q["pp"], dp, q["zero"])
    assert st.micro_batches == micro_batches  # the published gradient accumulation / pipeline micro-batches
    assert st.fits is True, (f"{kind} row does not fit: napkin needs {st.memory_bytes / 1e9:.2f} GB per GPU of "
                             f"{st.memory_usable_bytes / 1e9:.2f} GB on {hardware.name}")


@pytest.mark.slow  # every row twice (about 5 s)
def test_the_memory_benchmark_prints_every_file(capsys):
    mem = _load("calibration_memory", "calibration_memory.py")
    assert mem.main([]) == 0
    out = capsys.readouterr().out
    groups = {("llm-foundry", "a100-sxm-40gb"): 78, ("llm-foundry", "a100-sxm-80gb"): 61,
              ("llm-foundry", "h100-sxm"): 77, ("vtrain multi", "a100-sxm-80gb"): 62,
              ("vtrain single", "a100-sxm-80gb"): 1440}
    for (group, gpu), n in groups.items():
        line = next(x for x in out.splitlines() if x.startswith(group) and gpu in x)
        rows, refused, nofit = (int(v) for v in line.split()[-8:-5])
        assert (rows, refused) == (n, 0) and nofit == sum(r.startswith(group.split()[0]) for r in KNOWN_GAPS)
    assert out.count("bf16-mixed twin") == 5  # of the 7 FP8 rows, 5 have a BF16 twin in the tables
