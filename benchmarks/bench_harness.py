"""napkin's matmul harness against a bare `torch.mm` loop timed by torch.utils.benchmark, in the same run.

Run: python benchmarks/bench_harness.py [--sizes 1024,2048] [--rounds 3] [--seconds 2]
Prints, per size, napkin's TFLOP/s (median per-call time, `GemmBench.time`) beside the bare loop's (median
of `Timer.blocked_autorange`), and the ratio napkin / bare: the harness must not cost throughput (target
>= 0.95 on the CPU at 1024³ and 2048³ fp32). Rounds alternate napkin and bare so drift hits both alike; the
ratio is given for the median round and for the best round of each (the best is the least disturbed by other
work on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import warnings

TARGET = 0.95


def bare_flops_per_s(torch, size: int, seconds: float) -> float:
    from torch.utils.benchmark import Timer

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    c = torch.empty(size, size)
    # Timer defaults to one thread; give it the threads napkin's harness runs with.
    timer = Timer(stmt="torch.mm(a, b, out=c)", globals={"torch": torch, "a": a, "b": b, "c": c},
                  num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=seconds)
    return 2.0 * size**3 / m.median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048", help="square sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="alternating napkin / bare rounds per size")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    args = ap.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

    from napkin.bench.matmul import GemmBench

    bench = GemmBench("fp32", "cpu", warmup_s=0.5, target_s=args.seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {bench.device_name}, fp32 on the CPU")
    print(f"{'size':>6}  {'napkin TFLOP/s':>15}  {'bare TFLOP/s':>13}  {'ratio':>6}  {'best-round ratio':>16}"
          "  per round (napkin/bare)")
    worst = None
    for size in (int(s) for s in args.sizes.split(",")):
        ours, bare = [], []
        for _ in range(args.rounds):
            ours.append(bench.time((size, size, size)).flops_per_s)
            bare.append(bare_flops_per_s(torch, size, args.seconds))
        o, b = statistics.median(ours), statistics.median(bare)
        ratio, best = o / b, max(ours) / max(bare)
        worst = ratio if worst is None else min(worst, ratio)
        rounds = " ".join(f"{x / y:.3f}" for x, y in zip(ours, bare, strict=True))
        print(f"{size:>6}  {o / 1e12:>15.4f}  {b / 1e12:>13.4f}  {ratio:>6.3f}  {best:>16.3f}  {rounds}")
    print(f"lowest ratio {worst:.3f} (target >= {TARGET})")


if __name__ == "__main__":
    main()
