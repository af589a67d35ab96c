"""The app's ``.env`` file: read variables, set variables; every other byte is kept as it was.

Writes are atomic (a temporary file in the same folder, then a rename). The file keeps its line
endings (CRLF stays CRLF), a UTF-8 byte order mark, its owner and group, and its mode when it is
already private; group and world bits are dropped (the file holds credentials), and the caller
is told so. A new file is 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from neonflow.errors import ConfigError

__all__ = ["check_writable", "read_var", "read_vars", "restore", "set_var", "set_vars", "snapshot"]

Warn = Callable[[str], None]

_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)$")
_BOM = "\ufeff"
# Linux's FS_IOC_GETFLAGS and the flags that make a file impossible to replace.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10
_FS_APPEND_FL = 0x20


def _unquote(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    # An unquoted value ends at an inline comment.
    return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def _read(path: Path) -> tuple[str, list[str]] | None:
    """The file's BOM ("" or U+FEFF) and its lines with their endings; None when missing."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the env file: {_reason(exc)}") from None
    bom = _BOM if text.startswith(_BOM) else ""
    # Split at "\n" only: str.splitlines would also break at form feeds and U+2028.
    *full, last = text[len(bom) :].split("\n")
    return bom, [line + "\n" for line in full] + ([last] if last else [])


def _key(line: str) -> str | None:
    match = _LINE.match(line.rstrip("\r\n"))
    return match["key"] if match else None


def read_vars(path: Path, names: Iterable[str]) -> dict[str, str | None]:
    """The last value given to each of ``names`` in ``path`` (None: no file, or no such line)."""
    values: dict[str, str | None] = dict.fromkeys(names)
    read = _read(path)
    for line in read[1] if read else []:
        match = _LINE.match(line.rstrip("\r\n"))
        if match and match["key"] in values:
            values[match["key"]] = _unquote(match["value"])
    return values


def read_var(path: Path, name: str) -> str | None:
    """The last value given to ``name`` in ``path``, or None (no file, or no such line)."""
    return read_vars(path, [name])[name]


def set_var(path: Path, name: str, value: str, *, warn: Warn | None = None) -> None:
    """Set ``name=value`` in ``path`` (created if missing), replacing the existing line in place."""
    set_vars(path, {name: value}, warn=warn)


def set_vars(path: Path, values: Mapping[str, str], *, warn: Warn | None = None) -> None:
    """Set several variables in one atomic write, each replacing its line in place.

    A variable that appears on several lines keeps its first line only (the last one would win
    otherwise). ``warn`` hears what changed besides the values: the mode tightened to private.
    """
    for value in values.values():
        if "\n" in value or "\r" in value:
            raise ValueError("an env file value cannot contain a line break")
    read = _read(path)
    bom, lines = read if read else ("", [])
    eol = "\r\n" if any(line.endswith("\r\n") for line in lines) else "\n"
    done: set[str] = set()
    kept: list[str] = []
    for line in lines:
        key = _key(line)
        if key is None or key not in values:
            kept.append(line)
            continue
        if key not in done:
            prefix = "export " if line.lstrip().startswith("export ") else ""
            ending = line[len(line.rstrip("\r\n")) :]
            kept.append(prefix + _assignment(key, values[key]) + ending)
            done.add(key)
    missing = [key for key in values if key not in done]
    if missing and kept and not kept[-1].endswith("\n"):
        kept[-1] += eol
    kept += [_assignment(key, values[key]) + eol for key in missing]
    # A symlinked env file (shared between worktrees, say) stays a link: write its target.
    target = path.resolve() if path.is_symlink() else path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace(target, (bom + "".join(kept)).encode("utf-8"), path, warn)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the env file: {_reason(exc)}") from None


def snapshot(path: Path) -> bytes | None:
    """The env file's bytes now (None: there is none), for :func:`restore`."""
    try:
        return (path.resolve() if path.is_symlink() else path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the env file: {_reason(exc)}") from None


def restore(path: Path, data: bytes | None) -> None:
    """Put back what :func:`snapshot` read: those bytes, atomically, or no file at all."""
    target = path.resolve() if path.is_symlink() else path
    try:
        if data is None:
            target.unlink(missing_ok=True)
        else:
            _replace(target, data, path, None)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the env file: {_reason(exc)}") from None


def _assignment(name: str, value: str) -> str:
    quoted = f'"{value}"' if re.search(r"[\s#'\"]", value) else value
    return f"{name}={quoted}"


def _replace(target: Path, data: bytes, shown: Path, warn: Warn | None) -> None:
    """Write ``data`` over ``target`` atomically, keeping its owner, group and private mode."""
    try:
        old: os.stat_result | None = target.stat()
    except FileNotFoundError:
        old = None
    mode = stat.S_IMODE(old.st_mode) & 0o700 if old is not None else 0o600
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if old is not None and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
                except PermissionError:
                    if warn is not None:
                        warn(f"{shown}: could not keep its owner and group (now yours)")
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if old is not None and stat.S_IMODE(old.st_mode) & 0o077 and warn is not None:
        warn(
            f"{shown} was readable by others (mode {stat.S_IMODE(old.st_mode):04o}); "
            f"it holds credentials, so it is now {mode:04o}"
        )


def check_writable(path: Path) -> None:
    """Raise ConfigError now if ``set_var`` on ``path`` would fail (before any work is done)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: the env file is not a regular file")
    target = path.resolve() if path.is_symlink() else path
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot write the env file here ({folder} is not writable)")
    if target.exists() and _flags(target) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
        raise ConfigError(
            f"{path}: the env file cannot be replaced (it is immutable or append-only; "
            "see lsattr, and chattr -i to allow it)"
        )
    # os.access trusts the mode bits; a read-only mount or a full quota shows only on trying.
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the env file here: {_reason(exc)}") from None
    os.close(fd)
    os.unlink(tmp)
    read_vars(path, [])  # unreadable or not UTF-8: say so now


def _flags(path: Path) -> int:
    """The file's inode flags (chattr), 0 where the file system has none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        with contextlib.suppress(OSError):
            flags: int = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
            return flags
        return 0
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
