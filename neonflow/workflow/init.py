"""``neonflow init``: find an existing project's Alembic set-up and write ``neonflow.toml``.

What it looks for, in the folder it runs in (and a few levels below): the Alembic ini (or a
Flask-Migrate ``migrations/`` folder and its ``FLASK_APP``), the app's env file, and the
variable(s) the app reads its database from: a URL variable (``DATABASE_URL``,
``SQLALCHEMY_DATABASE_URI``…) or ``POSTGRES_*`` parts, found in the env file, in env.py and in
settings modules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neonflow.config import CONFIG_FILE
from neonflow.errors import ConfigError, UsageError
from neonflow.files import write_private
from neonflow.migrations import locations
from neonflow.migrations.project import (
    flask_app_from_env,
    read_ini,
    read_pyproject,
    refuse_multidb,
)

_SKIP = {".git", ".venv", "venv", "env", "node_modules", "__pycache__", ".tox", ".nox", ".neonflow"}
_DEPTH = 4
URL_VARIABLES = (
    "DATABASE_URL",
    "SQLALCHEMY_DATABASE_URI",
    "SQLALCHEMY_DATABASE_URL",
    "DATABASE_URI",
    "DB_URL",
    "POSTGRES_URL",
    "POSTGRESQL_URL",
    "PG_URL",
)
# POSTGRES_* parts as the FastAPI templates and docker images name them, and their fields.
PART_VARIABLES = {
    "POSTGRES_SERVER": "{host}",
    "POSTGRES_HOST": "{host}",
    "POSTGRES_PORT": "{port}",
    "POSTGRES_USER": "{user}",
    "POSTGRES_PASSWORD": "{password}",
    "POSTGRES_DB": "{database}",
    "POSTGRES_DATABASE": "{database}",
}
# os.environ["X"], os.environ.get("X"), os.getenv("X"), environ["X"]
_ENVIRON_READ = re.compile(
    r"""(?:environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*['"]([A-Z][A-Z0-9_]*)['"]"""
)
_SETTINGS_FILES = re.compile(r"^(settings|config|conf|database|db)\.py$|^env\.py$")


@dataclass
class Detected:
    """What ``init`` found; every path relative to the project folder."""

    root: str
    alembic_ini: str
    flask_app: str | None = None
    cwd: str | None = None
    env_file: str = ".env"
    env_var: str | None = "DATABASE_URL"
    env: dict[str, str] = field(default_factory=dict)
    found_in: list[str] = field(default_factory=list)  # where the variables were seen
    notes: list[str] = field(default_factory=list)  # what the user should check

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InitResult:
    detected: Detected
    config_file: str
    toml: str
    written: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "config_file": self.config_file,
            "written": self.written,
            "detected": self.detected.to_json(),
            "toml": self.toml,
        }


def detect(root: Path) -> Detected:
    """Look at the project in ``root``; a ConfigError when there is no Alembic in it."""
    inis = sorted(_find(root, "alembic.ini"), key=lambda p: (len(p.relative_to(root).parts), p))
    if not inis and read_pyproject(root / "pyproject.toml"):
        inis = [root / "pyproject.toml"]  # Alembic 1.16+: [tool.alembic] with no alembic.ini
    if not inis:
        raise ConfigError(
            f"no Alembic project in {root} (no alembic.ini here or below): set Alembic up "
            "first (alembic init, or flask db init), then run neonflow init again"
        )
    ini = inis[0]
    found = Detected(root=str(root), alembic_ini=_rel(ini, root))
    if len(inis) > 1:
        others = ", ".join(_rel(p, root) for p in inis[1:4])
        found.notes.append(f"several Alembic ini files; using {found.alembic_ini} (also: {others})")
    options = read_pyproject(ini) if ini.name == "pyproject.toml" else read_ini(ini)
    flask_migrate = locations.is_flask_migrate(ini, options)
    # The script folder as `branch start` finds it (a `package:path` location too).
    alembic_cwd = locations.default_cwd(ini, options, flask_migrate, root)
    scripts = locations.script_dir(ini, options, alembic_cwd, flask_migrate)
    refuse_multidb(ini, options, scripts / "env.py" if scripts is not None else None)
    run_folder = ini.parent.parent if flask_migrate else ini.parent
    if flask_migrate:
        found.flask_app = flask_app_from_env(root) or flask_app_from_env(run_folder)
        if found.flask_app is None:
            found.notes.append(
                "a Flask-Migrate folder, but no FLASK_APP in .flaskenv or .env: set "
                '[migrations] flask_app = "package.module:create_app()"'
            )
            found.flask_app = ""
    env_file = _env_file(root, run_folder)
    found.env_file = _rel(env_file, root)
    app_module = _flask_module(found.flask_app, run_folder) if found.flask_app else None
    _variables(found, root, run_folder, env_file, ini, app_module)
    return found


def render(found: Detected) -> str:
    """``neonflow.toml`` for what was found, with comments."""
    lines = [
        "# neonflow's configuration (written by `neonflow init`; edit freely). Every key can be",
        "# overridden by an environment variable NEONFLOW_<SECTION>__<KEY>. The API key never",
        "# goes here: export NEON_API_KEY to use Neon cloud; without it, the local Neon is used.",
        "",
        "[neon]",
        'parent = "main"            # the branch new branches start from',
        'database = "neondb"',
        'role = "neondb_owner"',
        '# project_id = "…"         # required for Neon cloud',
        "",
        "[app]",
        f"env_file = {_toml(found.env_file)}   # the file neonflow points at each branch",
    ]
    if found.env:
        lines.append("# the app reads its database as several variables: name = template")
        lines.append("[app.env]")
        lines.extend(f"{name} = {_toml(template)}" for name, template in found.env.items())
    else:
        lines.append(f"env_var = {_toml(found.env_var or 'DATABASE_URL')}")
    lines += [
        "",
        "[migrations]",
        f"alembic_ini = {_toml(found.alembic_ini)}",
    ]
    if found.flask_app is not None:
        lines.append(f"flask_app = {_toml(found.flask_app)}   # Flask-Migrate: the app to load")
    if found.cwd:
        lines.append(f"cwd = {_toml(found.cwd)}")
    else:
        lines.append(
            '# cwd = "…"                # where you run alembic (default: the ini\'s folder)'
        )
    lines += [
        'lock_timeout = "5s"        # for `branch promote` on the parent',
        "",
        "[branch]",
        'prefix = ""                # e.g. "preview/"',
        'expires_in = "7d"          # Neon\'s branch expiration; "" = none',
        "",
    ]
    return "\n".join(lines)


def init(root: Path, force: bool = False, write: bool = True) -> InitResult:
    """Detect and (unless ``write`` is False) write ``root/neonflow.toml``."""
    found = detect(root)
    target = root / CONFIG_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists: pass --force to replace it")
    result = InitResult(found, str(target), render(found))
    if write:
        try:
            write_private(target, result.toml, mode=0o644)
        except OSError as exc:
            raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from None
        result.written = True
    return result


# -- looking around -------------------------------------------------------------------------------


def _walk(root: Path, wanted: Callable[[str], bool]) -> list[Path]:
    """The files ``wanted`` by name, a few levels down, outside virtualenvs and hidden folders."""
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = [d for d in dirs if d not in _SKIP and not d.startswith(".")]
        if depth >= _DEPTH:
            dirs[:] = []
        out.extend(Path(folder) / f for f in files if wanted(f))
    return sorted(out)


def _find(root: Path, name: str) -> list[Path]:
    return _walk(root, lambda f: f == name)


def _python_files(root: Path) -> list[Path]:
    return _walk(root, lambda f: bool(_SETTINGS_FILES.match(f)))


def _flask_module(flask_app: str, folder: Path) -> Path | None:
    """The file of FLASK_APP's module (``blog:create_app()``, ``blog.app``, ``wsgi.py``)."""
    module = flask_app.split(":", 1)[0].strip()
    if module.endswith(".py"):
        candidates = [folder / module]
    else:
        path = Path(*module.split(".")) if module else Path()
        candidates = [folder / path.with_suffix(".py"), folder / path / "__init__.py"]
    return next((c for c in candidates if module and c.is_file()), None)


def _env_file(root: Path, run_folder: Path) -> Path:
    for folder in (root, run_folder):
        if (folder / ".env").is_file():
            return folder / ".env"
    return root / ".env"


def _variables(
    found: Detected,
    root: Path,
    run_folder: Path,
    env_file: Path,
    ini: Path,
    app_module: Path | None = None,
) -> None:
    """The URL variable, or the POSTGRES_* parts, the app reads."""
    keys: list[str] = []
    if env_file.is_file():
        text = env_file.read_text(encoding="utf-8", errors="replace")
        keys = re.findall(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", text, re.MULTILINE)
    sources = {
        _rel(p, root): p.read_text(encoding="utf-8", errors="replace") for p in _python_files(root)
    }
    names = set(keys)
    for text in sources.values():
        names.update(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", text))
    # The Flask app's own module: the variables it reads from the environment, not the names
    # of its config keys (SQLALCHEMY_DATABASE_URI is one of both).
    read: set[str] = set()
    if app_module is not None:
        text = app_module.read_text(encoding="utf-8", errors="replace")
        read = set(_ENVIRON_READ.findall(text))
        if read & set(URL_VARIABLES) or read & set(PART_VARIABLES):
            sources[_rel(app_module, root)] = text
            names |= read
    url_vars = (
        [v for v in URL_VARIABLES if v in read]
        or [v for v in URL_VARIABLES if v in keys]
        or [v for v in URL_VARIABLES if v in names]
    )
    # A factory that builds its URL from parts, and reads no URL variable: its parts win over
    # a URL variable the env file holds (a leftover DATABASE_URL the app never reads).
    factory_parts = bool(read & set(PART_VARIABLES)) and not read & set(URL_VARIABLES)
    seen = read if factory_parts else names
    parts = {v: t for v, t in PART_VARIABLES.items() if v in seen}
    fields = set(parts.values())
    url_named = [v for v in URL_VARIABLES if v in keys or v in read]
    if parts and {"{host}", "{database}"} <= fields and (factory_parts or not url_named):
        found.env, found.env_var = parts, None
        found.found_in = _where(list(parts), keys, env_file, root, sources)
        found.notes.append(
            "the app reads its database as POSTGRES_* parts: check the names in [app.env]"
        )
        return
    if url_vars:
        found.env_var = url_vars[0]
        found.found_in = _where([found.env_var], keys, env_file, root, sources)
        if len(url_vars) > 1:
            found.notes.append(
                f"several URL variables ({', '.join(url_vars)}); using {found.env_var}"
            )
        return
    found.env_var = "DATABASE_URL"
    if ini.name != "pyproject.toml" and read_ini(ini).get("sqlalchemy.url"):
        found.notes.append(
            "env.py seems to take the URL from alembic.ini's sqlalchemy.url: neonflow sets it "
            "for every run; DATABASE_URL in the env file is for your app"
        )
    else:
        found.notes.append("no database variable found: using DATABASE_URL; check env_var")


def _where(
    variables: list[str], keys: list[str], env_file: Path, root: Path, sources: dict[str, str]
) -> list[str]:
    places = [_rel(env_file, root)] if any(v in keys for v in variables) else []
    places += [name for name, text in sources.items() if any(v in text for v in variables)]
    return places


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
