"""Re-run every ```console block of README.md and paste the real output in.

A block is a sequence of `$ command` lines, each followed by its output. A block with a line that
is just "…" was shortened by hand and is left alone. The commands run through
bash in the repository root with COLUMNS=100 and the current environment's `napkin` on PATH.

Measured figures. A few blocks time real work on the machine that runs them (`bench-matmul` and
`validate` on the CPU): their times, FLOP/s, device name, thread count and software versions change
on every run and from one machine to the next. An output line that matches one of the MEASURED
patterns below (anchored at the start of the line; the `label` group is the part that must not
change) is compared by its label alone, so `--check` passes on any machine as long as the same
measured lines come out in the same places. In a block holding such a line, runs of spaces count as
one (a table pads every row to its widest cell, and that is often a measured one). A rewrite keeps a
block exactly as written when only measured figures differ (re-running does not churn the README);
`--remeasure` pastes this machine's figures in as well. A new measured line in the tour needs a pattern here; keep each
pattern narrow (a label followed by what only a measurement prints), so that a calculated figure
never hides behind one.

    python tools/update_readme.py               # rewrite README.md in place, measured figures kept
    python tools/update_readme.py --remeasure   # the same, with this machine's measured figures
    python tools/update_readme.py --check       # exit 1, printing a diff, if any block's output changed
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
SPACES = re.compile(r" {2,}")

# Output lines whose figures are measured, not calculated (see the module docstring).
MEASURED = [re.compile(p) for p in (
    r"^(?P<label>device)\s{2,}\S.*$",                  # the CPU / GPU the bench ran on
    r"^(?P<label>CPU threads)\s+\d+$",                 # torch.get_num_threads() of this machine
    r"^(?P<label>software)\s+torch \S+.*$",            # torch, Python and OS versions
    r"^(?P<label>time per call)\s+min .* max .*$",     # bench-matmul timings
    r"^(?P<label>step time)\s+min .* max .*$",         # validate timings (not step-time's prediction)
    r"^(?P<label>achieved \(median\))\s+\S.*FLOP.*$",  # FLOP/s from those timings
)]


def normalise_line(line: str) -> str:
    for pattern in MEASURED:
        m = pattern.match(line)
        if m:
            return f"{m.group('label')} <measured>"
    return line


def normalise_block(block: str) -> str:
    lines = [normalise_line(line) for line in block.split("\n")]
    if any(line.endswith(" <measured>") for line in lines):
        # A table right-aligns every row to its widest cell, often a measured one: the padding of the
        # other rows moves with it, so a block with measured lines is compared with runs of spaces squeezed.
        lines = [SPACES.sub(" ", line) for line in lines]
    return "\n".join(lines)


def normalise(text: str) -> str:
    """The text with every measured figure inside a console block replaced by a placeholder."""
    return BLOCK.sub(lambda m: "```console\n" + normalise_block(m.group(1)) + "```", text)


def run(cmd: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("NAPKIN_SPECS_DIR", None)
    out = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def render(block: str, remeasure: bool = False) -> str:
    if any(line.strip() == "…" for line in block.splitlines()):
        return block  # elided by hand: keep as written
    parts = []
    for line in block.splitlines():
        if line.startswith("$ "):
            cmd = line[2:]
            parts.append(f"$ {cmd}\n{run(cmd)}".rstrip())
    new = "\n".join(parts) + "\n"
    if not remeasure and normalise(f"```console\n{new}```") == normalise(f"```console\n{block}```"):
        return block  # only measured figures moved: keep the ones written
    return new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if any block's output changed (measured "
                    "figures aside); write nothing")
    ap.add_argument("--remeasure", action="store_true", help="also replace measured figures with this machine's")
    ap.add_argument("path", nargs="?", default=str(ROOT / "README.md"))
    args = ap.parse_args()
    path = Path(args.path)
    text = path.read_text()
    new = BLOCK.sub(lambda m: f"```console\n{render(m.group(1), args.remeasure)}```", text)
    if args.check:
        old_n, new_n = normalise(text), normalise(new)
        if old_n == new_n:
            return 0
        sys.stderr.writelines(difflib.unified_diff(old_n.splitlines(True), new_n.splitlines(True),
                                                   f"{path.name} (as written)", f"{path.name} (as run now)"))
        return 1
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
