"""Wall time of `napkin train-time ...` beside `python -c pass`, measured side by side in one run.

Run: python benchmarks/startup_time.py [--runs 21]
Prints medians and the ratio; the target is a calculator command under 0.2 s on a 2-core CI machine.
Also prints the floor set by the dependencies (typer + pydantic + rich + yaml imported, nothing run).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "dependency floor (import typer, pydantic, rich, yaml)": [
        sys.executable, "-c", "import typer, pydantic, rich.console, rich.table, yaml; from pydantic import BaseModel"],
    "napkin --version": [sys.executable, "-m", "napkin", "--version"],
    "napkin train-time (rich table)": [sys.executable, "-m", "napkin", "train-time", "--params", "70e9", "--tokens",
                                       "15e12", "--gpus", "1024"],
    "napkin train-time --json": [sys.executable, "-m", "napkin", "train-time", "--params", "70e9", "--tokens", "15e12",
                                 "--gpus", "1024", "--json"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    runs = ap.parse_args().runs
    if shutil.which("napkin"):
        CASES["napkin train-time (console script)"] = ["napkin", "train-time", "--params", "70e9", "--tokens", "15e12",
                                                        "--gpus", "1024"]
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(runs):  # interleaved, so drift hits every case alike
        for name, cmd in CASES.items():
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["python -c pass"])
    print(f"{'case':58s} {'median s':>9s} {'min s':>7s} {'x pass':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:58s} {med:9.3f} {min(ts):7.3f} {med / base:7.1f}")


if __name__ == "__main__":
    main()
