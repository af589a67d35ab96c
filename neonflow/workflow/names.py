"""Branch names and the git facts neonflow records: valid names, current branch, merges."""

from __future__ import annotations

import getpass
import subprocess
import unicodedata
from pathlib import Path

from neonflow.errors import UsageError

MAX_NAME = 256


def check_name(name: str) -> str:
    """``name`` itself, if Neon takes it as a branch name; otherwise one clear UsageError.

    Neon takes any name of 1 to 256 characters, so nothing is folded: ``feature/login`` and
    ``café`` are used as typed. Only an empty (or blank) name, a longer one, and control
    characters (invisible, and they break terminals and logs) are refused.
    """
    if not name.strip():
        raise UsageError("a branch name cannot be empty")
    bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        what = "a control character" if unicodedata.category(bad) == "Cc" else "invalid UTF-8"
        raise UsageError(f"a branch name cannot contain {what} ({name!r})")
    if len(name) > MAX_NAME:
        raise UsageError(
            f"a Neon branch name has at most {MAX_NAME} characters ({len(name)} given)"
        )
    return name


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_branch(root: Path) -> str | None:
    name = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return None if name in (None, "", "HEAD") else name


def git_commit(root: Path) -> str | None:
    return _git(root, "rev-parse", "--short=12", "HEAD")


def git_default_branch(root: Path) -> str | None:
    ref = _git(root, "symbolic-ref", "--short", "refs/remotes/origin/HEAD")
    if ref:
        return ref
    for candidate in ("main", "master"):
        if _git(root, "rev-parse", "--verify", "--quiet", candidate) is not None:
            return candidate
    return None


def git_merged_or_gone(root: Path, branch: str) -> bool:
    """Whether ``branch`` is merged into the default git branch, or no longer exists."""
    if _git(root, "rev-parse", "--is-inside-work-tree") != "true":
        return False
    # The local branch decides when there is one (it may hold work origin has not seen);
    # else origin's, as in a fresh clone in CI.
    ref = next(
        (
            r
            for r in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}")
            if _git(root, "rev-parse", "--verify", "--quiet", r) is not None
        ),
        None,
    )
    if ref is None:
        return True  # gone here and on origin
    default = git_default_branch(root)
    if default is None or default == branch:
        return False
    return _git(root, "merge-base", "--is-ancestor", ref, default) is not None


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
