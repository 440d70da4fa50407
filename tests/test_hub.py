"""Hub ids (--model org/name[@revision]) without the Internet: a local HTTP server answers as the Hub does.

HF_ENDPOINT points huggingface_hub at it; HF_HOME at a fresh cache. The server has a public repo (org/tiny), a
gated one (401 with X-Error-Code: GatedRepo, as the Hub answers) and nothing else (401 RepoNotFound).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("huggingface_hub")

from napkin.errors import SpecError  # noqa: E402
from napkin.specs.catalog import get_model  # noqa: E402
from napkin.specs.hub import commit_of, parse_hub_id, spec_from_hub  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
          "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128,
          "max_position_embeddings": 1024,
          "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 256}}
BODY = json.dumps(CONFIG).encode()


class _Hub(BaseHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bool) -> None:
        path = self.path.split("?")[0]
        _Hub.requests.append(f"{self.command} {path}")
        if path.startswith("/org/gated/"):
            self.send_response(401)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to model org/gated is restricted and you are not in the "
                                                "authorized list.")
            self.end_headers()
            return
        if not path.startswith(("/org/tiny/resolve/main/config.json", f"/org/tiny/resolve/{COMMIT}/config.json")):
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository Not Found")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(BODY).hexdigest()}"')
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(BODY)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    # poll every 10 ms: shutdown() waits for the loop's next poll (0.5 s by default, paid by every test using this)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as constants

    # huggingface_hub reads these at import: point the already-imported module at the test's server and cache
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        f"http://127.0.0.1:{server.server_address[1]}" + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _Hub.requests = []
    yield server
    server.shutdown()
    server.server_close()


def test_hub_ids_are_told_from_paths_and_names():
    assert parse_hub_id("meta-llama/Llama-3.1-8B") == ("meta-llama/Llama-3.1-8B", None)
    assert parse_hub_id("Qwen/Qwen3-8B@v1.0") == ("Qwen/Qwen3-8B", "v1.0")
    for not_hub in ("llama3-8b", "./org/name", "/abs/path", "org/name.json", "a/b/c", "~/x"):
        assert parse_hub_id(not_hub) is None


def test_public_repo_resolves_to_its_commit_and_caches(hub, monkeypatch):
    spec = spec_from_hub("org/tiny")
    assert spec.name == f"org/tiny@{COMMIT[:12]}" and spec.layers == 2 and spec.kv_heads == 2
    assert spec.train_seq == 256  # rope_scaling's original length, not max_position_embeddings (1024)
    assert COMMIT in spec.sources[0] and COMMIT in spec.notes[0]
    seen = len(_Hub.requests)
    again = spec_from_hub("org/tiny", offline=True)  # from the cache, no request
    assert again.name == spec.name and len(_Hub.requests) == seen
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert spec_from_hub("org/tiny").name == spec.name and len(_Hub.requests) == seen


def test_gated_missing_and_offline_are_one_line(hub):
    with pytest.raises(SpecError, match="gated repository: accept the licence.*hf auth login.*HF_TOKEN"):
        spec_from_hub("org/gated")
    with pytest.raises(SpecError, match="no such model on the Hub") as err:
        spec_from_hub("org/llama3-8", catalog_names=lambda: ["llama3-8b", "qwen3-8b"])
    assert "did you mean the catalog's llama3-8b" in str(err.value)
    with pytest.raises(SpecError, match="no such model on the Hub") as via_catalog:
        get_model("org/llama3-8")  # the catalog passes its own names
    assert "did you mean the catalog's llama3-8b" in str(via_catalog.value)
    with pytest.raises(SpecError, match="offline .* not in the Hub cache") as off:
        spec_from_hub("org/never-fetched", offline=True)
    assert "\n" not in str(err.value) + str(off.value)


def test_cli_hub_id_everywhere_a_model_is_taken(hub, cli):
    out = cli("flops", "--model", "org/tiny", "--tokens", "1e9", "--json")
    assert out.exit_code == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["model"] == f"org/tiny@{COMMIT[:12]}" and got["seq"] == 256
    offline = cli("memory", "--model", "org/tiny", "--offline", "--json")
    assert offline.exit_code == 0, offline.stderr
    shown = cli("models", "show", "org/tiny", "--json")
    assert shown.exit_code == 0 and f"org/tiny@{COMMIT[:12]}" in shown.stdout
    gated = cli("flops", "--model", "org/gated", "--tokens", "1e9")
    assert gated.exit_code == 2 and gated.stderr.count("\n") == 1 and "gated repository" in gated.stderr


def test_unreachable_hub_is_one_line_without_retry_chatter(hub, monkeypatch, capfd):
    import socket

    import huggingface_hub.constants as constants
    from huggingface_hub.utils import _http

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setattr(_http.time, "sleep", lambda _s: None)  # its back-off between retries
    with pytest.raises(SpecError, match="cannot reach the Hub") as err:
        spec_from_hub("org/not-cached")
    assert "\n" not in str(err.value)
    assert "thrown while requesting" not in capfd.readouterr().err  # huggingface_hub's retry warnings silenced


def test_commit_of_a_cached_path(tmp_path):
    p = tmp_path / "models--org--x" / "snapshots" / COMMIT / "config.json"
    assert commit_of(p) == COMMIT and commit_of(tmp_path / "config.json") is None
