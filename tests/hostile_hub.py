"""A Hub endpoint on 127.0.0.1 that misbehaves on purpose (issue 25 item 4), for tests/test_hub_hostile.py.

Each mode is one way a real endpoint (or a proxy in front of it) has hung napkin:

- ``ok``: answers as the Hub does (X-Repo-Commit, ETag, Content-Length), a small config.json;
- ``silent``: accepts the connection and never answers;
- ``retry-after``: 503 with ``Retry-After: 100000`` (huggingface_hub would sleep ~28 h before retrying);
- ``trickle``: answers 200 and the right headers, then sends one byte every ``TRICKLE_S``;
- ``huge``: says ``Content-Length: 5000000000`` (a HEAD and a GET) and streams zeros as fast as it can;
- ``huge-get``: a small HEAD, then a GET that streams zeros without end (chunked, no length).

Every handler loop is bounded and stops when the server is shut down. Only the loopback address is used.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
          "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128,
          "max_position_embeddings": 1024}
BODY = json.dumps(CONFIG).encode()
TRICKLE_S = 0.5  # a byte every half second: a per-read timeout never fires, only a deadline does
HUGE = 5_000_000_000
MAX_HANDLER_S = 120.0  # no handler runs longer than this, whatever the client does


class HostileHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.stop = threading.Event()
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HostileHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HostileHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _headers(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(BODY).hexdigest()}"')
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/json")
        self.end_headers()

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server stops; False once it has."""
        return not self.server.stop.wait(seconds)

    def _answer(self, body: bool) -> None:
        s, mode = self.server, self.server.mode
        s.requests.append(f"{self.command} {self.path}")
        start = time.monotonic()
        try:
            if mode == "silent":
                while time.monotonic() - start < MAX_HANDLER_S and self._wait(0.05):
                    pass
            elif mode == "retry-after":
                self.send_response(503)
                self.send_header("Retry-After", "100000")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif mode == "ok":
                self._headers(len(BODY))
                if body:
                    self.wfile.write(BODY)
            elif mode == "trickle":
                self._headers(len(BODY))
                self.wfile.flush()
                for byte in BODY if body else b"":
                    if time.monotonic() - start > MAX_HANDLER_S or not self._wait(0.5):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            elif mode == "huge":
                self._headers(HUGE)
                block = b"\0" * 2**16
                while body and time.monotonic() - start < MAX_HANDLER_S and not s.stop.is_set():
                    self.wfile.write(block)
            elif mode == "huge-get":
                if not body:
                    self._headers(len(BODY))
                    return
                self._headers(None)
                block = b"\0" * 2**16
                while time.monotonic() - start < MAX_HANDLER_S and not s.stop.is_set():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)
