"""A spread of a long parametrized cross-check for the everyday loop (`python -m pytest -m "not slow"`).

``everyday(cases, every=n)`` keeps every n-th case (the first, the (n+1)-th, ...) unmarked and marks the others
``slow``: the everyday loop still runs every test function, on a few of its cases; CI runs every case.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def everyday(cases: Iterable[Any], every: int, unpack: bool = True) -> list[Any]:
    """``cases`` as pytest params, all but every ``every``-th marked slow. Tuples are unpacked into the
    parametrize's names (``unpack=False`` for a single name whose values are tuples)."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    out = []
    for i, case in enumerate(cases):
        marks = () if i % every == 0 else (pytest.mark.slow,)
        values = case if unpack and isinstance(case, tuple) else (case,)
        out.append(pytest.param(*values, marks=marks))
    return out
