"""Benchmark: `neonflow branch start` end to end, beside `neonctl branches create` alone.

All run against the same local Neon (started here in a temporary folder): the sample app, and
the stock `alembic init` project of tests/projects/generic (the general path: env.py as it is);
with `--baseline REF`, the sample app's start with neonflow's code at that git commit too.
neonctl is installed from npm into a temporary folder; without npm that column is skipped (and
the script says so). Also counts the HTTP requests of one `start` and times `neonflow --help`
beside `neonctl --help`.

    python bench/start.py [--runs 5] [--baseline 7f6678f]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

from common import REPO, local_project, timed

from neonflow.neon import NeonClient
from neonflow.workflow.branches import Branches

NEONFLOW = [sys.executable, "-m", "neonflow.cli.main"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr.strip()[-300:]}")


def generic_project(root: Path, state_dir: Path) -> Path:
    """tests/projects/generic (stock `alembic init`) with one revision, on the same local Neon."""
    project = root / "generic"
    shutil.copytree(REPO / "tests" / "projects" / "generic", project)
    versions = project / "alembic" / "versions"
    versions.mkdir(exist_ok=True)
    shutil.copy(REPO / "tests" / "projects" / "_revisions" / "0001_create_items.py", versions)
    (project / "neonflow.toml").write_text(
        f'[app]\nenv_file = ".env"\n[migrations]\nalembic_ini = "alembic.ini"\n'
        f'[local]\nstate_dir = "{state_dir}"\n'
    )
    return project


def baseline_code(ref: str, folder: Path) -> Path:
    """neonflow's code at git ``ref``, unpacked into ``folder`` (for PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "archive", ref, "neonflow", "sample_app"], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


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
    parser.add_argument("--baseline", help="also time the sample app with neonflow at this ref")
    args = parser.parse_args()
    with local_project("nf-bench-start-") as (project, settings, info):
        root = project.parent
        counter = iter(range(10_000))
        generic = generic_project(root, settings.state_dir)
        start_times: list[float] = []
        generic_times: list[float] = []
        before_times: list[float] = []
        before_env = None
        before_project = root / "baseline-project"
        if args.baseline:
            # The old code with its own sample app (its env.py spoke to that code).
            code = baseline_code(args.baseline, root / "baseline")
            before_env = {**os.environ, "PYTHONPATH": str(code)}
            before_project.mkdir()
            (before_project / "neonflow.toml").write_text(
                (project / "neonflow.toml")
                .read_text()
                .replace(str(REPO / "sample_app"), str(code / "sample_app"))
            )
        neonctl = install_neonctl(root / "npm")
        ctl_times: list[float] = []
        ctl_help: list[float] = []
        ctl_base: list[str] = []
        if neonctl is not None:
            ctl_base = [
                str(neonctl),
                "--api-host",
                info.api_host,
                "--api-key",
                info.token,
                "--no-analytics",
            ]
            run([*ctl_base, "branches", "list", "--project-id", info.project_id], project)

        def ctl_create() -> None:
            name = f"ctl-{next(counter)}"
            create = ["branches", "create", "--project-id", info.project_id, "--name", name]
            run([*ctl_base, *create, "-o", "json"], project)

        # Interleaved, so that the machine's load weighs on each the same.
        for _ in range(args.runs):
            start_times += timed(
                lambda: run([*NEONFLOW, "branch", "start", f"nf-{next(counter)}"], project), 1
            )
            generic_times += timed(
                lambda: run([*NEONFLOW, "branch", "start", f"g-{next(counter)}"], generic), 1
            )
            if neonctl is not None:
                ctl_times += timed(ctl_create, 1)
            if before_env is not None:
                before_times += timed(
                    lambda: run(
                        [*NEONFLOW, "branch", "start", f"b-{next(counter)}"],
                        before_project,
                        before_env,
                    ),
                    1,
                )
        with NeonClient(info.api_host, info.token, info.project_id) as client:
            Branches(settings, client).start("nf-count")
            requests = client.request_count
        help_times: list[float] = []
        for _ in range(10):
            help_times += timed(lambda: run([*NEONFLOW, "--help"], project), 1)
            if neonctl is not None:
                ctl_help += timed(lambda: run([str(neonctl), "--help"], project), 1)

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
    print()
    print(f"{'branch start':48} {'this':>10} {'anchor':>10} {'ratio':>8}")
    general = med(generic_times) / med(start_times)
    print(
        f"{'stock alembic project vs the sample app':48} {med(generic_times):9.3f}s "
        f"{med(start_times):9.3f}s {general:7.2f}x"
    )
    if before_times:
        now = med(start_times) / med(before_times)
        print(
            f"{'sample app: this code vs ' + args.baseline:48} {med(start_times):9.3f}s "
            f"{med(before_times):9.3f}s {now:7.2f}x"
        )
    print(f"HTTP requests for one `branch start`: {requests}")
    print(f"(median of {args.runs} runs; --help median of 10; ratio = neonflow / neonctl)")


if __name__ == "__main__":
    main()
