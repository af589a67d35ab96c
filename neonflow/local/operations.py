"""The operation queue: Neon's operations as records, and the worker threads that run them.

A mutation answers at once with its operations (``scheduling``); a worker then runs each one's
work in order (``running``, then ``finished`` or ``failed``), so clients wait as they must on Neon.
A failure fails the rest of its chain and is undone. An operation that a stop or a crash
interrupted runs again at the next start, so every work is idempotent.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from neonflow.config import FaultSettings
from neonflow.local.errors import ApiError, not_found
from neonflow.local.shapes import operation_json
from neonflow.local.store import Store, operation_id
from neonflow.times import now

log = logging.getLogger("neonflow.local")

PENDING = ("scheduling", "running")
HOLD_PENDING_SECONDS = 0.5

Work = Callable[[], None]


def _nothing() -> None:
    return None


class Operations:
    """The project's operations. ``work_for`` names what an operation does (None: nothing to
    run again); ``undo`` cleans up after one that failed."""

    def __init__(
        self,
        store: Store,
        project_id: str,
        faults: FaultSettings,
        work_for: Callable[[dict[str, Any]], Work | None],
        undo: Callable[[dict[str, Any]], None],
        workers: int = 4,
    ) -> None:
        self.store = store
        self.project_id = project_id
        self.faults = faults
        self._work_for = work_for
        self._undo = undo
        self._random = random.Random(faults.seed)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neon-op")
        self._changed = threading.Condition(store.lock)

    def new(self, action: str, branch_id: str, endpoint_id: str | None = None) -> dict[str, Any]:
        """A new operation, ``scheduling``, in the store (the caller holds its lock)."""
        stamp = now()
        op: dict[str, Any] = {
            "id": operation_id(),
            "branch_id": branch_id,
            "endpoint_id": endpoint_id,
            "action": action,
            "status": "scheduling",
            "failures_count": 0,
            "created_at": stamp,
            "updated_at": stamp,
            "total_duration_ms": 0,
        }
        self.store.operations[op["id"]] = op
        return op

    def json(self, op: dict[str, Any]) -> dict[str, Any]:
        return operation_json(op, self.project_id)

    def pending(self, branch_id: str) -> dict[str, Any] | None:
        for op in self.store.operations.values():
            if op.get("branch_id") == branch_id and op["status"] in PENDING:
                return op
        return None

    def check_unlocked(self, branch_id: str) -> None:
        """A 423 while an operation on the branch is still pending, as on Neon."""
        op = self.pending(branch_id)
        if op is not None:
            raise ApiError(
                423,
                f"branch {branch_id} has an operation in progress ({op['action']}); "
                "retry when it finishes",
            )

    # -- running -----------------------------------------------------------------------------

    def submit(self, ops: list[dict[str, Any]]) -> None:
        """Run ``ops`` in order on a worker (once their request is saved)."""
        self._executor.submit(self._run_chain, [(op, self._work_for(op) or _nothing) for op in ops])

    def resume(self) -> None:
        """Run again the operations a crash or a stop interrupted (each one is idempotent)."""
        pending = [op for op in self.store.operations.values() if op["status"] in PENDING]
        for op in sorted(pending, key=lambda o: o["created_at"]):
            work = self._work_for(op)
            if work is not None:
                self._executor.submit(self._run_chain, [(op, work)])

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    def _run_chain(self, chain: list[tuple[dict[str, Any], Work]]) -> None:
        """Run operations in order; a failure fails the rest of the chain."""
        failed: str | None = None
        for op, work in chain:
            started = time.monotonic()
            with self.store.lock:
                op.update(status="running", updated_at=now())
            try:
                if failed is not None:
                    raise RuntimeError(f"an earlier operation failed: {failed}")
                if self._random.random() < self.faults.rate_failed_operation:
                    raise RuntimeError("injected failure (fault mode)")
                work()
                status, error = "finished", None
            except Exception as exc:  # an operation reports its failure, it never kills the worker
                log.exception("operation %s (%s) failed", op["id"], op["action"])
                # The first line: PostgreSQL adds a HINT on the next, the client shows one line.
                status, error = "failed", (str(exc).strip().splitlines() or ["failed"])[0][:500]
                failed = failed or error
                self._undo_safely(op)
            with self.store.lock:
                op.update(
                    status=status,
                    error=error,
                    updated_at=now(),
                    total_duration_ms=int((time.monotonic() - started) * 1000),
                )
                if error:
                    op["failures_count"] += 1
                # The work is done (or undone): memory says so now, the disk when it can.
                self.store.save_or_defer()
                self._changed.notify_all()

    def _undo_safely(self, op: dict[str, Any]) -> None:
        try:
            self._undo(op)
        except Exception:  # the sweep (tick) finishes what could not be undone now
            log.exception("could not undo operation %s (%s)", op["id"], op["action"])

    # -- reading -----------------------------------------------------------------------------

    def get(self, operation_id_: str, hold: float = HOLD_PENDING_SECONDS) -> dict[str, Any]:
        """The operation; one still pending is answered when it ends or after ``hold`` seconds.

        Holding the answer a moment is invisible to clients (they poll as they would on Neon)
        but lets them see the end of an operation when it happens rather than at their next poll.
        """
        with self._changed:
            op = self.store.operations.get(operation_id_)
            if op is None:
                raise not_found(f"operation {operation_id_}")
            if hold > 0:
                self._changed.wait_for(lambda: op["status"] not in PENDING, timeout=hold)
            return {"operation": self.json(op)}

    def page(self, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        if limit is not None and not 1 <= limit <= 1000:
            raise ApiError(400, "limit must be between 1 and 1000")
        with self.store.lock:
            rows = sorted(
                self.store.operations.values(),
                key=lambda o: (o["created_at"], o["id"]),
                reverse=True,
            )
            if cursor and not cursor.isdigit():
                raise ApiError(400, "invalid cursor")
            start = int(cursor) if cursor else 0
            page = rows[start : start + limit] if limit else rows[start:]
            # The spec wants a non-empty cursor; past the end it gives an empty page.
            return {
                "operations": [self.json(op) for op in page],
                "pagination": {"cursor": str(start + len(page))},
            }
