"""No input, however wrong, prints a traceback or hangs: generated command lines, spec YAML, config.json, spec
directories, output streams and Python API arguments (issue 12).

Every generated input goes through `_check` (or `_count`), which tallies it in conftest's FUZZ_TALLY; the closing
summary of a pytest run prints the tally ("fuzz: N generated inputs, 0 tracebacks, 0 hangs"). The CLI runs
in-process through typer's CliRunner, with the click command tree built once (conftest: typer rebuilds it, ~25 ms,
on every invoke), so that ten thousand inputs take tens of seconds. Each input runs under a deadline: a hang fails
the test.

The measuring commands (bench-*, validate) run torch kernels: they are fuzzed through option parsing only, each
command line holding at least one value that cannot be parsed, so nothing is ever measured.

The fuzzers of 400 inputs or more are marked slow: the everyday loop (`python -m pytest -m "not slow"`) runs the
short ones (spec directories, failing stdout, the memory ledger's options, every flag), CI runs them all.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import string
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.testing
import yaml
from cli_tree import command_tree, leaf_commands
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import napkin
from napkin.cli.root import app, register
from napkin.errors import NapkinError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
HANG_S = 20  # seconds one input may take before it counts as a hang (a plan over 8 GPUs takes ~0.2 s)
MEASURING = {"bench-matmul", "bench-allreduce", "validate"}
CALM = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


def examples(n: int) -> settings:
    return settings(CALM, max_examples=n)


# --- running the CLI fast, with a deadline ---------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the deadline's alarm (a BaseException: CliRunner swallows Exceptions into exit code 1)."""


@contextlib.contextmanager
def deadline(seconds: float):
    if not hasattr(signal, "setitimer"):  # no SIGALRM (Windows): no hang detection, the run itself still counts
        yield
        return

    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Never the network: a generated --model 'org/name' reads as a Hub id (napkin.specs.hub)."""
    import os

    with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}):
        yield


@pytest.fixture(scope="module")
def run():
    """run(*args, env=None) -> click Result, in-process, on the app with every command registered."""
    register(None)
    runner = typer.testing.CliRunner()  # on the tree conftest builds once (cli_tree.command_tree)

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        with deadline(HANG_S):
            return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)

    return invoke


def _check(tally: dict[str, int], run: Any, *args: Any, env: dict[str, str] | None = None,
           codes: tuple[int, ...] = (0, 2, 3)) -> Any:
    """One generated command line: an answer (0; 3 for --check's 'does not fit') or one line per problem prefixed
    'napkin: error: ' with exit 2 — never a traceback, never a hang."""
    tally["inputs"] += 1
    try:
        out = run(*args, env=env)
    except Hang:
        tally["hangs"] += 1
        raise AssertionError(f"hang (> {HANG_S} s): napkin {' '.join(map(str, args))}") from None
    raised = out.exception is not None and not isinstance(out.exception, SystemExit)
    text = out.stdout + out.stderr
    if raised or out.exit_code not in codes or "Traceback" in text:
        tally["tracebacks"] += 1
        raise AssertionError(f"napkin {' '.join(map(str, args))}\nexit {out.exit_code}: {out.exception!r}\n"
                             f"{out.stderr[-2000:]}")
    if out.exit_code == 2:
        lines = out.stderr.splitlines()
        assert lines and all(line.startswith("napkin: error: ") for line in lines), (args, out.stderr)
    return out


def _count(tally: dict[str, int], fn: Any, *args: Any, allowed: tuple[type[BaseException], ...] = (NapkinError,),
           **kwargs: Any) -> Any:
    """One generated Python-level input: a value, or one of the ``allowed`` exceptions, never anything else."""
    tally["inputs"] += 1
    try:
        with deadline(HANG_S):
            return fn(*args, **kwargs)
    except Hang:
        tally["hangs"] += 1
        raise AssertionError(f"hang: {fn.__name__}{args!r:.300}") from None
    except allowed:
        return None
    except BaseException:
        tally["tracebacks"] += 1
        raise


# --- hostile values ---------------------------------------------------------------------------------------------------

VALUES = ["0", "-1", "nan", "inf", "-inf", "1e999", "", " ", "abc", "1", "2", "8", "3.5", "70B", "1T", "80GiB", "h100",
          "a100", "all", "llama3-8b", "cruncher", "gpt2", "deepseek-v3", "mixtral-8x7b", "bf16", "fp8", "int4",
          "selective", "full", "none", "adamw", "./no-such.json", "1e-9", "4096", "1000000", "9" * 40, "٣", "８",
          "9223372036854775809", "1.0000001", "0x10", "1,000", "½", "--", "1e", "10us", "36h", "450GB/s", "lora",
          "qlora", "mlp", "all-linear", "cpu", "auto", "fp32", "sgd", "zero", "-0", "+8", "1_000", "\x00", "64k",
          "1e-320", "NaN", "0.5", "1024", "1.5T"]
HOSTILE = st.one_of(
    st.sampled_from(VALUES),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**6, max_value=10**20).map(str),
)
GPUS = ["h100", "a100", "v100", "mi300x", "l4", "h10", "NVIDIA H100 80GB HBM3", "", "all"]
DTYPES = ["bf16", "fp32", "tf32", "fp16", "fp8", "fp4", "int8", "int4", "fp64", "fp64_tensor", "bf61", ""]
PRECISIONS = sorted(napkin.PRECISIONS) + ["bf16", "x", ""]


LEAVES = leaf_commands()  # built once: typer builds the whole tree (~25 ms) on every call


def _calculators() -> list[tuple[list[str], Any]]:
    return [(path, cmd) for path, cmd in LEAVES if path[0] not in MEASURING]


def _measuring() -> list[tuple[list[str], Any]]:
    return [(path, cmd) for path, cmd in LEAVES if path[0] in MEASURING]


def _options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option" and p.name not in ("help", "plot", "save")]


@st.composite
def invocation(draw: Any, commands: list[tuple[list[str], Any]]) -> list[str]:
    path, cmd = draw(st.sampled_from(commands))
    args = list(path)
    params = _options(cmd)
    for p in draw(st.lists(st.sampled_from(params), max_size=6, unique_by=lambda p: p.name)) if params else []:
        flag = max(p.opts, key=len)
        if p.is_flag:
            args.append(draw(st.sampled_from([flag, *getattr(p, "secondary_opts", [])])))
        else:
            args += [flag, draw(HOSTILE)]
    for p in cmd.params:  # arguments (e.g. `hardware show NAME`)
        if p.param_type_name == "argument":
            args.append(draw(st.sampled_from(VALUES)))
    if draw(st.integers(0, 9)):  # mostly --json: the same parsing and arithmetic, without drawing tables
        args.append("--json")
    return args


# --- 1. random options with hostile values, every calculator command --------------------------------------------------

@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(4000)
@given(args=invocation(_calculators()))
def test_hostile_options_never_traceback(run, fuzz_tally, args):
    _check(fuzz_tally, run, *args)


# Hostile values in every main argument at once (folded in from test_properties.py).
@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(500)
@given(params=HOSTILE, tokens=HOSTILE, gpus=HOSTILE, mfu=HOSTILE, gpu=st.sampled_from(GPUS),
       dtype=st.sampled_from(DTYPES), sparse=st.booleans())
def test_train_time_never_tracebacks(run, fuzz_tally, params, tokens, gpus, mfu, gpu, dtype, sparse):
    _check(fuzz_tally, run, "train-time", "--params", params, "--tokens", tokens, "--gpus", gpus, "--mfu", mfu,
           "--gpu", gpu, "--dtype", dtype, "--json", *(["--sparse"] if sparse else []))


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(400)
@given(gpus=HOSTILE, memory=HOSTILE, reserve=HOSTILE, zero=st.sampled_from(["0", "1", "2", "3", "4", "-1", "x"]),
       opt=st.sampled_from(["adamw", "sgd", "adagrad", "lion", "nope", ""]), prec=st.sampled_from(PRECISIONS))
def test_max_model_never_tracebacks(run, fuzz_tally, gpus, memory, reserve, zero, opt, prec):
    _check(fuzz_tally, run, "max-model", "--gpus", gpus, "--memory", memory, "--reserve", reserve, "--zero", zero,
           "--optimizer", opt, "--precision", prec, "--json")


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(400)
@given(gpus=HOSTILE, days=HOSTILE, mfu=HOSTILE, ratio=HOSTILE)
def test_budget_never_tracebacks(run, fuzz_tally, gpus, days, mfu, ratio):
    _check(fuzz_tally, run, "budget", "--gpus", gpus, "--days", days, "--mfu", mfu, "--tokens-per-param", ratio,
           "--json")


# --- 2. the dtype × GPU × precision matrix, every command that takes them ---------------------------------------------

MODELS = ["llama3-8b", "gpt2", "mixtral-8x7b", "deepseek-v3", "cruncher"]
MATRIX = {
    "train-time": ["--params", "7e9", "--tokens", "1e12", "--gpus", "8"],
    "budget": ["--gpus", "8", "--days", "7"],
    "max-model": ["--gpus", "8"],
    "mfu": ["--gpus", "8", "--tokens-per-s", "9000"],
    "memory": ["--gpus", "8"],
    "inference": [],
    "roofline": [],
    "step-time": ["--gpus", "8", "--tp", "2", "--micro-batch", "1", "--global-batch", "8", "--seq", "1024"],
}


@st.composite
def matrix_invocation(draw: Any) -> list[str]:
    command = draw(st.sampled_from(sorted(MATRIX)))
    gpus = GPUS if command not in ("memory", "step-time") else [g for g in GPUS if g != "all"]  # all: 14 ledgers
    args = [command, *MATRIX[command], "--gpu", draw(st.sampled_from(gpus))]
    params = {p.name for p in BY_PATH[command].params}
    for name, flag, choices in (("dtype", "--dtype", DTYPES), ("precision", "--precision", PRECISIONS),
                                ("weights_dtype", "--weights-dtype", DTYPES), ("kv_dtype", "--kv-dtype", DTYPES),
                                ("compute_dtype", "--compute-dtype", DTYPES)):
        if name in params and draw(st.booleans()):
            args += [flag, draw(st.sampled_from(choices))]
    if "model" in params and (command in ("mfu", "memory", "inference", "step-time") or draw(st.booleans())):
        args += ["--model", draw(st.sampled_from(MODELS))]
    if command == "train-time" and "--model" in args:
        args = [a for a in args if a not in ("--params", "7e9")]
    if draw(st.booleans()) and "sparse" in params:
        args.append("--sparse")
    return [*args, "--json"]


def leaf_commands_by_path() -> list[tuple[str, Any]]:
    return [(" ".join(path), cmd) for path, cmd in LEAVES]


BY_PATH = dict(leaf_commands_by_path())


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(500)
@given(args=matrix_invocation())
def test_dtype_gpu_precision_matrix_never_tracebacks(run, fuzz_tally, args):
    _check(fuzz_tally, run, *args)


# The memory ledger's layout and search options with small, mostly plausible values, so that most runs get past
# parsing into the ledger, --max-batch and --min-gpus (folded in from test_memory_properties.py).
LEDGER_VALUES = st.sampled_from(["0", "-1", "1", "2", "3", "8", "1e9", "7B", "nan", "inf", "x", "", "1.5", "64"])


@examples(80)
@given(args=st.lists(st.tuples(st.sampled_from(["--batch", "--seq", "--gpus", "--tp", "--pp", "--zero",
                                                 "--micro-batches", "--params", "--reserve", "--memory"]),
                               LEDGER_VALUES), max_size=5),
       model=st.sampled_from([["--model", "llama3-8b"], ["--model", "cruncher"], []]),
       flags=st.lists(st.sampled_from(["--sp", "--max-batch", "--min-gpus", "--no-flash-attention", "--dropout"]),
                      max_size=2, unique=True))
def test_memory_ledger_options_never_traceback(run, fuzz_tally, args, model, flags):
    _check(fuzz_tally, run, "memory", *model, *flags, *[x for pair in args for x in pair], codes=(0, 2))


# The shape flags (--layers, --d-model, --heads, ...) with small, mostly valid values, on every calculator that takes
# them, alone and changing a catalog model (issue 24 item 10: `memory --layers 2 --d-model 256 --heads 4 --ffn-kind
# mlp` ended in a TypeError that no random draw reached: it needs three valid sizes and one valid kind together).
SHAPE_COMMANDS = [(path, cmd) for path, cmd in _calculators() if any(p.name == "layers" for p in cmd.params)]
SHAPE_VALUES = {
    "--layers": ["1", "2", "3", "4", "0", "x"], "--d-model": ["64", "128", "256", "96", "1", "-8"],
    "--heads": ["1", "2", "4", "8", "3"], "--kv-heads": ["1", "2", "4", "3"], "--ffn": ["128", "512", "1k", "7"],
    "--ffn-kind": ["swiglu", "geglu", "mlp", "relu", ""], "--vocab": ["1000", "32k", "1", "0"],
    "--experts": ["4", "8", "1", "0"], "--top-k": ["1", "2", "9"],
}


@st.composite
def shape_invocation(draw: Any) -> list[str]:
    path, _ = draw(st.sampled_from(SHAPE_COMMANDS))
    args = list(path)
    if draw(st.booleans()):
        args += ["--model", draw(st.sampled_from(["llama3-8b", "gpt2", "mixtral-8x7b", "cruncher"]))]
    required = ["--layers", "--d-model", "--heads"] if draw(st.integers(0, 4)) else []
    optional = draw(st.lists(st.sampled_from(sorted(set(SHAPE_VALUES) - set(required) - {"--ffn-kind"})), max_size=3,
                             unique=True))
    if draw(st.booleans()):  # the FFN kind half the time: it changes how the spec is built
        optional.append("--ffn-kind")
    for flag in required + optional:
        args += [flag, draw(st.sampled_from(SHAPE_VALUES[flag]))]
    if path[0] in ("plan", "step-time", "train-time"):
        args += ["--gpus", "8", "--global-batch", "8", "--seq", "512"]
    return [*args, "--json"]


def test_shape_commands_found():
    assert {"memory", "plan", "step-time", "inference", "flops"} <= {p[0] for p, _ in SHAPE_COMMANDS}


@examples(60)
@given(args=shape_invocation())
@example(args=["memory", "--layers", "2", "--d-model", "256", "--heads", "4", "--ffn-kind", "mlp", "--json"])
def test_shape_flags_never_traceback(run, fuzz_tally, args):
    _check(fuzz_tally, run, *args)


@pytest.mark.parametrize("command", ["memory", "plan", "step-time"])
@pytest.mark.parametrize("kind", ["mlp", "geglu", "swiglu"])
def test_every_ffn_kind_builds_a_model(run, command, kind):
    extra = ["--gpus", "8", "--global-batch", "8", "--seq", "512"] if command != "memory" else []
    out = run(command, "--layers", "2", "--d-model", "256", "--heads", "4", "--ffn-kind", kind, *extra, "--json")
    assert out.exit_code == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr


# --- 3. spec YAML contents through every command that loads specs -----------------------------------------------------

def _base_hardware() -> dict[str, Any]:
    return json.loads(_BASES[0])


def _base_model() -> dict[str, Any]:
    return json.loads(_BASES[1])


def _bases() -> tuple[str, str]:
    from napkin.specs.catalog import builtin_dir

    doc = yaml.safe_load((builtin_dir("hardware_specs") / "h100-sxm.yaml").read_text())
    spec = napkin.get_model("llama3-8b").model_dump(mode="json", exclude_none=True)
    return (json.dumps({**doc, "name": "fuzz-gpu", "aliases": []}),
            json.dumps({**spec, "name": "fuzz-model", "aliases": []}))


_BASES = _bases()


def deep(depth: int) -> Any:
    out: Any = 1
    for _ in range(depth):
        out = [out]
    return out


WILD = st.one_of(
    st.booleans(), st.none(),
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=0, max_value=450).map(lambda k: 10**k),  # past float range and past 4,300 digits' guard
    st.integers(min_value=1, max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["٣", "８", "true", "false", "1e999", "nan", "80e9", "1_000", "", "h100", "0x10"]),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "bf16", "fp8"]), st.integers(0, 3), max_size=2),
    st.integers(min_value=1, max_value=200).map(deep),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def mutated(draw: Any, base: dict[str, Any]) -> dict[str, Any]:
    """A valid spec with a few fields set to wild values, deleted, or joined by unknown keys."""
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, dict) else {}
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["set", "set", "set", "delete", "extra"]))
        if action == "set":
            parent[path[-1]] = draw(WILD)
        elif action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.sampled_from(["unknown_key", "extra", "layers2", "__proto__"]))] = draw(WILD)
    return doc


def _yaml_text(draw: Any, doc: Any) -> str:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    trick = draw(st.sampled_from(["none", "none", "duplicate", "long-int", "truncate", "tab"]))
    if trick == "duplicate" and isinstance(doc, dict) and doc:
        key = draw(st.sampled_from(sorted(map(str, doc))))
        text += f"{key}: 1\n"
    elif trick == "long-int":
        text += f"extra_number: {'7' * draw(st.sampled_from([41, 400, 5000]))}\n"
    elif trick == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif trick == "tab":
        text = text.replace("  ", "\t", 1)
    return text


HW_COMMANDS = [
    ["hardware", "show", "fuzz-gpu", "--json"], ["hardware", "list", "--json"],
    ["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json"],  # never uses that spec
    ["train-time", "--gpu", "fuzz-gpu", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json"],
    ["budget", "--gpu", "fuzz-gpu", "--gpus", "8", "--days", "7", "--json"],
    ["max-model", "--gpu", "fuzz-gpu", "--gpus", "8", "--json"],
    ["roofline", "--gpu", "fuzz-gpu", "--model", "llama3-8b", "--json"],
    ["memory", "--model", "llama3-8b", "--gpu", "fuzz-gpu", "--gpus", "8", "--json"],
    ["inference", "--model", "llama3-8b", "--gpu", "fuzz-gpu", "--json"],
    ["mfu", "--model", "llama3-8b", "--gpu", "fuzz-gpu", "--gpus", "8", "--tokens-per-s", "9000", "--json"],
    ["step-time", "--model", "gpt2", "--gpu", "fuzz-gpu", "--gpus", "8", "--tp", "2", "--global-batch", "8",
     "--seq", "1024", "--json"],
]
MODEL_COMMANDS = [
    ["models", "show", "{m}", "--json"], ["models", "list", "--json"],
    ["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json"],  # never uses that spec
    ["flops", "--model", "{m}", "--tokens", "1e9", "--json"],
    ["memory", "--model", "{m}", "--gpus", "8", "--json"],
    ["inference", "--model", "{m}", "--json"],
    ["train-time", "--model", "{m}", "--tokens", "1e12", "--gpus", "8", "--json"],
    ["budget", "--model", "{m}", "--gpus", "8", "--days", "7", "--json"],
    ["mfu", "--model", "{m}", "--gpus", "8", "--tokens-per-s", "9000", "--json"],
    ["roofline", "--model", "{m}", "--json"],
    ["max-model", "--gpus", "8", "--like", "{m}", "--seq", "2048", "--json"],
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    counter = iter(range(10**9))
    root = tmp_path_factory.mktemp("fuzz")

    def fresh() -> Path:  # a new directory per input: the catalogs are cached by directory
        d = root / str(next(counter))
        d.mkdir()
        return d

    return fresh


@st.composite
def spec_file(draw: Any, kind: str) -> str:
    base = _base_hardware() if kind == "hardware" else _base_model()
    doc: Any = draw(mutated(base))
    if draw(st.integers(0, 9)) == 0:
        doc = draw(st.sampled_from([{"defaults": doc, "specs": [{}, {"name": "fuzz-2"}]}, [doc], "text", None, 7]))
    return _yaml_text(draw, doc)


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(700)
@given(text=spec_file("hardware"), command=st.sampled_from(HW_COMMANDS), via_flag=st.booleans())
def test_generated_hardware_yaml_never_tracebacks(run, fuzz_tally, scratch, text, command, via_flag):
    d = scratch()
    (d / "hardware_specs").mkdir()
    (d / "hardware_specs" / "fuzz.yaml").write_text(text, encoding="utf-8")
    if via_flag:
        _check(fuzz_tally, run, "--specs-dir", d, *command)
    else:
        _check(fuzz_tally, run, *command, env={"NAPKIN_SPECS_DIR": str(d)})


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(700)
@given(text=spec_file("model"), command=st.sampled_from(MODEL_COMMANDS), as_file=st.booleans())
def test_generated_model_yaml_never_tracebacks(run, fuzz_tally, scratch, text, command, as_file):
    d = scratch()
    if as_file:  # --model path/to/model.yaml
        (d / "m.yaml").write_text(text, encoding="utf-8")
        _check(fuzz_tally, run, *[a.replace("{m}", str(d / "m.yaml")) for a in command])
    else:  # a user catalog
        (d / "model_specs").mkdir()
        (d / "model_specs" / "fuzz.yaml").write_text(text, encoding="utf-8")
        _check(fuzz_tally, run, *[a.replace("{m}", "fuzz-model") for a in command], env={"NAPKIN_SPECS_DIR": str(d)})


# --- 4. config.json contents ------------------------------------------------------------------------------------------

CONFIGS = {p.parent.name: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*/config.json"))}
HF_KEYS = sorted({k for cfg in CONFIGS.values() for k in cfg} | {"model_type", "architectures", "head_dim",
                                                                   "num_key_value_heads", "tie_word_embeddings"})


@st.composite
def config_text(draw: Any) -> str:
    cfg = dict(CONFIGS[draw(st.sampled_from(sorted(CONFIGS)))])
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(HF_KEYS))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "model_type"]))
        if action == "set":
            cfg[key] = draw(WILD)
        elif action == "delete":
            cfg.pop(key, None)
        else:
            cfg["model_type"] = draw(st.sampled_from([*SUPPORTED_TYPES, "bert", "", [], True, None, {"a": 1}]))
    text = json.dumps(cfg, allow_nan=True)
    trick = draw(st.sampled_from(["none", "none", "none", "deep", "long-int", "truncate", "array", "bom"]))
    if trick == "deep":
        n = draw(st.sampled_from([50, 5000, 100_000]))
        text = text[:-1] + ', "nested": ' + "[" * n + "]" * n + "}"
    elif trick == "long-int":
        text = text[:-1] + ', "hidden_size": ' + "9" * draw(st.sampled_from([41, 400, 5000])) + "}"
    elif trick == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif trick == "array":
        text = f"[{text}]"
    elif trick == "bom":
        text = "\ufeff" + text
    return text


SUPPORTED_TYPES = sorted({cfg["model_type"] for cfg in CONFIGS.values()} | {"qwen3"})
CONFIG_COMMANDS = [
    ["models", "show", "{p}", "--json"],
    ["flops", "--model", "{p}", "--tokens", "1e9", "--json"],
    ["memory", "--model", "{p}", "--gpus", "8", "--json"],
    ["inference", "--model", "{p}", "--json"],
    ["train-time", "--model", "{p}", "--tokens", "1e12", "--gpus", "8", "--json"],
    ["mfu", "--model", "{p}", "--gpus", "8", "--tokens-per-s", "9000", "--json"],
    ["roofline", "--model", "{p}", "--json"],
]


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(1200)
@given(text=config_text(), command=st.sampled_from(CONFIG_COMMANDS), folder=st.booleans())
def test_generated_config_json_never_tracebacks(run, fuzz_tally, scratch, text, command, folder):
    d = scratch()
    (d / "config.json").write_text(text, encoding="utf-8")
    target = str(d) if folder else str(d / "config.json")
    _check(fuzz_tally, run, *[a.replace("{p}", target) for a in command])


# --- 5. the loaders on raw hostile text -------------------------------------------------------------------------------

RAW = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=string.digits + "[]{}:,-\"' \n\t.eE+", max_size=300),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 300).map(lambda n: "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, n))),
    st.integers(1, 60).map(lambda n: "a: &a [1, 1]\n" + "".join(f"a{i}: &a{i} [*{'a' if i == 0 else f'a{i - 1}'}, "
                                                                   f"*{'a' if i == 0 else f'a{i - 1}'}]\n"
                                                                   for i in range(n))),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(1200)
@given(text=RAW, as_json=st.booleans())
def test_loaders_refuse_hostile_text_in_one_line(fuzz_tally, scratch, text, as_json):
    from napkin.specs import safe_load

    path = scratch() / ("config.json" if as_json else "spec.yaml")
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    read = safe_load.read_config_json if as_json else safe_load.read_yaml
    _count(fuzz_tally, read, path)


# --- 6. spec directory layouts and permissions ------------------------------------------------------------------------

LAYOUTS = ["missing", "file", "empty", "hardware_specs-as-file", "yaml-at-top", "good", "duplicate-name",
           "unreadable-dir", "unreadable-folder", "same-dir-twice", "nested-too-deep", "empty-folder"]


_DUP_GPU = json.dumps({**_base_hardware(), "name": "dup-gpu"})  # JSON is YAML too


def _layout(d: Path, kind: str) -> Path:
    hw = _DUP_GPU
    if kind == "missing":
        return d / "nope"
    if kind == "file":
        (d / "f").write_text("x")
        return d / "f"
    if kind == "hardware_specs-as-file":
        (d / "hardware_specs").write_text("x")
    elif kind == "yaml-at-top":
        (d / "x.yaml").write_text(hw)
    elif kind == "nested-too-deep":
        (d / "hardware_specs" / "more").mkdir(parents=True)
        (d / "hardware_specs" / "more" / "x.yaml").write_text(hw)
    elif kind == "empty-folder":
        (d / "model_specs").mkdir()
    elif kind != "empty":
        (d / "hardware_specs").mkdir()
        (d / "hardware_specs" / "a.yaml").write_text(hw)
        if kind == "duplicate-name":
            (d / "hardware_specs" / "b.yaml").write_text(hw)
    return d


@examples(300)
@given(kinds=st.lists(st.sampled_from(LAYOUTS), min_size=1, max_size=3), split=st.integers(0, 3),
       command=st.sampled_from([["hardware", "list", "--json"], ["hardware", "show", "dup-gpu", "--json"],
                                ["train-time", "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--json"],
                                ["models", "list", "--json"]]))
def test_specs_dir_layouts_never_traceback(run, fuzz_tally, scratch, kinds, split, command):
    dirs = [_layout(scratch(), k) for k in kinds]
    if "same-dir-twice" in kinds:
        dirs.append(dirs[0])
    flags = [a for d in dirs[:split] for a in ("--specs-dir", str(d))]
    env = {"NAPKIN_SPECS_DIR": ":".join(map(str, dirs[split:]))}
    blocked = {str(d) for d, k in zip(dirs, kinds, strict=False) if k == "unreadable-dir"}
    blocked |= {str(d / "hardware_specs") for d, k in zip(dirs, kinds, strict=False) if k == "unreadable-folder"}
    from napkin.specs import catalog

    real_access, real_scandir = catalog.os.access, catalog.os.scandir

    def access(path: Any, mode: int) -> bool:  # as a non-root user without read permission sees it
        return str(path) not in blocked and real_access(path, mode)

    def scandir(path: Any) -> Any:
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    with mock.patch.object(catalog.os, "access", access), mock.patch.object(catalog.os, "scandir", scandir):
        out = _check(fuzz_tally, run, *flags, *command, env=env)
    broken = {"missing", "file", "empty", "hardware_specs-as-file", "yaml-at-top", "unreadable-dir"}
    if command[0] != "models":  # the hardware catalog is read: its folder's problems are said too
        broken |= {"unreadable-folder", "duplicate-name"}
    if broken & set(kinds):
        assert out.exit_code == 2, (kinds, out.stdout[:300])  # never silently the built-ins


# --- 7. output streams: stdout that fails mid-write -------------------------------------------------------------------

def _command() -> Any:
    register(None)
    return command_tree(app)


class _FullDisk:
    """A stdout on a full disk: every write fails as `> /dev/full` does."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("no descriptor")


@examples(200)
@given(args=invocation([(p, c) for p, c in _calculators() if p[0] in ("train-time", "budget", "max-model",
                                                                         "hardware", "models", "roofline")]))
def test_stdout_errors_are_one_line_and_exit_1(fuzz_tally, args):
    """Whatever the command, a stdout that cannot be written ends with one line on stderr and exit 1 (or the
    command's own one-line error, exit 2, when it fails first)."""
    import io
    import sys

    command = _command()
    err = io.StringIO()
    fuzz_tally["inputs"] += 1
    with mock.patch.object(sys, "stdout", _FullDisk()), mock.patch.object(sys, "stderr", err), deadline(HANG_S):
        try:
            command.main(args, prog_name="napkin")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception:
            fuzz_tally["tracebacks"] += 1
            raise
    lines = err.getvalue().splitlines()
    assert code in (1, 2, 3) or not lines, (args, code, err.getvalue())
    assert all(line.startswith("napkin: error: ") for line in lines), (args, err.getvalue())
    if code == 1:
        assert lines == ["napkin: error: cannot write the output: No space left on device"], (args, lines)


# --- 8. the Python API's argument types -------------------------------------------------------------------------------

WRONG = st.one_of(st.sampled_from([None, True, "abc", "8", "", [], {}, (), object(), b"8", -1, 0, 10**400, 2**63,
                                   1e300, math.nan, math.inf, -math.inf, "h100", "llama3-8b", "fp8", "٣"]),
                  st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**20), st.text(max_size=6))


def _api_calls() -> list[tuple[Any, dict[str, Any]]]:
    """Each calculator function with a valid call; the fuzz replaces one or two of its arguments."""
    h, m = "h100", "llama3-8b"
    return [
        (napkin.train_time, {"hardware": h, "gpus": 8, "params": 7e9, "tokens": 1e12}),
        (napkin.budget, {"hardware": h, "gpus": 8, "days": 7}),
        (napkin.max_model, {"hardware": h, "gpus": 8, "optimizer": "adamw", "precision": "bf16-mixed", "zero": 3}),
        (napkin.memory_ledger, {"model": m, "hardware": h, "seq": 2048, "gpus": 8, "tp": 2}),
        (napkin.count_params, {"spec": m}),
        (napkin.count_flops, {"spec": m, "tokens": 1e9, "seq": 2048}),
        (napkin.training_flops, {"spec": m, "tokens": 1e9, "seq": 2048}),
        (napkin.mfu, {"spec": m, "hardware": h, "gpus": 8, "tokens_per_s": 9000}),
        (napkin.inference, {"spec": m, "hardware": h, "batch": 1, "prompt": 128, "generate": 16}),
        (napkin.kv_cache, {"spec": m, "context": 4096, "batch": 2}),
        (napkin.roofline, {"hardware": h, "dtype": "bf16", "spec": m}),
        (napkin.get_model, {"name": m}),
        (napkin.get_hardware, {"name": h}),
        (napkin.parse_count, {"text": "70B"}),
        (napkin.parse_bytes, {"text": "80GB"}),
    ]


API = _api_calls()

@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(1000)
@given(call=st.sampled_from(API), data=st.data())
def test_api_wrong_argument_types_are_type_or_input_errors(fuzz_tally, call, data):
    fn, kwargs = call
    kwargs = dict(kwargs)
    keys = sorted(kwargs)
    for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True)):
        kwargs[key] = data.draw(WRONG)
    _count(fuzz_tally, fn, allowed=(NapkinError, TypeError), **kwargs)


# --- 9. the measuring commands: argument validation only, nothing measured --------------------------------------------

NEVER_PARSES = ["abc", "nan", "", "1e999", "٣", "x1"]
MEASURING_COMMANDS = _measuring()


@st.composite
def measuring_invocation(draw: Any) -> list[str]:
    path, cmd = draw(st.sampled_from(MEASURING_COMMANDS))
    numeric = [p for p in _options(cmd) if not p.is_flag and p.name in (
        "size", "m", "n", "k", "iters", "warmup_ms", "peak", "batch", "seq", "nproc", "warmup_iters", "cruncher_batch",
        "device_warmup")]
    args = list(path)
    poison = draw(st.sampled_from(numeric))
    args += [max(poison.opts, key=len), draw(st.sampled_from(NEVER_PARSES))]
    for p in draw(st.lists(st.sampled_from(_options(cmd)), max_size=4, unique_by=lambda p: p.name)):
        if p.name == poison.name:
            continue
        args += [max(p.opts, key=len)] if p.is_flag else [max(p.opts, key=len), draw(HOSTILE)]
    return args


@pytest.mark.slow  # a long fuzz (the everyday loop keeps the short ones)
@examples(400)
@given(args=measuring_invocation())
def test_measuring_commands_refuse_bad_arguments_before_measuring(run, fuzz_tally, args):
    out = _check(fuzz_tally, run, *args, codes=(2,))  # refused at parsing: exit 2, nothing measured
    assert out.exit_code == 2


# --- 10. every flag given either changes the answer or is refused -----------------------------------------------------

BASES = [
    ("train-time", ["--params", "7e9", "--tokens", "1e12", "--gpus", "8"]),
    ("budget", ["--gpus", "8", "--days", "7"]),
    ("max-model", ["--gpus", "8"]),
    ("roofline", []),
    ("roofline", ["--model", "llama3-8b"]),
]
# A value different from the default for each option of the commands above (flags: their other half).
ALT = {
    "--gpus": "16", "--params": "8e9", "--tokens": "2e12", "--flops": "1e23", "--gpu": "a100", "--dtype": "fp8",
    "--mfu": "0.3", "--price-per-gpu-hour": "2", "--pue": "1.2", "--model": "gpt2", "--seq": "2048",
    "--recompute": "full", "--hfu": "0.4", "--tp": "2", "--pp": "2", "--vp": "2", "--cp": "2", "--ep": "2",
    "--micro-batch": "2", "--global-batch": "64", "--zero": "1", "--precision": "fp32", "--node-size": "4",
    "--intra-node-bandwidth": "100GB/s", "--inter-node-bandwidth": "10GB/s", "--optimizer": "sgd", "--memory": "40GB",
    "--reserve": "2GB", "--batch": "4", "--like": "gpt2", "--aspect": "64", "--days": "3", "--tokens-per-param": "10",
    "--prompt": "256", "--context": "4096", "--weights-dtype": "fp8", "--kv-dtype": "fp8", "--mfu-fraction": "0.5",
    "--layers": "4", "--d-model": "256", "--heads": "4", "--kv-heads": "2", "--ffn": "512", "--vocab": "1000",
    "--experts": "4", "--top-k": "2", "--ffn-kind": "mlp",
}
# Not answers' inputs: output (--json, --plot, --check), files read (tested on their own), --plan (a mode), --offline
# (only a Hub id reads it).
SKIP = {"help", "json", "explain", "plot", "save", "check", "mfu_from", "calibration", "plan", "offline"}
# Flags that take effect but leave this answer as it is, and why.
INVARIANT = {
    ("roofline", "--layers"): "the roofline places one layer's operations: the layer count does not enter",
    ("roofline", "--vocab"): "the roofline places one layer's operations: the LM head is not among them",
}


def _flag_cases() -> list[tuple[list[str], list[str]]]:
    by_path = dict(leaf_commands_by_path())
    cases = []
    for command, base in BASES:
        for p in by_path[command].params:
            flag = max(p.opts, key=len) if p.param_type_name == "option" else ""
            if p.param_type_name != "option" or p.name in SKIP or flag in base:
                continue
            if p.is_flag:
                cases.append(([command, *base], [(p.secondary_opts or p.opts)[0] if p.default else flag]))
            elif flag in ALT:
                cases.append(([command, *base], [flag, ALT[flag]]))
    return cases


def _answer(out: Any) -> Any:
    doc = json.loads(out.stdout)
    doc.pop("inputs", None)
    return doc


@pytest.mark.parametrize("base,extra", _flag_cases(), ids=" ".join)
def test_every_flag_changes_the_answer_or_is_refused(run, fuzz_tally, base, extra):
    before = _check(fuzz_tally, run, *base, "--json")
    assert before.exit_code == 0, before.stderr
    out = _check(fuzz_tally, run, *base, *extra, "--json")
    if out.exit_code == 2:
        return  # refused, with one line saying why
    assert out.exit_code in (0, 3)
    if (base[0], extra[0]) in INVARIANT:
        assert json.loads(out.stdout)["inputs"] != json.loads(before.stdout)["inputs"]
        return
    assert _answer(out) != _answer(before), f"{' '.join(base)} {' '.join(extra)}: accepted and then ignored"
