"""Issue 25 item 7: a YAML alias bomb, a value echoed in an error, a file of two million bad entries: each bounded.

Every case is a spec file of a few hundred bytes (or a few MiB) that hung napkin or printed gigabytes; each must now
end within a wall-clock bound with a bounded error.
"""

from __future__ import annotations

import time

import pytest
import yaml

import napkin
from napkin.specs.safe_load import MAX_VALUES, expanded_size
from napkin.specs.spec_files import MAX_ERROR_LINES

TRAIN = ("train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8")
BOUND_S = 5.0  # each case; before: 18-26 s at 8 levels, 4.7 GB and still running after 300 s at 9


def _bomb(levels: int, width: int = 9) -> tuple[str, str]:
    """Anchors a0..a{levels-1}, each a list of `width` aliases of the one before: width**levels values."""
    lines = [f"  a0: &a0 [{', '.join(['1'] * width)}]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "x:\n" + "\n".join(lines) + "\n", f"*a{levels - 1}"


def _model(tmp_path, field: str, levels: int) -> str:
    anchors, ref = _bomb(levels)
    doc = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    doc = {k: v for k, v in doc.items() if k != field}
    body = yaml.safe_dump({**doc, "name": "bomb", "aliases": []}, sort_keys=False)
    path = tmp_path / "bomb.yaml"
    path.write_text(anchors + f"{field}: {ref}\n" + body)
    return str(path)


@pytest.mark.parametrize("levels", [4, 8, 9])
@pytest.mark.parametrize("field", ["layers", "heads", "tied_embeddings", "kind"])
def test_an_alias_bomb_in_a_model_file_ends_at_once(cli, tmp_path, field, levels):
    path = _model(tmp_path, field, levels)
    start = time.monotonic()
    r = cli("memory", "--model", path, "--gpus", "1")
    took = time.monotonic() - start
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr[-500:]
    assert took < BOUND_S and len(r.stderr) < 2000, (took, len(r.stderr))
    if 9**levels > MAX_VALUES:
        assert "aliases (*name) are expanded" in r.stderr
    else:  # small enough to read: the field is named, its value shown cut short
        assert field in r.stderr


@pytest.mark.parametrize("field", ["sm_count", "node_gpus"])
def test_an_alias_bomb_in_a_hardware_file_does_not_hang_every_command(cli, tmp_path, field):
    from napkin.specs.catalog import builtin_dir

    anchors, ref = _bomb(9)
    doc = yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    doc = {k: v for k, v in {**doc, "name": "bomb-gpu", "aliases": []}.items() if k != field}
    d = tmp_path / "specs" / "hardware_specs"
    d.mkdir(parents=True)
    (d / "bomb.yaml").write_text(anchors + f"{field}: {ref}\n" + yaml.safe_dump(doc, sort_keys=False))
    start = time.monotonic()
    r = cli(*TRAIN, env={"NAPKIN_SPECS_DIR": str(tmp_path / "specs")})
    assert time.monotonic() - start < BOUND_S
    assert r.exit_code == 2 and "aliases (*name) are expanded" in r.stderr and len(r.stderr) < 2000, r.stderr


def test_expanded_size_counts_shared_subtrees_at_every_use():
    leaf = [1, 2]
    assert expanded_size({"a": leaf, "b": [leaf, leaf]}) == 1 + 2 + (1 + 2) + (1 + 2 * 3)  # keys count as values
    deep: list = [0]
    for _ in range(60):
        deep = [deep, deep]  # 2**60 values, 61 distinct lists
    assert expanded_size(deep) == MAX_VALUES + 1  # stops counting past the limit, at once


def test_many_bad_entries_print_the_first_few_and_a_count(cli, tmp_path):
    doc = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    bad = {f"bad_{i}": i for i in range(5000)}  # 5,000 unknown fields: under the size bound, each an error
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump({**doc, "name": "many", "aliases": [], **bad}))
    r = cli("memory", "--model", str(path), "--gpus", "1")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == MAX_ERROR_LINES + 1, lines[-3:]
    assert "and 4,980 more errors (5,000 in all)" in lines[-1]


@pytest.mark.parametrize("entries, said", [(2_000_000, "far larger than any spec"),
                                           (120_000, "more than 100,000 values")])
def test_a_file_of_millions_of_entries_is_refused_before_validation(cli, tmp_path, entries, said):
    path = tmp_path / "huge.yaml"
    path.write_text("kind: transformer\nname: huge\nx: [" + ", ".join(["[]"] * entries) + "]\n")
    start = time.monotonic()
    r = cli("memory", "--model", str(path), "--gpus", "1")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and said in r.stderr, r.stderr
    assert time.monotonic() - start < 10  # before: 41 s and 2,000,015 lines for the 7.6 MiB file
