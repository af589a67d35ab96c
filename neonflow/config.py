"""Settings: ``neonflow.toml``, ``NEONFLOW_*`` environment variables and ``NEON_API_KEY``.

Precedence, highest first: values passed to :func:`load_settings`, the environment, the file,
defaults.
Nested keys are reached from the environment with a double underscore:
``NEONFLOW_NEON__PARENT=develop`` overrides ``[neon] parent``.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from neonflow.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from neonflow.appenv import AppVariables

CONFIG_FILE = "neonflow.toml"
NEON_CLOUD_API = "https://console.neon.tech/api/v2"


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` as a timedelta; anything else is a UsageError."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a duration: use a number and s, m, h, d or w (e.g. 7d)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NeonSettings(_Section):
    project_id: str = ""
    parent: str = "main"
    database: str = "neondb"
    role: str = "neondb_owner"
    api_host: str = ""
    # Seconds one API request may take, its retries included (a host that never answers).
    timeout: float = Field(default=60.0, gt=0, le=3600)


class AppSettings(_Section):
    env_file: str = ".env"
    env_var: str = Field(default="DATABASE_URL", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Several variables instead of one URL: name -> template over {url}, {host}, {port}, …
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        from neonflow import appenv

        if value:
            appenv.validate(value)
        return value

    @property
    def variables(self) -> AppVariables:
        from neonflow.appenv import AppVariables

        return AppVariables(dict(self.env)) if self.env else AppVariables.single(self.env_var)


class MigrationSettings(_Section):
    alembic_ini: str = "alembic.ini"
    # The folder Alembic runs from (where you type `alembic`); default: the ini's folder.
    cwd: str = ""
    # A Flask-Migrate app: "package.module:app" or "package.module:create_app()".
    flask_app: str = ""
    # A PostgreSQL duration: it goes into the connection's options, so nothing else may.
    lock_timeout: str = Field(default="5s", pattern=r"^\d+(us|ms|s|min|h|d)?$")


class BranchSettings(_Section):
    prefix: str = ""
    expires_in: str = "7d"

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str) -> str:
        return expiry(value)


MAX_EXPIRY = timedelta(days=30)


def expiry(value: str) -> str:
    """An ``expires_in`` Neon accepts (a future time at most 30 days ahead), or "" for none.

    For pydantic validators: a bad value raises ValueError, reported as a config error at load.
    """
    if not value.strip():
        return ""
    try:
        duration = parse_duration(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    if duration <= timedelta(0):
        raise ValueError(
            f"{value.strip()!r} expires a branch as it is created; Neon takes a time in the "
            'future: give a positive duration (e.g. 7d), or "" for no expiration'
        )
    if duration > MAX_EXPIRY:
        raise ValueError(f"Neon expires branches at most 30 days ahead ({value.strip()!r} given)")
    return value.strip()


class CheckSettings(_Section):
    # squawk rules that fail the check; every other finding is a warning
    fail_on: list[str] = Field(
        default_factory=lambda: [
            "adding-not-nullable-field",
            "adding-required-field",
            "changing-column-type",
            "renaming-column",
            "renaming-table",
            "ban-drop-column",
            "ban-drop-table",
            "ban-drop-database",
        ]
    )
    ignore: list[str] = Field(default_factory=list)
    # How long a throw-away branch (check's copy, promote's rehearsal) outlives a killed run.
    expires_in: str = "1h"

    @field_validator("expires_in")
    @classmethod
    def _throwaway_expiry(cls, value: str) -> str:
        try:
            duration = parse_duration(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        if not timedelta(0) < duration <= timedelta(days=30):
            raise ValueError(
                "throw-away branches must expire, at most 30 days ahead (Neon's limit)"
            )
        return value.strip()


class FaultSettings(_Section):
    """Fault injection for the local Neon (off unless a rate is set)."""

    rate_429: float = Field(default=0.0, ge=0, le=1)
    rate_423: float = Field(default=0.0, ge=0, le=1)
    rate_503: float = Field(default=0.0, ge=0, le=1)
    rate_drop: float = Field(default=0.0, ge=0, le=1)
    rate_failed_operation: float = Field(default=0.0, ge=0, le=1)
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_answer_per_request(self) -> FaultSettings:
        # One roll picks at most one of 429 / 423 / 503, so their rates share one request.
        if self.rate_429 + self.rate_423 + self.rate_503 > 1:
            raise ValueError("rate_429 + rate_423 + rate_503 must be at most 1")
        return self

    @property
    def enabled(self) -> bool:
        return any(
            (
                self.rate_429,
                self.rate_423,
                self.rate_503,
                self.rate_drop,
                self.rate_failed_operation,
                self.latency_ms,
            )
        )


class LocalSettings(_Section):
    state_dir: str = ".neonflow"
    project_id: str = "local-neonflow"
    faults: FaultSettings = Field(default_factory=FaultSettings)


class Settings(BaseSettings):
    """Everything neonflow reads from its configuration."""

    model_config = SettingsConfigDict(
        env_prefix="NEONFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    neon: NeonSettings = Field(default_factory=NeonSettings)
    app: AppSettings = Field(default_factory=AppSettings)
    migrations: MigrationSettings = Field(default_factory=MigrationSettings)
    branch: BranchSettings = Field(default_factory=BranchSettings)
    check: CheckSettings = Field(default_factory=CheckSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("NEON_API_KEY", "NEONFLOW_API_KEY")
    )
    root: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: Any) -> Any:
        # `NEON_API_KEY=` (set but empty) is how shells and CI unset a secret.
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE_FOR_LOAD.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # -- derived values ------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """True when neither a key nor an API host is configured: use the local Neon."""
        return self.api_key is None and not self.neon.api_host

    def path(self, value: str) -> Path:
        """A configured path, relative to the project root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def state_dir(self) -> Path:
        return self.path(self.local.state_dir)

    @property
    def env_file(self) -> Path:
        return self.path(self.app.env_file)

    @property
    def alembic_ini(self) -> Path:
        return self.path(self.migrations.alembic_ini)

    @property
    def migrations_cwd(self) -> Path | None:
        return self.path(self.migrations.cwd) if self.migrations.cwd else None


# The TOML source needs the file path at construction time; settings_customise_sources is a
# classmethod, so load_settings hands the path over through this one-slot holder.
_TOML_FILE_FOR_LOAD: dict[str, Path | None] = {"path": None}


def find_config_file(start: Path | None = None) -> Path | None:
    """``$NEONFLOW_CONFIG``, else the nearest ``neonflow.toml`` from ``start`` upwards."""
    explicit = os.environ.get("NEONFLOW_CONFIG")
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; a broken file or an unknown key raises :class:`ConfigError`."""
    path = config_file if config_file is not None else find_config_file()
    if path is not None:
        _check_toml(path)
    root = path.parent if path is not None else Path.cwd()
    overrides.setdefault("root", root)
    _TOML_FILE_FOR_LOAD["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    finally:
        _TOML_FILE_FOR_LOAD["path"] = None


def _check_toml(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    neon = data.get("neon")
    if "api_key" in data or (isinstance(neon, dict) and "api_key" in neon):
        raise ConfigError(f"{path}: the API key does not belong in the file; set NEON_API_KEY")


def _describe(exc: ValidationError, path: Path | None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"]) or "(root)"
    where = str(path) if path is not None else "settings"
    if err["type"] == "extra_forbidden":
        # The key may come from the environment (NEONFLOW_…) rather than the file.
        env_name = "NEONFLOW_" + "__".join(str(part).upper() for part in err["loc"])
        return f"{where}: unknown key '{key}' (or environment variable {env_name})"
    return f"{where}: bad value for '{key}': {err['msg']}"
