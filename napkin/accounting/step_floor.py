"""A floor under `step_time` for the layout search (`napkin plan`): the same stage terms (step_time's `_layer_costs`,
`_layer_terms`, `_stages`), cached by what each depends on, so a search shares them across PP, VP, ZeRO and the batch
split; it never exceeds the step it bounds (tests/test_plan_bound.py)."""

from __future__ import annotations

from typing import NamedTuple

from napkin.accounting import kernels as K
from napkin.accounting.layers import layer_plan
from napkin.accounting.layout import Layout
from napkin.accounting.model_state import get_precision
from napkin.accounting.step_time import (
    Cluster,
    LayerTerms,
    _device,
    _head_device,
    _layer_costs,
    _layer_terms,
    _links,
    _placed,
    _reduce_bytes,
    _shard_links,
    _stages,
    resolve_stack,
)
from napkin.specs.dtypes import BYTES_PER_ELEMENT
from napkin.specs.hardware import HardwareSpec
from napkin.specs.model import TransformerSpec
from napkin.validation import Recompute


class CostKey(NamedTuple):
    """What one micro-batch's kernel costs depend on: the splits of a layer and the micro-batch."""

    tp: int
    cp: int
    ep: int
    sp: bool
    b: int


class LayerKey(NamedTuple):
    """What a layer's step-time terms depend on: its costs, the recompute, and the DP degree under ZeRO-3 alone."""

    costs: CostKey
    zero3_dp: tuple[int, int]  # (shard, expert shard) when ZeRO-3 gathers, else (0, 0)
    recompute: str


class StageKey(NamedTuple):
    layers: LayerKey
    pp: int
    split: tuple[int, int | None, int | None, bool, bool]  # vp, first/last stage layers, embedding/loss in split


class StepFloor:
    """A lower bound on ``step_time`` for a search that skips the layouts it cannot beat (``napkin plan``).

    The step is (m + (P − 1)/V) · t_stage plus the PP sends, the exposed DP reduction and the optimizer step, each
    ≥ 0; the floor is the first term, from the same stage terms (``_stages``) as the prediction. The layer costs
    depend on the micro-batch and TP/CP/EP only, so a search shares them across PP, VP, ZeRO and the batch split.
    """

    def __init__(self, spec: TransformerSpec, hw: HardwareSpec, *, seq: int, cluster: Cluster,
                 precision: str = "bf16-mixed", flash: bool = True, constants: K.StepConstants | None = None) -> None:
        self.spec, self.seq, self.flash, self.cluster = spec, seq, flash, cluster
        self.c = constants or resolve_stack(None).step_constants()
        self.dev, _ = _device(hw, precision, self.c)
        self.head_dev = _head_device(hw, precision, self.c, self.dev)
        self.reduce_bytes = _reduce_bytes(precision, self.c)
        prec = get_precision(precision)
        self.p, self.param_bytes = BYTES_PER_ELEMENT[prec.activations], BYTES_PER_ELEMENT[prec.params]
        self.plan = layer_plan(spec)
        self.links = _links(cluster, self.c)
        self._costs: dict[CostKey, tuple[dict[str, K.LayerCost], tuple[K.Cost, K.Cost]]] = {}
        self._layers: dict[LayerKey, dict[str, LayerTerms]] = {}
        self._stage: dict[StageKey, float] = {}

    def __call__(self, lay: Layout, micro_batch: int, micro_batches: int, recompute: Recompute) -> float:
        """Seconds that ``step_time`` predicts at least for ``lay`` with m = ``micro_batches`` of ``micro_batch``."""
        b, z3 = micro_batch, lay.zero == 3 and (lay.shard > 1 or lay.expert_shard > 1)
        ck = CostKey(lay.tp, lay.cp, lay.ep, lay.sp, b)
        lk = LayerKey(ck, (lay.shard, lay.expert_shard) if z3 else (0, 0), recompute)
        key = StageKey(lk, lay.pp, (lay.vp, lay.first_stage_layers, lay.last_stage_layers, lay.embedding_in_split,
                                    lay.loss_in_split))
        t_stage = self._stage.get(key)
        if t_stage is None:
            layers = self._layers.get(lk)
            if layers is None:
                if ck not in self._costs:
                    self._costs[ck] = _layer_costs(self.plan, b=b, s=self.seq, cp=lay.cp, tp=lay.tp, ep=lay.ep,
                                                   sp=lay.sp, flash=self.flash, p=self.p, dev=self.dev, c=self.c,
                                                   head_dev=self.head_dev)
                tp_l, cp_l, ep_l, _, _, _ = _placed(lay, self.cluster.node_size, *self.links)
                sh_l, esh_l = _shard_links(lay, self.cluster.node_size, *self.links)
                layers = self._layers[lk] = _layer_terms(
                    self.spec, self.plan, lay, b=b, s=self.seq, recompute=recompute, p=self.p,
                    param_bytes=self.param_bytes, costs=self._costs[ck][0], links=(tp_l, cp_l, ep_l, sh_l, esh_l),
                    c=self.c, reduce_bytes=self.reduce_bytes)
            stages = _stages(self.spec, self.plan, lay, layers, self._costs[ck][1])
            t_stage = self._stage[key] = max(sum(x[2].values()) for x in stages)
        return (micro_batches + (lay.pp - 1) / lay.vp) * t_stage

    def any_pipeline(self, lay: Layout, micro_batch: int, recompute: Recompute, global_batch: int) -> float:
        """A floor under ``__call__`` for every PP, VP and ZeRO stage with ``lay``'s TP, CP and EP at this
        micro-batch, so a search can leave a whole group unbounded until it matters.

        (m + (P − 1)/V) · t_stage ≥ m · ⌈L/P⌉ · (the cheapest layer) and m = B·TP·CP·P / (G·b), so the floor is
        at least B·TP·CP·L / (G·b) · the cheapest layer's terms without ZeRO-3 (its gathers only add; a layer's
        terms sum to max(its time, its launches), which only grows).
        """
        plain = lay.model_copy(update={"zero": 0}) if lay.zero == 3 else lay
        key = LayerKey(CostKey(lay.tp, lay.cp, lay.ep, lay.sp, micro_batch), (0, 0), recompute)
        layers = self._layers.get(key)
        if layers is None:
            self(plain, micro_batch, 1, recompute)  # fills the caches for this TP, CP, EP and micro-batch
            layers = self._layers[key]
        cheapest = min(sum(x.parts.values()) + x.host for x in layers.values())
        return global_batch * lay.tp * lay.cp * self.spec.layers / (lay.gpus * micro_batch) * cheapest
