"""Benchmark: `neonflow branch start` end to end, beside `neonctl branches create` alone.

Both run against the same local Neon (started here in a temporary folder). neonctl is installed
from npm into a temporary folder; without npm that column is skipped (and the script says so).
Also counts the HTTP requests of one `start` and times `neonflow --help` beside `neonctl --help`.

    python bench/start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from common import local_project, timed

from neonflow.neon import NeonClient
from neonflow.workflow.branches import Branches

NEONFLOW = [sys.executable, "-m", "neonflow.cli.main"]


def run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr.strip()[-300:]}")


def install_neonctl(folder: Path) -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: the neonctl column is skipped")
        return None
    print(f"installing neonctl from npm into {folder} ...", flush=True)
    subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder), "neonctl"],
        check=True,
        capture_output=True,
    )
    return folder / "node_modules" / ".bin" / "neonctl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with local_project("nf-bench-start-") as (project, settings, info):
        root = project.parent
        counter = iter(range(10_000))
        start_times = timed(
            lambda: run([*NEONFLOW, "branch", "start", f"nf-{next(counter)}"], project),
            args.runs,
        )
        with NeonClient(info.api_host, info.token, info.project_id) as client:
            Branches(settings, client).start("nf-count")
            requests = client.request_count
        help_times = timed(lambda: run([*NEONFLOW, "--help"], project), 10)

        neonctl = install_neonctl(root / "npm")
        ctl_times: list[float] = []
        ctl_help: list[float] = []
        if neonctl is not None:
            base = [
                str(neonctl),
                "--api-host",
                info.api_host,
                "--api-key",
                info.token,
                "--no-analytics",
            ]
            run([*base, "branches", "list", "--project-id", info.project_id], project)
            ctl_times = timed(
                lambda: run(
                    [
                        *base,
                        "branches",
                        "create",
                        "--project-id",
                        info.project_id,
                        "--name",
                        f"ctl-{next(counter)}",
                        "-o",
                        "json",
                    ],
                    project,
                ),
                args.runs,
            )
            ctl_help = timed(lambda: run([str(neonctl), "--help"], project), 10)

    med = statistics.median
    print()
    print(f"{'measure':48} {'neonflow':>10} {'neonctl':>10} {'ratio':>8}")
    rows = [
        ("branch start (create+wait+env+migrate) vs create", start_times, ctl_times),
        ("--help", help_times, ctl_help),
    ]
    for label, ours, theirs in rows:
        t = f"{med(theirs):9.3f}s" if theirs else "   skipped"
        ratio = f"{med(ours) / med(theirs):7.2f}x" if theirs else "       -"
        print(f"{label:48} {med(ours):9.3f}s {t} {ratio}")
    print(f"HTTP requests for one `branch start`: {requests}")
    print(f"(median of {args.runs} runs; --help median of 10; ratio = neonflow / neonctl)")


if __name__ == "__main__":
    main()
