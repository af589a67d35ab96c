"""Settings for the sample app: defaults, then ``sample_app/.env``, then the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_FILE = Path(__file__).with_name(".env")

DEFAULTS: dict[str, Any] = {
    "DB_POOL_SIZE": 5,
    "DB_MAX_OVERFLOW": 5,
    "DB_POOL_RECYCLE": 300,
    "DB_CONNECT_ATTEMPTS": 5,
    "DB_CONNECT_DELAY": 0.5,
    "DB_CONNECT_MAX_DELAY": 8.0,
    "DB_WAIT_ON_START": True,
}

_PSYCOPG_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"}


def normalize_database_url(url: str) -> str:
    """Point a PostgreSQL URL at the psycopg 3 driver, keeping the rest byte for byte.

    ``postgres://u:p%40ss@host/db?sslmode=require`` -> ``postgresql+psycopg://u:p%40ss@host/db?...``
    Other schemes are returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL has no scheme (expected postgresql://...)")
    if scheme.lower() in _PSYCOPG_SCHEMES:
        return f"postgresql+psycopg://{rest}"
    return url


def read_env_file(path: Path | None = ENV_FILE) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file; comments, blanks and ``export`` are skipped."""
    if path is None or not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def get_env(name: str, env_file: Path | None = ENV_FILE) -> str | None:
    """An environment variable, else its value in ``env_file`` (variables already set win)."""
    value = os.environ.get(name)
    return value if value is not None else read_env_file(env_file).get(name)


def _coerce(name: str, value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"{name} must be a {type(default).__name__}, got {value!r}") from None


def engine_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Pool settings for Neon: check connections before use, recycle before Neon's idle cut-off."""
    return {
        "pool_pre_ping": True,
        "pool_size": config["DB_POOL_SIZE"],
        "max_overflow": config["DB_MAX_OVERFLOW"],
        "pool_recycle": config["DB_POOL_RECYCLE"],
    }


def load_config(
    overrides: Mapping[str, Any] | None = None, env_file: Path | None = ENV_FILE
) -> dict[str, Any]:
    """Defaults < ``env_file`` < environment < ``overrides``, as Flask config keys."""
    source = {**read_env_file(env_file), **os.environ}
    config = dict(DEFAULTS)
    config.update({k: _coerce(k, source[k], v) for k, v in DEFAULTS.items() if k in source})
    if "DATABASE_URL" in source:
        config["DATABASE_URL"] = source["DATABASE_URL"]
    config.update(overrides or {})
    url = config.get("SQLALCHEMY_DATABASE_URI") or config.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set: export it or put it in sample_app/.env")
    config["SQLALCHEMY_DATABASE_URI"] = normalize_database_url(str(url))
    config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(config))
    return config
