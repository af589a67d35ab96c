"""Every error answer of the local Neon is Neon's error body, with a code that names the case.

Neon answers errors with ``GeneralError`` (``{code, message, request_id}``). The spec's
``ErrorCode`` is a bare string with no list of values, and Neon cloud leaves it empty for many
errors; the local Neon never does. These tests walk the error cases over real HTTP, routing-level
answers (unknown path, wrong method, authentication, bad JSON, a body too big) included, and
check each answer's status, its code and its body against the spec.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from neonflow.local.service import LocalNeonInfo
from tests.local.test_openapi import spec

P = "/api/v2/projects/{p}"
B = f"{P}/branches/{{main}}"
JSON = {"Content-Type": "application/json"}


def server_root(info: LocalNeonInfo) -> str:
    return info.api_host.removesuffix("/api/v2")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is Neon's error body with ``status`` and ``code``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["message"] and body["request_id"], body
    s = spec()
    assert s.problems(s.component("GeneralError"), body) == [], body
    return body


@pytest.fixture(scope="module")
def http(local_neon: LocalNeonInfo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server_root(local_neon),
        headers={"Authorization": f"Bearer {local_neon.token}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def names(http: httpx.Client, local_neon: LocalNeonInfo) -> dict[str, str]:
    """What the path templates name: ``{p}`` the project, ``{main}`` its default branch."""
    branches = http.get(f"/api/v2/projects/{local_neon.project_id}/branches").json()["branches"]
    main = next(b["id"] for b in branches if b["default"])
    return {"p": local_neon.project_id, "main": main}


# (method, path, request keywords, status, code)
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # routing
    ("GET", "/elsewhere", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", "/api/v2/nowhere", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", f"{B}/nowhere", {}, 404, "RESOURCE_NOT_FOUND"),
    ("PUT", f"{P}/branches", {"json": {}}, 405, "METHOD_NOT_ALLOWED"),
    ("POST", B, {"json": {}}, 405, "METHOD_NOT_ALLOWED"),
    # what is not there
    ("GET", "/api/v2/projects/no-such-project", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", f"{P}/branches/br-nope", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", f"{P}/endpoints/ep-nope", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", f"{P}/operations/{uuid.uuid4()}", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", f"{B}/databases/nope", {}, 404, "RESOURCE_NOT_FOUND"),
    ("GET", f"{B}/roles/nope/reveal_password", {}, 404, "RESOURCE_NOT_FOUND"),
    # bodies and queries that are not what Neon takes
    ("POST", f"{P}/branches", {"content": b"{broken", "headers": JSON}, 400, "BAD_REQUEST"),
    ("POST", f"{P}/branches", {"content": b"[]", "headers": JSON}, 400, "BAD_REQUEST"),
    ("POST", f"{P}/branches", {"data": {"name": "x"}}, 400, "BAD_REQUEST"),
    ("POST", f"{P}/branches", {"json": {"branch": {"name": ""}}}, 400, "BAD_REQUEST"),
    ("PATCH", B, {"json": {"branch": {"protected": "yes"}}}, 400, "BAD_REQUEST"),
    ("GET", f"{P}/branches", {"params": {"limit": "many"}}, 400, "BAD_REQUEST"),
    ("GET", f"{P}/branches", {"params": {"sort_by": "size"}}, 400, "BAD_REQUEST"),
    ("GET", f"{P}/connection_uri", {}, 400, "BAD_REQUEST"),
    ("PUT", "/api/v2/_local/faults", {"json": {"latency_ms": -1}}, 400, "BAD_REQUEST"),
    (
        "POST",
        f"{P}/branches",
        {"json": {"annotation_value": {"big": "x" * (2 * 1024 * 1024)}}},
        413,
        "REQUEST_TOO_LARGE",
    ),
    # what the local Neon cannot do
    (
        "POST",
        f"{P}/branches",
        {"json": {"branch": {"parent_timestamp": "2026-01-01T00:00:00Z"}}},
        400,
        "FEATURE_NOT_SUPPORTED",
    ),
    (
        "GET",
        f"{B}/schema",
        {"params": {"db_name": "neondb", "lsn": "0/1DE2850"}},
        400,
        "FEATURE_NOT_SUPPORTED",
    ),
    (
        "POST",
        f"{P}/branches",
        {"json": {"branch": {"init_source": "import"}}},
        400,
        "FEATURE_NOT_SUPPORTED",
    ),
    # conflicts and refusals
    ("POST", f"{P}/branches", {"json": {"branch": {"name": "main"}}}, 409, "BRANCH_EXISTS"),
    (
        "POST",
        f"{B}/databases",
        {"json": {"database": {"name": "neondb", "owner_name": "neondb_owner"}}},
        409,
        "DATABASE_EXISTS",
    ),
    ("POST", f"{B}/roles", {"json": {"role": {"name": "neondb_owner"}}}, 409, "ROLE_EXISTS"),
    (
        "POST",
        f"{P}/endpoints",
        {"json": {"endpoint": {"branch_id": "{main}", "type": "read_write"}}},
        409,
        "CONFLICT",
    ),
    ("DELETE", B, {}, 422, "UNPROCESSABLE_ENTITY"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with ``{p}`` and ``{main}`` filled in, in strings and in JSON bodies."""
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("method", "path", "request_kw", "status", "code"),
    CASES,
    ids=[f"{status}-{method}-{path}" for method, path, _, status, _ in CASES],
)
def test_each_error_answer_carries_the_code_of_its_case(
    http: httpx.Client,
    names: dict[str, str],
    method: str,
    path: str,
    request_kw: dict[str, Any],
    status: int,
    code: str,
):
    kw = {k: _fill(v, names) if k == "json" else v for k, v in request_kw.items()}
    before = http.get(f"/api/v2/projects/{names['p']}/branches/count").json()["count"]
    assert_error(http.request(method, path.format(**names), **kw), status, code)
    after = http.get(f"/api/v2/projects/{names['p']}/branches/count").json()["count"]
    assert after == before, "a refused request changed nothing"


@pytest.mark.parametrize("token", [None, "wrong"])
@pytest.mark.parametrize("path", [f"{P}/branches", "/api/v2/nowhere", "/elsewhere"])
def test_authentication_comes_first_and_is_a_401(
    local_neon: LocalNeonInfo, names: dict[str, str], token: str | None, path: str
):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server_root(local_neon), headers=headers, timeout=60) as client:
        response = client.get(path.format(**names))
    assert_error(response, 401, "UNAUTHORIZED")


def test_fault_mode_answers_carry_the_code_of_their_status(fresh_neon: LocalNeonInfo):
    faults = f"{fresh_neon.api_host}/_local/faults"
    branches = f"{fresh_neon.api_host}/projects/{fresh_neon.project_id}/branches"
    with httpx.Client(
        headers={"Authorization": f"Bearer {fresh_neon.token}"}, timeout=60
    ) as client:
        for rate, status, code in (
            ("rate_429", 429, "TOO_MANY_REQUESTS"),
            ("rate_423", 423, "LOCKED"),
            ("rate_503", 503, "UNAVAILABLE"),
        ):
            assert client.put(faults, json={rate: 1.0}).status_code == 200
            response = client.get(branches)
            assert_error(response, status, code)
            if status == 429:
                assert response.headers["Retry-After"] == "1"
        assert client.put(faults, json={}).status_code == 200
        assert client.get(branches).status_code == 200
