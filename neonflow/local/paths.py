"""Where the local Neon keeps its things, and the settings it chooses once (light to import)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neonflow.errors import ConfigError, LocalNeonError
from neonflow.files import write_private
from neonflow.local.postgres import free_port, new_password, new_secret


@dataclass
class StatePaths:
    """Where the local Neon keeps its things inside the state folder."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def config(self) -> Path:
        return self.root / "local.json"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def metadata(self) -> Path:
        return self.root / "state.json"

    @property
    def pid(self) -> Path:
        return self.root / "server.pid"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def tls(self) -> Path:
        """The local CA (``tls/ca.crt``: what ``sslrootcert`` points at) and server keys."""
        return self.root / "tls"

    @property
    def lock(self) -> Path:
        return self.root / "up.lock"


def check_state_dir(root: Path) -> None:
    """A ConfigError naming ``root`` and the reason unless it is a folder we can write in."""
    where = f"the local Neon's state folder {root} ([local] state_dir)"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{where} is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise ConfigError(f"{where} cannot be written: {exc.strerror or exc}") from None


def load_or_create_config(paths: StatePaths, project_id: str) -> dict[str, Any]:
    """Ports, the superuser password and the project id, chosen once and remembered."""
    check_state_dir(paths.root)
    try:
        if paths.config.exists():
            config = read_json(paths.config)
        else:
            config = {
                "project_id": project_id,
                "pg_port": free_port(),
                "api_port": free_port(),
                "pg_password": new_password(),
            }
            write_private(paths.config, json.dumps(config, indent=1))
        if not paths.token.exists():
            write_private(paths.token, new_secret("napi_", 64))
    except OSError as exc:
        raise LocalNeonError(f"cannot write in {paths.root}: {exc.strerror or exc}") from None
    return config


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the state folder; anything else is a LocalNeonError naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LocalNeonError(f"{path}: unreadable ({exc}); move it away to start afresh") from None
    if not isinstance(data, dict):
        raise LocalNeonError(f"{path}: not the local Neon's settings")
    return data
