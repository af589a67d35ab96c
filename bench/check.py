"""Benchmark: `neonflow check` on the sample app, beside the same steps run by hand.

By hand: create a branch of main with NeonClient and wait until it is ready, `alembic upgrade
head` (the `alembic` command), `alembic check`, `alembic upgrade head --sql` piped into `squawk`,
then delete the branch. `neonflow check` does all that and more (per-revision locks, rewrites and
rows, the schema diff, the round trip down to the base and up again, the report). Both run
against the same local Neon, started here in a temporary folder; each column is the median of
``--runs`` runs (the minimum beside it).

    python bench/check.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import REPO, SAMPLE_INI, local_project, timed

from neonflow.local.service import LocalNeonInfo
from neonflow.neon import NeonClient

BIN = Path(sys.executable).parent
NEONFLOW = (
    [str(BIN / "neonflow")]
    if (BIN / "neonflow").is_file()
    else [sys.executable, "-m", "neonflow.cli.main"]
)
ALEMBIC = [str(BIN / "alembic")]
SQUAWK = str(BIN / "squawk")


def run(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    ok: tuple[int, ...] = (0,),
    stdin: str | None = None,
) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, input=stdin, capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(
            f"{' '.join(cmd[:4])} failed ({done.returncode}): {done.stderr.strip()[-400:]}"
        )
    return done.stdout


def neonflow_check(project: Path) -> None:
    out = run([*NEONFLOW, "check", "--format", "json"], project)
    report = json.loads(out)
    assert report["passed"], report["summary"]


def by_hand(info: LocalNeonInfo) -> None:
    with NeonClient(info.api_host, info.token, info.project_id) as client:
        main = client.find_branch("main")
        assert main is not None
        created = client.create_branch(f"hand-{uuid.uuid4().hex[:6]}", parent_id=main.id)
        try:
            client.wait_for_operations(created.operations)
            branch = created.branch
            while branch.current_state != "ready":
                time.sleep(0.05)
                branch = client.get_branch(branch.id)
            url = (
                created.connection_uris[0].connection_uri
                if created.connection_uris
                else client.connection_uri(branch.id, "neondb", "neondb_owner")
            )
            env = {**os.environ, "DATABASE_URL": url}
            alembic = [*ALEMBIC, "-c", str(SAMPLE_INI)]
            run([*alembic, "upgrade", "head"], REPO, env)
            run([*alembic, "check"], REPO, env)
            sql = run([*alembic, "upgrade", "head", "--sql"], REPO, env)
            run([SQUAWK, "--reporter", "json"], REPO, ok=(0, 1), stdin=sql)
        finally:
            client.wait_for_operations(client.delete_branch(created.branch.id))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with local_project("nf-bench-check-") as (project, _settings, info):
        neonflow_check(project)  # warm up both: the first branch, the OS file cache
        by_hand(info)
        check_times: list[float] = []
        hand_times: list[float] = []
        for _ in range(args.runs):  # interleaved, so that drift on the machine hits both
            check_times += timed(lambda: neonflow_check(project), 1)
            hand_times += timed(lambda: by_hand(info), 1)

    check_median, hand_median = statistics.median(check_times), statistics.median(hand_times)
    print(f"\nneonflow check on the sample app ({args.runs} runs, local Neon)\n")
    label = "by hand (create+wait, alembic upgrade,"
    print(f"{'':<44}{'median':>10}{'min':>10}")
    print(f"{'neonflow check':<44}{check_median:>9.3f}s{min(check_times):>9.3f}s")
    print(f"{label:<44}{hand_median:>9.3f}s{min(hand_times):>9.3f}s")
    print("  alembic check, --sql | squawk, delete)")
    print(f"\nratio neonflow check / by hand: {check_median / hand_median:.2f}x")


if __name__ == "__main__":
    main()
