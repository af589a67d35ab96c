"""``list`` and ``status``: every branch with its Alembic revision, in a constant number of API
requests; revisions read a few at a time, each bounded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neonflow.errors import ConfigError, ConflictError, EnvPyError, NeonAPIError, NotFoundError
from neonflow.times import rfc3339_or_none
from neonflow.urls import same_database
from neonflow.workflow.base import A_CREATED_BY, BranchesBase, first_line
from neonflow.workflow.results import BranchRow, RevisionStatus, StatusResult

if TYPE_CHECKING:
    from neonflow.neon import Branch, Endpoint


READ_TIMEOUT = 5.0  # seconds to connect to a branch to read its revision, and for the query
MAX_READERS = 8  # connections a listing opens at once


class Listing(BranchesBase):
    """Every branch, and where the app points, with their revisions."""

    def _computes(self) -> dict[str, Endpoint]:
        """Each branch's read_write compute (the one ``connection_uri`` names), in one request."""
        return {e.branch_id: e for e in self.client.list_endpoints() if e.type == "read_write"}

    def _points_at(self, url: str | None, endpoint: Endpoint | None) -> bool:
        """Whether ``url`` reaches ``[neon] database`` on this compute (directly or pooled)."""
        from neonflow.neon.client import endpoint_uri

        if url is None or endpoint is None:
            return False
        database = self.settings.neon.database
        return any(
            same_database(url, endpoint_uri(endpoint, database, "", "", pooled))
            for pooled in (False, True)
        )

    def _not_read(self, endpoint: Endpoint | None, revisions: bool | None) -> RevisionStatus | None:
        """Why a branch's revision is not to be read, or None to read it."""
        if revisions is False:
            return "not_read"
        if endpoint is None:
            return "no_compute"
        # On Neon cloud a connection starts a suspended compute (and its bill); the local
        # Neon's computes answer whatever their state.
        if revisions is None and not self.settings.is_local and endpoint.current_state != "active":
            return "idle"
        return None

    def _read_revisions(
        self,
        wanted: list[Branch],
        branches: list[Branch],
        computes: dict[str, Endpoint],
        timeout: float,
    ) -> dict[str, list[str] | None]:
        """The revisions of the ``wanted`` branches (None: unknown), by branch id.

        Their URIs are built from the computes' hosts and one password per lineage: on Neon a
        branch inherits its parent's roles and passwords, except from a protected parent (see
        :func:`_lineage`). One whose password was changed since costs a ``connection_uri``.
        """
        from neonflow.neon.client import endpoint_uri

        table, schema = self._version_table()
        neon = self.settings.neon
        by_id = {b.id: b for b in branches}
        lineage = {b.id: _lineage(b, by_id).id for b in wanted}
        sources = list(dict.fromkeys(lineage.values()))
        if len(sources) > 1:
            self.progress(
                f"{len(sources) - 1} branch(es) with passwords of their own (children of "
                "protected branches): one more API request each"
            )
        passwords = {source: self._password(by_id[source]) for source in sources}
        urls = {}
        for branch in wanted:
            password = passwords[lineage[branch.id]]
            urls[branch.id] = (
                endpoint_uri(computes[branch.id], neon.database, neon.role, password)
                if password is not None
                else self._own_url(branch)
            )
        read, refused = _read_all(urls, table, schema, timeout)
        if refused:
            self.progress(
                f"{len(refused)} branch(es) whose password changed: one more API request each"
            )
            again = {i: self._own_url(by_id[i]) for i in refused}
            read.update(_read_all(again, table, schema, timeout)[0])
        return read

    def _password(self, branch: Branch) -> str | None:
        """``[neon] role``'s password on ``branch``, or None (said why) if the role is not
        there or Neon does not keep passwords."""
        role = self.settings.neon.role
        try:
            return self.client.reveal_password(branch.id, role)
        except (NotFoundError, ConflictError) as exc:
            self.progress(
                f"cannot read the password of {role} on {branch.name} ({first_line(exc)}): "
                "one connection_uri request per branch that shares it"
            )
            return None

    def _own_url(self, branch: Branch) -> str | None:
        """The branch's URI from ``connection_uri``; None when Neon gives none."""
        try:
            return self.url(branch)
        except NeonAPIError:
            return None

    def _version_table(self) -> tuple[str, str | None]:
        try:
            return self.project.version_table()
        except ConfigError:
            return "alembic_version", None

    def list(self, revisions: bool | None = None, timeout: float = READ_TIMEOUT) -> list[BranchRow]:
        """Every branch, oldest first, with its Alembic revision.

        ``revisions``: True reads every branch's, False none, None (the default) those that cost
        nothing to read: all on the local Neon, on Neon cloud those whose compute is running (a
        connection wakes a suspended one). Three API requests whatever the number of branches
        (branches, endpoints, one password; one more per child of a protected branch);
        revisions are read :data:`MAX_READERS` at a time with a ``timeout`` (to connect, and
        to read), and one that cannot be read is unknown.
        """
        branches = self.client.list_branches(sort_by="created_at", sort_order="asc")
        by_id = {b.id: b for b in branches}
        computes = self._computes()
        app_url = self.app_url()
        skipped = {b.id: self._not_read(computes.get(b.id), revisions) for b in branches}
        wanted = [b for b in branches if skipped[b.id] is None]
        read = self._read_revisions(wanted, branches, computes, timeout) if wanted else {}
        rows = []
        for branch in branches:
            revision = read.get(branch.id)
            status: RevisionStatus = skipped[branch.id] or (
                "read" if revision is not None else "unknown"
            )
            rows.append(
                BranchRow(
                    name=branch.name,
                    id=branch.id,
                    parent=by_id[branch.parent_id].name if branch.parent_id in by_id else None,
                    state=branch.current_state,
                    created_at=rfc3339_or_none(branch.created_at) or "",
                    expires_at=rfc3339_or_none(branch.expires_at),
                    default=branch.default,
                    protected=branch.protected,
                    neonflow=branch.annotations.get(A_CREATED_BY) == "true",
                    revision=revision,
                    current=self._points_at(app_url, computes.get(branch.id)),
                    revision_status=status,
                )
            )
        return rows

    def status(self, revisions: bool | None = None, timeout: float = READ_TIMEOUT) -> StatusResult:
        """Where the app points, and that branch's revision against head.

        Two API requests (branches, endpoints); on Neon cloud the revision of a branch whose
        compute is suspended is read only with ``revisions=True`` (the connection wakes it).
        """
        from neonflow.errors import RevisionLoadError
        from neonflow.migrations.history import History

        app_url = self.app_url()
        problem = None
        try:
            history = self.history()
        except (RevisionLoadError, EnvPyError) as exc:
            history, problem = History(heads=()), str(exc)
        head = list(history.heads)
        result = StatusResult(
            str(self.settings.env_file),
            app_url,
            None,
            None,
            None,
            None,
            None,
            head,
            None,
            problem,
            self.settings.app.variables.label,
        )
        if app_url is None:
            result.revision_status = "not_read"
            return result
        branches = self.client.list_branches()
        by_id = {b.id: b for b in branches}
        computes = self._computes()
        skipped: RevisionStatus | None = None if revisions is not False else "not_read"
        for branch in branches:
            endpoint = computes.get(branch.id)
            if self._points_at(app_url, endpoint):
                result.branch, result.branch_id = branch.name, branch.id
                parent = by_id.get(branch.parent_id or "")
                result.parent = parent.name if parent else None
                result.expires_at = rfc3339_or_none(branch.expires_at)
                skipped = self._not_read(endpoint, revisions)
                break
        if skipped is not None:
            result.revision_status = skipped
            return result
        table, schema = history.version_table, history.version_table_schema
        from neonflow.migrations.probe import heads_or_none

        result.revision = heads_or_none(app_url, table, schema, timeout)
        if result.revision is None:
            result.revision_status = "unknown"
        elif problem is None:
            result.at_head = set(result.revision) == set(head)
        return result


def _lineage(branch: Branch, by_id: dict[str, Branch]) -> Branch:
    """The oldest ancestor whose roles and passwords ``branch`` inherited: up through the
    parents until a root, or a branch whose parent is protected (whose children Neon gives new
    passwords)."""
    seen = {branch.id}
    while branch.parent_id in by_id and not by_id[branch.parent_id].protected:
        branch = by_id[branch.parent_id]
        if branch.id in seen:  # a cycle: not from Neon, but not a reason to loop
            break
        seen.add(branch.id)
    return branch


def _read_all(
    urls: dict[str, str | None], table: str, schema: str | None, timeout: float
) -> tuple[dict[str, list[str] | None], list[str]]:
    """Each URL's revision (None: unknown), :data:`MAX_READERS` at a time, and the keys whose
    password was refused."""
    from concurrent.futures import ThreadPoolExecutor

    from neonflow.migrations.probe import heads_or_refused

    def read(url: str | None) -> tuple[list[str] | None, bool]:
        return heads_or_refused(url, table, schema, timeout) if url else (None, False)

    if not urls:
        return {}, []
    workers = min(MAX_READERS, len(urls))
    with ThreadPoolExecutor(workers, thread_name_prefix="neonflow-revision") as pool:
        outcomes = dict(zip(urls, pool.map(read, urls.values()), strict=True))
    refused = [key for key, (_, no) in outcomes.items() if no]
    return {key: revision for key, (revision, _) in outcomes.items()}, refused
