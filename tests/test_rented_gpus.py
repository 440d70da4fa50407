"""Every GPU a user rents (issue 24 item 6): the parts, the names users type, figures from their datasheets, what
is left out where a vendor publishes nothing, and the one-line custom GPU for what the catalog lacks."""

from __future__ import annotations

import json

import pytest

import napkin
from napkin.errors import InputError, UnknownNameError
from napkin.specs.catalog import builtin_dir, get_hardware, hardware_catalog
from napkin.specs.custom_gpu import custom_hardware

RENTED = ["rtx-4090", "rtx-5090", "a10g", "rtx-a6000", "rtx-6000-ada", "l40", "h20", "tpu-v5e", "tpu-v5p", "tpu-v6e"]


def _one_line(out, *needles: str) -> str:
    assert out.exit_code == 2, (out.exit_code, out.stdout[-300:], out.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("napkin: error: "), out.stderr
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)
    return out.stderr


def test_every_rented_gpu_is_in_the_catalog_with_a_source_per_file():
    names = hardware_catalog().names()
    for name in RENTED:
        assert name in names
        text = (builtin_dir("hardware_specs") / f"{name}.yaml").read_text()
        assert "sources:" in text and ("nvidia.com" in text or "cloud.google.com" in text or "datasheet" in text
                                       or "whitepaper" in text or "baseten" in text.lower())


@pytest.mark.parametrize("typed, name", [
    ("RTX-4090", "rtx-4090"), ("4090", "rtx-4090"), ("rtx4090", "rtx-4090"), ("rtx-4090", "rtx-4090"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("5090", "rtx-5090"), ("RTX 5090", "rtx-5090"), ("a10g", "a10g"),
    ("A10G", "a10g"), ("a6000", "rtx-a6000"), ("RTX A6000", "rtx-a6000"), ("rtx 6000 ada", "rtx-6000-ada"),
    ("L40", "l40"), ("l40s", "l40s"), ("H20", "h20"), ("v5e", "tpu-v5e"), ("TPU v5 lite", "tpu-v5e"),
    ("v5p", "tpu-v5p"), ("v6e", "tpu-v6e"), ("trillium", "tpu-v6e"), ("h200", "h200"),
])
def test_names_users_type_resolve(typed, name):
    assert get_hardware(typed).name == name


def test_rtx_4090_through_the_cli_is_the_catalog_part(cli):
    out = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--gpu", "RTX-4090", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["peak_flops_per_s"] == 165.2e12  # Ada whitepaper: bf16 with FP32 accumulate, dense


def test_datasheet_figures_spot_checks():
    cat = hardware_catalog()
    # (name, dense bf16, memory, bandwidth, TDP) as each file's sources print them
    for name, bf16, mem, bw, tdp in [("rtx-4090", 165.2e12, 24e9, 1008e9, 450),
                                     ("rtx-5090", 209.5e12, 32e9, 1792e9, 575),
                                     ("rtx-a6000", 154.8e12, 48e9, 768e9, 300),
                                     ("rtx-6000-ada", 364.2e12, 48e9, 960e9, 300),
                                     ("l40", 181.05e12, 48e9, 864e9, 300),
                                     ("h20", 148e12, 96e9, 4.0e12, 400),
                                     ("tpu-v5e", 197e12, 16e9, 819e9, None),
                                     ("tpu-v5p", 459e12, 95e9, 2765e9, None),
                                     ("tpu-v6e", 918e12, 32e9, 1638e9, None)]:
        s = cat.get(name)
        assert (s.peak("bf16"), s.memory_bytes, s.memory_bandwidth_bytes_per_s, s.tdp_w) == (bf16, mem, bw, tdp)
    # sparsity only where the vendor prints it: NVIDIA's 2:4 column, none for the H20 or the TPUs
    assert cat.get("l40").peak("fp8", sparse=True) == 724e12
    for name in ("h20", "tpu-v5e"):
        with pytest.raises(InputError, match="no sparse bf16 figure"):
            cat.get(name).peak("bf16", sparse=True)
    assert cat.get("tpu-v6e").peak("int8") == 1836e12
    assert cat.get("rtx-a6000").interconnect_bandwidth_bytes_per_s == 64e9  # PCIe; the NVLink bridge is in notes


def test_a_part_without_a_published_peak_says_so_in_one_line(cli):
    out = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--gpu", "a10g")
    _one_line(out, "a10g has no published peak", "custom:peak=RATE,memory=24GB,bw=600GB/s")
    # memory needs no peak: the A10G answers it
    out = cli("memory", "--model", "llama3-8b", "--gpu", "a10g", "--seq", "1024", "--finetune", "qlora")
    assert out.exit_code in (0, 1), out.stderr  # 1 = does not fit; never a traceback
    assert "Traceback" not in out.stdout + out.stderr


def test_no_published_tdp_means_no_energy_and_a_note(cli):
    out = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--gpu", "v5e", "--json")
    assert out.exit_code == 0, out.stderr
    r = out.json()
    assert r["energy_kwh"] is None
    assert any("no published TDP" in n for n in r["notes"])
    out = cli("hardware", "show", "tpu-v6e")
    assert out.exit_code == 0 and "not published" in out.stdout
    out = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--gpu", "all")
    assert out.exit_code == 0, out.stderr


def test_custom_gpu_in_one_line(cli):
    line = "custom:peak=989TFLOP/s,memory=80GB,bw=3.35TB/s"
    out = cli("train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024", "--gpu", line, "--json")
    assert out.exit_code == 0, out.stderr
    r = out.json()
    assert r["peak_flops_per_s"] == 989e12
    api = napkin.train_time(hardware=line, gpus=1024, params=70e9, tokens=15e12)
    assert api.days == pytest.approx(r["days"], rel=1e-12)
    hw = custom_hardware("custom:peak=989T,memory=80GiB,bw=3.35TB/s,fp8=1979T,link=450GB/s,net=400Gb/s,node=8,tdp=700W")
    assert (hw.peak("fp8"), hw.memory_bytes, hw.scale_up_bandwidth_bytes_per_s, hw.scale_out_bandwidth_bytes_per_s,
            hw.node_gpus, hw.tdp_w) == (1979e12, 80 * 2**30, 450e9, 50e9, 8, 700)
    out = cli("memory", "--model", "llama3-8b", "--gpu", line, "--seq", "2048", "--json")
    assert out.exit_code in (0, 1) and json.loads(out.stdout)["inputs"]["gpu"] == "custom"


@pytest.mark.parametrize("line, needle", [
    ("custom:", "nothing after 'custom:'"),
    ("custom:peak=989T,memory=80GB", "missing bw"),
    ("custom:peek=989T,memory=80GB,bw=3TB/s", "did you mean peak?"),
    ("custom:peak=989GB/s,memory=80GB,bw=3TB/s", "is a bandwidth"),
    ("custom:peak=989T,memory=80GB,bw=3TB/s,peak=1T", "'peak' is given twice"),
    ("custom:peak=1e30,memory=80GB,bw=3TB/s", "implausibly large"),
    ("custom:peak=-1,memory=80GB,bw=3TB/s", "greater than 0"),
    ("custom:peak=nan,memory=80GB,bw=3TB/s", "finite"),
    ("custom:peak 989T", "is not key=value"),
    ("custom:peak=989T,memory=80GB,bw=3TB/s,node=0.5", "node="),
    ("custom:peak=989T,memory=80GB,bw=3TB/s,tdp=x", "tdp="),
])
def test_malformed_custom_gpu_is_one_line(cli, line, needle):
    out = cli("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--gpu", line)
    _one_line(out, needle, "custom:peak=989TFLOP/s,memory=80GB,bw=3.35TB/s")


def test_unknown_gpu_suggests_close_names_and_the_custom_line():
    with pytest.raises(UnknownNameError) as e:
        get_hardware("RTX-4080")
    assert "rtx-4090" in str(e.value) and "custom:peak=" in str(e.value)


def test_a_part_without_a_network_figure_steps_within_one_node(cli):
    """No scale-out figure (RTX 4090): one node needs none, more GPUs ask for it in one line."""
    one = cli("step-time", "--model", "llama3-8b", "--gpu", "rtx-4090", "--gpus", "4", "--seq", "2048", "--zero",
              "3", "--json")
    assert one.exit_code == 0, one.stderr
    assert any("publishes no scale-out network" in n for n in one.json()["notes"])
    two = cli("step-time", "--model", "llama3-8b", "--gpu", "rtx-4090", "--gpus", "16", "--seq", "2048")
    assert two.exit_code == 2 and "--inter-node-bandwidth" in two.stderr


def test_an_fp8_cache_is_not_advised_when_the_cache_is_fp8():
    import napkin

    kw = dict(batch=32, prompt=7000, generate=512, gpus=8)  # long enough that the KV reads stay below the ridge
    bf16 = napkin.inference("llama3-70b", "h100", **kw)
    fp8 = napkin.inference("llama3-70b", "h100", kv_dtype="fp8", **kw)
    assert any("an fp8 cache help" in n for n in bf16.notes)
    assert not any("fp8 cache help" in n for n in fp8.notes)
