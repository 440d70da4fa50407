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
from napkin.specs import precompiled
from napkin.specs.spec_files import format_validation_error, read_yaml

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


def _is_dir(d: Path, what: str) -> bool:
    """Path.is_dir, with a directory napkin may not enter said in one line (is_dir raises PermissionError)."""
    try:
        return d.is_dir()
    except OSError as e:
        raise SpecError(f"{what} '{d}' cannot be read: {e.strerror or e}") from None


def _readable(d: Path, what: str) -> None:
    """A directory napkin cannot list is refused, not read as empty (which would silently keep the built-ins)."""
    if not os.access(d, os.R_OK | os.X_OK):
        raise SpecError(f"{what} '{d}' cannot be read (permission denied); napkin would silently use the built-in "
                        "specs instead: fix its permissions or leave it out")


def user_dirs(explicit: Sequence[str | Path] | None = None) -> tuple[Path, ...]:
    """User spec directories: the explicit ones (flag) first, then those in $NAPKIN_SPECS_DIR. One directory given
    twice (flag and variable) is read once."""
    dirs: list[Path] = [Path(d) for d in (explicit or [])]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    what = f"specs directory (from --specs-dir or ${ENV_VAR})"
    for d in dirs:
        if not _is_dir(d, what):
            state = "is not a directory" if d.exists() else "does not exist"
            raise SpecError(f"specs directory '{d}' {state} (from --specs-dir or ${ENV_VAR}); give a directory "
                            "holding hardware_specs/ and/or model_specs/")
        _readable(d, what)
        _check_layout(d)
    return tuple(dict.fromkeys(d.resolve() for d in dirs))


SPEC_FOLDERS = ("hardware_specs", "model_specs", "stack_specs")


def _check_layout(d: Path) -> None:
    """A specs directory holds hardware_specs/ or model_specs/; anything else is surely the wrong folder (a typo,
    or the YAML files one level too high), said in one line rather than silently reading nothing."""
    if any(_is_dir(d / folder, "specs folder") for folder in SPEC_FOLDERS):
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


def _yaml_files(directory: Path) -> list[Path]:
    """The *.yaml / *.yml files of a spec folder, sorted; a folder napkin cannot list is refused, not skipped."""
    try:
        with os.scandir(directory) as entries:
            found = [Path(e.path) for e in entries if e.name.endswith((".yaml", ".yml")) and e.is_file()]
    except OSError as e:
        raise SpecError(f"specs folder '{directory}' cannot be read: {e.strerror or e}; napkin would silently skip "
                        "its specs: fix its permissions or leave it out") from None
    return sorted(found)


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


@functools.lru_cache(maxsize=8)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def _validated(path: Path, prefix: str, doc: Any, model: Any) -> Any:
    """One spec document validated, its problems said as `file: field: message`."""
    try:
        return _adapter(model).validate_python(doc)
    except ValidationError as e:
        raise SpecError(format_validation_error(path, e, prefix)) from None


def _read_specs(directory: Path, model: Any) -> list[tuple[Path, Any]]:
    """Every spec in a folder's YAML files, validated, with the file it came from."""
    return [(path, _validated(path, prefix, doc, model))
            for path in _yaml_files(directory) for prefix, doc in _documents(path, read_yaml(path))]


@functools.lru_cache(maxsize=8)
def _builtin_specs(directory: Path, model: Any) -> list[tuple[Path, Any]]:
    """The shipped specs, read once per process (they cannot change under it; specs are frozen): from their
    precompiled documents (napkin.specs.precompiled; no YAML parsed) where those were made from exactly the
    folder's files, else from the YAML files. Either way each document is validated here."""
    docs = precompiled.documents(directory.name, _yaml_files(directory))
    if docs is None:
        return _read_specs(directory, model)
    return [(path, _validated(path, prefix, doc, model)) for path, prefix, doc in docs]


def load_catalog(kind: str, folder: str, model: Any, extra_dirs: Sequence[Path] = ()) -> Catalog[Any]:
    """Read the built-in folder then each user dir's ``folder``; later files override earlier names.

    ``model`` is a pydantic model class or any type a TypeAdapter accepts (a discriminated union).
    """
    specs: dict[str, Any] = {}
    files: dict[str, Path] = {}
    aliases: dict[str, str] = {}
    sources = [(builtin_dir(folder), True)] + [(d / folder, False) for d in extra_dirs]
    user_files: dict[str, Path] = {}  # where each user spec came from: two of one name are refused
    for directory, builtin in sources:
        if not _is_dir(directory, "specs folder"):
            continue
        read = _builtin_specs if builtin else _read_specs
        for path, spec in read(directory, model):
            name = spec.name
            if builtin and name in specs:
                raise SpecError(f"{path}: name: '{name}' is also defined in {files[name]}")
            if not builtin and name in user_files:
                raise SpecError(f"{path}: name: '{name}' is also defined in {user_files[name]} (both user "
                                "specs; napkin would silently keep the last one): rename or remove one")
            if not builtin:
                user_files[name] = path
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


def _name_arg(name: Any, what: str, expected: str) -> str:
    """The name argument of get_model/get_hardware as a str (a path object as its text); anything else is a
    TypeError naming it, not an AttributeError deep inside."""
    if isinstance(name, str):
        return name
    if isinstance(name, os.PathLike) and what == "model":
        return os.fspath(name)
    raise TypeError(f"{what} must be {expected}, not {type(name).__name__}")


def get_hardware(name: str, specs_dirs: Sequence[str | Path] | None = None) -> Any:
    """A HardwareSpec by name or alias ('h100', 'NVIDIA H100 80GB HBM3', 'a100-sxm-80gb'), or one described in a
    line: 'custom:peak=989TFLOP/s,memory=80GB,bw=3.35TB/s' (napkin.specs.custom_gpu)."""
    name = _name_arg(name, "hardware", "a GPU name (e.g. 'h100')")
    from napkin.specs.custom_gpu import EXAMPLE, custom_hardware, is_custom

    if is_custom(name):
        return custom_hardware(name)
    try:
        return hardware_catalog(specs_dirs).get(name)
    except UnknownNameError as e:  # a GPU the catalog lacks: say how to describe it
        e.args = (f"{e} Or describe it: --gpu {EXAMPLE}",)
        raise


@functools.lru_cache(maxsize=8)
def _stacks(extra: tuple[Path, ...]) -> Catalog[Any]:
    from napkin.specs.stack import StackSpec

    return load_catalog("stack", "stack_specs", StackSpec, extra)


def stack_catalog(specs_dirs: Sequence[str | Path] | None = None) -> Catalog[Any]:
    """The training-stack catalog (built-ins + user dirs' stack_specs/), loaded once per set of directories."""
    return _stacks(user_dirs(specs_dirs))


def get_stack(name: str, specs_dirs: Sequence[str | Path] | None = None) -> Any:
    """A StackSpec by name or alias ('megatron-te', 'pytorch-fsdp', 'fsdp')."""
    return stack_catalog(specs_dirs).get(_name_arg(name, "stack", "a stack name (e.g. 'pytorch-fsdp')"))


@functools.lru_cache(maxsize=8)
def _models(extra: tuple[Path, ...]) -> Catalog[Any]:
    from napkin.specs.model import ModelSpec

    return load_catalog("model", "model_specs", ModelSpec, extra)


def model_catalog(specs_dirs: Sequence[str | Path] | None = None) -> Catalog[Any]:
    """The architecture catalog (built-ins + user dirs), loaded once per set of directories."""
    return _models(user_dirs(specs_dirs))


MODEL_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def is_model_path(name: str) -> bool:
    """A --model argument names a file when it looks like a path: it holds a '/' (./llama3-8b/, models/x.yaml) or
    ends in .json/.yaml/.yml. Anything else is a catalog name, even where a folder of that name is here."""
    return ("/" in name or os.sep in name or name in (".", "..") or name.startswith("~")
            or name.lower().endswith(MODEL_FILE_SUFFIXES))


def get_model(name: str, specs_dirs: Sequence[str | Path] | None = None) -> Any:
    """A TransformerSpec/LinearSpec by catalog name or alias, or from a file path (see is_model_path):
    a Hugging Face ``config.json`` (or the folder holding one) or a napkin model YAML; or a Hugging Face Hub id
    ``org/name[@revision]`` that is no path here (napkin.specs.hub: its config.json, cached)."""
    name = _name_arg(name, "model", "a model name (e.g. 'llama3-8b') or a config.json path")
    if is_model_path(name):
        from napkin.specs.hub import parse_hub_id

        if parse_hub_id(name) is not None:
            from napkin.specs.hub import spec_from_hub

            return spec_from_hub(name, catalog_names=lambda: model_catalog(specs_dirs).names())
        from napkin.specs.model_files import load_model_file

        return load_model_file(_expand(Path(name)))
    try:
        return model_catalog(specs_dirs).get(name)
    except UnknownNameError as e:
        local = Path(name)
        if _exists(local):  # a folder or file here of that name: say how to read it rather than guess
            hint = f"; to read the file '{name}' here, write ./{name}"
            e.args = (str(e) + hint,)
        raise


def _expand(path: Path) -> Path:
    """~/x as the home folder's x; '~nosuchuser/x' (no such home) stays as written, and fails as a missing file."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False
