"""The root command: global options, the error boundary, and the registry of subcommands."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from napkin._version import __version__
from napkin.cli import context
from napkin.cli.options import SpecsDir
from napkin.errors import InputError, NapkinError, for_cli

EPILOG = (
    "Examples:\n\n"
    "  napkin train-time --params 70e9 --tokens 15e12 --gpus 1024\n\n"
    "  napkin max-model --gpus 8 --optimizer adamw\n\n"
    "  napkin budget --gpus 8 --days 7\n\n"
    "  napkin hardware show h100 --explain\n\n"
    "Every command takes --json (for scripts); every calculation also takes --explain (the worked derivation)."
)


# Whether the command line asked for --json: an error then also prints {"error": ..., "exit_code": ...} on stdout,
# so a script that parses stdout reads why it failed rather than nothing (issue 24 item 12). Set by NapkinGroup.main.
_json_requested = False


def wants_json(args: Sequence[str]) -> bool:
    """--json among the options (before a bare `--`)."""
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def _fail(message: str, code: int = 2) -> None:
    """One line per problem on stderr, prefixed so it reads as napkin's, never a traceback; with --json, the same
    message as a JSON object on stdout too."""
    text = for_cli(str(message))
    if _json_requested:
        import json

        try:
            typer.echo(json.dumps({"error": text, "exit_code": code}))
        except (OSError, ValueError):  # stdout is gone: stderr and the status still say it
            pass
    try:
        for line in text.splitlines() or [""]:
            typer.echo(f"napkin: error: {line}", err=True)
    except (OSError, ValueError):  # stderr itself is gone (2> /dev/full): the exit status still says it
        pass
    sys.exit(code)


def _quiet_closed_pipe(code: int = 0) -> None:
    """The reader went away (`napkin hardware list | head -1`): end quietly, no traceback, no 'Exception ignored'.

    Python's own advice (docs, signal module, "Note on SIGPIPE"): point stdout at devnull so the flush at exit
    has nowhere to fail. The status is 0, as head-friendly tools end: whether napkin wrote its last line before
    `head` left is a race, and 1 (or 141) on one side of it would make `set -o pipefail` scripts fail at random;
    the reader took what it wanted. A stdout that failed otherwise (a full disk) passes 1.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (embedded, captured): nothing to flush
        pass
    sys.exit(code)


def _end_if_reader_left(e: OSError) -> None:
    import errno

    if e.errno == errno.EPIPE:
        _quiet_closed_pipe()


def _os_error(e: OSError) -> None:
    """An OSError no command turned into a message: one line on stderr, exit 1. Writing stdout to a full disk
    (`> /dev/full`) raises one without a file name; stdout then points at devnull so that the flush at exit cannot
    fail again ('Exception ignored ...')."""
    import errno

    if e.errno == errno.EPIPE and e.filename is None:  # a closed pipe that came as a plain OSError
        _quiet_closed_pipe()
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename is not None:
        _fail(f"{e.filename}: {reason}", 1)
    lost = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
    try:
        typer.echo(f"napkin: error: {'cannot write the output: ' if lost else ''}{reason}", err=True)
    except (OSError, ValueError):  # stderr is gone too: the exit status is all that is left
        pass
    _quiet_closed_pipe(1)


def given(ctx: Any, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) that the user typed, as the flags typed (a flag pair's
    --no-... when it was given off); an option left at its default is not given, even where it holds one."""
    params = {p.name: p for p in ctx.command.params}
    flags = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
            continue
        p = params[name]
        off = getattr(p, "is_flag", False) and p.secondary_opts and not ctx.params.get(name)
        flags.append(p.secondary_opts[0] if off else max(p.opts, key=len))
    return flags


def refuse_unused(ctx: Any, names: Sequence[str], reason: str, fix: str) -> None:
    """Refuse options a command would accept and then ignore: '--seq would be ignored without --model (...); give
    --model, or leave it out'. Nothing a user types is silently dropped."""
    flags = given(ctx, *names)
    if flags:
        shown = flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " and " + flags[-1]
        raise InputError(f"{shown} would be ignored {reason}; {fix}, or leave {'it' if len(flags) == 1 else 'them'} "
                         "out")


def hoist_specs_dirs(args: list[str]) -> list[str]:
    """--specs-dir DIR anywhere in argv, moved in front of the command (the root's option), so that
    `napkin hardware list --specs-dir DIR` works as `napkin --specs-dir DIR hardware list` does. Nothing after
    `--` is touched; a --specs-dir at the end, without its directory, is refused here."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if a == "--specs-dir":
            if i + 1 == len(args):
                raise InputError("--specs-dir needs a directory (holding hardware_specs/ and/or model_specs/)")
            front += args[i:i + 2]
            i += 2
            continue
        if a.startswith("--specs-dir="):
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def _flags_without_placeholder(command: Any) -> None:
    """typer shows `<bool>` beside every flag in --help (--json <bool>); a flag takes no value, so show none."""
    import types

    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
    get_help = getattr(command, "get_help_option", None)
    if get_help is not None:  # --help itself: typer builds it on first use and keeps it
        try:
            help_option = get_help(types.SimpleNamespace(help_option_names=["-h", "--help"]))
        except Exception:  # noqa: BLE001 - a cosmetic fix must never break a command
            help_option = None
        if help_option is not None and getattr(help_option, "metavar", None) is None:
            help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_without_placeholder(sub)


class NapkinGroup(TyperGroup):
    """Turns every error into one line and exit code 2 (usage errors, bad values, bad specs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        context.add_shape_options(self)  # --layers/--d-model/--heads/... beside every --model
        _flags_without_placeholder(self)

    # A reader that left is ended here, while parsing (--help) or running: click's own main would exit 1 on EPIPE,
    # and whether it comes at all is a race with `head` (see _quiet_closed_pipe).
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except OSError as e:
            _end_if_reader_left(e)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as e:
            _end_if_reader_left(e)
            raise

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # typer adds --install-completion / --show-completion after __init__
            if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
                param.metavar = ""
        return params

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        from napkin.render import prepare_streams

        prepare_streams()  # a stdout that cannot encode Unicode gets ASCII stand-ins, not a UnicodeEncodeError
        global _json_requested
        _json_requested = wants_json(list(sys.argv[1:] if args is None else args))
        try:
            args = hoist_specs_dirs(list(sys.argv[1:] if args is None else args))
            rv = super().main(args, prog_name or "napkin", complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
        except typer.TyperException as e:  # click's exceptions (vendored by typer) derive from this
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":  # typer has already printed the help
                rv = 0
            else:
                code = getattr(e, "exit_code", 2)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None and code == 2 else ""
                message = e.format_message() if hasattr(e, "format_message") else str(e)
                _fail(message + hint, code)
        except typer.Abort:
            _fail("aborted", 130)
        except NapkinError as e:
            _fail(str(e), e.exit_code)
        except BrokenPipeError:
            _quiet_closed_pipe()
        except OSError as e:
            _os_error(e)
        except SystemExit as e:  # rich's Console.on_broken_pipe exits 1 itself (tables, typer's --help)
            if e.code == 1 and isinstance(e.__context__, BrokenPipeError):
                _quiet_closed_pipe()
            raise
        if not standalone_mode:
            return rv
        try:
            sys.stdout.flush()  # here, not at exit: a reader that left shows up as BrokenPipeError we can catch
        except BrokenPipeError:
            _quiet_closed_pipe()
        except OSError as e:
            _os_error(e)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=NapkinGroup,
    name="napkin",
    help="napkin: resource accounting for training and serving large language models — FLOPs, memory, "
    "GPU-days and MFU, with the derivation shown.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"napkin {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    specs_dir: SpecsDir = None,
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Resource accounting for LLMs: FLOPs, bytes, GPU-days and MFU, each with its derivation."""
    context.state(ctx).specs_dirs = list(specs_dir or [])


# Which module registers each top-level command. `main()` imports only the one a command needs: typer
# builds every registered command's parser before running any, ~5 ms each (a test checks this map).
COMMAND_MODULES: dict[str, str] = {
    "train-time": "calc", "max-model": "calc", "budget": "calc",
    "flops": "model_cmds", "mfu": "model_cmds", "models": "model_cmds",
    "memory": "memory_cmds",
    "step-time": "step_cmds",
    "plan": "plan_cmds",
    "inference": "serve_cmds", "roofline": "serve_cmds",
    "bench-matmul": "bench_cmds", "bench-allreduce": "bench_cmds",
    "validate": "validate_cmds",
    "hardware": "catalog_cmds",
}
# The order of `napkin --help`: planning, architecture, memory, serving, measuring, catalogs.
_ORDER = ["calc", "step_cmds", "plan_cmds", "model_cmds", "memory_cmds", "serve_cmds", "bench_cmds", "validate_cmds",
          "catalog_cmds"]


def register(command: str | None = None) -> None:
    """Import the command modules (each adds its commands to `app`): all of them, or the one `command` needs."""
    import importlib

    for module in [COMMAND_MODULES[command]] if command in COMMAND_MODULES else _ORDER:
        importlib.import_module(f"napkin.cli.{module}")
    _reflow_help(app)


def reflow(doc: str) -> str:
    """A docstring's paragraphs as single lines (the terminal wraps them); indented example lines stay as they are.

    typer prints a docstring's line breaks as they are, which reads ragged at any width but the source's.
    """
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split())
                       for p in paragraphs)


def _reflow_help(group: typer.Typer) -> None:
    for info in group.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow(info.callback.__doc__)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_help(sub.typer_instance)


def _command_in(args: list[str]) -> str | None:
    """The subcommand in argv, skipping the root's options (--specs-dir takes a value; after the command it
    does not matter here). None where the root's own --help comes first: `napkin --help train-time` is the root's
    help, which lists every command."""
    it = iter(args)
    for a in it:
        if a == "--specs-dir":
            next(it, None)
        elif a in ("-h", "--help"):
            return None
        elif not a.startswith("-"):
            return a
    return None


def _completing() -> bool:
    """Shell completion is asking (click's ``_NAPKIN_COMPLETE``): it needs every command."""
    return any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)


def _name(info: Any) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def only(command: str | None) -> typer.Typer:
    """The app with `command` the only command registered, where it is one of napkin's: typer builds every
    registered command (reads its annotations, makes each option) before it runs any, so the one run is the only
    one built. `napkin --help`, an unknown command (did-you-mean) and shell completion get the whole app."""
    if command not in COMMAND_MODULES:
        return app
    view = copy.copy(app)  # the same root (callback, settings); its own lists of what is registered
    view.registered_commands = [c for c in app.registered_commands if _name(c) == command]
    view.registered_groups = [g for g in app.registered_groups if g.name == command]
    return view


def main() -> None:
    """Run the command in sys.argv, with only its module imported and only it built. It ends, as any click
    program does, by raising SystemExit (so it can be called in-process); the console script is `console()`."""
    command = None if _completing() else _command_in(sys.argv[1:])
    register(command)
    only(command)()


# Modules whose commands end like any Python program (atexit handlers, non-daemon threads joined, modules torn
# down): the measured mode, where torch, CUDA and torch.distributed (NCCL, gloo) clean up at exit.
NORMAL_EXIT_MODULES = frozenset({"bench_cmds", "validate_cmds"})
# Young-generation threshold of the garbage collector in a calculator command (Python's default is 700): a whole
# run allocates ~60,000 container objects (`napkin train-time`, counted with gc.get_objects()) and makes almost no
# cyclic garbage, so it runs no collection at all; a command that allocates more still collects, once per 100,000.
GC_YOUNG_THRESHOLD = 100_000
_CLEAN_UP_AT_EXIT = ("torch", "coverage")  # modules whose atexit handlers must run: exit_now leaves those to Python


def is_calculator(command: str | None) -> bool:
    """A command that only computes and prints (everything but bench-* and validate): console() ends it fast."""
    return command in COMMAND_MODULES and COMMAND_MODULES[command] not in NORMAL_EXIT_MODULES


def console() -> None:
    """The console script (`napkin`, `python -m napkin`): main(), then the process ends.

    A calculator command is one short process, and three things done for long ones cost it more than the
    command's own arithmetic (benchmarks/startup_time.py measures them against a minimal typer + pydantic + rich
    program):

    - the cyclic garbage collector, which runs ~85 times while the modules load (every 700 new objects) and frees
      ~800 objects in all (`napkin train-time`, counted with gc.callbacks): napkin.cli.console turns it off before
      typer is imported, and it is on again here once the command's modules are; for a calculator, with what
      they built frozen out of any later collection (gc.freeze, Python docs, module gc) and its threshold raised
      (GC_YOUNG_THRESHOLD);
    - the interpreter's teardown, which frees every module one by one: the output is flushed and the process ends
      with os._exit (exit_now);
    - pydantic's plugin discovery, which reads the entry points of every installed distribution when the first
      model is built (2.6 ms with this project's 66; more in a larger environment): napkin's models are internal
      to the command, so it sets pydantic's documented PYDANTIC_DISABLE_PLUGINS for itself, unless the user has
      set the variable (to anything, '' included: plugins then load as they would anywhere).

    bench-*, validate and anything that has loaded torch end the usual way.
    """
    import gc

    command = None if _completing() else _command_in(sys.argv[1:])
    fast = is_calculator(command)
    if fast:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    register(command)
    if fast:
        gc.freeze()
    gc.enable()
    try:
        only(command)()
    except SystemExit as e:
        if fast:
            exit_now(e.code)
        raise


def exit_now(code: Any) -> None:
    """Flush stdout and stderr and end the process at once (os._exit: no atexit handlers, no teardown), with the
    status SystemExit would have given. Returns, leaving the exit to Python, where that would lose something:
    a message as the status (sys.exit("...") prints it), a module that does its own work at exit loaded (torch;
    coverage, which writes its data then), a non-daemon thread still running, or a stream that cannot be flushed
    (the usual exit then reports it as it always has)."""
    if not (code is None or isinstance(code, int)):
        return
    threading = sys.modules.get("threading")
    if any(m in sys.modules for m in _CLEAN_UP_AT_EXIT) or (threading is not None and any(
            not t.daemon and t is not threading.main_thread() and t.is_alive() for t in threading.enumerate())):
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)
