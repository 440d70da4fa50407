"""One bounded fetch from the Hub: a deadline for the whole fetch, a size cap, no long sleeps, no partial files left.

napkin fetches one small config.json. huggingface_hub's own knobs do not bound that fetch: HF_HUB_ETAG_TIMEOUT and
HF_HUB_DOWNLOAD_TIMEOUT are per-read timeouts (an endpoint that sends one byte every few seconds never trips
them), its retries sleep as long as a ``Retry-After`` header says (``Retry-After: 100000`` is a 28-hour sleep),
and it downloads whatever ``Content-Length`` announces (it allows 50 GB). So napkin adds, through huggingface_hub's
documented extension point (``set_client_factory``: the httpx client it uses), two event hooks that act only
inside ``bounded()`` and only on the thread that entered it:

- each request's timeouts are what is left of the deadline (connect at most ``CONNECT_TIMEOUT_S``, each read at most
  ``READ_TIMEOUT_S``), and no request starts after the deadline;
- an answer of 408/429/5xx whose retry would sleep past the deadline ends the fetch at once (no 28-hour sleep);
  retries that fit are left to huggingface_hub;
- an answer announcing more than the cap ends the fetch before its body is read, and a body is counted as it
  arrives (the cap and the deadline are checked on every chunk: a trickle ends at the deadline).

``run_bounded`` also runs the fetch on a worker thread and waits for it at most the deadline plus a grace: what
no hook can interrupt (a DNS lookup that hangs) is bounded too. ``partial_files`` lists the ``.incomplete``
downloads a failed fetch leaves in the Hub cache so that the caller removes them.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from napkin.errors import SpecError

T = TypeVar("T")

TIMEOUT_ENV = "NAPKIN_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0  # the whole fetch: a config.json is a few kB, a HEAD and a GET take well under 1 s
CONNECT_TIMEOUT_S = 5.0  # a TCP (and TLS) handshake that takes longer is a network that is down
READ_TIMEOUT_S = 10.0  # huggingface_hub's own per-read default (HF_HUB_DOWNLOAD_TIMEOUT)
GRACE_S = 2.0  # the worker thread's answer may arrive this late after the deadline before napkin stops waiting
MAX_CONFIG_BYTES = 4 * 2**20  # 4 MiB: a config.json is 1-10 kB (the largest, with quantization maps, ~100 kB)
_BACKOFF_MAX_S = 8.0  # huggingface_hub's longest sleep between retries when no Retry-After is given


class HubGaveUp(Exception):
    """Raised from inside huggingface_hub's client, and never one of the errors it retries or catches.
    ``slow``: the deadline ended it (a longer NAPKIN_HUB_TIMEOUT may help); else the answer itself was refused."""

    def __init__(self, message: str, slow: bool = True) -> None:
        super().__init__(message)
        self.slow = slow


class _Guard:
    def __init__(self, timeout_s: float, max_bytes: int) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.max_bytes = max_bytes

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self) -> None:
        if self.left() <= 0:
            raise HubGaveUp(f"no complete answer within {self.timeout_s:g} s")


_local = threading.local()  # .guard: the _Guard of the fetch running on this thread, if any


def timeout_s() -> float:
    """The deadline for one fetch: NAPKIN_HUB_TIMEOUT seconds, else DEFAULT_TIMEOUT_S."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise SpecError(f"{TIMEOUT_ENV}={text[:40]!r}: expected seconds to wait for the Hub, a number in (0, 3600] "
                        f"(default {DEFAULT_TIMEOUT_S:g})")
    return value


def _on_request(request: Any) -> None:
    g: _Guard | None = getattr(_local, "guard", None)
    if g is None:
        return
    g.check_time()
    left = g.left()
    ours = {"connect": min(CONNECT_TIMEOUT_S, left), "read": min(READ_TIMEOUT_S, left),
            "write": min(READ_TIMEOUT_S, left), "pool": left}
    theirs = request.extensions.get("timeout") or {}
    # a shorter timeout huggingface_hub set itself (3 s for its best-effort calls) stays
    request.extensions = {**request.extensions, "timeout": {k: min(v, theirs.get(k) or v) for k, v in ours.items()}}


def _retry_after(headers: Any) -> float | None:
    text = headers.get("Retry-After")
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _announced(headers: Any) -> int | None:
    """The largest size an answer announces (Content-Length, or the Hub's X-Linked-Size for LFS files)."""
    sizes = []
    for key in ("Content-Length", "X-Linked-Size"):
        try:
            sizes.append(int(headers.get(key, "")))
        except ValueError:
            pass
    return max(sizes) if sizes else None


def _on_response(response: Any) -> None:
    g: _Guard | None = getattr(_local, "guard", None)
    if g is None:
        return
    status = response.status_code
    if status in (408, 429) or status >= 500:
        wait = _retry_after(response.headers)
        sleep = (wait + 1) if wait is not None else _BACKOFF_MAX_S  # huggingface_hub sleeps Retry-After + 1 s
        if sleep >= g.left():
            said = f" (Retry-After: {response.headers.get('Retry-After')[:20]} s)" if wait is not None else ""
            raise HubGaveUp(f"the Hub answered {status}{said}; retrying would outlast the {g.timeout_s:g} s deadline")
    size = _announced(response.headers)
    if size is not None and size > g.max_bytes and status < 300:
        raise HubGaveUp(f"the answer announces {size:,} bytes; a config.json is kilobytes (at most "
                        f"{g.max_bytes // 2**20} MiB read)", slow=False)
    base = _sync_stream_class(response)
    if base is not None:
        response.stream = _guarded_stream(base, response.stream, g)


def _sync_stream_class(response: Any) -> type | None:
    """httpx's SyncByteStream, from the module of the response (httpx or a fork): its iterators insist on it."""
    module = sys.modules.get(type(response).__module__.split(".")[0])
    return getattr(module, "SyncByteStream", None)


def _guarded_stream(base: type, inner: Any, g: _Guard) -> Any:
    class Guarded(base):
        def __iter__(self) -> Iterator[bytes]:
            n = 0
            for chunk in inner:
                n += len(chunk)
                if n > g.max_bytes:
                    raise HubGaveUp(f"the answer goes on past {g.max_bytes // 2**20} MiB; a config.json is kilobytes",
                                    slow=False)
                g.check_time()
                yield chunk

        def close(self) -> None:
            inner.close()

    return Guarded()


def _with_hooks(client: Any) -> Any:
    hooks = client.event_hooks
    if _on_request not in hooks.get("request", []):
        client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _on_request],
                              "response": [*hooks.get("response", []), _on_response]}
    return client


_installed = False
_install_lock = threading.Lock()


def _install() -> bool:
    """Add the hooks to every client huggingface_hub makes (once per process; inert outside ``bounded``). False
    where this huggingface_hub has no client factory (before 1.0: the worker thread's wait still bounds it)."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        try:
            from huggingface_hub.utils import _http
        except ImportError:
            return False
        set_factory = getattr(_http, "set_client_factory", None)
        previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or getattr(_http, "default_client_factory", None)
        if set_factory is None or previous is None:
            return False
        set_factory(lambda: _with_hooks(previous()))  # a factory the user set stays in force, hooks added
        _installed = True
        return True


@contextmanager
def bounded(timeout: float, max_bytes: int = MAX_CONFIG_BYTES) -> Iterator[None]:
    """huggingface_hub's requests on this thread, inside the block, bounded by ``timeout`` and ``max_bytes``."""
    _install()
    _local.guard = _Guard(timeout, max_bytes)
    try:
        yield
    finally:
        _local.guard = None


def run_bounded(fetch: Callable[[], T], timeout: float, max_bytes: int = MAX_CONFIG_BYTES) -> T:
    """``fetch()`` under ``bounded``, on a worker thread that is waited for at most ``timeout`` + GRACE_S; a
    HubGaveUp when it is not done by then (the thread, a daemon, is left to the hooks, which end it soon)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            with bounded(timeout, max_bytes):
                box["value"] = fetch()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            box["error"] = e

    worker = threading.Thread(target=work, name="napkin-hub-fetch", daemon=True)
    worker.start()
    worker.join(timeout + GRACE_S)
    if worker.is_alive():
        raise HubGaveUp(f"no complete answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def partial_files(cache: str | Path, repo: str) -> set[Path]:
    """The unfinished downloads (``*.incomplete``) in ``repo``'s folder of the Hub cache ``cache``."""
    blobs = Path(cache) / ("models--" + repo.replace("/", "--")) / "blobs"
    try:
        return {p for p in blobs.iterdir() if p.name.endswith(".incomplete")}
    except OSError:
        return set()
