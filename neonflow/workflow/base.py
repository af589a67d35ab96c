"""What the branch use cases share (:class:`BranchesBase`): the settings and the Neon client,
the Alembic project, names and lookups, where the app points, waiting for a branch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from neonflow import envfile, polling
from neonflow.config import Settings
from neonflow.errors import (
    ConfigError,
    MigrationError,
    NeonAPIError,
    NeonflowError,
    NetworkError,
    NotFoundError,
    RefusedError,
    UsageError,
)
from neonflow.workflow import names

if TYPE_CHECKING:
    from neonflow.migrations import Project
    from neonflow.migrations.history import History
    from neonflow.migrations.runner import Runner
    from neonflow.neon import Branch, NeonClient


Progress = Callable[[str], None]
Expiry = Literal["default", "throwaway", "none"]
# What became of a branch :meth:`BranchesBase._discard` deleted: the delete was not accepted (it
# may still be there), accepted but not seen to finish (it is going), or finished.
Discarded = Literal["kept", "deleting", "gone"]
# Annotations neonflow puts on the branches it creates (Neon keeps them as strings).
A_CREATED_BY = "neonflow"
A_GIT_BRANCH = "neonflow-git-branch"
A_GIT_COMMIT = "neonflow-git-commit"
A_USER = "neonflow-user"
A_PURPOSE = "neonflow-purpose"
READY_TIMEOUT = 300.0


def _quiet(message: str) -> None:
    return None


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class BranchesBase:
    """What every use case shares: the settings, the Neon client, the project and its Alembic
    processes, and finding branches by name."""

    def __init__(self, settings: Settings, client: NeonClient, progress: Progress = _quiet) -> None:
        self.settings = settings
        self.client = client
        self.progress = progress
        self._project: Project | None = None

    @property
    def project(self) -> Project:
        """The Alembic project (its ini must exist: a ConfigError otherwise)."""
        if self._project is None:
            from neonflow.migrations import Project

            self._project = Project.from_settings(self.settings)
        return self._project

    def runner(self) -> Runner:
        """An Alembic process for one target, warming up at once (see migrations.runner)."""
        from neonflow.migrations.runner import Runner

        return Runner(self.project)

    def preflight(self) -> None:
        """Refuse, before any branch exists, what the migrations cannot do: a revision file
        that does not compile, several heads."""
        heads = self.project.preflight()
        if heads is not None and len(heads) > 1:
            from neonflow.migrations import multiple_heads

            raise multiple_heads(heads)

    def history(self) -> History:
        """The revision history, read by an Alembic process of its own (offline)."""
        with self.runner() as offline:
            offline.offline()
            return offline.history()

    def migrate(
        self, runner: Runner, url: str, intended: str, **session_settings: str
    ) -> tuple[str, ...]:
        """Upgrade the database at ``url`` to head; verified on neonflow's own connection."""
        runner.target(url, intended, **session_settings)
        return runner.upgrade("heads").after

    # -- lookups ---------------------------------------------------------------------------

    def full_name(self, name: str | None) -> tuple[str, str | None]:
        """The Neon name for ``name`` (None: the git branch): ``[branch] prefix`` + the name as
        typed. The second item is always None (names are no longer rewritten)."""
        given = names.git_branch(self.settings.root) if name is None else name
        if given is None:
            raise UsageError("give a branch name (the current folder is not on a git branch)")
        names.check_name(given)
        full = names.check_name(self.settings.branch.prefix + given)
        if full.startswith(("br-", "ep-")):
            raise UsageError(
                f"{full!r} would read as a Neon id: choose a name not starting with br- or ep-"
            )
        return full, None

    def _lookup(self, name: str) -> str:
        """A name as given on the command line, as neonflow would have created it."""
        if name.startswith("br-"):
            return name
        try:
            return self.full_name(name)[0]
        except UsageError:
            return name

    def find(
        self, name: str, branches: list[Branch] | None = None, literal: bool = False
    ) -> Branch | None:
        """By id, else by the name neonflow would give it (with the prefix), else as given.

        ``literal`` names (the configured parent, ``--base``) match by id or exact name only:
        ``main`` must never resolve to a feature branch called ``preview/main``.
        """
        rows = branches if branches is not None else self.client.list_branches()
        candidates = [(name, "id"), (name, "name")]
        if not literal:
            candidates.insert(1, (self._lookup(name), "name"))
        for wanted, attribute in candidates:
            for branch in rows:
                if getattr(branch, attribute) == wanted:
                    return branch
        return None

    def require(
        self, name: str, branches: list[Branch] | None = None, literal: bool = False
    ) -> Branch:
        """Like :meth:`find`, but a NotFoundError when there is no such branch."""
        branch = self.find(name, branches, literal)
        if branch is None:
            raise NotFoundError(
                f"branch {name!r} not found; see `neonflow branch list` for the branches there are"
            )
        return branch

    @contextmanager
    def unchanged(self, *watched: Branch) -> Iterator[None]:
        """Work on the ``watched`` branches; if that fails because one was deleted or reset
        meanwhile (another command won a race), say so with the not-found code, rather than
        pass on the database's "does not exist" or "terminating connection"."""
        try:
            yield
        except (NetworkError, MigrationError, NeonAPIError) as exc:
            for branch in watched:
                change = self._change(branch)
                if change:
                    raise NotFoundError(
                        f"branch {branch.name!r} was {change} meanwhile, by another command "
                        f"({first_line(exc)}); see `neonflow branch list` and run this again"
                    ) from None
            raise

    def _change(self, branch: Branch) -> str | None:
        """How ``branch`` changed since it was read ("deleted", "reset"), or None."""
        try:
            now = self.client.get_branch(branch.id)
        except NotFoundError:
            return "deleted"
        except NeonflowError:
            return None  # cannot tell: the original error stands
        if now.last_reset_at != branch.last_reset_at or now.current_state == "resetting":
            return "reset"
        return None

    def parent_of(self, branch: Branch, branches: list[Branch]) -> Branch:
        """The branch's parent among ``branches``; a RefusedError for a root branch."""
        for candidate in branches:
            if candidate.id == branch.parent_id:
                return candidate
        raise RefusedError(f"branch {branch.name!r} has no parent branch")

    def url(self, branch: Branch, pooled: bool = False) -> str:
        """The branch's URI for ``[neon] database`` and ``role``."""
        neon = self.settings.neon
        return self.client.connection_uri(branch.id, neon.database, neon.role, pooled=pooled)

    def url_or_none(self, branch: Branch) -> str | None:
        """The branch's URL, or None when it has no compute (or not our database) to reach."""
        try:
            return self.url(branch)
        except NotFoundError:
            return None

    def app_url(self) -> str | None:
        """The URL the app's env file points at (through ``[app.env]`` when set)."""
        variables = self.settings.app.variables
        return variables.url(envfile.read_vars(self.settings.env_file, variables.names))

    def point_app(self, url: str) -> str | None:
        """Write the app's variables for ``url``, keeping the driver its URL variable names.

        Returns the URL the app now reads, read back from the env file (with its driver).
        """
        variables = self.settings.app.variables
        try:
            driver = self.project.url_driver()
        except ConfigError:
            driver = None
        envfile.set_vars(self.settings.env_file, variables.values(url, driver), warn=self.progress)
        return self.app_url()

    def wait_ready(self, branch: Branch) -> Branch:
        """The branch, read again until it is ``ready``."""
        if branch.current_state == "ready":
            return branch

        def read_again() -> Branch | None:
            again = self.client.get_branch(branch.id)
            return again if again.current_state == "ready" else None

        ready = polling.until(read_again, READY_TIMEOUT, wait_first=True)
        if ready is None:
            raise NeonAPIError(f"branch {branch.name!r} did not become ready")
        return ready

    def _discard(self, branch: Branch, why: str = "", wait: bool = False) -> Discarded:
        """Delete a branch this command created and cannot use (``wait``: until it is gone);
        best effort, the user told what is left. ``"kept"``: the delete was not accepted;
        ``"deleting"``: it was, and did not finish (or was not waited for); ``"gone"``."""
        self.progress(f"deleting branch {branch.name}: {why or 'it did not become ready'}")
        try:
            operations = self.client.delete_branch(branch.id)
        except NeonflowError as exc:
            self.progress(f"could not delete {branch.name} ({exc}); `neonflow branch delete` it")
            return "kept"
        if not wait:
            return "deleting"
        try:
            self.client.wait_for_operations(operations)
        except NeonflowError as exc:
            # Neon took the delete: the branch is going even though we did not see it go.
            self.progress(
                f"the delete of {branch.name} was accepted but not seen to finish ({exc}); "
                "`neonflow branch list` shows whether it is gone"
            )
            return "deleting"
        return "gone"

    @staticmethod
    def _refuse_parent(branch: Branch, branches: list[Branch], verb: str) -> None:
        children = [b.name for b in branches if b.parent_id == branch.id]
        if children:
            raise RefusedError(
                f"refusing to {verb} {branch.name!r}: it has child branches ({', '.join(children)})"
            )

    def _refuse_precious(self, branch: Branch, verb: str) -> None:
        if branch.default:
            raise RefusedError(f"refusing to {verb} {branch.name!r}: it is the default branch")
        if branch.protected:
            raise RefusedError(f"refusing to {verb} {branch.name!r}: it is a protected branch")
