"""napkin: resource accounting for training and serving large language models.

Every CLI command is a typed function here, returning a pydantic result that carries its
derivation in ``.steps``::

    import napkin
    h100 = napkin.get_hardware("h100")
    napkin.train_time(h100, gpus=1024, params=70e9, tokens=15e12).days   # 143.93

Names load lazily, so ``import napkin`` stays cheap and never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from napkin._version import __version__

_EXPORTS: dict[str, str] = {
    "train_time": "napkin.accounting.training",
    "budget": "napkin.accounting.training",
    "TrainTimeResult": "napkin.accounting.training",
    "BudgetResult": "napkin.accounting.training",
    "step_time": "napkin.accounting.step_time",
    "StepTimeResult": "napkin.accounting.step_time",
    "StepConstants": "napkin.accounting.kernels",
    "train_time_at_layout": "napkin.accounting.step_time",
    "Layout": "napkin.accounting.layout",
    "layer_plan": "napkin.accounting.layers",
    "max_model": "napkin.accounting.model_state",
    "MaxModelResult": "napkin.accounting.model_state",
    "PRECISIONS": "napkin.accounting.model_state",
    "OPTIMIZERS": "napkin.accounting.model_state",
    "memory_ledger": "napkin.accounting.memory",
    "TrainingSetup": "napkin.accounting.memory",
    "FinetuneSetup": "napkin.accounting.finetune",
    "memory_question": "napkin.accounting.memory_solvers",
    "max_model_question": "napkin.accounting.memory_solvers",
    "MemoryResult": "napkin.accounting.memory",
    "max_micro_batch": "napkin.accounting.memory_solvers",
    "min_gpus": "napkin.accounting.memory_solvers",
    "compare_gpus": "napkin.accounting.memory_solvers",
    "max_model_fit": "napkin.accounting.memory_solvers",
    "count_params": "napkin.accounting.params",
    "ParamCount": "napkin.accounting.params",
    "count_flops": "napkin.accounting.flops",
    "training_flops": "napkin.accounting.flops",
    "forward_flops_per_token": "napkin.accounting.flops",
    "FlopCount": "napkin.accounting.flops",
    "mfu": "napkin.accounting.mfu",
    "MfuResult": "napkin.accounting.mfu",
    "get_model": "napkin.specs.catalog",
    "model_catalog": "napkin.specs.catalog",
    "TransformerSpec": "napkin.specs.model",
    "LinearSpec": "napkin.specs.model",
    "get_hardware": "napkin.specs.catalog",
    "hardware_catalog": "napkin.specs.catalog",
    "HardwareSpec": "napkin.specs.hardware",
    "DType": "napkin.specs.dtypes",
    "Step": "napkin.results",
    "Result": "napkin.results",
    "NapkinError": "napkin.errors",
    "InputError": "napkin.errors",
    "SpecError": "napkin.errors",
    "UnknownNameError": "napkin.errors",
    "parse_count": "napkin.units",
    "parse_bytes": "napkin.units",
    "inference": "napkin.accounting.inference",
    "ServingSetup": "napkin.accounting.inference",
    "InferenceResult": "napkin.accounting.inference",
    "kv_cache": "napkin.accounting.kv_cache",
    "KVCacheResult": "napkin.accounting.kv_cache",
    "roofline": "napkin.accounting.roofline",
    "RooflineResult": "napkin.accounting.roofline",
    # measured mode (napkin.bench): torch is imported when a measurement starts, never by these names
    "bench_matmul": "napkin.bench.matmul",
    "matmul_question": "napkin.bench.matmul_question",
    "train_time_question": "napkin.bench.train_question",
    "sweep_matmul": "napkin.bench.matmul",
    "time_gemm": "napkin.bench.matmul",
    "GemmBench": "napkin.bench.matmul",
    "bench_model_gemms": "napkin.bench.model_gemms",
    "bench_allreduce": "napkin.bench.allreduce",
    "measured_mfu": "napkin.bench.saved",
    "load_measurement": "napkin.bench.saved",
    "validate_step": "napkin.bench.validate",
    "MatmulBenchResult": "napkin.bench.models",
    "MatmulSweepResult": "napkin.bench.models",
    "AllreduceBenchResult": "napkin.bench.models",
    "ModelGemmsResult": "napkin.bench.model_gemms",
    "ValidateResult": "napkin.bench.validate",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'napkin' has no attribute '{name}'")


def __dir__() -> list[str]:
    return __all__
