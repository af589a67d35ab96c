"""Alembic on the user's project, for one target database, in a process of its own.

:class:`Runner` starts the Alembic process (:mod:`neonflow.migrations.worker`) at once, so that
Alembic, SQLAlchemy and the packages env.py imports load while neonflow waits for Neon; the
target comes later (:meth:`Runner.target`), then the commands. Around env.py, as the user runs
``alembic`` from the ini's folder (or ``[migrations] cwd``): ``sqlalchemy.url`` set to the
branch with the project's own driver, the app's variables exported (over what the shell has),
Flask-Migrate's app created in its app context, and the configure hook with the interlock.
Alembic's log lines go to a log file, shown with ``NEONFLOW_VERBOSE=1`` or ``NEONFLOW_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

from neonflow import appenv
from neonflow.errors import (
    EnvPyError,
    MigrationError,
    RevisionLoadError,
    Unreachable,
    WrongTargetError,
)
from neonflow.migrations.history import History
from neonflow.migrations.project import Project, multiple_heads

# Offline SQL needs the variables to exist, never to reach anything: `.invalid` never resolves.
OFFLINE_URL = "postgresql://neonflow:offline@offline.invalid:5432/neondb"


@dataclass
class Upgraded:
    """What an upgrade did, as read back on neonflow's own connection."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    heads: tuple[str, ...]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


def verbose() -> bool:
    return bool(os.environ.get("NEONFLOW_VERBOSE") or os.environ.get("NEONFLOW_DEBUG"))


class Runner:
    """One Alembic process for one target database; use as a context manager."""

    def __init__(self, project: Project) -> None:
        global _spare
        self.project = project
        self.intended = "the target"
        spare, _spare = _spare, None
        if spare is None or spare.proc.poll() is not None:
            spare = _Process()
        self._proc, self._replies, self._log = spare.proc, spare.replies, spare.log
        self._pending = 0
        script_dir = project.script_dir
        self._send(
            {
                "op": "project",
                "ini": str(project.ini_file) if project.ini_file else None,
                "toml_file": str(project.toml_file) if project.toml_file else None,
                "cwd": str(project.cwd),
                "script_dir": str(script_dir) if script_dir else None,
                "version_dirs": [str(d) for d in project.version_dirs() or []],
                "sys_path": [str(d) for d in project.prepend_sys_path()],
                # neonflow's own connection (psycopg) and env.py's driver, imported ahead
                "drivers": sorted({"psycopg", project.sqlalchemy_driver()}),
                "flask_app": project.flask_app,
                "flask_migrate": project.flask_migrate,
            }
        )

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On an error or Ctrl-C the Alembic process may be mid-revision: stop it now (its
        # transaction rolls back) rather than wait for the revision to end.
        self.close(stop=exc_type is not None)

    def close(self, stop: bool = False) -> None:
        if stop and self._proc.poll() is None:
            self._proc.terminate()
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            self._proc.kill()
            self._proc.wait()
        self._replies.close()
        if self._log is not None:
            self._log.close()

    # -- the target ------------------------------------------------------------------------

    def target(self, url: str, intended: str, **session_settings: str) -> None:
        """Run on ``url`` (the branch neonflow means, named ``intended`` in messages); env.py's
        session gets ``session_settings`` (``lock_timeout="5s"``) once it proves its target."""
        self._target(url, url, intended, session_settings)

    def offline(self) -> None:
        """Render SQL only: variables and URL that lead nowhere, no connection allowed."""
        self._target(None, OFFLINE_URL, "offline SQL", {})

    def _target(
        self, own_url: str | None, url: str, intended: str, session_settings: dict[str, str]
    ) -> None:
        self.intended = intended
        driver = self.project.sqlalchemy_driver() if own_url else "psycopg"
        self._call(
            {
                "op": "target",
                "url": own_url,  # neonflow's own connection; None: offline
                "sqlalchemy_url": appenv.with_driver(url, driver),
                "env": self.project.variables.values(url, self.project.url_driver()),
                "intended": intended,
                "session_settings": session_settings,
            }
        )

    # -- commands --------------------------------------------------------------------------

    def upgrade(self, target: str = "heads", stats: bool = False) -> Upgraded:
        """Upgrade to ``target`` and check the result on neonflow's own connection."""
        reply = self._call({"op": "upgrade", "target": target, "stats": stats})
        done = Upgraded(
            tuple(reply["before"]), tuple(reply["after"]), tuple(reply["heads"]), reply["stats"]
        )
        if target in ("head", "heads") and set(done.after) != set(done.heads):
            where = ", ".join(reply.get("pointed") or []) or "nowhere"
            raise WrongTargetError(
                f"after the upgrade {self.intended} is at {_revs(done.after)}, not at head "
                f"{_revs(done.heads)} (env.py ran on {where}): the migrations did not land there; "
                "if env.py opens a transaction of its own, it must commit it"
            )
        return done

    def downgrade(self, target: str) -> tuple[str, ...]:
        """Downgrade to ``target`` (a revision or ``base``), checked on neonflow's connection."""
        after = tuple(self._call({"op": "downgrade", "target": target})["after"])
        expected = () if target == "base" else (target,)
        if after != expected and (target == "base" or ":" not in target and "-" not in target):
            raise WrongTargetError(
                f"after the downgrade {self.intended} is at {_revs(after)}, not at "
                f"{_revs(expected)}: the downgrade did not land there"
            )
        return after

    def check(self) -> list[str] | None:
        """``alembic check``: the differences between the models and the migrated database;
        None when env.py gives Alembic no models (``target_metadata``) to compare with."""
        reply = self._call({"op": "check"})
        return list(reply["drift"]) if reply["models"] else None

    def history(self) -> History:
        """The revision history and version table, read in this process (after :meth:`offline`)."""
        reply = self._call({"op": "history"})
        if reply.get("version_table") in (None, "alembic_version"):
            # The offline run may not pass the online run's version table: read env.py's own.
            reply["version_table"], reply["version_table_schema"] = self.project.version_table()
        return History.from_reply(reply)

    def sql(self, start: str | None, end: str = "heads") -> str:
        """The SQL an upgrade from ``start`` to ``end`` runs (Alembic's offline mode)."""
        return str(self._call({"op": "sql", "start": start, "end": end})["sql"])

    # -- the conversation ------------------------------------------------------------------

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None
        self._pending += 1

    def _receive(self) -> dict[str, Any]:
        line = self._replies.readline()
        if not line:
            raise self._died()
        self._pending -= 1
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        self._send(request)
        reply: dict[str, Any] = {}
        while self._pending:
            reply = self._receive()
            if not reply.get("ok"):
                # The replies to requests sent before this one still have to be read.
                while self._pending:
                    self._receive()
                raise self._error(reply)
        return reply

    def _error(self, reply: dict[str, Any]) -> Exception:
        kind, message = reply["kind"], reply["message"]
        if kind == "target" and reply.get("changed"):
            return WrongTargetError(
                f"{message}. env.py (or the app) changed {', '.join(reply['changed'])} after "
                "neonflow exported it: a load_dotenv(override=True), or another loader that "
                "overrides the environment, reads the env file over it; drop override=True so "
                "that the exported variables win"
            )
        if kind == "target":
            return WrongTargetError(
                f"{message}. neonflow set sqlalchemy.url and exported "
                f"{self.project.variables.label} for the run: if env.py reads the database from "
                "elsewhere, name that variable in [app] env_var or [app.env], or set "
                "[migrations] cwd so that its settings are found"
            )
        if kind == "load":
            return RevisionLoadError(message, revision=reply.get("revision"))
        if kind == "migration":
            return MigrationError(
                message, revision=reply.get("revision"), database_error=reply.get("database_error")
            )
        if kind == "heads":
            return multiple_heads(reply.get("heads") or [])
        if kind == "env_network":
            return Unreachable(message)
        if kind == "command":
            return MigrationError(message)
        return EnvPyError(message)

    def _died(self) -> EnvPyError:
        code = self._proc.wait()
        tail = ""
        if self._log is not None:
            self._log.seek(0)
            lines = [ln.strip() for ln in self._log.read().decode(errors="replace").splitlines()]
            lines = [ln for ln in lines if ln]
            tail = f": {lines[-1]}" if lines else ""
        return EnvPyError(f"env.py failed: the Alembic process ended (exit code {code}){tail}")


class _Process:
    """A started Alembic process, not yet told which project it serves."""

    def __init__(self) -> None:
        self.log: IO[bytes] | None = None if verbose() else tempfile.TemporaryFile()
        read_fd, write_fd = os.pipe()
        out: Any = self.log if self.log is not None else sys.stderr
        try:
            self.proc = subprocess.Popen(
                # -P: the project's folder is not put first on sys.path (its alembic/ folder
                # must not shadow Alembic); the ini's prepend_sys_path adds what it should.
                [sys.executable, "-P", "-m", "neonflow.migrations.worker", str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                pass_fds=(write_fd,),
                text=True,
            )
        finally:
            os.close(write_fd)
        self.replies = os.fdopen(read_fd, encoding="utf-8")


_spare: _Process | None = None


def start_early() -> None:
    """Start an Alembic process now, for the next :class:`Runner` to take.

    A command that will migrate calls this first thing, so that Python, Alembic and SQLAlchemy
    load while the command itself starts up. Unused, it ends with the command (its stdin closes).
    """
    global _spare
    if _spare is None:
        _spare = _Process()


def _revs(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "(none)"
