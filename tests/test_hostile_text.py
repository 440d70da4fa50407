"""Issue 25 item 11: text from spec files and config.json is printed as text: no rich markup, no terminal escapes.

A name, display_name, notes or sources holding "[/x]" raised rich.errors.MarkupError in models show, hardware show,
memory --gpu all and roofline; ESC sequences in them (clear screen, window title, OSC 8 links) reached the terminal.
"""

from __future__ import annotations

import pytest
import yaml

import napkin

EVIL = "Evil [/x] [bold]b \x1b[2J\x1b]0;pwned\x07\x1b]8;;http://x\x1b\\link\x9b"
RAW_ESCAPES = ("\x1b[2J", "\x1b]0;", "\x1b]8;", "\x9b", "\x07")


@pytest.fixture
def evil_dir(tmp_path):
    from napkin.specs.catalog import builtin_dir

    model = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    model.update(name="evil-model", aliases=[], display_name=EVIL, notes=[EVIL], sources=[EVIL])
    hw = yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    hw.update(name="evil-gpu", aliases=[], display_name=EVIL, notes=[EVIL], sources=[EVIL])
    for folder, doc in (("model_specs", model), ("hardware_specs", hw)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "evil.yaml").write_text(yaml.safe_dump(doc))
    return str(tmp_path)


COMMANDS = [("models", "show", "evil-model"), ("hardware", "show", "evil-gpu"), ("models", "list"),
            ("hardware", "list"), ("memory", "--model", "evil-model", "--gpu", "all", "--gpus", "8"),
            ("roofline", "--model", "evil-model"), ("roofline", "--model", "llama3-8b", "--gpu", "evil-gpu"),
            ("flops", "--model", "evil-model", "--tokens", "1T"),
            ("step-time", "--model", "evil-model", "--gpus", "8", "--gpu", "evil-gpu"),
            ("train-time", "--params", "7e9", "--tokens", "1T", "--gpus", "8", "--gpu", "evil-gpu")]


@pytest.mark.parametrize("color", [False, True], ids=["pipe", "terminal-colors"])
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_file_text_is_printed_as_text(cli, evil_dir, command, color):
    env = {"NAPKIN_SPECS_DIR": evil_dir, "COLUMNS": "200"}
    if color:
        env["FORCE_COLOR"] = "1"  # rich writes its own escapes; the file's must still not get through
    r = cli(*command, env=env)
    assert r.exit_code == 0, r.stderr[-800:]
    out = r.stdout + r.stderr
    assert not any(e in out for e in RAW_ESCAPES), repr(out[:300])
    if command[:2] in (("models", "show"), ("hardware", "show")):
        assert "[/x]" in out and "[bold]b" in out  # shown literally, not swallowed as markup
