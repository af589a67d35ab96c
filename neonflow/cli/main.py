"""The ``neonflow`` command: a Typer app of sub-apps. Heavy modules load inside commands."""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Annotated

import typer

from neonflow import __version__
from neonflow.cli import output
from neonflow.errors import EXIT_CODES


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neonflow {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="neonflow",
    help="Branch-per-feature databases on Neon: branch, migrate, check, promote.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # "\[" keeps "[neon] timeout" from being read as Rich markup (and dropped).
    epilog="Exit codes: "
    + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items() if code).replace("[", "\\["),
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Show Alembic's and env.py's own output too."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            envvar="NEONFLOW_QUIET",
            help="Print only data and errors: no progress, no messages.",
        ),
    ] = False,
) -> None:
    """neonflow: a Neon branch per feature, with its migrations applied and checked."""
    output.configure(quiet=quiet, verbose=verbose)
    if verbose:
        # Read by the Alembic process runner (neonflow.migrations.runner).
        os.environ["NEONFLOW_VERBOSE"] = "1"


def _register() -> None:
    from neonflow.cli import branch, check, init, local

    app.add_typer(branch.app, name="branch")
    app.add_typer(local.app, name="local")
    app.command("connection-string")(branch.connection_string)
    app.command("check")(check.check)
    app.command("init")(init.init)


_register()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The console script: run the app, then leave without tearing down the interpreter."""
    # A command lives a second or two and imports half of SQLAlchemy, Alembic and Flask; the
    # cycle collector would spend ~15% of that walking objects that live until exit anyway.
    gc.disable()
    # A cancelled CI job gets SIGTERM: clean up (delete a throw-away branch) as on Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    if output.no_color():
        app.rich_markup_mode = None  # Typer's plain help: Rich keeps bold and dim under NO_COLOR
    status: int | str | None = 0
    try:
        app(prog_name="neonflow")
    except SystemExit as exc:
        status = exc.code
    output.settle()
    if isinstance(status, str):
        sys.stderr.write(status + "\n")
    code = status if isinstance(status, int) else (0 if status is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    # Every command has closed what it opened; unloading Alembic, SQLAlchemy and Flask at exit
    # would only add ~0.2 s to each command.
    os._exit(code)


if __name__ == "__main__":
    main()
