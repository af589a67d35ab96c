"""The ``neonflow check`` report as text (the terminal summary) and as Markdown (a PR comment).

The JSON report is :meth:`neonflow.workflow.check.CheckReport.to_json` with its one-line
``summary``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neonflow.workflow.check import CheckReport, Finding, RevisionReport

MAX_LISTED = 20  # findings listed one by one in the text summary; the rest are counted
MAX_DIFF_LINES = 400  # lines of schema diff in the Markdown report
_BECAUSE_UPGRADE = " (the upgrade failed)"


def render(report: CheckReport, fmt: str) -> str:
    """The report in ``fmt``: text, markdown or json."""
    if fmt == "json":
        data = report.to_json()
        verdict = {key: data.pop(key) for key in ("passed", "exit_code", "failure")}
        return json.dumps({**verdict, "summary": summary(report), **data}, indent=2, default=str)
    if fmt == "markdown":
        return markdown(report)
    return text(report)


# -- shared phrases ------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(report: CheckReport) -> str:
    """One line: the verdict and the first error."""
    errors = report.errors
    if not errors:
        warned = f" with {plural(len(report.warnings), 'warning')}" if report.warnings else ""
        return f"the check passed{warned}"
    first = next(f for f in errors if f.kind == report.failure)
    more = f" (and {plural(len(errors) - 1, 'more error')})" if len(errors) > 1 else ""
    return f"{first.message}{more}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _revs(revisions: list[str] | None) -> str:
    return ", ".join(revisions) if revisions else "no revision"


def _ran_on_branch(report: CheckReport) -> bool:
    return report.stages["create_branch"] == "passed"


def _drift(report: CheckReport) -> str:
    stage = report.stages["alembic_check"]
    if stage == "skipped":
        return "skipped" + _BECAUSE_UPGRADE
    if stage == "no models":
        return "skipped (env.py gives no target_metadata)"
    if report.drift:
        return plural(len(report.drift), "difference")
    return "no drift" if stage == "passed" else "could not run"


def _round_trip(report: CheckReport) -> str:
    trip = report.round_trip
    if report.stages["upgrade"] == "failed":
        return "skipped" + _BECAUSE_UPGRADE
    if trip.status == "skipped":
        return "skipped (no revision to apply)"
    status = f"{trip.status} (down to {trip.downgraded_to} and up again)"
    if trip.failed_revision:
        status += f", failed at {trip.failed_revision}"
    return status


def _diff_size(report: CheckReport) -> str:
    if report.stages["schema_diff"] == "skipped":
        return "skipped" + _BECAUSE_UPGRADE
    changed = [
        ln
        for ln in report.schema_diff.splitlines()
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]
    return plural(len(changed), "changed line") if changed else "none"


def _lint_counts(report: CheckReport) -> str:
    errors = sum(1 for f in report.lint if f.severity == "error")
    return f"{plural(errors, 'error')}, {plural(len(report.lint) - errors, 'warning')}"


def _listed(report: CheckReport) -> list[Finding]:
    """The findings to list: a failed revision is shown with its revision, a refusal is the
    summary."""
    return [
        f
        for f in report.findings
        if f.kind != "refused" and not (f.kind == "migration" and f.revision)
    ]


# -- text ----------------------------------------------------------------------------------------


def _where(report: CheckReport) -> str:
    base = report.base
    where = f"{base.name} at {_revs(base.revision)}" if base else "?"
    line = f"{where} → head {report.head or '?'}"
    if report.branch is not None:
        fate = {"deleted": "deleted", "kept": "kept"}.get(report.stages["teardown"], "left")
        line += f" on {report.branch.name} ({fate})"
    return line


def _revision_notes(rev: RevisionReport) -> list[str]:
    notes = []
    blocking = [lock for lock in rev.locks if lock.existing]
    if blocking:
        notes.append(
            "locks "
            + ", ".join(f"{lock.relation} {lock.mode} (blocks {lock.blocks})" for lock in blocking)
        )
    if rev.rewritten:
        notes.append("rewrites " + ", ".join(rev.rewritten))
    if rev.rows:
        notes.append(
            "rows "
            + ", ".join(f"{r.table} +{r.inserted} ~{r.updated} -{r.deleted}" for r in rev.rows)
        )
    return notes


def text(report: CheckReport) -> str:
    """The terminal summary: where, each revision, each stage, the findings, the verdict."""
    out = [f"neonflow check: {_where(report)}"]
    if report.revisions:
        out.append("revisions:")
        for rev in report.revisions:
            mark = {"applied": "✓", "failed": "✗"}.get(rev.status, "·")
            line = f"  {mark} {rev.revision}  {rev.file}  {rev.status}"
            if rev.status == "applied":
                line += f" in {_ms(rev.seconds)}"
            out.append(line)
            out.extend(f"      {note}" for note in _revision_notes(rev))
            if rev.error is not None:
                out.append(f"      error: {rev.error.message}")
                if rev.error.detail:
                    out.append(f"      detail: {rev.error.detail}")
                if rev.error.statement:
                    out.append(f"      statement: {' '.join(rev.error.statement.split())}")
    elif _ran_on_branch(report):
        out.append("revisions: none to apply (the base is at head)")
    if _ran_on_branch(report):
        out.append(f"alembic check: {_drift(report)}")
        out.extend(f"  {line}" for line in report.drift[:MAX_LISTED])
        out.append(f"round trip: {_round_trip(report)}")
        out.append(f"schema diff: {_diff_size(report)}")
    if report.stages["lint"] != "skipped":
        out.append(f"lint: {_lint_counts(report)}")
    listed = _listed(report)
    if listed:
        out.append("findings:")
        out.extend(f"  {_finding_line(finding)}" for finding in listed[:MAX_LISTED])
        if len(listed) > MAX_LISTED:
            out.append(f"  … and {len(listed) - MAX_LISTED} more (see --format json)")
    if report.passed:
        warned = f" ({plural(len(report.warnings), 'warning')})" if report.warnings else ""
        out.append(f"✓ check passed{warned}")
    else:
        out.append(f"✗ check failed (exit {report.exit_code}): {summary(report)}")
    return "\n".join(out)


def _finding_line(finding: Finding) -> str:
    where = finding.revision or ""
    if finding.file:
        where += f" ({finding.file})"
    prefix = f"{where}: " if where else ""
    return f"{finding.severity:<7} {finding.kind:<12} {prefix}{finding.message}"


# -- markdown ------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|") or "—"


def _code(value: str) -> str:
    return f"`{value}`" if "`" not in value else value


def _fence(body: str, lang: str = "") -> str:
    fence = "````" if "```" in body else "```"
    return f"{fence}{lang}\n{body.rstrip()}\n{fence}"


def _details(summary: str, body: list[str]) -> list[str]:
    while body and not body[-1]:
        body = body[:-1]
    return [f"<details><summary>{summary}</summary>", "", *body, "", "</details>", ""]


def markdown(report: CheckReport) -> str:
    """The report for a pull request comment or ``$GITHUB_STEP_SUMMARY``."""
    verdict = (
        "✅ neonflow check passed"
        if report.passed
        else f"❌ neonflow check failed ({_failure_title(report)})"
    )
    out = [f"### {verdict}", ""]
    if report.base is not None:
        line = (
            f"Base **{report.base.name}** at {_code(_revs(report.base.revision))} → head "
            f"{_code(report.head or '?')}"
        )
        if report.branch is not None:
            fate = "kept" if report.stages["teardown"] == "kept" else "deleted afterwards"
            line += f", rehearsed on the throw-away branch {_code(report.branch.name)} ({fate})"
        out += [line + ".", ""]
    if not report.passed:
        out += [f"**{_cell(summary(report))}**", ""]
    if report.revisions:
        out += _revisions_table(report)
    out += _stages(report)
    listed = _listed(report)
    errors = [f for f in listed if f.severity == "error"]
    warnings = [f for f in listed if f.severity != "error"]
    if errors:
        out += _findings_table(errors)
    if warnings:
        out += _details(plural(len(warnings), "warning"), _findings_table(warnings))
    if report.drift:
        out += _details("alembic check", [_fence("\n".join(report.drift))])
    if report.schema_diff:
        lines = report.schema_diff.splitlines()
        body = "\n".join(lines[:MAX_DIFF_LINES])
        if len(lines) > MAX_DIFF_LINES:
            body += f"\n… {len(lines) - MAX_DIFF_LINES} more lines (see the JSON report)"
        out += _details("Schema diff against the base", [_fence(body, "diff")])
    return "\n".join(out).rstrip() + "\n"


def _revisions_table(report: CheckReport) -> list[str]:
    out = [
        "| | revision | file | time | locks on existing tables | rewrites "
        "| rows (+ins ~upd -del) |",
        "|---|---|---|---|---|---|---|",
    ]
    for rev in report.revisions:
        mark = {"applied": "✅", "failed": "❌"}.get(rev.status, "⏭️")
        locks = ", ".join(f"{lock.relation}: {lock.mode}" for lock in rev.locks if lock.existing)
        rows = ", ".join(f"{r.table} +{r.inserted} ~{r.updated} -{r.deleted}" for r in rev.rows)
        time = _ms(rev.seconds) if rev.status == "applied" else rev.status
        out.append(
            f"| {mark} | {_code(rev.revision)} | {_cell(rev.file)} | {time} | {_cell(locks)} | "
            f"{_cell(', '.join(rev.rewritten))} | {_cell(rows)} |"
        )
    out.append("")
    for rev in report.revisions:
        if rev.error is None:
            continue
        out.append(
            f"**{_code(rev.revision)} failed** ({_cell(rev.file)}): {_cell(rev.error.message)}"
        )
        if rev.error.detail:
            out += ["", _cell(rev.error.detail)]
        if rev.error.statement:
            out += ["", _fence(rev.error.statement, "sql")]
        out.append("")
    return out


def _stages(report: CheckReport) -> list[str]:
    marks = {"passed": " ✅", "failed": " ❌"}
    out = []
    if _ran_on_branch(report):
        out += [
            f"- **alembic check**: {_drift(report)}{marks.get(report.stages['alembic_check'], '')}",
            f"- **round trip**: {_round_trip(report)}{marks.get(report.stages['round_trip'], '')}",
            f"- **schema diff**: {_diff_size(report)}",
        ]
    if report.stages["lint"] != "skipped":
        out.append(f"- **lint** (squawk): {_lint_counts(report)}")
    return [*out, ""] if out else []


def _findings_table(findings: list[Finding]) -> list[str]:
    out = ["| severity | kind | revision | message |", "|---|---|---|---|"]
    for finding in findings:
        severity = "❌ error" if finding.severity == "error" else "⚠️ warning"
        where = finding.revision or ""
        if finding.file:
            where += f" ({finding.file})"
        out.append(f"| {severity} | {finding.kind} | {_cell(where)} | {_cell(finding.message)} |")
    return [*out, ""]


def _failure_title(report: CheckReport) -> str:
    return {
        "refused": "refused",
        "migration": "a migration failed",
        "drift": "models and migrations differ",
        "irreversible": "not reversible",
        "lint": "lint errors",
    }.get(report.failure or "", "failed")
