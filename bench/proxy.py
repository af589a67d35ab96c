"""Benchmark: the local Neon's proxy (TLS, SCRAM-PLUS, routing) beside PostgreSQL direct.

Same role, same physical database: once through the URI the API hands back (the endpoint's own
address, ``sslmode=require&channel_binding=require``: TLS, as every user has it), once straight to
the embedded PostgreSQL over loopback TCP with the proxy's internal password and no TLS (the
wheel's PostgreSQL is built without OpenSSL: there is no direct side with TLS to compare). And,
as the floor, through bench/tls_relay.py: TLS and the same Unix socket, nothing else (what any
TLS front door to this PostgreSQL costs). The sides take turns in one run (the query loops every 250
queries), in an order rotated each turn; medians, and the load average, as this runs on shared
machines. Budget: at most
1.2x on the query loop and 5 ms added per connect.

    python bench/proxy.py [--queries 10000] [--rounds 5] [--copy-mb 100] [--connects 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from common import local_project

from neonflow.local.paths import StatePaths, read_json
from neonflow.local.scram import internal_password
from neonflow.neon import NeonClient

ROLE, DB = "neondb_owner", "neondb"


def connect(uri: str) -> float:
    started = time.perf_counter()
    psycopg.connect(uri).close()
    return time.perf_counter() - started


def query_loops(uris: list[str], queries: int, block: int = 250) -> list[float]:
    """A loop of ``queries`` small queries on each side, the sides taking turns every ``block``.

    So a burst of load on the machine falls on every side alike, not on whichever loop it hits.
    """
    with ExitStack() as stack:
        conns = [stack.enter_context(psycopg.connect(uri, autocommit=True)) for uri in uris]
        times = [0.0] * len(conns)
        for turn, start in enumerate(range(0, queries, block)):
            for k in range(len(conns)):
                side = (turn + k) % len(conns)
                conn = conns[side]
                started = time.perf_counter()
                for i in range(start, min(start + block, queries)):
                    conn.execute("SELECT %s::int", (i,)).fetchone()
                times[side] += time.perf_counter() - started
        return times


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


def interleaved(measure: Callable[[str], float], uris: list[str], rounds: int) -> list[list[float]]:
    """``rounds`` times each side, taking turns, the order rotated every round."""
    times: list[list[float]] = [[] for _ in uris]
    for i in range(rounds):
        for k in range(len(uris)):
            side = (i + k) % len(uris)
            times[side].append(measure(uris[side]))
    return times


@contextmanager
def tls_relay(state_dir: Path, backend: Path) -> Iterator[int]:
    """bench/tls_relay.py in a process of its own; its port."""
    script = Path(__file__).with_name("tls_relay.py")
    cmd = [sys.executable, str(script), str(state_dir / "tls"), str(backend)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as relay:
        try:
            assert relay.stdout is not None
            yield int(relay.stdout.readline())
        finally:
            relay.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="query loops and COPYs per side")
    parser.add_argument("--copy-mb", type=int, default=100)
    parser.add_argument("--connects", type=int, default=30)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with local_project("nf-bench-proxy-") as (_, _settings, info):
        state = StatePaths(info.state_dir)
        config = read_json(state.config)
        with NeonClient(info.api_host, info.token, info.project_id) as client:
            main_id = next(b.id for b in client.list_branches() if b.default)
            proxied = client.connection_uri(main_id, DB, ROLE)
        with psycopg.connect(proxied) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
            assert row is not None
            physical = row[0]
        login = (
            f"dbname={physical} user={ROLE} "
            f"password={internal_password(config['pg_password'], ROLE)}"
        )
        direct = f"host=127.0.0.1 port={config['pg_port']} {login} sslmode=disable"
        backend = state.root / "run" / f".s.PGSQL.{config['pg_port']}"
        with tls_relay(state.root, backend) as port:
            uris = [direct, f"host=127.0.0.1 port={port} {login} sslmode=require", proxied]
            interleaved(connect, uris, 6)  # warm every path (the proxy caches SCRAM keys)
            connects = interleaved(connect, uris, args.connects)
            loops = [query_loops(uris, args.queries) for _ in range(args.rounds)]
            measured = [
                (f"connect (median of {args.connects})", connects),
                (
                    f"{args.queries} small queries (median of {args.rounds})",
                    [list(side) for side in zip(*loops, strict=True)],
                ),
                (
                    f"COPY {args.copy_mb} MB in (median of {args.rounds})",
                    interleaved(lambda uri: copy_in(uri, args.copy_mb), uris, args.rounds),
                ),
            ]
    load_after = os.getloadavg()
    med = statistics.median
    print(
        "\ndirect: loopback TCP, no TLS (this PostgreSQL has none); floor: bench/tls_relay.py "
        "(TLS, one hop);\nproxy: the API's URI (TLS, SCRAM-SHA-256-PLUS, routing)"
    )
    print(f"{'measure':40} {'direct':>9} {'floor':>9} {'proxy':>9}  proxy/direct  floor/direct")
    for label, (d, f, p) in measured:
        print(
            f"{label:40} {med(d):8.4f}s {med(f):8.4f}s {med(p):8.4f}s  "
            f"{med(p) / med(d):11.2f}x  {med(f) / med(d):11.2f}x"
        )
    (c_direct, _, c_proxy), (l_direct, _, l_proxy) = measured[0][1], measured[1][1]
    print(f"added per connect: {(med(c_proxy) - med(c_direct)) * 1000:.2f} ms (budget 5 ms)")
    print(f"query loop: {med(l_proxy) / med(l_direct):.2f}x (budget 1.2x)")
    print(f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after")


if __name__ == "__main__":
    main()
