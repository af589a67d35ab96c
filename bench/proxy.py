"""Benchmark: the local Neon's proxy (TLS, SCRAM-PLUS, routing) beside PostgreSQL direct.

Same role, same physical database: once through the URI the API hands back (the endpoint's own
address, ``sslmode=require&channel_binding=require``), once straight to the embedded PostgreSQL
with the proxy's internal password (no TLS: the wheel's PostgreSQL has none). Budget: at most
1.2x on the query loop and at most 5 ms added per connect.

    python bench/proxy.py [--queries 10000] [--copy-mb 100] [--connects 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from common import local_project, timed

from neonflow.local.paths import StatePaths, read_json
from neonflow.local.scram import internal_password
from neonflow.neon import NeonClient

ROLE, DB = "neondb_owner", "neondb"


def query_loop(uri: str, queries: int) -> float:
    with psycopg.connect(uri, autocommit=True) as conn:
        started = time.perf_counter()
        for i in range(queries):
            conn.execute("SELECT %s::int", (i,)).fetchone()
        return time.perf_counter() - started


def copy_in(uri: str, megabytes: int) -> float:
    line = ("x" * 1023 + "\n").encode()
    chunk = line * 1024  # 1 MiB
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE UNLOGGED TABLE bench_copy (line text)")
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bench_copy FROM STDIN") as copy:
            for _ in range(megabytes):
                copy.write(chunk)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--copy-mb", type=int, default=100)
    parser.add_argument("--connects", type=int, default=30)
    args = parser.parse_args()
    with local_project("nf-bench-proxy-") as (_, _settings, info):
        config = read_json(StatePaths(info.state_dir).config)
        with NeonClient(info.api_host, info.token, info.project_id) as client:
            main_id = next(b.id for b in client.list_branches() if b.default)
            proxied = client.connection_uri(main_id, DB, ROLE)
        with psycopg.connect(proxied) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
            assert row is not None
            physical = row[0]
        direct = (
            f"host=127.0.0.1 port={config['pg_port']} dbname={physical} user={ROLE} "
            f"password={internal_password(config['pg_password'], ROLE)} sslmode=disable"
        )

        def connect(uri: str) -> None:
            psycopg.connect(uri).close()

        med = statistics.median
        rows = []
        for _ in range(3):  # warm both paths (the proxy caches its SCRAM keys)
            connect(direct)
            connect(proxied)
        c_direct = med(timed(lambda: connect(direct), args.connects))
        c_proxy = med(timed(lambda: connect(proxied), args.connects))
        rows.append(("connect (median)", c_direct, c_proxy))
        l_direct = min(query_loop(direct, args.queries) for _ in range(3))
        l_proxy = min(query_loop(proxied, args.queries) for _ in range(3))
        rows.append((f"{args.queries} small queries (best of 3)", l_direct, l_proxy))
        p_direct = copy_in(direct, args.copy_mb)
        p_proxy = copy_in(proxied, args.copy_mb)
        rows.append((f"COPY {args.copy_mb} MB in", p_direct, p_proxy))

    print()
    print(f"{'measure':36} {'direct':>10} {'proxy':>10} {'ratio':>8}")
    for label, d, p in rows:
        print(f"{label:36} {d:9.4f}s {p:9.4f}s {p / d:7.2f}x")
    print(f"added per connect: {(c_proxy - c_direct) * 1000:.2f} ms (budget 5 ms)")
    print(f"query loop ratio: {l_proxy / l_direct:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
