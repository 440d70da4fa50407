"""Wall time of napkin's calculator commands beside the floor of their framework, measured side by side in one run.

Run: python benchmarks/startup_time.py [--runs 15] [--only train-time,memory]

The floor is a minimal program of the same shape: a typer app with one command whose options are parsed by a
pydantic model and whose answer is printed as a rich table (or JSON). napkin adds its own work on top (the
command registry, the spec catalog, the accounting); the target (issue 16) is within 10% of that floor for every
calculator command, table and --json. Every case runs once to warm the caches, then the cases run interleaved
``--runs`` times, so that machine drift hits each alike. Printed per command: the median wall time of napkin and of
the floor, table and --json, with the ratio; then the same for CPU time (user + system, from the kernel's
accounting of the child), which other processes on a busy machine disturb less than wall time.

Bytecode: an installed napkin runs from compiled .pyc files (pip compiles them at install), so the children run
with bytecode caching on. Where PYTHONDONTWRITEBYTECODE is set, they get it unset and PYTHONPYCACHEPREFIX pointing
at a temporary folder instead, so that the tree is not written to.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

FLOOR = r'''
import sys
from typing import Annotated
import typer
from pydantic import BaseModel
app = typer.Typer(add_completion=False)
class Inputs(BaseModel):
    params: float
    tokens: float
    gpus: int
class Out(BaseModel):
    inputs: Inputs
    days: float
@app.command()
def main(params: Annotated[float, typer.Option()] = 70e9, tokens: Annotated[float, typer.Option()] = 15e12,
         gpus: Annotated[int, typer.Option()] = 1024, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    i = Inputs(params=params, tokens=tokens, gpus=gpus)
    out = Out(inputs=i, days=6 * i.params * i.tokens / (i.gpus * 989.5e12 * 0.5) / 86400)
    if json:
        sys.stdout.write(out.model_dump_json(indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(show_header=False, box=None)
    t.add_row("training time", f"{out.days:.2f} days")
    Console().print(t)
app()
'''

FLOOR_ARGS = ["--params", "70e9", "--tokens", "15e12", "--gpus", "1024"]
# Every calculator command (all but bench-* and validate), as a user would first type it.
COMMANDS: dict[str, list[str]] = {
    "train-time": ["train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024"],
    "max-model": ["max-model", "--gpus", "8"],
    "budget": ["budget", "--gpus", "8", "--days", "7"],
    "flops": ["flops", "--model", "llama3-8b", "--tokens", "1e12"],
    "mfu": ["mfu", "--model", "llama3-8b", "--tokens-per-s", "9000", "--gpus", "8"],
    "memory": ["memory", "--model", "llama3-8b", "--seq", "4096"],
    "inference": ["inference", "--model", "llama3-70b", "--gpus", "8", "--batch", "8"],
    "roofline": ["roofline", "--gpu", "h100", "--model", "llama3-8b"],
    "step-time": ["step-time", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--seq", "4096"],
    "plan": ["plan", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--seq", "4096"],
    # the same plan with every dimension fixed: one layout, so what is left is plan's start-up and rendering
    "plan --fix": ["plan", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--seq", "4096", "--fix",
                   "tp=1,pp=1,vp=1,cp=1,ep=1,micro_batch=1,zero=2,recompute=none"],
    "models list": ["models", "list"],
    "models show": ["models", "show", "llama3-8b"],
    "hardware list": ["hardware", "list"],
    "hardware show": ["hardware", "show", "h100"],
}


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="napkin-startup-pyc-")
    return env


SEARCH = r'''
import sys, time
from napkin.accounting.memory import memory_ledger  # imported by step-time too: not the search's own cost
from napkin.accounting.plan import plan
from napkin.specs.resolve import as_hardware, as_model
spec, hw = as_model("llama3-8b"), as_hardware("h100")
t = time.perf_counter()
r = plan(spec, hw, gpus=8, global_batch=64, seq=4096)
print(time.perf_counter() - t, r.examined, r.timed)
'''


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of ``cmd``, its output read through a pipe."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--only", default="", help="comma-separated commands (default: every calculator command)")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(COMMANDS)
    unknown = [n for n in names if n not in COMMANDS]
    if unknown:
        ap.error(f"unknown command {unknown[0]!r}; choose from {', '.join(COMMANDS)}")
    cases: dict[tuple[str, str], list[str]] = {
        ("python -c pass", ""): [sys.executable, "-c", "pass"],
        ("floor", "table"): [sys.executable, "-c", FLOOR, *FLOOR_ARGS],
        ("floor", "json"): [sys.executable, "-c", FLOOR, *FLOOR_ARGS, "--json"],
    }
    for name in names:
        cases[(name, "table")] = [sys.executable, "-m", "napkin", *COMMANDS[name]]
        cases[(name, "json")] = [sys.executable, "-m", "napkin", *COMMANDS[name], "--json"]
    env = child_env()
    for cmd in cases.values():  # warm-up: bytecode caches, the disk cache
        run_once(cmd, env)
    wall: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    t0 = time.perf_counter()
    for _ in range(args.runs):  # interleaved, so drift hits every case alike
        for key, cmd in cases.items():
            w, c = run_once(cmd, env)
            wall[key].append(w)
            cpu[key].append(c)
    print(f"{args.runs} runs of each case in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    for title, times in (("wall time, median s", wall), ("CPU time (user + system), median s", cpu)):
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{title} (python -c pass: {med[('python -c pass', '')]:.3f})")
        head = f"{'floor':>7s} {'x floor':>8s}"
        print(f"{'command':15s} {'table':>7s} {head}   {'--json':>7s} {head}")
        for name in names:
            row = [f"{name:15s}"]
            for mode in ("table", "json"):
                n, f = med[(name, mode)], med[("floor", mode)]
                row.append(f"{n:7.3f} {f:7.3f} {n / f:8.2f}")
            print(" ".join(row[:1]) + " " + "   ".join(row[1:]))
        worst = max(med[(n, m)] / med[("floor", m)] for n in names for m in ("table", "json"))
        print(f"{'worst':15s} {worst:.2f} x floor")
    if "plan" in names:  # what of plan's time is its search, not start-up: plan() timed inside a fresh process
        out = [subprocess.run([sys.executable, "-c", SEARCH], capture_output=True, text=True, check=True,
                              env=env).stdout.split() for _ in range(max(3, args.runs // 3))]
        t = statistics.median(float(o[0]) for o in out)
        print(f"\nplan's layout search (plan() in a fresh process, median of {len(out)}): {t * 1e3:.1f} ms, "
              f"{int(out[0][1]):,} layouts examined, {int(out[0][2]):,} timed")


if __name__ == "__main__":
    main()
