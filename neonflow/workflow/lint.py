"""Lint the SQL of a migration range with squawk, each finding mapped back to its revision.

Alembic's offline (``--sql``) output marks each revision with ``-- Running upgrade X -> Y``. The
whole range is linted in one squawk run (so squawk knows which tables the range itself creates)
and every finding is attributed to the revision whose section holds its line. Findings in the
preamble (Alembic's own ``alembic_version`` table) and on the bookkeeping statements are dropped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neonflow.errors import ConfigError

BOOKKEEPING = "alembic_version"
# Not a rule squawk accepts in --exclude, but the name its parse errors carry.
SYNTAX_ERROR = "syntax-error"
_RUNNING = re.compile(r"^-- Running upgrade .*?->\s*(?P<up>\S[^,\s]*)")
_INVALID_RULE = re.compile(r"invalid rule name (?P<name>\S+)")
SQUAWK_TIMEOUT = 120.0


@dataclass
class LintFinding:
    """One squawk finding, with the revision (and its file) whose SQL produced it."""

    severity: str  # "error" (the rule is in [check] fail_on) or "warning"
    rule: str
    message: str
    revision: str | None
    file: str | None
    line: int  # 1-based, in the SQL of the whole range
    sql: str
    help: str | None = None


def squawk_executable() -> Path:
    """The ``squawk`` that squawk-cli installs: beside this Python, else on PATH."""
    name = "squawk.exe" if os.name == "nt" else "squawk"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which("squawk")
    if found:
        return Path(found)
    raise ConfigError(
        "squawk is not installed: pip install squawk-cli (neonflow check lints with it)"
    )


def validate_rules(names: Iterable[str], squawk: Path | None = None) -> None:
    """A ConfigError naming the first entry of ``[check] fail_on`` / ``ignore`` squawk lacks."""
    wanted = sorted({n for n in names if n and n != SYNTAX_ERROR})
    if not wanted:
        return
    done = _run(squawk or squawk_executable(), ["--exclude", ",".join(wanted)], "")
    if done.returncode not in (0, 1):
        match = _INVALID_RULE.search(done.stderr)
        if match:
            raise ConfigError(
                f"[check] fail_on / ignore: squawk has no rule named {match['name']!r} "
                "(see https://squawkhq.com/docs/rules)"
            )
        raise ConfigError(f"squawk failed: {_first_line(done.stderr)}")


def revision_of_lines(sql: str) -> list[str | None]:
    """For each line of Alembic's ``--sql`` output, the revision whose section holds it."""
    owner: list[str | None] = []
    current: str | None = None
    for line in sql.splitlines():
        match = _RUNNING.match(line)
        if match:
            current = match["up"]
        owner.append(current)
    return owner


def lint(
    sql: str,
    fail_on: Iterable[str] = (),
    ignore: Iterable[str] = (),
    files: dict[str, str] | None = None,
    squawk: Path | None = None,
) -> list[LintFinding]:
    """Run squawk on ``sql`` (Alembic's ``--sql`` output); findings sorted by line.

    A finding whose rule is in ``fail_on`` is an error, any other a warning, and rules in
    ``ignore`` are dropped. ``files`` maps revision ids to the file to name in the finding.
    """
    if not sql.strip():
        return []
    failing, ignored = set(fail_on), set(ignore)
    exe = squawk or squawk_executable()
    done = _run(exe, ["--stdin-filepath", "migrations.sql"], sql)
    if done.returncode not in (0, 1):
        raise ConfigError(f"squawk failed: {_first_line(done.stderr)}")
    try:
        raw: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    except ValueError:
        raise ConfigError(
            f"squawk answered something else than JSON: {done.stdout[:200]!r}"
        ) from None
    lines = sql.splitlines()
    owners = revision_of_lines(sql)
    findings: list[LintFinding] = []
    seen: set[tuple[str, int, str]] = set()
    for item in raw:
        rule = str(item.get("rule_name") or "")
        first = int(item.get("line") or 0)  # squawk counts lines from 0
        last = max(int(item.get("line_end") or first), first)
        revision = owners[first] if 0 <= first < len(owners) else None
        snippet = "\n".join(lines[first : last + 1]).strip()
        if rule in ignored or revision is None or BOOKKEEPING in snippet:
            continue
        message = str(item.get("message") or "")
        key = (rule, first, message)
        if key in seen:
            continue
        seen.add(key)
        findings.append(
            LintFinding(
                severity="error" if rule in failing else "warning",
                rule=rule,
                message=message,
                revision=revision,
                file=(files or {}).get(revision),
                line=first + 1,
                sql=snippet,
                help=str(item["help"]) if item.get("help") else None,
            )
        )
    findings.sort(key=lambda f: (f.line, f.severity != "error", f.rule))
    return findings


def _run(exe: Path, args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(exe), "--reporter", "json", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=SQUAWK_TIMEOUT,
            check=False,
        )
    except OSError as exc:
        raise ConfigError(f"cannot run squawk ({exe}): {exc}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"squawk did not finish within {SQUAWK_TIMEOUT:g} s") from None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")
