"""Restoring a branch from another (Neon's restore, and its reset from the parent).

The request checks what Neon checks and answers with a ``create_timeline`` operation; its work
copies the source's databases aside, moves the old data under ``preserve_under_name`` when asked,
then swaps the copies in: the branch ends with the source's databases, no more and no fewer.
A failed restore leaves the branch with its data, ready again.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from neonflow.local import records, shapes
from neonflow.local.cluster import Cluster
from neonflow.local.errors import ApiError
from neonflow.local.operations import Operations
from neonflow.local.store import Store
from neonflow.local.validation import ID_PATTERN, check_branch_name, refuse_point_in_time
from neonflow.times import now, rfc3339

log = logging.getLogger("neonflow.local")


@dataclass
class Restores:
    """Restores of the project's branches: the request, its operation's work, its undo."""

    store: Store
    project_id: str
    operations: Operations
    cluster: Cluster

    def restore(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        source_id = body.get("source_branch_id")
        if not isinstance(source_id, str) or not ID_PATTERN.match(source_id):
            raise ApiError(400, "source_branch_id is required")
        refuse_point_in_time(body, "source_lsn", "source_timestamp")
        if source_id == branch_id:
            raise ApiError(
                400, "restoring a branch from itself needs source_lsn or source_timestamp"
            )
        preserve = body.get("preserve_under_name")
        store = self.store
        with records.mutation(store):
            branch = records.branch(store, branch_id)
            records.branch(store, source_id)
            if branch["protected"]:
                raise ApiError(422, "cannot restore a protected branch")
            if branch["default"] and not preserve and source_id == branch.get("parent_id"):
                raise ApiError(422, "the default branch has no parent to reset from")
            self.operations.check_unlocked(branch_id)
            self.operations.check_unlocked(source_id)
            children = records.children(store, branch_id)
            if children and not preserve:
                raise ApiError(
                    400, "the branch has children: preserve_under_name is required to restore it"
                )
            if source_id in {c["id"] for c in children} and not preserve:
                raise ApiError(400, "preserve_under_name is required to restore from a child")
            if preserve:
                # Before the operation exists: a refused request must leave nothing pending.
                check_branch_name(preserve)
                records.check_name_free(store, preserve)
            op = self.operations.new("create_timeline", branch_id)
            op["_source"] = source_id
            from_parent = source_id == branch.get("parent_id")
            if preserve:
                self._preserve(branch, children, preserve, op)
            if from_parent:
                branch["last_reset_at"] = now()
                if branch.get("ttl_interval_seconds"):
                    ttl = timedelta(seconds=branch["ttl_interval_seconds"])
                    branch["expires_at"] = rfc3339(datetime.now(UTC) + ttl)
            branch.update(current_state="resetting", pending_state="ready", state_changed_at=now())
            branch["updated_at"] = now()
            out = {
                "branch": shapes.branch_json(branch, self.project_id),
                "operations": [self.operations.json(op)],
            }
        self.operations.submit([op])
        return out

    def _preserve(
        self,
        branch: dict[str, Any],
        children: list[dict[str, Any]],
        name: str,
        op: dict[str, Any],
    ) -> None:
        """A branch ``name`` that is to keep the branch's data as it was, children and all."""
        kept = records.new_branch(
            name,
            parent=self.store.branches.get(branch.get("parent_id") or ""),
            default=False,
            init_source=branch.get("init_source", "parent-data"),
        )
        kept.update(current_state="ready", pending_state=None)
        kept["_databases"] = [
            {**d, "physical": f"{d['name']}_{kept['id']}"} for d in branch["_databases"]
        ]
        kept["_annotation"] = branch.get("_annotation")
        kept["_roles"] = copy.deepcopy(records.roles(self.store, branch))
        for child in children:
            child["parent_id"] = kept["id"]
        self.store.branches[kept["id"]] = kept
        op["_preserve"] = [
            [old["physical"], new["physical"]]
            for old, new in zip(branch["_databases"], kept["_databases"], strict=True)
        ]
        branch["restored_as"] = kept["id"]
        # As on Neon: the backup becomes the restored branch's parent (neonctl reads the
        # backup from parent_id).
        branch["parent_id"] = kept["id"]

    def run(self, op: dict[str, Any]) -> None:
        """The work of ``create_timeline``: the branch's databases replaced by the source's."""
        with self.store.lock:
            branch = self.store.branches[op["branch_id"]]
            source = self.store.branches[op["_source"]]
            # As on Neon, the branch gets the source's databases, whatever it had itself: the
            # ones of the same name are replaced, the source's others added, its own others go.
            had = {d["name"]: d for d in branch["_databases"]}
            databases = [
                {
                    **had.get(s["name"], records.new_database(branch["id"], s["name"], "")),
                    "owner_name": s["owner_name"],
                }
                for s in source["_databases"]
            ]
            pairs = [
                (s["physical"], d["physical"], d["owner_name"])
                for s, d in zip(source["_databases"], databases, strict=True)
            ]
            names = {d["name"] for d in databases}
            # The source's roles too; one the branch had already keeps its password (a reset
            # keeps the connection details).
            own = records.roles(self.store, branch)
            roles = {
                name: copy.deepcopy(own.get(name, role))
                for name, role in records.roles(self.store, source).items()
            }
            dropped = [d["physical"] for d in branch["_databases"] if d["name"] not in names]
        # Each restored database is marked with the operation, so a run again after a restart
        # (the disk had not caught up) leaves alone what this restore already replaced. The
        # copies are made aside first: should one fail (a full disk), the branch still has its
        # data, and nothing was renamed for preserve_under_name yet.
        marker = f"neonflow restore {op['id']}"
        staged = self.cluster.stage(pairs, op["id"][:8], marker)
        for old, new in op.get("_preserve", []):
            self.cluster.rename(old, new)
        with self.store.lock:
            op["_renamed"] = True
        self.cluster.swap_in(staged, marker)
        with self.store.lock:  # the metadata follows the databases at once
            branch["_databases"] = databases
            branch["_roles"] = roles
        for physical in dropped:  # under preserve_under_name, moved to the kept branch already
            try:
                self.cluster.drop(physical)
            except psycopg.Error as exc:  # no longer the branch's: a leftover, not a failure
                log.warning("restore %s: could not drop %s: %s", op["id"], physical, exc)
        with self.store.lock:
            branch.update(current_state="ready", pending_state=None, state_changed_at=now())

    def undo(self, op: dict[str, Any]) -> None:
        """A failed restore staged its copies aside, so the branch keeps its data: ready again."""
        with self.store.lock:
            branch = self.store.branches.get(op["branch_id"])
            if branch is None:
                return
            kept = self.store.branches.get(branch.get("restored_as") or "")
            if kept is not None and op.get("_preserve") and not op.get("_renamed"):
                # The old data was never moved under the preserved name: forget that branch.
                for child in records.children(self.store, kept["id"]):
                    child["parent_id"] = branch["id"]
                del self.store.branches[kept["id"]]
                del branch["restored_as"]
            branch.update(current_state="ready", pending_state=None, state_changed_at=now())
