"""The user's Alembic project as it is: its ini, the folder it runs from, Flask-Migrate, drivers.

Nothing here imports Alembic: ``branch start`` reads what it needs before creating a branch
(the ini, the revision files' syntax and heads) in milliseconds, and leaves Alembic itself to the
Alembic process (:mod:`neonflow.migrations.runner`).
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from neonflow import appenv, envfile
from neonflow.appenv import AppVariables
from neonflow.errors import ConfigError, EnvPyError, RevisionLoadError, UsageError
from neonflow.migrations import locations

if TYPE_CHECKING:
    from neonflow.config import Settings

_REVISION_FILE = re.compile(r"^(?!\.#|__init__).*\.py$")


@dataclass
class Project:
    """Where and how Alembic runs for this project (see ``[migrations]``)."""

    ini: Path
    cwd: Path
    root: Path  # neonflow.toml's folder: modules under it (outside a venv) are the project's
    variables: AppVariables
    env_file: Path
    flask_app: str | None = None
    flask_migrate: bool = False
    options: dict[str, str] = field(default_factory=dict)  # the ini's [alembic] section
    toml_file: Path | None = None  # a pyproject.toml with [tool.alembic]

    @classmethod
    def from_settings(cls, settings: Settings) -> Project:
        ini = settings.alembic_ini
        if not ini.is_file():
            raise ConfigError(
                f"{ini}: Alembic configuration not found (set [migrations] alembic_ini in "
                "neonflow.toml, or run `neonflow init`)"
            )
        toml_file: Path | None
        if ini.name == "pyproject.toml":
            # Alembic 1.16+ with no alembic.ini at all: [tool.alembic] is the configuration.
            if not read_pyproject(ini):
                raise ConfigError(f"{ini}: no [tool.alembic] table in it")
            toml_file, options = ini.resolve(), {}
        else:
            toml_file, options = _alembic_pyproject(ini.parent, settings.root), read_ini(ini)
        if toml_file is not None:
            # Alembic 1.16+: [tool.alembic] in pyproject.toml holds what the ini does not.
            options = {**options, **read_pyproject(toml_file)}
        flask_migrate = locations.is_flask_migrate(ini, options)
        cwd = settings.migrations_cwd or locations.default_cwd(
            ini, options, flask_migrate, settings.root
        )
        cwd = cwd.resolve()
        if not cwd.is_dir():
            raise ConfigError(f"{cwd}: [migrations] cwd is not a folder")
        flask_app = settings.migrations.flask_app or None
        if flask_migrate and flask_app is None:
            flask_app = flask_app_from_env(cwd)
            if flask_app is None:
                raise ConfigError(
                    f"{ini.parent} is a Flask-Migrate folder but no FLASK_APP is set "
                    f"(in .flaskenv or .env in {cwd}): set [migrations] flask_app = "
                    '"package.module:create_app()" in neonflow.toml'
                )
        if not flask_migrate and "script_location" not in options:
            raise ConfigError(
                f"{ini}: no script_location in [alembic] (and no env.py beside it for "
                "Flask-Migrate): point [migrations] alembic_ini at your project's alembic.ini"
            )
        project = cls(
            ini=ini.resolve(),
            cwd=cwd,
            root=settings.root.resolve(),
            variables=settings.app.variables,
            env_file=settings.env_file,
            flask_app=flask_app,
            flask_migrate=flask_migrate,
            options=options,
            toml_file=toml_file,
        )
        script_dir = project.script_dir
        refuse_multidb(ini, options, script_dir / "env.py" if script_dir is not None else None)
        if script_dir is not None and not (script_dir / "env.py").is_file():
            raise ConfigError(
                f"{ini}: script_location {options.get('script_location')!r} has no env.py from "
                f"{cwd}: set [migrations] cwd to the folder you run alembic from"
            )
        return project

    # -- where the scripts are -------------------------------------------------------------

    @property
    def ini_file(self) -> Path | None:
        """The ini Alembic reads (None: pyproject.toml alone)."""
        return None if self.ini == self.toml_file else self.ini

    @property
    def script_dir(self) -> Path | None:
        """The script folder (see :func:`locations.script_dir`)."""
        return locations.script_dir(self.ini, self.options, self.cwd, self.flask_migrate)

    def prepend_sys_path(self) -> list[Path]:
        """The ini's ``prepend_sys_path`` folders, from where Alembic runs."""
        return locations.prepend_sys_path(self.options, self.cwd)

    def version_table(self) -> tuple[str, str | None]:
        """The ``version_table`` and ``version_table_schema`` env.py passes to configure(),
        read off its source (Alembic's defaults when it passes none, or not as literals)."""
        table, schema = "alembic_version", None
        script_dir = self.script_dir
        env_py = script_dir / "env.py" if script_dir is not None else None
        if env_py is None or not env_py.is_file():
            return table, schema
        try:
            tree = ast.parse(_text(env_py))
        except (SyntaxError, RevisionLoadError):
            return table, schema
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                value = keyword.value
                if not isinstance(value, ast.Constant) or not isinstance(value.value, str):
                    continue
                if keyword.arg == "version_table":
                    table = value.value
                elif keyword.arg == "version_table_schema":
                    schema = value.value
        return table, schema

    def version_dirs(self) -> list[Path] | None:
        """The folders holding revision files, as Alembic finds them (None if unsure)."""
        script_dir = self.script_dir
        if script_dir is None:
            return None
        listed = self.options.get("version_locations")
        if not listed:
            return [script_dir / "versions"]
        separator = self.options.get("path_separator") or self.options.get("version_path_separator")
        if separator:
            parts = listed.split(locations.SEPARATORS.get(separator, separator))
        else:
            parts = re.split(r"[\s,]+", listed)
        dirs = [Path(p.strip()).expanduser() for p in parts if p.strip()]
        if any(":" in str(d) and not d.is_absolute() for d in dirs):
            return None
        return [d if d.is_absolute() else self.cwd / d for d in dirs]

    def preflight(self) -> tuple[str, ...] | None:
        """Check env.py and every revision file compile; return the heads, importing nothing.

        Raises EnvPyError or RevisionLoadError naming the file and line of a syntax error.
        Returns None when the heads cannot be read off the files (Alembic then decides).
        """
        script_dir = self.script_dir
        env_py = script_dir / "env.py" if script_dir is not None else None
        if env_py is not None and env_py.is_file():
            try:
                ast.parse(_text(env_py), filename=str(env_py))
            except SyntaxError as exc:
                raise EnvPyError(
                    f"env.py failed: SyntaxError: {exc.msg} (env.py, line {exc.lineno})"
                ) from None
        dirs = self.version_dirs()
        if dirs is None:
            return None
        revisions: dict[str, tuple[str, ...]] = {}
        known = True
        for folder in dirs:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if not path.is_file() or not _REVISION_FILE.match(path.name):
                    continue
                revision, down = _read_revision(path)
                if revision is None:
                    known = False
                    continue
                revisions[revision] = down
        if not known:
            return None
        referenced = {down for downs in revisions.values() for down in downs}
        return tuple(sorted(r for r in revisions if r not in referenced))

    # -- drivers ---------------------------------------------------------------------------

    def url_driver(self) -> str | None:
        """The driver the app's URL variable carries now (None: Neon's plain URI, as the app's
        own env file had it, or had nothing)."""
        current = self._app_url_value()
        return appenv.driver_of(current) if appenv.is_postgres(current) else None

    def sqlalchemy_driver(self) -> str:
        """The driver for ``sqlalchemy.url``: the project's own, psycopg 3 for a placeholder."""
        ini_url = self.options.get("sqlalchemy.url", "")
        for url in (ini_url, self._app_url_value()):
            driver = appenv.driver_of(url)
            if driver:
                return driver
        if appenv.is_postgres(ini_url) and importlib.util.find_spec("psycopg2") is not None:
            return "psycopg2"  # a bare postgresql:// means psycopg2 to SQLAlchemy
        return "psycopg"

    def _app_url_value(self) -> str | None:
        """What the app's ``{url}`` variable holds now in its env file (None: no such one)."""
        current = envfile.read_vars(self.env_file, self.variables.names)
        for name, template in self.variables.templates.items():
            if template.strip() == "{url}":
                return current.get(name)
        return None


def _alembic_pyproject(*folders: Path) -> Path | None:
    for folder in folders:
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and read_pyproject(candidate):
            return candidate.resolve()
    return None


def read_pyproject(path: Path) -> dict[str, str]:
    """``[tool.alembic]`` of a pyproject.toml, lists joined as the ini writes them."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    section = data.get("tool", {}).get("alembic", {})
    if not isinstance(section, dict):
        return {}
    here = str(path.parent.resolve())
    out: dict[str, str] = {}
    for key, value in section.items():
        if isinstance(value, list):
            out[key] = " ".join(str(v).replace("%(here)s", here) for v in value)
            if key in ("prepend_sys_path", "version_locations"):
                out.setdefault("path_separator", "space")
        elif isinstance(value, str | int | float | bool):
            out[key] = str(value).replace("%(here)s", here)
    return out


def read_ini(ini: Path) -> dict[str, str]:
    """The ``[alembic]`` section with ``%(here)s`` expanded, as Alembic reads it."""
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent.resolve())})
    try:
        parser.read(ini, encoding="utf-8")
        if not parser.has_section("alembic"):
            return {}
        return {key: _option(parser, key) for key in parser.options("alembic")}
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{ini}: not a valid Alembic ini: {_first_line(exc)}") from None


def _option(parser: configparser.ConfigParser, key: str) -> str:
    """One option as Alembic reads it; a bare ``%`` (a %-quoted password in a URL that env.py
    replaces) only fails in Alembic when that option is read, so here it is taken as written."""
    try:
        return parser.get("alembic", key)
    except configparser.InterpolationError:
        return parser.get("alembic", key, raw=True)


def refuse_multidb(ini: Path, options: dict[str, str], env_py: Path | None) -> None:
    """``alembic init -t multidb``: one env.py migrating each ``[engineN]`` section's database
    in turn; neonflow gives a branch one database, so it says so before anything is done."""
    databases = options.get("databases", "").strip()
    if not databases or env_py is None or not env_py.is_file():
        return
    if not re.search(r"""get_main_option\(\s*['"]databases['"]""", _text(env_py)):
        return
    raise ConfigError(
        f"{ini}: a multi-database Alembic project (databases = {databases}, as `alembic init "
        "-t multidb` writes it) is not supported: neonflow migrates one database per branch; "
        "point [migrations] alembic_ini at a single-database configuration"
    )


def revision_id(path: Path) -> str | None:
    """The ``revision = "…"`` a revision file declares, read without importing it."""
    try:
        return _read_revision(path)[0]
    except RevisionLoadError:
        match = re.search(r"^revision\b[^=]*=\s*['\"]([^'\"]+)", _text(path), re.MULTILINE)
        return match[1] if match else None


def multiple_heads(heads: tuple[str, ...] | list[str]) -> UsageError:
    return UsageError(
        f"the migrations have {len(heads)} heads ({', '.join(heads)}): merge them "
        "(alembic merge heads) and commit the merge revision"
    )


def _read_revision(path: Path) -> tuple[str | None, tuple[str, ...]]:
    source = _text(path)
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        match = re.search(r"^revision\b[^=]*=\s*['\"]([^'\"]+)", source, re.MULTILINE)
        raise RevisionLoadError(
            f"revision {match[1] if match else '?'} ({path.name}) could not be loaded: "
            f"SyntaxError: {exc.msg}, line {exc.lineno}",
            revision=match[1] if match else None,
        ) from None
    values: dict[str, object] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            try:
                values[target.id] = ast.literal_eval(value) if value is not None else None
            except ValueError:
                values[target.id] = ...  # computed: let Alembic read it
    revision, down = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str) or down is ...:
        return None, ()
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
        return revision, tuple(str(d) for d in down)
    return None, ()


def flask_app_from_env(cwd: Path) -> str | None:
    """``FLASK_APP`` as ``flask`` finds it: ``.flaskenv``, ``.env``, then the environment."""
    for name in (".flaskenv", ".env"):
        try:
            value = envfile.read_var(cwd / name, "FLASK_APP")
        except ConfigError:
            value = None
        if value:
            return value
    return os.environ.get("FLASK_APP") or None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RevisionLoadError(f"revision file {path.name} could not be read: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
