"""Parsing and formatting of quantities.

Counts (parameters, tokens, FLOPs) use powers of 1000 (SI): ``70B`` is 70e9, as model cards do.
Memory uses decimal GB (1e9 bytes) like vendor datasheets, with binary GiB (2**30) on request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

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

# Suffixes for lengths in tokens (a sequence, a prompt, a context, a chunk): powers of 1024, as context lengths are
# said ("8K context" = 8192, "128K" = 131072 in Llama 3.1's and Qwen2.5's configs); counts stay decimal (15T tokens).
LENGTH_SUFFIXES: dict[str, int] = {"": 1, "k": 2**10, "K": 2**10, "Ki": 2**10, "ki": 2**10, "KI": 2**10,
                                   "M": 2**20, "Mi": 2**20, "MI": 2**20}
LENGTH_RULE = "k/K/Ki = 1024 (8k = 8192), M = 1024²"


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

# ASCII digits only: Python's \d (and float()) also take '٣' (Arabic-Indic three) and '３' (full-width) as digits.
_NUMBER = r"[+-]?(?:[0-9]+(?:_[0-9]+)*(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z]*)\s*$")


def _as_float(value: float, what: str) -> float:
    """A number given as a Python int or float; an int beyond the float range is refused, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        digits = int(int(value).bit_length() * 0.30103) + 1
        raise InputError(f"{what} must be a finite number, got an integer of ~{digits} digits") from None


def _finite(value: float, what: str, text: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise InputError(f"{what} must be a finite number, got '{text}'")
    return value


def _split(text: str | float, what: str, examples: str) -> tuple[float, str]:
    if isinstance(text, (int, float)):
        return _finite(_as_float(text, what), what, str(text)), ""
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


# Rates: decimal prefixes as datasheets and NIC vendors print them; B = bytes, b = bits (a byte is 8 bits).
# The prefix letter's case does not matter (25gB/s = 25GB/s); the b/B letter does (200Gb/s = 25GB/s).
RATE_PREFIXES: dict[str, float] = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15,
                                   "ki": 2.0**10, "mi": 2.0**20, "gi": 2.0**30, "ti": 2.0**40}
_RATE = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z/]*)\s*$")
_RATE_UNIT = re.compile(r"^(k|m|g|t|p|ki|mi|gi|ti)?(B|b)(/s|ps)$", re.IGNORECASE)
_RATE_EXAMPLES = "450GB/s, 200Gb/s, 400Gbps, 25 GiB/s or 4.5e11 (bytes/s)"

# Compute rates: FLOP/s with a decimal prefix, as datasheets print them (989.5 TFLOP/s; "TFLOPS" is the same).
_FLOP_RATE = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z/]*)\s*$")
_FLOP_RATE_UNIT = re.compile(r"^(k|m|g|t|p|e)?(flop/s|flops|flop/sec)$", re.IGNORECASE)
FLOP_PREFIXES: dict[str, float] = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18}
_FLOP_RATE_EXAMPLES = "989.5TFLOP/s, 200GFLOP/s, 989TFLOPS, 989.5T or 9.895e14 (FLOP/s)"


def parse_flop_rate(text: str | float, what: str = "peak FLOP/s") -> float:
    """A compute rate in FLOP/s, greater than 0: '989.5TFLOP/s', '200 GFLOP/s', '989TFLOPS', a count-suffixed
    '989.5T' (as --params takes 70B), or a bare '9.895e14'."""
    number, unit = _number_or_refuse(_FLOP_RATE, text, what, _FLOP_RATE_EXAMPLES)
    m = _FLOP_RATE_UNIT.match(unit)
    if m is not None:
        factor = FLOP_PREFIXES[(m.group(1) or "").lower()]
    elif unit in COUNT_SUFFIXES:
        factor = COUNT_SUFFIXES[unit]
    elif _RATE_UNIT.match(unit):
        raise InputError(f"{what} '{text}' is a bandwidth (bytes/s), not a compute rate; did you mean "
                         f"{number:g}{unit[:-3]}FLOP/s?")  # GB/s, Gbps: the prefix
    else:
        raise InputError(f"unknown unit '{unit}' in {what} '{text}'; use FLOP/s with k, M, G, T, P or E "
                         f"(e.g. {_FLOP_RATE_EXAMPLES})")
    value = number * factor
    _finite(value, what, str(text))
    if value <= 0:
        raise InputError(f"{what} must be greater than 0, got '{text}'; e.g. 989.5TFLOP/s")
    return value


# Durations: SI submultiples of the second, as divisors (10us = 10 / 1e6 s exactly, not 10 * 1e-6);
# µ (micro sign), μ (Greek mu) and u all mean micro.
DURATION_DIVISORS: dict[str, float] = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e3, "us": 1e6, "\u00b5s": 1e6,
                                       "\u03bcs": 1e6, "ns": 1e9}
_DURATION = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z\u00b5\u03bc]*)\s*$")
_DURATION_EXAMPLES = "10us, 10µs, 5ms, 2s, 300ns or 1e-5 (seconds)"


def _number_or_refuse(pattern: re.Pattern[str], text: str | float, what: str, examples: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise InputError(f"cannot read {what} '{text}'; expected a number like {examples}")
    if isinstance(text, (int, float)):
        return _finite(_as_float(text, what), what, str(text)), ""
    m = pattern.match(str(text))
    if not m:
        lowered = str(text).strip().lower().lstrip("+-")
        if lowered.startswith(("nan", "inf")):
            raise InputError(f"{what} must be a finite number, got '{text}'")
        raise InputError(f"cannot read {what} '{text}'; expected a number like {examples}")
    return _finite(float(m.group(1).replace("_", "")), what, str(text)), m.group(2)


def parse_bandwidth(text: str | float, what: str = "bandwidth") -> float:
    """A rate in bytes/s: '25GB/s' (25e9), '200Gb/s' (bits: 25e9), '400Gbps', '25GiB/s', or a bare '450e9' (bytes/s)."""
    number, unit = _number_or_refuse(_RATE, text, what, _RATE_EXAMPLES)
    if unit == "":
        factor = 1.0
    else:
        m = _RATE_UNIT.match(unit)
        binary_bits = m is not None and (m.group(1) or "").lower().endswith("i") and m.group(2) == "b"
        if m is None or binary_bits:  # Gib/s: nobody quotes links in binary bits
            if unit.lower() in BYTE_SUFFIXES:
                raise InputError(f"{what} '{text}' is a size, not a rate; did you mean {number:g}{unit}/s?")
            raise InputError(f"unknown unit '{unit}' in {what} '{text}'; use B/s, MB/s, GB/s, TB/s or GiB/s "
                             f"(bytes), or Mb/s, Gb/s, Gbps, Tb/s (bits, /8)")
        factor = RATE_PREFIXES[(m.group(1) or "").lower()] / (8.0 if m.group(2) == "b" else 1.0)
    value = number * factor
    _finite(value, what, str(text))
    if value <= 0:
        raise InputError(f"{what} must be greater than 0, got '{text}'; e.g. {_RATE_EXAMPLES.split(',')[0]}")
    return value


def parse_duration(text: str | float, what: str = "duration") -> float:
    """A time in seconds: '10us' or '10µs' (1e-5), '5ms', '2s', '300ns', or a bare '1e-5' (seconds). 0 is allowed."""
    number, unit = _number_or_refuse(_DURATION, text, what, _DURATION_EXAMPLES)
    key = unit if unit in ("\u00b5s", "\u03bcs") else unit.lower()
    if key not in DURATION_DIVISORS:
        raise InputError(f"unknown unit '{unit}' in {what} '{text}'; use ns, us (or µs), ms or s")
    value = number / DURATION_DIVISORS[key]
    if value < 0:
        raise InputError(f"{what} cannot be negative, got '{text}'; e.g. {_DURATION_EXAMPLES.split(',')[0]}")
    return value


# Wall-clock spans in days (a budget, a deadline): a bare number is days; a unit says otherwise. Divisors and
# multipliers are exact for the whole numbers people type (36h = 1.5 days, 2w = 14 days).
DAY_UNITS: dict[str, tuple[float, float]] = {  # unit -> (multiply, divide) giving days
    "": (1.0, 1.0), "d": (1.0, 1.0), "day": (1.0, 1.0), "days": (1.0, 1.0),
    "w": (7.0, 1.0), "wk": (7.0, 1.0), "week": (7.0, 1.0), "weeks": (7.0, 1.0),
    "h": (1.0, 24.0), "hr": (1.0, 24.0), "hour": (1.0, 24.0), "hours": (1.0, 24.0),
    "min": (1.0, 1440.0), "mins": (1.0, 1440.0), "minute": (1.0, 1440.0), "minutes": (1.0, 1440.0),
    "s": (1.0, 86400.0), "sec": (1.0, 86400.0), "second": (1.0, 86400.0), "seconds": (1.0, 86400.0),
}
_DAYS_EXAMPLES = "7 (days), 36h, 2w, 90min or 3600s"


def parse_days(text: str | float, what: str = "days") -> float:
    """A wall-clock span in days, greater than 0: '7' (days), '7d', '36h' (1.5), '2w' (14), '90min', '3600s'."""
    number, unit = _number_or_refuse(_QUANTITY, text, what, _DAYS_EXAMPLES)
    key = unit.lower()
    if key not in DAY_UNITS:
        raise InputError(f"unknown unit '{unit}' in {what} '{text}'; use s, min, h, d or w (a bare number is days)")
    times, per = DAY_UNITS[key]
    value = number * times / per
    _finite(value, what, str(text))
    if value <= 0:
        raise InputError(f"{what} must be greater than 0, got '{text}'; e.g. {_DAYS_EXAMPLES}")
    return value


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


# Above 2^53 consecutive whole numbers are no longer all floats: 9223372036854775809 would silently become ...808.
MAX_EXACT_INT = 2**53


def parse_positive_int(text: str | float, what: str) -> int:
    value = parse_count(text, what)
    if abs(value) > MAX_EXACT_INT:
        raise InputError(f"{what} must be at most 2^53 = {MAX_EXACT_INT:,} (beyond it a whole number is not exact), "
                         f"got {text}")
    return require_positive_int(value, what)


def parse_length(text: str | float, what: str = "length") -> int:
    """A length in tokens, a positive whole number: '8192', '8k' / '8K' / '8Ki' (8192), '1.5k' (1536), '1M' (2**20).

    Context lengths are powers of two by convention, so k means 1024 here (unlike counts, where 15T is 15e12)."""
    number, suffix = _split(text, what, "8192, 8k (= 8192) or 128K")
    if suffix not in LENGTH_SUFFIXES:
        hint = " (a length, not a count: lengths take k or M)" if suffix in COUNT_SUFFIXES else ""
        raise InputError(f"unknown suffix '{suffix}' in {what} '{text}'{hint}; use {LENGTH_RULE}, or a plain number")
    value = number * LENGTH_SUFFIXES[suffix]
    if abs(value) > MAX_EXACT_INT:
        raise InputError(f"{what} must be at most 2^53 = {MAX_EXACT_INT:,} (beyond it a whole number is not exact), "
                         f"got {text}")
    return require_positive_int(value, what)


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


SECONDS_PER_DAY = 86400.0


def format_duration(seconds: float) -> str:
    """A duration in the largest sensible unit: '143.93 days', '3.20 h', '3.13 min', '41.00 ms'."""
    a = abs(seconds)
    if a >= 86400 * 365:
        return f"{seconds / (86400 * 365):.2f} years ({seconds / 86400:,.1f} days)"
    if a >= 86400:
        return f"{seconds / 86400:,.2f} days"
    if a >= 3600:
        return f"{seconds / 3600:.2f} h"
    if a >= 60:
        return f"{seconds / 60:.2f} min"
    if a >= 1:
        return f"{seconds:.2f} s"
    if a >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_days(days: float) -> str:
    """Days in the unit a person reads: '143.93 days' for a long run, '5.17 h' or '3.13 min' for a short one."""
    return format_duration(days * SECONDS_PER_DAY)


RATE_PREFIXES_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"))


def format_rate(flops_per_s: float) -> str:
    """FLOP/s with an SI prefix: 989.5 TFLOP/s, 1.01 EFLOP/s, 299.3 GFLOP/s (a CPU)."""
    a = abs(flops_per_s)
    for scale, prefix in RATE_PREFIXES_SI:
        if a >= scale:
            return f"{_short(flops_per_s / scale)} {prefix}FLOP/s"
    return f"{flops_per_s:.3g} FLOP/s"


def rate_unit(values: Sequence[float]) -> tuple[float, str]:
    """One unit for a column of FLOP/s: the prefix of the largest value (a GPU's column in TFLOP/s, a CPU's in
    GFLOP/s, never '0.0002993 TFLOP/s'). Returns (scale, 'TFLOP/s')."""
    top = max((abs(v) for v in values), default=0.0)
    for scale, prefix in RATE_PREFIXES_SI:
        if top >= scale:
            return scale, f"{prefix}FLOP/s"
    return 1.0, "FLOP/s"


def format_bandwidth(bytes_per_s: float, bits: bool = False) -> str:
    """450e9 -> '450 GB/s' (decimal, as datasheets); bits=True adds the network figure: '50 GB/s (400 Gb/s)'."""
    def scaled(value: float, unit: str) -> str:
        for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {prefix}{unit}/s"
        return f"{value:.4g} {unit}/s"

    text = scaled(bytes_per_s, "B")
    return f"{text} ({scaled(bytes_per_s * 8, 'b')})" if bits else text
