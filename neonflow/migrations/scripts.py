"""The project's revision history, read with Alembic in this process (no database, no env.py)."""

from __future__ import annotations

import contextlib
import io
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from neonflow.errors import ConfigError, RevisionLoadError
from neonflow.migrations.project import Project, revision_id

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory


def script_directory(project: Project) -> ScriptDirectory:
    """Alembic's ScriptDirectory, every revision loaded, as the user's ``alembic`` sees it."""
    cached = getattr(project, "_scripts", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = Config(str(project.ini), stdout=io.StringIO())
    if project.script_dir is not None:
        cfg.set_main_option("script_location", str(project.script_dir))
    path = list(sys.path)
    try:
        with contextlib.chdir(project.cwd):
            scripts = ScriptDirectory.from_config(cfg)
            scripts.get_heads()  # loads every revision file
    except CommandError as exc:
        raise ConfigError(f"{project.ini}: {exc}") from None
    except Exception as exc:
        raise _load_error(exc, project) from None
    finally:
        sys.path[:] = path
    project._scripts = scripts  # type: ignore[attr-defined]
    return scripts


def heads(project: Project) -> tuple[str, ...]:
    return tuple(script_directory(project).get_heads())


def path_between(project: Project, start: str | None, end: str = "heads") -> list[Script]:
    """The revisions an upgrade from ``start`` to ``end`` applies, oldest first."""
    scripts = script_directory(project)
    return list(reversed(list(scripts.iterate_revisions(end, start or "base"))))


def is_ancestor(project: Project, revision: str | None, of: str = "heads") -> bool:
    """Whether ``revision`` lies on the history leading to ``of`` (None, the base, always does)."""
    from alembic.util import CommandError

    if revision is None:
        return True
    scripts = script_directory(project)
    try:
        scripts.get_revision(revision)
    except CommandError:
        return False
    for head in scripts.get_revisions(of):
        if head is None:
            continue
        if head.revision == revision:
            return True
        if any(r.revision == revision for r in scripts.iterate_revisions(head.revision, "base")):
            return True
    return False


def _load_error(exc: BaseException, project: Project) -> RevisionLoadError:
    dirs = [d.resolve() for d in project.version_dirs() or []]
    if isinstance(exc, SyntaxError) and exc.filename:
        candidates = [(exc.filename, exc.lineno or 0)]
    else:
        candidates = [(f.filename, f.lineno or 0) for f in traceback.extract_tb(exc.__traceback__)]
    for filename, line in reversed(candidates):
        path = Path(filename)
        if path.suffix == ".py" and any(path.resolve().is_relative_to(d) for d in dirs):
            rev = revision_id(path)
            reason = f"SyntaxError: {exc.msg}" if isinstance(exc, SyntaxError) else _reason(exc)
            return RevisionLoadError(
                f"revision {rev or '?'} ({path.name}) could not be loaded: {reason}, line {line}",
                revision=rev,
            )
    return RevisionLoadError(f"the revisions could not be loaded: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
