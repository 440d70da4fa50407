"""Reading spec YAML and config.json that may be hostile: every problem is a one-line SpecError, never a traceback.

What a plain ``yaml.safe_load`` / ``json.loads`` lets through, refused here with the file (and line) named:

- integers longer than any spec needs (Python refuses to convert more than 4,300 digits with a ValueError; a
  300-digit one overflows a float later, in whichever command first multiplies it);
- nesting deeper than any spec needs (``json`` raises RecursionError on 100,000 ``[``);
- the same key twice in one YAML mapping (YAML keeps the last one silently);
- files far larger than any spec, and JSON keys of the wrong type where napkin reads them (``"model_type": []``).

yaml and json are imported when a file is read, never at start-up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napkin.errors import SpecError

MAX_FILE_BYTES = 16 * 2**20  # 16 MiB: the largest shipped spec is ~4 kB and a config.json ~10 kB
MAX_YAML_BYTES = 2**20  # 1 MiB of spec YAML (250x the largest shipped file): libyaml takes ~4 s/MiB of tiny items
MAX_INT_CHARS = 40  # 1e40 is beyond every count a spec holds (the largest, peak FLOP/s, is ~1e16)
MAX_DEPTH = 32  # the shipped specs nest 3 levels (specs: - moe: experts), config.json files 4
MAX_VALUES = 100_000  # values once aliases are expanded: the largest shipped spec file holds ~300


def _too_big(path: Path, limit: int = MAX_FILE_BYTES) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return  # the read that follows reports it, with its reason
    if size > limit:
        raise SpecError(f"{path}: {size / 2**20:.1f} MiB is far larger than any spec or config.json "
                        f"(at most {limit / 2**20:g} MiB read); is it the right file?")


def _long_int(text: str) -> str:
    return (f"an integer of {len(text)} characters ({text[:12]}...); no spec or config value needs more than "
            f"{MAX_INT_CHARS} (1e40)")


def depth_of(data: Any) -> int:
    """How deeply lists and mappings nest (a scalar: 0), without recursion; shared sub-trees (YAML aliases) are
    walked once."""
    deepest, seen = 0, set()
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, (dict, list)) or id(item) in seen:
            continue
        seen.add(id(item))
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def expanded_size(data: Any, limit: int = MAX_VALUES) -> int:
    """How many values ``data`` holds once its YAML aliases are expanded (each shared sub-tree counted at every
    place it is used), in time linear in the distinct sub-trees; stops counting past ``limit``.

    A YAML alias bomb (``a: &a [1, 1]``, ``b: &b [*a, *a]``, ... nine levels in ~660 bytes) loads as a small graph of
    shared lists, but any code that walks or prints it (an error message's repr) walks 10^9 values."""
    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        item, done = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        children = list(item.values()) + list(item.keys()) if isinstance(item, dict) else item
        if done:
            size[id(item)] = min(limit + 1, 1 + sum(size.get(id(c), 1) for c in children))
        elif id(item) not in size:
            size[id(item)] = 1  # a cycle counts once (the safe loader builds none, but a caller might)
            stack.append((item, True))
            stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in size)
    return size.get(id(data), 1)


def _check_size(path: Path, data: Any) -> None:
    n = expanded_size(data)
    if n > MAX_VALUES:
        raise SpecError(f"{path}: holds more than {MAX_VALUES:,} values once its aliases (*name) are expanded; a spec "
                        "file holds a few hundred (is it an alias bomb, or the wrong file?)")


def _check_depth(path: Path, data: Any) -> None:
    if depth_of(data) > MAX_DEPTH:
        raise SpecError(f"{path}: nested more than {MAX_DEPTH} levels deep; a spec nests 3 or 4")


@functools.lru_cache(maxsize=1)
def _refused() -> Any:
    from yaml.constructor import ConstructorError

    class Refused(ConstructorError):
        """Valid YAML that napkin will not read (a key given twice, an integer of 5,000 digits)."""

    return Refused


@functools.lru_cache(maxsize=1)
def yaml_loader() -> Any:
    """A safe loader (libyaml's where present) that refuses duplicate keys and over-long integers."""
    import yaml

    Refused = _refused()
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster when present

    class Loader(base):  # type: ignore[valid-type, misc]
        def construct_yaml_int(self, node: Any) -> int:
            text = str(node.value)
            if len(text.replace("_", "").lstrip("+-")) > MAX_INT_CHARS:
                raise Refused(None, None, _long_int(text), node.start_mark)
            value = super().construct_yaml_int(node)
            _refuse_yaml11_number(text, value, node)
            return int(value)

        def construct_yaml_float(self, node: Any) -> float:
            value = super().construct_yaml_float(node)
            _refuse_yaml11_number(str(node.value), value, node)
            return value

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                first: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                        continue  # `<<: *defaults` merges are meant to be overridden; non-scalar keys are refused
                    key = self.construct_object(key_node)
                    try:
                        if key in first:
                            raise Refused(None, None, f"'{key}' is given twice (first on line {first[key]}); "
                                          "YAML would keep the last one silently: remove one", key_node.start_mark)
                        first[key] = key_node.start_mark.line + 1
                    except TypeError:  # an unhashable key: the base constructor refuses it
                        continue
            return super().construct_mapping(node, deep=deep)

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
    return Loader


def _refuse_yaml11_number(text: str, value: Any, node: Any) -> None:
    """YAML 1.1 reads `010` as 8 (octal), `0b11` as 3 and `1:00:00` as 3600 (base 60), where a person (and YAML 1.2)
    means 10, a string and a time: napkin refuses them rather than guess."""
    import re

    plain = text.replace("_", "").lstrip("+-")
    if ":" in plain:
        why = f"'{text[:40]}' is read by YAML 1.1 as the base-60 number {value:g}"
    elif re.fullmatch(r"0[0-7]+", plain):
        why = f"'{text[:40]}' is read by YAML 1.1 as the octal number {value:g}"
    elif re.fullmatch(r"0b[01]+", plain):
        why = f"'{text[:40]}' is read by YAML 1.1 as the binary number {value:g}"
    else:
        return
    raise _refused()(None, None, f"{why}; write the number plainly (no leading 0, no ':'), or quote it for a string",
                     node.start_mark)


def read_yaml(path: Path) -> Any:
    """One YAML file, safely: a SpecError naming the file (and line) for anything that is not a plain spec."""
    import yaml

    _too_big(path, MAX_YAML_BYTES)
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.load(f, Loader=yaml_loader())  # a safe loader (SafeLoader's constructors only)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or e
        if isinstance(e, _refused()):  # valid YAML napkin will not read: the line says why
            raise SpecError(f"{path}{where}: {problem}") from None
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (not UTF-8); expected a YAML spec") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read; a spec nests 3 or 4 levels") from None
    except ValueError as e:  # a scalar the constructors cannot convert (an out-of-range date, ...)
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    _check_depth(path, data)
    _check_size(path, data)
    return data


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_CHARS:
        raise _JsonValueError(_long_int(text))
    return int(text)


class _JsonValueError(Exception):
    """A JSON number napkin refuses (raised from inside json.loads, so not a ValueError it would rewrap)."""


def read_json(path: Path, what: str = "a Hugging Face config.json") -> Any:
    """One JSON file, safely: a SpecError naming the file for anything json.loads would raise or let through."""
    import json

    _too_big(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_int=_json_int)
    except _JsonValueError as e:
        raise SpecError(f"{path}: {e}") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (not UTF-8); expected {what}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read; {what} nests 3 or 4 levels") from None
    _check_depth(path, data)
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# config.json keys whose type napkin relies on before any validation (None = absent, as transformers reads it).
_CONFIG_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model_type": (lambda v: isinstance(v, str), "a string such as \"llama\""),
    "architectures": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
                      "a list of class names such as [\"LlamaForCausalLM\"]"),
    "_name_or_path": (lambda v: isinstance(v, str), "a string (the model's hub name)"),
    "hidden_act": (lambda v: isinstance(v, str), "a string such as \"silu\""),
    "activation_function": (lambda v: isinstance(v, str), "a string such as \"gelu_new\""),
    # transformers keeps a string as it is, and `if config.tie_word_embeddings:` takes "false" as true
    "tie_word_embeddings": (lambda v: isinstance(v, bool), "true or false (JSON booleans, not strings)"),
    "attention_bias": (lambda v: isinstance(v, bool), "true or false (JSON booleans, not strings)"),
    "mlp_bias": (lambda v: isinstance(v, bool), "true or false (JSON booleans, not strings)"),
    "use_sliding_window": (lambda v: isinstance(v, bool), "true or false (JSON booleans, not strings)"),
    "sliding_window": (_is_int, "a whole number of positions, or null"),
    "num_nextn_predict_layers": (_is_int, "a whole number, or null"),
    # lists napkin walks (a string or a number here raised TypeError in the family readers; issue 25 item 10)
    "layer_types": (lambda v: _list_of(v, str), "a list of layer kinds such as [\"full_attention\", ...]"),
    "layers_block_type": (lambda v: _list_of(v, str), "a list of block kinds such as [\"mamba\", \"attention\"]"),
    "mlp_only_layers": (lambda v: _list_of(v, int), "a list of layer indices, e.g. [] or [0, 1]"),
    "expand": (lambda v: _number(v) and 0 < v <= 64, "a number in (0, 64], the Mamba inner-width factor (2)"),
    # silent fallbacks (issue 25 item 13): 0 read as "not given" (falcon: multi-head; gemma: every 6th layer)
    "num_kv_heads": (lambda v: _is_int(v) and v > 0, "a whole number of KV heads, at least 1"),
    "sliding_window_pattern": (lambda v: _is_int(v) and v > 0, "a whole number n > 0 (every n-th layer global)"),
}


def _list_of(v: Any, kind: type) -> bool:
    return isinstance(v, list) and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)


def _number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_config_types(path: Path, cfg: Any) -> dict[str, Any]:
    """A config.json's top level: a JSON object whose structural keys have the types transformers gives them."""
    if not isinstance(cfg, dict):
        raise SpecError(f"{path}: expected a JSON object of config keys, got {type(cfg).__name__}")
    import json

    def problems_in(c: dict[str, Any], where: str) -> list[str]:
        return [f"{path}: {where}{key}: must be {what}, got {json.dumps(c[key])[:60]}"
                for key, (ok, what) in _CONFIG_TYPES.items() if c.get(key) is not None and not ok(c[key])]

    problems = problems_in(cfg, "")
    if isinstance(cfg.get("text_config"), dict):  # a multimodal config's language model is read from here
        problems += problems_in(cfg["text_config"], "text_config.")
    if problems:
        raise SpecError("\n".join(problems))
    return cfg


def read_config_json(path: str | Path) -> dict[str, Any]:
    """A Hugging Face config.json as a dict, refused in one line per problem when it is hostile or mistyped."""
    path = Path(path)
    return check_config_types(path, read_json(path))
