"""Where an Alembic configuration's files are, read from its options alone (no import of Alembic
or of the project): the folder Alembic runs from, ``prepend_sys_path``, the script folder.

``init`` (before any ``neonflow.toml``) and :class:`~neonflow.migrations.project.Project` both
ask here, so that they find the same env.py.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path

SEPARATORS = {"os": os.pathsep, "space": " ", "newline": "\n", ";": ";", ":": ":"}


def is_flask_migrate(ini: Path, options: dict[str, str]) -> bool:
    """``flask db init``'s folder: no ``script_location``, env.py beside the ini."""
    return "script_location" not in options and (ini.parent / "env.py").is_file()


def default_cwd(ini: Path, options: dict[str, str], flask_migrate: bool, root: Path) -> Path:
    """Where the user types ``alembic`` (or ``flask db``): the ini's folder, unless its relative
    ``script_location`` is only found from the project root (``alembic -c db/alembic.ini``).
    Flask-Migrate runs from the project root, or else the folder holding ``migrations/``."""
    here = ini.parent.resolve()
    if flask_migrate:
        return root if here.is_relative_to(root.resolve()) else here.parent
    location = options.get("script_location", "")
    relative = location and not Path(location).is_absolute() and ":" not in location
    if relative and not (here / location).is_dir() and (root / location).is_dir():
        return root
    return here


def prepend_sys_path(options: dict[str, str], cwd: Path) -> list[Path]:
    """The ``prepend_sys_path`` folders, from ``cwd`` (where Alembic runs)."""
    raw = options.get("prepend_sys_path", "")
    separator = options.get("path_separator")
    parts = raw.split(SEPARATORS.get(separator, separator)) if separator else raw.split()
    return [cwd / p.strip() for p in parts if p.strip()]


def script_dir(ini: Path, options: dict[str, str], cwd: Path, flask_migrate: bool) -> Path | None:
    """The script folder (a ``package:path`` location found without importing the package;
    None when it cannot be found so, and Alembic decides)."""
    if flask_migrate:
        return ini.parent
    location = options.get("script_location", "")
    package, colon, inner = location.partition(":")
    if colon and not Path(location).is_absolute() and package.isidentifier():
        search = [str(p) for p in prepend_sys_path(options, cwd)] + sys.path
        spec = importlib.machinery.PathFinder.find_spec(package, search)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / inner
    path = Path(location).expanduser()
    return path if path.is_absolute() else cwd / path
