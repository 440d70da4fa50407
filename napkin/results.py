"""Explainable results: every calculation returns a pydantic model that carries its derivation.

A ``Step`` is one line of the worked napkin: what is computed, the formula, the numbers put into
it, the result with its unit, and where the formula comes from. ``--explain`` prints the steps,
``--json`` dumps the whole model.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Sources cited by more than one module, one spelling each.
LECTURE = "Stanford CS336 (2025), lecture 2: resource accounting"
KAPLAN = "Kaplan et al. 2020, Scaling Laws for Neural Language Models, §2.1 (C ≈ 6ND)"
CHINCHILLA = "Hoffmann et al. 2022, Training Compute-Optimal LLMs (Chinchilla), Table 3: D ≈ 20N"
ZERO = "Rajbhandari et al. 2020, ZeRO, §3.1 (mixed-precision Adam: 2+2+12 = 16 B/param) and §5"
DEFINITION = "definition"
PALM = "Chowdhery et al. 2022 (PaLM), App. B"
ROOFLINE = "Williams, Waterman & Patterson 2009, Roofline: An Insightful Visual Performance Model, §2"
MFU_SOURCE = f"definition of MFU ({PALM}): achieved FLOP/s / dense peak FLOP/s"


class Step(BaseModel):
    """One step of a derivation."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(default="", description="stable identifier for scripts: the name without its numbers or "
                     "parenthesised details, unique within the result")
    name: str = Field(description="what this step computes")
    formula: str = Field(description="the formula in symbols")
    substituted: str = Field(description="the formula with the numbers put in")
    value: float = Field(description="the result")
    unit: str = Field(description="unit of the result")
    source: str = Field(description="paper, datasheet or lecture the formula comes from")


def kind_of(cls: type) -> str:
    """A result class's kind: its name without 'Result', in kebab case (TrainTimeResult → train-time)."""
    name = cls.__name__.removesuffix("Result")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()


class Result(BaseModel):
    """Base of every result: the answer fields of a subclass plus the derivation steps."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(default="", description="which result this is (train-time, memory, step-time, ...)")
    # Mutable defaults as values, not default_factory=list: pydantic copies them for each instance, and a factory
    # costs inspect.signature(list) (~0.1 ms) for each such field of every subclass when its class is built.
    steps: list[Step] = Field(default=[], description="the derivation, in order")
    notes: list[str] = Field(default=[], description="caveats a reader should know")

    def model_post_init(self, context: Any, /) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", kind_of(type(self)))

    def to_json(self) -> str:
        """The result for scripts: nested results (a solver's ledger, a plan's winner) without their own steps,
        which the outer result's steps already hold."""
        return self.model_dump_json(indent=2, exclude=_nested_steps(self) or None)


def _nested_steps(r: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(r).model_fields:
        v = getattr(r, name)
        if isinstance(v, Result):
            out[name] = {"steps": True, **_nested_steps(v)}
        elif isinstance(v, list) and v and all(isinstance(x, Result) for x in v):
            out[name] = {i: {"steps": True} for i in range(len(v))}
    return out


_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar("napkin_recording", default=True)


@contextlib.contextmanager
def numbers_only() -> Iterator[None]:
    """Inside, derivations keep no steps: for a search that calls the accounting thousands of times and keeps
    only the numbers (``plan``), then derives its winners again in full. Values and their overflow checks are
    unchanged."""
    token = _RECORDING.set(False)
    try:
        yield
    finally:
        _RECORDING.reset(token)


class Derivation:
    """Collects steps while a calculation runs, so each formula is written once, where computed."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self._keys: set[str] = set()
        self._record = _RECORDING.get()

    def add(self, name: str, formula: str, substituted: str, value: float, unit: str, source: str,
            key: str | None = None) -> float:
        if not math.isfinite(value):
            from napkin.errors import InputError

            raise InputError(f"{name} overflows ({formula} is not a finite number): the inputs are too large")
        if not self._record:
            return value
        k = key or step_key(name)
        base, n = k, 2
        while k in self._keys:
            k, n = f"{base}-{n}", n + 1
        self._keys.add(k)
        self.steps.append(
            Step(key=k, name=name, formula=formula, substituted=substituted, value=value, unit=unit, source=source)
        )
        return value

    def given(self, name: str, symbol: str, value: float, unit: str, source: str = "input",
              key: str | None = None) -> float:
        """Record an input (or a looked-up figure) as a step, so the napkin shows where it came from."""
        return self.add(name, symbol, g(value), value, unit, source, key)


@functools.lru_cache(maxsize=8192)  # pure; a plan's search derives the same few hundred names thousands of times
def step_key(name: str) -> str:
    """'activations per MoE layer (s=4096, b=1)' → 'activations-per-moe-layer': no numbers, no details."""
    text = re.sub(r"\([^)]*\)", " ", name.lower())
    words = [w for w in re.split(r"[^a-z0-9_]+", text) if w and not any(c.isdigit() for c in w)]
    return "-".join(words) or "step"


def minus(a: float, b: float) -> str:
    """'a − b' with as many digits as it takes for the printed difference to recompute the real one (six
    significant digits swallow the difference of near-equal numbers)."""
    want = a - b
    for digits in range(6, 18):
        sa, sb = (str(int(x)) if math.isfinite(x) and x == int(x) and abs(x) < 1e15 else f"{x:.{digits}g}"
                  for x in (a, b))
        got = float(sa) - float(sb)
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
            break
    return f"{sa} − {sb}"


def g(x: float) -> str:
    """Numbers as they appear in substituted formulas: short, exact enough to re-check by hand."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.6g}"
