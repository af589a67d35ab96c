"""The one place that prints: data on stdout, people-facing text on stderr.

Progress (:func:`progress`) is a spinner on a terminal and a plain line elsewhere; ``--quiet``
silences it and the other lines for people, never errors. Whatever prints first ends the
spinner, so its frames never mix with other output.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from neonflow.cli.progress import Spinner


@dataclass
class _Options:
    quiet: bool = False
    plain: bool = False  # --verbose: Alembic's own output shares stderr and would break the spinner
    spinner: Spinner | None = None


_options = _Options()


def configure(*, quiet: bool, verbose: bool) -> None:
    """The global options, for the command about to run."""
    settle()
    _options.quiet, _options.plain = quiet, verbose


def no_color() -> bool:
    """``NO_COLOR`` set and not empty (https://no-color.org): no colour, no styling."""
    return bool(os.environ.get("NO_COLOR"))


def _live() -> bool:
    """Whether stderr can show a spinner: a terminal that understands moving the cursor."""
    return not _options.plain and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def progress(message: str) -> None:
    """A stage of work that may take a while (stderr)."""
    if _options.quiet:
        return
    if not _live():
        typer.echo(message, err=True)
        return
    if _options.spinner is None:
        from neonflow.cli.progress import Spinner

        _options.spinner = Spinner(sys.stderr, color=not no_color()).start()
    _options.spinner.stage(message)


def settle() -> None:
    """End the spinner (the stage's line stays): before anything else is printed."""
    spinner, _options.spinner = _options.spinner, None
    if spinner is not None:
        spinner.close()


def info(message: str) -> None:
    """Results and notes for people (stderr)."""
    settle()
    if not _options.quiet:
        typer.echo(message, err=True)


def failure(message: str) -> None:
    """Why a command failed, at more length than its error line: shown under --quiet too."""
    settle()
    typer.echo(message, err=True)


def error(message: str) -> None:
    settle()
    prefix = "error:" if no_color() else typer.style("error:", fg="red", bold=True)
    typer.echo(f"{prefix} {message}", err=True)  # styles are dropped when stderr is no terminal


def data(value: Any) -> None:
    """One JSON document on stdout."""
    settle()
    typer.echo(json.dumps(value, indent=2, default=str))


def line(text: str) -> None:
    """A bare line of data on stdout (a URI, a diff)."""
    settle()
    typer.echo(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain aligned table on stdout."""
    settle()
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def confirm(question: str, yes: bool) -> bool:
    """True with ``--yes``; asks on a terminal; refuses (False) when nobody can answer."""
    if yes:
        return True
    if not sys.stdin.isatty():
        return False
    settle()
    return typer.confirm(question, default=False, err=True)
