"""Parsing and formatting of quantities.

Counts (parameters, tokens, FLOPs) use powers of 1000 (SI): ``70B`` is 70e9, as model cards do.
Memory uses decimal GB (1e9 bytes) like vendor datasheets, with binary GiB (2**30) on request.
"""

from __future__ import annotations

import math
import re

from napkin.errors import InputError

# Suffixes for counts: powers of 1000 (k, M, B/G, T, P). "B" means billion as in "70B params".
COUNT_SUFFIXES: dict[str, float] = {
    "": 1.0,
    "k": 1e3,
    "K": 1e3,
    "m": 1e6,  # lowercase m is never milli for a count of things
    "M": 1e6,
    "b": 1e9,
    "B": 1e9,
    "g": 1e9,
    "G": 1e9,
    "t": 1e12,
    "T": 1e12,
    "p": 1e15,
    "P": 1e15,
}

# Suffixes for bytes: decimal (kB, MB, GB, TB, as datasheets) and binary (KiB, MiB, GiB, TiB).
BYTE_SUFFIXES: dict[str, float] = {
    "": 1.0,
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "pb": 1e15,
    "kib": 2.0**10,
    "mib": 2.0**20,
    "gib": 2.0**30,
    "tib": 2.0**40,
    "pib": 2.0**50,
}

_NUMBER = r"[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z]*)\s*$")


def _finite(value: float, what: str, text: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise InputError(f"{what} must be a finite number, got '{text}'")
    return value


def _split(text: str, what: str, examples: str) -> tuple[float, str]:
    if isinstance(text, (int, float)):
        return _finite(float(text), what, str(text)), ""
    m = _QUANTITY.match(str(text))
    if not m:
        lowered = str(text).strip().lower()
        if lowered in {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}:
            raise InputError(f"{what} must be a finite number, got '{text}'")
        raise InputError(f"cannot read {what} '{text}'; expected a number like {examples}")
    return _finite(float(m.group(1).replace("_", "")), what, str(text)), m.group(2)


def parse_count(text: str | float, what: str = "count") -> float:
    """Parse '70e9', '70B', '1.5T', '512k', '15e12' into a float (powers of 1000)."""
    number, suffix = _split(text, what, "70e9, 70B, 1.5T or 512k")
    if suffix not in COUNT_SUFFIXES:
        raise InputError(
            f"unknown suffix '{suffix}' in {what} '{text}'; use k, M, B (=G), T or P (powers of 1000)"
        )
    return number * COUNT_SUFFIXES[suffix]


def parse_bytes(text: str | float, what: str = "memory") -> float:
    """Parse '80GB' (80e9), '80GiB' (80 * 2**30), '512MiB' or a plain number of bytes."""
    number, suffix = _split(text, what, "80GB, 80GiB, 512MiB or 8e10")
    key = suffix.lower()
    if key not in BYTE_SUFFIXES:
        raise InputError(f"unknown unit '{suffix}' in {what} '{text}'; use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB")
    return number * BYTE_SUFFIXES[key]


def require_positive(value: float, what: str) -> float:
    """Refuse NaN, infinities, zero and negatives with a message naming the quantity."""
    _finite(value, what, str(value))
    if value <= 0:
        raise InputError(f"{what} must be greater than 0, got {value:g}")
    return value


def require_positive_int(value: float, what: str) -> int:
    require_positive(value, what)
    if value != int(value):
        raise InputError(f"{what} must be a whole number, got {value:g}")
    return int(value)


def parse_positive_count(text: str | float, what: str) -> float:
    return require_positive(parse_count(text, what), what)


def parse_positive_int(text: str | float, what: str) -> int:
    return require_positive_int(parse_count(text, what), what)


def parse_positive_bytes(text: str | float, what: str) -> float:
    return require_positive(parse_bytes(text, what), what)


_SI = [(1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]


def format_count(value: float, unit: str = "") -> str:
    """70e9 -> '70.0 B params' (powers of 1000); 1e18 and above in scientific notation."""
    a = abs(value)
    if a >= 1e18:
        return format_sci(value, unit)
    for scale, prefix in _SI:
        if a >= scale:
            return f"{_short(value / scale)} {prefix}" + (f" {unit}" if unit else "")
    return _short(value) + (f" {unit}" if unit else "")


def _short(x: float) -> str:
    if x == int(x) and abs(x) < 1000 and abs(x) >= 1 and not isinstance(x, float):
        return str(int(x))
    a = abs(x)
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def format_sci(value: float, unit: str = "", digits: int = 3) -> str:
    """6.3e24 -> '6.30e+24 FLOPs' style, for FLOP totals."""
    return f"{value:.{digits - 1}e}" + (f" {unit}" if unit else "")


def format_bytes(value: float, binary: bool = True) -> str:
    """Bytes as decimal GB (datasheet units), with GiB beside it when asked."""
    a = abs(value)
    for scale, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if a >= scale:
            dec = f"{value / scale:.2f} {name}"
            break
    else:
        return f"{value:.0f} B" if value == int(value) else f"{value:.2f} B"
    if not binary:
        return dec
    for scale, name in ((2.0**40, "TiB"), (2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB")):
        if a >= scale:
            return f"{dec} ({value / scale:.2f} {name})"
    return dec


def format_duration(seconds: float) -> str:
    """A duration in the largest sensible unit: '143.93 days', '3.2 h', '41 ms'."""
    a = abs(seconds)
    if a >= 86400 * 365:
        return f"{seconds / (86400 * 365):.2f} years ({seconds / 86400:,.1f} days)"
    if a >= 86400:
        return f"{seconds / 86400:.2f} days"
    if a >= 3600:
        return f"{seconds / 3600:.2f} h"
    if a >= 60:
        return f"{seconds / 60:.2f} min"
    if a >= 1:
        return f"{seconds:.2f} s"
    if a >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_rate(flops_per_s: float) -> str:
    """FLOP/s with an SI prefix: 989.5 TFLOP/s, 1.01 EFLOP/s."""
    a = abs(flops_per_s)
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if a >= scale:
            return f"{_short(flops_per_s / scale)} {prefix}FLOP/s"
    return f"{flops_per_s:.3g} FLOP/s"
