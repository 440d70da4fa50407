"""The accelerator profile: one YAML file in hardware_specs/ validates into one HardwareSpec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from napkin.errors import InputError
from napkin.specs.dtypes import DType, parse_dtype

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class HardwareSpec(BaseModel):
    """Datasheet figures of one accelerator, per GPU. Peaks are dense; sparse = dense x factor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="catalog key, lower-case, e.g. h100-sxm")
    display_name: str = Field(description="vendor's product name")
    vendor: Literal["nvidia", "amd", "google", "intel", "other"]
    architecture: str | None = Field(default=None, description="e.g. Hopper, CDNA3")
    aliases: list[str] = Field(default_factory=list, description="other names, incl. torch.cuda.get_device_name()")
    peak_flops_per_s: dict[DType, PositiveFinite] = Field(
        description="dense peak FLOP/s (INT8/INT4: OP/s) per dtype, without sparsity"
    )
    sparsity_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = Field(
        default=1.0, description="speed-up with 2:4 structured sparsity on sparse_dtypes (NVIDIA: 2)"
    )
    sparse_dtypes: list[DType] = Field(default_factory=list, description="dtypes the sparsity factor applies to")
    memory_bytes: PositiveFinite = Field(description="nominal memory, decimal bytes (H100: 80e9)")
    memory_type: str | None = None
    memory_nvidia_smi_mib: PositiveFinite | None = Field(default=None, description="total memory nvidia-smi reports")
    memory_bandwidth_bytes_per_s: PositiveFinite
    interconnect: str | None = Field(default=None, description="scale-up link, e.g. NVLink4")
    interconnect_bandwidth_bytes_per_s: PositiveFinite | None = Field(
        default=None, description="scale-up link bandwidth per GPU, total of both directions"
    )
    tdp_w: PositiveFinite = Field(description="board power (TDP), W")
    notes: list[str] = Field(default_factory=list)
    sources: list[str] = Field(min_length=1, description="datasheet or product page for every figure")

    @field_validator("name")
    @classmethod
    def _lower(cls, v: str) -> str:
        if v != v.lower() or " " in v:
            raise ValueError("must be lower-case with no spaces, e.g. h100-sxm")
        return v

    @model_validator(mode="after")
    def _sparse_rows_exist(self) -> HardwareSpec:
        missing = [d.value for d in self.sparse_dtypes if d not in self.peak_flops_per_s]
        if missing:
            raise ValueError(f"sparse_dtypes {missing} have no peak_flops_per_s entry")
        if self.sparse_dtypes and self.sparsity_factor == 1:
            raise ValueError("sparse_dtypes given but sparsity_factor is 1")
        return self

    def peak(self, dtype: str | DType, sparse: bool = False) -> float:
        """Peak FLOP/s for a dtype; dense unless ``sparse`` (MFU is always against dense)."""
        d = parse_dtype(dtype)
        if d not in self.peak_flops_per_s:
            have = ", ".join(k.value for k in self.peak_flops_per_s)
            raise InputError(f"{self.name} has no {d.value} peak on its datasheet; it has: {have}")
        dense = self.peak_flops_per_s[d]
        if not sparse:
            return dense
        if d not in self.sparse_dtypes:
            have = ", ".join(k.value for k in self.sparse_dtypes) or "none"
            raise InputError(f"{self.name} has no sparse {d.value} figure; sparse dtypes: {have}")
        return dense * self.sparsity_factor
