"""napkin's memory ledger on every calibration run (vTrain, llm-foundry): does it fit, and with how much to spare.

Run: python benchmarks/calibration_memory.py [--vtrain-gpu NAME] [--reserve BYTES (default: napkin's, 2 GB)]

Every row of benchmarks/data/validation is entered as published (calibration_data.vtrain_question /
foundry_question) into napkin.accounting.step_time, which checks the layout and builds the memory ledger. Every one
of these runs trained, so each should be accepted and fit. Printed per file and GPU: rows, rows refused (with the
error), rows napkin says do not fit, and the headroom napkin leaves (usable − needed per GPU: min, median, max);
for each row that does not fit, the ledger's largest rows; then the FP8 rows beside their BF16 twins (same model,
GPUs, sequence, micro-batch, checkpointing on H100) with the two ledgers' totals.

vTrain's configs name the GPU "A100" without its memory: --vtrain-gpu a100-sxm-40gb asks how many would still
fit on the 40 GB part. This is a benchmark that prints figures, not a pass/fail test
(tests/test_calibration_rows.py is the test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, wherever this is run from

import calibration_data as cd  # noqa: E402
import step_time_accuracy as sta  # noqa: E402

GB = 1e9  # memory prints in GB (1e9), DESIGN.md


def ledger_rows(spec: Any, hardware: Any, q: dict[str, Any], reserve: float | None) -> Any:
    """napkin's memory ledger for one question (the same call step_time makes, with the reserve)."""
    from napkin.accounting.memory import TrainingSetup, memory_ledger
    from napkin.accounting.step_time import step_time

    st = step_time(spec, hardware, **q, ledger=False)  # accepted as published (raises otherwise)
    lay = st.inputs.layout
    return memory_ledger(spec, hardware, TrainingSetup(batch=q["micro_batch"], seq=q["seq"], optimizer=q["optimizer"],
                                                        precision=q["precision"], recompute=q["recompute"],
                                                        flash=q["flash"]), lay, reserve_bytes=reserve)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vtrain-gpu", default=cd.VTRAIN_HARDWARE, help="profile for the vTrain rows (default "
                    f"{cd.VTRAIN_HARDWARE}: memory not stated by vTrain)")
    ap.add_argument("--reserve", type=float, default=None, help="bytes per GPU held back from the ledger (default: "
                    "napkin's, napkin/accounting/reserve.py)")
    args = ap.parse_args(argv)
    from napkin.specs.catalog import get_hardware

    items: list[tuple[str, str, str, Any, Any, dict[str, Any]]] = []  # (group, gpu, id, row, spec, question)
    vhw = get_hardware(args.vtrain_gpu)
    for r in sta.read_rows(sta.DATA_DIR):
        items.append((f"vtrain {r.file}", vhw.name, f"vtrain-{r.file}{r.index}", r, sta.spec_of(r),
                      cd.vtrain_question(r)))
    for f in cd.read_foundry():
        items.append(("llm-foundry", f.hardware, f.name, f, cd.mpt_spec(f.model, f.seq), cd.foundry_question(f)))

    results: dict[tuple[str, str], list[tuple[str, Any, str | None]]] = defaultdict(list)
    ledgers: dict[str, Any] = {}
    for group, gpu, rid, _, spec, q in items:
        try:
            mem = ledger_rows(spec, get_hardware(gpu), q, args.reserve)
        except Exception as e:  # a refused row is reported, not fatal
            results[group, gpu].append((rid, None, f"{type(e).__name__}: {e}"))
            continue
        ledgers[rid] = mem
        results[group, gpu].append((rid, mem, None))

    from napkin.accounting.reserve import reserve_of

    shown = f"{reserve_of(args.reserve) / GB:g} GB" + (" (napkin's default)" if args.reserve is None else "")
    print(f"napkin memory ledger on the calibration runs (vTrain on {vhw.name}; reserve {shown})")
    print(f"{'file':18s} {'gpu':14s} {'rows':>5s} {'refused':>8s} {'no fit':>7s}   headroom GB: min / median / max")
    for (group, gpu), res in sorted(results.items()):
        ok = [m for _, m, e in res if m is not None]
        refused = [(rid, e) for rid, _, e in res if e is not None]
        nofit = [rid for rid, m, _ in res if m is not None and not m.fits]
        head = [m.headroom_bytes / GB for m in ok]
        spread = (f"{min(head):7.2f} / {statistics.median(head):7.2f} / {max(head):7.2f}" if head else "-")
        print(f"{group:18s} {gpu:14s} {len(res):5d} {len(refused):8d} {len(nofit):7d}   {spread}")
        for rid, e in refused[:5]:
            print(f"    refused {rid}: {e}")
    worst = [(rid, m) for rid, m in ledgers.items() if not m.fits]
    if worst:
        print(f"\nrows that do not fit ({len(worst)}), with the ledger's largest rows:")
        terms: dict[str, int] = defaultdict(int)
        for rid, m in sorted(worst, key=lambda x: x[1].headroom_bytes):
            top = sorted(m.rows, key=lambda x: -x.bytes)[:3]
            terms[top[0].part] += 1
            print(f"  {rid}: needs {m.total_bytes / GB:.2f} GB of {m.usable_bytes / GB:.2f}; "
                  + ", ".join(f"{x.part} {x.bytes / GB:.2f}" for x in top))
        print("  largest row of each: " + ", ".join(f"{k} {v}" for k, v in sorted(terms.items(), key=lambda x: -x[1])))

    fp8 = [f for _, _, _, f, _, _ in items if isinstance(f, cd.FoundryRow) and f.precision == "amp_fp8"]
    bf16 = {(f.model, f.gpus, f.seq, f.micro_batch, f.activation_checkpointing, f.gpu): f
            for _, _, _, f, _, _ in items if isinstance(f, cd.FoundryRow) and f.precision == "amp_bf16"}
    if fp8:
        print("\nFP8 rows beside their BF16 twins (same model, GPUs, seq, micro-batch, checkpointing; H100):")
        for f in fp8:
            twin = bf16.get((f.model, f.gpus, f.seq, f.micro_batch, f.activation_checkpointing, f.gpu))
            m8 = ledgers.get(f.name)
            line = f"  {f.name}: fp8-mixed {m8.total_bytes / GB:.2f} GB" if m8 else f"  {f.name}: refused"
            if twin is not None and twin.name in ledgers and m8:
                mb = ledgers[twin.name]
                diff = {x.label: x.bytes for x in m8.rows}
                for x in mb.rows:
                    diff[x.label] = diff.get(x.label, 0.0) - x.bytes
                changed = ", ".join(f"{k} {v / GB:+.2f}" for k, v in diff.items() if abs(v) > 1e6)
                line += (f", bf16-mixed twin {mb.total_bytes / GB:.2f} GB ({m8.total_bytes / mb.total_bytes - 1:+.1%}; "
                         f"{changed}); measured step {f.step_time_s:.2f} s vs {twin.step_time_s:.2f} s")
            else:
                line += ", no BF16 twin in the tables"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
