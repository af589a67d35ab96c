"""What the benchmarks share: a timer, and a project on a local Neon of its own."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from neonflow.config import Settings, load_settings
from neonflow.local import service
from neonflow.local.service import LocalNeonInfo

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INI = REPO / "sample_app" / "alembic.ini"


def timed(
    work: Callable[[], object], runs: int, setup: Callable[[], object] | None = None
) -> list[float]:
    """Wall times of ``runs`` calls of ``work`` (``setup`` runs before each, untimed)."""
    out = []
    for _ in range(runs):
        if setup is not None:
            setup()
        started = time.perf_counter()
        work()
        out.append(time.perf_counter() - started)
    return out


@contextmanager
def local_project(prefix: str) -> Iterator[tuple[Path, Settings, LocalNeonInfo]]:
    """A project using the sample app's migrations, on a local Neon in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        (project / "neonflow.toml").write_text(
            f'[app]\nenv_file = ".env"\n'
            f'[migrations]\nalembic_ini = "{SAMPLE_INI}"\n'
            f'[local]\nstate_dir = "{root}/state"\n'
        )
        settings = load_settings(config_file=project / "neonflow.toml")
        info, _ = service.up(settings)
        try:
            yield project, settings, info
        finally:
            service.down(settings)
