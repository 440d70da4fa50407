"""Input validation for the core API: pydantic input models, errors turned into one-line InputErrors."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from napkin.errors import InputError

M = TypeVar("M", bound=BaseModel)
MAX_EXACT_INT = 2**53  # beyond it not every whole number is a float: 2^53 + 1 would silently round


def _exact(v: int) -> int:
    if v > MAX_EXACT_INT:
        raise PydanticCustomError("too_large", f"must be at most 2^53 = {MAX_EXACT_INT:,} (beyond it a whole number is "
                                  "not exact as a float)")
    return v

# Reusable constrained types. NaN and infinities are refused everywhere.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0), AfterValidator(_exact)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, description="in (0, 1]")]
AtLeastOne = Annotated[float, Field(ge=1, allow_inf_nan=False)]
# Activation recomputation (Korthikanti et al. 2022 §4): shared by FLOP, MFU, training and memory inputs.
Recompute = Literal["none", "selective", "full"]


class Inputs(BaseModel):
    """Base of the input models: strict about unknown fields, frozen, echoed in results."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def shown(value: float) -> str:
    """A number as short as it prints exactly: 0.5, 1e+20, and 1.0000001 (where :g would say 1)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _describe(e: ErrorDetails) -> str:
    """One line naming the argument as `field` (the CLI shows it as its flag: napkin.errors.for_cli)."""
    name = ".".join(str(p) for p in e["loc"]) or "input"
    field = f"`{name}`" if name.replace("_", "").isalnum() and "." not in name else name
    ctx = e.get("ctx") or {}
    value = e.get("input")
    if isinstance(value, float):
        value = shown(value)
    kind = e["type"]
    if kind == "too_large":
        return f"{field} {e['msg']}, got {value}"
    if kind == "greater_than" and name in ("mfu", "hfu"):
        return f"{field} must be in (0, 1] (a fraction of peak FLOP/s), got {value}"
    if kind == "greater_than":
        return f"{field} must be greater than {ctx.get('gt'):g}, got {value}"
    if kind == "greater_than_equal":
        return f"{field} must be at least {ctx.get('ge'):g}, got {value}"
    if kind == "less_than_equal" and name in ("mfu", "hfu"):
        return f"{field} must be in (0, 1] (a fraction of peak FLOP/s), got {value}"
    if kind == "less_than_equal":
        return f"{field} must be at most {ctx.get('le'):g}, got {value}"
    if kind == "finite_number":
        return f"{field} must be a finite number, got {value}"
    if kind == "extra_forbidden":
        return f"unknown argument '{field}'"
    return f"{field}: {e['msg'].lower()} (got {value!r})"


class Setup(Inputs):
    """Base of the setup objects a caller builds (TrainingSetup, FinetuneSetup, ServingSetup): a bad value is the
    same one-line InputError as everywhere else, raised where the object is built."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise InputError(_describe(err.errors()[0])) from None


def validated(model: type[M], /, **values: Any) -> M:
    """Build an input model; the first problem becomes an InputError with a one-line message."""
    try:
        return model(**values)
    except ValidationError as err:
        raise InputError(_describe(err.errors()[0])) from None
