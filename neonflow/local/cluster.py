"""The physical PostgreSQL work under the branch model, in the one embedded cluster.

Databases are copied with ``CREATE DATABASE … TEMPLATE … STRATEGY`` (a copy-on-write clone where the
file system can), renamed and dropped, and their schema read with ``pg_dump``. This module knows
databases, not branches: the branch model says which database becomes which.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from neonflow import polling
from neonflow.local.postgres import EmbeddedPostgres, bin_dir

WAL_LOG_BELOW_BYTES = 32 * 1024 * 1024
WAL_HEADROOM_BYTES = 16 * 1024 * 1024  # one WAL segment
_FICLONE = 0x40049409  # linux/fs.h: share the source's extents (a reflink)


class Cluster:
    """Database-level work on one :class:`EmbeddedPostgres`; every method connects on its own."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.pg = pg
        self.clone = False  # whether copies are copy-on-write clones (see probe)
        self._copy_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    def _connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.dsn(database), autocommit=True)

    def execute(self, statement: sql.Composed, ignore: str | None = None) -> None:
        """Run ``statement``; an error whose text holds ``ignore`` is no error."""
        with self._connect() as conn:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                if ignore is None or ignore not in str(exc):
                    raise

    def drop(self, database: str) -> None:
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )

    def size(self, database: str) -> int | None:
        """The size of ``database``, or None when there is no such database."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
        return int(row[0]) if row else None

    # -- copies --------------------------------------------------------------------------------

    def copy(self, src: str, dst: str, owner: str) -> int:
        """``dst`` becomes a fresh copy of ``src`` (replacing any ``dst``); returns its size.

        Idempotent, so an operation interrupted by a stop can simply run again.
        """
        with self._connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dst))
            )
            row = conn.execute("SELECT pg_database_size(%s)", (src,)).fetchone()
            size = int(row[0]) if row else 0
            self._check_room(src, 0 if self.clone else size)
            with self._copy_locks[src], self.no_connections(conn, src):
                if self.clone:
                    conn.execute("SET file_copy_method = clone")
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {} OWNER {}").format(
                        sql.Identifier(dst),
                        sql.Identifier(src),
                        sql.SQL(self._strategy(size)),
                        sql.Identifier(owner),
                    )
                )
        return size

    def _check_room(self, src: str, size: int) -> None:
        """Refuse a copy the disk cannot hold: PostgreSQL fails a data file that cannot grow
        with an error, but stops the whole cluster (PANIC) when its WAL cannot grow."""
        free = shutil.disk_usage(self.pg.data_dir).free
        need = size + WAL_HEADROOM_BYTES
        if free < need:
            mb = 1024 * 1024
            raise RuntimeError(
                f"No space left on device: a copy of {src} needs about {need // mb} MB, "
                f"{free // mb} MB are free in {self.pg.data_dir}"
            )

    def _strategy(self, size: int) -> str:
        """FILE_COPY copies files but checkpoints twice; WAL_LOG writes the copy through the WAL.

        Measured here, WAL_LOG wins below a few tens of MB and FILE_COPY above (by far at 1 GB);
        a copy-on-write clone wins at every size.
        """
        return "FILE_COPY" if self.clone or size >= WAL_LOG_BELOW_BYTES else "WAL_LOG"

    def truncate_all(self, database: str) -> None:
        """Empty every table of ``database`` (a schema-only branch keeps the schema alone)."""
        with self._connect(database) as conn:
            tables = conn.execute(
                "SELECT schemaname, tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            if tables:
                names = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)
                conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))

    # -- replacing databases (a restore) ---------------------------------------------------------

    def stage(
        self, pairs: list[tuple[str, str, str]], tag: str, marker: str
    ) -> list[tuple[str, str]]:
        """Copy each ``(src, dst, owner)`` aside, as ``(stage, dst)``, for :meth:`swap_in`.

        A ``dst`` already marked with ``marker`` was replaced by this restore before an interruption
        and is left alone. Should a copy fail (a full disk), the stages made so far are dropped and
        every ``dst`` still has its data.
        """
        with self._connect() as conn:
            done = {dst for _, dst, _ in pairs if self._comment(conn, dst) == marker}
        todo = [(src, dst, owner) for src, dst, owner in pairs if dst not in done]
        staged = [(f"nf_stage_{tag}_{i}", dst) for i, (_, dst, _) in enumerate(todo)]
        try:
            for (src, _, owner), (stage, _) in zip(todo, staged, strict=True):
                self.copy(src, stage, owner)
        except BaseException:
            for stage, _ in staged:
                with suppress(psycopg.Error):  # the failure itself is what the operation reports
                    self.drop(stage)
            raise
        return staged

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new``; done already (before an interruption) is done."""
        with self._connect() as conn:
            if not self._exists(conn, old) or self._exists(conn, new):
                return
            with self.no_connections(conn, old):
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(old), sql.Identifier(new)
                    )
                )
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(new))
            )

    def swap_in(self, staged: list[tuple[str, str]], marker: str) -> None:
        """Each ``(stage, dst)``: ``dst`` is dropped and ``stage`` takes its name, marked."""
        with self._connect() as conn:
            for stage, dst in staged:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dst))
                )
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(stage), sql.Identifier(dst)
                    )
                )
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(dst), sql.Literal(marker)
                    )
                )

    @contextmanager
    def no_connections(
        self, conn: psycopg.Connection[Any], database: str
    ) -> Iterator[psycopg.Connection[Any]]:
        """Refuse new sessions on ``database``, end the current ones, and let them back after.

        A template must have no other sessions, and PostgreSQL would otherwise wait 5 seconds
        before failing; Neon also interrupts sessions when it resets a branch.
        """
        ident = sql.Identifier(database)
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        try:

            def none_left() -> bool | None:
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchone()
                return True if not row or row[0] == 0 else None

            # Sessions still ending after 10 s: the copy itself then says what holds it.
            polling.until(none_left, 10, interval=0.01, max_interval=0.01)
            yield conn
        finally:
            if self._exists(conn, database):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))

    @staticmethod
    def _comment(conn: psycopg.Connection[Any], database: str) -> str | None:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (database,),
        ).fetchone()
        return row[0] if row else None

    @staticmethod
    def _exists(conn: psycopg.Connection[Any], database: str) -> bool:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        return row is not None

    # -- reading ---------------------------------------------------------------------------------

    def dump_schema(self, database: str) -> str:
        """The schema of ``database`` as SQL, without what changes from one dump to the next."""
        env = {**os.environ, "PGPASSWORD": self.pg.password, "LC_ALL": "C.UTF-8"}
        cmd = [
            str(bin_dir() / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.pg.port),
            "-U",
            "postgres",
            database,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.strip()[:200]}")
        # Lines that change from one dump to the next would show up in every diff.
        keep = [
            line
            for line in done.stdout.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped "))
        ]
        return "\n".join(keep).strip() + "\n"

    # -- copy-on-write -------------------------------------------------------------------------

    def probe(self) -> None:
        """Whether ``file_copy_method = clone`` really clones (a copy-on-write file system).

        PostgreSQL 18 clones with ``copy_file_range()``, which ext4 also accepts as a plain
        in-kernel copy that is slower than ``copy``: so ask the file system itself (FICLONE)
        whether it shares extents, and only then whether PostgreSQL takes the setting.
        """
        self.clone = reflink_supported(self.pg.data_dir.parent) and self._takes_clone()

    def _takes_clone(self) -> bool:
        probe = "neonflow_clone_probe"
        try:
            with self._connect() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(probe)))
                conn.execute("SET file_copy_method = clone")
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(
                        sql.Identifier(probe)
                    )
                )
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(probe)))
            return True
        except psycopg.Error:
            return False


def reflink_supported(folder: Path) -> bool:
    """Whether the file system of ``folder`` can clone a file (btrfs, XFS with reflink, …)."""
    try:
        with (
            tempfile.NamedTemporaryFile(dir=folder) as src,
            tempfile.NamedTemporaryFile(dir=folder) as dst,
        ):
            src.write(b"x" * 4096)
            src.flush()
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        return True
    except OSError:
        return False
