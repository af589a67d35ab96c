"""``neonflow branch …`` and ``neonflow connection-string``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from neonflow.cli import output
from neonflow.cli.common import (
    JsonOpt,
    ShowPasswordOpt,
    YesOpt,
    branches,
    confirmed,
    handle_errors,
    show_url,
)

app = typer.Typer(
    help="Create, inspect and retire the Neon branches of your features.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Branch name (or id).", show_default=False)]


def _mask_json(payload: dict[str, object], show_password: bool) -> dict[str, object]:
    for key in ("database_url", "app_url"):
        if isinstance(payload.get(key), str):
            payload[key] = show_url(str(payload[key]), show_password)
    return payload


@app.command()
@handle_errors
def start(
    name: Annotated[
        str | None,
        typer.Argument(help="Branch name; defaults to the current git branch.", show_default=False),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option("--parent", help="Branch from this one instead of [neon] parent."),
    ] = None,
    json: JsonOpt = False,
    show_password: ShowPasswordOpt = False,
) -> None:
    """Get or create the branch, point the app at it and run the migrations.

    Example: neonflow branch start feature-x
    """
    result = branches().start(name, parent=parent)
    if json:
        output.data(_mask_json(result.to_json(), show_password))
        return
    verb = "created" if result.created else "reused"
    output.info(f"✓ branch {result.branch} ({result.branch_id}) {verb} from {result.parent}")
    url = show_url(result.database_url, show_password)
    if "," in result.env_var:  # several variables ([app.env])
        output.info(f"  {result.env_file}: {result.env_var} for {url}")
    else:  # the value as written, its driver included
        app_url = show_url(result.app_url or result.database_url, show_password)
        output.info(f"  {result.env_file}: {result.env_var}={app_url}")
    output.info(f"  alembic revision: {', '.join(result.revision) or '(none)'}")
    if result.expires_at:
        output.info(f"  expires at {result.expires_at}")


@app.command("list")
@handle_errors
def list_(
    json: JsonOpt = False,
    revisions: Annotated[
        bool | None,
        typer.Option(
            "--revisions/--no-revisions",
            help="Read every branch's Alembic revision, waking suspended computes on Neon "
            "cloud (default: those running) / read none.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the project's branches, their Alembic revision and the one the app points at.

    Example: neonflow branch list
    """
    rows = branches().list(revisions=revisions)
    if json:
        output.data([row.to_json() for row in rows])
        return
    table_rows = []
    for row in rows:
        flags = [f for f, on in (("default", row.default), ("protected", row.protected)) if on]
        table_rows.append(
            [
                ("* " if row.current else "  ") + row.name,
                row.parent or "-",
                row.state,
                row.created_at,
                row.expires_at or "-",
                _revision_cell(row.revision, row.revision_status),
                ",".join(flags),
            ]
        )
    output.table(
        ["  NAME", "PARENT", "STATE", "CREATED", "EXPIRES", "REVISION", "FLAGS"], table_rows
    )
    output.info("* = the branch the app points at")
    if any(row.revision_status == "idle" for row in rows):
        output.info(f"{IDLE_CELL} = revisions not read for idle computes (use --revisions)")


IDLE_CELL = "(idle)"


def _revision_cell(revision: list[str] | None, status: str) -> str:
    if status == "idle":
        return IDLE_CELL
    if status == "not_read" or revision == []:
        return "-"
    return ",".join(revision) if revision else "?"  # ? = could not be read


RevisionsOpt = Annotated[
    bool,
    typer.Option(
        "--revisions",
        help="Read the revision even if that wakes a suspended compute on Neon cloud.",
    ),
]


@app.command()
@handle_errors
def status(
    json: JsonOpt = False, show_password: ShowPasswordOpt = False, revisions: RevisionsOpt = False
) -> None:
    """Show the branch the app points at, its revision against head, its parent and expiry.

    Example: neonflow branch status
    """
    result = branches().status(revisions=True if revisions else None)
    if json:
        output.data(_mask_json(result.to_json(), show_password))
        return
    if result.database_url is None:
        output.info(
            f"the app has no {result.env_vars} in {result.env_file}; run `neonflow branch start`"
        )
        if result.problem is not None:
            output.info(f"problem:  {result.problem}")
        return
    revision = ", ".join(result.revision) if result.revision else "(none)"
    head = ", ".join(result.head) or "(none)"
    state = "at head" if result.at_head else f"behind head ({head})"
    if result.revision_status == "idle":
        revision, state = "not read", "the compute is idle; use --revisions"
    elif result.revision is None:
        state = "unreachable"
    elif result.problem is not None:
        state = "head unknown"
    output.info(f"branch:   {result.branch or '(not a branch of this project)'}")
    output.info(f"url:      {show_url(result.database_url, show_password)}")
    output.info(f"parent:   {result.parent or '-'}")
    output.info(f"expires:  {result.expires_at or 'never'}")
    output.info(f"revision: {revision} ({state})")
    if result.problem is not None:
        output.info(f"problem:  {result.problem}")


@app.command()
@handle_errors
def switch(name: NameArg, json: JsonOpt = False, show_password: ShowPasswordOpt = False) -> None:
    """Point the app's env file at an existing branch (nothing else changes).

    Example: neonflow branch switch feature-x
    """
    result = branches().switch(name)
    if json:
        output.data(_mask_json(result.to_json(), show_password))
        return
    output.info(f"✓ the app points at {result.branch} ({result.branch_id})")


@app.command()
@handle_errors
def reset(name: NameArg, yes: YesOpt = False, json: JsonOpt = False) -> None:
    """Replace the branch's data with a fresh copy of its parent, then migrate again.

    Example: neonflow branch reset feature-x --yes
    """
    confirmed(f"Reset {name} from its parent? Its data will be lost.", yes, "reset")
    result = branches().reset(name)
    if json:
        output.data(result.to_json())
        return
    output.info(
        f"✓ {result.branch} reset from {result.parent}; revision {', '.join(result.revision)}"
    )


@app.command()
@handle_errors
def diff(name: NameArg, json: JsonOpt = False) -> None:
    """Print the schema diff of the branch against its parent (a unified diff).

    Example: neonflow branch diff feature-x
    """
    result = branches().diff(name)
    if json:
        output.data(result.to_json())
        return
    if result.diff:
        output.line(result.diff.rstrip("\n"))
    else:
        output.info(f"no schema difference between {result.branch} and {result.base}")


@app.command()
@handle_errors
def delete(name: NameArg, yes: YesOpt = False, json: JsonOpt = False) -> None:
    """Delete the branch; the app is pointed back at the parent if it pointed at it.

    Example: neonflow branch delete feature-x --yes
    """
    confirmed(f"Delete branch {name}?", yes, "delete")
    result = branches().delete(name)
    if json:
        output.data(result.to_json())
        return
    if result.already_gone:
        output.info(f"✓ branch {result.branch} does not exist (already deleted)")
    else:
        output.info(f"✓ deleted {result.branch} ({result.branch_id})")


@app.command()
@handle_errors
def promote(
    name: NameArg,
    set_default: Annotated[
        bool,
        typer.Option("--set-default", help="Make the branch Neon's default branch instead."),
    ] = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Ship the branch's migrations to its parent (rehearsed first), then delete the branch.

    Example: neonflow branch promote feature-x --yes
    """
    what = "make it the default branch" if set_default else "migrate its parent and delete it"
    confirmed(f"Promote {name}: {what}?", yes, "promote")
    result = branches().promote(name, set_default=set_default)
    if json:
        output.data(result.to_json())
        return
    if result.mode == "set-default":
        output.info(f"✓ {result.branch} is now the default branch")
        return
    after = ", ".join(result.parent_revision_after) or "(none)"
    output.info(f"✓ {result.parent} is at {after}; {result.branch} deleted")
    if result.app_repointed:
        output.info(f"  the app pointed at {result.branch}: it now points at {result.parent}")


@app.command()
@handle_errors
def prune(
    merged: Annotated[
        bool, typer.Option("--merged", help="Branches whose git branch is merged or gone.")
    ] = False,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Branches created longer ago, e.g. 7d.")
    ] = None,
    throwaways: Annotated[
        bool,
        typer.Option(
            "--throwaways",
            help="Only throw-away branches (check, rehearsal): expired, or --older-than.",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Delete neonflow's own stale branches (never the default, protected or parent ones).

    Throw-away branches past their expiry always go.

    Example: neonflow branch prune --merged --older-than 7d --dry-run
    """
    wf = branches()
    preview = wf.prune(older_than, merged, dry_run=True, throwaways=throwaways)
    if not dry_run and preview.deleted:
        question = f"Delete {len(preview.deleted)} branches ({', '.join(preview.deleted)})?"
        confirmed(question, yes, "prune")
    result = (
        preview
        if dry_run
        else wf.prune(
            older_than, merged, dry_run=False, only=preview.deleted, throwaways=throwaways
        )
    )
    if json:
        output.data(result.to_json())
        return
    verb = "would delete" if dry_run else "deleted"
    output.info(f"{verb}: {', '.join(result.deleted) or 'nothing'}")


@handle_errors
def connection_string(
    name: NameArg,
    pooled: Annotated[bool, typer.Option("--pooled", help="The pooled (PgBouncer) URI.")] = False,
    show_password: ShowPasswordOpt = False,
) -> None:
    """Print the branch's connection URI on stdout (masked on a terminal).

    Example: psql "$(neonflow connection-string feature-x)"
    """
    uri = branches().connection_string(name, pooled=pooled)
    # In a pipe the URI is the point; on a screen, passers-by should not read the password.
    output.line(show_url(uri, show_password or not sys.stdout.isatty()))
