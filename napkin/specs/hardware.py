"""The accelerator profile: one YAML file in hardware_specs/ validates into one HardwareSpec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from napkin.errors import InputError
from napkin.specs.dtypes import DType, parse_dtype


def _not_bool(v: object) -> object:
    """A YAML `true` is not 1 W: numbers stay lax (the shipped specs write 989.5e12, which YAML reads as a string)
    but booleans are refused."""
    if isinstance(v, bool):
        raise PydanticCustomError("bool_not_number", f"expected a number, got {str(v).lower()} (a boolean)")
    return v


def _at_most(limit: float, why: str) -> AfterValidator:
    def check(v: float) -> float:
        if v > limit:
            shown = (f"{v:g}" if isinstance(v, float) else f"{v:,}" if v.bit_length() < 64
                     else f"an integer of ~{int(v.bit_length() * 0.30103) + 1} digits")
            raise PydanticCustomError("implausible", f"{shown} is implausibly large (at most {limit:g}: {why}); is it "
                                      "a typo?")
        return v

    return AfterValidator(check)


# 1e21 (a zetta-) is 100,000x the largest figure of the shipped specs (B200: 9e15 fp4 FLOP/s); a bound keeps every
# product of figures finite.
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False), BeforeValidator(_not_bool),
                           _at_most(1e21, "no datasheet figure comes within 100,000x of it")]
PositiveInt = Annotated[int, Field(gt=0, strict=True),  # strict: a YAML `true` or `8.5` is not a count
                        _at_most(1e6, "a count of SMs or of GPUs in one scale-up domain; NVL576 has 576")]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), BeforeValidator(_not_bool)]


class HardwareSpec(BaseModel):
    """Datasheet figures of one accelerator, per GPU. Peaks are dense; sparse = dense x factor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, description="catalog key, lower-case, e.g. h100-sxm")
    display_name: str = Field(description="vendor's product name")
    vendor: Literal["nvidia", "amd", "google", "intel", "other"]
    architecture: str | None = Field(default=None, description="e.g. Hopper, CDNA3")
    aliases: list[str] = Field(default=[], description="other names, incl. torch.cuda.get_device_name()")
    peak_flops_per_s: dict[DType, PositiveFinite] = Field(
        description="dense peak FLOP/s (INT8/INT4: OP/s) per dtype, without sparsity"
    )
    sparsity_factor: Annotated[float, Field(ge=1, allow_inf_nan=False), BeforeValidator(_not_bool),
                               _at_most(16, "2:4 structured sparsity doubles the peak")] = Field(
        default=1.0, description="speed-up with 2:4 structured sparsity on sparse_dtypes (NVIDIA: 2)"
    )
    sparse_dtypes: list[DType] = Field(default=[], description="dtypes the sparsity factor applies to")
    memory_bytes: PositiveFinite = Field(description="nominal memory, decimal bytes (H100: 80e9)")
    memory_type: str | None = None
    memory_nvidia_smi_mib: PositiveFinite | None = Field(default=None, description="total memory nvidia-smi reports")
    memory_bandwidth_bytes_per_s: PositiveFinite
    interconnect: str | None = Field(default=None, description="scale-up link, e.g. NVLink4")
    interconnect_bandwidth_bytes_per_s: PositiveFinite | None = Field(
        default=None, description="scale-up link bandwidth per GPU, total of both directions"
    )
    host_link_bandwidth_bytes_per_s: PositiveFinite | None = Field(
        default=None, description="GPU <-> host CPU link bandwidth, PER DIRECTION (PCIe4 x16: 32e9; GB200: NVLink-C2C)"
    )
    sm_count: PositiveInt | None = Field(
        default=None, description="streaming multiprocessors per GPU (AMD: compute units), e.g. H100 SXM 132"
    )
    matmul_efficiency: Fraction | None = Field(
        default=None,
        description="best measured fraction of the dense bf16 (no bf16: fp16) peak a large GEMM reaches "
                    "(maximum achievable matmul FLOPS / peak); None where no measurement is published",
    )
    node_gpus: PositiveInt | None = Field(
        default=None, description="GPUs in one scale-up domain of the reference system (DGX/HGX: 8; GB200 NVL72: 72)"
    )
    scale_up_bandwidth_bytes_per_s: PositiveFinite | None = Field(
        default=None, description="per GPU, PER DIRECTION, inside the scale-up domain (H100 NVLink4: 450e9; "
                                  "PCIe cards: their PCIe link)"
    )
    scale_out_bandwidth_bytes_per_s: PositiveFinite | None = Field(
        default=None, description="per GPU, PER DIRECTION, of the reference system's network between scale-up "
                                  "domains (DGX H100: 400 Gb/s NDR per GPU = 50e9)"
    )
    tdp_w: PositiveFinite | None = Field(
        default=None, description="board power (TDP), W; None where the vendor publishes none (Google TPUs)"
    )
    notes: list[str] = []
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

    @model_validator(mode="after")
    def _one_direction_within_total(self) -> HardwareSpec:
        up, total = self.scale_up_bandwidth_bytes_per_s, self.interconnect_bandwidth_bytes_per_s
        if up is not None and total is not None and up > total:
            raise ValueError(
                f"scale_up_bandwidth_bytes_per_s ({up:g}) is per direction and cannot exceed "
                f"interconnect_bandwidth_bytes_per_s ({total:g}, both directions); for NVLink it is half the total"
            )
        return self

    def runs(self, dtype: DType) -> bool:
        """Whether the part runs matmuls in ``dtype``: it has a peak for it, or it publishes no peaks at all (the
        A10G), where napkin cannot tell and does not refuse."""
        return not self.peak_flops_per_s or dtype in self.peak_flops_per_s

    @property
    def matmul_dtype(self) -> DType:
        """The dtype matmul_efficiency is measured in: bf16, or fp16 where the part has no bf16 (V100)."""
        return DType.bf16 if DType.bf16 in self.peak_flops_per_s else DType.fp16

    @property
    def achievable_matmul_flops_per_s(self) -> float | None:
        """Best measured dense GEMM throughput in matmul_dtype, or None where no measurement is published."""
        if self.matmul_efficiency is None or self.matmul_dtype not in self.peak_flops_per_s:
            return None
        # MAMF = efficiency x dense peak (Bekman, ml-engineering, compute/accelerator "Maximum Achievable FLOPS")
        return self.matmul_efficiency * self.peak_flops_per_s[self.matmul_dtype]

    def peak(self, dtype: str | DType, sparse: bool = False) -> float:
        """Peak FLOP/s for a dtype; dense unless ``sparse`` (MFU is always against dense)."""
        d = parse_dtype(dtype)
        if d not in self.peak_flops_per_s:
            if not self.peak_flops_per_s:
                mem, bw = self.memory_bytes / 1e9, self.memory_bandwidth_bytes_per_s / 1e9
                raise InputError(f"{self.name} has no published peak FLOP/s (its vendor gives none); describe it with "
                                 f"a peak you measured (napkin bench-matmul) or assume: --gpu custom:peak=RATE,"
                                 f"memory={mem:g}GB,bw={bw:g}GB/s")
            have = ", ".join(k.value for k in self.peak_flops_per_s)
            raise InputError(f"{self.name} has no {d.value} peak on its datasheet; it has: {have}")
        dense = self.peak_flops_per_s[d]
        if not sparse:
            return dense
        if d not in self.sparse_dtypes:
            have = ", ".join(k.value for k in self.sparse_dtypes) or "none"
            raise InputError(f"{self.name} has no sparse {d.value} figure; sparse dtypes: {have}")
        return dense * self.sparsity_factor
