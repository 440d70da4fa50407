"""A model named by its Hugging Face Hub id (``org/name[@revision]``): its config.json, and nothing else.

Only ``config.json`` is fetched, with ``huggingface_hub.hf_hub_download`` (imported here, on first use, so the
calculators never pay for it), into the standard Hub cache (``HF_HUB_CACHE``, ``HF_HOME``): a second run works
offline. ``offline=True`` (the CLI's ``--offline``) or ``HF_HUB_OFFLINE=1`` never touches the network. The
endpoint is ``HF_ENDPOINT`` when set (the tests point it at a local server). No code from the repository is run
(never ``trust_remote_code``) and transformers is never imported: the config is read by napkin.specs.hf_config.

Before any request the repo id and the revision are checked as the Hub defines them (a revision with '../' would
make huggingface_hub write its ref file outside the cache). The fetch has one deadline, a size cap and no long
sleep, and leaves no partial file behind (napkin.specs.hub_fetch).

Each failure is one line: a gated repository (accept the licence, then log in), one that does not exist (with
the catalog's closest names), offline with nothing cached, the network down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from napkin.errors import SpecError

# org/name, optionally @revision: the Hub's own rules (letters, digits, '-', '_', '.'; no '--' or '..' edges)
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[\w./-]{1,200}))?$")


def parse_hub_id(name: str) -> tuple[str, str | None] | None:
    """(repo_id, revision) when ``name`` reads as a Hub id and is no path here, else None."""
    m = _HUB_ID.match(name)
    if m is None or name.startswith((".", "/", "~")) or name.lower().endswith((".json", ".yaml", ".yml")):
        return None
    try:
        if Path(m.group("repo")).exists():  # a local folder org/name wins: it is what the user has
            return None
    except OSError:
        return None
    return m.group("repo"), m.group("rev")


def _offline(offline: bool) -> bool:
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _did_you_mean(repo: str, catalog_names: Callable[[], Iterable[str]] | None) -> str:
    """The catalog names close to a missing repo's; the caller passes them (napkin.specs.catalog imports this module,
    so this module does not import the catalog)."""
    if catalog_names is None:
        return ""
    try:
        import difflib

        close = difflib.get_close_matches(repo.split("/")[-1].lower(), list(catalog_names()), n=3, cutoff=0.5)
    except Exception:  # noqa: BLE001 - a hint must never hide the error it hints at
        close = []
    return f"; did you mean the catalog's {', '.join(close)}?" if close else ""


# A revision is a branch, a tag (git ref names: '/'-separated parts, none empty or starting with '.', no '..',
# none ending in '.lock') or a commit; huggingface_hub keeps refs/<revision> in its cache, so '../' would write
# outside it (issue 25 item 3).
_REV_PART = re.compile(r"^[\w+-][\w.+-]*$")
MAX_REVISION_CHARS = 200


def shown(text: str, limit: int = 80) -> str:
    """User text in a message: control characters escaped, cut at ``limit`` characters."""
    clean = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def check_hub_id(repo: str, revision: str | None) -> None:
    """Refuse, before any request, a repo id or a revision the Hub would not hold (one line, exit 2)."""
    org, _, name = repo.partition("/")
    for part in (org, name):
        if "--" in part or ".." in part or part.endswith((".git", ".")) or not part:
            raise SpecError(f"'{shown(repo)}' is not a Hub repository id: org/name of letters, digits, '-', '_' and "
                            "'.', without '--' or '..' and not ending in '.git'")
    if revision is None:
        return
    parts = revision.split("/")
    if (len(revision) > MAX_REVISION_CHARS or ".." in revision or revision.endswith(".")
            or not all(_REV_PART.match(p) and not p.endswith(".lock") for p in parts)):
        raise SpecError(f"'@{shown(revision)}' is not a Hub revision: a branch or tag name (parts of letters, digits, "
                        "'_', '-', '.', '+' joined by '/', none starting with '.' and no '..') or a 40-hex commit")


def download_config(repo: str, revision: str | None = None, *, offline: bool = False,
                    catalog_names: Callable[[], Iterable[str]] | None = None,
                    contacting: Callable[[str], None] | None = None) -> Path:
    """The cached path of ``repo``'s config.json at ``revision`` (fetched once, then read from the cache);
    ``catalog_names`` gives the names a missing repo's error suggests; ``contacting(url)`` is called just before
    the network is used (the CLI says so on a terminal).

    The fetch has one deadline (NAPKIN_HUB_TIMEOUT, default 30 s), a size cap and no sleep past the deadline
    (napkin.specs.hub_fetch); a fetch that fails leaves no partial file in the cache."""
    check_hub_id(repo, revision)
    try:
        import huggingface_hub  # noqa: F401 - present?
    except ImportError:
        raise SpecError(f"{repo}: reading a Hub id needs huggingface_hub (pip install huggingface_hub); or download "
                        "its config.json and pass the file") from None
    from huggingface_hub import constants as hf_constants

    from napkin.specs import hub_fetch

    where = f"{repo}@{revision}" if revision else repo
    off = _offline(offline)
    try:  # its retry warnings would print lines of their own: the failure is said once, below
        from huggingface_hub.utils import logging as hf_logging  # huggingface_hub 1.x+ loads `utils` lazily

        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic
        pass
    if off:
        return _download(repo, revision, where, True, catalog_names)
    cache = hf_constants.HF_HUB_CACHE
    before = hub_fetch.partial_files(cache, repo)
    deadline = hub_fetch.timeout_s()
    if contacting is not None:
        contacting(_endpoint())
    try:
        return hub_fetch.run_bounded(lambda: _download(repo, revision, where, False, catalog_names), deadline)
    except hub_fetch.HubGaveUp as e:
        try:  # what huggingface_hub does when the network is down: the cached copy, if there is one
            return _download(repo, revision, where, True, catalog_names)
        except SpecError:
            pass
        advice = (f"set {hub_fetch.TIMEOUT_ENV} (seconds) to wait longer, or pass a downloaded config.json" if e.slow
                  else "pass a downloaded config.json")
        raise SpecError(f"{where}: gave up on the Hub ({_endpoint()}): {e}; {advice}") from None
    finally:
        for leftover in hub_fetch.partial_files(cache, repo) - before:
            try:
                leftover.unlink()
            except OSError:
                pass


def _download(repo: str, revision: str | None, where: str, off: bool,
              catalog_names: Callable[[], Iterable[str]] | None) -> Path:
    """huggingface_hub's download of config.json, each of its errors turned into one line."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from napkin.specs.hub_fetch import HubGaveUp

    try:
        path = huggingface_hub.hf_hub_download(repo, "config.json", revision=revision, local_files_only=off)
    except HubGaveUp:
        raise
    except hf_errors.GatedRepoError:
        raise SpecError(f"{where}: a gated repository: accept the licence on the model page "
                        f"(https://huggingface.co/{repo}), then `hf auth login` or set HF_TOKEN") from None
    except hf_errors.RepositoryNotFoundError:
        raise SpecError(f"{where}: no such model on the Hub (or it is private: `hf auth login` or set HF_TOKEN)"
                        + _did_you_mean(repo, catalog_names)) from None
    except hf_errors.RevisionNotFoundError:
        raise SpecError(f"{where}: no revision '{revision}' in {repo} (a branch, tag or commit)") from None
    except hf_errors.LocalEntryNotFoundError:
        if off:
            raise SpecError(f"{where}: offline (--offline or HF_HUB_OFFLINE) and its config.json is not in the Hub "
                            "cache; run once online to cache it") from None
        raise SpecError(f"{where}: cannot reach the Hub ({_endpoint()}) and its config.json is not cached; check the "
                        "network, or pass a downloaded config.json") from None
    except hf_errors.EntryNotFoundError:
        raise SpecError(f"{where}: the repository has no config.json (napkin reads transformers-style configs)") \
            from None
    except hf_errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise SpecError(f"{where}: the Hub answered {status or 'an error'}: {shown(str(e).splitlines()[0], 160)}") \
            from None
    except (OSError, ValueError) as e:  # network down (httpx errors are OSError-like), a bad cache folder
        raise SpecError(f"{where}: cannot fetch config.json from {_endpoint()}: {shown(str(e).splitlines()[0], 160)}")\
            from None
    except Exception as e:  # noqa: BLE001 - httpx's ConnectError and friends: one line, never a traceback
        raise SpecError(f"{where}: cannot fetch config.json from {_endpoint()}: {type(e).__name__}: "
                        f"{shown(str(e).splitlines()[0], 160) if str(e) else 'no detail'}") from None
    return Path(path)


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def commit_of(path: Path) -> str | None:
    """The commit a cached file belongs to: the Hub cache keeps it under snapshots/<commit>/."""
    parts = path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def spec_from_hub(name: str, *, offline: bool = False, catalog_names: Callable[[], Iterable[str]] | None = None,
                  contacting: Callable[[str], None] | None = None) -> Any:
    """A TransformerSpec from the config.json of a Hub repository, named ``org/name@<commit>``; a missing repository's
    error suggests the close names of ``catalog_names()`` (napkin.specs.catalog.get_model passes the catalog's)."""
    parsed = parse_hub_id(name)
    if parsed is None:
        raise SpecError(f"'{shown(name)}' is not a Hub id (org/name, optionally @revision)")
    repo, revision = parsed
    path = download_config(repo, revision, offline=offline, catalog_names=catalog_names, contacting=contacting)
    commit = commit_of(path)
    from napkin.specs.hf_config import spec_from_hf_config_at

    label = f"{repo}@{commit[:12]}" if commit else (f"{repo}@{revision}" if revision else repo)
    source = f"https://huggingface.co/{repo}/blob/{commit or revision or 'main'}/config.json"
    return spec_from_hf_config_at(path, name=label.lower(), source=source,
                                  note=f"read from the Hugging Face Hub: {repo}, commit {commit or 'unknown'} "
                                       f"(cached at {path}).")
