"""Typer commands derived from config dataclasses: a command's options are its config's fields.

Each setting is defined once, as a field declared with ``cache.options.option`` (default and
help together). ``config_command`` turns a config class into the parameter list typer reads,
then builds the config from what the user typed and hands it to a plain library function.
So ``pipeline train --help`` shows exactly ``TrainConfig``'s fields with its defaults, and a
new field is a new option without touching the CLI.

Types map as typer expects; a ``tuple[str, ...]`` field is a comma list on the command line
(``--pooling mean,cls``), a ``bool`` field a ``--name/--no-name`` switch.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field
from typing import Any

import typer

from cache.options import configure, default_of, flag_of, is_internal, is_nested


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One command-line option: the field it sets and how its text becomes a value."""

    path: tuple[str, ...]  # attribute path from the top config
    field: Field[Any]
    hint: Any  # the resolved type annotation
    param: str  # the python name typer passes it as

    @property
    def is_list(self) -> bool:
        return _strip_optional(self.hint) in (tuple[str, ...], tuple[int, ...])

    def to_value(self, raw: Any) -> Any:
        if self.is_list and isinstance(raw, str):
            items = tuple(x.strip() for x in raw.split(",") if x.strip())
            if _strip_optional(self.hint) == tuple[int, ...]:
                return tuple(int(x) for x in items)
            return items
        return raw


def leaves(cls: type, path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every option of a (nested) config class, internal fields left out."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if is_nested(f):
            yield from leaves(f.default_factory, (*path, f.name))  # type: ignore[arg-type]
        elif not is_internal(f):
            yield Leaf((*path, f.name), f, hints[f.name], flag_of(f).replace("-", "_"))


def _strip_optional(hint: Any) -> Any:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _typer_param(leaf: Leaf) -> inspect.Parameter:
    f = leaf.field
    default = default_of(f)
    flag = flag_of(f)
    names = [f"--{flag}", *(f"--{a}" for a in f.metadata.get("aliases", ()))]
    hint = leaf.hint
    if leaf.is_list:
        # A comma list on the command line; its default shown as the user would type it.
        hint = str | None if default is None else str
        default = None if default is None else ",".join(map(str, default))
    if _strip_optional(hint) is bool:
        names = [f"--{flag}/--no-{flag}", *(f"--{a}/--no-{a}" for a in f.metadata["aliases"])]
    if f.metadata.get("argument"):  # positional: `pipeline report RUN`
        info = typer.Argument(
            ... if default is MISSING else default, help=f.metadata.get("help", "")
        )
        return inspect.Parameter(
            leaf.param, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=hint
        )
    info = typer.Option(
        ... if default is MISSING else default,
        *names,
        help=f.metadata.get("help", ""),
        hidden=f.metadata.get("hidden", False),
        show_default=default is not None and default is not MISSING,
    )
    return inspect.Parameter(
        leaf.param, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=hint
    )


def config_command(
    cls: type,
    run: Callable[..., None],
    *,
    doc: str,
    extra: tuple[inspect.Parameter, ...] = (),
    skip: tuple[str, ...] = (),
) -> Callable[..., None]:
    """A typer command whose options are ``cls``'s fields (minus ``skip``, by option name)
    plus ``extra`` hand-written parameters; calls ``run(config, **extra_values)``."""
    opts = [leaf for leaf in leaves(cls) if flag_of(leaf.field) not in skip]
    names = [leaf.param for leaf in opts] + [p.name for p in extra]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:  # two fields would answer to one option name: a config bug, not user error
        raise TypeError(f"{cls.__name__}: options defined twice: {', '.join(sorted(duplicates))}")

    def command(**kwargs: Any) -> None:
        extras = {p.name: kwargs.pop(p.name) for p in extra}
        values = {leaf.param: leaf.to_value(kwargs[leaf.param]) for leaf in opts}
        run(configure(cls, **values), **extras)

    params = [_typer_param(leaf) for leaf in opts] + list(extra)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = doc
    command.__name__ = cls.__name__
    return command
