"""The Alembic process: the project's env.py run for one target database, as ``alembic`` would.

A fresh interpreter per target, so that nothing env.py caches (a settings object built at import,
an engine, a Flask app, a logging setup) carries from one database to another, and nothing of the
project leaks into neonflow. :mod:`neonflow.migrations.runner` starts it and sends one JSON
request per line on stdin; each reply is one JSON line on the file descriptor given as argv[1]
(env.py may print on stdout and log on stderr: both go to a log).

Requests, in order: ``project`` (where to run; imports ahead of time what env.py will need),
``target`` (the variables to export, the URL, neonflow's own connection with its marker), then
any number of ``upgrade``, ``downgrade``, ``check`` and ``sql``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from neonflow.migrations.failures import Failure, NetworkFailure, classified, reason
from neonflow.migrations.prewarm import prewarm

MARKER_LOCK = "SELECT pg_try_advisory_lock({key})"


class Session:
    def __init__(self) -> None:
        self.project: dict[str, Any] = {}
        self.target: dict[str, Any] = {}
        self.own: Any = None  # neonflow's own connection to the target (autocommit)
        self.marker: int | None = None
        self.flask: Any = None

    # -- requests --------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.pop("op")
        try:
            result = getattr(self, f"op_{op}")(**request)
        except Exception as exc:
            return self.failure(exc)
        except SystemExit as exc:  # env.py called sys.exit()
            return self.failure(RuntimeError(f"env.py called sys.exit({exc.code!r})"))
        return {"ok": True, **(result or {})}

    def op_project(self, **project: Any) -> dict[str, Any]:
        self.project = project
        os.chdir(project["cwd"])
        env_py = Path(project["script_dir"]) / "env.py" if project.get("script_dir") else None
        prewarm(env_py, [*project.get("sys_path", []), project["cwd"]])
        for module in project.get("drivers", []):
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
        return {}

    def op_target(
        self,
        url: str | None,
        sqlalchemy_url: str,
        env: dict[str, str],
        intended: str,
        session_settings: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        from sqlalchemy import create_engine, pool, text

        from neonflow.migrations import hook
        from neonflow.migrations.database import MIGRATION_LOCK
        from neonflow.migrations.database import sqlalchemy_url as own_url

        os.environ.update(env)
        self.target = {
            "env": dict(env),
            "url": url,
            "sqlalchemy_url": sqlalchemy_url,
            "intended": intended,
            "session_settings": session_settings or {},
        }
        if url is not None:
            args = {} if "connect_timeout=" in url else {"connect_timeout": 10}
            engine = create_engine(
                own_url(url),
                poolclass=pool.NullPool,
                isolation_level="AUTOCOMMIT",
                connect_args=args,
            )
            try:
                self.own = engine.connect()
            except Exception as exc:
                raise NetworkFailure(f"cannot connect to {intended}: {reason(exc)}") from None
            # Two neonflow commands on one database migrate it one after the other.
            self.own.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            self.marker = hook.new_marker()
            self.own.exec_driver_sql(MARKER_LOCK.format(key=self.marker))
        # Every connection from here on (the app's, env.py's) must reach the target.
        hook.guard(self.marker, intended)
        if self.project.get("flask_app"):
            self._flask_app()
        return {}

    def op_upgrade(self, target: str, stats: bool = False) -> dict[str, Any]:
        from alembic import command

        from neonflow.migrations import stats as statistics
        from neonflow.migrations.database import heads_of

        cfg, scripts = self._config()
        heads = list(scripts.get_heads())
        if len(heads) > 1:
            raise Failure("heads", "several heads", heads=heads)
        before = heads_of(self.own)
        recorder = statistics.Recorder(statistics.read_relations(self.own)) if stats else None
        run = self._run(recorder, transaction_per_migration=stats)
        self._alembic(run, scripts, lambda: command.upgrade(cfg, target), before)
        after = heads_of(self.own, run.version_table, run.version_table_schema)
        return {
            "before": list(before),
            "after": list(after),
            "heads": heads,
            "stats": recorder.revisions if recorder else {},
            "pointed": run.pointed,
        }

    def op_downgrade(self, target: str) -> dict[str, Any]:
        from alembic import command

        from neonflow.migrations.database import heads_of

        cfg, scripts = self._config()
        before = heads_of(self.own)
        run = self._run()
        self._alembic(run, scripts, lambda: command.downgrade(cfg, target), before, "down")
        return {"after": list(heads_of(self.own, run.version_table, run.version_table_schema))}

    def op_check(self) -> dict[str, Any]:
        from alembic import command
        from alembic.util import AutogenerateDiffsDetected, CommandError

        from neonflow.migrations.database import heads_of

        cfg, scripts = self._config()
        run = self._run()
        diffs: list[str] = []

        def check() -> None:
            try:
                command.check(cfg)
            except AutogenerateDiffsDetected as exc:
                lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
                diffs.extend(lines or [str(exc)])
            except CommandError:
                # env.py gave configure() no target_metadata: no models to compare with.
                if not run.configured or run.target_metadata:
                    raise

        self._alembic(run, scripts, check, heads_of(self.own))
        return {"drift": diffs, "models": run.target_metadata}

    def op_history(self) -> dict[str, Any]:
        """Heads, every revision and the version table env.py configures (read offline)."""
        from alembic import command

        from neonflow.migrations import hook

        cfg, scripts = self._config()
        cfg.output_buffer = io.StringIO()
        run = hook.Run(marker=None, intended="offline SQL")
        if len(scripts.get_heads()) == 1:
            # env.py's configure() names the version table: render the SQL to read it (a
            # revision that needs a live database cannot render: the default table stands).
            try:
                self._alembic(run, scripts, lambda: command.upgrade(cfg, "heads", sql=True), ())
            except Failure as failure:
                if failure.kind in ("load", "target"):
                    raise
        return {
            "heads": list(scripts.get_heads()),
            "revisions": [
                {
                    "revision": script.revision,
                    "down": list(script._all_down_revisions),
                    "path": script.path,
                    "doc": (script.doc or "").strip(),
                }
                for script in scripts.walk_revisions()
            ],
            "version_table": run.version_table,
            "version_table_schema": run.version_table_schema,
        }

    def op_sql(self, start: str | None, end: str) -> dict[str, Any]:
        from alembic import command

        from neonflow.migrations import hook

        cfg, scripts = self._config()
        out = io.StringIO()
        cfg.output_buffer = out
        spec = f"{start}:{end}" if start else end
        run = hook.Run(marker=None, intended="offline SQL")
        self._alembic(run, scripts, lambda: command.upgrade(cfg, spec, sql=True), ())
        return {"sql": out.getvalue()}

    # -- running ---------------------------------------------------------------------------

    def _config(self) -> tuple[Any, Any]:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        ini = self.project["ini"]
        if self.flask is not None and "migrate" in self.flask.extensions:
            migrate = self.flask.extensions["migrate"].migrate
            cfg = migrate.get_config(self.project["script_dir"])
        else:
            cfg = Config(ini, toml_file=self.project.get("toml_file"))
            if self.project.get("flask_migrate"):
                cfg.set_main_option("script_location", self.project["script_dir"])
        cfg.stdout = io.StringIO()
        cfg.set_main_option("sqlalchemy.url", self.target["sqlalchemy_url"].replace("%", "%%"))
        scripts = None
        try:
            scripts = ScriptDirectory.from_config(cfg)
            scripts.get_heads()  # loads every revision file: a broken one is reported now
        except Exception as exc:
            raise classified(exc, self._dirs(scripts), "load") from None
        return cfg, scripts

    def _run(self, recorder: Any = None, transaction_per_migration: bool = False) -> Any:
        from neonflow.migrations import hook

        run = hook.Run(
            marker=self.marker,
            intended=self.target["intended"],
            transaction_per_migration=transaction_per_migration,
            session_settings=self.target["session_settings"],
        )
        if recorder is not None:
            run.callbacks.append(recorder)
        applied: list[str] = []
        run.callbacks.append(lambda *, step, **_: applied.extend(step.up_revision_ids))
        run.applied = applied  # type: ignore[attr-defined]
        return run

    def _alembic(self, run: Any, scripts: Any, call: Any, before: Any, way: str = "up") -> None:
        from neonflow.migrations import hook

        try:
            with hook.active(run):
                call()
        except Exception as exc:
            raise classified(exc, self._dirs(scripts), way, getattr(run, "applied", [])) from None
        if run.configured == 0:
            raise Failure("env", "env.py failed: it never called context.configure()")

    def _flask_app(self) -> None:
        from flask.cli import ScriptInfo, load_dotenv

        try:
            # As `flask` does: .flaskenv and .env (what neonflow exported stays).
            load_dotenv()
            app = ScriptInfo(app_import_path=self.project["flask_app"]).load_app()
        except Exception as exc:
            raise Failure(
                "env",
                f"the Flask app {self.project['flask_app']!r} could not be loaded: {reason(exc)}",
            ) from None
        app.app_context().push()
        self.flask = app

    def _dirs(self, scripts: Any) -> list[Path]:
        """Where revision files live: Alembic's list, or the project's when it did not load."""
        found = scripts._version_locations if scripts is not None else None
        return [Path(d).resolve() for d in found or self.project.get("version_dirs") or []]

    def failure(self, exc: BaseException) -> dict[str, Any]:
        if not isinstance(exc, Failure):
            exc = classified(exc, self._dirs(None), "env")
        reply = {"ok": False, "kind": exc.kind, "message": exc.message, **exc.extra}
        if exc.kind == "target" and self.target:
            # What env.py (a load_dotenv(override=True), say) set over neonflow's variables.
            exported = self.target.get("env") or {}
            reply["changed"] = sorted(k for k, v in exported.items() if os.environ.get(k) != v)
        return reply


def main() -> None:
    # What every run needs, loaded before the project is even known (see runner.start_early).
    import alembic.command  # noqa: F401
    import alembic.config  # noqa: F401
    import psycopg  # noqa: F401

    replies = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
    session = Session()
    for line in sys.stdin:
        request = json.loads(line)
        reply = session.handle(request)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    # Done: a thread the app started (a scheduler) must not keep the process, nor neonflow.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
