"""Hostile files, full disks and ignored flags (issue 12): each case reproduced on the CLI, refused in one line.

File contents (spec YAML, config.json), spec directories (layout, permissions, duplicates), a local folder named
like a catalog model, stdout on a full disk, and flags that were accepted and then ignored. Every case here printed
a traceback, hung, or silently answered something else before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import napkin
from napkin.errors import InputError, for_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
LLAMA_CONFIG = json.loads((FIXTURES / "llama3-8b" / "config.json").read_text())
TRAIN = ("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json")


def _one_line_error(out, *needles: str) -> str:
    assert out.exit_code == 2, (out.exit_code, out.stdout[-500:], out.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(line.startswith("napkin: error: ") for line in lines), out.stderr
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)
    return out.stderr


def _hardware_doc(**changes) -> dict:
    from napkin.specs.catalog import builtin_dir

    doc = yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    return {**doc, "name": "my-gpu", "aliases": [], **changes}


def _model_doc(**changes) -> dict:
    doc = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    return {**doc, "name": "my-model", "aliases": [], **changes}


def _specs_dir(root: Path, folder: str, text: str, name: str = "x.yaml") -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / name).write_text(text, encoding="utf-8")
    return root


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    return path


# --- tracebacks and hangs from file contents --------------------------------------------------------------------------

def test_a_5000_digit_integer_in_a_spec_is_one_line_even_for_a_command_that_never_uses_it(cli, tmp_path):
    text = yaml.safe_dump(_hardware_doc()).replace("tdp_w: 700", "tdp_w: " + "7" * 5000)
    d = _specs_dir(tmp_path, "hardware_specs", text)
    out = cli(*TRAIN, env={"NAPKIN_SPECS_DIR": str(d)})
    _one_line_error(out, "x.yaml (line", "an integer of 5000 characters")


def test_a_5000_digit_integer_in_a_config_json_is_one_line(cli, tmp_path):
    path = _config(tmp_path, json.dumps(LLAMA_CONFIG).replace('"hidden_size": 4096', '"hidden_size": ' + "4" * 5000))
    _one_line_error(cli("models", "show", str(path)), "config.json: an integer of 5000 characters")


@pytest.mark.parametrize("field", ["d_model", "vocab", "max_context"])
@pytest.mark.parametrize("value", [10**30, 10**400])  # past any size, and past the float range
@pytest.mark.parametrize("command", [("models", "show", "my-model"), ("models", "list"),
                                     ("flops", "--model", "my-model", "--tokens", "1e9"),
                                     ("memory", "--model", "my-model"),
                                     ("train-time", "--model", "my-model", "--tokens", "1e12", "--gpus", "8")])
def test_integers_past_the_float_range_in_a_model_spec(cli, tmp_path, field, value, command):
    d = _specs_dir(tmp_path, "model_specs", yaml.safe_dump(_model_doc(**{field: value})))
    err = _one_line_error(cli(*command, env={"NAPKIN_SPECS_DIR": str(d)}), "x.yaml")
    assert ("implausibly large" in err and f"{field}:" in err) or "an integer of 401 characters" in err


def test_hidden_size_past_the_float_range_in_a_config_json(cli, tmp_path):
    path = _config(tmp_path, json.dumps({**LLAMA_CONFIG, "hidden_size": 10**30}))
    _one_line_error(cli("flops", "--model", str(path), "--tokens", "1e9"), "hidden_size: ", "implausibly large")


def test_json_nested_100000_deep(cli, tmp_path):
    text = json.dumps(LLAMA_CONFIG)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    _one_line_error(cli("models", "show", str(_config(tmp_path, text))), "nested too deeply")


@pytest.mark.parametrize("key,value,says", [("model_type", [], 'model_type: must be a string such as "llama", got []'),
                                            ("architectures", True, "architectures: must be a list of class names"),
                                            ("tie_word_embeddings", "false",
                                             "tie_word_embeddings: must be true or false")])
def test_config_json_keys_of_the_wrong_type(cli, tmp_path, key, value, says):
    path = _config(tmp_path, json.dumps({**LLAMA_CONFIG, key: value}))
    _one_line_error(cli("models", "show", str(path)), says)


def test_a_specs_dir_napkin_may_not_enter(cli, tmp_path, monkeypatch):
    """Path.is_dir raises PermissionError where the parent may not be searched (as root: mocked)."""
    d = tmp_path / "locked"
    d.mkdir()
    real = Path.is_dir

    def is_dir(self):
        if self == d:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    _one_line_error(cli("--specs-dir", str(d), *TRAIN), "cannot be read: Permission denied")


def test_an_unreadable_specs_dir_is_refused_not_skipped(cli, tmp_path, monkeypatch):
    d = _specs_dir(tmp_path, "hardware_specs", yaml.safe_dump(_hardware_doc()))
    from napkin.specs import catalog

    real = catalog.os.access
    monkeypatch.setattr(catalog.os, "access", lambda p, mode: Path(p) != d and real(p, mode))
    _one_line_error(cli("--specs-dir", str(d), "hardware", "show", "my-gpu"), "permission denied",
                    "silently use the built-in specs")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_specs_folder_for_real(cli, tmp_path):
    d = _specs_dir(tmp_path, "hardware_specs", yaml.safe_dump(_hardware_doc()))
    (d / "hardware_specs").chmod(0)
    try:
        _one_line_error(cli("--specs-dir", str(d), "hardware", "show", "my-gpu"), "cannot be read")
    finally:
        (d / "hardware_specs").chmod(0o755)


def test_an_unreadable_specs_folder_is_refused_not_skipped(cli, tmp_path, monkeypatch):
    d = _specs_dir(tmp_path, "hardware_specs", yaml.safe_dump(_hardware_doc()))
    from napkin.specs import catalog

    real = catalog.os.scandir

    def scandir(path):
        if Path(path) == d / "hardware_specs":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(catalog.os, "scandir", scandir)
    _one_line_error(cli("--specs-dir", str(d), "hardware", "list"), "hardware_specs' cannot be read",
                    "silently skip")


@pytest.mark.parametrize("source", ["yaml", "config.json"])
@pytest.mark.parametrize("command", [("models", "show", "{m}"), ("flops", "--model", "{m}", "--tokens", "1e9"),
                                     ("memory", "--model", "{m}"), ("inference", "--model", "{m}"),
                                     ("train-time", "--model", "{m}", "--tokens", "1e12", "--gpus", "8"),
                                     ("validate", "--model", "{m}", "--device", "cpu")])
def test_a_trillion_layers_is_refused_at_once(cli, tmp_path, source, command):
    if source == "yaml":
        d = _specs_dir(tmp_path, "model_specs", yaml.safe_dump(_model_doc(layers=10**12)))
        args, env, key = [a.replace("{m}", "my-model") for a in command], {"NAPKIN_SPECS_DIR": str(d)}, "layers: "
    else:
        path = _config(tmp_path, json.dumps({**LLAMA_CONFIG, "num_hidden_layers": 10**12}))
        args, env, key = [a.replace("{m}", str(path)) for a in command], None, "num_hidden_layers: "
    start = time.perf_counter()
    out = cli(*args, env=env)
    assert time.perf_counter() - start < 10
    _one_line_error(out, key, "1,000,000,000,000 is implausibly large (at most 10,000")


# --- files that are silently not what the user meant ------------------------------------------------------------------

def test_a_spec_folder_given_one_level_too_deep_is_said(cli):
    from napkin.specs.catalog import builtin_dir

    _one_line_error(cli("--specs-dir", str(builtin_dir("hardware_specs")), "hardware", "list"),
                    "holds", "YAML files directly", "move them there")


def test_two_user_files_of_one_name_are_refused_naming_both(cli, tmp_path):
    text = yaml.safe_dump(_hardware_doc())
    _specs_dir(tmp_path, "hardware_specs", text, "a.yaml")
    _specs_dir(tmp_path, "hardware_specs", text, "b.yaml")
    _one_line_error(cli("--specs-dir", str(tmp_path), "hardware", "show", "my-gpu"),
                    "b.yaml: name: 'my-gpu' is also defined in", "a.yaml")


@pytest.mark.parametrize("how", ["two flags", "flag and variable", "two in the variable"])
def test_two_user_directories_of_one_name_are_refused_naming_both(cli, tmp_path, how):
    text = yaml.safe_dump(_hardware_doc())
    one = _specs_dir(tmp_path / "one", "hardware_specs", text)
    two = _specs_dir(tmp_path / "two", "hardware_specs", text)
    args, env = {"two flags": (["--specs-dir", str(one), "--specs-dir", str(two)], None),
                 "flag and variable": (["--specs-dir", str(one)], {"NAPKIN_SPECS_DIR": str(two)}),
                 "two in the variable": ([], {"NAPKIN_SPECS_DIR": f"{one}{os.pathsep}{two}"})}[how]
    _one_line_error(cli(*args, "hardware", "show", "my-gpu", env=env), str(one / "hardware_specs" / "x.yaml"),
                    str(two / "hardware_specs" / "x.yaml"))


def test_one_directory_given_as_flag_and_variable_is_read_once(cli, tmp_path):
    d = _specs_dir(tmp_path, "hardware_specs", yaml.safe_dump(_hardware_doc()))
    out = cli("--specs-dir", str(d), "hardware", "show", "my-gpu", "--json", env={"NAPKIN_SPECS_DIR": str(d)})
    assert out.exit_code == 0, out.stderr


def test_a_yaml_key_given_twice_is_refused_with_both_lines(cli, tmp_path):
    text = yaml.safe_dump(_hardware_doc(), sort_keys=False) + "tdp_w: 1000\n"
    d = _specs_dir(tmp_path, "hardware_specs", text)
    _one_line_error(cli("--specs-dir", str(d), *TRAIN), "'tdp_w' is given twice (first on line",
                    "would keep the last one silently")


def test_a_local_folder_named_like_a_catalog_model_does_not_replace_it(cli, tmp_path, monkeypatch):
    llama = napkin.count_params(napkin.get_model("llama3-8b")).params  # before the folder is there
    gpt2 = napkin.count_params(napkin.get_model(str(FIXTURES / "gpt2"))).params
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llama3-8b").mkdir()
    (tmp_path / "llama3-8b" / "config.json").write_text((FIXTURES / "gpt2" / "config.json").read_text())
    catalog = cli("models", "show", "llama3-8b", "--json")
    assert catalog.exit_code == 0, catalog.stderr
    assert catalog.json()["params"]["params"] == llama
    local = cli("models", "show", "./llama3-8b", "--json")  # a path: the file, and the output names it
    assert local.exit_code == 0, local.stderr
    assert local.json()["params"]["params"] == gpt2
    assert local.json()["file"] == "./llama3-8b"
    assert str(Path("llama3-8b") / "config.json") in local.json()["spec"]["sources"][0]


def test_an_empty_local_folder_named_like_a_catalog_model_breaks_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llama3-8b").mkdir()
    assert cli("memory", "--model", "llama3-8b", "--json").exit_code == 0
    _one_line_error(cli("memory", "--model", "./llama3-8b"), "a folder without a config.json")


def test_a_bare_name_that_is_only_a_local_folder_says_how_to_read_it(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel").mkdir()
    (tmp_path / "mymodel" / "config.json").write_text((FIXTURES / "gpt2" / "config.json").read_text())
    _one_line_error(cli("models", "show", "mymodel"), "unknown model 'mymodel'", "write ./mymodel")


@pytest.mark.parametrize("kind,changes,says", [
    ("hardware", {"tdp_w": True}, "tdp_w: expected a number, got true (a boolean)"),
    ("hardware", {"matmul_efficiency": True}, "matmul_efficiency: expected a number, got true (a boolean)"),
    ("model", {"layers": True}, "layers: expected a whole number, got true (a boolean)"),
    ("model", {"layers": "٣"}, "layers: expected a whole number, got '٣' (a string)"),
    ("model", {"tied_embeddings": "false"}, "tied_embeddings: expected true or false, got 'false' (a string)"),
])
def test_booleans_and_unicode_digits_where_numbers_belong(cli, tmp_path, kind, changes, says):
    if kind == "hardware":
        d = _specs_dir(tmp_path, "hardware_specs", yaml.safe_dump(_hardware_doc(**changes), allow_unicode=True))
        out = cli("--specs-dir", str(d), "hardware", "show", "my-gpu")
    else:
        d = _specs_dir(tmp_path, "model_specs", yaml.safe_dump(_model_doc(**changes), allow_unicode=True))
        out = cli("--specs-dir", str(d), "models", "show", "my-model")
    _one_line_error(out, says)


@pytest.mark.parametrize("value", ["٣", "٣B", "８"])
def test_unicode_digits_on_the_command_line(cli, value):
    _one_line_error(cli("train-time", "--params", value, "--tokens", "1e12", "--gpus", "8"), "cannot read")


# --- output that can be lost ------------------------------------------------------------------------------------------

@pytest.mark.slow  # a real napkin process writing to /dev/full (in-process: test_fuzz_cli.py)
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["hardware", "list"], list(TRAIN)])
def test_stdout_on_a_full_disk_is_one_line_and_exit_1(args):
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "napkin", *args], stdout=full, stderr=subprocess.PIPE, text=True,
                             timeout=60, check=False)
    assert out.returncode == 1, out.stderr
    assert out.stderr == "napkin: error: cannot write the output: No space left on device\n"


# --- flags accepted and then ignored ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,says", [
    (["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--mfu-fraction", "0.5"],
     "--mfu-fraction would be ignored without --mfu-from"),
    (["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--mfu-fraction", "5"],
     "--mfu-fraction would be ignored without --mfu-from"),
    (["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--seq", "2048"],
     "--seq would be ignored without --model"),
    (["budget", "--gpus", "8", "--days", "7", "--seq", "2048"], "--seq would be ignored without --model"),
    (["budget", "--gpus", "8", "--days", "7", "--recompute", "full"], "--recompute would be ignored without --model"),
    (["max-model", "--gpus", "8", "--tp", "3"], "--tp would be ignored without --seq, --micro-batch"),
    (["max-model", "--gpus", "8", "--pp", "1000"], "--pp would be ignored"),
    (["max-model", "--gpus", "8", "--recompute", "full"], "--recompute would be ignored"),
    (["max-model", "--gpus", "8", "--no-flash-attention"], "--no-flash-attention would be ignored"),
    (["roofline", "--context", "4096"], "--context would be ignored without --model"),
    (["roofline", "--batch", "8", "--context", "4096"], "--batch and --context would be ignored without --model"),
    (["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--zero", "3"],
     "--zero would be ignored without a layout"),
    (["train-time", "--model", "gpt2", "--tokens", "1e9", "--gpus", "8", "--tp", "2", "--dtype", "fp8"],
     "--dtype would be ignored with a layout"),
])
def test_a_flag_that_would_be_ignored_is_refused(cli, args, says):
    _one_line_error(cli(*args), says)


@pytest.mark.parametrize("args", [
    ["max-model", "--gpus", "8", "--seq", "2048", "--tp", "2", "--recompute", "full", "--no-flash-attention"],
    ["roofline", "--model", "llama3-8b", "--batch", "8", "--context", "4096"],
    ["budget", "--gpus", "8", "--days", "7", "--model", "gpt2", "--seq", "1024"],
    ["train-time", "--model", "gpt2", "--tokens", "1e9", "--gpus", "8", "--seq", "1024"],
])
def test_the_same_flags_take_effect_where_they_belong(cli, args):
    out = cli(*args, "--json")
    assert out.exit_code == 0, out.stderr


def test_an_mfu_just_above_1_is_shown_with_its_digits(cli):
    _one_line_error(cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--mfu", "1.0000001"),
                    "got 1.0000001")
    with pytest.raises(InputError, match=r"got 1\.0000001"):
        napkin.train_time("h100", 8, 7e9, 1e12, mfu=1.0000001)


def test_a_gpu_count_past_2_to_the_53_is_refused_not_rounded(cli):
    _one_line_error(cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "9223372036854775809"),
                    "at most 2^53", "got 9223372036854775809")
    with pytest.raises(InputError, match=r"`gpus` must be at most 2\^53"):
        napkin.train_time("h100", 9223372036854775809, 7e9, 1e12)


def test_a_zero_step_time_names_the_flag_that_exists(cli):
    out = cli("mfu", "--model", "llama3-8b", "--gpus", "8", "--step-time", "0", "--batch", "4", "--seq", "4096")
    err = _one_line_error(out, "--step-time")
    assert "--step-time-s" not in err
    with pytest.raises(InputError) as e:
        napkin.mfu("llama3-8b", "h100", 8, step_time_s=0, batch=4, seq=4096)
    assert "--step-time" in for_cli(str(e.value)) and "--step-time-s" not in for_cli(str(e.value))


def test_the_api_refuses_a_model_name_of_the_wrong_type():
    with pytest.raises(TypeError, match="model must be a model name"):
        napkin.get_model([])
    with pytest.raises(TypeError, match="hardware must be a GPU name"):
        napkin.get_hardware(None)
