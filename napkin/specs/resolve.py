"""What the Python API takes for a model or a GPU: a spec object, or a name (catalog name, alias, config.json).

Every public function that takes a model or a GPU resolves it here, so `napkin.memory_ledger("llama3-8b",
"h100", seq=4096)` works as `memory_ledger(spec, hw, ...)` does, and a wrong type is a TypeError naming the
argument rather than an AttributeError deep inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: the spec modules load on first use (start-up)
    from napkin.specs.hardware import HardwareSpec
    from napkin.specs.model import LinearSpec, TransformerSpec


def as_model(value: Any, what: str = "model") -> TransformerSpec | LinearSpec:
    """A TransformerSpec/LinearSpec from itself or its name (catalog name, alias, config.json or YAML path)."""
    from napkin.specs.model import LinearSpec, TransformerSpec

    if isinstance(value, (TransformerSpec, LinearSpec)):
        return value
    if isinstance(value, str):
        from napkin.specs.catalog import get_model

        return get_model(value)
    if hasattr(value, "__fspath__"):
        from napkin.specs.catalog import get_model

        return get_model(str(value))
    raise TypeError(f"{what} must be a model name (e.g. 'llama3-8b'), a config.json path or a TransformerSpec, "
                    f"not {type(value).__name__}")


def as_hardware(value: Any, what: str = "hardware") -> HardwareSpec:
    """A HardwareSpec from itself or its name ('h100', an alias, or torch's device name)."""
    from napkin.specs.hardware import HardwareSpec

    if isinstance(value, HardwareSpec):
        return value
    if isinstance(value, str):
        from napkin.specs.catalog import get_hardware

        return get_hardware(value)
    raise TypeError(f"{what} must be a GPU name (e.g. 'h100') or a HardwareSpec, not {type(value).__name__}")


def as_optional_model(value: Any, what: str = "model") -> TransformerSpec | LinearSpec | None:
    return None if value is None else as_model(value, what)
