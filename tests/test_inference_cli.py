"""`napkin inference` through the CLI: JSON equals the API, bad input is one line and exit 2, no torch."""

from __future__ import annotations

import json

import pytest
import yaml

from napkin.accounting.inference import ServingSetup, inference
from napkin.specs.catalog import get_hardware
from napkin.specs.model import TransformerSpec

FIXTURES = {
    # Llama 2 7B (HF config.json): MHA; Llama 3 70B: GQA 8; StarCoder: MQA; a 40-head / 8-KV-head model for TP.
    "llama2-7b": dict(layers=32, d_model=4096, heads=32, kv_heads=32, ffn_dim=11008, vocab=32000, max_context=4096),
    "llama3-70b": dict(layers=80, d_model=8192, heads=64, kv_heads=8, ffn_dim=28672, vocab=128256, max_context=8192),
    "starcoder": dict(layers=40, d_model=6144, heads=48, kv_heads=1, ffn_dim=24576, ffn_kind="mlp", vocab=49152,
                      max_context=8192, positions="learned", norm="layernorm"),
    "q40": dict(layers=48, d_model=5120, heads=40, kv_heads=8, ffn_dim=13824, vocab=152064, max_context=32768),
}
BASE = dict(ffn_kind="swiglu", tied_embeddings=False, positions="rope", norm="rmsnorm", sources=["test fixture"])


def fixture_spec(name: str) -> TransformerSpec:
    return TransformerSpec(name=name, display_name=name, **{**BASE, **FIXTURES[name]})


@pytest.fixture(scope="module")
def specs_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A user specs dir holding the fixtures under names prefixed 'fx-' (never clashing with the catalog)."""
    root = tmp_path_factory.mktemp("specs")
    (root / "model_specs").mkdir()
    docs = [{"name": f"fx-{n}", "display_name": n, **BASE, **kw} for n, kw in FIXTURES.items()]
    (root / "model_specs" / "fixtures.yaml").write_text(yaml.safe_dump({"specs": docs}))
    return str(root)


def test_json_equals_the_api(cli, specs_dir: str) -> None:
    r = cli("--specs-dir", specs_dir, "inference", "-m", "fx-llama3-70b", "--gpu", "h100", "-g", "8", "-b", "16",
            "-p", "2000", "-n", "500", "--kv-dtype", "fp8", "--mbu", "0.7", "--json")
    assert r.exit_code == 0, r.stderr
    s = fixture_spec("llama3-70b").model_copy(update={"name": "fx-llama3-70b"})
    api = inference(s, get_hardware("h100"), ServingSetup(batch=16, prompt=2000, generate=500, kv_dtype="fp8", mbu=0.7),
                    gpus=8)
    assert r.json() == json.loads(api.to_json())


def test_table_names_the_bounds(cli, specs_dir: str) -> None:
    r = cli("--specs-dir", specs_dir, "inference", "-m", "fx-llama2-7b", "--gpu", "a100", "-b", "1", "-p", "2048",
            "-n", "128")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "time to first token" in out and "compute-bound" in out and "memory-bound" in out
    assert "largest batch" in out and "KV cache per token" in out and "512.0 KiB" in out


def test_explain_shows_the_lecture_asymptotics(cli, specs_dir: str) -> None:
    r = cli("--specs-dir", specs_dir, "inference", "-m", "fx-starcoder", "-b", "8", "-p", "100", "-n", "10",
            "--explain")
    assert r.exit_code == 0, r.stderr
    assert "incremental MHA: memory / arithmetic" in r.stdout and "incremental MQA" in r.stdout
    assert "Shazeer 2019" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["-m", "fx-llama2-7b", "-p", "4000", "-n", "200"], "exceeds fx-llama2-7b's maximum context of 4096"),
    (["-m", "fx-q40", "-g", "5"], "cannot split its 8 KV heads"),
    (["-m", "fx-llama3-70b", "-g", "3"], "do not divide its 64 query heads"),
    (["-m", "fx-llama2-7b", "--weights-dtype", "fp64"], "weights dtype fp64 is not a serving format"),
    (["-m", "fx-llama2-7b", "--kv-dtype", "int4"], "KV cache dtype int4"),
    (["-m", "fx-llama2-7b", "--weights-dtype", "bf17"], "unknown dtype 'bf17'"),
    (["-m", "fx-llama2-7b", "-b", "0"], "batch size must be greater than 0"),
    (["-m", "fx-llama2-7b", "--mbu", "1.5"], "mbu must be at most 1"),
    (["-m", "fx-llama2-7b", "--gpu", "h1000"], "unknown hardware 'h1000'"),
    (["-m", "no-such-model"], "unknown model 'no-such-model'"),
    (["-m", "fx-llama2-7b", "--gpu", "a100", "--compute-dtype", "fp8"], "has no fp8 peak"),
])
def test_bad_input_is_one_line_exit_2(cli, specs_dir: str, args: list[str], message: str) -> None:
    r = cli("--specs-dir", specs_dir, "inference", *args)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napkin: error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_allow_longer(cli, specs_dir: str) -> None:
    r = cli("--specs-dir", specs_dir, "inference", "-m", "fx-llama2-7b", "-p", "4000", "-n", "200",
            "--allow-longer")
    assert r.exit_code == 0, r.stderr
    assert "beyond the model's maximum" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--link-bandwidth", "0", "-g", "8"], "link bandwidth must be greater than 0"),
    (["--allreduce-latency", "-1"], "all-reduce latency must be at least 0 seconds"),
    (["--prefill-chunk", "0"], "prefill chunk must be greater than 0"),
])
def test_bad_flags_name_the_flag(cli, args: list[str], message: str) -> None:
    r = cli("inference", "-m", "llama2-7b", *args)
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
