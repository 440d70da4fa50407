"""Spec files: every shipped YAML validates; malformed ones name the file and the field; user dirs override."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from napkin.errors import SpecError
from napkin.specs.catalog import builtin_dir, hardware_catalog
from napkin.specs.hardware import HardwareSpec

HW_FILES = sorted(builtin_dir("hardware_specs").glob("*.yaml"))
REQUIRED_PARTS = ["a100-sxm-40gb", "a100-sxm-80gb", "a100-pcie-80gb", "h100-sxm", "h100-pcie", "h100-nvl", "h200",
                  "b200", "gb200", "l40s", "l4", "v100-sxm2-32gb", "mi300x", "mi325x"]


@pytest.mark.parametrize("path", HW_FILES, ids=lambda p: p.name)
def test_every_hardware_yaml_validates(path):
    spec = HardwareSpec.model_validate(yaml.safe_load(path.read_text()))
    assert path.stem == spec.name
    assert spec.sources
    # NVIDIA/AMD publish sparse = 2 × dense for tensor-core dtypes; fp64/fp32 are never sparse.
    assert "fp32" not in {d.value for d in spec.sparse_dtypes}
    assert "fp64" not in {d.value for d in spec.sparse_dtypes}


def test_catalog_has_the_parts_the_issue_names():
    assert set(REQUIRED_PARTS) <= set(hardware_catalog().names())


def test_datasheet_figures_spot_checks():
    # Cross-checked against shared/reference/hardware-datasheets.md (vendor datasheets).
    cat = hardware_catalog()
    assert cat.get("h100").peak("bf16") == 989.5e12
    assert cat.get("a100").peak("bf16") == 312e12
    assert cat.get("h100-pcie").peak("bf16") == 756.5e12
    assert cat.get("mi300x").peak("bf16") == 1307.4e12
    assert cat.get("h200").memory_bytes == 141e9
    assert cat.get("v100").peak("fp16") == 125e12
    assert cat.get("b200").peak("fp4", sparse=True) == 18000e12


def _write(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / "hardware_specs"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(text)
    return p


def _base() -> dict:
    return yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())


def test_user_dir_overrides_builtin(tmp_path, cli):
    spec = _base()
    spec["peak_flops_per_s"]["bf16"] = 500e12
    spec["aliases"] = ["h100"]
    _write(tmp_path, "mine.yaml", yaml.safe_dump(spec))
    assert hardware_catalog([tmp_path]).get("h100").peak("bf16") == 500e12
    out = cli("--specs-dir", str(tmp_path), "train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8",
              "--json")
    assert out.json()["peak_flops_per_s"] == 500e12
    env = cli("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json",
              env={"NAPKIN_SPECS_DIR": str(tmp_path)})
    assert env.json()["peak_flops_per_s"] == 500e12


def test_user_dir_adds_a_new_part(tmp_path):
    spec = _base()
    spec.update(name="my-gpu", display_name="My GPU", aliases=["mine"])
    _write(tmp_path, "my-gpu.yaml", yaml.safe_dump(spec))
    assert hardware_catalog([tmp_path]).get("mine").name == "my-gpu"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda s: s.pop("memory_bytes"), "memory_bytes"),
        (lambda s: s.update(tdp_watts=700), "tdp_watts"),
        (lambda s: s["peak_flops_per_s"].update(bf16=-1), "peak_flops_per_s.bf16"),
        (lambda s: s["peak_flops_per_s"].update(bf17=1e12), "peak_flops_per_s.bf17"),
        (lambda s: s.update(sources=[]), "sources"),
        (lambda s: s.update(name="H100 SXM"), "name"),
    ],
)
def test_malformed_spec_names_file_and_field(tmp_path, cli, mutate, field):
    spec = _base()
    mutate(spec)
    path = _write(tmp_path, "bad.yaml", yaml.safe_dump(spec))
    with pytest.raises(SpecError) as e:
        hardware_catalog([tmp_path])
    assert f"{path}: {field}" in str(e.value)
    out = cli("--specs-dir", str(tmp_path), "hardware", "list")
    assert out.exit_code == 2 and f"{path}: {field}" in out.stderr and "Traceback" not in out.stderr


def test_broken_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "broken.yaml", "name: x\n  bad: [\n")
    with pytest.raises(SpecError, match=f"{path}: not valid YAML"):
        hardware_catalog([tmp_path])


def test_missing_specs_dir_is_an_error(cli):
    out = cli("--specs-dir", "/no/such/dir", "hardware", "list")
    assert out.exit_code == 2 and "does not exist" in out.stderr
