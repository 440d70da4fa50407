"""Domain errors. The core raises these; the CLI turns each into one line and exit code 2."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# Core messages name arguments as `field` (what a Python caller passes); the CLI's one error boundary shows each as
# its flag. Fields whose flag is not simply --field-name:
FLAGS = {"memory_bytes": "--memory", "reserve_bytes": "--reserve", "fraction": "--mfu-fraction",
         "model": "--model", "link_bytes_per_s": "--link-bandwidth", "allreduce_latency_s": "--allreduce-latency",
         "intra_node_bandwidth": "--intra-node-bandwidth", "inter_node_bandwidth": "--inter-node-bandwidth",
         "step_time_s": "--step-time", "price_per_gpu_hour": "--price-per-gpu-hour"}
_FIELD = re.compile(r"`([a-z][a-z0-9_]*)`")


def flag_of(field: str) -> str:
    """The command-line flag of an API argument: `global_batch` → --global-batch."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def for_cli(message: str) -> str:
    """A core message with its `field` names shown as the flags a command-line user types."""
    return _FIELD.sub(lambda m: flag_of(m.group(1)), message)


class NapkinError(Exception):
    """Base class of every error napkin raises on purpose (bad input, bad spec, missing extra)."""

    exit_code = 2


class InputError(NapkinError, ValueError):
    """A value the user gave is out of range, malformed, or inconsistent with another one.

    Subclasses ValueError so that click's parameter parsing reports it as a bad parameter.
    """


class UnknownNameError(NapkinError, LookupError):
    """A name (GPU, model, optimizer, dtype...) that is not in its catalog."""

    def __init__(self, kind: str, name: str, known: Iterable[str], close: list[str] | None = None) -> None:
        known = sorted(set(known))
        self.kind, self.name, self.known = kind, name, known
        if close is None:
            close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
        if close:
            hint = f"did you mean: {', '.join(close)}?"
        else:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            hint = f"known: {shown}"
        super().__init__(f"unknown {kind} '{name}'; {hint}")


class SpecError(NapkinError):
    """A spec file (YAML or config.json) that cannot be read or does not validate.

    The message names the file and, one per line, each field that is wrong.
    """


class MissingExtraError(NapkinError):
    """An optional dependency (torch, matplotlib) is needed for this command but not installed."""

    def __init__(self, package: str, extra: str, purpose: str, *, install: str | None = None) -> None:
        self.package, self.extra = package, extra
        hint = " (GPU users: install torch for their CUDA version first, see README)" if package == "torch" else ""
        how = install or f"pip install 'napkin[{extra}]'"  # install: a command of its own (a package no extra holds)
        super().__init__(f"{purpose} needs {package}, which is not installed; install it with: {how}{hint}")
