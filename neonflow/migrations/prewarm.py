"""Imports ahead of time: while neonflow waits for Neon, the Alembic process loads the
well-known libraries that env.py and the project's own modules import (read, never run)."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import sys
from pathlib import Path

# Libraries that read no application settings at import: safe to load before the variables
# are exported, when env.py (or a project module it imports) imports them. Anything else (the
# project's own modules, a company's settings package) waits for the variables.
PREWARM = {
    "alembic",
    "sqlalchemy",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "flask",
    "flask_sqlalchemy",
    "flask_migrate",
    "sqlmodel",
    "pydantic",
    "pydantic_settings",
    "geoalchemy2",
    "sqlalchemy_utils",
    "werkzeug",
}


def prewarm(env_py: Path | None, project_dirs: list[str]) -> None:
    """Import, while neonflow waits for Neon, the well-known libraries env.py will import.

    env.py and the project's modules it imports (files under ``project_dirs``, not the
    standard library's or the virtualenv's) are read, never run, for their imports.
    """
    import alembic.command  # noqa: F401
    import alembic.config  # noqa: F401

    wanted: set[str] = set()
    queue = [env_py] if env_py is not None else []
    seen: set[Path] = set()
    while queue and len(seen) < 50:
        source = queue.pop()
        if source in seen or not source.is_file():
            continue
        seen.add(source)
        names, files = _imports(source)
        queue.extend(files)
        for name in names:
            top = name.split(".")[0]
            if top in PREWARM:
                wanted.add(name)
            elif top not in sys.stdlib_module_names:
                queue.extend(_source_of(name, project_dirs))
    for name in sorted(wanted):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - the real run reports whatever is wrong
            continue


# Installed code: the standard library's and the virtualenv's (which may sit inside the project).
_INSTALLED = tuple({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


def _source_of(name: str, project_dirs: list[str]) -> list[Path]:
    """The files of a project module, found without importing it (or its package)."""
    top, *rest = name.split(".")
    spec = importlib.machinery.PathFinder.find_spec(top, project_dirs)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return []
    base = Path(spec.origin).resolve()
    if any(base.is_relative_to(installed) for installed in _INSTALLED):
        return []
    if not rest:
        return [base]
    # The package's __init__ runs on import too.
    folder = base.parent.joinpath(*rest)
    found = [p for p in (folder.with_suffix(".py"), folder / "__init__.py") if p.is_file()]
    return [base, *found]


def _imports(path: Path) -> tuple[list[str], list[Path]]:
    """The modules a file imports (``from pkg import name`` may import ``pkg.name``), and the
    files its relative imports name."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return [], []
    names: list[str] = []
    files: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = path.parent.joinpath(*[".."] * (node.level - 1), *(node.module or "").split("."))
            for target in (base, *(base / alias.name for alias in node.names)):
                files += [target.with_suffix(".py"), target / "__init__.py"]
    return names, files
