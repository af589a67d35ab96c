"""Which Neon to talk to: Neon cloud (a key), a given API host, or the local Neon (neither)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from neonflow.config import NEON_CLOUD_API, Settings
from neonflow.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from neonflow.neon import NeonClient


def open_client(settings: Settings, progress: Callable[[str], None] | None = None) -> NeonClient:
    """A Neon API client for the configured backend, starting the local Neon when it is the one."""
    from neonflow.neon import NeonClient

    if settings.is_local:
        from neonflow.local import service

        info, started = service.up(settings)
        if started and progress is not None:
            progress(f"started the local Neon in {info.state_dir} (`neonflow local down` stops it)")
        return NeonClient(info.api_host, info.token, info.project_id, timeout=settings.neon.timeout)
    if settings.api_key is None:
        raise AuthError(
            f"NEON_API_KEY is not set (needed for {settings.neon.api_host}); "
            "create a key in the Neon console and export it"
        )
    if not settings.neon.project_id:
        raise ConfigError("set [neon] project_id in neonflow.toml (or NEONFLOW_NEON__PROJECT_ID)")
    host = settings.neon.api_host or NEON_CLOUD_API
    return NeonClient(
        host,
        settings.api_key.get_secret_value(),
        settings.neon.project_id,
        timeout=settings.neon.timeout,
    )
