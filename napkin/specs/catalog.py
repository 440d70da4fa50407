"""Loading spec catalogs from YAML: built-ins shipped with napkin, then the user's directories.

- Built-in specs live in ``hardware_specs/`` and ``model_specs/`` at the top of the repository;
  the wheel carries them as ``napkin/_data/<kind>_specs`` (see pyproject.toml).
- User directories (``--specs-dir DIR`` or ``NAPKIN_SPECS_DIR=DIR1:DIR2``) hold the same
  sub-folders; a user spec with the name of a built-in replaces it.
- A file holds one spec (a mapping), or several sharing defaults:
  ``{defaults: {...}, specs: [{...}, ...]}``.
- Nothing is read at import time: catalogs load on first use and are cached.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from napkin.errors import SpecError, UnknownNameError

T = TypeVar("T", bound=BaseModel)

ENV_VAR = "NAPKIN_SPECS_DIR"
_PACKAGE_DATA = Path(__file__).resolve().parent.parent / "_data"
_REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def builtin_dir(folder: str) -> Path:
    """Where the built-in specs of one kind are: inside the installed wheel, or the source tree."""
    for candidate in (_PACKAGE_DATA / folder, _REPO_ROOT / folder):
        if candidate.is_dir():
            return candidate
    raise SpecError(f"built-in specs folder '{folder}' not found (looked in {_PACKAGE_DATA} and {_REPO_ROOT})")


def user_dirs(explicit: Sequence[str | Path] | None = None) -> tuple[Path, ...]:
    """User spec directories: the explicit ones (flag) first, then those in $NAPKIN_SPECS_DIR."""
    dirs: list[Path] = [Path(d) for d in (explicit or [])]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    for d in dirs:
        if not d.is_dir():
            what = "is not a directory" if d.exists() else "does not exist"
            raise SpecError(f"specs directory '{d}' {what} (from --specs-dir or ${ENV_VAR}); give a directory holding "
                            "hardware_specs/ and/or model_specs/")
        _check_layout(d)
    return tuple(d.resolve() for d in dirs)


SPEC_FOLDERS = ("hardware_specs", "model_specs")


def _check_layout(d: Path) -> None:
    """A specs directory holds hardware_specs/ or model_specs/; anything else is surely the wrong folder (a typo,
    or the YAML files one level too high), said in one line rather than silently reading nothing."""
    if any((d / folder).is_dir() for folder in SPEC_FOLDERS):
        return
    where = f"(from --specs-dir or ${ENV_VAR})"
    yaml_files = [p.name for p in d.glob("*.y*ml") if p.is_file()]
    if yaml_files:
        more = f" and {len(yaml_files) - 1} more YAML files" if len(yaml_files) > 1 else ""
        raise SpecError(f"specs directory '{d}' {where} holds {min(yaml_files)}{more} directly; "
                        f"napkin reads {d / 'hardware_specs'}/*.yaml and {d / 'model_specs'}/*.yaml: move them there")
    raise SpecError(f"specs directory '{d}' {where} has neither hardware_specs/ nor model_specs/; it should hold "
                    "hardware_specs/*.yaml and/or model_specs/*.yaml, shaped like the shipped specs")


def normalize(name: str) -> str:
    """Case, spaces and underscores do not matter in names: 'NVIDIA H100 80GB HBM3' works."""
    return "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


# Tags of discriminated unions (model kinds) that pydantic puts first in an error's location.
_UNION_TAGS = {"transformer", "linear"}


def format_validation_error(path: Path | str, err: ValidationError, prefix: str = "") -> str:
    """pydantic errors as ``file: field: message``, one per line."""
    lines = []
    for e in err.errors():
        parts = list(e["loc"])
        if len(parts) > 1 and parts[0] in _UNION_TAGS:
            parts = parts[1:]
        loc = ".".join(str(p) for p in parts) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the shipped specs for the fields)"
        lines.append(f"{path}: {prefix}{loc}: {msg}")
    return "\n".join(lines)


def read_yaml(path: Path) -> Any:
    import yaml  # imported here: only catalog loading needs it

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster when present
        with path.open(encoding="utf-8") as f:
            return yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (not UTF-8); expected a YAML spec") from None


def _documents(path: Path, data: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of fields (or 'defaults' + 'specs'), got {type(data).__name__}")
    if "specs" in data:
        extra = set(data) - {"defaults", "specs"}
        if extra:
            raise SpecError(f"{path}: {sorted(extra)[0]}: unknown top-level key beside 'specs' (only 'defaults')")
        defaults = data.get("defaults") or {}
        items = data["specs"]
        if not isinstance(defaults, dict) or not isinstance(items, list):
            raise SpecError(f"{path}: 'defaults' must be a mapping and 'specs' a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise SpecError(f"{path}: specs.{i}: expected a mapping of fields")
            yield f"specs.{i}.", {**defaults, **item}
    else:
        yield "", data


class Catalog(Generic[T]):
    """Specs of one kind by name, with aliases and did-you-mean."""

    def __init__(self, kind: str, specs: dict[str, T], files: dict[str, Path], aliases: dict[str, str]) -> None:
        self.kind = kind
        self._specs = specs
        self.files = files
        self._aliases = aliases

    def __iter__(self) -> Iterator[T]:
        return iter(self._specs[k] for k in sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def resolve(self, name: str) -> str:
        key = normalize(name)
        if key in self._aliases:
            return self._aliases[key]
        # did-you-mean: the closest names, one per spec (h100 and h100-sxm5 are the same GPU)
        close, seen = [], set()
        for cand in difflib.get_close_matches(key, list(self._aliases), n=20, cutoff=0.5):
            if self._aliases[cand] not in seen:
                seen.add(self._aliases[cand])
                close.append(cand)
        raise UnknownNameError(self.kind, name, self._specs, close[:3])

    def get(self, name: str) -> T:
        return self._specs[self.resolve(name)]

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, n in self._aliases.items() if n == name and a != name)


def load_catalog(kind: str, folder: str, model: Any, extra_dirs: Sequence[Path] = ()) -> Catalog[Any]:
    """Read the built-in folder then each user dir's ``folder``; later files override earlier names.

    ``model`` is a pydantic model class or any type a TypeAdapter accepts (a discriminated union).
    """
    adapter = TypeAdapter(model)
    specs: dict[str, T] = {}
    files: dict[str, Path] = {}
    aliases: dict[str, str] = {}
    sources = [(builtin_dir(folder), True)] + [(d / folder, False) for d in extra_dirs]
    for directory, builtin in sources:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.y*ml")):
            for prefix, doc in _documents(path, read_yaml(path)):
                try:
                    spec = adapter.validate_python(doc)
                except ValidationError as e:
                    raise SpecError(format_validation_error(path, e, prefix)) from None
                name = spec.name  # type: ignore[attr-defined]
                if builtin and name in specs:
                    raise SpecError(f"{path}: name: '{name}' is also defined in {files[name]}")
                if name in specs:  # a user spec replaces the built-in: drop the old aliases
                    aliases = {a: n for a, n in aliases.items() if n != name}
                specs[name], files[name] = spec, path
                for alias in [name, *getattr(spec, "aliases", [])]:
                    key = normalize(alias)
                    owner = aliases.get(key)
                    if owner is not None and owner != name:
                        hint = "" if builtin else (f"; to replace {owner}, keep its name '{owner}' in your file, or "
                                                   "drop this alias")
                        raise SpecError(f"{path}: aliases: '{alias}' already names {owner} ({files[owner]}){hint}")
                    aliases[key] = name
    return Catalog(kind, specs, files, aliases)


@functools.lru_cache(maxsize=8)
def _hardware(extra: tuple[Path, ...]) -> Catalog[Any]:
    from napkin.specs.hardware import HardwareSpec

    return load_catalog("hardware", "hardware_specs", HardwareSpec, extra)


def hardware_catalog(specs_dirs: Sequence[str | Path] | None = None) -> Catalog[Any]:
    """The hardware catalog (built-ins + user dirs), loaded once per set of directories."""
    return _hardware(user_dirs(specs_dirs))


def get_hardware(name: str, specs_dirs: Sequence[str | Path] | None = None) -> Any:
    """A HardwareSpec by name or alias ('h100', 'NVIDIA H100 80GB HBM3', 'a100-sxm-80gb')."""
    return hardware_catalog(specs_dirs).get(name)


@functools.lru_cache(maxsize=8)
def _models(extra: tuple[Path, ...]) -> Catalog[Any]:
    from napkin.specs.model import ModelSpec

    return load_catalog("model", "model_specs", ModelSpec, extra)


def model_catalog(specs_dirs: Sequence[str | Path] | None = None) -> Catalog[Any]:
    """The architecture catalog (built-ins + user dirs), loaded once per set of directories."""
    return _models(user_dirs(specs_dirs))


def get_model(name: str, specs_dirs: Sequence[str | Path] | None = None) -> Any:
    """A TransformerSpec/LinearSpec by catalog name or alias, or from a file path:
    a Hugging Face ``config.json`` or a napkin model YAML."""
    path = Path(name)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.name == "config.json" or path.is_dir():
        from napkin.specs.model_files import load_model_file

        return load_model_file(path)
    return model_catalog(specs_dirs).get(name)
