"""The built-in catalogs precompiled to JSON (napkin.specs.precompiled, tools/compile_specs.py): up to date with the
YAML, the same specs as the YAML gives, never used where the YAML changed, and yaml not imported for them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napkin.specs import catalog, precompiled

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "compile_specs.py"
FOLDERS = ("hardware_specs", "model_specs", "stack_specs")


def _tool():
    spec = importlib.util.spec_from_file_location("compile_specs", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(folder):
    from napkin.specs.hardware import HardwareSpec
    from napkin.specs.model import ModelSpec
    from napkin.specs.stack import StackSpec

    return {"hardware_specs": HardwareSpec, "model_specs": ModelSpec, "stack_specs": StackSpec}[folder]


def test_the_json_is_up_to_date_with_the_yaml():
    tool = _tool()
    current = precompiled.PATH.read_text(encoding="utf-8") if precompiled.PATH.is_file() else ""
    wanted = tool.build()
    changed = "; ".join(tool.changes(current, wanted))
    assert current == wanted, f"{precompiled.PATH.name} is out of date ({changed}): run python tools/{TOOL.name}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_precompiled_specs_are_the_yaml_specs(folder):
    directory = catalog.builtin_dir(folder)
    docs = precompiled.documents(folder, catalog._yaml_files(directory))
    assert docs is not None, "the JSON was not made from these YAML files: run python tools/compile_specs.py"
    model = _model(folder)
    from_json = [(path, catalog._validated(path, prefix, doc, model)) for path, prefix, doc in docs]
    from_yaml = catalog._read_specs(directory, model)
    assert [p for p, _ in from_json] == [p for p, _ in from_yaml]
    assert [s for _, s in from_json] == [s for _, s in from_yaml]
    assert [type(s) for _, s in from_json] == [type(s) for _, s in from_yaml]


def _copy(folder, tmp_path):
    target = tmp_path / folder
    shutil.copytree(catalog.builtin_dir(folder), target)
    return target


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_a_changed_folder_is_read_from_yaml(tmp_path, change):
    d = _copy("hardware_specs", tmp_path)
    assert precompiled.documents("hardware_specs", catalog._yaml_files(d)) is not None  # the copy matches
    h100 = d / "h100-sxm.yaml"
    if change == "edit":
        h100.write_text(h100.read_text().replace("name: h100-sxm", "name: h100-sxm  # edited"))
    elif change == "add":
        (d / "extra.yaml").write_text(h100.read_text())
    else:
        h100.unlink()
    assert precompiled.documents("hardware_specs", catalog._yaml_files(d)) is None


def test_an_edited_builtin_is_what_the_catalog_gives(tmp_path, monkeypatch):
    """A YAML edited without rerunning the tool: the catalog reads the YAML, not the stale JSON."""
    d = _copy("hardware_specs", tmp_path)
    h100 = d / "h100-sxm.yaml"
    text = h100.read_text()
    assert "display_name:" in text
    lines = [("display_name: Edited H100" if line.startswith("display_name:") else line) for line in text.splitlines()]
    h100.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(catalog, "builtin_dir", lambda folder: tmp_path / folder)
    catalog._builtin_specs.cache_clear()
    catalog._hardware.cache_clear()
    try:
        assert catalog.get_hardware("h100").display_name == "Edited H100"
    finally:
        catalog._builtin_specs.cache_clear()
        catalog._hardware.cache_clear()


def test_the_tool_refuses_an_invalid_builtin(tmp_path, monkeypatch):
    d = _copy("hardware_specs", tmp_path)
    _copy("model_specs", tmp_path)
    (d / "h100-sxm.yaml").write_text((d / "h100-sxm.yaml").read_text() + "not_a_field: 1\n")
    monkeypatch.setattr(catalog, "builtin_dir", lambda folder: tmp_path / folder)
    from napkin.errors import SpecError

    with pytest.raises(SpecError, match=r"h100-sxm.yaml: not_a_field: unknown field"):
        _tool().build()


@pytest.mark.parametrize("line", ["12: twelve", "released: 2024-01-01"])
def test_the_tool_refuses_what_json_cannot_hold(tmp_path, monkeypatch, line):
    """An int key would come back a string, a date not at all: the tool says so rather than write it. (The spec
    models refuse both already; the check stands behind them, so the models' validation is set aside here.)"""
    d = _copy("hardware_specs", tmp_path)
    _copy("model_specs", tmp_path)
    (d / "h100-sxm.yaml").write_text((d / "h100-sxm.yaml").read_text() + line + "\n")
    monkeypatch.setattr(catalog, "builtin_dir", lambda folder: tmp_path / folder)
    monkeypatch.setattr(catalog, "_validated", lambda path, prefix, doc, model: doc)
    from napkin.errors import SpecError

    with pytest.raises(SpecError, match=r"h100-sxm.yaml: \(top level\): a value does not survive JSON"):
        _tool().build()


def test_same_compares_types_too():
    same = _tool()._same
    assert same({"a": [1, 2.5, "x", None, True]}, {"a": [1, 2.5, "x", None, True]})
    assert not same({"a": 1}, {"a": 1.0}) and not same([True], [1]) and not same({1: "x"}, {"1": "x"})
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})  # the order a YAML file gives is kept


BUILTIN_PROBE = r"""
import sys
import napkin
napkin.hardware_catalog(); napkin.model_catalog()
print("yaml" in sys.modules)
napkin.hardware_catalog([sys.argv[1]])
print("yaml" in sys.modules)
"""


@pytest.mark.slow  # a fresh interpreter
def test_builtin_catalogs_import_no_yaml_and_user_specs_do(tmp_path):
    user = tmp_path / "hardware_specs"
    user.mkdir()
    import yaml

    doc = yaml.safe_load((catalog.builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    doc.update(name="mine", display_name="Mine", aliases=[])
    (user / "mine.yaml").write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-c", BUILTIN_PROBE, str(tmp_path)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "True"]
