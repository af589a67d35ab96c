"""The Alembic process imports ahead of time what env.py and the project's modules import from
the well-known libraries, and never runs the project's own code early."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from neonflow.migrations.prewarm import prewarm
    prewarm(Path(sys.argv[1]), [sys.argv[2]])
    print(json.dumps(sorted(sys.modules)))
    """
)


def test_the_projects_modules_are_read_not_run_and_their_libraries_imported(tmp_path: Path):
    (tmp_path / "alembic").mkdir()
    env_py = tmp_path / "alembic" / "env.py"
    # Standard-library imports first: they must not use up what is read before the project.
    stdlib = "\n".join(f"import {m}" for m in ("logging.config", "json", "typing", "asyncio"))
    env_py.write_text(f"{stdlib}\nfrom alembic import context\nfrom myapp.models import Base\n")
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the app ran at prewarm')\n")
    (package / "models.py").write_text(
        "from myapp import settings\nfrom .db import engine\n"
        "from sqlalchemy.orm import DeclarativeBase\n"
    )
    (package / "settings.py").write_text("import os\nimport sqlalchemy.ext.asyncio\n")
    (package / "db.py").write_text("from sqlalchemy.dialects import postgresql\n")

    done = subprocess.run(
        [sys.executable, "-P", "-c", PROBE, str(env_py), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(done.stdout))

    wanted = {"sqlalchemy.orm", "sqlalchemy.ext.asyncio", "sqlalchemy.dialects.postgresql"}
    assert wanted <= modules
    assert not {m for m in modules if m.split(".")[0] == "myapp"}
