"""Spec models (pydantic) and their catalogs."""

from napkin.specs.catalog import get_hardware, hardware_catalog
from napkin.specs.dtypes import DType, bytes_per_element, parse_dtype
from napkin.specs.hardware import HardwareSpec

__all__ = ["DType", "HardwareSpec", "bytes_per_element", "get_hardware", "hardware_catalog", "parse_dtype"]
