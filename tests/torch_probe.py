"""The one probe for "this command does not import torch": napkin commands run in a fresh interpreter (the test
process has long imported torch), each reporting its exit status, its output and whether torch was loaded after it.

``block=("torch",)`` runs the interpreter as if torch were not installed (``sys.modules["torch"] = None`` makes
``import torch`` raise ImportError), for the commands that must then name the extra to install; ``watch`` names the
modules reported (torch, and e.g. peft).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

MARK = "@@napkin-probe@@"  # ends each command's stdout and stderr; the line after it on stdout is its report

_PROBE = r"""
import json, sys
commands, block, watch = (json.loads(a) for a in sys.argv[1:4])
for name in block:
    sys.modules[name] = None
from napkin.cli import app
for args in commands:
    try:
        code = app(args, standalone_mode=False)
    except SystemExit as e:
        code = e.code
    code = 0 if code is None else code if isinstance(code, int) else 1
    sys.stdout.flush()
    print("\n" + MARK, file=sys.stderr, flush=True)
    print("\n" + MARK + "\n" + json.dumps([code, [m for m in watch if sys.modules.get(m) is not None]]), flush=True)
""".replace("MARK", repr(MARK))


@dataclass(frozen=True)
class Ran:
    args: list[str]
    exit_code: int
    stdout: str
    stderr: str
    loaded: frozenset[str]  # the watched modules loaded after this command (or one before it in the same probe)

    @property
    def imported_torch(self) -> bool:
        return "torch" in self.loaded


def run_fresh(*commands: Sequence[str], block: Sequence[str] = (), watch: Sequence[str] = ("torch",),
              timeout: float = 120) -> list[Ran]:
    """Run each command (argv after `napkin`) in order, in one new interpreter; one `Ran` per command."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([list(c) for c in commands]),
                           json.dumps(list(block)), json.dumps(list(watch))], capture_output=True, text=True,
                          timeout=timeout)
    outs, errs = proc.stdout.split("\n" + MARK + "\n"), proc.stderr.split("\n" + MARK + "\n")
    assert proc.returncode == 0 and len(outs) == len(commands) + 1, \
        f"the probe itself failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    # stdout: out_0 MARK report_0 \n out_1 MARK report_1 \n ...; stderr: err_0 MARK err_1 MARK ...
    stdouts = [outs[0]] + [chunk.partition("\n")[2] for chunk in outs[1:-1]]
    reports = [json.loads(chunk.partition("\n")[0]) for chunk in outs[1:]]
    result = []
    for args, stdout, stderr, (code, loaded) in zip(commands, stdouts, errs[:len(commands)], reports, strict=True):
        result.append(Ran(list(args), code, stdout, stderr, frozenset(loaded)))
    return result


def assert_no_torch(*commands: Sequence[str]) -> list[Ran]:
    """Each command answers (exit 0) without importing torch."""
    ran = run_fresh(*commands)
    for r in ran:
        assert r.exit_code == 0, f"napkin {' '.join(r.args)}: exit {r.exit_code}\n{r.stderr[-2000:]}"
        assert not r.imported_torch, f"'napkin {' '.join(r.args)}' imported torch"
    return ran
