"""The local Neon's HTTP face: Neon API v2 paths and bodies, as a Flask app.

Every answer is JSON; errors use Neon's ``{code, message, request_id}``, with a code that names
the case (see ``errors``), routing-level answers (404, 405, 413) included. Requests need
``Authorization: Bearer <token>``. Fault mode (tests and demos) may answer 429/423/503, add latency
or drop the connection, before or after the request did its work.
"""

from __future__ import annotations

import errno
import hmac
import json
import random
import socket
import time
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from neonflow.config import FaultSettings
from neonflow.local.account import register as register_account
from neonflow.local.engine import LocalNeon
from neonflow.local.errors import ApiError, code_for
from neonflow.local.objects import register as register_objects
from neonflow.local.validation import refuse_point_in_time

PROJECT = "/api/v2/projects/<project_id>"
# Neon's request bodies are a few kilobytes (a branch, its endpoints, 50 annotation strings).
MAX_BODY_BYTES = 1024 * 1024
# Neon's bodies nest a handful of levels; deeper JSON is an attack, not a request.
MAX_BODY_DEPTH = 32


class DropConnection(Exception):
    """Raised by fault mode: close the socket without an answer."""


def create_api(neon: LocalNeon, token: str) -> Flask:
    app = Flask("neonflow.local")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # larger bodies get a 413
    faults = _Faults(neon.faults)
    app.extensions["neonflow.faults"] = faults
    api = Blueprint("neon", __name__)

    @api.url_value_preprocessor
    def _take_project(endpoint: str | None, values: dict[str, Any] | None) -> None:
        if values is not None and "project_id" in values:
            g.project_id = values.pop("project_id")

    @api.before_request
    def _check_project() -> None:
        # Every path under /projects/<project_id> (after authentication, which the app's own
        # before_request does first): one project here, any other is a 404.
        if "project_id" in g:
            neon.check_project(g.project_id)

    @app.before_request
    def _before() -> Response | tuple[Response, int] | None:
        g.request_id = request.headers.get("X-Request-ID") or str(uuid.uuid4())
        if request.path == "/healthz":
            return None
        scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
        # RFC 7235: the scheme is case-insensitive.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            supplied.strip().encode(), token.encode()
        ):
            return _error(401, "authentication required: send Authorization: Bearer <token>")
        if request.path.startswith("/api/v2/_local"):
            return None
        return faults.before(request.method)

    @app.after_request
    def _after(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if request.path.startswith("/api/v2/_local") or request.path == "/healthz":
            return response
        faults.after(request.method)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return _error(exc.status, exc.message, exc.code)

    @app.errorhandler(OSError)
    def _disk_error(exc: OSError) -> tuple[Response, int]:
        # A file the change needs (a certificate, say) cannot be written: the change was
        # undone with the request, as for state.json itself.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            return _error(
                503,
                f"cannot write {exc.filename or 'the state folder'}: {exc.strerror}; nothing was "
                "changed: free space there and retry",
            )
        raise exc

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        if exc.code == 413:
            return _error(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        return _error(exc.code or 500, exc.description or exc.name)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "project_id": neon.project_id})

    # -- projects --

    @api.get("/api/v2/projects")
    def list_projects() -> Response:
        # One project; the cursor (required, non-empty) is its id, and asking past it ends the list.
        cursor = request.args.get("cursor")
        projects = [] if cursor == neon.project_id else [neon.project()]
        return jsonify(
            {
                "projects": projects,
                "pagination": {"cursor": neon.project_id},
                "applications": {},
                "integrations": {},
            }
        )

    @api.get("/api/v2/projects/shared")
    def list_shared_projects() -> Response:
        # Nothing is shared with anyone locally; neonctl's `projects list` asks all the same.
        return jsonify({"projects": [], "pagination": {"cursor": neon.project_id}})

    @api.get(PROJECT)
    def get_project() -> Response:
        return jsonify({"project": neon.project()})

    # -- branches --

    @api.get(f"{PROJECT}/branches")
    def list_branches() -> Response:
        args = request.args
        _bool_arg("include_deleted")  # deleted branches are gone locally; the flag is checked
        return jsonify(
            neon.branches.page(
                search=args.get("search") or None,
                sort_by=args.get("sort_by", "updated_at"),
                sort_order=args.get("sort_order", "desc"),
                limit=_int_arg("limit"),
                cursor=args.get("cursor") or None,
            )
        )

    @api.get(f"{PROJECT}/branches/count")
    def count_branches() -> Response:
        found = neon.branches.page(search=request.args.get("search") or None)
        return jsonify({"count": len(found["branches"])})

    @api.post(f"{PROJECT}/branches")
    def create_branch() -> tuple[Response, int]:
        return jsonify(neon.branches.create(_body(optional=True))), 201

    @api.get(f"{PROJECT}/branches/<branch_id>")
    def get_branch(branch_id: str) -> Response:
        return jsonify(neon.branches.get(branch_id))

    @api.patch(f"{PROJECT}/branches/<branch_id>")
    def update_branch(branch_id: str) -> Response:
        return jsonify(neon.branches.update(branch_id, _body()))

    @api.delete(f"{PROJECT}/branches/<branch_id>")
    def delete_branch(branch_id: str) -> Response | tuple[str, int]:
        result = neon.branches.delete(branch_id)
        return ("", 204) if result is None else jsonify(result)

    # set_as_primary is the older name, which neon-api's branch_set_as_primary() still calls.
    @api.post(f"{PROJECT}/branches/<branch_id>/set_as_primary")
    @api.post(f"{PROJECT}/branches/<branch_id>/set_as_default")
    def set_default(branch_id: str) -> Response:
        return jsonify(neon.branches.set_default(branch_id))

    @api.post(f"{PROJECT}/branches/<branch_id>/restore")
    def restore(branch_id: str) -> Response:
        return jsonify(neon.restores.restore(branch_id, _body()))

    @api.get(f"{PROJECT}/branches/<branch_id>/schema")
    def schema(branch_id: str) -> Response:
        refuse_point_in_time(request.args, "lsn", "timestamp")
        return jsonify(neon.computes.schema(branch_id, request.args.get("db_name")))

    @api.get(f"{PROJECT}/branches/<branch_id>/compare_schema")
    def compare_schema(branch_id: str) -> Response:
        refuse_point_in_time(request.args, "lsn", "timestamp", "base_lsn", "base_timestamp")
        return jsonify(
            neon.computes.compare_schema(
                branch_id, request.args.get("db_name"), request.args.get("base_branch_id")
            )
        )

    # -- endpoints --

    @api.get(f"{PROJECT}/branches/<branch_id>/endpoints")
    def branch_endpoints(branch_id: str) -> Response:
        return jsonify(neon.computes.list_endpoints(branch_id))

    @api.get(f"{PROJECT}/endpoints")
    def project_endpoints() -> Response:
        return jsonify(neon.computes.list_endpoints())

    @api.post(f"{PROJECT}/endpoints")
    def create_endpoint() -> tuple[Response, int]:
        return jsonify(neon.computes.create_endpoint(_body())), 201

    @api.get(f"{PROJECT}/endpoints/<endpoint_id>")
    def get_endpoint(endpoint_id: str) -> Response:
        return jsonify(neon.computes.get_endpoint(endpoint_id))

    @api.post(f"{PROJECT}/endpoints/<endpoint_id>/<any(start, suspend):action>")
    def endpoint_action(endpoint_id: str, action: str) -> Response:
        return jsonify(neon.computes.endpoint_action(endpoint_id, action))

    # -- databases, roles, connection strings --

    @api.get(f"{PROJECT}/branches/<branch_id>/databases")
    def databases(branch_id: str) -> Response:
        return jsonify(neon.computes.list_databases(branch_id))

    @api.get(f"{PROJECT}/branches/<branch_id>/databases/<name>")
    def database(branch_id: str, name: str) -> Response:
        return jsonify(neon.computes.get_database(branch_id, name))

    @api.get(f"{PROJECT}/branches/<branch_id>/roles")
    def roles(branch_id: str) -> Response:
        return jsonify(neon.computes.list_roles(branch_id))

    @api.get(f"{PROJECT}/branches/<branch_id>/roles/<name>")
    def role(branch_id: str, name: str) -> Response:
        return jsonify(neon.computes.get_role(branch_id, name))

    @api.get(f"{PROJECT}/branches/<branch_id>/roles/<name>/reveal_password")
    def reveal_password(branch_id: str, name: str) -> Response:
        return jsonify(neon.computes.reveal_password(branch_id, name))

    @api.get(f"{PROJECT}/connection_uri")
    def connection_uri() -> Response:
        args = request.args
        return jsonify(
            neon.computes.connection_uri(
                args.get("branch_id") or None,
                args.get("database_name"),
                args.get("role_name"),
                pooled=_bool_arg("pooled"),
                endpoint_id=args.get("endpoint_id") or None,
            )
        )

    # -- operations --

    @api.get(f"{PROJECT}/operations")
    def operations() -> Response:
        return jsonify(neon.operations.page(_int_arg("limit"), request.args.get("cursor") or None))

    @api.get(f"{PROJECT}/operations/<operation_id>")
    def operation(operation_id: str) -> Response:
        return jsonify(neon.operations.get(operation_id))

    # -- local administration (not part of Neon's API) --

    @api.get("/api/v2/_local/faults")
    def get_faults() -> Response:
        return jsonify(faults.settings.model_dump())

    @api.put("/api/v2/_local/faults")
    def put_faults() -> Response:
        try:
            faults.settings = FaultSettings.model_validate(_body())
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(part) for part in err["loc"]) or "body"
            raise ApiError(400, f"bad fault setting {field}: {err['msg']}") from None
        faults.random = random.Random(faults.settings.seed)
        neon.faults = faults.settings
        return jsonify(faults.settings.model_dump())

    register_objects(api, neon)
    register_account(api, neon)
    app.register_blueprint(api)
    return app


def _error(status: int, message: str, code: str | None = None) -> tuple[Response, int]:
    """Neon's error body; ``code`` defaults to the status's own (never empty)."""
    body = {
        "code": code or code_for(status),
        "message": message,
        "request_id": g.get("request_id", ""),
    }
    response = jsonify(body)
    if status == 429:
        response.headers["Retry-After"] = "1"
    return response, status


def _body(optional: bool = False) -> dict[str, Any]:
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH this raises the 413
    if not raw and optional:
        return {}
    if not request.is_json:
        raise ApiError(400, "request body must be a JSON object (Content-Type: application/json)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, f"request body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    if _depth(data) > MAX_BODY_DEPTH:
        raise ApiError(400, f"request body nests deeper than {MAX_BODY_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (iteratively: the point is to survive hostile input)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_BODY_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


# Neon reads query booleans as Go's strconv.ParseBool: neon-api (Python) sends "True"/"False".
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _bool_arg(name: str) -> bool:
    raw = request.args.get(name, "false")
    if raw not in _TRUE + _FALSE:
        raise ApiError(400, f"{name} must be true or false")
    return raw in _TRUE


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None


class _Faults:
    """Fault injection, decided per request from the configured rates."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)

    def before(self, method: str) -> tuple[Response, int] | None:
        s = self.settings
        if not s.enabled:
            return None
        if s.latency_ms:
            time.sleep(self.random.uniform(0, s.latency_ms) / 1000)
        roll = self.random.random()
        for status, rate in ((429, s.rate_429), (423, s.rate_423), (503, s.rate_503)):
            if roll < rate:
                messages: dict[int, str] = {
                    429: "rate limit exceeded (fault mode)",
                    423: "project is locked by another operation (fault mode)",
                    503: "service unavailable (fault mode)",
                }
                return _error(status, messages[status])
            roll -= rate
        # A drop before the work: the request never took effect.
        if self.random.random() < s.rate_drop / 2:
            _drop()
        return None

    def after(self, method: str) -> None:
        # A drop after the work: the request took effect but the client never hears of it.
        if self.settings.rate_drop and self.random.random() < self.settings.rate_drop / 2:
            _drop()


def _drop() -> None:
    sock = request.environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise DropConnection()
