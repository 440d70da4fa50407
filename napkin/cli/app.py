"""The root command: global options, the error boundary, and the registry of subcommands."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from napkin._version import __version__
from napkin.cli import context
from napkin.cli.options import SpecsDir
from napkin.errors import NapkinError

EPILOG = (
    "Examples:\n\n"
    "  napkin train-time --params 70e9 --tokens 15e12 --gpus 1024\n\n"
    "  napkin max-model --gpus 8 --optimizer adamw\n\n"
    "  napkin budget --gpus 8 --days 7\n\n"
    "  napkin hardware show h100 --explain\n\n"
    "Every command takes --json (for scripts) and --explain (the worked derivation)."
)


def _fail(message: str, code: int = 2) -> None:
    """One line per problem on stderr, prefixed so it reads as napkin's, never a traceback."""
    for line in str(message).splitlines() or [""]:
        typer.echo(f"napkin: error: {line}", err=True)
    sys.exit(code)


class NapkinGroup(TyperGroup):
    """Turns every error into one line and exit code 2 (usage errors, bad values, bad specs)."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
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
            sys.exit(1)
        if not standalone_mode:
            return rv
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


def _register() -> None:
    # Each module adds its commands to `app`; importing them must stay cheap (no torch, no specs).
    # The order here is the order of `napkin --help`: planning, architecture, memory, serving, measuring, catalogs.
    from napkin.cli import calc  # noqa: F401
    from napkin.cli import model_cmds  # noqa: F401
    from napkin.cli import memory_cmds  # noqa: F401
    from napkin.cli import serve_cmds  # noqa: F401
    from napkin.cli import bench_cmds  # noqa: F401
    from napkin.cli import validate_cmds  # noqa: F401
    from napkin.cli import catalog_cmds  # noqa: F401


_register()


def main() -> None:
    app()
