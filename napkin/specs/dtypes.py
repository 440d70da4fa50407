"""Numeric formats: bytes per element and which peak-FLOP/s row of a datasheet each one uses."""

from __future__ import annotations

from enum import Enum

from napkin.errors import UnknownNameError


class DType(str, Enum):
    """Formats napkin knows. ``fp64_tensor`` is a peak-compute row only (FP64 on tensor cores)."""

    fp64 = "fp64"
    fp64_tensor = "fp64_tensor"
    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"
    int8 = "int8"
    fp4 = "fp4"
    int4 = "int4"


# Bytes per element (docs/design.md: fp64 8, fp32/tf32 4, bf16/fp16 2, fp8 1, int8 1, int4/fp4 0.5).
BYTES_PER_ELEMENT: dict[DType, float] = {
    DType.fp64: 8,
    DType.fp64_tensor: 8,
    DType.fp32: 4,
    DType.tf32: 4,  # tf32 is stored as fp32; only the tensor-core multiply drops mantissa bits
    DType.bf16: 2,
    DType.fp16: 2,
    DType.fp8: 1,
    DType.int8: 1,
    DType.fp4: 0.5,
    DType.int4: 0.5,
}

# int64 (torch.long) indices: token ids, labels, top-k expert ids. Not a compute format, so not a DType.
INT64_BYTES = 8  # 64 bits

# Other spellings users type.
ALIASES: dict[str, DType] = {
    "float64": DType.fp64,
    "double": DType.fp64,
    "fp64-tc": DType.fp64_tensor,
    "fp64-tensor": DType.fp64_tensor,
    "float32": DType.fp32,
    "float": DType.fp32,
    "bfloat16": DType.bf16,
    "float16": DType.fp16,
    "half": DType.fp16,
    "e4m3": DType.fp8,
    "e5m2": DType.fp8,
    "fp8-e4m3": DType.fp8,
    "fp8-e5m2": DType.fp8,
    "float8": DType.fp8,
    "nvfp4": DType.fp4,
    "mxfp4": DType.fp4,
}


def parse_dtype(name: str | DType) -> DType:
    if isinstance(name, DType):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key.replace("-", "_") in DType.__members__:
        return DType(key.replace("-", "_"))
    if key in ALIASES:
        return ALIASES[key]
    raise UnknownNameError("dtype", str(name), [d.value for d in DType] + list(ALIASES))


def bytes_per_element(dtype: str | DType) -> float:
    return BYTES_PER_ELEMENT[parse_dtype(dtype)]
