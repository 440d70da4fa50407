"""A GPU described in one line, for what the catalog lacks: ``custom:peak=989TFLOP/s,memory=80GB,bw=3.35TB/s``.

Required: ``peak`` (dense bf16/fp16 FLOP/s), ``memory`` (bytes), ``bw`` (memory bandwidth). Optional: ``fp8`` and
``fp32`` (their dense peaks), ``link`` (GPU-to-GPU bandwidth per direction inside a node), ``net`` (per GPU per
direction between nodes), ``node`` (GPUs per node) and ``tdp`` (W). Values take the units the flags take. The
result is a HardwareSpec named ``custom``, validated as a spec file is; a malformed line is one InputError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PREFIX = "custom:"
EXAMPLE = "custom:peak=989TFLOP/s,memory=80GB,bw=3.35TB/s"
REQUIRED = ("peak", "memory", "bw")


def is_custom(name: str) -> bool:
    return isinstance(name, str) and name.strip().lower().startswith(PREFIX)


def _watts(text: str, what: str) -> float:
    from napkin.errors import InputError
    from napkin.units import parse_count

    t = text.strip()
    value = parse_count(t[:-1] if t[-1:].lower() == "w" else t, what)
    if value <= 0:
        raise InputError(f"{what} must be greater than 0, got '{text}'")
    return value


def _node(text: str, what: str) -> float:
    from napkin.units import parse_positive_int

    return parse_positive_int(text, what)


def _parsers() -> dict[str, tuple[str, Callable[[str, str], float]]]:
    from napkin.units import parse_bandwidth, parse_flop_rate, parse_positive_bytes

    return {"peak": ("dense bf16/fp16 peak", parse_flop_rate), "fp8": ("dense fp8 peak", parse_flop_rate),
            "fp32": ("dense fp32 peak", parse_flop_rate), "memory": ("memory", parse_positive_bytes),
            "bw": ("memory bandwidth", parse_bandwidth), "link": ("scale-up link per direction", parse_bandwidth),
            "net": ("scale-out network per direction", parse_bandwidth), "node": ("GPUs per node", _node),
            "tdp": ("board power", _watts)}


def custom_hardware(text: str) -> Any:
    """The HardwareSpec a ``custom:key=value,...`` line describes; InputError (one line) when it is malformed."""
    from pydantic import ValidationError

    from napkin.errors import InputError
    from napkin.specs.dtypes import DType
    from napkin.specs.hardware import HardwareSpec

    def bad(why: str) -> InputError:
        return InputError(f"--gpu '{text}': {why}; write it as {EXAMPLE} (optional: fp8=, fp32=, link=, net=, "
                          "node=, tdp=)")

    body = text.strip()[len(PREFIX):].strip()
    if not body:
        raise bad("nothing after 'custom:'")
    parsers = _parsers()
    values: dict[str, float] = {}
    for part in body.split(","):
        key, eq, raw = part.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not eq or not key or not raw:
            raise bad(f"'{part.strip()}' is not key=value")
        if key not in parsers:
            import difflib

            close = difflib.get_close_matches(key, list(parsers), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (keys: {', '.join(parsers)})"
            raise bad(f"unknown key '{key}'{hint}")
        if key in values:
            raise bad(f"'{key}' is given twice")
        what, parse = parsers[key]
        try:
            values[key] = parse(raw, f"{what} ({key}=)")
        except InputError as e:
            raise bad(str(e)) from None
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    peaks = {DType.bf16: values["peak"], DType.fp16: values["peak"]}
    if "fp8" in values:
        peaks[DType.fp8] = values["fp8"]
    if "fp32" in values:
        peaks[DType.fp32] = values["fp32"]
    link = values.get("link")
    doc = {"name": "custom", "display_name": "custom GPU", "vendor": "other", "peak_flops_per_s": peaks,
           "memory_bytes": values["memory"], "memory_bandwidth_bytes_per_s": values["bw"],
           "interconnect_bandwidth_bytes_per_s": None if link is None else 2 * link,
           "scale_up_bandwidth_bytes_per_s": link, "scale_out_bandwidth_bytes_per_s": values.get("net"),
           "node_gpus": None if "node" not in values else int(values["node"]), "tdp_w": values.get("tdp"),
           "notes": ["Described on the command line, not a datasheet: every figure is the user's."],
           "sources": [f"given on the command line: {text.strip()}"]}
    try:
        return HardwareSpec.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise bad(f"{field}: {err['msg']}") from None
