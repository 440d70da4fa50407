"""What a real torch model keeps, measured, and napkin's estimate of it under the same settings.

- ``SavedTensors``: a context manager around ``torch.autograd.graph.saved_tensors_hooks`` that records every
  storage autograd saves for backward, each storage once (views share one), the excluded ones (parameters: they
  are model state, not activations) left out. ``.bytes`` is the sum.
- ``reference_saved_bytes(spec, b, s, ...)``: forward + cross-entropy of the reference transformer
  (napkin.bench.reference) in fp32 under ``SavedTensors``, with no, selective or full recomputation.
- ``predicted_activation_bytes(spec, b, s, ...)``: napkin's estimate for that run (napkin.accounting.activations,
  the terms ``napkin memory`` sums), with the reference's norm kind; a linear net gets the lecture's B·D·L.
- ``model_state_bytes(model, optimizer)``: parameters, gradients and optimizer state tensors, measured.

Used by tests/test_activations_torch.py and ``napkin validate``. torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from napkin.accounting import activations as act
from napkin.accounting import finetune as ft
from napkin.accounting.finetune import LoraSetup
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.validation import Recompute


class SavedTensors:
    """Unique storages saved for backward while the context is open (those of ``exclude`` left out).

    Every packed tensor is held until the context closes, so no storage is freed and its address reused
    for another one during the forward (which would merge two storages into one key).
    """

    def __init__(self, exclude: Iterable[Any] = ()) -> None:
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}  # data_ptr → nbytes
        self._keep: list[Any] = []
        self._hooks: Any = None

    def _pack(self, t: Any) -> Any:
        self._keep.append(t)
        storage = t.untyped_storage()
        if storage.data_ptr() not in self._exclude:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> SavedTensors:
        import torch

        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._keep.clear()  # the graph still holds what backward needs; only the extra references go

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def _checkpointed(fn: Any) -> Any:
    from torch.utils.checkpoint import checkpoint

    return lambda *args: checkpoint(fn, *args, use_reentrant=True)


def reference_saved_bytes(spec: TransformerSpec, b: int, s: int, *, flash: bool, recompute: str,
                          seed: int = 0) -> int:
    """Unique storage bytes saved for backward by forward + cross-entropy (parameters excluded), fp32 on the CPU.

    selective: the attention core (QKᵀ, softmax, ·V) under a reentrant checkpoint; full: every layer under one
    (its input is what ``ctx.save_for_backward`` keeps; the inner forward runs without grad).
    """
    import torch
    import torch.nn.functional as F

    from napkin.bench.reference import build_model

    torch.manual_seed(seed)
    model = build_model(spec, "cpu", torch.float32, flash=flash)
    if recompute == "full":
        for layer in model.layers:
            layer.forward = _checkpointed(layer.forward)
    elif recompute == "selective":
        for block in model.blocks():
            attn = block.attention
            # checkpoint this instance's attention core only (Korthikanti et al. 2022 §4.2: selective recompute)
            attn._explicit = _checkpointed(attn._explicit)  # type: ignore[method-assign]
    ids = torch.randint(0, spec.vocab, (b, s))
    targets = torch.randint(0, spec.vocab, (b, s))
    with SavedTensors(model.parameters()) as saved:
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, spec.vocab).float(), targets.reshape(-1))
    assert loss.requires_grad
    return saved.bytes


def predicted_activation_bytes(spec: TransformerSpec | LinearSpec, b: int, s: int = 1, *, flash: bool = False,
                               recompute: Recompute = "none", bytes_per_element: float = 4,
                               lora: LoraSetup | None = None) -> float:
    """napkin's activation bytes for one micro-batch of the reference model (one GPU, no parallelism).

    The reference's RMSNorm is torch's eager composite, so napkin is asked for that (fused_norm=False);
    its LayerNorm is torch's fused kernel. The layers (dense and MoE ones as the spec places them) plus the
    embedding and output-layer terms: what ``napkin memory`` adds up for the same settings. With ``lora`` the
    terms are those of ``napkin memory --finetune lora`` (finetune.lora_layer_terms / lora_outside_terms: frozen
    matmuls keep nothing for their weights, each adapter keeps its A·x).
    """
    if isinstance(spec, LinearSpec):
        return float(act.linear_net_activation_elements(spec, b) * bytes_per_element)
    fused = spec.norm != "rmsnorm"
    from napkin.accounting.layers import layer_plan

    layers = 0.0
    for kind in layer_plan(spec).kinds:  # MoE models may start with dense layers
        layer = act.layer_terms(spec, s, b, flash=flash, fused_norm=fused, kind=kind,
                                bytes_per_element=bytes_per_element)
        if lora is not None:
            layer = ft.lora_layer_terms(layer, spec, kind, lora, s=s, b=b, bytes_per_element=bytes_per_element,
                                        flash=flash)
        layers += kind.count * act.total(act.stored(layer, recompute, spec, s, b, bytes_per_element=bytes_per_element))
    outside = act.outside_terms(spec, s, b, fused_norm=fused, bytes_per_element=bytes_per_element)
    if lora is not None:
        outside = ft.lora_outside_terms(outside, spec, lora, s=s, b=b, bytes_per_element=bytes_per_element)
    return layers + act.total(outside["embedding"]) + act.total(outside["output"])


class StateBytes(BaseModel):
    """Model state measured after an optimizer step, in bytes (each storage counted once)."""

    model_config = ConfigDict(frozen=True)

    params: int
    grads: int
    optimizer_per_param: int = Field(description="state tensors shaped like their parameter (AdamW: m and v)")
    optimizer_other: int = Field(description="other state tensors (AdamW: the per-tensor step counters)")
    param_tensors: int
    state_tensors_per_param: float = Field(description="per-parameter state tensors per parameter tensor")

    @property
    def per_param_total(self) -> int:
        return self.params + self.grads + self.optimizer_per_param


def model_state_bytes(model: Any, optimizer: Any) -> StateBytes:
    """Parameters, their gradients and the optimizer's state tensors, as allocated (storage nbytes)."""
    import torch

    params = list(model.parameters())  # shared parameters (a tied head) appear once

    def nbytes(ts: Iterable[Any]) -> int:
        seen: dict[int, int] = {}
        for t in ts:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return sum(seen.values())

    per_param: list[Any] = []  # torch tensors
    other: list[Any] = []
    for p in params:
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value):
                (per_param if value.shape == p.shape else other).append(value)
    return StateBytes(params=nbytes(params), grads=nbytes(p.grad for p in params if p.grad is not None),
                      optimizer_per_param=nbytes(per_param), optimizer_other=nbytes(other),
                      param_tensors=len(params), state_tensors_per_param=len(per_param) / max(1, len(params)))
