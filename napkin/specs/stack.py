"""The training stack as data: one YAML file in stack_specs/ validates into one StackSpec.

A stack is the software a step runs on (Megatron-Core with Transformer Engine, PyTorch FSDP as llm-foundry and
torchtitan run it): which attention kernel, how far its GEMMs get towards the GPU's measured matmul ceiling, the
dtype it reduces gradients in, what it costs per layer on the host, how its gathers and reductions overlap. Each
value of a stack names its source (a paper, a document, a measured table) or says ``fit on <rows>``; the values are
the step-time model's constants (``napkin.accounting.kernels.StepConstants``), checked against its fields here.

A stack also carries its calibration's error bars: per regime (GPU architecture, precision class, sequence band), the
10th and 90th percentiles of the relative error of the predicted step on the rows held back from its fit
(benchmarks/step_time_accuracy.py prints them). A step-time answer quotes the interval of its regime; a question in
no calibrated regime gets the stack's widest interval and a one-line warning.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from napkin.specs.dtypes import DType
from napkin.validation import Fraction, NonNegative, Positive, PositiveInt

SourceText = Annotated[str, Field(min_length=3, description="a citation (paper §, document, table) or 'fit on <rows>'")]
PrecisionClass = Literal["16-bit", "fp8"]


class StepConstants(BaseModel):
    """The global constants of the step-time model: one set for every model and layout, each with a reason.

    Defaults were fitted once on the even-numbered rows of the vTrain A100 measurements (see
    docs/step-time.md and benchmarks/step_time_accuracy.py); ``--calibration`` replaces the GEMM and
    bus efficiencies with what napkin measured on the user's own GPUs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    gemm_efficiency: Fraction | None = Field(default=None, description="best fraction of dense peak a large GEMM "
                                             "reaches; None = the hardware spec's matmul_efficiency (MAMF)")
    tile_m: PositiveInt = Field(default=128, description="GEMM output tile rows (cuBLAS's common 128×128 tiles)")
    tile_n: PositiveInt = Field(default=128, description="GEMM output tile columns")
    # Fitted once on the even-numbered rows of the vTrain A100 file (benchmarks/step_time_accuracy.py --fit); each
    # lands where a first-principles figure says it should, which is the check that the fit is not curve-fitting:
    attention_efficiency: Fraction = Field(default=0.49, description="fraction of dense peak the attention matmuls "
                                           "reach where no published kernel curve applies (unfused attention, "
                                           "attention_kernel 'fitted'; fit 0.49 on vTrain)")
    memory_efficiency: Fraction = Field(default=0.82, description="fraction of HBM bandwidth memory-bound kernels "
                                        "reach (fit 0.82; STREAM-like copies reach about 0.8–0.9)")
    bus_efficiency: Fraction = Field(default=0.62, description="collective bus bandwidth / scale-up link per "
                                     "direction (fit 0.62; vTrain configures 150 of A100's 300 GB/s)")
    network_efficiency: Fraction = Field(default=1.0, description="bus bandwidth / scale-out link per GPU (fit: 1, "
                                         "the limit of its range)")
    intra_latency_s: NonNegative = Field(default=10e-6, description="fixed cost of one collective inside a node "
                                         "(fit 9.8 µs; NCCL's small-message all-reduce on NVLink: about 10 µs)")
    inter_latency_s: NonNegative = Field(default=30e-6, description="fixed cost of one collective across nodes "
                                         "(not fitted: IB round trips of a few µs per ring step)")
    kernel_s: NonNegative = Field(default=16e-6, description="fixed GPU cost of one kernel: launch gap and tail "
                                  "(fit 16 µs)")
    host_kernel_s: NonNegative = Field(default=58e-6, description="host time to issue one kernel; a layer is never "
                                       "faster than its kernels × this (launch-bound floor; fit 58 µs, eager PyTorch "
                                       "Megatron-LM; CUDA graphs cut it)")
    # What a training stack (napkin/specs/stack.py, stack_specs/*.yaml) sets beyond the constants above:
    gemm_mamf_fraction: dict[str, Fraction] = Field(default_factory=dict, description="fraction of the GPU's "
                                                    "measured matmul ceiling the stack's GEMMs reach in a model, by "
                                                    "GPU architecture ('default' for the rest; missing: 1)")
    fp8_gemm_efficiency: Fraction = Field(default=0.71, description="fraction of the dense FP8 peak a large FP8 GEMM "
                                          "reaches (measured FP8 MAMF on H100 about 0.71; issue 23)")
    fp8_cast_bytes: NonNegative = Field(default=4.0, description="HBM bytes per element of each FP8 GEMM input "
                                        "(read bf16 2, write fp8 1, write its fp8 transpose 1; the amax fused)")
    fp8_lm_head_bf16: bool = Field(default=True, description="the LM head stays in BF16 under FP8 (Transformer "
                                   "Engine recipes keep the output layer in higher precision)")
    attention_kernel: Literal["fitted", "fa2", "fa3", "cudnn"] = Field(
        default="fitted", description="fused attention kernel whose published throughput curve prices attention "
        "(attention_kernels.py); 'fitted': the flat attention_efficiency")
    attention_scale: Positive = Field(default=1.0, description="in-model attention throughput / the published "
                                      "kernel benchmark's (fit per stack)")
    layer_overhead_s: NonNegative = Field(default=0.0, description="host time per layer per pass outside the "
                                          "kernels (FSDP pre/post hooks, autograd, Python; fit per stack)")
    comm_overlap_tax: NonNegative = Field(default=0.0, description="share of an overlapped collective's time the "
                                          "compute it hides behind still loses (SMs and HBM shared with NCCL; fit)")
    grad_reduce_dtype: dict[str, DType] = Field(default_factory=dict, description="dtype the stack reduces "
                                                "gradients in, by precision policy (missing: the policy's grads)")
    overlap_grad_reduce: bool = Field(default=False, description="the stack overlaps the DP gradient reduction with "
                                      "the backward by default (FSDP: per layer; Megatron: --overlap-grad-reduce)")


class Sourced(BaseModel):
    """One constant of a stack: its value and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float | bool | str | dict[str, float | str]
    source: SourceText


class Interval(BaseModel):
    """The spread of held-back relative errors (predicted / measured − 1) in one calibrated regime."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str = Field(description="GPU architecture of the rows (hardware spec's architecture: Ampere, Hopper)")
    precision: PrecisionClass = Field(description="16-bit (bf16/fp16 matmuls) or fp8")
    seq_min: int = Field(gt=0, strict=True, description="shortest sequence of the regime's rows")
    seq_max: int = Field(gt=0, strict=True, description="longest sequence of the regime's rows")
    p10: float = Field(ge=-1, le=10, description="10th percentile of (predicted − measured) / measured")
    p90: float = Field(ge=-1, le=10, description="90th percentile")
    rows: int = Field(gt=0, strict=True, description="held-back rows the percentiles were taken over")
    source: SourceText

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.p10 > self.p90:
            raise ValueError(f"p10 {self.p10} is above p90 {self.p90}")
        if self.seq_min > self.seq_max:
            raise ValueError(f"seq_min {self.seq_min} is above seq_max {self.seq_max}")
        return self

    def covers(self, architecture: str | None, precision: PrecisionClass, seq: int) -> bool:
        return architecture == self.architecture and precision == self.precision and self.seq_min <= seq <= self.seq_max


class StackSpec(BaseModel):
    """A training stack: the step-time model's constants for it, each with its source, and its error bars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="catalog key, lower-case, e.g. megatron-te")
    display_name: str
    aliases: list[str] = Field(default=[])
    description: str
    constants: dict[str, Sourced] = Field(description="StepConstants fields: value and source")
    intervals: list[Interval] = Field(default=[], description="held-back error percentiles per calibrated regime")
    sources: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _constants_are_step_constants(self) -> StackSpec:
        from pydantic import ValidationError

        unknown = sorted(set(self.constants) - set(StepConstants.model_fields))
        if unknown:
            raise ValueError(f"unknown constant(s) {', '.join(unknown)}; a stack sets fields of StepConstants: "
                             f"{', '.join(StepConstants.model_fields)}")
        try:
            StepConstants.model_validate(self.values())
        except ValidationError as e:
            first = e.errors()[0]
            raise ValueError(f"constants.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        return self

    def values(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.constants.items()}

    def step_constants(self) -> Any:
        """This stack's constants as a StepConstants (fields it does not set keep StepConstants' defaults)."""
        return StepConstants.model_validate(self.values())

    def interval(self, architecture: str | None, precision: PrecisionClass, seq: int) -> Interval | None:
        """The calibrated regime that covers a question, or None."""
        return next((x for x in self.intervals if x.covers(architecture, precision, seq)), None)

    def widest(self) -> Interval | None:
        """The widest interval of any regime: what a question outside them all is quoted."""
        return max(self.intervals, key=lambda x: x.p90 - x.p10, default=None)
