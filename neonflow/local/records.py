"""The records the store keeps for Neon's objects: how a new one looks, and how one is found.

A branch owns one PostgreSQL database per Neon database (``neondb`` on branch ``br-x`` is the
physical database ``neondb_br-x``). A deleted branch keeps its record, marked ``_deleted``, until
its databases are gone. The lookups expect the caller to hold ``store.lock``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from neonflow.local.errors import BRANCH_EXISTS, ApiError, not_found
from neonflow.local.shapes import REGION
from neonflow.local.store import Store, StoreWriteError, neon_id
from neonflow.times import now

DEFAULT_DATABASE = "neondb"
DEFAULT_ROLE = "neondb_owner"


@contextmanager
def mutation(store: Store) -> Iterator[None]:
    """A request's change: kept once on disk, undone (and a 503) when it cannot be saved."""
    try:
        with store.transaction():
            yield
    except StoreWriteError as exc:
        raise ApiError(503, f"{exc}; nothing was changed: free space there and retry") from None


# -- new records ---------------------------------------------------------------------------------


def new_branch(
    name: str, parent: dict[str, Any] | None, default: bool, init_source: str
) -> dict[str, Any]:
    stamp = now()
    return {
        "id": neon_id("br"),
        "name": name,
        "parent_id": parent["id"] if parent else None,
        "parent_timestamp": stamp if parent else None,
        "parent_lsn": None,
        "current_state": "init",
        "pending_state": "ready",
        "state_changed_at": stamp,
        "creation_source": "neonflow-local",
        "created_at": stamp,
        "updated_at": stamp,
        "default": default,
        "protected": False,
        "init_source": init_source,
        "created_by": {"name": "local"},
    }


def new_database(branch_id: str, name: str, owner: str) -> dict[str, Any]:
    stamp = now()
    return {
        "id": random.randint(1, 2**31),
        "name": name,
        "owner_name": owner,
        "physical": f"{name}_{branch_id}",
        "created_at": stamp,
        "updated_at": stamp,
    }


def new_endpoint(
    endpoint_id: str, branch_id: str, kind: str, host: str, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec = spec or {}
    stamp = now()
    return {
        "id": endpoint_id,
        "host": host,
        "branch_id": branch_id,
        "type": kind,
        "current_state": "init",
        "pending_state": "active",
        "region_id": REGION,
        "autoscaling_limit_min_cu": spec.get("autoscaling_limit_min_cu", 0.25),
        "autoscaling_limit_max_cu": spec.get("autoscaling_limit_max_cu", 1),
        "settings": spec.get("settings", {}),
        "pooler_enabled": False,
        "pooler_mode": "transaction",
        "disabled": False,
        "passwordless_access": False,
        "creation_source": "neonflow-local",
        "created_at": stamp,
        "updated_at": stamp,
        "last_active": stamp,
        "proxy_host": "127.0.0.1",
        "suspend_timeout_seconds": spec.get("suspend_timeout_seconds", 0),
        "provisioner": spec.get("provisioner", "k8s-neonvm"),
        "name": spec.get("name"),
    }


# -- lookups -------------------------------------------------------------------------------------


def roles(store: Store, branch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The branch's roles (name -> password and times): as on Neon, each branch has its own.

    ``store.roles`` is the set of PostgreSQL roles behind them (a role name is one PostgreSQL role
    for every branch that has it).
    """
    return branch["_roles"]  # type: ignore[no-any-return]


def live_branches(store: Store) -> Iterator[dict[str, Any]]:
    return (b for b in store.branches.values() if not b.get("_deleted"))


def branch(store: Store, branch_id: str) -> dict[str, Any]:
    found = store.branches.get(branch_id)
    if found is None or found.get("_deleted"):
        raise not_found(f"branch {branch_id}")
    return found


def children(store: Store, branch_id: str) -> list[dict[str, Any]]:
    return [b for b in live_branches(store) if b.get("parent_id") == branch_id]


def default_branch(store: Store) -> dict[str, Any]:
    for found in live_branches(store):
        if found["default"]:
            return found
    raise ApiError(500, "the project has no default branch")


def check_name_free(store: Store, name: str, exclude: str | None = None) -> None:
    for found in live_branches(store):
        if found["name"] == name and found["id"] != exclude:
            raise ApiError(409, f"branch with name {name!r} already exists", BRANCH_EXISTS)


def physical(branch: dict[str, Any], db_name: str | None) -> str:
    """The physical database of the branch's Neon database ``db_name``."""
    if not db_name:
        raise ApiError(400, "db_name is required")
    for db in branch["_databases"]:
        if db["name"] == db_name:
            return str(db["physical"])
    raise not_found(f"database {db_name}")


def endpoint(store: Store, endpoint_id: str) -> dict[str, Any]:
    found = store.endpoints.get(endpoint_id)
    if found is None:
        raise not_found(f"endpoint {endpoint_id}")
    return found


def branch_endpoints(store: Store, branch_id: str) -> list[dict[str, Any]]:
    return [e for e in store.endpoints.values() if e["branch_id"] == branch_id]


def read_write_endpoint(store: Store, branch_id: str) -> dict[str, Any] | None:
    return next((e for e in branch_endpoints(store, branch_id) if e["type"] == "read_write"), None)
