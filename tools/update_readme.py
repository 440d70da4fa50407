"""Re-run every ```console block of README.md and paste the real output in.

A block is a sequence of `$ command` lines, each followed by its output. A block with a line that
is just "…" was shortened by hand and is left alone. The commands run through
bash in the repository root with COLUMNS=100 and the current environment's `napkin` on PATH.

    python tools/update_readme.py            # rewrite README.md in place
    python tools/update_readme.py --check    # exit 1 if any block's output has changed
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def run(cmd: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("NAPKIN_SPECS_DIR", None)
    out = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def render(block: str) -> str:
    if any(line.strip() == "…" for line in block.splitlines()):
        return block  # elided by hand: keep as written
    parts = []
    for line in block.splitlines():
        if line.startswith("$ "):
            cmd = line[2:]
            parts.append(f"$ {cmd}\n{run(cmd)}".rstrip())
    return "\n".join(parts) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("path", nargs="?", default=str(ROOT / "README.md"))
    args = ap.parse_args()
    path = Path(args.path)
    text = path.read_text()
    new = BLOCK.sub(lambda m: f"```console\n{render(m.group(1))}```", text)
    if args.check:
        return int(new != text)
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
