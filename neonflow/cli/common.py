"""What every command shares: error handling, the settings, the workflow, common options."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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


def handle_errors(fn: F) -> F:
    """Turn neonflow's errors into one line on stderr and their documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NeonflowError as exc:
            output.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("NEONFLOW_DEBUG"):
                raise
            output.error(
                f"unexpected {type(exc).__name__}: {exc} (a bug: set NEONFLOW_DEBUG=1 for the "
                "traceback and please report it)"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def confirmed(question: str, yes: bool, verb: str) -> None:
    """Go on with ``--yes`` or a "y" in a terminal; otherwise stop with a usage error."""
    if not output.confirm(question, yes):
        raise UsageError(f"not confirmed: pass --yes to {verb} without a question")


def settings() -> Settings:
    from neonflow.config import load_settings

    return load_settings()


def branches(cfg: Settings | None = None) -> Branches:
    from neonflow.backend import open_client
    from neonflow.workflow.branches import Branches

    cfg = cfg or settings()
    return Branches(cfg, open_client(cfg, output.info), progress=output.info)


def show_url(url: str | None, show_password: bool) -> str:
    from neonflow.urls import mask_password

    if url is None:
        return "-"
    return url if show_password else mask_password(url)
