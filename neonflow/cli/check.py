"""``neonflow check``: the pre-merge migration check (see neonflow.workflow.check)."""

from __future__ import annotations

import enum
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from neonflow.cli import output
from neonflow.cli.common import JsonOpt, handle_errors, settings
from neonflow.errors import UsageError


class Format(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


@handle_errors
def check(
    base: Annotated[
        str | None,
        typer.Option("--base", help="The branch whose data to rehearse on (default: the parent)."),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the throw-away branch to look at it.")
    ] = False,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="The report on stdout (or in --output): text (only the summary on stderr), "
            "markdown or json.",
        ),
    ] = Format.text,
    output_file: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the report to this file instead of stdout."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Rehearse, lint, drift-check and diff the migrations on a throw-away branch.

    Upgrades a fresh copy of the base one revision at a time (time, locks,
    rewrites, rows), runs alembic check, downgrades and upgrades again, lints
    the SQL with squawk and diffs the schema; the branch is then deleted,
    whatever happened. The summary goes to stderr; Markdown is appended to
    $GITHUB_STEP_SUMMARY when it is set.

    Exit codes: 0 passed, 2 refused (several heads, or the base is not in the
    history), 10 a migration failed, 11 drift, 12 not reversible, 13 lint.

    Example: neonflow check --base main --format markdown --output check.md
    """
    from neonflow.backend import open_client
    from neonflow.cli import report as render
    from neonflow.workflow.check import Check

    if json:
        fmt = Format.json
    cfg = settings()
    with open_client(cfg, output.progress) as client, _sigterm_as_interrupt():
        result = Check(cfg, client, progress=output.progress).run(base, keep=keep)
    # Under --quiet a failed check still says why: the summary is its error message.
    (output.info if result.passed else output.failure)(render.text(result))
    if output_file is not None:
        _write(output_file, render.render(result, fmt.value), append=False)
        output.info(f"report written to {output_file}")
    elif fmt is not Format.text:
        output.line(render.render(result, fmt.value).rstrip("\n"))
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        _write(Path(step_summary), render.markdown(result) + "\n", append=True)
    if not result.passed:
        # The summary above says why; the exit code says which stage (see --help).
        raise typer.Exit(result.exit_code)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, ``docker stop``) tears the branch down as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write(path: Path, content: str, append: bool) -> None:
    try:
        with path.open("a" if append else "w", encoding="utf-8") as fh:
            fh.write(content if content.endswith("\n") else content + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
