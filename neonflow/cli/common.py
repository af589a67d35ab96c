"""What every command shares: error handling, the settings, the workflow, common options."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from neonflow.cli import output
from neonflow.errors import NeonflowError, UsageError

if TYPE_CHECKING:
    from neonflow.config import Settings
    from neonflow.workflow.branches import Branches

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ShowPasswordOpt = Annotated[
    bool, typer.Option("--show-password", help="Show passwords instead of masking them.")
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130
"""128 + SIGINT: what a shell reports for a tool stopped by Ctrl-C."""
EXIT_STDOUT_CLOSED = 141
"""128 + SIGPIPE: what a shell reports for a tool that stopped because its reader went away."""
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def handle_errors(fn: F) -> F:
    """Turn neonflow's errors into one line on stderr and their documented exit code.

    With ``--json`` (or ``--format json``) the error is also one JSON document on stdout, so a
    script parses every outcome. A closed stdout (``neonflow … | head``) ends the command quietly.
    A spinner still running at the end is cleared, whatever happened.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("json") is True or str(kwargs.get("fmt", "")) == "json"
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            _stdout_closed()
        except NeonflowError as exc:
            _fail(error_kind(exc), str(exc), exc.exit_code, as_json)
        except KeyboardInterrupt:
            _fail("interrupted", "interrupted", EXIT_INTERRUPTED, as_json)
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("NEONFLOW_DEBUG"):
                raise
            message = (
                f"unexpected {type(exc).__name__}: {exc} (a bug: set NEONFLOW_DEBUG=1 for the "
                "traceback and please report it)"
            )
            _fail("unexpected", message, 1, as_json)
        finally:
            output.settle()

    return wrapper  # type: ignore[return-value]


def error_kind(exc: NeonflowError) -> str:
    """The error's class as a stable snake_case word: ``NotFoundError`` -> ``not_found``
    (a class that says it reports as its parent, :class:`~neonflow.errors.Unreachable`, gives
    its ``kind``)."""
    kind = getattr(type(exc), "kind", None)
    if isinstance(kind, str):
        return kind
    # A subclass of the client's own ("outcome unknown") reports as the public class it is.
    cls = next(c for c in type(exc).__mro__ if c.__module__ == "neonflow.errors")
    name = cls.__name__.removesuffix("Error")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _fail(kind: str, message: str, code: int, as_json: bool) -> NoReturn:
    from neonflow.urls import mask_password

    # Messages never carry the API key (the client redacts it); passwords in URLs are masked here.
    message = _URL.sub(lambda m: mask_password(m[0]), message)
    output.error(message)
    if as_json:
        try:
            output.data({"error": {"kind": kind, "message": message, "exit_code": code}})
        except BrokenPipeError:
            _stdout_closed()
    raise typer.Exit(code) from None


def _stdout_closed() -> NoReturn:
    """The reader of stdout went away (``| head``): stop quietly, as a killed-by-SIGPIPE tool."""
    # Later writes (and the flush at exit) would raise again: send them nowhere.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test runner's stream)
        pass
    raise typer.Exit(EXIT_STDOUT_CLOSED) from None


def confirmed(question: str, yes: bool, verb: str) -> None:
    """Go on with ``--yes`` or a "y" in a terminal; otherwise stop with a usage error."""
    if not output.confirm(question, yes):
        raise UsageError(f"not confirmed: pass --yes to {verb} without a question")


def settings() -> Settings:
    from neonflow.config import load_settings

    return load_settings()


def branches(cfg: Settings | None = None) -> Branches:
    """The use cases, as ``neonflow.connect`` gives them to Python code."""
    from neonflow.api import connect

    return connect(cfg or settings(), output.progress)


def show_url(url: str | None, show_password: bool) -> str:
    from neonflow.urls import mask_password

    if url is None:
        return "-"
    return url if show_password else mask_password(url)
