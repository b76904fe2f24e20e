"""Config fields that carry their own help: one definition per setting, for both stages.

Every setting of every command is a dataclass field declared with ``option()``: its default
and a one-line reason live together, and the command line is derived from the fields
(``pipeline/cli/options.py``), so a default is written once and help never drifts from it::

    from dataclasses import dataclass

    from cache.options import option

    @dataclass(frozen=True)
    class DataConfig:
        batch_size: int = option(256, "most sentences per batch")
        token_budget: int = option(8192, "most padded tokens per batch")

A field that must not be a command-line option (set by code, not by users) says why with
``internal()``; a nested config is a field declared with ``nested()``, whose own fields become
options of the same command. This module imports only the standard library, so every package
can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, Field
from typing import Any


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    hidden: bool = False,
    argument: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A field that is also a command-line option.

    ``flag``: the option's name when it is not the field's (``num_layers`` -> ``layers``);
    ``aliases``: older names that keep working; ``hidden``: left out of ``--help`` (options
    for tests and benchmarks); ``argument``: a positional argument (``pipeline report RUN``)
    instead of an option. ``factory`` replaces ``default`` for mutable defaults.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": tuple(aliases),
        "hidden": hidden,
        "argument": argument,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def internal(default: Any, why: str) -> Any:
    """A field code sets and users do not: never a command-line option. ``why`` says so."""
    return dataclasses.field(default=default, metadata={"internal": why})


def nested(cls: type, help: str = "") -> Any:
    """A config inside a config; its fields are options of the same command, unprefixed."""
    return dataclasses.field(default_factory=cls, metadata={"nested": True, "help": help})


def is_internal(f: Field[Any]) -> bool:
    return "internal" in f.metadata


def is_nested(f: Field[Any]) -> bool:
    return bool(f.metadata.get("nested"))


def flag_of(f: Field[Any]) -> str:
    """The option name of a field, without dashes: ``token_budget`` -> ``token-budget``."""
    return f.metadata.get("flag") or f.name.replace("_", "-")


def default_of(f: Field[Any]) -> Any:
    """The field's default (a fresh one for factories); MISSING when the field is required."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def configure(cls: type, **options: Any) -> Any:
    """A config of ``cls`` from option names, wherever their fields sit among nested configs.

    The names are the command line's, with underscores (``layers``, ``student_pooling``,
    ``lm_weight``), so Python reads like the command it mirrors::

        configure(TrainConfig, cache="caches/wiki", out="runs/x", layers=2, lm_weight=0.5)

    A nested config may also be passed whole by its field name. Unknown names raise
    TypeError; fields not named keep their defaults.
    """
    left = dict(options)
    config = _configure(cls, left)
    if left:
        raise TypeError(f"{cls.__name__} has no option {', '.join(sorted(left))}")
    return config


def _configure(cls: type, left: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if is_nested(f):
            if f.name in left and dataclasses.is_dataclass(left[f.name]):
                kwargs[f.name] = left.pop(f.name)
            else:
                kwargs[f.name] = _configure(f.default_factory, left)  # type: ignore[arg-type]
        elif not is_internal(f):
            name = flag_of(f).replace("-", "_")
            if name in left:
                kwargs[f.name] = left.pop(name)
    return cls(**kwargs)


def option_values(config: Any) -> dict[str, Any]:
    """Every option of a config as ``{name: value}`` (``configure``'s names), JSON-ready:
    what a run was asked for, kept beside what decides its result."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if is_nested(f):
            values |= option_values(value)
        elif not is_internal(f):
            if isinstance(value, tuple):
                value = list(value)
            elif value is not None and not isinstance(value, bool | int | float | str):
                value = str(value)  # paths
            values[flag_of(f).replace("-", "_")] = value
    return values
