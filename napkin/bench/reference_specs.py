"""torch-free helpers of the reference models (napkin.bench.reference re-exports them).

- ``component_of(name)`` / ``param_breakdown(model)``: count_params' component key of a reference-model
  parameter name, and numel() summed per key (the model only needs ``named_parameters()``).
- ``tiny_spec(**overrides)``: a small valid TransformerSpec for CPU tests and ``napkin validate``.
"""

from __future__ import annotations

from typing import Any

from napkin.specs.model import TransformerSpec


def component_of(name: str) -> str:
    """count_params' component key for a parameter name of the reference models."""
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 2 and parts[1].isdigit():
        if len(parts) == 3:  # LinearNet: layers.<i>.weight
            return "layers"
        parts = parts[2:]
    if parts[0] in ("norm_attn", "norm_ffn", "norm_attn_post", "norm_ffn_post"):
        return "norms.layers"
    if parts[0] == "norm_final":
        return "norms.final"
    if parts[0] == "ffn" and parts[1] in ("w1", "w2", "w3"):
        return "ffn.dense"
    if parts[0] in ("embedding", "attention", "ffn"):
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def param_breakdown(model: Any) -> dict[str, int]:
    """numel() summed per count_params component (shared tensors, e.g. a tied head, counted once)."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        key = component_of(name)
        out[key] = out.get(key, 0) + p.numel()
    return out


def tiny_spec(**overrides: Any) -> TransformerSpec:
    """A small valid spec (2 layers, d_model 64, GQA 4/2 heads, SwiGLU, RoPE) for CPU tests; fields overridable."""
    base: dict[str, Any] = dict(
        name="tiny", display_name="tiny test transformer", layers=2, d_model=64, heads=4, kv_heads=2, ffn_dim=160,
        ffn_kind="swiglu", vocab=256, max_context=128, tied_embeddings=False, positions="rope", norm="rmsnorm",
        sources=["napkin.bench.reference.tiny_spec"],
    )
    return TransformerSpec.model_validate({**base, **overrides})
