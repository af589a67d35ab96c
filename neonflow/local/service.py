"""Start, stop and inspect the local Neon server process from the command line's side."""

from __future__ import annotations

import fcntl
import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from neonflow import polling
from neonflow.config import Settings
from neonflow.errors import LocalNeonError
from neonflow.local.paths import StatePaths, check_state_dir, load_or_create_config, read_json

START_TIMEOUT = 60.0
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class LocalNeonInfo:
    """How to reach a running local Neon."""

    api_host: str
    token: str
    project_id: str
    pid: int
    state_dir: Path
    pg_port: int

    @property
    def token_file(self) -> Path:
        return StatePaths(self.state_dir).token


def _pid(paths: StatePaths) -> int | None:
    """The pid in ``server.pid`` if that process is this folder's server (a crash may leave the
    number to another process, even another project's server, which must never be signalled)."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _is_our_server(pid, paths) else None


def _is_our_server(pid: int, paths: StatePaths) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        state_dir = process.environ().get("NEONFLOW_LOCAL__STATE_DIR")
    except (psutil.Error, ValueError):
        return False
    return "neonflow.local" in cmdline and "serve" in cmdline and state_dir == str(paths.root)


def _info(paths: StatePaths, pid: int) -> LocalNeonInfo:
    config = read_json(paths.config)
    return LocalNeonInfo(
        api_host=f"http://127.0.0.1:{config['api_port']}/api/v2",
        token=paths.token.read_text().strip(),
        project_id=config["project_id"],
        pid=pid,
        state_dir=paths.root,
        pg_port=config["pg_port"],
    )


def _healthy(info: LocalNeonInfo) -> bool:
    # http.client, not httpx: an httpx client loads the CA bundle, which costs 30 ms per command.
    parts = urlsplit(info.api_host)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def running(settings: Settings) -> LocalNeonInfo | None:
    """The running local Neon of this project, or None."""
    paths = StatePaths(settings.state_dir)
    pid = _pid(paths)
    if pid is None or not paths.config.exists():
        return None
    info = _info(paths, pid)
    return info if _healthy(info) else None


@contextmanager
def _exclusive(paths: StatePaths, strict: bool = True) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per state folder (concurrent commands all call ``up``).

    ``up`` needs a folder it can write in (else a ConfigError says why); ``down`` must work
    whatever became of the folder, so it goes on without the lock when it cannot take it.
    """
    if strict:
        check_state_dir(paths.root)
    try:
        fh = open(paths.lock, "w")
    except OSError as exc:
        if strict:
            raise LocalNeonError(f"cannot write in {paths.root}: {exc.strerror or exc}") from None
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def up(settings: Settings) -> tuple[LocalNeonInfo, bool]:
    """Start the local Neon unless it runs; returns its info and whether it was started now."""
    paths = StatePaths(settings.state_dir)
    info = running(settings)
    if info is not None:
        return info, False  # nothing to write: it must answer even when its disk is full
    with _exclusive(paths):
        info = running(settings)
        if info is not None:
            return info, False
        stale = _pid(paths)
        if stale is not None:
            # A server that holds the pid file but does not answer: stop it before starting anew.
            _terminate(stale)
        paths.pid.unlink(missing_ok=True)
        load_or_create_config(paths, settings.local.project_id)
        env = {**os.environ, "NEONFLOW_LOCAL__STATE_DIR": str(paths.root)}
        with open(paths.log, "ab") as log:
            logged = log.tell()  # where this start's own lines begin
            process = subprocess.Popen(
                [sys.executable, "-m", "neonflow.local", "serve"],
                cwd=settings.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        # The server outlives this command by design; keep its handle so `down` can reap it.
        _CHILDREN[process.pid] = process

        def answering() -> LocalNeonInfo | None:
            if process.poll() is not None:
                reason = _start_error(paths.log, logged)
                if reason:
                    raise LocalNeonError(f"the local Neon could not start: {reason} ({paths.log})")
                raise LocalNeonError(
                    f"the local Neon exited during start (code {process.returncode}); "
                    f"see {paths.log}: {_tail(paths.log)}"
                )
            if _pid(paths) != process.pid:
                return None
            info = _info(paths, process.pid)
            return info if _healthy(info) else None

        info = polling.until(answering, START_TIMEOUT, max_interval=0.05)
        if info is not None:
            return info, True
        _terminate(process.pid)
        raise LocalNeonError(f"the local Neon did not answer within {START_TIMEOUT:.0f} s")


def down(settings: Settings) -> bool:
    """Stop the local Neon (and its PostgreSQL); returns whether one was running."""
    paths = StatePaths(settings.state_dir)
    if not paths.root.is_dir():
        return False  # nothing ever started from there
    with _exclusive(paths, strict=False):
        pid = _pid(paths)
        if pid is None:
            _forget_pid(paths)
            _stop_orphan_postgres(paths)
            return False
        _terminate(pid)
        _forget_pid(paths)
        _stop_orphan_postgres(paths)
        return True


def _forget_pid(paths: StatePaths) -> None:
    # A folder that became read-only must not keep `down` from stopping what runs.
    with suppress(OSError):
        paths.pid.unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def gone() -> bool | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        return None

    if polling.until(gone, STOP_TIMEOUT, max_interval=0.05):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    # When this process started the server it is our child: collect it so it does not linger.
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_orphan_postgres(paths: StatePaths) -> None:
    """PostgreSQL left running by a server that was killed with -9."""
    if not paths.config.exists():
        return
    from neonflow.local.postgres import EmbeddedPostgres

    config = read_json(paths.config)
    pg = EmbeddedPostgres(paths.pgdata, config["pg_port"], config["pg_password"])
    if pg.running():
        pg.stop()


def _start_error(log: Path, offset: int) -> str | None:
    """The one-line reason the server gave for not starting (its last ``error:`` line, in what
    it wrote from ``offset`` on)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    if lines and lines[-1].startswith("error: "):
        return lines[-1].removeprefix("error: ")
    return None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
