"""What the root command hands to every subcommand: the user's spec directories, and the model lookup.

Every command that takes --model also takes a shape (--layers, --d-model, --heads, [--kv-heads, --ffn,
--ffn-kind, --vocab, --experts, --top-k]): ``add_shape_options`` puts those options on each such command when the
command tree is built, and ``model()`` turns them into a spec (alone, or changing the --model it starts from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

SHAPE_PANEL = "Model shape (in place of, or changing, --model)"
SHAPE = "shape"  # what --model reads as when only a shape is given
_META = "napkin.shape"


@dataclass
class State:
    specs_dirs: list[str] = field(default_factory=list)
    offline: bool = False


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def renamed(old: str, new: str, old_value: Any, value: Any) -> Any:
    """The value of a flag given by its new name or by its old one (a hidden alias), never both."""
    if old_value is None:
        return value
    if value is not None:
        from napkin.errors import InputError

        raise InputError(f"give {new} once ({old} is its old name), not both")
    return old_value


def hardware(ctx: typer.Context, name: str):  # -> HardwareSpec
    from napkin.specs.catalog import get_hardware

    return get_hardware(name, state(ctx).specs_dirs)


def stack(ctx: typer.Context, name: str | None):  # -> StackSpec | None
    """The --stack named (None: the accounting's default), looked up with --specs-dir's stack_specs/."""
    if name is None:
        return None
    from napkin.specs.catalog import get_stack

    return get_stack(name, state(ctx).specs_dirs)


def one_or_all(ctx: typer.Context, gpu: str, command: str, ask: Any) -> Any:
    """``ask(hardware)`` of the --gpu named, or with --gpu all of every catalog GPU (an AcrossGpusResult, one row
    each; a GPU that cannot answer gets its reason)."""
    if gpu.strip().lower() != "all":
        return ask(hardware(ctx, gpu))
    from napkin.accounting.across_gpus import across_gpus
    from napkin.specs.catalog import hardware_catalog

    return across_gpus(command, list(hardware_catalog(state(ctx).specs_dirs)), ask)


def shape_given(ctx: Any) -> dict[str, Any]:
    """The shape options given on the command line (field name → value)."""
    meta = getattr(ctx, "meta", None)
    return dict(meta.get(_META, {})) if isinstance(meta, dict) else {}


def model(ctx: typer.Context, name: str | None):  # -> TransformerSpec | LinearSpec
    """A catalog model, a config.json, a model YAML or a Hub id (org/name[@revision]), with the user's spec
    directories; a shape on the command line builds one (or changes the named one)."""
    shape = shape_given(ctx)
    if name == SHAPE and shape:
        name = None
    if name is None and not shape:
        from napkin.errors import InputError

        raise InputError("give --model (a catalog name, a config.json, a YAML or a Hub id), or a shape: --layers, "
                         "--d-model and --heads")
    base = None
    if name is not None:
        from napkin.specs.hub import parse_hub_id

        if parse_hub_id(name) is not None and not _in_catalog(ctx, name):
            from napkin.specs.catalog import model_catalog
            from napkin.specs.hub import spec_from_hub

            base = spec_from_hub(name, offline=bool(getattr(ctx, "meta", {}).get(_OFFLINE)),
                                 catalog_names=lambda: model_catalog(state(ctx).specs_dirs).names(),
                                 contacting=_contacting(name))
        else:
            from napkin.specs.catalog import get_model

            base = get_model(name, state(ctx).specs_dirs)
        _say_seq_default(ctx, base)
    if not shape:
        return base
    from napkin.specs.model import transformer_from_shape

    command = getattr(getattr(ctx, "command", None), "name", None)
    if command == "roofline" and base is not None and {"layers", "vocab"} & set(shape):
        from napkin.errors import InputError

        raise InputError("--layers and --vocab do not change a roofline (it places one layer's operations); leave "
                         "them out")
    return transformer_from_shape(base, **shape)


def _contacting(name: str) -> Any:
    """What to say on a terminal just before the Hub is contacted (a fetch can take seconds; silence looks hung)."""

    def say(endpoint: str) -> None:
        import sys

        from napkin.specs.hub import shown
        from napkin.specs.hub_fetch import timeout_s

        if sys.stderr.isatty():
            typer.echo(f"napkin: contacting the Hub ({shown(endpoint)}) for {shown(name)}'s config.json… (at most "
                       f"{timeout_s():g} s; --offline reads the cache only)", err=True)

    return say


def hub_offline(ctx: typer.Context, name: str, offline: bool) -> None:
    """A command's own --offline (models show): a Hub id is read from the cache only; any other name refuses it."""
    if offline:
        if _not_hub(name):
            raise typer.BadParameter("--offline reads a Hub id's config.json from the cache; it needs a Hub id "
                                     "org/name[@revision]", param_hint="'--offline'")
        ctx.meta[_OFFLINE] = True


def _not_hub(model: Any) -> bool:
    from napkin.specs.hub import parse_hub_id

    return not (isinstance(model, str) and model != SHAPE and parse_hub_id(model) is not None)


def _store_offline(ctx: Any, param: Any, value: Any) -> Any:
    if value:
        ctx.meta[_OFFLINE] = True
        if "model" in ctx.params and _not_hub(ctx.params["model"]):  # --model came first and is no Hub id
            raise typer.BadParameter("--offline reads a Hub id's config.json from the cache; it needs --model "
                                     "org/name")
    return value


def _in_catalog(ctx: Any, name: str) -> bool:
    """A user spec may be named like a Hub id (org/name): the catalog's wins."""
    from napkin.specs.catalog import model_catalog, normalize

    try:
        cat = model_catalog(state(ctx).specs_dirs)
        return normalize(name) in getattr(cat, "_aliases", {})
    except Exception:  # noqa: BLE001 - the lookup that follows reports a broken catalog
        return False


def _say_seq_default(ctx: Any, spec: Any) -> None:
    """A config.json that does not say its pre-training length: --seq would default to its (often extended) max
    context. Said on stderr before anything else is printed, when the command has a --seq left out."""
    params = getattr(ctx, "params", {}) or {}
    if "seq" not in params or params.get("seq") is not None:
        return
    if getattr(getattr(ctx, "command", None), "name", None) == "validate":  # its --seq defaults to 128, not this
        return
    if getattr(spec, "kind", None) != "transformer" or spec.train_seq is not None or "config.json" not in \
            str(getattr(spec, "display_name", "")):
        return
    typer.echo(f"napkin: note: {spec.name}'s config.json does not say its pre-training context "
               f"(no original_max_position_embeddings or rope_scaling original length): --seq defaults to "
               f"max_position_embeddings ({spec.max_context}); pass --seq for the length trained at.", err=True)


_OFFLINE = "napkin.offline"


def _store(field_name: str):
    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if value is not None:
            ctx.meta.setdefault(_META, {})[field_name] = value
        return value

    return callback


def _shape_options() -> list[Any]:
    """The shape options as typer builds them (parsing, help, panel), taken from a command that declares them."""
    from typing import Annotated

    from napkin.cli.options import SHAPE_OPTION_HELP, opt, whole

    def ffn_kind(text: str) -> str:
        if not isinstance(text, str) or text in ("swiglu", "geglu", "mlp"):
            return text
        raise typer.BadParameter(f"'{text}' is not an FFN kind; use swiglu, geglu or mlp")

    app = typer.Typer(add_completion=False)
    params = []
    for name, (flag, what, help_text) in SHAPE_OPTION_HELP.items():
        parser = ffn_kind if name == "ffn_kind" else whole(what)
        metavar = "swiglu|geglu|mlp" if name == "ffn_kind" else "N"
        kind = str if name == "ffn_kind" else int
        params.append((name, Annotated[kind | None, opt(flag, parser=parser, metavar=metavar, panel=SHAPE_PANEL,
                                                         help=help_text)]))

    params.append(("offline", Annotated[bool, opt("--offline", panel=SHAPE_PANEL,
                                                    help="Hub ids (--model org/name[@revision]): read config.json "
                                                         "from the Hub cache only, never the network (also "
                                                         "HF_HUB_OFFLINE=1).")]))

    def shape_command(**kw: Any) -> None:  # pragma: no cover - never run, only read for its options
        pass

    import inspect

    shape_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=False if n == "offline" else None)
         for n, a in params])
    app.command()(shape_command)
    cmd = typer.main.get_command(app)
    out = []
    for p in cmd.params:
        p.expose_value = False
        p.callback = _store_offline if p.name == "offline" else _store(p.name)
        out.append(p)
    return out


def _model_callback(previous: Any):
    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if previous is not None:
            value = previous(ctx, param, value)
        if value is None and shape_given(ctx):
            value = SHAPE
        if ctx.meta.get(_OFFLINE) and _not_hub(value):
            raise typer.BadParameter("--offline reads a Hub id's config.json from the cache; it needs --model "
                                     "org/name")
        return value

    return callback


def add_shape_options(command: Any) -> None:
    """Give every command that takes --model the shape options (once), and let --model be left out with them.

    --model stays required in effect: ``model()`` refuses a command given neither a model nor a shape.
    Options given on the command line are processed before those left out, so the shape is known when --model's
    callback runs without a value."""
    for sub in getattr(command, "commands", {}).values():
        add_shape_options(sub)
    params = getattr(command, "params", None)
    if not params or any(getattr(p, "name", None) == "layers" for p in params):
        return
    model_opt = next((p for p in params if "--model" in getattr(p, "opts", [])), None)
    if model_opt is None:
        return
    model_opt.required = False
    model_opt.callback = _model_callback(model_opt.callback)
    params.extend(_shape_options())
