"""neonflow from Python: the workflow over one client, and a branch for the length of a block.

::

    import neonflow

    with neonflow.branch("ci-1234", migrate=True, write_env=False) as b:
        run_my_tests(b.url)       # the branch's URI, password included
        print(b.revision)         # the Alembic revision it stands at

The CLI calls the same functions: :func:`connect` for every ``neonflow branch …`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neonflow.config import Settings
    from neonflow.workflow.branches import Branches

__all__ = ["BranchHandle", "branch", "connect"]


def _quiet(message: str) -> None:
    return None


def connect(settings: Settings | None = None, progress: Callable[[str], None] = _quiet) -> Branches:
    """The branch use cases (start, list, status, delete, …) over a client for ``settings``.

    ``settings`` defaults to :func:`neonflow.load_settings` (``neonflow.toml`` found from the
    current folder, then the environment). With no API key this starts the local Neon.
    ``progress`` receives one-line messages for people. Close it with ``.client.close()`` or use
    it in a ``with`` block.
    """
    from neonflow.backend import open_client
    from neonflow.config import load_settings
    from neonflow.workflow.branches import Branches

    settings = settings or load_settings()
    return Branches(settings, open_client(settings, progress), progress=progress)


@dataclass(frozen=True)
class BranchHandle:
    """A branch opened by :func:`branch`: its name, id, URI, revision and the app's variables."""

    name: str
    id: str
    url: str = field(repr=False)  # has the password
    revision: tuple[str, ...]
    created: bool
    parent: str
    env: dict[str, str] = field(repr=False)
    """The app's variables for this branch (``[app] env_var`` or ``[app.env]``), to export."""


@contextmanager
def branch(
    name: str,
    *,
    migrate: bool = True,
    write_env: bool = False,
    keep: bool = False,
    parent: str | None = None,
    schema_only: bool = False,
    settings: Settings | None = None,
    progress: Callable[[str], None] = _quiet,
) -> Iterator[BranchHandle]:
    """Create (or reuse) the branch ``name``, wait for it, migrate it to head; delete it on exit.

    ``write_env`` points the app's env file at it as ``neonflow branch start`` does; ``keep``
    leaves it in place on exit. A branch created here without ``keep`` is a throw-away one: it
    expires by itself should the process die before the block ends. ``schema_only`` copies the
    parent's schema without its data. Errors are :class:`neonflow.NeonflowError`\\ s.
    """
    workflow = connect(settings, progress)
    with workflow.client:
        full, _ = workflow.full_name(name)
        existed = workflow.client.find_branch(full) is not None
        try:
            started = workflow.start(
                name,
                parent,
                migrate=migrate,
                write_env=write_env,
                purpose=None if keep else "api",  # a kept branch is an ordinary one
                expiry="default" if keep else "throwaway",
                schema_only=schema_only,
            )
        except BaseException:
            if not keep and not existed:  # ours, and unusable (a failed migration, Ctrl-C)
                workflow.delete_quietly(full)
            raise
        try:
            yield BranchHandle(
                name=started.branch,
                id=started.branch_id,
                url=started.database_url,
                revision=tuple(started.revision),
                created=started.created,
                parent=started.parent,
                env=app_env(workflow, started.database_url),
            )
        finally:
            if not keep:
                workflow.delete(started.branch_id)


def app_env(workflow: Branches, url: str) -> dict[str, str]:
    """The app's variables for ``url``, with the driver its env.py names in its URL."""
    from neonflow.errors import ConfigError

    try:
        driver = workflow.project.url_driver()
    except ConfigError:
        driver = None
    return workflow.settings.app.variables.values(url, driver)
