"""The local Neon: one project of Neon's branch model over one embedded PostgreSQL cluster.

:class:`LocalNeon` puts the parts together, each in a module of its own:

- ``errors`` and ``validation``: Neon's error answers, and the checks of what a request brings;
- ``records`` and ``shapes``: the records the store keeps, and the JSON the API answers with;
- ``operations``: the queue that runs each mutation's operations on worker threads;
- ``branches`` and ``restore``: the branch model (create, update, delete, restore, expiry);
- ``computes``: endpoints, and the reads of a branch's databases, roles, URIs and schema;
- ``cluster``: the physical PostgreSQL work (copying, renaming, dropping databases).

Here are the project itself, the first start (bootstrap), the background upkeep and the stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg import sql

from neonflow.config import FaultSettings
from neonflow.local import records, shapes
from neonflow.local.branches import Branches
from neonflow.local.cluster import Cluster
from neonflow.local.computes import Computes, Hosts
from neonflow.local.errors import not_found
from neonflow.local.operations import Operations
from neonflow.local.postgres import EmbeddedPostgres, new_password
from neonflow.local.restore import Restores
from neonflow.local.scram import internal_password
from neonflow.local.store import Store
from neonflow.times import now

log = logging.getLogger("neonflow.local")


class LocalNeon:
    """One local project. The parts' public methods take and return JSON-shaped dicts, or
    raise ApiError."""

    def __init__(
        self,
        store: Store,
        pg: EmbeddedPostgres,
        project_id: str,
        faults: FaultSettings | None = None,
        workers: int = 4,
    ) -> None:
        self.store = store
        self.pg = pg
        self.project_id = project_id
        self.wake = threading.Event()  # the reaper's: an expiration was set
        self._stop = threading.Event()
        self.cluster = Cluster(pg)
        self.operations = Operations(
            store, project_id, faults or FaultSettings(), self._work_for, self._undo, workers
        )
        self.computes = Computes(store, project_id, self.operations, self.cluster)
        self.branches = Branches(
            store, project_id, self.operations, self.cluster, self.computes, self.wake
        )
        self.restores = Restores(store, project_id, self.operations, self.cluster)

    @property
    def hosts(self) -> Hosts | None:
        """The proxy, attached by the server before bootstrap (endpoints get their hosts)."""
        return self.computes.hosts

    @hosts.setter
    def hosts(self, hosts: Hosts | None) -> None:
        self.computes.hosts = hosts

    @property
    def faults(self) -> FaultSettings:
        return self.operations.faults

    @faults.setter
    def faults(self, faults: FaultSettings) -> None:
        self.operations.faults = faults

    # -- lifecycle -------------------------------------------------------------------------

    def bootstrap(self) -> None:
        """Create the project, its owner role and the default branch on first start."""
        self.cluster.probe()
        with self.store.lock:
            if self.store.data["project"]:
                self.operations.resume()
                return
            stamp = now()
            self.store.data["project"] = {
                "id": self.project_id,
                "name": self.project_id,
                "created_at": stamp,
                "updated_at": stamp,
            }
            password = new_password()
            self.store.roles[records.DEFAULT_ROLE] = {"created_at": stamp}
        # PostgreSQL knows only the proxy's internal password: the API's works at the proxy only.
        self.cluster.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(records.DEFAULT_ROLE),
                sql.Literal(internal_password(self.pg.password, records.DEFAULT_ROLE)),
            ),
            ignore="already exists",
        )
        branch = records.new_branch("main", parent=None, default=True, init_source="parent-data")
        db = records.new_database(branch["id"], records.DEFAULT_DATABASE, records.DEFAULT_ROLE)
        branch["_databases"] = [db]
        branch["_roles"] = {
            records.DEFAULT_ROLE: {"password": password, "created_at": db["created_at"]}
        }
        self.cluster.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(db["physical"]), sql.Identifier(records.DEFAULT_ROLE)
            ),
            ignore="already exists",
        )
        branch.update(current_state="ready", pending_state=None)
        endpoint = self.computes.new_endpoint(branch["id"], "read_write")
        endpoint.update(current_state="active", pending_state=None, started_at=now())
        with self.store.lock:
            self.store.branches[branch["id"]] = branch
            self.store.endpoints[endpoint["id"]] = endpoint
            self.store.save()

    def close(self) -> None:
        self._stop.set()
        self.operations.close()
        self.store.flush()  # what a full disk kept in memory, if there is room now

    def tick(self) -> None:
        """Background upkeep: write what a full disk kept in memory, finish deletes that failed,
        delete expired branches. Never raises (it runs on the reaper thread)."""
        try:
            if not self.pg.running() and not self._stop.is_set():
                # It stops itself when its disk fills up (a PANIC); start it once it can.
                log.warning("PostgreSQL is not running; starting it again")
                self.pg.start()
            self.store.flush()
            self.branches.finish_deletes()
            self.branches.reap_expired()
        except Exception:
            log.exception("background upkeep failed; retrying later")

    def next_expiry(self) -> datetime | None:
        """When the next branch expires (the reaper wakes then)."""
        return self.branches.next_expiry()

    # -- the project -----------------------------------------------------------------------

    def project(self) -> dict[str, Any]:
        return shapes.project_json(self.store.data["project"])

    def check_project(self, project_id: str) -> None:
        if project_id != self.project_id:
            raise not_found(f"project {project_id}")

    # -- what each operation does ----------------------------------------------------------

    def _work_for(self, op: dict[str, Any]) -> Callable[[], None] | None:
        action = op["action"]
        if action == "create_branch":
            return lambda: self.branches.run_create(op["branch_id"])
        if action == "start_compute":
            return lambda: self.computes.run_state(op["endpoint_id"], "active")
        if action == "suspend_compute":
            return lambda: self.computes.run_state(op["endpoint_id"], "idle")
        if action == "delete_timeline":
            return lambda: self.branches.run_delete(op["branch_id"])
        if action == "create_timeline":
            return lambda: self.restores.run(op)
        return None

    def _undo(self, op: dict[str, Any]) -> None:
        """After a failed operation, leave the branch as a client can use or delete it."""
        if op["action"] == "create_branch":
            self.branches.abandon(op["branch_id"])
        elif op["action"] == "create_timeline":
            self.restores.undo(op)
