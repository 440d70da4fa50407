"""Shared typer options: the parsing of numbers with units happens here, the checking in the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from napkin import units
from napkin.errors import InputError

CATALOG = "Catalog"
OUTPUT = "Output"


def _parser(fn: Callable[[str, str], Any], what: str) -> Callable[[str], Any]:
    """Wrap a units parser so its InputError reads as a bad value of this option."""

    def parse(text: str) -> Any:
        if not isinstance(text, str):  # a default value, already parsed
            return text
        try:
            return fn(text, what)
        except InputError as e:
            raise typer.BadParameter(str(e)) from None

    return parse


def count(what: str) -> Callable[[str], float]:
    """Counts with SI suffixes (70e9, 70B, 1.5T, 512k)."""
    return _parser(units.parse_count, what)


def whole(what: str) -> Callable[[str], int]:
    """Positive whole numbers, suffixes allowed (1024, 1k)."""
    return _parser(units.parse_positive_int, what)


def number(what: str) -> Callable[[str], float]:
    """Plain numbers (same grammar as counts)."""
    return _parser(units.parse_count, what)


def nbytes(what: str) -> Callable[[str], float]:
    """Byte sizes: 80GB (decimal), 80GiB (binary), or a number of bytes."""
    return _parser(units.parse_bytes, what)


def opt(*names: str, parser: Callable[[str], Any] | None = None, metavar: str | None = None,
        panel: str | None = None, **kw: Any) -> Any:
    return typer.Option(*names, parser=parser, metavar=metavar, rich_help_panel=panel, **kw)


Json = Annotated[bool, typer.Option("--json", help="Print the result model as JSON (for scripts).",
                                     rich_help_panel=OUTPUT)]
Explain = Annotated[bool, typer.Option("--explain", help="Show the derivation: every formula, the numbers put "
                                       "in, the result and its source.", rich_help_panel=OUTPUT)]
Gpus = Annotated[int, opt("--gpus", "-g", parser=whole("GPU count"), metavar="G", help="Number of GPUs.")]
Gpu = Annotated[str, opt("--gpu", metavar="NAME", help="Accelerator from the hardware catalog (`napkin hardware "
                         "list`); short names like h100 pick the default variant.", panel=CATALOG)]
DTypeOpt = Annotated[str, opt("--dtype", metavar="DTYPE", help="Compute dtype whose peak FLOP/s is used "
                              "(fp64, fp32, tf32, bf16, fp16, fp8, int8, fp4).")]
Sparse = Annotated[bool, opt("--sparse", help="Use the 2:4-sparsity peak (2x dense on NVIDIA); MFU is "
                             "normally quoted against the dense peak.")]
Mfu = Annotated[float, opt("--mfu", parser=number("MFU"), metavar="F",
                           help="Model FLOPs utilization, in (0, 1]: achieved / peak FLOP/s.")]
SpecsDir = Annotated[list[str] | None, typer.Option("--specs-dir", metavar="DIR", help="Extra specs directory "
                     "with hardware_specs/ and/or model_specs/ inside; overrides built-ins of the same name. "
                     "Also read from $NAPKIN_SPECS_DIR (':'-separated).", rich_help_panel=CATALOG)]
