"""How fast `napkin plan` searches: layouts examined, pruned and timed, and seconds, per model × cluster.

Run: python benchmarks/plan_speed.py [--only NAME]
The target (the plan issue): Llama 3.1 405B on 16,384 H100s with every dimension free in ≤ 5 s on one core.
Each case runs once in this process (time.perf_counter); the spec catalog is loaded before the clock starts.
"""

from __future__ import annotations

import argparse
import time

CASES = [  # (label, model, gpu, GPUs, global batch, seq)
    ("GPT-2 on one node", "gpt2", "a100", 8, 256, 1024),
    ("Llama 3 8B on 64 H100", "llama3-8b", "h100", 64, 512, 8192),
    ("Llama 3 70B on 1024 H100", "llama3-70b", "h100", 1024, 1024, 8192),
    ("Llama 3.1 405B on 16384 H100", "llama3-405b", "h100", 16384, 2048, 8192),
    ("DeepSeek-V3 (MoE, MLA) on 2048 H100", "deepseek-v3", "h100", 2048, 4096, 4096),
    ("Llama 3 70B on 512 A100 40GB", "llama3-70b", "a100-sxm-40gb", 512, 1024, 4096),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run the cases whose label contains this")
    args = ap.parse_args()
    from napkin.accounting.plan import plan
    from napkin.specs.catalog import get_hardware, get_model

    print(f"{'case':38} {'examined':>9} {'pruned':>8} {'timed':>6} {'seconds':>8}  winner")
    for label, model, gpu, G, B, s in CASES:
        if args.only and args.only.lower() not in label.lower():
            continue
        spec, hw = get_model(model), get_hardware(gpu)
        t = time.perf_counter()
        r = plan(spec, hw, gpus=G, global_batch=B, seq=s)
        dt = time.perf_counter() - t
        w = r.winner
        print(f"{label:38} {r.examined:>9,} {r.pruned:>8,} {r.timed:>6,} {dt:>8.2f}  "
              f"{w.layout} b{w.inputs.micro_batch} "
              f"{w.inputs.recompute}, {w.step_time_s:.2f} s, MFU {w.mfu:.3f}")


if __name__ == "__main__":
    main()
