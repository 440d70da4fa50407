"""`napkin plan` on the calibration runs' questions, beside the layout each run published (issue 23 item 6).

Run: python benchmarks/plan_vs_published.py [--all]

For llm-foundry rows (MPT on A100/H100, PyTorch FSDP) it asks plan, on the pytorch-fsdp stack, for the run's model,
GPU, GPU count, global batch, sequence and precision, and prints the published layout's predicted step (step_time on
the same stack, the layout as published: pure FSDP, its micro-batch and checkpointing), plan's pick and its predicted
step, and the measured step. The check: plan's pick is predicted no slower than the published layout, and is one a
practitioner would run (FSDP at these sizes; TP/PP only where they pay). By default one row per model and GPU table
at the largest GPU count (--all: every 16-bit row at s ≤ 8192).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_data as cd  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every 16-bit row at s <= 8192 (slow)")
    args = ap.parse_args(argv)
    from napkin.accounting.plan import plan
    from napkin.accounting.step_time import step_time
    from napkin.specs.catalog import get_hardware

    rows = [r for r in cd.read_foundry() if r.precision != "amp_fp8" and r.seq <= 8192]
    if not args.all:
        pick: dict[tuple[str, str], cd.FoundryRow] = {}
        for r in rows:
            k = (r.model, r.gpu)
            if r.model in ("1b", "7b", "13b", "30b", "70b") and (k not in pick or r.gpus > pick[k].gpus):
                pick[k] = r
        rows = sorted(pick.values(), key=lambda r: (r.gpu, r.num_params))
    print(f"{'run':44s} {'published layout':28s} {'pred':>7s} {'meas':>7s} | {'plan pick':40s} {'pred':>7s} "
          f"{'gain':>6s} {'s':>5s}")
    worse = 0
    for r in rows:
        spec, hw = cd.mpt_spec(r.model, r.seq), get_hardware(r.hardware)
        q = cd.foundry_question(r)
        pub = step_time(spec, hw, ledger=False, stack="pytorch-fsdp", **q)
        t0 = time.process_time()
        p = plan(spec, hw, gpus=r.gpus, global_batch=r.global_batch, seq=r.seq, precision=r.napkin_precision,
                 stack="pytorch-fsdp", top=3)
        cpu = time.process_time() - t0
        w = p.winner
        gain = pub.step_time_s / w.step_time_s - 1
        worse += gain < -1e-9
        layout = f"{pub.layout} b{r.micro_batch} {q['recompute']}"
        pick_s = f"{w.layout} b{w.inputs.micro_batch} {w.inputs.recompute}"
        print(f"{r.name:44s} {layout:28s} {pub.step_time_s:7.2f} {r.step_time_s:7.2f} | {pick_s:40s} "
              f"{w.step_time_s:7.2f} {gain:+6.1%} {cpu:5.2f}")
    print(f"\nplan's pick predicted slower than the published layout in {worse} of {len(rows)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
