"""`napkin bench-matmul`'s one entry point: which measurement the arguments ask for (one GEMM, a sweep, an M/N/K
grid, or a model's own GEMMs), and its result.

Its own module because it sits above both napkin.bench.matmul and napkin.bench.model_gemms (which imports matmul's
harness): kept in matmul.py it made the two import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napkin.bench.matmul import Dim, Progress, bench_matmul, sweep_matmul
from napkin.bench.timer import DEFAULT_WARMUP_S
from napkin.errors import InputError
from napkin.specs.dtypes import DType


def matmul_question(*, size: int | None = None, m: int | None = None, n: int | None = None, k: int | None = None,
                    sweep: bool = False, sizes: Sequence[int] | None = None,
                    m_range: tuple[int, int, int] | None = None, n_range: tuple[int, int, int] | None = None,
                    k_range: tuple[int, int, int] | None = None, plot: bool = False,
                    shapes_from: Any = None, batch: int | None = None, seq: int | None = None,
                    progress: Progress | None = None, dtype: str | DType | None = None, device: str = "auto",
                    warmup_s: float = DEFAULT_WARMUP_S, iters: int | None = None, gpu: str | None = None,
                    peak: float | None = None, specs_dirs: Sequence[str | Path] | None = None,
                    fast_accum: bool = False, device_warmup_s: float | None = None) -> Any:
    """`napkin bench-matmul`'s one entry point: which measurement the arguments ask for, and its result.

    ``shapes_from`` (a model spec): its own GEMMs at ``batch`` × ``seq`` tokens (bench_model_gemms); any of
    ``m_range``/``n_range``/``k_range``: the rectangular grid (mamf-finder's, sweep_matmul); ``sweep``, ``sizes``
    or ``plot`` (a sweep is what is plotted): square sizes (sweep_matmul); else one GEMM, square ``size`` or
    ``m``×``n``×``k`` (bench_matmul). torch is imported when the measurement starts, not before.
    """
    ranges = {"m_range": m_range, "n_range": n_range, "k_range": k_range}
    given_ranges = [name for name, v in ranges.items() if v is not None]
    if shapes_from is not None and (sweep or sizes or plot or size or m or n or k or given_ranges):
        raise InputError("`shapes_from` times the model's own shapes; drop `sweep`/`sizes`/`plot`/`size`/`m`/`n`/`k`/"
                         "`m_range`/`n_range`/`k_range`")
    if shapes_from is None and (batch is not None or seq is not None):
        given = " and ".join(f for f, v in (("`batch`", batch), ("`seq`", seq)) if v is not None)
        raise InputError(f"{given} size the GEMMs of a model: add `shapes_from` NAME (e.g. `shapes_from` llama3-8b), "
                         "or give the GEMM itself with `m`/`n`/`k`")
    if sizes and given_ranges:
        raise InputError(f"`sizes` sweeps squares; {'/'.join(f'`{r}`' for r in given_ranges)} sweep M, N, K: give "
                         "one or the other")
    sweep = bool(sweep or sizes or plot)
    if sweep and not given_ranges and (size or m or n or k):
        raise InputError("`sweep` times square sizes; give `sizes` instead of `size`/`m`/`n`/`k` (or sweep M, N, K "
                         "with `m_range`/`n_range`/`k_range`)")
    common: dict[str, Any] = {"dtype": dtype, "device": device, "warmup_s": warmup_s, "iters": iters, "gpu": gpu,
                              "peak": peak, "specs_dirs": specs_dirs, "fast_accum": fast_accum,
                              "device_warmup_s": device_warmup_s}
    if shapes_from is not None:
        from napkin.bench.model_gemms import bench_model_gemms

        return bench_model_gemms(shapes_from, batch=1 if batch is None else batch, seq=seq, progress=progress,
                                 **common)
    if given_ranges:
        from napkin.bench.device import range_values

        def dim(name: str, r: tuple[int, int, int] | None, fixed: int | None) -> Dim:
            return range_values(*r, what=f"`{name}`") if r is not None else fixed

        return sweep_matmul(None, m=dim("m_range", m_range, m), n=dim("n_range", n_range, n),
                            k=dim("k_range", k_range, k), size=size, progress=progress, **common)
    if not sweep:
        return bench_matmul(m, n, k, size=size, **common)
    return sweep_matmul(sizes, progress=progress, **common)
