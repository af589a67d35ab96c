"""The local Neon's metadata: one JSON document in the state folder, written atomically."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

from neonflow.files import write_private
from neonflow.local.paths import read_json

_ADJECTIVES = "misty cool quiet bold calm young odd dry wild late rapid green proud super".split()
_NOUNS = "sea sun fog lake hill leaf moon rain star wave river snow field pond".split()


def neon_id(prefix: str) -> str:
    """An id shaped like Neon's (``br-misty-sea-a5833nbi``)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    tail = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{prefix}-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{tail}"


def operation_id() -> str:
    return str(uuid.uuid4())


class Store:
    """Branches, endpoints, operations and roles, guarded by one lock and saved after each change.

    ``data`` keys: ``project``, ``branches``, ``endpoints``, ``operations``, ``roles``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        if path.exists():
            self.data: dict[str, Any] = read_json(path)
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
        with self.lock:
            write_private(self.path, json.dumps(self.data, indent=1, sort_keys=True))
