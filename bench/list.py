"""Benchmark: `neonflow branch list` with 10, 100 and 200 branches on the local Neon.

Times `Branches.list()` (every branch's revision read; and without revisions) and counts its API
requests, against the budget: at most 0.6 s at 200 branches with revisions, at most 3 requests,
flat in the number of branches. With `--baseline REF` the same list with neonflow's code at that
git commit too (in a process of its own, on the same server and branches). The parent is
migrated first, so every branch has a revision to read.

    python bench/list.py [--runs 5] [--baseline cddc3c3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import local_project, timed
from start import baseline_code

from neonflow.config import Settings
from neonflow.local.service import LocalNeonInfo
from neonflow.neon import NeonClient
from neonflow.workflow.branches import Branches

SIZES = (10, 100, 200)
BUDGET_SECONDS = 0.6  # at 200 branches, revisions read
BUDGET_REQUESTS = 3

# Run with the old code on PYTHONPATH: the median wall time of its list, and its requests.
OLD_LIST = """
import json, statistics, sys, time
from neonflow.config import load_settings
from neonflow.neon import NeonClient
from neonflow.workflow.branches import Branches
toml, api_host, token, project_id, runs = sys.argv[1:]
settings = load_settings(config_file=__import__("pathlib").Path(toml))
with NeonClient(api_host, token, project_id) as client:
    workflow, times = Branches(settings, client), []
    for _ in range(int(runs)):
        before, started = client.request_count, time.perf_counter()
        workflow.list()
        times.append(time.perf_counter() - started)
    print(json.dumps([statistics.median(times), client.request_count - before]))
"""


def grow(client: NeonClient, parent_id: str, count: int) -> None:
    for _ in range(count):
        created = client.create_branch(f"b-{len(client.list_branches())}", parent_id=parent_id)
        client.wait_for_operations(created.operations)


def requests_of(client: NeonClient, work: Branches, revisions: bool | None) -> int:
    before = client.request_count
    work.list(revisions=revisions)
    return client.request_count - before


def baseline(code: Path, project: Path, info: LocalNeonInfo, runs: int) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    args = [str(project / "neonflow.toml"), info.api_host, info.token, info.project_id]
    done = subprocess.run(
        [sys.executable, "-c", OLD_LIST, *args, str(runs)],
        cwd=project,  # not the checkout: its neonflow would come first on sys.path
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    seconds, requests = json.loads(done.stdout)
    return float(seconds), int(requests)


def migrate_parent(settings: Settings, client: NeonClient) -> str:
    workflow = Branches(settings, client)
    main = next(b for b in client.list_branches() if b.default)
    with workflow.runner() as runner:
        workflow.migrate(runner, workflow.url(main), "the parent branch")
    return main.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="also time the list with neonflow at this ref")
    args = parser.parse_args()
    med = statistics.median
    rows = []
    with (
        local_project("nf-bench-list-") as (project, settings, info),
        tempfile.TemporaryDirectory(prefix="nf-bench-list-code-") as tmp,
    ):
        code = baseline_code(args.baseline, Path(tmp)) if args.baseline else None
        with NeonClient(info.api_host, info.token, info.project_id) as client:
            parent_id = migrate_parent(settings, client)
            work = Branches(settings, client)
            for size in SIZES:
                grow(client, parent_id, size - len(client.list_branches()))
                print(f"{size} branches ...", flush=True)
                work.list()  # warm: imports, the first connections' TLS set-up
                with_revisions = med(timed(work.list, args.runs))
                without = med(timed(lambda: work.list(revisions=False), args.runs))
                requests = requests_of(client, work, None)
                old = baseline(code, project, info, args.runs) if code is not None else None
                rows.append((size, with_revisions, requests, without, old))

    print()
    head = f"{'branches':>8} {'list':>9} {'requests':>8} {'/budget':>8} {'no-rev':>9}"
    print(head + (f" {args.baseline + ' list':>14} {'requests':>8} {'ratio':>7}" if code else ""))
    for size, seconds, requests, without, old in rows:
        line = (
            f"{size:8d} {seconds:8.3f}s {requests:8d} {seconds / BUDGET_SECONDS:7.2f}x "
            f"{without:8.3f}s"
        )
        if old is not None:
            line += f" {old[0]:13.3f}s {old[1]:8d} {seconds / old[0]:6.2f}x"
        print(line)
    print(
        f"budget: list <= {BUDGET_SECONDS} s at {SIZES[-1]} branches with revisions "
        f"(/budget = list / {BUDGET_SECONDS} s), <= {BUDGET_REQUESTS} requests, flat in N; "
        f"median of {args.runs} runs" + ("; ratio = this code / the baseline" if code else "")
    )


if __name__ == "__main__":
    main()
