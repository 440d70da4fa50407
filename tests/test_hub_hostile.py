"""Issue 25 items 3-4 and issue 24 item 8: a Hub endpoint cannot hang napkin, fill the disk or write outside the cache.

Each case runs `napkin models show` in its own process against tests/hostile_hub.py on 127.0.0.1 (HF_ENDPOINT), with
a fresh HF_HOME, a short NAPKIN_HUB_TIMEOUT and a hard wall-clock bound; each asserts one line on stderr, exit 2,
the time taken, and that no partial download is left in the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from hostile_hub import COMMIT, HostileHub  # noqa: E402

from napkin.errors import SpecError  # noqa: E402
from napkin.specs.hub import check_hub_id  # noqa: E402
from napkin.specs.hub_fetch import GRACE_S  # noqa: E402

START_UP_S = 8.0  # a napkin process importing huggingface_hub on a busy 2-core machine, with room to spare
HARD_BOUND_S = 60.0  # no case may run longer, whatever napkin does


def _napkin(hub: HostileHub | None, home: Path, *args: str, timeout: str = "2") -> tuple[subprocess.CompletedProcess,
                                                                                         float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", NAPKIN_HUB_TIMEOUT=timeout,
               HF_ENDPOINT=hub.url if hub else "http://127.0.0.1:9")  # port 9 (discard): nothing listens
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "napkin", *args], env=env, capture_output=True, text=True,
                       timeout=HARD_BOUND_S)
    return p, time.monotonic() - start


def _partials(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name.endswith(".incomplete")]


def _one_line_refusal(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("napkin: error: org/tiny: gave up on the Hub")
    return p.stderr


@pytest.mark.parametrize("mode", ["silent", "trickle"])
def test_an_endpoint_that_never_finishes_is_given_up_at_the_deadline(tmp_path, mode):
    with HostileHub(mode) as hub:
        p, took = _napkin(hub, tmp_path, "models", "show", "org/tiny", timeout="2")
    err = _one_line_refusal(p)
    assert "within 2 s" in err and "NAPKIN_HUB_TIMEOUT" in err
    assert took < 2 + GRACE_S + START_UP_S, took
    assert not _partials(tmp_path)


@pytest.mark.parametrize("mode, said", [("retry-after", "answered 503 (Retry-After: 100000 s)"),
                                        ("huge", "announces 5,000,000,000 bytes"),
                                        ("huge-get", "goes on past 4 MiB")])
def test_an_answer_that_would_sleep_or_fill_the_disk_ends_at_once(tmp_path, mode, said):
    with HostileHub(mode) as hub:
        p, took = _napkin(hub, tmp_path, "models", "show", "org/tiny", timeout="20")
        requests = len(hub.requests)
    err = _one_line_refusal(p)
    assert said in err
    assert took < START_UP_S, took  # long before the 20 s deadline: no sleep, no retry storm
    assert requests <= 3, hub.requests
    assert not _partials(tmp_path)  # the 4 MiB that arrived are removed


def test_a_revision_that_climbs_out_of_the_cache_is_refused_before_any_request(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    climb = "../" * 12 + str(victim).lstrip("/")
    with HostileHub("ok") as hub:
        p, _ = _napkin(hub, tmp_path / "hf", "models", "show", f"ok/tiny@{climb}")
        requests = list(hub.requests)
    assert p.returncode == 2 and "is not a Hub revision" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert victim.read_text() == "untouched" and requests == []


@pytest.mark.parametrize("repo, revision", [("org/tiny", ".."), ("org/tiny", "a/../b"), ("org/tiny", "../x"),
                                            ("org/tiny", ".hidden"), ("org/tiny", "main.lock"),
                                            ("org/tiny", "a//b"), ("org/tiny", "x" * 201), ("org/tiny", "v1."),
                                            ("org/a..b", None), ("org/a--b", None), ("org/tiny.git", None),
                                            ("org/tiny", "ma\x1bin")])
def test_bad_repo_ids_and_revisions_are_refused(repo, revision):
    with pytest.raises(SpecError, match="is not a Hub (repository id|revision)") as err:
        check_hub_id(repo, revision)
    assert "\x1b" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize("revision", [None, "main", "v1.0", "refs/pr/1", "release-2024_01+b", COMMIT])
def test_good_revisions_pass(revision):
    check_hub_id("meta-llama/Llama-3.2-1B", revision)


def test_a_cached_config_is_used_when_the_hub_then_hangs(tmp_path):
    with HostileHub("ok") as hub:
        first, _ = _napkin(hub, tmp_path, "models", "show", "org/tiny", "--json")
    assert first.returncode == 0, first.stderr
    with HostileHub("silent") as hub:
        again, took = _napkin(hub, tmp_path, "models", "show", "org/tiny", "--json")
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr
    assert took < 2 + GRACE_S + START_UP_S


def test_models_show_takes_offline_and_says_it_takes_hub_ids(tmp_path, cli):
    nothing, took = _napkin(None, tmp_path, "models", "show", "org/tiny", "--offline")
    assert nothing.returncode == 2 and "offline" in nothing.stderr and "not in the Hub cache" in nothing.stderr
    with HostileHub("ok") as hub:
        assert _napkin(hub, tmp_path, "models", "show", "org/tiny")[0].returncode == 0
        seen = len(hub.requests)
        cached, _ = _napkin(hub, tmp_path, "models", "show", "org/tiny", "--offline")
        assert cached.returncode == 0 and f"org/tiny@{COMMIT[:12]}" in cached.stdout and len(hub.requests) == seen
    r = cli("models", "show", "llama3-8b", "--offline")
    assert r.exit_code == 2 and "needs a Hub id" in r.stderr
    help_text = " ".join(cli("models", "show", "--help").stdout.split())
    assert "Hub id" in help_text and "--offline" in help_text


def test_the_terminal_hears_that_the_hub_is_contacted(monkeypatch, capsys):
    from napkin.cli.context import _contacting

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    _contacting("org/tiny")("http://127.0.0.1:1")
    err = capsys.readouterr().err
    assert "contacting the Hub (http://127.0.0.1:1) for org/tiny's config.json" in err and "--offline" in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    _contacting("org/tiny")("http://127.0.0.1:1")
    assert capsys.readouterr().err == ""  # a pipe or a file: nothing but the result


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", "1e9"])
def test_a_bad_timeout_is_one_line(tmp_path, value, cli):
    r = cli("models", "show", "org/tiny", env={"NAPKIN_HUB_TIMEOUT": value, "HF_ENDPOINT": "http://127.0.0.1:9",
                                               "HF_HOME": str(tmp_path)})
    assert r.exit_code == 2 and "NAPKIN_HUB_TIMEOUT" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
