"""``promote`` on a project with no revision yet (``alembic init`` and nothing more)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from neonflow.config import load_settings
from neonflow.errors import UsageError
from neonflow.local.service import LocalNeonInfo
from neonflow.workflow.branches import Branches
from tests.conftest import make_client

PROJECTS = Path(__file__).parents[1] / "projects"


def test_promote_without_any_revision_says_there_is_nothing_to_ship(
    tmp_path: Path, local_neon: LocalNeonInfo
) -> None:
    root = tmp_path / "fresh"
    shutil.copytree(PROJECTS / "generic", root)
    (root / "neonflow.toml").write_text(
        f'[app]\nenv_file = ".env"\n\n[migrations]\nalembic_ini = "alembic.ini"\n\n'
        f'[local]\nstate_dir = "{local_neon.state_dir}"\n'
    )
    name = f"empty-{uuid.uuid4().hex[:6]}"
    with make_client(local_neon) as client:
        workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)
        assert workflow.start(name).revision == []

        with pytest.raises(UsageError) as refused:
            workflow.promote(name)

        message = str(refused.value)
        assert "no migration" in message and "nothing to promote" in message
        assert "heads" not in message
        assert client.find_branch(name) is not None  # nothing was done
        workflow.delete(name)
