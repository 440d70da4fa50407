"""Wall time of napkin's calculator commands beside the floor of their framework, measured side by side in one run.

Run: python benchmarks/startup_time.py [--runs 21]

The floor is a minimal program of the same shape: a typer app with one command whose options are parsed by a
pydantic model and whose answer is printed as a rich table (or JSON). napkin adds its own work on top (the
command registry, the spec catalog, the accounting); the target (issue 16) is within 10% of that floor for every
calculator command, table and --json. Runs are interleaved so machine drift hits every case alike; medians and
the ratio to the floor are printed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
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

ARGS = ["--params", "70e9", "--tokens", "15e12", "--gpus", "1024"]
CASES: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "floor: typer + pydantic + rich (table)": [sys.executable, "-c", FLOOR, *ARGS],
    "floor: typer + pydantic (--json)": [sys.executable, "-c", FLOOR, *ARGS, "--json"],
    "napkin train-time (table)": [sys.executable, "-m", "napkin", "train-time", *ARGS],
    "napkin train-time --json": [sys.executable, "-m", "napkin", "train-time", *ARGS, "--json"],
    "napkin budget (table)": [sys.executable, "-m", "napkin", "budget", "--gpus", "8", "--days", "7"],
    "napkin max-model (table)": [sys.executable, "-m", "napkin", "max-model", "--gpus", "8"],
    "napkin flops --model (table)": [sys.executable, "-m", "napkin", "flops", "--model", "llama3-8b", "--tokens",
                                     "1e12"],
    "napkin memory --model (table)": [sys.executable, "-m", "napkin", "memory", "--model", "llama3-8b", "--seq",
                                      "4096"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    runs = ap.parse_args().runs
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(runs):  # interleaved, so drift hits every case alike
        for name, cmd in CASES.items():
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t)
    floor_table = statistics.median(times["floor: typer + pydantic + rich (table)"])
    floor_json = statistics.median(times["floor: typer + pydantic (--json)"])
    print(f"{'case':44s} {'median s':>9s} {'min s':>7s} {'x floor':>8s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        ref = floor_json if "json" in name else floor_table
        print(f"{name:44s} {med:9.3f} {min(ts):7.3f} {med / ref:8.2f}")


if __name__ == "__main__":
    main()
