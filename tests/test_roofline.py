"""The roofline (Williams, Waterman & Patterson 2009): ridge = peak / bandwidth, attainable = min(peak, I·BW),
and a model's operations placed on it with the intensities the lecture predicts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from serving_specs import LLAMA2_7B, LLAMA3_70B, STARCODER

from napkin.accounting.roofline import attainable, ridge_point, roofline
from napkin.specs.catalog import get_hardware
from napkin.specs.model import TransformerSpec

H100 = get_hardware("h100")


def ops(r):  # noqa: ANN001, ANN201
    return {o.name.split(" (")[0] + " " + o.phase: o for o in r.ops}


def test_ridge_points_from_datasheets() -> None:
    # H100 SXM: 989.5e12 dense bf16 FLOP/s / 3.35e12 B/s; A100 80GB: 312e12 / 2.039e12.
    assert roofline(H100).ridge_flops_per_byte == pytest.approx(989.5e12 / 3.35e12, rel=1e-12)
    assert roofline(get_hardware("a100")).ridge_flops_per_byte == pytest.approx(312e12 / 2.039e12, rel=1e-12)
    assert roofline(H100, "fp8").ridge_flops_per_byte == pytest.approx(2 * 989.5e12 / 3.35e12, rel=1e-12)
    assert roofline(H100).ops == []


@given(i=st.floats(1e-3, 1e5))
def test_attainable_is_the_min_of_roof_and_slope(i: float) -> None:
    P, BW = 989.5e12, 3.35e12
    a = attainable(P, BW, i)
    assert a == min(P, i * BW)
    assert (a == P) == (i >= ridge_point(P, BW))


def test_decode_matmul_intensity_is_about_the_batch() -> None:
    # 2·B·W FLOPs over ~2·W bytes of bf16 weights: intensity ≈ B while B ≪ W / activations.
    for b in (1, 8, 64):
        o = ops(roofline(H100, spec=LLAMA2_7B, batch=b))["matmuls decode"]
        assert 0.95 * b < o.intensity_flops_per_byte < b  # the activations read and written pull it below B
        assert o.bound == "memory"
    assert ops(roofline(H100, spec=LLAMA2_7B, batch=512))["matmuls decode"].bound == "compute"


@pytest.mark.parametrize("model, ratio", [(LLAMA2_7B, 1), (LLAMA3_70B, 8), (STARCODER, 48)])
def test_decode_attention_intensity_is_heads_over_kv_heads(model: TransformerSpec, ratio: int) -> None:
    # Per cached position: 2·2·a·d FLOPs against 2·k·d bf16 elements = 4·k·d bytes → a/k FLOP/B (Shazeer 2019:
    # MQA raises decode attention's intensity by the head count). The q/o reads vanish as c grows.
    o = ops(roofline(H100, spec=model, batch=4, context=8192))["attention decode"]
    assert o.intensity_flops_per_byte == pytest.approx(ratio, rel=0.02)
    assert o.intensity_flops_per_byte < ratio
    o8 = ops(roofline(H100, spec=model, batch=4, context=8192, kv_dtype="fp8"))["attention decode"]
    assert o8.intensity_flops_per_byte == pytest.approx(2 * ratio, rel=0.02)


def test_prefill_is_compute_bound_and_elementwise_is_not() -> None:
    r = ops(roofline(H100, spec=LLAMA3_70B, batch=1, prompt=4096))
    assert r["matmuls prefill"].bound == "compute" and r["attention prefill"].bound == "compute"
    # Residual add: 1 FLOP per element, 3 bf16 accesses (2 reads + 1 write) = 6 bytes.
    assert r["residual add any"].intensity_flops_per_byte == pytest.approx(1 / 6)
    assert r["residual add any"].bound == "memory"


def test_bound_agrees_with_the_ridge() -> None:
    r = roofline(H100, spec=LLAMA3_70B, batch=32, prompt=512, context=2048)
    for o in r.ops:
        assert (o.bound == "compute") == (o.intensity_flops_per_byte >= r.ridge_flops_per_byte)
        assert o.time_s == pytest.approx(max(o.flops / r.peak_flops_per_s, o.bytes / r.bandwidth_bytes_per_s))


@pytest.fixture(scope="module")
def specs_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("specs")
    (root / "model_specs").mkdir()
    doc = LLAMA2_7B.model_dump(mode="json", exclude_none=True) | {"name": "fx-llama2-7b"}
    (root / "model_specs" / "fx.yaml").write_text(yaml.safe_dump(doc))
    return str(root)


def test_cli_json_equals_api(cli, specs_dir: str) -> None:
    r = cli("--specs-dir", specs_dir, "roofline", "--gpu", "h100", "-m", "fx-llama2-7b", "-b", "8", "--json")
    assert r.exit_code == 0, r.stderr
    api = roofline(H100, spec=LLAMA2_7B.model_copy(update={"name": "fx-llama2-7b"}), batch=8)
    assert r.json() == json.loads(api.model_dump_json())


def test_cli_table(cli, specs_dir: str) -> None:
    r = cli("--specs-dir", specs_dir, "roofline", "--gpu", "a100", "-m", "fx-llama2-7b")
    assert r.exit_code == 0, r.stderr
    assert "ridge point" in r.stdout and "153.0 FLOP/B" in r.stdout and "attention (decode)" in r.stdout


def test_plot_without_matplotlib_is_one_line(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    r = cli("roofline", "--gpu", "h100", "--plot", str(tmp_path / "r.png"))
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "napkin[plot]" in r.stderr and "matplotlib" in r.stderr
    assert not (tmp_path / "r.png").exists()


def test_plot_writes_a_png(cli, specs_dir: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "roofline.png"
    r = cli("--specs-dir", specs_dir, "roofline", "--gpu", "h100", "-m", "fx-llama2-7b", "--plot", str(out))
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_linear_net_is_refused(cli) -> None:
    r = cli("roofline", "-m", "cruncher")
    assert r.exit_code == 2 and "not a transformer" in r.stderr
