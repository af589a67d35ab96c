"""The schema diff a check shows: Neon's diff of two branches, without Alembic's bookkeeping."""

from __future__ import annotations

BOOKKEEPING = "alembic_version"


def without_bookkeeping(diff: str) -> str:
    """A unified diff of two pg_dump schemas without the changes to Alembic's version table.

    Each hunk's lines are grouped into pg_dump's blocks (``--`` / ``-- Name: …`` headers); the
    added and removed lines of blocks about ``alembic_version`` are dropped, hunks left with no
    change but pg_dump's session settings (``SET …;``), comments and blank lines are dropped,
    and a diff left with no hunk is empty.
    """
    if not diff.strip():
        return ""
    lines = diff.splitlines(keepends=True)
    header: list[str] = []
    hunks: list[list[str]] = []
    for line in lines:
        if line.startswith("@@"):
            hunks.append([line])
        elif hunks:
            hunks[-1].append(line)
        else:
            header.append(line)
    kept = [h for h in (_filter_hunk(hunk) for hunk in hunks) if h]
    return "".join(header + [line for hunk in kept for line in hunk]) if kept else ""


def _filter_hunk(hunk: list[str]) -> list[str]:
    body = hunk[1:]
    blocks: list[list[str]] = [[]]
    for i, line in enumerate(body):
        text = line[1:].rstrip("\n")
        nxt = body[i + 1][1:] if i + 1 < len(body) else ""
        if text == "--" and nxt.startswith("-- Name:") and blocks[-1]:
            blocks.append([])
        blocks[-1].append(line)
    out: list[str] = []
    for block in blocks:
        names_line = next((ln for ln in block if ln[1:].startswith("-- Name:")), None)
        about = names_line if names_line is not None else "".join(block)
        bookkeeping = BOOKKEEPING in about
        for line in block:
            changed = line[:1] in ("+", "-")
            if changed and (bookkeeping or BOOKKEEPING in line):
                continue
            out.append(line)
    if not any(_significant(line) for line in out):
        return []
    old = sum(1 for line in out if line[:1] in (" ", "-"))
    new = sum(1 for line in out if line[:1] in (" ", "+"))
    starts = hunk[0].split(" ")
    old_start = starts[1].split(",")[0]
    new_start = starts[2].split(",")[0]
    return [f"@@ {old_start},{old} {new_start},{new} @@\n", *out]


def _significant(line: str) -> bool:
    """A changed line of a schema diff that is about the schema (not pg_dump's preamble)."""
    if line[:1] not in ("+", "-"):
        return False
    text = line[1:].strip()
    return bool(text) and not text.startswith(("SET ", "--", "SELECT pg_catalog.set_config"))
