"""`napkin train-time`'s one entry point: which MFU a run is planned at, and so which calculation answers.

- an MFU given (``mfu``, ``hfu``, or the lecture's 0.5): ``train_time``, on one GPU or on every one of a list;
- an MFU measured (``mfu_from``: a saved bench-matmul file × ``mfu_fraction``): ``measured_mfu`` then
  ``train_time``, the measurement's derivation in front;
- a layout (any of ``layout``'s keywords): the MFU ``step_time`` predicts for it (``train_time_at_layout``);
- ``plan``: the MFU of the fastest layout ``plan`` finds (``train_time_planned``).

It sits in napkin.bench because a measured MFU is read from a bench file; reading one never imports torch,
and neither does anything here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napkin.errors import InputError
from napkin.results import Result
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import LinearSpec, TransformerSpec
from napkin.specs.resolve import as_hardware, as_optional_model

LAYOUT_KEYS = ("tp", "pp", "vp", "cp", "ep", "micro_batch", "global_batch")  # any of them asks for a layout's MFU
STEP_DEFAULTS = {"precision": "bf16-mixed"}  # step-time's defaults that are neither None, False nor 0


def train_time_question(
    hardware: HardwareSpec | str | Sequence[HardwareSpec],
    gpus: int,
    params: float | None = None,
    tokens: float | None = None,
    *,
    model: TransformerSpec | LinearSpec | str | None = None,
    mfu: float | None = None,
    hfu: float | None = None,
    mfu_from: str | Path | None = None,
    mfu_fraction: float | None = None,
    plan: bool = False,
    layout: dict[str, int | None] | None = None,
    price_per_gpu_hour: float | None = None,
    pue: float = 1.0,
    seq: int | None = None,
    recompute: str = "none",
    flops: float | None = None,
    dtype: str = "bf16",
    sparse: bool = False,
    causal: bool = True,
    step: dict[str, Any] | None = None,
) -> Result:
    """Days, GPU-hours, cost and energy to train, at the MFU the arguments ask for (see the module docstring).

    ``hardware`` a list: the same question on every GPU (an AcrossGpusResult; the MFU must be given).
    ``layout``: tp, pp, vp, cp, ep, micro_batch, global_batch (None: not given). ``step``: the keywords the
    step-time model also reads with a layout or ``plan`` (sp, zero, precision, node_size, intra/inter-node
    bandwidth, calibration).
    """
    every = isinstance(hardware, (list, tuple))
    given = {k: v for k, v in (layout or {}).items() if v is not None}
    unknown = sorted(set(given) - set(LAYOUT_KEYS))
    if unknown:
        raise TypeError(f"train_time_question() layout got an unexpected key '{unknown[0]}'")
    if every and (mfu_from is not None or plan):
        raise InputError("`gpu` all asks every GPU at one MFU: leave out `mfu_from` and `plan`")
    spec = as_optional_model(model, "model")
    extra = dict(step or {})
    if plan:
        from napkin.accounting.plan import train_time_planned

        if spec is None or tokens is None or given.get("global_batch") is None or seq is None:
            raise InputError("`plan` searches the layouts of a model: give `model`, `tokens`, `global_batch` and "
                             "`seq`")
        if mfu is not None or hfu is not None or mfu_from is not None:
            raise InputError("`plan` predicts the MFU: leave out `mfu`, `hfu` and `mfu_from`")
        searched = [k for k, v in (("sp", extra.pop("sp", False)), ("zero", extra.pop("zero", 0)),
                                   ("recompute", "none" if recompute == "none" else recompute)) if v not in (False, 0,
                                                                                                          "none")]
        if searched:
            raise InputError(f"`plan` searches {', '.join(f'`{k}`' for k in searched)}: leave them out")
        return train_time_planned(spec, as_hardware(hardware), tokens, gpus=gpus, global_batch=given["global_batch"],
                                  seq=seq, price_per_gpu_hour=price_per_gpu_hour, pue=pue, **extra)
    if given:
        from napkin.accounting.step_time import train_time_at_layout

        if spec is None or tokens is None:
            raise InputError("a layout (`tp`/`pp`/`micro_batch`/...) predicts the MFU of a model: give `model` and "
                             "`tokens`")
        if mfu is not None or hfu is not None or mfu_from is not None:
            raise InputError("a layout predicts the MFU: leave out `mfu`, `hfu` and `mfu_from`")
        return train_time_at_layout(spec, as_hardware(hardware), tokens, price_per_gpu_hour=price_per_gpu_hour,
                                    pue=pue, gpus=gpus, seq=seq, recompute=recompute, **extra, **given)
    from napkin.accounting.training import train_time

    unread = [k for k, v in extra.items() if v not in (None, False, 0, STEP_DEFAULTS.get(k))]
    if unread:
        raise InputError(f"{', '.join(f'`{k}`' for k in unread)}: read by the step-time model only; give a layout "
                         "(`tp`, `pp`, `micro_batch`, ...) or `plan`")
    measured = None
    if mfu_from is not None:
        from napkin.bench.saved import measured_mfu

        if mfu is not None:
            raise InputError("give `mfu` or `mfu_from`, not both")
        assert not isinstance(hardware, (list, tuple))
        hw = as_hardware(hardware)
        measured = measured_mfu(mfu_from, mfu_fraction, hardware=hw.name, dtype=dtype)
        mfu = measured.mfu
    elif mfu_fraction is not None:
        raise InputError("`mfu_fraction` scales the MFU measured in a file: give `mfu_from` too")

    def ask(h: HardwareSpec) -> Result:
        r = train_time(h, gpus, params, tokens, flops=flops, dtype=dtype, mfu=mfu, sparse=sparse,
                       price_per_gpu_hour=price_per_gpu_hour, pue=pue, model=spec, seq=seq,
                       recompute=recompute,  # type: ignore[arg-type]
                       hfu=hfu, causal=causal)
        return r if measured is None else measured.apply(r)  # the measured MFU's derivation goes in front

    if every:
        from napkin.accounting.across_gpus import across_gpus

        return across_gpus("train-time", list(hardware), ask)  # type: ignore[arg-type]
    return ask(as_hardware(hardware))
