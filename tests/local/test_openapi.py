"""The local Neon's answers checked against Neon's own OpenAPI spec, path by path.

``tests/data/neon-api-v2.json`` is Neon's published API v2 spec (OpenAPI 3.0.3). Each response's
body is validated with ``jsonschema`` against the schema the spec gives for that path, method
and status (errors against ``default``: ``GeneralError``), so every field the spec marks
required is there with the right type and format, as strict clients (the official SDKs,
``neonctl``) expect.
"""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from psycopg import sql
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from neonflow.local.service import LocalNeonInfo

SPEC_FILE = Path(__file__).parents[1] / "data" / "neon-api-v2.json"
BASE_URI = "urn:neon-api-v2"
P = "/projects/{project_id}"
B = f"{P}/branches/{{branch_id}}"
E = f"{P}/endpoints/{{endpoint_id}}"

# Every path and method the local Neon serves (and the tests below must validate in success).
SERVED = {
    ("GET", "/projects"),
    ("GET", "/projects/shared"),
    ("GET", "/users/me"),
    ("GET", P),
    ("GET", f"{P}/branches"),
    ("POST", f"{P}/branches"),
    ("GET", f"{P}/branches/count"),
    ("GET", B),
    ("PATCH", B),
    ("DELETE", B),
    ("POST", f"{B}/set_as_default"),
    ("POST", f"{B}/restore"),
    ("GET", f"{B}/schema"),
    ("GET", f"{B}/compare_schema"),
    ("GET", f"{B}/endpoints"),
    ("GET", f"{P}/endpoints"),
    ("POST", f"{P}/endpoints"),
    ("GET", E),
    ("POST", f"{E}/start"),
    ("POST", f"{E}/suspend"),
    ("GET", f"{B}/databases"),
    ("GET", f"{B}/databases/{{database_name}}"),
    ("GET", f"{B}/roles"),
    ("GET", f"{B}/roles/{{role_name}}"),
    ("GET", f"{B}/roles/{{role_name}}/reveal_password"),
    ("GET", f"{P}/connection_uri"),
    ("GET", f"{P}/operations"),
    ("GET", f"{P}/operations/{{operation_id}}"),
}


# -- OpenAPI 3.0 -> JSON Schema 2020-12 --------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties")
_DROPPED = ("nullable", "discriminator", "example", "examples", "xml", "externalDocs")


def to_json_schema(node: Any) -> Any:
    """Rewrite a spec document so ``jsonschema`` reads its schemas as OpenAPI 3.0 means them.

    ``nullable: true`` becomes a ``null`` alternative; local ``$ref`` s point into the registered
    document; OpenAPI-only keywords go. Keys under ``properties`` are names, not keywords (the
    spec has a property called ``nullable``).
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = BASE_URI + value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: to_json_schema(schema) for name, schema in value.items()}
        elif key in ("enum", "default", "const"):
            out[key] = value  # values, not schemas
        elif key in _DROPPED or key.startswith("x-"):
            continue
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable") is True:
        if "type" in out and "$ref" not in out and "allOf" not in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker(["uuid", "email"])


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def _int_range(low: int, high: int) -> Any:
    def check(value: object) -> bool:
        return not isinstance(value, int) or isinstance(value, bool) or low <= value < high

    return check


FORMATS.checks("int32")(_int_range(-(2**31), 2**31))
FORMATS.checks("int64")(_int_range(-(2**63), 2**63))
FORMATS.checks("uint64")(_int_range(0, 2**64))


class Spec:
    """The saved spec, ready to validate bodies by component name or by path/method/status."""

    def __init__(self, path: Path) -> None:
        self.raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.doc: dict[str, Any] = to_json_schema(self.raw)
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)

    def problems(self, schema: Any, instance: Any) -> list[str]:
        validator = Draft202012Validator(schema, registry=self.registry, format_checker=FORMATS)
        return sorted(
            f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(instance)
        )

    def component(self, name: str) -> dict[str, str]:
        return {"$ref": f"{BASE_URI}#/components/schemas/{name}"}

    def response_problems(self, method: str, template: str, response: httpx.Response) -> list[str]:
        operation = self.doc["paths"][template][method.lower()]
        declared = operation["responses"]
        status = response.status_code
        entry = declared.get(str(status))
        if entry is None:
            if status < 400:
                return [f"{status} is not a documented answer of {method} {template}"]
            entry = declared["default"]
        if "$ref" in entry:
            entry = self.doc["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
        content = entry.get("content")
        if content is None:
            return [] if not response.content else [f"{status} has no body in the spec"]
        if not response.headers.get("content-type", "").startswith("application/json"):
            return [f"content-type {response.headers.get('content-type')!r}, not JSON"]
        return self.problems(content["application/json"]["schema"], response.json())


@functools.cache
def spec() -> Spec:
    return Spec(SPEC_FILE)


# -- a client that checks every answer ---------------------------------------------------------


class Checked:
    """Raw HTTP to the local Neon; each answer must have the expected status and match the spec."""

    def __init__(self, info: LocalNeonInfo, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self.http = httpx.Client(base_url=info.api_host, headers=headers, timeout=60)
        self.project_id = info.project_id
        self.seen: set[tuple[str, str]] = set()

    def __call__(
        self,
        method: str,
        template: str,
        status: int,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        **path: str,
    ) -> Any:
        path.setdefault("project_id", self.project_id)
        url = template.format(**path)
        headers = {"Content-Type": "application/json"} if content is not None else None
        response = self.http.request(
            method, url, params=params, json=body, content=content, headers=headers
        )
        assert response.status_code == status, (method, url, response.status_code, response.text)
        problems = spec().response_problems(method, template, response)
        assert not problems, f"{method} {url} -> {status}: {problems}"
        if status >= 400:
            assert response.json()["code"], f"{method} {url} -> {status}: an empty code"
        if status < 300:
            self.seen.add((method, template))
        return response.json() if response.content else None

    def wait(self, operations: list[dict[str, Any]]) -> None:
        for op in operations:
            deadline = time.monotonic() + 120
            while True:
                got = self("GET", f"{P}/operations/{{operation_id}}", 200, operation_id=op["id"])
                if got["operation"]["status"] not in ("scheduling", "running"):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert got["operation"]["status"] == "finished", got

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def checked(local_neon: LocalNeonInfo) -> Iterator[Checked]:
    client = Checked(local_neon, local_neon.token)
    yield client
    client.close()


def unique(prefix: str = "oas") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the spec and the validator themselves -----------------------------------------------------


def test_the_saved_spec_is_neons_api_v2():
    raw = spec().raw
    assert raw["openapi"].startswith("3.0")
    assert raw["info"]["version"] == "v2"
    assert raw["servers"][0]["url"] == "https://console.neon.tech/api/v2"
    missing = {(m, t) for m, t in SERVED if m.lower() not in raw["paths"].get(t, {})}
    assert not missing, f"paths served locally but not in the spec: {missing}"


def test_the_validator_rejects_what_a_strict_client_would():
    s = spec()
    branch = {
        "id": "br-misty-sea-a5833nbi",
        "project_id": "shiny-wind-028834",
        "name": "main",
        "current_state": "ready",
        "state_changed_at": "2026-05-01T12:00:00Z",
        "creation_source": "console",
        "created_at": "2026-05-01T12:00:00Z",
        "updated_at": "2026-05-01T12:00:00Z",
        "default": True,
        "protected": False,
        "cpu_used_sec": 0,
        "active_time_seconds": 0,
        "compute_time_seconds": 0,
        "written_data_bytes": 0,
        "data_transfer_bytes": 0,
    }
    assert s.problems(s.component("Branch"), branch) == []
    assert s.problems(s.component("Branch"), {**branch, "expires_at": None}) != []
    missing = {k: v for k, v in branch.items() if k != "default"}
    assert s.problems(s.component("Branch"), missing) == [
        "(root): 'default' is a required property"
    ]
    assert s.problems(s.component("Branch"), {**branch, "cpu_used_sec": "0"})
    assert s.problems(s.component("Branch"), {**branch, "created_at": "yesterday"})
    assert s.problems(s.component("Branch"), {**branch, "created_at": "2026-05-01 12:00"})
    # nested references: an operation inside a BranchOperations needs its own required fields
    ops = {"branch": branch, "operations": [{"id": str(uuid.uuid4()), "action": "x"}]}
    assert any(
        p.startswith("operations/0") for p in s.problems(s.component("BranchOperations"), ops)
    )
    assert s.problems(s.component("Operation"), {"id": "not-a-uuid"})
    # nullable: expires_at may be null in an update request, a name may not
    assert s.problems(s.component("BranchUpdateRequest"), {"branch": {"expires_at": None}}) == []
    assert s.problems(s.component("BranchUpdateRequest"), {"branch": {"name": None}}) != []
    data_api = {"url": "https://x", "status": "y", "available_schemas": None}
    assert s.problems(s.component("DataAPIReponse"), {**data_api, "settings": None}) == []
    assert s.problems(s.component("DataAPIReponse"), {**data_api, "settings": "on"}) != []
    assert s.problems(s.component("DataAPIReponse"), {**data_api, "url": None}) != []
    assert s.problems(s.component("GeneralError"), {"message": "m"}) == [
        "(root): 'code' is a required property"
    ]


# -- every path in success ---------------------------------------------------------------------


def test_every_served_path_answers_as_the_spec_says(checked: Checked):
    call = checked
    call("GET", "/projects", 200)
    assert call("GET", "/projects/shared", 200)["projects"] == []
    assert call("GET", "/users/me", 200)["id"]  # neonctl me, the SDKs' me()
    project = call("GET", P, 200)["project"]
    call("GET", f"{P}/branches", 200)
    listed = call("GET", f"{P}/branches", 200, params={"sort_by": "name", "limit": 1})
    assert listed["pagination"]["sort_by"] == "name"
    call("GET", f"{P}/branches/count", 200, params={"search": "main"})
    main = next(b for b in call("GET", f"{P}/branches", 200)["branches"] if b["default"])

    created = call(
        "POST",
        f"{P}/branches",
        201,
        body={
            "branch": {"name": unique(), "parent_id": main["id"]},
            "endpoints": [{"type": "read_write"}],
            "annotation_value": {"neonflow": "true"},
        },
    )
    branch_id = created["branch"]["id"]
    endpoint_id = created["endpoints"][0]["id"]
    assert created["branch"]["current_state"] == "init"  # validated in its busy state too
    call.wait(created["operations"])
    try:
        got = call("GET", B, 200, branch_id=branch_id)
        assert got["annotation"]["value"] == {"neonflow": "true"}
        call("PATCH", B, 200, branch_id=branch_id, body={"branch": {"name": unique()}})
        expiring = call(
            "PATCH", B, 200, branch_id=branch_id, body={"branch": {"expires_at": tomorrow()}}
        )
        assert expiring["branch"]["expires_at"]
        call("PATCH", B, 200, branch_id=branch_id, body={"branch": {"expires_at": None}})

        call("GET", f"{B}/schema", 200, branch_id=branch_id, params={"db_name": "neondb"})
        call("GET", f"{B}/compare_schema", 200, branch_id=branch_id, params={"db_name": "neondb"})

        call("GET", f"{B}/endpoints", 200, branch_id=branch_id)
        call("GET", f"{P}/endpoints", 200)
        call("GET", E, 200, endpoint_id=endpoint_id)
        call.wait(call("POST", f"{E}/suspend", 200, endpoint_id=endpoint_id)["operations"])
        assert call("GET", E, 200, endpoint_id=endpoint_id)["endpoint"]["current_state"] == "idle"
        call.wait(call("POST", f"{E}/start", 200, endpoint_id=endpoint_id)["operations"])
        spec_ep = {"endpoint": {"branch_id": branch_id, "type": "read_only"}}
        call.wait(call("POST", f"{P}/endpoints", 201, body=spec_ep)["operations"])

        call("GET", f"{B}/databases", 200, branch_id=branch_id)
        call(
            "GET",
            f"{B}/databases/{{database_name}}",
            200,
            branch_id=branch_id,
            database_name="neondb",
        )
        call("GET", f"{B}/roles", 200, branch_id=branch_id)
        role = {"branch_id": branch_id, "role_name": "neondb_owner"}
        call("GET", f"{B}/roles/{{role_name}}", 200, **role)
        call("GET", f"{B}/roles/{{role_name}}/reveal_password", 200, **role)
        query = {"branch_id": branch_id, "database_name": "neondb", "role_name": "neondb_owner"}
        call("GET", f"{P}/connection_uri", 200, params=query)
        call("GET", f"{P}/connection_uri", 200, params={**query, "pooled": "true"})

        ops = call("GET", f"{P}/operations", 200, params={"limit": 5})
        call("GET", f"{P}/operations", 200, params={"cursor": ops["pagination"]["cursor"]})

        restored = call(
            "POST", f"{B}/restore", 200, branch_id=branch_id, body={"source_branch_id": main["id"]}
        )
        call.wait(restored["operations"])
        # the default branch asked to become the default: a no-op that still answers in shape
        assert call("POST", f"{B}/set_as_default", 200, branch_id=main["id"])["branch"]["default"]

        bare = call("POST", f"{P}/branches", 201)  # no body at all
        call.wait(bare["operations"])
        call.wait(call("DELETE", B, 200, branch_id=bare["branch"]["id"])["operations"])
        schema_only = call(
            "POST",
            f"{P}/branches",
            201,
            body={"branch": {"name": unique(), "init_source": "schema-only"}},
        )
        call.wait(schema_only["operations"])
        call.wait(call("DELETE", B, 200, branch_id=schema_only["branch"]["id"])["operations"])
    finally:
        deleted = call("DELETE", B, 200, branch_id=branch_id)
        call.wait(deleted["operations"])
    call("DELETE", B, 204, branch_id=branch_id)
    assert project["id"] == checked.project_id
    assert SERVED <= checked.seen, f"not validated: {sorted(SERVED - checked.seen)}"


# -- errors ------------------------------------------------------------------------------------


def test_error_answers_are_general_errors(local_neon: LocalNeonInfo, checked: Checked):
    call = checked
    main = next(b for b in call("GET", f"{P}/branches", 200)["branches"] if b["default"])
    for token in (None, "wrong"):
        anonymous = Checked(local_neon, token)
        anonymous("GET", "/projects", 401)
        anonymous("POST", f"{P}/branches", 401, body={})
        anonymous.close()

    call("GET", P, 404, project_id="no-such-project")
    call("GET", f"{P}/branches", 404, project_id="no-such-project")
    call("GET", B, 404, branch_id="br-nope")
    call("GET", E, 404, endpoint_id="ep-nope")
    call("GET", f"{P}/operations/{{operation_id}}", 404, operation_id=str(uuid.uuid4()))
    call(
        "GET", f"{B}/roles/{{role_name}}/reveal_password", 404, branch_id=main["id"], role_name="x"
    )
    call("GET", f"{B}/databases/{{database_name}}", 404, branch_id=main["id"], database_name="x")
    call("POST", f"{B}/restore", 404, branch_id="br-nope", body={"source_branch_id": main["id"]})

    call("GET", f"{P}/branches", 400, params={"limit": 0})
    call("GET", f"{P}/branches", 400, params={"cursor": "garbage"})
    call("GET", f"{P}/operations", 400, params={"limit": 5000})
    call("POST", f"{P}/branches", 400, content=b"{broken")
    call("POST", f"{P}/branches", 400, body={"branch": {"expires_at": "2001-01-01T00:00:00Z"}})
    call("POST", f"{P}/branches", 400, body={"branch": {"parent_lsn": "0/1DE2850"}})
    call("PATCH", B, 400, branch_id=main["id"], body={"branch": {"expires_at": tomorrow()}})
    call("POST", f"{B}/restore", 400, branch_id=main["id"], body={})
    call("GET", f"{B}/schema", 400, branch_id=main["id"])
    point = {"db_name": "neondb", "lsn": "0/1DE2850", "base_branch_id": main["id"]}
    call("GET", f"{B}/compare_schema", 400, branch_id=main["id"], params=point)
    call("GET", f"{P}/connection_uri", 400)
    call("POST", f"{P}/endpoints", 400, body={"endpoint": {}})

    call("POST", f"{P}/branches", 409, body={"branch": {"name": main["name"]}})
    call(
        "POST",
        f"{P}/endpoints",
        409,
        body={"endpoint": {"branch_id": main["id"], "type": "read_write"}},
    )
    call("DELETE", B, 422, branch_id=main["id"])


def test_the_busy_state_and_423_match_the_spec(checked: Checked):
    call = checked
    parent = call(
        "POST",
        f"{P}/branches",
        201,
        body={"branch": {"name": unique()}, "endpoints": [{"type": "read_write"}]},
    )
    call.wait(parent["operations"])
    parent_id = parent["branch"]["id"]
    uri = parent["connection_uris"][0]["connection_uri"]
    # An open ALTER DATABASE on the parent keeps the copy (and so the child's operation) running.
    hold = psycopg.connect(uri)
    try:
        row = hold.execute("SELECT current_database()").fetchone()  # the physical name
        assert row is not None
        name = str(row[0])
        hold.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT -1").format(sql.Identifier(name)))
        child = call(
            "POST",
            f"{P}/branches",
            201,
            body={"branch": {"name": unique(), "parent_id": parent_id}},
        )
        child_id = child["branch"]["id"]
        op_id = child["operations"][0]["id"]
        deadline = time.monotonic() + 30
        path = f"{P}/operations/{{operation_id}}"
        while call("GET", path, 200, operation_id=op_id)["operation"]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert call("GET", B, 200, branch_id=child_id)["branch"]["pending_state"] == "ready"
        call("PATCH", B, 423, branch_id=child_id, body={"branch": {"name": unique()}})
        call("DELETE", B, 423, branch_id=child_id)
    finally:
        hold.rollback()
        hold.close()
    call.wait(child["operations"])
    call.wait(call("DELETE", B, 200, branch_id=child_id)["operations"])
    call.wait(call("DELETE", B, 200, branch_id=parent_id)["operations"])
