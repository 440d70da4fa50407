"""Issue 25 items 12-13: one-off tracebacks and silently ignored input, each now one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
import yaml

import napkin
from napkin.errors import InputError

PLAN = ["plan", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "8", "--seq", "4096"]


def _one_line(r, *needles: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stdout[-300:], r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.mark.parametrize("args, said", [
    (PLAN + ["--fix", "recompute=banana"], "recompute must be one of none, selective, full, got 'banana'"),
    (PLAN + ["--fix", "tp=8,tp=1"], "tp is fixed twice"),
    (["max-model", "--gpus", "8", "--seq", "4096", "--batch", "1", "--aspect", "1e308"], "aspect ratio"),
    (["max-model", "--gpus", "8", "--seq", "4096", "--batch", "1", "--aspect", "nan"], "aspect"),
    (["inference", "--model", "llama3-8b", "--link-bandwidth", "5e-324", "--gpus", "8"], "give a unit"),
    (["inference", "--model", "llama3-8b", "--link-bandwidth", "5e-324GB/s", "--gpus", "8"], "at least 1"),
    (["memory", "--model", "llama3-8b", "--memory", "8e1"], "give a unit"),
])
def test_one_offs_are_one_line(cli, args, said):
    _one_line(cli(*args), said)


def test_a_spec_with_an_empty_name_is_refused(cli, tmp_path):
    doc = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump({**doc, "name": "", "aliases": []}))
    _one_line(cli("memory", "--model", str(path)), "name: String should have at least 1 character")


@pytest.mark.parametrize("bad", [0, False, -0.0, Decimal("NaN"), 2.5])
def test_step_time_refuses_a_bad_micro_batch(bad):
    with pytest.raises(InputError, match="micro_batch"):
        napkin.step_time(napkin.get_model("llama3-8b"), napkin.get_hardware("h100"), gpus=8, micro_batch=bad,
                         seq=4096)


def test_numpy_batch_sizes_do_not_overflow():
    np = pytest.importorskip("numpy")
    r = napkin.step_time(napkin.get_model("llama3-8b"), napkin.get_hardware("h100"), gpus=8,
                         micro_batch=np.int8(100), global_batch=np.int16(800), seq=4096)
    assert r.inputs.micro_batch == 100 and r.inputs.global_batch == 800 and r.micro_batches == 1


def test_a_closed_stdout_is_one_line():
    p = subprocess.run(f"'{sys.executable}' -m napkin models list >&-", shell=True, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "standard output is closed" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_a_huge_range_is_refused_before_it_is_built(cli):
    pytest.importorskip("torch")
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = cli("bench-matmul", "--device", "cpu", "--m-range", "0", "100000000", "1", "--iters", "1")
    _one_line(r, "holds 99,999,999 sizes")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: not 4.9 GB of ints


@pytest.mark.parametrize("args, said", [
    (["inference", "--model", "llama3-8b", "--link-bandwidth", "100GB/s"], "one GPU has none"),
    (["inference", "--model", "llama3-8b", "--allreduce-latency", "10us"], "one GPU has none"),
    (["mfu", "--model", "llama3-8b", "--tokens-per-s", "9000", "--gpus", "8", "--batch", "4"], "not read"),
])
def test_flags_that_would_be_ignored_are_refused(cli, args, said):
    _one_line(cli(*args), said)
    assert cli("inference", "--model", "llama3-8b", "--gpus", "2", "--link-bandwidth", "100GB/s").exit_code == 0


@pytest.mark.parametrize("line, said", [("layers: 010", "octal number 8"),
                                        ("max_context: 1:00:00", "base-60 number 3600"),
                                        ("layers: 0b11", "binary number 3"),
                                        ("norms_per_layer: 2:30", "base-60 number 150")])
def test_yaml_11_numbers_are_refused_not_guessed(cli, tmp_path, line, said):
    doc = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    key = line.split(":")[0]
    text = "\n".join(line if ln.startswith(f"{key}:") else ln
                     for ln in yaml.safe_dump({**doc, "name": "q", "aliases": []}).splitlines())
    path = tmp_path / "q.yaml"
    path.write_text(text + "\n")
    _one_line(cli("memory", "--model", str(path)), said, "(line ")


def test_an_error_names_the_file_and_the_place_not_its_content(cli, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secrethash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    r = cli("memory", "--model", str(secret))
    assert r.exit_code == 2 and "secrethash" not in r.stderr and "daemon" not in r.stderr, r.stderr
    assert str(secret) in r.stderr and "(a key that is no field name)" in r.stderr




@pytest.mark.parametrize("model_type, key, value", [
    ("gemma2", "layer_types", "full_attention"), ("gemma3_text", "layer_types", 7), ("gpt_oss", "layer_types", {}),
    ("qwen2_moe", "mlp_only_layers", "0,1"), ("qwen3_moe", "mlp_only_layers", [True]),
    ("nemotron_h", "layers_block_type", [[1]]), ("mamba2", "expand", "2"), ("mamba2", "expand", None),
    ("mamba2", "expand", 1e308), ("mamba2", "expand", [2]), ("mamba2", "expand", float("nan")),
    ("falcon", "num_kv_heads", 0), ("gemma2", "sliding_window_pattern", 0), ("gemma2", "sliding_window_pattern", -1),
])
def test_config_json_keys_of_the_wrong_type_are_one_line(cli, tmp_path, model_type, key, value):
    import json
    from pathlib import Path

    cfg = json.loads((Path(__file__).parent / "fixtures/hf/llama3-8b/config.json").read_text())
    cfg.update(model_type=model_type, **{key: value})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = cli("memory", "--model", str(path))
    if value is None:  # null is "not given", as transformers reads it: whatever follows, never a traceback
        assert "Traceback" not in r.stderr and r.exit_code in (0, 2), r.stderr
        return
    _one_line(r, f"{key}: must be")
    cfg = json.loads((Path(__file__).parent / "fixtures/hf/llama3-8b/config.json").read_text())
    path.write_text(json.dumps({"model_type": "llava", "text_config": {**cfg, "architectures": 7}}))
    _one_line(cli("memory", "--model", str(path)), "text_config.architectures: must be")
