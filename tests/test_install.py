"""The wheel carries the spec catalogs: installed (not editable) and run from elsewhere, it finds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_specs_and_runs_from_another_directory(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (in the test extra)")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(wheels.glob("napkin-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "napkin/_data/hardware_specs/h100-sxm.yaml" in names
    assert "napkin/py.typed" in names
    assert any(n.startswith("napkin/_data/model_specs/") for n in names)
    assert "napkin/specs/builtin_specs.json" in names  # the precompiled catalogs (tools/compile_specs.py)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("NAPKIN_SPECS_DIR", None)
    code = ("import json, sys, napkin, napkin.specs.catalog as c; napkin.hardware_catalog(); napkin.model_catalog(); "
            "print(json.dumps([napkin.__file__, str(c.builtin_dir('hardware_specs')), 'yaml' in sys.modules]))")
    where = json.loads(subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, check=True,
                                      capture_output=True, text=True).stdout)
    assert where[0].startswith(str(site)) and where[1].startswith(str(site))
    assert where[2] is False  # the wheel's catalogs load from the precompiled JSON, made from the YAML it carries
    out = subprocess.run([sys.executable, "-m", "napkin", "train-time", "--params", "70e9", "--tokens", "15e12",
                          "--gpus", "1024", "--json"], cwd=elsewhere, env=env, check=True, capture_output=True,
                         text=True)
    assert abs(json.loads(out.stdout)["days"] - 143.9266) < 1e-3
