"""The script-facing contract of every result: kind and inputs, stable step keys, substituted numbers that
re-compute to the value, one name per quantity, and a JSON-schema snapshot so a change of shape is deliberate."""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from pathlib import Path

import pytest

import napkin
from napkin.results import Result

SNAPSHOT = Path(__file__).parent / "snapshots" / "result_schemas.json"


def _results() -> list[Result]:
    h100, a100 = napkin.get_hardware("h100"), napkin.get_hardware("a100")
    llama, mix, ds = napkin.get_model("llama3-8b"), napkin.get_model("mixtral-8x7b"), napkin.get_model("deepseek-v3")
    from napkin.accounting.memory_solvers import max_micro_batch, min_gpus
    from napkin.accounting.plan import plan

    return [
        napkin.train_time(h100, 1024, 70e9, 15e12),
        napkin.train_time(h100, 1024, tokens=15e12, model=mix, seq=4096),
        napkin.train_time(a100, 1024, params=175e9, tokens=300e9, hfu=0.4487, recompute="full"),
        napkin.budget(h100, 8, 7),
        napkin.budget(h100, 8, 7, model=llama, seq=8192, mfu=0.4),
        napkin.max_model(h100, 8),
        napkin.memory_ledger(llama, h100, seq=4096, gpus=8, tp=2, pp=2, micro_batches=4),
        napkin.memory_ledger(ds, h100, seq=4096, gpus=256, tp=2, pp=8, ep=8, zero=1),
        max_micro_batch(llama, h100, seq=4096, gpus=8),
        min_gpus(llama, h100, seq=4096),
        napkin.count_params(ds),
        napkin.count_flops(mix, 1e9, 4096, recompute="selective"),
        napkin.step_time(llama, h100, gpus=16, tp=2, pp=2, micro_batch=1, global_batch=32, seq=4096, recompute="full"),
        # MoE with EP (dense and expert DP groups), windows, a hybrid: every layer kind through the same steps
        napkin.step_time(napkin.get_model("gpt-oss-20b"), h100, gpus=16, ep=4, global_batch=32, seq=4096),
        napkin.step_time(napkin.get_model("gemma3-12b"), h100, gpus=8, tp=2, global_batch=8, seq=32768,
                         recompute="full"),
        napkin.step_time(napkin.get_model("nemotron-h-8b"), h100, gpus=8, tp=2, pp=2, global_batch=16, seq=4096),
        napkin.memory_ledger(napkin.get_model("nemotron-h-8b"), h100, seq=4096, gpus=8, tp=2, pp=2, micro_batches=4),
        plan(napkin.get_model("gpt2"), h100, gpus=8, global_batch=16, seq=1024, top=2),
        napkin.inference(llama, h100, batch=8, prompt=1024, generate=256),
        napkin.kv_cache(llama, 8192, batch=8),
        napkin.roofline(h100, spec=llama),
        napkin.mfu(llama, h100, 8, tokens_per_s=9000, seq=8192),
    ]


RESULTS = _results()
IDS = [f"{r.kind}-{n}" for n, r in enumerate(RESULTS)]


@pytest.mark.parametrize("r", RESULTS, ids=IDS)
def test_every_result_carries_kind_and_inputs(r):
    assert r.kind and r.kind == json.loads(r.to_json())["kind"]
    assert "inputs" in type(r).model_fields


@pytest.mark.parametrize("r", RESULTS, ids=IDS)
def test_step_keys_are_unique_and_free_of_numbers(r):
    keys = [s.key for s in r.steps]
    assert len(keys) == len(set(keys))
    for k in keys:
        assert re.fullmatch(r"[a-z_]+(-[a-z_]+)*(-\d+)?", k), k


def test_step_keys_do_not_change_with_the_inputs():
    h100 = napkin.get_hardware("h100")
    a = napkin.memory_ledger(napkin.get_model("llama3-8b"), h100, seq=4096, gpus=8)
    b = napkin.memory_ledger(napkin.get_model("llama3-8b"), h100, seq=2048, batch=4, gpus=16)
    assert [s.key for s in a.steps] == [s.key for s in b.steps]


def test_nested_results_do_not_repeat_their_steps():
    from napkin.accounting.memory_solvers import max_micro_batch

    r = max_micro_batch(napkin.get_model("llama3-8b"), napkin.get_hardware("h100"), seq=4096, gpus=8)
    out = json.loads(r.to_json())
    assert "steps" not in out["ledger"] and len(out["steps"]) == len(r.steps)


# --- substituted numbers recompute to the value
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("sqrt", "ceil", "floor"):
        return getattr(math, node.func.id)(_eval(node.args[0]))
    raise ValueError("not arithmetic")


def arithmetic(text: str) -> float | None:
    """The substituted formula as a number, or None when it is not plain arithmetic (it names things)."""
    t = text.replace("×", "*").replace("·", "*").replace("−", "-").replace("²", "**2").replace("³", "**3")
    t = re.sub(r"⌈([^⌉]*)⌉", r"ceil(\1)", t)
    t = re.sub(r"⌊([^⌋]*)⌋", r"floor(\1)", t)
    t = re.sub(r"(\d)_(\d)", r"\1\2", t)
    try:
        return _eval(ast.parse(t.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError, OverflowError):
        return None


@pytest.mark.parametrize("r", RESULTS, ids=IDS)
def test_substituted_numbers_recompute_to_the_value(r):
    checked = 0
    for s in r.steps:
        v = arithmetic(s.substituted)
        if v is None or s.substituted.strip() == s.formula.strip():
            continue
        checked += 1
        assert v == pytest.approx(s.value, rel=2e-5, abs=1e-12), f"{s.key}: {s.substituted} = {v}, not {s.value}"
    assert checked or not r.steps


def test_the_arithmetic_reader_reads_what_napkin_writes():
    assert arithmetic("6 × 7e+10 × 1.5e+13") == pytest.approx(6.3e24)
    assert arithmetic("⌈4096 / 3⌉") == 1366 and arithmetic("sqrt(4.8e+21 / (6 × 20))") == pytest.approx(6.3245553e9)
    assert arithmetic("L · q") is None and arithmetic("12 GEMMs") is None


# --- one name per quantity
def test_six_nd_means_one_thing_in_every_result():
    h100, mix = napkin.get_hardware("h100"), napkin.get_model("mixtral-8x7b")
    tt = napkin.train_time(h100, 64, tokens=1e12, model=mix, seq=4096)
    fc = napkin.count_flops(mix, 1e12, 4096)
    assert tt.six_nd == pytest.approx(fc.six_nd) and tt.six_n_active_d == pytest.approx(fc.six_n_active_d)
    assert fc.six_nd > fc.six_n_active_d  # total vs active parameters of a mixture of experts


def test_model_and_parameter_fields_are_named_the_same_everywhere():
    for r in RESULTS:
        fields = set(type(r).model_fields)
        assert not fields & {"architecture", "params_total", "total", "active"}, (r.kind, fields)
        inputs = type(r).model_fields["inputs"].annotation
        names = set(getattr(inputs, "model_fields", {}))
        assert "architecture" not in names, r.kind


# --- the JSON shape is deliberate
def _all_result_classes() -> list[type[Result]]:
    import importlib
    import pkgutil

    for m in pkgutil.walk_packages(napkin.__path__, "napkin."):
        if ".cli" not in m.name and not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    out, todo = [], list(Result.__subclasses__())
    while todo:
        c = todo.pop()
        out.append(c)
        todo += c.__subclasses__()
    return sorted(set(out), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _all_result_classes(), ids=lambda c: c.__name__)
def test_every_result_class_has_inputs(cls):
    assert "inputs" in cls.model_fields and "kind" in cls.model_fields


def _schemas() -> dict[str, object]:
    return {c.__name__: c.model_json_schema() for c in _all_result_classes()}


def test_json_schemas_match_the_snapshot():
    """A change to what scripts read must be deliberate: regenerate with `python tests/test_result_contract.py`."""
    assert SNAPSHOT.exists(), "no snapshot: run python tests/test_result_contract.py"
    assert json.loads(SNAPSHOT.read_text()) == json.loads(json.dumps(_schemas()))


if __name__ == "__main__":
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(_schemas(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
