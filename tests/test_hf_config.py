"""Hugging Face config.json as a model: hand-copied public configs give the catalog's shapes and counts;
broken configs give one line per problem naming the file and the config key, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napkin.accounting.params import count_params
from napkin.errors import SpecError
from napkin.specs.catalog import get_model
from napkin.specs.hf_config import SUPPORTED, spec_from_hf_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
CONFIGS = sorted(p.parent.name for p in FIXTURES.glob("*/config.json"))


def test_fixtures_cover_the_catalog_families():
    # The families added later are checked against transformers in tests/test_architectures.py.
    families = {json.loads((FIXTURES / n / "config.json").read_text())["model_type"] for n in CONFIGS}
    assert families == {"gpt2", "llama", "mistral", "mixtral", "qwen2", "olmo2", "deepseek_v3"}
    assert families < set(SUPPORTED)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_json_gives_the_catalog_model(name):
    # Each fixture sits in a folder named after the catalog entry built from the same public config.
    from_json = get_model(str(FIXTURES / name / "config.json"))
    catalog = get_model(name)
    assert count_params(from_json).components == count_params(catalog).components
    assert count_params(from_json).active_params == count_params(catalog).active_params
    assert (from_json.layers, from_json.d_model, from_json.max_context) == (catalog.layers, catalog.d_model,
                                                                             catalog.max_context)


def test_a_directory_means_its_config_json():
    assert get_model(str(FIXTURES / "gpt2")).name == "gpt2"


def test_qwen3_has_per_head_qk_norm_and_head_dim(tmp_path):
    cfg = {"model_type": "qwen3", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "vocab_size": 100,
           "max_position_embeddings": 128, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = spec_from_hf_config(tmp_path / "config.json")
    assert spec.qk_norm == "per_head" and spec.d_head == 32 and spec.tied_embeddings
    assert count_params(spec).components["attention.q"] == 2 * 64 * 4 * 32  # L · h · a·d (head_dim ≠ h/a)
    assert count_params(spec).components["attention.qk_norm"] == 2 * 2 * 32  # L · (q_norm + k_norm) of width d


def _write(tmp_path: Path, base: str, **changes) -> Path:
    cfg = json.loads((FIXTURES / base / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


BAD = [
    ("llama3-8b", dict(hidden_size=None), "hidden_size: missing"),
    ("llama3-8b", dict(num_attention_heads=30), "num_attention_heads: heads (30) must divide d_model (4096)"),
    ("llama3-8b", dict(num_key_value_heads=5), "num_key_value_heads: kv_heads (5) must divide heads (32)"),
    ("llama3-8b", dict(hidden_size="4096"), "hidden_size: must be a whole number"),
    ("llama3-8b", dict(model_type="mamba"), "model_type: 'mamba' is not supported"),
    ("llama3-8b", dict(model_type=None), "model_type: missing"),
    ("mixtral-8x7b", dict(num_experts_per_tok=9), "num_experts_per_tok: top_k (9) cannot exceed experts (8)"),
    ("mixtral-8x7b", dict(tie_word_embeddings="false"), "tie_word_embeddings: must be true or false"),
    ("gpt2", dict(n_head=7), "n_head: heads (7) must divide d_model (768)"),
    ("deepseek-v3", dict(moe_layer_freq=2), "moe_layer_freq: 2 is not supported"),
    ("llama3-8b", dict(num_dense_layers=2), "num_dense_layers: napkin does not know how this key changes"),
    ("deepseek-v3", dict(num_experts_per_tok=300), "num_experts_per_tok: top_k (300) cannot exceed"),
]


@pytest.mark.parametrize("base, changes, message", BAD)
def test_bad_config_names_file_and_key(tmp_path, base, changes, message):
    path = _write(tmp_path, base, **changes)
    with pytest.raises(SpecError) as err:
        spec_from_hf_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("base, changes, message", BAD[:4])
def test_bad_config_through_the_cli_is_one_line_exit_2(cli, tmp_path, base, changes, message):
    path = _write(tmp_path, base, **changes)
    out = cli("flops", "--model", str(path), "--tokens", "1e9")
    assert out.exit_code == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_invalid_json_and_missing_file(cli, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama",')
    out = cli("models", "show", str(bad))
    assert out.exit_code == 2 and "not valid JSON (line 1" in out.stderr
    out = cli("models", "show", str(tmp_path / "nope.json"))
    assert out.exit_code == 2 and "no such file" in out.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_transformers_meta_model_has_the_same_parameter_count(name):
    """Only where transformers is installed (it is not a dependency)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    cfg = transformers.AutoConfig.from_pretrained(FIXTURES / name)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in model.parameters()) == count_params(get_model(name)).params
