"""Issue 9 (items 5-11): what a hostile new user broke, through the CLI as a user runs it."""

from __future__ import annotations

import functools
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from neonflow import envfile, errors
from neonflow.cli.main import app
from neonflow.neon import NeonClient
from neonflow.workflow.branches import Branches


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def unique(prefix: str = "feat") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def one_line(result: Result) -> str:
    """The one error line of a failed command, last on stderr (after any progress lines);
    never a traceback, never "a bug"."""
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr
    assert "Traceback" not in result.stderr and "a bug" not in result.stderr
    return lines[-1]


class SilentHost(str):
    """An API host that accepts connections (the kernel's backlog) and never answers."""

    server: socket.socket

    def connections(self) -> int:
        """How many connections were made to it so far."""
        self.server.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.server.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def silent_host() -> Iterator[SilentHost]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        host = SilentHost(f"http://127.0.0.1:{server.getsockname()[1]}/api/v2")
        host.server = server
        yield host


def use_cloud(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("NEONFLOW_NEON__API_HOST", host)
    monkeypatch.setenv("NEONFLOW_NEON__PROJECT_ID", "p")
    monkeypatch.setenv("NEON_API_KEY", "napi_supersecret_key")


# -- 7: bounded waiting ------------------------------------------------------------------------


def test_a_host_that_never_answers_fails_within_the_timeout(
    project: Path, silent_host: SilentHost, monkeypatch: pytest.MonkeyPatch
):
    use_cloud(monkeypatch, silent_host)
    monkeypatch.setenv("NEONFLOW_NEON__TIMEOUT", "0.5")

    result = nf("branch", "list")

    assert result.exit_code == 7
    line = one_line(result)
    assert silent_host.split("/")[2] in line and "[neon] timeout" in line
    assert "napi_supersecret_key" not in result.stdout + result.stderr
    # The budget covers the retries: the one try spent it, there was no second one.
    assert silent_host.connections() == 1


def test_start_against_a_silent_host_creates_nothing_and_leaves_the_env_file(
    project: Path, silent_host: SilentHost, monkeypatch: pytest.MonkeyPatch
):
    use_cloud(monkeypatch, silent_host)
    (project / "neonflow.toml").write_text(
        (project / "neonflow.toml").read_text() + "\n[neon]\ntimeout = 0.5\n"
    )

    result = nf("branch", "start", "feat-silent")

    assert result.exit_code == 7
    one_line(result)
    assert not (project / ".env").exists()


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_a_bad_timeout_is_a_config_error(project: Path, bad: str):
    (project / "neonflow.toml").write_text(
        (project / "neonflow.toml").read_text() + f"\n[neon]\ntimeout = {bad!r}\n"
    )

    result = nf("branch", "list")

    assert result.exit_code == 2
    assert "neon.timeout" in one_line(result)


# -- 8: a closed stdout ------------------------------------------------------------------------


def test_a_closed_stdout_ends_the_command_quietly(project: Path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written, as with `| true`
    try:
        done = subprocess.run(
            [sys.executable, "-m", "neonflow.cli.main", "branch", "list", "--json"],
            cwd=project,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)

    assert done.returncode == 141
    assert done.stderr == ""


# -- 9: expirations Neon refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"), [("0s", "future"), ("0d", "future"), ("31d", "30 days"), ("5w", "30 days")]
)
def test_an_expiration_neon_would_refuse_is_a_config_error_at_load(
    project: Path, neon_client: NeonClient, value: str, says: str
):
    (project / "neonflow.toml").write_text(
        (project / "neonflow.toml").read_text() + f"\n[branch]\nexpires_in = {value!r}\n"
    )
    before = {b.id for b in neon_client.list_branches()}

    result = nf("branch", "start", "feat-expiry")

    assert result.exit_code == 2
    line = one_line(result)
    assert "branch.expires_in" in line and says in line
    assert "creating branch" not in result.stderr
    assert {b.id for b in neon_client.list_branches()} == before
    assert not (project / ".env").exists()


# -- 11: one JSON error document with --json ---------------------------------------------------


def test_json_failure_prints_one_error_document_on_stdout(project: Path):
    result = nf("branch", "switch", "no-such-branch", "--json")

    assert result.exit_code == 6
    one_line(result)
    document = json.loads(result.stdout)
    assert document == {
        "error": {
            "kind": "not_found",
            "message": result.stderr.removeprefix("error: ").rstrip("\n"),
            "exit_code": 6,
        }
    }


def test_json_config_error_and_refusal_are_documents_too(project: Path):
    refused = nf("branch", "delete", "main", "--yes", "--json")
    assert refused.exit_code == 3
    assert json.loads(refused.stdout)["error"]["kind"] == "refused"

    (project / "neonflow.toml").write_text("[neon\n")
    broken = nf("branch", "list", "--json")
    assert broken.exit_code == 2
    one_line(broken)
    assert json.loads(broken.stdout)["error"]["kind"] == "config"


def test_json_error_masks_secrets(project: Path, silent_host: SilentHost, monkeypatch):
    use_cloud(monkeypatch, silent_host)
    monkeypatch.setenv("NEONFLOW_NEON__TIMEOUT", "0.2")

    result = nf("branch", "list", "--json")

    assert result.exit_code == 7
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "network" and error["exit_code"] == 7
    assert "napi_supersecret_key" not in result.stdout + result.stderr


def test_without_json_a_failure_prints_nothing_on_stdout(project: Path):
    result = nf("branch", "switch", "no-such-branch")

    assert result.exit_code == 6
    one_line(result)
    assert result.stdout == ""


# -- 6: the env file is kept as it was ---------------------------------------------------------


def test_a_crlf_env_file_keeps_its_line_endings_and_every_other_byte(project: Path):
    env = project / ".env"
    before = b"# app\r\nSECRET_KEY=abc\r\nDATABASE_URL=old\r\n\r\nOTHER='x y'  \r\nLAST=1"
    env.write_bytes(before)

    result = nf("branch", "start", unique())

    assert result.exit_code == 0, result.stderr
    after = env.read_bytes()
    lines = after.split(b"\r\n")
    assert lines[2].startswith(b"DATABASE_URL=postgresql://")
    assert after.replace(lines[2], b"DATABASE_URL=old") == before
    assert b"\n" not in after.replace(b"\r\n", b"")


def test_a_bom_does_not_hide_the_first_line(project: Path):
    env = project / ".env"
    assert nf("branch", "start", unique()).exit_code == 0
    url = envfile.read_var(env, "DATABASE_URL")
    env.write_bytes(b"\xef\xbb\xbf" + f"DATABASE_URL={url}\nA=1\n".encode())

    status = nf("branch", "status", "--json")
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["database_url"] is not None

    switched = nf("branch", "switch", "main")
    assert switched.exit_code == 0, switched.stderr
    after = env.read_bytes()
    assert after.startswith(b"\xef\xbb\xbfDATABASE_URL=postgresql://")
    assert after.count(b"DATABASE_URL=") == 1 and after.endswith(b"\nA=1\n")


def test_a_private_mode_owner_and_group_are_kept(project: Path):
    if os.geteuid() != 0:
        pytest.skip("giving the file another owner needs root")
    env = project / ".env"
    env.write_text("A=1\n")
    os.chown(env, 4321, 8765)
    os.chmod(env, 0o400)

    result = nf("branch", "start", unique())

    assert result.exit_code == 0, result.stderr
    st = env.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 8765, 0o400)
    assert "readable by others" not in result.stderr


def test_group_and_world_bits_are_dropped_and_the_user_is_told(project: Path):
    env = project / ".env"
    env.write_text("A=1\n")
    os.chmod(env, 0o664)

    result = nf("branch", "start", unique())

    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "readable by others (mode 0664)" in result.stderr and "now 0600" in result.stderr


def test_an_immutable_env_file_is_refused_before_any_branch_exists(
    project: Path, neon_client: NeonClient
):
    env = project / ".env"
    env.write_bytes(b"A=1\n")
    if subprocess.run(["chattr", "+i", str(env)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    before = {b.id for b in neon_client.list_branches()}
    try:
        result = nf("branch", "start", unique())
    finally:
        subprocess.run(["chattr", "-i", str(env)], check=True)

    assert result.exit_code == 2
    assert "immutable" in one_line(result)
    assert {b.id for b in neon_client.list_branches()} == before
    assert env.read_bytes() == b"A=1\n"


def test_a_read_only_folder_is_refused_before_any_branch_exists(
    project: Path, neon_client: NeonClient
):
    folder = project / "ro"
    folder.mkdir()
    (project / "neonflow.toml").write_text(
        (project / "neonflow.toml").read_text().replace('env_file = ".env"', 'env_file = "ro/.env"')
    )
    # A read-only mount (root may write into a 0555 folder, so the mode would not do).
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a read-only file system here")
    before = {b.id for b in neon_client.list_branches()}
    try:
        result = nf("branch", "start", unique())
    finally:
        subprocess.run(["umount", str(folder)], check=True)

    assert result.exit_code == 2
    assert "is not writable" in one_line(result)
    assert {b.id for b in neon_client.list_branches()} == before


# -- 5: names are what the user typed ----------------------------------------------------------


def test_names_differing_by_an_accent_are_two_branches(project: Path, neon_client: NeonClient):
    tag = uuid.uuid4().hex[:6]
    first = nf("branch", "start", f"café-{tag}", "--json")
    second = nf("branch", "start", f"cafè-{tag}", "--json")

    assert first.exit_code == 0, first.stderr
    assert second.exit_code == 0, second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert (one["branch"], two["branch"]) == (f"café-{tag}", f"cafè-{tag}")
    assert one["created"] and two["created"]
    assert one["branch_id"] != two["branch_id"]
    names = {b.name for b in neon_client.list_branches(search=tag)}
    assert names == {f"café-{tag}", f"cafè-{tag}"}


@pytest.mark.parametrize("typed", ["fé🚀ture", "bad name;drop", 'it\'s "quoted" %s'])
def test_a_name_is_used_verbatim_by_every_command(
    project: Path, neon_client: NeonClient, typed: str
):
    name = f"{typed}-{uuid.uuid4().hex[:6]}"

    started = nf("branch", "start", name, "--json")
    assert started.exit_code == 0, started.stderr
    assert json.loads(started.stdout)["branch"] == name
    listed = nf("branch", "list", "--json", "--no-revisions")
    assert name in {row["name"] for row in json.loads(listed.stdout)}
    assert nf("branch", "switch", name).exit_code == 0
    assert nf("branch", "diff", name).exit_code == 0
    assert nf("connection-string", name).stdout.startswith("postgresql://")
    deleted = nf("branch", "delete", name, "--yes", "--json")
    assert deleted.exit_code == 0, deleted.stderr
    assert json.loads(deleted.stdout)["branch"] == name
    assert neon_client.find_branch(name) is None


def test_the_prefix_goes_in_front_of_the_git_name_as_it_is(project: Path, neon_client: NeonClient):
    (project / "neonflow.toml").write_text(
        (project / "neonflow.toml").read_text() + '\n[branch]\nprefix = "preview/"\n'
    )
    tag = uuid.uuid4().hex[:6]

    result = nf("branch", "start", f"feature/login-{tag}", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["branch"] == f"preview/feature/login-{tag}"
    assert neon_client.find_branch(f"preview/feature/login-{tag}") is not None
    # Both the name as typed and the full name reach it.
    assert nf("branch", "switch", f"feature/login-{tag}").exit_code == 0
    assert nf("branch", "switch", f"preview/feature/login-{tag}").exit_code == 0


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "cannot be empty"),
        ("x" * 257, "at most 256 characters"),
        ("bell\x07", "control character"),
        ("esc\x1b[31m", "control character"),
    ],
)
def test_only_what_neon_refuses_and_control_characters_are_refused(
    project: Path, neon_client: NeonClient, bad: str, says: str
):
    # On a git branch: an empty name must not fall back to it.
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "on-a-git-branch"], cwd=project, check=True)
    before = {b.id for b in neon_client.list_branches()}

    result = nf("branch", "start", bad)

    assert result.exit_code == 2
    assert says in one_line(result)
    assert {b.id for b in neon_client.list_branches()} == before
    assert not (project / ".env").exists()


# -- 10: the right exit code and the real cause ------------------------------------------------


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[int]:
    """A plain file server, as `python -m http.server` answers: "File not found" everywhere."""
    (tmp_path / "empty").mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "empty"))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()


def test_an_api_host_that_is_not_a_neon_api_is_a_config_error(
    project: Path, file_server: int, monkeypatch: pytest.MonkeyPatch
):
    use_cloud(monkeypatch, f"http://127.0.0.1:{file_server}/api/v2")

    result = nf("branch", "list")

    assert result.exit_code == 2
    line = one_line(result)
    assert "is not a Neon API" in line and "[neon] api_host" in line


def test_json_error_of_an_api_host_with_a_password_masks_it(
    project: Path, file_server: int, monkeypatch: pytest.MonkeyPatch
):
    use_cloud(monkeypatch, f"http://me:hostpassword@127.0.0.1:{file_server}/api/v2")

    result = nf("branch", "list", "--json")

    assert result.exit_code == 2
    one_line(result)
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "config" and "me:****@127.0.0.1" in error["message"]
    assert "hostpassword" not in result.stdout + result.stderr
    assert "napi_supersecret_key" not in result.stdout + result.stderr


def test_start_that_loses_its_branch_meanwhile_says_so(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0
    branch = neon_client.find_branch(name)
    assert branch is not None
    point_app = Branches.point_app

    def deleted_by_someone_else(self: Branches, url: str) -> None:
        neon_client.wait_for_operations(neon_client.delete_branch(branch.id))
        point_app(self, url)

    monkeypatch.setattr(Branches, "point_app", deleted_by_someone_else)

    result = nf("branch", "start", name)

    assert result.exit_code == 6
    assert f"branch {name!r} was deleted meanwhile" in one_line(result)
    assert neon_client.find_branch(name) is None


def test_reset_that_loses_its_branch_meanwhile_says_so(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0
    branch = neon_client.find_branch(name)
    assert branch is not None
    migrate = Branches.migrate

    def deleted_by_someone_else(
        self: Branches, runner: Any, url: str, intended: str, **settings: str
    ) -> tuple[str, ...]:
        neon_client.wait_for_operations(neon_client.delete_branch(branch.id))
        return migrate(self, runner, url, intended, **settings)

    monkeypatch.setattr(Branches, "migrate", deleted_by_someone_else)

    result = nf("branch", "reset", name, "--yes")

    assert result.exit_code == 6
    assert "was deleted meanwhile" in one_line(result)


def test_diff_during_a_reset_says_the_branch_was_reset(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0
    branch = neon_client.find_branch(name)
    assert branch is not None and branch.parent_id is not None

    def reset_meanwhile(self: NeonClient, *args: object, **kwargs: object) -> str:
        # Another command resets the branch while its schema is dumped; the dump breaks.
        restored = neon_client.restore_branch(branch.id, branch.parent_id)
        neon_client.wait_for_operations(restored.operations)
        raise errors.ServerError("pg_dump failed: terminating connection", status=500)

    monkeypatch.setattr(NeonClient, "compare_schema", reset_meanwhile)

    result = nf("branch", "diff", name)

    assert result.exit_code == 6
    line = one_line(result)
    assert f"branch {name!r} was reset meanwhile" in line
