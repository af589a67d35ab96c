"""The local Neon's metadata: one JSON document in the state folder, written atomically."""

from __future__ import annotations

import copy
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neonflow.errors import LocalNeonError
from neonflow.files import write_private
from neonflow.local.paths import read_json

log = logging.getLogger("neonflow.local")

_ADJECTIVES = "misty cool quiet bold calm young odd dry wild late rapid green proud super".split()
_NOUNS = "sea sun fog lake hill leaf moon rain star wave river snow field pond".split()


def neon_id(prefix: str) -> str:
    """An id shaped like Neon's (``br-misty-sea-a5833nbi``)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    tail = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{prefix}-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{tail}"


def operation_id() -> str:
    return str(uuid.uuid4())


class StoreWriteError(LocalNeonError):
    """``state.json`` could not be written (a full disk, a read-only file system, …)."""


class Store:
    """Branches, endpoints, operations and roles, guarded by one lock and saved after each change.

    ``data`` keys: ``project``, ``branches``, ``endpoints``, ``operations``, ``roles``.

    A request changes the data in a :meth:`transaction`: kept only once it is on disk, undone
    when the write fails. Workers record what they did with :meth:`save_or_defer`: the database
    work is done by then, so memory keeps it and the disk catches up at the next write that
    succeeds (meanwhile the disk holds the operation as pending, which a restart runs again).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.dirty = False
        self._written: str | None = None  # the text last written, to skip writing it again
        if path.exists():
            self.data: dict[str, Any] = read_json(path)
            _per_branch_roles(self.data)
        else:
            self.data = {
                "project": {},
                "branches": {},
                "endpoints": {},
                "operations": {},
                "roles": {},
            }

    @property
    def branches(self) -> dict[str, dict[str, Any]]:
        return self.data["branches"]  # type: ignore[no-any-return]

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return self.data["endpoints"]  # type: ignore[no-any-return]

    @property
    def operations(self) -> dict[str, dict[str, Any]]:
        return self.data["operations"]  # type: ignore[no-any-return]

    @property
    def roles(self) -> dict[str, dict[str, Any]]:
        return self.data["roles"]  # type: ignore[no-any-return]

    def save(self) -> None:
        """Write everything; a StoreWriteError says why not (memory is left as it is)."""
        with self.lock:
            text = json.dumps(self.data, indent=1, sort_keys=True)
            if text == self._written:
                self.dirty = False  # the disk has this already (a refused request, a no-op)
                return
            try:
                write_private(self.path, text)
            except OSError as exc:
                self.dirty = True
                raise StoreWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            self._written = text
            self.dirty = False

    def save_or_defer(self) -> None:
        """Save, or leave it to the next write that succeeds (see :meth:`flush`)."""
        try:
            self.save()
        except StoreWriteError as exc:
            log.warning("%s; will retry", exc)

    def flush(self) -> None:
        """Write changes a failed save left in memory only."""
        with self.lock:
            if self.dirty:
                self.save_or_defer()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock, run the change, save it; on any error put the data back as it was.

        The rollback restores dicts in place, so objects that workers hold (an operation, a
        branch) stay the ones in the store.
        """
        with self.lock:
            before = json.loads(json.dumps(self.data))
            try:
                yield
                self.save()
            except BaseException:
                _restore(self.data, before)
                raise


def _restore(current: dict[str, Any], before: dict[str, Any]) -> None:
    """Make ``current`` equal to ``before``, keeping the identity of the records in it."""
    for key in [k for k in current if k not in before]:
        del current[key]
    for key, old in before.items():
        now = current.get(key)
        if isinstance(now, dict) and isinstance(old, dict) and key in current:
            for sub in [k for k in now if k not in old]:
                del now[sub]
            for sub, value in old.items():
                record = now.get(sub)
                if isinstance(record, dict) and isinstance(value, dict):
                    record.clear()
                    record.update(value)
                else:
                    now[sub] = value
        else:
            current[key] = old


def _per_branch_roles(data: dict[str, Any]) -> None:
    """A state folder from before roles were per branch: each branch takes a copy of the
    project's roles and passwords, and ``roles`` keeps only the PostgreSQL roles behind them."""
    roles = data.get("roles", {})
    if all("_roles" in branch for branch in data.get("branches", {}).values()):
        return
    keyed = {name: role for name, role in roles.items() if "password" in role}
    for branch in data["branches"].values():
        branch.setdefault("_roles", copy.deepcopy(keyed))
    data["roles"] = {name: {"created_at": role["created_at"]} for name, role in roles.items()}
