"""Benchmark: a branch through the local Neon's API, beside the bare copy and pg_dump | pg_restore.

For parents of about 10 MB, 100 MB and 1 GB (a table of generate_series rows with a wide text
column, grown until pg_database_size reaches the size), on one local Neon started here in a
temporary folder, times:

- API: create the branch (NeonClient) and poll its operations every 10 ms until they finish;
- bare: ``CREATE DATABASE … TEMPLATE parent STRATEGY FILE_COPY`` on the same PostgreSQL;
- dump: ``pg_dump -Fc parent | pg_restore -d new`` (the binaries of the embedded PostgreSQL),
  including the ``CREATE DATABASE`` of the empty target.

Each is run ``--runs`` times after a CHECKPOINT (so none pays for the fill's dirty pages); the
table shows medians and the ratios API/bare and dump/API.

    python bench/branch_clone.py [--sizes 10,100,1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from common import timed
from psycopg import sql

from neonflow.config import load_settings
from neonflow.local import service
from neonflow.local.cluster import reflink_supported
from neonflow.local.postgres import EmbeddedPostgres, bin_dir
from neonflow.local.service import LocalNeonInfo
from neonflow.neon import NeonClient, Operation

MB = 1024 * 1024
# 960 bytes of text a row: stored inline, not compressed by TOAST
INSERT = (
    "INSERT INTO filler SELECT g, repeat(md5(g::text), 30) "
    "FROM generate_series(%s::bigint, %s::bigint) g"
)


def superuser(info: LocalNeonInfo) -> EmbeddedPostgres:
    config = json.loads((info.state_dir / "local.json").read_text())
    return EmbeddedPostgres(info.state_dir / "pgdata", config["pg_port"], config["pg_password"])


def admin(pg: EmbeddedPostgres) -> psycopg.Connection[Any]:
    return psycopg.connect(pg.dsn(), autocommit=True)


def db_size(pg: EmbeddedPostgres, name: str) -> int:
    with admin(pg) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
        return int(row[0]) if row else 0


def checkpoint(pg: EmbeddedPostgres) -> None:
    with admin(pg) as conn:
        conn.execute("CHECKPOINT")


def drop(pg: EmbeddedPostgres, name: str) -> None:
    with admin(pg) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def fill(uri: str, pg: EmbeddedPostgres, database: str, target: int) -> int:
    """Grow the parent with wide rows until it holds ``target`` bytes; return its size."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler (id bigint PRIMARY KEY, pad text NOT NULL)")
        start = 0
        while (size := db_size(pg, database)) < target:
            missing = target - size
            rows = max(1_000, min(200_000, missing // 1100))
            conn.execute(INSERT, (start + 1, start + rows))
            start += rows
    return size


def wait(client: NeonClient, operations: list[Operation]) -> None:
    """Poll every 10 ms (the client's own wait backs off, which would blur the timing)."""
    for op in operations:
        while True:
            got = client.get_operation(op.id)
            if got.done:
                if not got.succeeded:
                    raise SystemExit(f"operation {got.id} ({got.action}) {got.status}: {got.error}")
                break
            time.sleep(0.01)


def clone_supported(pg: EmbeddedPostgres) -> bool:
    probe = f"bench_probe_{uuid.uuid4().hex[:8]}"
    try:
        with admin(pg) as conn:
            conn.execute("SET file_copy_method = clone")
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(
                    sql.Identifier(probe)
                )
            )
    except psycopg.Error:
        return False
    drop(pg, probe)
    return True


def bench_size(
    client: NeonClient, pg: EmbeddedPostgres, megabytes: int, runs: int, clone: bool
) -> dict[str, float]:
    parent = client.create_branch(f"parent-{megabytes}mb")
    wait(client, parent.operations)
    assert parent.connection_uris
    details = parent.connection_uris[0]
    source = details.connection_parameters.database
    print(f"  filling the {megabytes} MB parent ...", flush=True)
    size = fill(details.connection_uri, pg, source, megabytes * MB)

    made: list[str] = []  # branch ids
    drops: list[str] = []  # bare and restored databases

    def api() -> None:
        created = client.create_branch(f"b{megabytes}-{len(made)}", parent_id=parent.branch.id)
        made.append(created.branch.id)
        wait(client, created.operations)

    def bare(method: str = "copy") -> None:
        target = f"bare_{uuid.uuid4().hex[:8]}"
        with admin(pg) as conn:
            conn.execute(sql.SQL("SET file_copy_method = {}").format(sql.Identifier(method)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(target), sql.Identifier(source)
                )
            )
        drops.append(target)

    def dump() -> None:
        target = f"dump_{uuid.uuid4().hex[:8]}"
        with admin(pg) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
        drops.append(target)
        env = {**os.environ, "PGPASSWORD": pg.password}
        where = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
        dumper = subprocess.Popen(
            [str(bin_dir() / "pg_dump"), "-Fc", *where, source], stdout=subprocess.PIPE, env=env
        )
        restored = subprocess.run(
            [str(bin_dir() / "pg_restore"), "--no-owner", *where, "-d", target],
            stdin=dumper.stdout,
            env=env,
            capture_output=True,
            text=True,
        )
        assert dumper.stdout is not None
        dumper.stdout.close()
        if dumper.wait() != 0 or restored.returncode != 0:
            raise SystemExit(f"pg_dump | pg_restore failed: {restored.stderr.strip()[-300:]}")

    def clean() -> None:
        for branch_id in made:
            wait(client, client.delete_branch(branch_id))
        made.clear()
        for name in drops:
            drop(pg, name)
        drops.clear()
        checkpoint(pg)

    methods: list[tuple[str, Callable[[], None]]] = [("api", api), ("bare", bare)]
    if clone:
        methods.append(("clone", lambda: bare("clone")))
    methods.append(("dump", dump))
    results = {"size_mb": size / MB}
    for label, work in methods:
        print(f"  {label} x{runs} ...", flush=True)
        results[label] = statistics.median(timed(work, runs, setup=clean))
    clean()
    wait(client, client.delete_branch(parent.branch.id))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", default="10,100,1000", help="parent sizes in MB, comma-separated"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each method per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    root_dir = Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="nf-bench-clone-") as tmp:
        root = Path(tmp)
        (root / "neonflow.toml").write_text(f'[local]\nstate_dir = "{root}/state"\n')
        settings = load_settings(config_file=root / "neonflow.toml")
        info, _ = service.up(settings)
        try:
            pg = superuser(info)
            clone = clone_supported(pg)
            rows = []
            with NeonClient(info.api_host, info.token, info.project_id) as client:
                for megabytes in sizes:
                    print(f"{megabytes} MB:", flush=True)
                    rows.append(bench_size(client, pg, megabytes, args.runs, clone))
        finally:
            service.down(settings)
            shutil.rmtree(root / "state", ignore_errors=True)

    print()
    print(f"median of {args.runs} runs; bare = CREATE DATABASE … STRATEGY FILE_COPY, ", end="")
    uses = "clone" if reflink_supported(root_dir) else "copy (no copy-on-write file system here)"
    if clone:
        print("with file_copy_method copy, and with clone as PostgreSQL accepts it")
    else:
        print("file_copy_method = clone is not available here")
    print(f"the local Neon uses file_copy_method {uses}; WAL_LOG below 32 MB")
    header = ["parent", "API ready", "bare FILE_COPY"]
    header += ["bare clone"] if clone else []
    header += ["dump|restore", "API/bare", "dump/API"]
    table = [header]
    for r in rows:
        line = [f"{r['size_mb']:.0f} MB", f"{r['api']:.3f} s", f"{r['bare']:.3f} s"]
        line += [f"{r['clone']:.3f} s"] if clone else []
        line += [
            f"{r['dump']:.3f} s",
            f"{r['api'] / r['bare']:.2f}x",
            f"{r['dump'] / r['api']:.1f}x",
        ]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
