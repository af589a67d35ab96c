"""Databases, roles and endpoints changed through the API (Neon's create/update/delete calls).

Each change is done in PostgreSQL before the answer, so it is reachable through the proxy at
once; it is still reported as an operation (``apply_config`` and the like) as Neon reports it,
already finished, so a client that waits for it returns at once.
"""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Blueprint, Response, jsonify, request
from psycopg import sql

from neonflow.local import records, shapes
from neonflow.local.engine import LocalNeon
from neonflow.local.errors import DATABASE_EXISTS, ROLE_EXISTS, ApiError, not_found
from neonflow.local.postgres import new_password
from neonflow.local.scram import internal_password
from neonflow.times import now

PROJECT = "/api/v2/projects/<project_id>"
_ENDPOINT_FIELDS = (
    "autoscaling_limit_min_cu",
    "autoscaling_limit_max_cu",
    "suspend_timeout_seconds",
    "provisioner",
    "settings",
    "pooler_enabled",
    "pooler_mode",
    "disabled",
    "passwordless_access",
    "name",
)


class Objects:
    """The mutations, on top of one :class:`LocalNeon`."""

    def __init__(self, neon: LocalNeon) -> None:
        self.neon = neon

    # -- helpers -----------------------------------------------------------------------------

    def _finished(
        self, action: str, branch_id: str, endpoint_id: str | None = None
    ) -> dict[str, Any]:
        op = self.neon.operations.new(action, branch_id, endpoint_id)
        op.update(status="finished", updated_at=now())
        return self.neon.operations.json(op)

    def _execute(self, statement: sql.Composed, database: str = "postgres") -> None:
        try:
            with psycopg.connect(self.neon.pg.dsn(database), autocommit=True) as conn:
                conn.execute(statement)
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc)
            raise ApiError(409 if exc.sqlstate == "2BP01" else 400, message) from None

    @staticmethod
    def _spec(body: dict[str, Any], key: str) -> dict[str, Any]:
        spec = body.get(key)
        if not isinstance(spec, dict):
            raise ApiError(400, f"request body must contain a {key} object")
        return spec

    @staticmethod
    def _name(value: Any, what: str) -> str:
        if not isinstance(value, str) or not value or len(value.encode()) > 63:
            raise ApiError(400, f"{what} name must be a string of 1 to 63 bytes")
        return value

    def _database(self, branch: dict[str, Any], name: str) -> dict[str, Any]:
        for db in branch["_databases"]:
            if db["name"] == name:
                return db  # type: ignore[no-any-return]
        raise not_found(f"database {name}")

    def _role_json(
        self, branch: dict[str, Any], name: str, with_password: bool = False
    ) -> dict[str, Any]:
        role = records.roles(self.neon.store, branch)[name]
        out = shapes.role_json(name, role, branch["id"])
        if with_password:
            out["password"] = role["password"]
        return out

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = self._spec(body, "database")
        name = self._name(spec.get("name"), "database")
        owner = self._name(spec.get("owner_name"), "owner")
        neon = self.neon
        with records.mutation(neon.store):
            branch = records.branch(neon.store, branch_id)
            neon.operations.check_unlocked(branch_id)
            if any(d["name"] == name for d in branch["_databases"]):
                raise ApiError(409, f"database {name!r} already exists", DATABASE_EXISTS)
            if owner not in records.roles(neon.store, branch):
                raise not_found(f"role {owner}")
            db = records.new_database(branch_id, name, owner)
            if len(db["physical"].encode()) > 63:
                raise ApiError(400, f"database name {name!r} is too long for the local Neon")
            self._execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(db["physical"]), sql.Identifier(owner)
                )
            )
            branch["_databases"].append(db)
            out = {
                "database": shapes.database_json(branch_id, db),
                "operations": [self._finished("apply_config", branch_id)],
            }
            return out

    def update_database(self, branch_id: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = self._spec(body, "database")
        neon = self.neon
        with records.mutation(neon.store):
            branch = records.branch(neon.store, branch_id)
            neon.operations.check_unlocked(branch_id)
            db = self._database(branch, name)
            if "owner_name" in spec:
                owner = self._name(spec["owner_name"], "owner")
                if owner not in records.roles(neon.store, branch):
                    raise not_found(f"role {owner}")
                self._execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(db["physical"]), sql.Identifier(owner)
                    )
                )
                db["owner_name"] = owner
            if "name" in spec and spec["name"] != name:
                new = self._name(spec["name"], "database")
                if any(d["name"] == new for d in branch["_databases"]):
                    raise ApiError(409, f"database {new!r} already exists", DATABASE_EXISTS)
                physical = records.new_database(branch_id, new, db["owner_name"])["physical"]
                with psycopg.connect(neon.pg.dsn(), autocommit=True) as conn:
                    with neon.cluster.no_connections(conn, db["physical"]):
                        conn.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(db["physical"]), sql.Identifier(physical)
                            )
                        )
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                            sql.Identifier(physical)
                        )
                    )
                db.update(name=new, physical=physical)
            db["updated_at"] = now()
            out = {
                "database": shapes.database_json(branch_id, db),
                "operations": [self._finished("apply_config", branch_id)],
            }
            return out

    def delete_database(self, branch_id: str, name: str) -> dict[str, Any] | None:
        """Drop the database; None when the branch has no such database (Neon's 204)."""
        neon = self.neon
        with records.mutation(neon.store):
            branch = records.branch(neon.store, branch_id)
            neon.operations.check_unlocked(branch_id)
            db = next((d for d in branch["_databases"] if d["name"] == name), None)
            if db is None:
                return None
            self._execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(db["physical"])
                )
            )
            branch["_databases"].remove(db)
            out = {
                "database": shapes.database_json(branch_id, db),
                "operations": [self._finished("apply_config", branch_id)],
            }
            return out

    # -- roles (each branch its own; one PostgreSQL role per name for all the branches) ------

    def create_role(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = self._spec(body, "role")
        name = self._name(spec.get("name"), "role")
        login = not spec.get("no_login", False)
        neon = self.neon
        with records.mutation(neon.store):
            branch = records.branch(neon.store, branch_id)
            neon.operations.check_unlocked(branch_id)
            roles = records.roles(neon.store, branch)
            if name in roles:
                raise ApiError(409, f"role {name!r} already exists", ROLE_EXISTS)
            stamp = now()
            # One PostgreSQL role serves every branch with that name, so it can always log in;
            # the front door refuses a branch's no_login role (Neon's NOLOGIN, per branch).
            if name not in neon.store.roles:
                self._execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                        sql.Identifier(name),
                        sql.Literal(internal_password(neon.pg.password, name)),
                    )
                )
                neon.store.roles[name] = {"created_at": stamp}
            else:  # kept by an earlier delete (it owned objects) with its login taken away
                self._execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(name)))
            roles[name] = {"password": new_password(), "created_at": stamp}
            if not login:
                roles[name]["no_login"] = True
            out = {
                "role": self._role_json(branch, name, with_password=True),
                "operations": [self._finished("apply_config", branch_id)],
            }
            return out

    def delete_role(self, branch_id: str, name: str) -> dict[str, Any] | None:
        """Drop the role; None when there is no such role (Neon's 204)."""
        neon = self.neon
        with records.mutation(neon.store):
            branch = records.branch(neon.store, branch_id)
            roles = records.roles(neon.store, branch)
            if name not in roles:
                return None
            neon.operations.check_unlocked(branch_id)
            owned = [db["name"] for db in branch["_databases"] if db["owner_name"] == name]
            if owned:
                raise ApiError(422, f"role {name} owns databases: {', '.join(sorted(owned))}")
            out = {
                "role": self._role_json(branch, name),
                "operations": [self._finished("apply_config", branch_id)],
            }
            del roles[name]
            if any(name in records.roles(neon.store, b) for b in records.live_branches(neon.store)):
                return out  # other branches have it: PostgreSQL's role stays
            neon.store.roles.pop(name, None)
        # Objects it owns in some branch keep it in PostgreSQL; it can log in nowhere then.
        try:
            self._execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        except ApiError:
            self._execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
            with records.mutation(neon.store):  # still there: a role made again takes it back
                neon.store.roles.setdefault(name, {"created_at": now()})
        return out

    def reset_password(self, branch_id: str, name: str) -> dict[str, Any]:
        neon = self.neon
        with records.mutation(neon.store):
            branch = records.branch(neon.store, branch_id)
            role = records.roles(neon.store, branch).get(name)
            if role is None:
                raise not_found(f"role {name}")
            neon.operations.check_unlocked(branch_id)
            role.update(password=new_password(), updated_at=now())
            out = {
                "role": self._role_json(branch, name, with_password=True),
                "operations": [self._finished("apply_config", branch_id)],
            }
            return out

    # -- endpoints ---------------------------------------------------------------------------

    def update_endpoint(self, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = self._spec(body, "endpoint")
        neon = self.neon
        with records.mutation(neon.store):
            endpoint = records.endpoint(neon.store, endpoint_id)
            target = spec.get("branch_id", endpoint["branch_id"])
            if target != endpoint["branch_id"]:
                records.branch(neon.store, target)
                if endpoint["type"] == "read_write" and records.read_write_endpoint(
                    neon.store, target
                ):
                    raise ApiError(409, f"branch {target} already has a read_write endpoint")
            for key in ("disabled", "passwordless_access", "pooler_enabled"):
                if key in spec and not isinstance(spec[key], bool):
                    raise ApiError(400, f"{key} must be a boolean")
            for key in _ENDPOINT_FIELDS:
                if key in spec:
                    endpoint[key] = spec[key]
            endpoint.update(branch_id=target, updated_at=now())
            out = {
                "endpoint": neon.computes.endpoint_json(endpoint),
                "operations": [self._finished("apply_config", target, endpoint_id)],
            }
            return out

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        """Delete the endpoint; None when there is no such endpoint (Neon's 204)."""
        neon = self.neon
        with records.mutation(neon.store):
            endpoint = neon.store.endpoints.get(endpoint_id)
            if endpoint is None:
                return None
            del neon.store.endpoints[endpoint_id]
            neon.computes.release([endpoint_id])
            out = {
                "endpoint": neon.computes.endpoint_json(endpoint),
                "operations": [
                    self._finished("suspend_compute", endpoint["branch_id"], endpoint_id)
                ],
            }
            return out

    def restart_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        neon = self.neon
        with records.mutation(neon.store):
            endpoint = records.endpoint(neon.store, endpoint_id)
            endpoint.update(current_state="active", started_at=now(), updated_at=now())
            ops = [
                self._finished(action, endpoint["branch_id"], endpoint_id)
                for action in ("suspend_compute", "start_compute")
            ]
            return {"endpoint": neon.computes.endpoint_json(endpoint), "operations": ops}


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _answer(result: dict[str, Any] | None) -> Response | tuple[str, int]:
    return ("", 204) if result is None else jsonify(result)


def register(api: Blueprint, neon: LocalNeon) -> None:
    """The routes of these calls, on the API's blueprint."""
    objects = Objects(neon)
    branch = f"{PROJECT}/branches/<branch_id>"

    @api.post(f"{branch}/databases")
    def create_database(branch_id: str) -> tuple[Response, int]:
        return jsonify(objects.create_database(branch_id, _body())), 201

    @api.patch(f"{branch}/databases/<name>")
    def update_database(branch_id: str, name: str) -> Response:
        return jsonify(objects.update_database(branch_id, name, _body()))

    @api.delete(f"{branch}/databases/<name>")
    def delete_database(branch_id: str, name: str) -> Response | tuple[str, int]:
        return _answer(objects.delete_database(branch_id, name))

    @api.post(f"{branch}/roles")
    def create_role(branch_id: str) -> tuple[Response, int]:
        return jsonify(objects.create_role(branch_id, _body())), 201

    @api.delete(f"{branch}/roles/<name>")
    def delete_role(branch_id: str, name: str) -> Response | tuple[str, int]:
        return _answer(objects.delete_role(branch_id, name))

    @api.post(f"{branch}/roles/<name>/reset_password")
    def reset_password(branch_id: str, name: str) -> Response:
        return jsonify(objects.reset_password(branch_id, name))

    @api.post(f"{branch}/roles/<name>/reveal_password")
    def reveal_password_post(branch_id: str, name: str) -> Response:
        # An official SDK sends POST; Neon answers it as GET.
        return jsonify(neon.computes.reveal_password(branch_id, name))

    @api.patch(f"{PROJECT}/endpoints/<endpoint_id>")
    def update_endpoint(endpoint_id: str) -> Response:
        return jsonify(objects.update_endpoint(endpoint_id, _body()))

    @api.delete(f"{PROJECT}/endpoints/<endpoint_id>")
    def delete_endpoint(endpoint_id: str) -> Response | tuple[str, int]:
        return _answer(objects.delete_endpoint(endpoint_id))

    @api.post(f"{PROJECT}/endpoints/<endpoint_id>/restart")
    def restart_endpoint(endpoint_id: str) -> Response:
        return jsonify(objects.restart_endpoint(endpoint_id))
