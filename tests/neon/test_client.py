"""NeonClient against an in-memory Neon served through ``httpx.MockTransport``.

The fake keeps branches, endpoints and operations like Neon does and lets a test queue faults for
the next matching request: an error status, or a transport error raised before or after the
request was applied (the shapes a real network produces).
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import neonflow
from neonflow import errors
from neonflow.neon import UNSET, NeonClient, Operation
from neonflow.neon.retry import backoff_delay, retry_after

API_KEY = "napi_0123456789abcdefSECRETsecret"
HOST = "https://console.neon.tech/api/v2"
PROJECT = "shiny-wind-028834"
NOW = "2026-05-01T12:00:00Z"


@dataclass
class Fault:
    """What the fake does to the next request matching ``method`` and ``path`` (a regex)."""

    method: str
    path: str
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    before: Exception | None = None  # raised instead of applying the request
    after: Exception | None = None  # raised after applying it (the answer is lost)
    times: int = 1


class FakeNeon:
    """Just enough of Neon API v2 for the client: projects, branches, endpoints, operations."""

    def __init__(self, page_size: int = 100, next_on_last_page: bool = True) -> None:
        self.page_size = page_size
        self.next_on_last_page = next_on_last_page  # Neon sends `next` even on the last page
        self.branches: dict[str, dict[str, Any]] = {}
        self.annotations: dict[str, dict[str, str]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.polls_to_finish = 1  # operation GETs (of any operation) before each one ends
        self.final_status = "finished"
        self.faults: list[Fault] = []
        self.requests: list[httpx.Request] = []
        self._ids = itertools.count(1)
        self.main = self.add_branch("main", default=True)["id"]

    # -- state ---------------------------------------------------------------------------------

    def add_branch(
        self, name: str, *, default: bool = False, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        n = next(self._ids)
        branch: dict[str, Any] = {
            "id": f"br-test-{n:04d}",
            "project_id": PROJECT,
            "name": name,
            "current_state": "ready",
            "state_changed_at": NOW,
            "creation_source": "console",
            "created_at": NOW,
            "updated_at": NOW,
            "default": default,
            "protected": False,
            "cpu_used_sec": 0,
            "active_time_seconds": 0,
            "compute_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "some_future_field": {"ignored": True},
        }
        self.branches[branch["id"]] = branch
        if annotations:
            self.annotations[branch["id"]] = annotations
        return branch

    def named(self, name: str) -> list[dict[str, Any]]:
        return [b for b in self.branches.values() if b["name"] == name]

    def calls(self, method: str, pattern: str = "") -> int:
        return sum(
            1 for r in self.requests if r.method == method and re.search(pattern, r.url.path)
        )

    def _operation(self, action: str, branch_id: str, endpoint_id: str | None = None) -> Any:
        op: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "project_id": PROJECT,
            "branch_id": branch_id,
            "endpoint_id": endpoint_id,
            "action": action,
            "status": "running",
            "failures_count": 0,
            "created_at": NOW,
            "updated_at": NOW,
            "total_duration_ms": 0,
            "_polls": self.polls_to_finish,
        }
        self.operations[op["id"]] = op
        return op

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _annotation(self, branch_id: str) -> dict[str, Any]:
        return {
            "object": {"type": "console/branch", "id": branch_id},
            "value": self.annotations[branch_id],
            "created_at": NOW,
        }

    # -- HTTP ----------------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api/v2")
        fault = next(
            (f for f in self.faults if f.method == request.method and re.search(f.path, path)),
            None,
        )
        if fault is not None:
            fault.times -= 1
            if fault.times == 0:
                self.faults.remove(fault)
            if fault.before is not None:
                raise fault.before
            if fault.status is not None:
                return httpx.Response(fault.status, json=fault.body, headers=fault.headers)
        response = self._route(request, path)
        if fault is not None and fault.after is not None:
            raise fault.after
        return response

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        method, q = request.method, request.url.params
        body = json.loads(request.content) if request.content else {}
        p = f"/projects/{PROJECT}"
        if (method, path) == ("GET", "/projects"):
            return httpx.Response(200, json={"projects": [{"id": PROJECT, "name": "demo"}]})
        if (method, path) == ("GET", p):
            return httpx.Response(200, json={"project": {"id": PROJECT, "name": "demo"}})
        if (method, path) == ("GET", f"{p}/branches"):
            return self._list_branches(q)
        if (method, path) == ("POST", f"{p}/branches"):
            return self._create_branch(body)
        if (method, path) == ("GET", f"{p}/operations"):
            ops = [self._public(o) for o in reversed(self.operations.values())]
            return httpx.Response(200, json={"operations": ops, "pagination": {"cursor": "x"}})
        if m := re.fullmatch(rf"{p}/operations/([^/]+)", path):
            return self._poll(m[1])
        if m := re.fullmatch(rf"{p}/branches/([^/]+)(/endpoints)?", path):
            branch = self.branches.get(m[1])
            if method == "DELETE" and branch is None:
                return httpx.Response(204)
            if branch is None:
                return httpx.Response(404, json={"code": "", "message": "branch not found"})
            if m[2]:
                eps = [e for e in self.endpoints.values() if e["branch_id"] == m[1]]
                return httpx.Response(200, json={"endpoints": eps})
            if method == "PATCH":
                branch.update(body["branch"])
            if method == "DELETE":
                del self.branches[m[1]]
                op = self._operation("delete_timeline", m[1])
                return httpx.Response(200, json={"branch": branch, "operations": [op]})
            data: dict[str, Any] = {"branch": branch}
            if method == "GET" and m[1] in self.annotations:
                data["annotation"] = self._annotation(m[1])
            if method == "PATCH":
                data["operations"] = []
            return httpx.Response(200, json=data)
        return httpx.Response(404, json={"code": "", "message": f"no route {method} {path}"})

    def _list_branches(self, q: httpx.QueryParams) -> httpx.Response:
        found = [b for b in self.branches.values() if q.get("search", "") in b["name"] + b["id"]]
        start = int(q.get("cursor", "0"))
        size = int(q.get("limit", self.page_size))
        page = found[start : start + size]
        more = start + size < len(found)
        pagination = {"sort_by": "updated_at", "sort_order": "desc"}
        if more or (page and self.next_on_last_page):
            pagination["next"] = str(start + size)
        notes = {b["id"]: self._annotation(b["id"]) for b in page if b["id"] in self.annotations}
        return httpx.Response(
            200, json={"branches": page, "annotations": notes, "pagination": pagination}
        )

    def _create_branch(self, body: dict[str, Any]) -> httpx.Response:
        spec = body.get("branch", {})
        branch = self.add_branch(spec["name"], annotations=body.get("annotation_value"))
        branch.update(
            parent_id=spec.get("parent_id", self.main), current_state="init", pending_state="ready"
        )
        ops = [self._operation("create_timeline", branch["id"])]
        endpoints = []
        for ep in body.get("endpoints", []):
            eid = f"ep-test-{next(self._ids):04d}"
            endpoint = {
                "id": eid,
                "project_id": PROJECT,
                "branch_id": branch["id"],
                "host": f"{eid}.us-east-2.aws.neon.tech",
                "type": ep["type"],
                "current_state": "init",
                "pending_state": "active",
                "created_at": NOW,
                "updated_at": NOW,
            }
            self.endpoints[eid] = endpoint
            endpoints.append(endpoint)
            ops.append(self._operation("start_compute", branch["id"], eid))
        return httpx.Response(
            201,
            json={
                "branch": branch,
                "endpoints": endpoints,
                "operations": [self._public(o) for o in ops],
                "roles": [{"branch_id": branch["id"], "name": "neondb_owner", **_times()}],
                "databases": [
                    {"id": 1, "branch_id": branch["id"], "name": "neondb", **_times()}
                    | {"owner_name": "neondb_owner"}
                ],
            },
        )

    def _poll(self, op_id: str) -> httpx.Response:
        for running in self.operations.values():  # time passes for every operation
            if running["status"] == "running":
                running["_polls"] -= 1
                if running["_polls"] <= 0:
                    running["status"] = self.final_status
                    if self.final_status == "failed":
                        running["error"] = "pageserver unavailable"
        op = self.operations[op_id]
        if all(o["status"] != "running" for o in self.operations.values()):
            for b in self.branches.values():
                b.update(current_state="ready", pending_state=None)
            for e in self.endpoints.values():
                e.update(current_state="active", pending_state=None)
        return httpx.Response(200, json={"operation": self._public(op)})


def _times() -> dict[str, str]:
    return {"created_at": NOW, "updated_at": NOW}


@pytest.fixture
def fake() -> FakeNeon:
    return FakeNeon()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(fake: FakeNeon, sleeps: list[float], **kwargs: Any) -> NeonClient:
    kwargs.setdefault("api_host", HOST)
    return NeonClient(
        api_key=API_KEY,
        project_id=PROJECT,
        transport=httpx.MockTransport(fake.handler),
        sleep=sleeps.append,
        **kwargs,
    )


@pytest.fixture
def client(fake: FakeNeon, sleeps: list[float]) -> Iterator[NeonClient]:
    with make_client(fake, sleeps) as c:
        yield c


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


# -- requests, headers, counting -------------------------------------------------------------------


@pytest.mark.parametrize("host", [HOST, "http://127.0.0.1:8765/api/v2/"])
def test_headers_and_paths(fake: FakeNeon, sleeps: list[float], host: str) -> None:
    with make_client(fake, sleeps, api_host=host) as client:
        assert client.get_project().id == PROJECT
    request = fake.requests[0]
    assert request.url.path == f"/api/v2/projects/{PROJECT}"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["user-agent"] == f"neonflow/{neonflow.__version__}"
    assert request.headers["accept"] == "application/json"


def test_request_count_counts_every_request_sent(fake: FakeNeon, client: NeonClient) -> None:
    client.list_projects()
    client.get_branch(fake.main)
    fake.faults.append(Fault("GET", "/branches$", status=503))
    client.list_branches()  # 503, retried; then an empty last page after Neon's `next`
    assert client.request_count == len(fake.requests) == 5


def test_invalid_api_host_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="http"):
        NeonClient("console.neon.tech", API_KEY, PROJECT)


# -- retries ---------------------------------------------------------------------------------------


def test_retries_423_429_503_honouring_retry_after(
    fake: FakeNeon, client: NeonClient, sleeps: list[float]
) -> None:
    fake.faults += [
        Fault("GET", "/branches/", status=429, headers={"Retry-After": "2"}),
        Fault("GET", "/branches/", status=423, headers={"Retry-After": "1.5"}),
        Fault("GET", "/branches/", status=503),
    ]
    assert client.get_branch(fake.main).name == "main"
    assert len(fake.requests) == 4
    assert sleeps[0] >= 2 and sleeps[1] >= 1.5
    assert 0 <= sleeps[2] <= client.backoff_base * 4


@pytest.mark.parametrize(
    ("status", "cls"),
    [(503, errors.ServerError), (423, errors.LockedError), (429, errors.RateLimitError)],
)
def test_gives_up_after_the_bound(
    fake: FakeNeon, sleeps: list[float], status: int, cls: type[errors.NeonAPIError]
) -> None:
    body = {"code": "", "message": "try again later", "request_id": "req-42"}
    fake.faults.append(Fault("POST", "/set_as_default", status=status, body=body, times=99))
    with make_client(fake, sleeps, max_retries=2) as client, pytest.raises(cls) as info:
        client.set_default(fake.main)
    assert fake.calls("POST") == 3 and len(sleeps) == 2
    assert info.value.message == "try again later"
    assert info.value.request_id == "req-42"
    assert str(info.value) == f"try again later (HTTP {status}, request req-42)"


def test_retry_after_too_long_is_not_waited_for(
    fake: FakeNeon, client: NeonClient, sleeps: list[float]
) -> None:
    fake.faults.append(Fault("GET", "/branches", status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(errors.RateLimitError):
        client.list_branches()
    assert sleeps == []


def test_retry_after_forms() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after(httpx.Headers({"Retry-After": "7"}), now) == 7
    date = "Fri, 01 May 2026 12:00:30 GMT"
    assert retry_after(httpx.Headers({"Retry-After": date}), now) == 30
    assert retry_after(httpx.Headers({"Retry-After": "soon"}), now) is None
    assert retry_after(httpx.Headers(), now) is None


def test_backoff_is_full_jitter_capped() -> None:
    assert backoff_delay(0, 0.25, 10, rand=lambda: 1.0) == 0.25
    assert backoff_delay(3, 0.25, 10, rand=lambda: 1.0) == 2.0
    assert backoff_delay(10, 0.25, 10, rand=lambda: 1.0) == 10
    assert backoff_delay(10, 0.25, 10, rand=lambda: 0.0) == 0


def test_get_retried_after_a_dropped_connection(fake: FakeNeon, client: NeonClient) -> None:
    fake.faults.append(Fault("GET", "/branches/", before=httpx.ReadTimeout("timed out")))
    fake.faults.append(Fault("GET", "/branches/", before=httpx.RemoteProtocolError("dropped")))
    assert client.get_branch(fake.main).id == fake.main
    assert client.request_count == 3


def test_connect_errors_exhausted_are_a_network_error_naming_the_host(
    fake: FakeNeon, sleeps: list[float]
) -> None:
    fake.faults.append(Fault("GET", "", before=httpx.ConnectError("Connection refused"), times=9))
    with make_client(fake, sleeps, max_retries=3) as client:
        with pytest.raises(errors.NetworkError) as info:
            client.list_branches()
        assert client.request_count == 0  # never reached the server
    assert len(fake.requests) == 4
    assert "console.neon.tech" in str(info.value)
    assert "Connection refused" in str(info.value)
    assert "\n" not in str(info.value)


# -- error mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.NeonAPIError),
        (401, errors.AuthError),
        (403, errors.AuthError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (412, errors.ConflictError),
        (422, errors.ConflictError),
        (500, errors.ServerError),
    ],
)
def test_error_statuses_map_without_retry(
    fake: FakeNeon, client: NeonClient, status: int, cls: type[errors.NeonAPIError]
) -> None:
    body = {"code": "E1", "message": "nope", "request_id": "r-1"}
    fake.faults.append(Fault("GET", "/branches/", status=status, body=body))
    with pytest.raises(cls) as info:
        client.get_branch(fake.main)
    assert type(info.value) is cls
    assert (info.value.status, info.value.code, info.value.request_id) == (status, "E1", "r-1")
    assert info.value.method == "GET" and info.value.path.endswith(fake.main)
    assert len(fake.requests) == 1


def test_unknown_branch_is_not_found(client: NeonClient) -> None:
    with pytest.raises(errors.NotFoundError, match="branch not found"):
        client.get_branch("br-missing-1")


def test_non_json_error_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="upstream gone", headers={"x-request-id": "hdr-9"})

    client = NeonClient(HOST, API_KEY, PROJECT, transport=httpx.MockTransport(handler))
    with client, pytest.raises(errors.ServerError) as info:
        client.get_project()
    assert info.value.message == "Bad Gateway: upstream gone"
    assert info.value.request_id == "hdr-9"


def test_api_key_never_in_errors_or_repr(fake: FakeNeon, client: NeonClient) -> None:
    raised: list[Exception] = []
    fake.faults += [
        Fault("GET", "", status=401, body={"code": "", "message": f"bad key {API_KEY}"}),
        Fault("GET", "", before=httpx.ConnectError(f"refused {API_KEY}"), times=99),
    ]
    for _ in range(2):
        with pytest.raises(errors.NeonflowError) as info:
            client.list_branches()
        raised.append(info.value)
    assert isinstance(raised[0], errors.AuthError) and "***" in str(raised[0])
    assert isinstance(raised[1], errors.NetworkError)
    for text in [repr(client), str(client), *map(str, raised), *map(repr, raised)]:
        assert API_KEY not in text


# -- branches --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("next_on_last_page", "requests"), [(False, 3), (True, 4)])
def test_pagination_follows_next_and_merges_annotations(
    sleeps: list[float], next_on_last_page: bool, requests: int
) -> None:
    fake = FakeNeon(page_size=2, next_on_last_page=next_on_last_page)
    for i in range(4):
        fake.add_branch(f"feat-{i}", annotations={"created-by": "neonflow", "n": str(i)})
    with make_client(fake, sleeps) as client:
        branches = client.list_branches()
    assert [b.name for b in branches] == ["main", "feat-0", "feat-1", "feat-2", "feat-3"]
    assert branches[0].annotations == {}
    assert branches[4].annotations == {"created-by": "neonflow", "n": "3"}
    assert len(fake.requests) == requests
    assert [r.url.params.get("cursor") for r in fake.requests][:3] == [None, "2", "4"]


def test_list_limit_caps_the_count(fake: FakeNeon, client: NeonClient) -> None:
    for i in range(4):
        fake.add_branch(f"feat-{i}")
    assert len(client.list_branches(limit=3)) == 3
    assert fake.requests[0].url.params["limit"] == "3" and len(fake.requests) == 1


def test_find_branch_matches_name_or_id_exactly(fake: FakeNeon, client: NeonClient) -> None:
    fake.add_branch("feat-2")
    feat = fake.add_branch("feat", annotations={"git-branch": "feat"})
    found = client.find_branch("feat")
    assert found is not None and found.id == feat["id"]
    assert found.annotations == {"git-branch": "feat"}
    assert fake.requests[0].url.params["search"] == "feat"
    assert client.find_branch(feat["id"]) == found
    assert client.find_branch("fea") is None


def test_get_branch_parses_types_and_annotation(fake: FakeNeon, client: NeonClient) -> None:
    fake.annotations[fake.main] = {"owner": "me"}
    branch = client.get_branch(fake.main)
    assert branch.created_at == datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert branch.default and branch.annotations == {"owner": "me"}


def test_create_branch_body_and_result(fake: FakeNeon, client: NeonClient) -> None:
    expires = datetime(2026, 5, 8, 12, 30, 15, 123456, tzinfo=UTC)
    created = client.create_branch(
        "feat-x", parent_id=fake.main, annotations={"created-by": "neonflow"}, expires_at=expires
    )
    assert body_of(fake.requests[0]) == {
        "branch": {"name": "feat-x", "parent_id": fake.main, "expires_at": "2026-05-08T12:30:15Z"},
        "endpoints": [{"type": "read_write"}],
        "annotation_value": {"created-by": "neonflow"},
    }
    assert fake.requests[0].headers["content-type"] == "application/json"
    assert created.branch.name == "feat-x" and created.branch.parent_id == fake.main
    assert created.branch.annotations == {"created-by": "neonflow"}
    assert created.read_write_endpoint is not None
    assert [op.action for op in created.operations] == ["create_timeline", "start_compute"]
    assert created.databases[0].name == "neondb" and created.connection_uris is None


def test_create_branch_without_endpoint(fake: FakeNeon, client: NeonClient) -> None:
    created = client.create_branch("bare", endpoint=False, init_source="schema-only")
    assert body_of(fake.requests[0]) == {"branch": {"name": "bare", "init_source": "schema-only"}}
    assert created.endpoints == []


@pytest.mark.parametrize(
    "drop", [httpx.RemoteProtocolError("Server disconnected"), httpx.ReadTimeout("timed out")]
)
def test_create_applied_but_answer_lost_returns_the_branch(
    fake: FakeNeon, client: NeonClient, drop: Exception
) -> None:
    fake.faults.append(Fault("POST", "/branches$", after=drop))
    created = client.create_branch("feat-x")
    assert len(fake.named("feat-x")) == 1 and fake.calls("POST") == 1
    assert created.branch.id == fake.named("feat-x")[0]["id"]
    assert created.read_write_endpoint is not None
    assert {op.action for op in created.operations} == {"create_timeline", "start_compute"}
    assert all(op.succeeded for op in client.wait_for_operations(created.operations))


def test_create_lost_before_apply_is_sent_again(
    fake: FakeNeon, client: NeonClient, sleeps: list[float]
) -> None:
    fake.faults.append(Fault("POST", "/branches$", before=httpx.ReadTimeout("timed out")))
    created = client.create_branch("feat-x")
    assert len(fake.named("feat-x")) == 1 and fake.calls("POST") == 2
    assert created.branch.name == "feat-x" and len(sleeps) == 1


def test_create_refused_at_connect_is_retried(
    fake: FakeNeon, client: NeonClient, sleeps: list[float]
) -> None:
    fake.faults.append(Fault("POST", "/branches$", before=httpx.ConnectError("refused")))
    client.create_branch("feat-x")
    assert len(fake.named("feat-x")) == 1 and fake.calls("POST") == 2
    assert fake.calls("GET") == 0 and client.request_count == 1 and len(sleeps) == 1


def test_create_never_answered_gives_up_without_a_branch(
    fake: FakeNeon, sleeps: list[float]
) -> None:
    fake.faults.append(Fault("POST", "/branches$", before=httpx.ReadTimeout("t"), times=99))
    with make_client(fake, sleeps, max_retries=2) as client:
        with pytest.raises(errors.NetworkError, match="was not created"):
            client.create_branch("feat-x")
    assert fake.calls("POST") == 3 and fake.named("feat-x") == []


def test_update_with_lost_answer_is_not_resent(fake: FakeNeon, client: NeonClient) -> None:
    fake.faults.append(Fault("PATCH", "/branches/", after=httpx.RemoteProtocolError("dropped")))
    with pytest.raises(errors.NetworkError, match="outcome is unknown"):
        client.update_branch(fake.main, name="trunk")
    assert fake.calls("PATCH") == 1


def test_update_branch_expires_at(fake: FakeNeon, client: NeonClient) -> None:
    client.update_branch(fake.main, name="trunk")
    client.update_branch(fake.main, expires_at=None)
    client.update_branch(fake.main, protected=True, expires_at=datetime(2026, 5, 2, tzinfo=UTC))
    assert [body_of(r)["branch"] for r in fake.requests] == [
        {"name": "trunk"},
        {"expires_at": None},
        {"protected": True, "expires_at": "2026-05-02T00:00:00Z"},
    ]
    assert client.update_branch(fake.main, expires_at=UNSET).branch.name == "trunk"


def test_delete_branch(fake: FakeNeon, client: NeonClient) -> None:
    feat = fake.add_branch("feat")
    assert [op.action for op in client.delete_branch(feat["id"])] == ["delete_timeline"]
    assert client.delete_branch(feat["id"]) == []  # 204: already gone
    fake.faults.append(Fault("DELETE", "", status=404, body={"code": "", "message": "gone"}))
    assert client.delete_branch("br-never-was") == []


# -- operations ------------------------------------------------------------------------------------


def test_wait_for_operations_until_finished(
    fake: FakeNeon, client: NeonClient, sleeps: list[float]
) -> None:
    fake.polls_to_finish = 3
    created = client.create_branch("feat-x")
    done = client.wait_for_operations(created.operations)
    assert [op.status for op in done] == ["finished", "finished"]
    assert [op.id for op in done] == [op.id for op in created.operations]
    assert sleeps == [0.05, 0.1, 0.2]  # growing poll interval
    assert client.get_branch(created.branch.id).current_state == "ready"


def test_wait_skips_operations_already_done(client: NeonClient) -> None:
    op = Operation(id="op-1", action="create_timeline", status="skipped")
    assert client.wait_for_operations([op]) == [op]
    assert client.request_count == 0


def test_failed_operation_raises_with_id_and_action(fake: FakeNeon, client: NeonClient) -> None:
    fake.final_status = "failed"
    created = client.create_branch("feat-x")
    with pytest.raises(errors.OperationFailedError) as info:
        client.wait_for_operations(created.operations)
    first = created.operations[0]
    assert first.id in str(info.value) and "create_timeline" in str(info.value)
    assert "pageserver unavailable" in str(info.value)


def test_wait_times_out_naming_the_operation(
    fake: FakeNeon, client: NeonClient, sleeps: list[float]
) -> None:
    fake.polls_to_finish = 10**6
    created = client.create_branch("feat-x")
    with pytest.raises(errors.NeonAPIError, match="timed out") as info:
        client.wait_for_operations(created.operations, timeout=10)
    assert created.operations[0].id in str(info.value)
    assert sum(sleeps) == pytest.approx(10) and max(sleeps) == 2.0


def test_operation_model_ignores_unknown_fields() -> None:
    op = Operation.model_validate(
        {"id": "x", "action": "brand_new_action", "status": "cancelled", "new": 1}
    )
    assert op.failed and op.done and not op.succeeded


def test_expires_at_naive_is_utc(fake: FakeNeon, client: NeonClient) -> None:
    client.create_branch("feat-x", expires_at=datetime(2026, 5, 2) + timedelta(seconds=1))
    assert body_of(fake.requests[0])["branch"]["expires_at"] == "2026-05-02T00:00:01Z"


def test_other_calls_use_neon_paths_and_shapes() -> None:
    p, b = f"/api/v2/projects/{PROJECT}", f"/api/v2/projects/{PROJECT}/branches/br-a"
    endpoint = {
        "id": "ep-a",
        "branch_id": "br-a",
        "host": "ep-a.neon.tech",
        "type": "read_write",
        "current_state": "idle",
    }
    answers: dict[tuple[str, str], Any] = {
        ("GET", f"{b}/schema"): {"sql": "CREATE TABLE t ();"},
        ("GET", f"{b}/compare_schema"): {"diff": "+CREATE TABLE t ();"},
        ("GET", f"{b}/endpoints"): {"endpoints": [endpoint]},
        ("GET", f"{p}/endpoints"): {"endpoints": [endpoint]},
        ("POST", f"{p}/endpoints/ep-a/start"): {"endpoint": endpoint, "operations": []},
        ("GET", f"{b}/databases"): {
            "databases": [{"id": 1, "branch_id": "br-a", "name": "neondb", "owner_name": "o"}]
        },
        ("GET", f"{b}/roles"): {"roles": [{"branch_id": "br-a", "name": "o", "password": "pw"}]},
        ("GET", f"{b}/roles/o%2Fx/reveal_password"): {"password": "pw"},
        ("GET", f"{p}/connection_uri"): {"uri": "postgresql://o:pw@ep-a-pooler.neon.tech/neondb"},
        ("POST", f"{b}/restore"): {"branch": FakeNeon().branches["br-test-0001"]},
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.raw_path.decode().partition("?")[0]
        return httpx.Response(200, json=answers[(request.method, path)])

    with NeonClient(HOST, API_KEY, PROJECT, transport=httpx.MockTransport(handler)) as client:
        assert client.get_schema("br-a", "neondb") == "CREATE TABLE t ();"
        assert client.compare_schema("br-a", "neondb", "br-main") == "+CREATE TABLE t ();"
        assert client.list_endpoints("br-a")[0].pooler_host == "ep-a-pooler.neon.tech"
        assert client.list_endpoints()[0].id == "ep-a"
        assert client.start_endpoint("ep-a").endpoint.current_state == "idle"
        assert client.list_databases("br-a")[0].owner_name == "o"
        role = client.list_roles("br-a")[0]
        assert role.password == "pw" and "pw" not in repr(role)
        assert client.reveal_password("br-a", "o/x") == "pw"
        uri = client.connection_uri("br-a", "neondb", "o", pooled=True)
        assert uri.startswith("postgresql://")
        restored = client.restore_branch("br-a", "br-main", preserve_under_name="br-a-old")
        assert restored.operations == []
    params = [dict(r.url.params) for r in seen]
    assert params[0] == {"db_name": "neondb", "format": "sql"}
    assert params[1] == {"db_name": "neondb", "base_branch_id": "br-main"}
    assert params[8] == {
        "branch_id": "br-a",
        "database_name": "neondb",
        "role_name": "o",
        "pooled": "true",
    }
    assert body_of(seen[9]) == {"source_branch_id": "br-main", "preserve_under_name": "br-a-old"}
