"""An answer's interval: the spread of a training stack's held-back errors in the question's calibrated regime
(napkin/specs/stack.py); shared by step-time, plan and train-time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from napkin.specs.dtypes import DType
from napkin.specs.stack import StackSpec


class ErrorBar(BaseModel):
    """The step's interval: the 10th–90th percentile of the stack's held-back relative errors in this regime."""

    model_config = ConfigDict(frozen=True)

    step_time_s: tuple[float, float] = Field(description="(low, high) step time, seconds")
    mfu: tuple[float, float] = Field(description="(low, high) MFU")
    regime: str = Field(description="the calibrated regime quoted (architecture, precision, sequence band)")
    calibrated: bool = Field(description="False: no calibrated regime covers the question; the stack's widest "
                             "interval is quoted")
    rows: int = Field(description="held-back rows behind the percentiles")


def precision_class(compute: DType) -> str:
    """A precision's calibration class: fp8 matmuls, or 16-bit (bf16 / fp16) ones."""
    return "fp8" if compute == DType.fp8 else "16-bit"


# The calibration runs (benchmarks/data/validation: vTrain's Megatron GPT, llm-foundry's MPT) have one kind of layer:
# full causal attention and a dense MLP. An answer for any other kind (MoE, windows, MLA, Mamba) is uncalibrated.
CALIBRATED_KINDS = frozenset({"attention+dense"})


def error_bar(stk: StackSpec, architecture: str | None, compute: DType, seq: int, step_s: float,
              mfu: float, kinds_calibrated: bool = True) -> ErrorBar | None:
    """The interval a step of ``step_s`` gets from the stack's calibration: measured = predicted / (1 + e) with e
    between the 10th and 90th percentile of the held-back errors of the regime covering the question; a question in
    no regime gets the stack's widest interval, flagged uncalibrated. None where the stack has no intervals."""
    pc = precision_class(compute)
    iv = stk.interval(architecture, pc, seq) if kinds_calibrated else None  # type: ignore[arg-type]
    calibrated = iv is not None
    if iv is None:
        iv = stk.widest()
        if iv is None:
            return None
        covered = sorted({f"{x.architecture} {x.precision} s {x.seq_min}–{x.seq_max}" for x in stk.intervals})
        regime = (f"{architecture or 'unknown architecture'} {pc} s {seq}"
                  + ("" if kinds_calibrated else ", layer kinds the runs lacked")
                  + f"; calibrated: {', '.join(covered)}")
    else:
        regime = f"{iv.architecture} {iv.precision} s {iv.seq_min}–{iv.seq_max}"
    lo, hi = step_s / (1 + iv.p90), step_s / (1 + iv.p10)
    return ErrorBar(step_time_s=(lo, hi), mfu=(mfu * (1 + iv.p10), mfu * (1 + iv.p90)), regime=regime,
                    calibrated=calibrated, rows=iv.rows)
