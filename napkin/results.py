"""Explainable results: every calculation returns a pydantic model that carries its derivation.

A ``Step`` is one line of the worked napkin: what is computed, the formula, the numbers put into
it, the result with its unit, and where the formula comes from. ``--explain`` prints the steps,
``--json`` dumps the whole model.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

# Sources cited by more than one module, one spelling each.
LECTURE = "Stanford CS336 (2025), lecture 2: resource accounting"
KAPLAN = "Kaplan et al. 2020, Scaling Laws for Neural Language Models, §2.1 (C ≈ 6ND)"
CHINCHILLA = "Hoffmann et al. 2022, Training Compute-Optimal LLMs (Chinchilla), Table 3: D ≈ 20N"
ZERO = "Rajbhandari et al. 2020, ZeRO, §3.1 (mixed-precision Adam: 2+2+12 = 16 B/param) and §5"
DEFINITION = "definition"


class Step(BaseModel):
    """One step of a derivation."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="what this step computes")
    formula: str = Field(description="the formula in symbols")
    substituted: str = Field(description="the formula with the numbers put in")
    value: float = Field(description="the result")
    unit: str = Field(description="unit of the result")
    source: str = Field(description="paper, datasheet or lecture the formula comes from")


class Result(BaseModel):
    """Base of every result: the answer fields of a subclass plus the derivation steps."""

    model_config = ConfigDict(frozen=True)

    steps: list[Step] = Field(default_factory=list, description="the derivation, in order")
    notes: list[str] = Field(default_factory=list, description="caveats a reader should know")


class Derivation:
    """Collects steps while a calculation runs, so each formula is written once, where computed."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(self, name: str, formula: str, substituted: str, value: float, unit: str, source: str) -> float:
        if not math.isfinite(value):
            from napkin.errors import InputError

            raise InputError(f"{name} overflows ({formula} is not a finite number): the inputs are too large")
        self.steps.append(
            Step(name=name, formula=formula, substituted=substituted, value=value, unit=unit, source=source)
        )
        return value

    def given(self, name: str, symbol: str, value: float, unit: str, source: str = "input") -> float:
        """Record an input (or a looked-up figure) as a step, so the napkin shows where it came from."""
        return self.add(name, symbol, g(value), value, unit, source)


def g(x: float) -> str:
    """Numbers as they appear in substituted formulas: short, exact enough to re-check by hand."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.6g}"
