"""The measured mode: time real matmuls and all-reduces on this device, and say how close they come to the peak.

torch is an optional extra (``pip install 'napkin[bench]'``) imported only when a measurement starts; the
result models and ``measured_mfu`` (reading a saved measurement) never import it::

    from napkin.bench import bench_matmul, GemmBench
    r = bench_matmul(size=8192, dtype="bf16")          # MatmulBenchResult: .timing, .mfu, .steps, .environment
    GemmBench("bf16").time((4096, 14336, 4096))        # GemmTiming of one shape, same method
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "GemmBench": "napkin.bench.matmul",
    "bench_matmul": "napkin.bench.matmul",
    "sweep_matmul": "napkin.bench.matmul",
    "sweep_sizes": "napkin.bench.matmul",
    "time_gemm": "napkin.bench.matmul",
    "time_calls": "napkin.bench.timer",
    "bench_allreduce": "napkin.bench.allreduce",
    "measured_mfu": "napkin.bench.saved",
    "load_measurement": "napkin.bench.saved",
    "save_result": "napkin.bench.saved",
    "MeasuredMfu": "napkin.bench.saved",
    "GemmShape": "napkin.bench.models",
    "GemmTiming": "napkin.bench.models",
    "TimingStats": "napkin.bench.models",
    "BenchEnvironment": "napkin.bench.models",
    "MatmulBenchResult": "napkin.bench.models",
    "MatmulSweepResult": "napkin.bench.models",
    "AllreduceBenchResult": "napkin.bench.models",
    "bench_model_gemms": "napkin.bench.model_gemms",
    "ModelGemmsResult": "napkin.bench.model_gemms",
    "validate_step": "napkin.bench.validate",
    "ValidateResult": "napkin.bench.validate",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'napkin.bench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return __all__
