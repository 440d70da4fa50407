"""An answer's interval: the spread of a training stack's held-back errors in the question's calibrated regime
(napkin/specs/stack.py); shared by step-time, plan and train-time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorBar(BaseModel):
    """The step's interval: the 10th–90th percentile of the stack's held-back relative errors in this regime."""

    model_config = ConfigDict(frozen=True)

    step_time_s: tuple[float, float] = Field(description="(low, high) step time, seconds")
    mfu: tuple[float, float] = Field(description="(low, high) MFU")
    regime: str = Field(description="the calibrated regime quoted (architecture, precision, sequence band)")
    calibrated: bool = Field(description="False: no calibrated regime covers the question; the stack's widest "
                             "interval is quoted")
    rows: int = Field(description="held-back rows behind the percentiles")
