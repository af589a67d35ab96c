"""The one place that prints: data on stdout, people-facing text on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer


def info(message: str) -> None:
    """Progress and results for people (stderr)."""
    typer.echo(message, err=True)


def error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def data(value: Any) -> None:
    """One JSON document on stdout."""
    typer.echo(json.dumps(value, indent=2, default=str))


def line(text: str) -> None:
    """A bare line of data on stdout (a URI, a diff)."""
    typer.echo(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain aligned table on stdout."""
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
    return typer.confirm(question, default=False, err=True)
