"""The figures a step-time model reads from a hardware profile (SMs, matmul ceiling, scale-up and scale-out links),
and the units parsers for bandwidth and time behind the Cluster options."""

from __future__ import annotations

import math
import re

import pytest
import typer
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from napkin import units
from napkin.cli import options
from napkin.errors import InputError, SpecError
from napkin.specs.catalog import builtin_dir, hardware_catalog
from napkin.specs.hardware import HardwareSpec

HW_FILES = sorted(builtin_dir("hardware_specs").glob("*.yaml"))
NETWORK_FIELDS = ["sm_count", "matmul_efficiency", "node_gpus", "scale_up_bandwidth_bytes_per_s",
                  "scale_out_bandwidth_bytes_per_s", "host_link_bandwidth_bytes_per_s"]


def _spec(path) -> HardwareSpec:
    return HardwareSpec.model_validate(yaml.safe_load(path.read_text()))


def _line(path, field: str) -> str:
    """The YAML line of a top-level field, comment included."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith(f"{field}:")]
    assert len(lines) == 1, f"{path.name}: {field} must appear exactly once"
    return lines[0]


@pytest.mark.parametrize("path", HW_FILES, ids=lambda p: p.name)
def test_every_profile_states_every_network_field_with_a_comment(path):
    # A None must be written out (`field: null  # why`), not left out: the file says what is unknown and why.
    for field in NETWORK_FIELDS:
        assert "#" in _line(path, field), f"{path.name}: {field} needs a trailing comment saying where it came from"


# Parts whose vendor publishes no reference system (consumer and workstation cards, the H20, TPUs): a figure the
# step-time model reads may be null there, written out with the reason, and the command asks for the flag instead.
UNPUBLISHED = {"rtx-4090", "rtx-5090", "rtx-a6000", "rtx-6000-ada", "a10g", "h20", "tpu-v5e", "tpu-v5p", "tpu-v6e"}


@pytest.mark.parametrize("path", HW_FILES, ids=lambda p: p.name)
def test_every_profile_has_the_step_time_figures(path):
    s = _spec(path)
    fields = ("sm_count", "node_gpus", "scale_up_bandwidth_bytes_per_s", "scale_out_bandwidth_bytes_per_s",
              "host_link_bandwidth_bytes_per_s")
    for field in fields:
        value = getattr(s, field)
        if value is None:
            assert s.name in UNPUBLISHED, f"{path.name}: {field} is null on a part with a published reference system"
            assert "null" in _line(path, field)
        else:
            assert value > 0
    if s.matmul_efficiency is None:
        assert "null" in _line(path, "matmul_efficiency")
    else:
        assert 0.3 < s.matmul_efficiency <= 1  # a published MAMF, not a typo for a percentage


@pytest.mark.parametrize("path", HW_FILES, ids=lambda p: p.name)
def test_per_direction_figures_never_exceed_the_both_directions_total(path):
    s = _spec(path)
    assert s.interconnect_bandwidth_bytes_per_s is not None
    up = s.scale_up_bandwidth_bytes_per_s or s.interconnect_bandwidth_bytes_per_s / 2
    assert up <= s.interconnect_bandwidth_bytes_per_s
    # The network is never faster than the scale-up domain it leaves, per GPU and direction.
    if s.scale_out_bandwidth_bytes_per_s is not None:
        assert s.scale_out_bandwidth_bytes_per_s <= up


def test_figures_spot_checks():
    # Vendor whitepapers / DGX user guides (sources in each YAML); MAMF from ml-engineering's table.
    cat = hardware_catalog()
    assert [cat.get(n).sm_count for n in ("a100", "h100", "h100-pcie", "h200", "b200", "v100", "mi300x")] == \
        [108, 132, 114, 132, 148, 80, 304]
    a100, h100, gb200 = cat.get("a100"), cat.get("h100"), cat.get("gb200")
    assert a100.scale_up_bandwidth_bytes_per_s == a100.interconnect_bandwidth_bytes_per_s / 2 == 300e9
    assert h100.scale_up_bandwidth_bytes_per_s == 450e9 and cat.get("b200").scale_up_bandwidth_bytes_per_s == 900e9
    assert a100.scale_out_bandwidth_bytes_per_s == units.parse_bandwidth("200Gb/s")  # one HDR NIC per GPU
    assert h100.scale_out_bandwidth_bytes_per_s == units.parse_bandwidth("400Gb/s")  # one NDR NIC per GPU
    assert gb200.node_gpus == 72 and h100.node_gpus == 8
    assert a100.matmul_efficiency == pytest.approx(271.2 / 312, abs=1e-3)
    assert h100.matmul_efficiency == pytest.approx(794.5 / 989.5, abs=1e-3)
    assert h100.achievable_matmul_flops_per_s == pytest.approx(794.5e12, rel=1e-3)
    assert cat.get("v100").matmul_dtype.value == "fp16" and cat.get("v100").achievable_matmul_flops_per_s is None


def _base() -> dict:
    return yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())


@pytest.mark.parametrize(
    "change, field",
    [
        ({"scale_up_bandwidth_bytes_per_s": 900e9 * 1.01}, "per direction"),
        ({"matmul_efficiency": 80}, "matmul_efficiency"),
        ({"matmul_efficiency": 0}, "matmul_efficiency"),
        ({"node_gpus": 0}, "node_gpus"),
        ({"node_gpus": 8.5}, "node_gpus"),
        ({"node_gpus": True}, "node_gpus"),
        ({"sm_count": -1}, "sm_count"),
        ({"scale_out_bandwidth_bytes_per_s": float("nan")}, "scale_out_bandwidth_bytes_per_s"),
        ({"host_link_bandwidth_bytes_per_s": -64e9}, "host_link_bandwidth_bytes_per_s"),
    ],
)
def test_bad_network_figures_are_refused(change, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        HardwareSpec.model_validate({**_base(), **change})


def test_bad_figure_in_a_user_spec_names_the_file(tmp_path):
    d = tmp_path / "hardware_specs"
    d.mkdir()
    spec = {**_base(), "name": "mine", "aliases": [], "scale_up_bandwidth_bytes_per_s": 1e12}
    path = d / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=re.escape(str(path))):
        hardware_catalog([tmp_path])


def test_the_new_fields_are_optional():
    spec = _base()
    for field in NETWORK_FIELDS:
        spec.pop(field)
    s = HardwareSpec.model_validate(spec)
    assert s.node_gpus is None and s.achievable_matmul_flops_per_s is None


# --- napkin hardware show ------------------------------------------------------------------------------------------


def test_hardware_show_json_has_the_fields(cli):
    out = cli("hardware", "show", "a100", "--json")
    assert out.exit_code == 0, out.stderr
    spec = out.json()["spec"]
    assert spec["sm_count"] == 108 and spec["node_gpus"] == 8
    assert spec["scale_up_bandwidth_bytes_per_s"] == 300e9
    assert spec["scale_out_bandwidth_bytes_per_s"] == 25e9
    assert spec["host_link_bandwidth_bytes_per_s"] == 32e9
    assert spec["matmul_efficiency"] == pytest.approx(0.869)


@pytest.mark.parametrize("name, shown", [
    ("h100", ["SMs", "132", "8 GPUs", "450 GB/s per GPU", "50 GB/s (400 Gb/s) per GPU", "64 GB/s per GPU",
              "794.6 TFLOP/s"]),
    ("mi300x", ["compute units", "304", "448 GB/s per GPU"]),
    ("l4", ["not measured", "32 GB/s per GPU"]),
])
def test_hardware_show_prints_the_fields_with_units(cli, name, shown):
    out = cli("hardware", "show", name)
    assert out.exit_code == 0, out.stderr
    text = " ".join(out.stdout.split())
    for piece in shown:
        assert piece in text, f"{piece!r} not in `hardware show {name}`"


# --- parse_bandwidth -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("25GB/s", 25e9), ("25 GB/s", 25e9), ("200Gb/s", 25e9), ("1.6Tb/s", 200e9), ("400Gbps", 50e9),
    ("450e9", 450e9), ("900MB/s", 900e6), ("25GiB/s", 25 * 2**30), ("25 GBps", 25e9), ("100 Mbps", 12.5e6),
    (" 3.35TB/s ", 3.35e12), ("1_000GB/s", 1e12), (450e9, 450e9), ("64kB/s", 64e3),
])
def test_parse_bandwidth(text, value):
    assert units.parse_bandwidth(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text, says", [
    ("nan", "finite"), ("inf", "finite"), ("-inf GB/s", "finite"), ("1e400GB/s", "finite"),
    ("-5GB/s", "greater than 0"), ("0", "greater than 0"), ("0Gb/s", "greater than 0"),
    ("25GB", "is a size, not a rate; did you mean 25GB/s"), ("fast", "expected a number like 450GB/s"),
    ("", "expected a number"), ("25 GB/h", "unknown unit 'GB/h'"), ("25Gib/s", "unknown unit"),
    ("25 G B/s", "expected a number"), (True, "cannot read"),
])
def test_parse_bandwidth_refusals(text, says):
    with pytest.raises(InputError) as e:
        units.parse_bandwidth(text, "inter-node bandwidth")
    msg = str(e.value)
    assert says in msg and "\n" not in msg
    assert "inter-node bandwidth" in msg


@given(st.floats(min_value=1e3, max_value=1e16, allow_nan=False))
def test_format_then_parse_bandwidth_round_trips(value):
    shown = units.format_bandwidth(value)  # 4 significant digits, decimal prefix
    assert units.parse_bandwidth(shown.replace(" ", "")) == pytest.approx(value, rel=5e-4)


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), st.sampled_from(["k", "M", "G", "T"]))
def test_bits_are_an_eighth_of_bytes(number, prefix):
    assert units.parse_bandwidth(f"{number!r}{prefix}b/s") * 8 == pytest.approx(
        units.parse_bandwidth(f"{number!r}{prefix}B/s"), rel=1e-12)


def test_format_bandwidth():
    assert units.format_bandwidth(450e9) == "450 GB/s"
    assert units.format_bandwidth(1.8e12) == "1.8 TB/s"
    assert units.format_bandwidth(50e9, bits=True) == "50 GB/s (400 Gb/s)"
    assert units.format_bandwidth(6.25e9, bits=True) == "6.25 GB/s (50 Gb/s)"


# --- parse_duration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("10us", 1e-5), ("10µs", 1e-5), ("10\u03bcs", 1e-5), ("5ms", 5e-3), ("2s", 2.0), ("1e-5", 1e-5),
    ("300ns", 3e-7), ("2 s", 2.0), ("0", 0.0), (0.25, 0.25), ("1.5 MS", 1.5e-3),
])
def test_parse_duration(text, value):
    assert units.parse_duration(text) == value  # exact: sub-second units divide, so 10us is 1e-5 itself


@pytest.mark.parametrize("text, says", [
    ("nan", "finite"), ("inf", "finite"), ("-1ms", "cannot be negative"), ("-0.5", "cannot be negative"),
    ("5m", "unknown unit 'm'"), ("10 parsecs", "use ns, us (or µs), ms or s"), ("soon", "expected a number like 10us"),
    ("1e999s", "finite"),
])
def test_parse_duration_refusals(text, says):
    with pytest.raises(InputError) as e:
        units.parse_duration(text, "latency")
    msg = str(e.value)
    assert says in msg and "\n" not in msg and "latency" in msg


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.sampled_from([("s", 1), ("ms", 1e3),
                                                                                 ("us", 1e6), ("ns", 1e9)]))
def test_duration_units_round_trip(number, unit):
    suffix, per_second = unit
    assert math.isclose(units.parse_duration(f"{number!r}{suffix}") * per_second, number, rel_tol=1e-12,
                        abs_tol=1e-300)


# --- the Cluster options (not on any command yet: checked on a throwaway app) ----------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def main(node_size: options.NodeSize = None, intra: options.IntraBandwidth = None,
             inter: options.InterBandwidth = None) -> None:
        typer.echo(f"{node_size!r} {intra!r} {inter!r}")

    return app


@pytest.mark.parametrize("args, shown", [
    ([], "None None None"),
    (["--node-size", "72", "--intra-node-bandwidth", "900GB/s", "--inter-node-bandwidth", "400Gb/s"],
     "72 900000000000.0 50000000000.0"),
    (["--intra-node-bandwidth", "3e11"], "None 300000000000.0 None"),
])
def test_cluster_options_parse(args, shown):
    out = CliRunner().invoke(_app(), args)
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == shown


@pytest.mark.parametrize("args, says", [
    (["--inter-node-bandwidth", "-25GB/s"], "greater than 0"),
    (["--inter-node-bandwidth", "nan"], "finite"),
    (["--intra-node-bandwidth", "300"], "give a unit"),
    (["--intra-node-bandwidth", "300GB"], "not a rate"),
    (["--node-size", "0"], "greater than 0"),
    (["--node-size", "8.5"], "whole number"),
])
def test_cluster_options_refuse_bad_values(args, says):
    out = CliRunner().invoke(_app(), args)
    assert out.exit_code == 2
    assert says in " ".join(out.output.split()) and "Traceback" not in out.output


def test_cluster_options_sit_in_their_own_help_panel():
    out = CliRunner().invoke(_app(), ["--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    assert "Cluster" in out.stdout
    for flag in ("--node-size", "--intra-node-bandwidth", "--inter-node-bandwidth"):
        assert flag in out.stdout
