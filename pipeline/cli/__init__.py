"""The `pipeline` command: a thin typer layer; every command calls a plain library function.

Commands live by stage: `stage_one.py` (embed, inspect, sql, verify), `stage_two.py` (train,
report, eval-sts), `tasks.py` (finetune, evaluate, teacher-finetune), `predict.py` (predict),
`bench.py` (bench ...), `export.py` (export).
Each registers itself on `app` through `command()`, which turns an `SraError` (or an OS error
such as a full disk) into one `error:` line and exit status 1; `--debug` or
`PIPELINE_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from cache.errors import SraError

DEBUG_ENV = "PIPELINE_DEBUG"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distil a BERT teacher into a BiLSTM sentence encoder via a sentence-vector cache.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON or tables.")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", envvar=DEBUG_ENV, help="Show the full traceback of an error."
    ),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error_line(e: BaseException) -> str:
    """One line saying what went wrong: the message of an SraError, the file of an OS error."""
    if isinstance(e, OSError) and not isinstance(e, SraError):
        text = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
    else:
        text = str(e)
    return "error: " + " ".join(text.split())


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends as one `error:` line and exit status 1 (the traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SraError, OSError) as e:
            if debugging():
                raise
            print(error_line(e), file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def command(
    name: str | None = None, *, epilog: str, on: typer.Typer = app
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command with an example line and one-line errors."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        on.command(name, epilog=epilog)(one_line_errors(fn))
        return fn

    return register


def write_json(path: Path | None, result: dict[str, object]) -> None:
    """`--json PATH`: the result as JSON beside what was printed."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


# The command modules register themselves on `app` when imported.
from pipeline.cli import bench, export, predict, stage_one, stage_two, tasks  # noqa: E402, F401

# Help read from a pipe or a file (`pipeline embed --help | less`, CI logs) is laid out this
# wide: rich's default of 80 columns off a terminal cut option names to `--trust-remote-co…`.
PIPED_HELP_WIDTH = 160


def wide_help_when_piped() -> None:
    """Off a terminal, lay help out PIPED_HELP_WIDTH wide (unless TERMINAL_WIDTH says otherwise)."""
    if sys.stdout.isatty() or os.environ.get("TERMINAL_WIDTH"):
        return
    import typer.rich_utils

    typer.rich_utils.MAX_WIDTH = PIPED_HELP_WIDTH


def main() -> None:
    """Entry point of the `pipeline` script and `python -m pipeline`."""
    wide_help_when_piped()
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
