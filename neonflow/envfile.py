"""The app's ``.env`` file: read one variable, set one variable; every other line is kept as it was.

Writes are atomic (a temporary file in the same folder, then a rename) and leave the file 0600,
so a crash never leaves a half-written file and the credentials are not readable by others.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from neonflow.errors import ConfigError
from neonflow.files import write_private

_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)$")


def _unquote(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    # An unquoted value ends at an inline comment.
    return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def read_var(path: Path, name: str) -> str | None:
    """The last value given to ``name`` in ``path``, or None (no file, or no such line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the env file: {_reason(exc)}") from None
    value = None
    for line in lines:
        match = _LINE.match(line)
        if match and match["key"] == name:
            value = _unquote(match["value"])
    return value


def set_var(path: Path, name: str, value: str) -> None:
    """Set ``name=value`` in ``path`` (created if missing), replacing the existing line in place."""
    if "\n" in value or "\r" in value:
        raise ValueError("an env file value cannot contain a line break")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the env file: {_reason(exc)}") from None
    quoted = f'"{value}"' if re.search(r"[\s#'\"]", value) else value
    new_line = f"{name}={quoted}"
    replaced = False
    kept: list[str] = []
    for line in lines:
        match = _LINE.match(line)
        if match and match["key"] == name:
            if not replaced:
                prefix = "export " if line.lstrip().startswith("export ") else ""
                kept.append(prefix + new_line)
                replaced = True
            continue
        kept.append(line)
    if not replaced:
        kept.append(new_line)
    # A symlinked env file (shared between worktrees, say) stays a link: write its target.
    target = path.resolve() if path.is_symlink() else path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_private(target, "\n".join(kept) + "\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the env file: {_reason(exc)}") from None


def check_writable(path: Path) -> None:
    """Raise ConfigError now if ``set_var`` on ``path`` would fail (before any work is done)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: the env file is not a regular file")
    folder = (path.resolve() if path.is_symlink() else path).parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot write the env file here ({folder} is not writable)")
    read_var(path, "")  # unreadable or not UTF-8: say so now


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def read_vars(path: Path, names: list[str]) -> dict[str, str | None]:
    """Each of ``names`` as :func:`read_var` reads it."""
    return {name: read_var(path, name) for name in names}


def set_vars(path: Path, values: dict[str, str]) -> None:
    """Set each of ``values`` (one variable after the other; each write is atomic)."""
    for name, value in values.items():
        set_var(path, name, value)
