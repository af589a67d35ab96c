"""The JSON of Neon's objects, made from the records the store keeps (see ``records``).

Objects are complete: every field the spec marks required is there, so strict clients (the
official SDKs, ``neonctl``) read them. Fields starting with ``_`` are the local Neon's own and
never leave it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from neonflow.times import rfc3339

REGION = "local"


def project_json(project: Mapping[str, Any]) -> dict[str, Any]:
    period_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0)
    return {
        "id": project["id"],
        "platform_id": "local",
        "region_id": REGION,
        "name": project["name"],
        "provisioner": "k8s-neonvm",
        "default_endpoint_settings": {
            "autoscaling_limit_min_cu": 0.25,
            "autoscaling_limit_max_cu": 1,
            "suspend_timeout_seconds": 0,
        },
        "settings": {"allowed_ips": {"ips": [], "protected_branches_only": False}},
        "pg_version": 18,
        "proxy_host": "127.0.0.1",
        "branch_logical_size_limit": 0,
        "branch_logical_size_limit_bytes": 0,
        "store_passwords": True,
        "active_time": 0,
        "active_time_seconds": 0,
        "compute_time_seconds": 0,
        "written_data_bytes": 0,
        "data_transfer_bytes": 0,
        "data_storage_bytes_hour": 0,
        "cpu_used_sec": 0,
        "creation_source": "neonflow-local",
        "history_retention_seconds": 0,
        "created_at": project["created_at"],
        "updated_at": project["updated_at"],
        "consumption_period_start": rfc3339(period_start),
        "consumption_period_end": rfc3339(period_start + timedelta(days=31)),
        "owner_id": "local",
    }


def branch_json(branch: Mapping[str, Any], project_id: str) -> dict[str, Any]:
    out = {k: v for k, v in branch.items() if not k.startswith("_") and v is not None}
    out.update(
        project_id=project_id,
        primary=branch["default"],
        cpu_used_sec=0,
        active_time_seconds=0,
        compute_time_seconds=0,
        written_data_bytes=0,
        data_transfer_bytes=0,
        logical_size=branch.get("_logical_size", 0),
    )
    return out


def annotation_json(branch: Mapping[str, Any]) -> dict[str, Any]:
    ann = branch.get("_annotation") or {}
    return {
        "object": {"type": "console/branch", "id": branch["id"]},
        "value": ann.get("value", {}),
        "created_at": ann.get("created_at", branch["created_at"]),
        "updated_at": ann.get("updated_at", branch["updated_at"]),
    }


def endpoint_json(endpoint: Mapping[str, Any], project_id: str) -> dict[str, Any]:
    out = {k: v for k, v in endpoint.items() if v is not None}
    out["project_id"] = project_id
    return out


def database_json(branch_id: str, db: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": db["id"],
        "branch_id": branch_id,
        "name": db["name"],
        "owner_name": db["owner_name"],
        "created_at": db["created_at"],
        "updated_at": db["updated_at"],
    }


def role_json(name: str, role: Mapping[str, Any], branch_id: str) -> dict[str, Any]:
    return {
        "branch_id": branch_id,
        "name": name,
        "protected": False,
        "authentication_method": "no_login" if role.get("no_login") else "password",
        "created_at": role["created_at"],
        "updated_at": role.get("updated_at", role["created_at"]),
    }


def roles_json(roles: Mapping[str, Mapping[str, Any]], branch_id: str) -> list[dict[str, Any]]:
    return [role_json(name, role, branch_id) for name, role in roles.items()]


def operation_json(op: Mapping[str, Any], project_id: str) -> dict[str, Any]:
    out = {k: v for k, v in op.items() if not k.startswith("_") and v is not None}
    out["project_id"] = project_id
    return out


def pooler_host(endpoint: Mapping[str, Any]) -> str:
    # As Neon's clients build it; an IP literal has no endpoint id in it, so locally the
    # pooled host is the direct one (a session, not PgBouncer's transaction mode).
    return str(endpoint["host"]).replace(endpoint["id"], f"{endpoint['id']}-pooler")


def uri(role: str, password: str, host: str, database: str) -> str:
    """A URI shaped as Neon's and neonctl's (TLS with channel binding)."""
    return (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
        f"@{host}/{quote(database, safe='')}?sslmode=require&channel_binding=require"
    )


def connection_details(
    db: Mapping[str, Any], password: str, endpoint: Mapping[str, Any]
) -> dict[str, Any]:
    """A created branch's ``connection_uris`` entry: ``db`` as its owner, through ``endpoint``."""
    return {
        "connection_uri": uri(db["owner_name"], password, endpoint["host"], db["name"]),
        "connection_parameters": {
            "database": db["name"],
            "password": password,
            "role": db["owner_name"],
            "host": endpoint["host"],
            "pooler_host": pooler_host(endpoint),
        },
    }
