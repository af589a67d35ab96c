"""Settings precedence and errors, the env file writer, names, durations and URL helpers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from neonflow import envfile
from neonflow.config import load_settings, parse_duration
from neonflow.errors import ConfigError, UsageError
from neonflow.urls import mask_password, same_database
from neonflow.workflow.names import check_name


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("NEONFLOW_") or name == "NEON_API_KEY":
            monkeypatch.delenv(name)
    return monkeypatch


def test_precedence_init_over_env_over_file_over_defaults(tmp_path: Path, clean_env):
    config = tmp_path / "neonflow.toml"
    config.write_text('[neon]\nparent = "from-file"\ndatabase = "filedb"\nrole = "filerole"\n')
    clean_env.setenv("NEONFLOW_NEON__DATABASE", "envdb")
    clean_env.setenv("NEONFLOW_NEON__ROLE", "envrole")

    settings = load_settings(config_file=config, neon={"role": "initrole", "database": "initdb"})
    assert settings.neon.role == "initrole"

    settings = load_settings(config_file=config)
    assert settings.neon.parent == "from-file"  # file over default
    assert settings.neon.database == "envdb"  # environment over file
    assert settings.app.env_var == "DATABASE_URL"  # default
    assert settings.root == tmp_path  # paths are relative to the file's folder
    assert settings.env_file == tmp_path / ".env"


def test_the_file_is_found_from_a_subfolder_and_by_variable(tmp_path: Path, clean_env):
    (tmp_path / "neonflow.toml").write_text('[branch]\nprefix = "preview/"\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    clean_env.chdir(sub)
    assert load_settings().branch.prefix == "preview/"

    other = tmp_path / "other.toml"
    other.write_text('[branch]\nprefix = "x/"\n')
    clean_env.setenv("NEONFLOW_CONFIG", str(other))
    assert load_settings().branch.prefix == "x/"


def test_api_key_comes_from_neon_api_key_and_selects_the_backend(tmp_path: Path, clean_env):
    assert load_settings(config_file=None).is_local is True
    clean_env.setenv("NEON_API_KEY", "napi_secret")
    settings = load_settings(config_file=None)
    assert settings.is_local is False
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "napi_secret"
    assert "napi_secret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[neon\n", "not valid TOML"),
        ("[neon]\nparnet = 'x'\n", "unknown key 'neon.parnet'"),
        ("[nope]\nx = 1\n", "unknown key 'nope'"),
        ("[branch]\nexpires_in = 'soon'\n", "bad value for 'branch.expires_in'"),
        ("[neon]\napi_key = 'napi_x'\n", "the API key does not belong in the file"),
        ("[local.faults]\nrate_503 = 'lots'\n", "local.faults.rate_503"),
        ("[migrations]\nlock_timeout = '5 s'\n", "migrations.lock_timeout"),
        ("[migrations]\nlock_timeout = '5s -c statement_timeout=0'\n", "migrations.lock_timeout"),
        ("[app]\nenv_var = 'BAD NAME'\n", "app.env_var"),
        ("[branch]\nexpires_in = '90d'\n", "at most 30 days"),
        ("neon = 5\n", "bad value for 'neon'"),
    ],
)
def test_a_broken_file_is_one_error_naming_file_and_key(tmp_path: Path, clean_env, text, message):
    config = tmp_path / "neonflow.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(config_file=config)
    assert str(config) in str(raised.value) and message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert "napi_x" not in str(raised.value)


def test_help_and_version_are_fast_paths_that_skip_heavy_imports():
    code = (
        "import sys; from neonflow.cli.main import app; "
        "heavy = [m for m in ('alembic', 'sqlalchemy', 'flask', 'httpx', 'psycopg') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    version = subprocess.run(
        [sys.executable, "-m", "neonflow.cli.main", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("neonflow 0.")


# -- the env file ------------------------------------------------------------------------------


def test_set_var_replaces_in_place_and_keeps_everything_else(tmp_path: Path):
    env = tmp_path / ".env"
    env.write_text(
        "# app settings\n\nSECRET=abc # inline\nexport DATABASE_URL='old'\nDATABASE_URL=dup\nX=1"
    )
    os.chmod(env, 0o644)

    envfile.set_var(env, "DATABASE_URL", "postgresql://u:p@h/db?sslmode=require")

    assert env.read_text() == (
        "# app settings\n\nSECRET=abc # inline\n"
        "export DATABASE_URL=postgresql://u:p@h/db?sslmode=require\nX=1"  # no newline added
    )
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert envfile.read_var(env, "DATABASE_URL") == "postgresql://u:p@h/db?sslmode=require"
    assert envfile.read_var(env, "SECRET") == "abc"
    assert envfile.read_var(env, "MISSING") is None
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temporary file left


def test_set_vars_writes_several_variables_at_once(tmp_path: Path):
    env = tmp_path / ".env"
    env.write_bytes(b"\xef\xbb\xbfPGHOST=old\r\nKEEP=1\r\n")
    os.chmod(env, 0o640)
    notes: list[str] = []

    envfile.set_vars(env, {"PGHOST": "h", "PGPORT": "5432"}, warn=notes.append)

    assert env.read_bytes() == b"\xef\xbb\xbfPGHOST=h\r\nKEEP=1\r\nPGPORT=5432\r\n"
    assert envfile.read_vars(env, ["PGHOST", "PGPORT", "NONE"]) == {
        "PGHOST": "h",
        "PGPORT": "5432",
        "NONE": None,
    }
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert notes == [
        f"{env} was readable by others (mode 0640); it holds credentials, so it is now 0600"
    ]


def test_set_var_keeps_a_symlinked_env_file_a_link(tmp_path: Path):
    shared = tmp_path / "shared.env"
    shared.write_text("A=1\n")
    link = tmp_path / ".env"
    link.symlink_to(shared)

    envfile.set_var(link, "DATABASE_URL", "postgresql://h/db")

    assert link.is_symlink()
    assert shared.read_text() == "A=1\nDATABASE_URL=postgresql://h/db\n"


def test_set_var_creates_the_file_and_quotes_when_needed(tmp_path: Path):
    env = tmp_path / "sub" / ".env"
    envfile.set_var(env, "A", "has space #and hash")
    assert envfile.read_var(env, "A") == "has space #and hash"
    assert envfile.read_var(tmp_path / "absent", "A") is None
    with pytest.raises(ValueError):
        envfile.set_var(env, "A", "two\nlines")
    assert envfile.read_var(env, "A") == "has space #and hash"


# -- names, durations, URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "feature-x",
        "feature/login",
        "Fix: the bug!",
        "café",
        "cafè",
        "fé🚀ture",
        "bad name;drop",
        "///",
        " spaced ",
        "a" * 256,
    ],
)
def test_names_are_used_as_typed(name: str):
    assert check_name(name) == name


@pytest.mark.parametrize("bad", ["", "  ", "a" * 257, "tab\tname", "nul\x00", "del\x7f", "\udcff"])
def test_names_neon_would_refuse_or_that_hold_control_characters(bad: str):
    with pytest.raises(UsageError):
        check_name(bad)


def test_durations():
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(" 12h ") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "7", "d", "-1d", "1.5h", "7 days"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_masking_and_comparing_urls():
    url = "postgresql://neondb_owner:s3cr%40t@ep-x.aws.neon.tech:5432/neondb?sslmode=require"
    assert mask_password(url) == (
        "postgresql://neondb_owner:****@ep-x.aws.neon.tech:5432/neondb?sslmode=require"
    )
    assert mask_password("postgresql://h/db") == "postgresql://h/db"
    assert same_database(url, "postgresql+psycopg://other:pw@ep-x.aws.neon.tech:5432/neondb")
    assert not same_database(url, "postgresql://u:p@ep-x.aws.neon.tech:5432/otherdb")
    assert not same_database(None, url)
