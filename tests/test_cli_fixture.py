"""The `cli` fixture (conftest.py) builds typer's click tree once per app: it is rebuilt when a command is registered,
and no state passes from one call to the next (spec directories, environment, shape options, a failed call). Also the
everyday loop's parametrize helper (tests/everyday.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import cli_tree
import pytest
import typer
import typer.testing
import yaml

import napkin
from napkin.cli import app


def _fresh(*args: str, env: dict[str, str] | None = None) -> typer.testing.Result:
    """The same call on a tree typer builds anew, as CliRunner does without conftest."""
    with mock.patch.object(typer.testing, "_get_command", cli_tree._build_tree):
        return typer.testing.CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)


def _toy_app() -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    def one(n: int = 1) -> None:
        typer.echo(f"one {n}")

    @toy.command()
    def two() -> None:
        typer.echo("two")

    return toy


def test_the_tree_is_built_once_per_app_and_again_after_a_registration(monkeypatch):
    builds: list[object] = []

    def counting(typer_app):
        builds.append(typer_app)
        return real(typer_app)

    real = cli_tree._build_tree
    monkeypatch.setattr(cli_tree, "_build_tree", counting)
    toy, other = _toy_app(), _toy_app()
    runner = typer.testing.CliRunner()
    for n in range(3):
        out = runner.invoke(toy, ["one", "--n", str(n)])
        assert out.exit_code == 0 and out.stdout == f"one {n}\n"
    assert builds == [toy]
    assert runner.invoke(other, ["two"]).stdout == "two\n" and builds == [toy, other]

    @toy.command()
    def three() -> None:
        typer.echo("three")

    assert runner.invoke(toy, ["three"]).stdout == "three\n" and builds == [toy, other, toy]
    assert cli_tree.command_tree(toy) is cli_tree.command_tree(toy) and len(builds) == 3


def _user_gpu(tmp_path: Path) -> Path:
    from napkin.specs.catalog import builtin_dir

    doc = yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    (tmp_path / "hardware_specs").mkdir()
    (tmp_path / "hardware_specs" / "x.yaml").write_text(yaml.safe_dump({**doc, "name": "leak-gpu", "aliases": []}))
    return tmp_path


def test_spec_directories_do_not_carry_over(cli, tmp_path):
    d = str(_user_gpu(tmp_path))
    assert cli("--specs-dir", d, "hardware", "show", "leak-gpu", "--json").exit_code == 0
    assert cli("hardware", "show", "leak-gpu").exit_code == 2
    before = dict(os.environ)
    assert cli("hardware", "show", "leak-gpu", "--json", env={"NAPKIN_SPECS_DIR": d}).exit_code == 0
    assert dict(os.environ) == before
    later = cli("hardware", "list", "--json")
    assert later.exit_code == 0 and "leak-gpu" not in later.stdout


def test_shape_options_and_failures_do_not_carry_over(cli):
    base = ("flops", "--model", "llama3-8b", "--tokens", "1e9", "--seq", "2048", "--json")
    expect = json.loads(napkin.count_flops("llama3-8b", 1e9, 2048).to_json())
    assert cli(*base).json() == expect
    shaped = cli("flops", "--model", "llama3-8b", "--layers", "2", "--tokens", "1e9", "--seq", "2048", "--json")
    assert shaped.exit_code == 0 and shaped.json()["model_flops"] < expect["model_flops"]
    assert cli("flops", "--model", "llama3-8b", "--tokens", "nope").exit_code == 2
    assert cli(*base).json() == expect


def test_the_cached_tree_answers_as_a_fresh_one(cli, tmp_path):
    d = str(_user_gpu(tmp_path))
    calls = [
        ("train-time", "--params", "70e9", "--tokens", "15e12", "--gpus", "1024"),
        ("memory", "--model", "llama3-8b", "--gpus", "8", "--zero", "3", "--explain"),
        ("--specs-dir", d, "hardware", "show", "leak-gpu"),
        ("hardware", "show", "leak-gpu"),
        ("budget", "--gpus", "8"),
        ("train-time", "--help"),
        ("nonsense",),
    ]
    for args in calls:
        ours, theirs = cli(*args), _fresh(*args)
        assert (ours.exit_code, ours.stdout, ours.stderr) == (theirs.exit_code, theirs.stdout, theirs.stderr), args


# -- the everyday loop's helpers (tests/everyday.py) -------------------------------------------------------------------

def test_everyday_keeps_every_nth_case_and_marks_the_rest_slow():
    from everyday import everyday

    params = everyday([("a", 1), ("b", 2), ("c", 3), ("d", 4)], every=3)
    assert [p.values for p in params] == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert [[m.name for m in p.marks] for p in params] == [[], ["slow"], ["slow"], []]
    assert [p.values for p in everyday([(1, 2)], every=1, unpack=False)] == [((1, 2),)]
    with pytest.raises(ValueError, match="at least 1"):
        everyday([1], every=0)
