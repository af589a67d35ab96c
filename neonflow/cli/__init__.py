"""The command line. A command that runs migrations starts its Alembic process first thing,
before Typer and the rest load, so that Alembic loads on the other core meanwhile."""

from __future__ import annotations

import os
import sys

_MIGRATING = {("branch", "start"), ("branch", "reset"), ("branch", "promote"), ("check",)}


def _migrates(args: list[str]) -> bool:
    """Whether the command line asks for a command that runs the migrations."""
    if "--help" in args or "-h" in args:
        return False
    words = tuple(a for a in args if not a.startswith("-"))
    return words[:1] in _MIGRATING or words[:2] in _MIGRATING


def _start_early() -> None:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program == "-m":  # `python -m neonflow.cli.main …`, while this package imports
        module = sys.orig_argv[sys.orig_argv.index("-m") + 1] if "-m" in sys.orig_argv else ""
        program = "main.py" if module == "neonflow.cli.main" else program
    if program not in ("neonflow", "main.py", "__main__.py") or not _migrates(sys.argv[1:]):
        return
    if "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:]:
        os.environ["NEONFLOW_VERBOSE"] = "1"  # before the process starts, for its log
    from neonflow.migrations.runner import start_early

    start_early()


_start_early()
