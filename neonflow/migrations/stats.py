"""What a revision does, read from PostgreSQL inside its own transaction before it commits.

Runs in the Alembic process as an ``on_version_apply`` callback, on env.py's connection: the
time the revision took, the strongest lock it holds on each table, the tables it rewrote and
the rows it wrote (``pg_locks``, ``pg_class.relfilenode``, ``pg_stat_xact_user_tables``).
"""

from __future__ import annotations

from typing import Any

BOOKKEEPING = "alembic_version"

_RELATIONS = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, c.relfilenode::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
"""
_LOCKS = """
SELECT l.relation::bigint, n.nspname, c.relname, c.relkind::text, l.mode
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_ROWS = """
SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables
WHERE n_tup_ins > 0 OR n_tup_upd > 0 OR n_tup_del > 0
"""
_ELAPSED = "SELECT extract(epoch FROM clock_timestamp() - transaction_timestamp())::float8"

# PostgreSQL's table lock modes, weakest first, and what each blocks while it is held.
LOCK_MODES: dict[str, str] = {
    "AccessShareLock": "only ACCESS EXCLUSIVE (DDL)",
    "RowShareLock": "EXCLUSIVE and ACCESS EXCLUSIVE",
    "RowExclusiveLock": "SHARE and stronger (DDL, CREATE INDEX)",
    "ShareUpdateExclusiveLock": "schema changes and VACUUM",
    "ShareLock": "writes",
    "ShareRowExclusiveLock": "writes",
    "ExclusiveLock": "writes (reads go on)",
    "AccessExclusiveLock": "reads and writes",
}
_STRENGTH = {mode: rank for rank, mode in enumerate(LOCK_MODES)}

Relation = tuple[str, str, str, int]  # schema, name, relkind, relfilenode


def display(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def read_relations(conn: Any) -> dict[int, Relation]:
    rows = conn.exec_driver_sql(_RELATIONS).fetchall()
    return {int(oid): (schema, name, kind, int(node)) for oid, schema, name, kind, node in rows}


class Recorder:
    """Alembic's ``on_version_apply``: per revision id, a dict of what the revision did."""

    def __init__(self, base: dict[int, Relation]) -> None:
        self.base = base  # the relations as they were before the upgrade
        self.previous = base  # ... and before the current revision
        self.revisions: dict[str, dict[str, Any]] = {}

    def __call__(self, *, ctx: Any, step: Any, **_: Any) -> None:
        if not step.is_upgrade:
            return
        conn = ctx.connection
        seconds = float(conn.exec_driver_sql(_ELAPSED).scalar() or 0.0)
        now = read_relations(conn)
        locks = self._locks(conn.exec_driver_sql(_LOCKS).fetchall())
        rows = sorted(
            (
                {
                    "table": display(schema, name),
                    "inserted": int(i),
                    "updated": int(u),
                    "deleted": int(d),
                }
                for schema, name, i, u, d in conn.exec_driver_sql(_ROWS).fetchall()
                if name != BOOKKEEPING
            ),
            key=lambda r: str(r["table"]),
        )
        rewritten = sorted(
            display(schema, name)
            for oid, (schema, name, kind, node) in self.previous.items()
            if oid in self.base and kind in ("r", "m") and oid in now and now[oid][3] != node
        )
        self.previous = now
        for revision in step.up_revision_ids:
            self.revisions[revision] = {
                "seconds": round(seconds, 4),
                "locks": locks,
                "rows": rows,
                "rewritten": rewritten,
            }

    def _locks(self, rows: list[Any]) -> list[dict[str, Any]]:
        strongest: dict[int, tuple[str, str]] = {}
        for oid, schema, name, kind, mode in rows:
            oid = int(oid)
            if name is None:  # dropped in this transaction: name it as it was
                if oid not in self.previous:
                    continue
                schema, name, kind, _ = self.previous[oid]
            if kind not in ("r", "p", "m") or schema == "information_schema":
                continue
            if str(schema).startswith("pg_") or name == BOOKKEEPING:
                continue
            label = display(schema, name)
            if oid not in strongest or _STRENGTH.get(mode, -1) > _STRENGTH.get(
                strongest[oid][1], -1
            ):
                strongest[oid] = (label, mode)
        locks = [
            {
                "relation": label,
                "mode": mode,
                "blocks": LOCK_MODES.get(mode, "?"),
                "existing": oid in self.base,
            }
            for oid, (label, mode) in strongest.items()
        ]
        return sorted(locks, key=lambda lk: (not lk["existing"], -_STRENGTH.get(lk["mode"], -1)))
