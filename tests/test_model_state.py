"""Model state per parameter and its sharding: the ZeRO paper's arithmetic with its own inputs.

Rajbhandari et al. 2020, ZeRO: Memory Optimizations Toward Training Trillion Parameter Models,
§3.1 and Figure 1: mixed-precision Adam keeps 2Ψ (fp16 params) + 2Ψ (fp16 grads) + KΨ (fp32
master weights, momentum, variance; K = 12) bytes. For Ψ = 7.5B and N_d = 64 data-parallel ranks,
Figure 1 prints 120 GB (baseline), 31.4 GB (P_os), 16.6 GB (P_os+g) and 1.9 GB (P_os+g+p) per device.
"""

import pytest

import napkin
from napkin.accounting.memory import memory_ledger
from napkin.accounting.model_state import OPTIMIZERS, PRECISIONS, get_optimizer, get_precision, state_parts

PSI = 7.5e9  # ZeRO Figure 1: a 7.5B-parameter model
ND = 64  # ZeRO Figure 1: data-parallel degree
K = 12  # ZeRO §3.1: fp32 master weights + momentum + variance = 4 + 4 + 4 bytes per parameter


@pytest.fixture(scope="module")
def h100():
    return napkin.get_hardware("h100")


@pytest.mark.parametrize("precision", ["fp16-mixed", "bf16-mixed"])
def test_mixed_precision_adam_is_16_bytes(precision):
    parts = state_parts(get_precision(precision), get_optimizer("adam"), zero=0)
    by = {p.part: p.bytes_per_param for p in parts}
    assert by == {"params": 2, "grads": 2, "master": 4, "optimizer": 8}
    assert by["master"] + by["optimizer"] == K
    assert sum(by.values()) == 2 + 2 + K


@pytest.mark.parametrize("zero, formula, figure_gb", [
    (0, (2 + 2 + K) * PSI, 120.0),
    (1, 2 * PSI + 2 * PSI + K * PSI / ND, 31.4),
    (2, 2 * PSI + (2 + K) * PSI / ND, 16.6),
    (3, (2 + 2 + K) * PSI / ND, 1.9),
])
def test_zero_figure_1(h100, zero, formula, figure_gb):
    r = memory_ledger(hardware=h100, params=PSI, gpus=ND, zero=zero, optimizer="adam", precision="fp16-mixed")
    assert r.total_bytes == pytest.approx(formula, rel=1e-12)
    assert r.total_bytes / 1e9 == pytest.approx(figure_gb, abs=0.05)  # the figure rounds to 0.1 GB
    assert r.data_parallel == ND
    assert sum(row.bytes for row in r.rows) == pytest.approx(r.total_bytes, rel=1e-12)


@pytest.mark.parametrize("zero, sharded", [
    (1, {"master", "optimizer"}),
    (2, {"master", "optimizer", "grads"}),
    (3, {"master", "optimizer", "grads", "params"}),
])
def test_zero_stages_shard_the_right_parts(h100, zero, sharded):
    r = memory_ledger(hardware=h100, params=1e9, gpus=8, zero=zero, optimizer="adamw", precision="bf16-mixed")
    assert {row.part for row in r.rows if row.sharded_over_dp} == sharded


def test_megatron_fp32_grads_is_18_bytes():
    parts = state_parts(get_precision("bf16-mixed-fp32-grads"), get_optimizer("adam"), zero=0)
    assert sum(p.bytes_per_param for p in parts) == 18


def test_fp32_adamw_is_the_lectures_16_bytes():
    parts = state_parts(get_precision("fp32"), get_optimizer("adamw"), zero=0)
    assert [p.part for p in parts] == ["params", "grads", "optimizer"]
    assert sum(p.bytes_per_param for p in parts) == 4 + 4 + 4 + 4


@pytest.mark.parametrize("name, states", [("sgd", 0), ("sgd-momentum", 1), ("adagrad", 1), ("rmsprop", 1),
                                          ("adam", 2), ("adamw", 2), ("lion", 1), ("adam-8bit", 2),
                                          ("adafactor", 0)])
def test_optimizer_states_are_cited(name, states):
    o = OPTIMIZERS[name]
    assert o.states == states
    assert o.source and o.description


def test_adam_8bit_states_are_one_byte_each():
    parts = state_parts(get_precision("bf16-mixed"), get_optimizer("adam-8bit"), zero=0)
    assert next(p for p in parts if p.part == "optimizer").bytes_per_param == 2  # m and v in int8


def test_every_precision_names_its_activation_dtype():
    assert PRECISIONS["fp32"].activations.value == "fp32"
    assert PRECISIONS["bf16-mixed"].activations.value == "bf16"
    for p in PRECISIONS.values():
        assert p.source


def test_max_model_defaults_still_reproduce_the_lecture(h100):
    assert napkin.max_model(h100, gpus=8).max_params == pytest.approx(4.0e10, rel=1e-9)
