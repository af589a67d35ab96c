"""``neonflow init``: write neonflow.toml for an existing project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neonflow.cli import output
from neonflow.cli.common import JsonOpt, YesOpt, confirmed, handle_errors


@handle_errors
def init(
    yes: YesOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing neonflow.toml.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Find the Alembic set-up of the project in this folder and write neonflow.toml.

    Looks for the Alembic ini (or a Flask-Migrate folder and its FLASK_APP), the
    env file and the variables the app reads its database from (DATABASE_URL,
    SQLALCHEMY_DATABASE_URI, POSTGRES_*…), then writes a commented neonflow.toml.

    Example: neonflow init --yes
    """
    from neonflow.workflow import init as project_init

    root = Path.cwd()
    preview = project_init.init(root, force=force, write=False)
    found = preview.detected
    if not json:
        output.info(f"Alembic:    {found.alembic_ini}")
        if found.flask_app is not None:
            output.info(f"Flask app:  {found.flask_app or '(not found)'} (Flask-Migrate)")
        output.info(f"env file:   {found.env_file}")
        variables = ", ".join(found.env) if found.env else found.env_var
        seen = f" (seen in {', '.join(found.found_in)})" if found.found_in else ""
        output.info(f"variables:  {variables}{seen}")
        for note in found.notes:
            output.info(f"check:      {note}")
    confirmed(f"write {preview.config_file}?", yes, "write neonflow.toml")
    result = project_init.init(root, force=force)
    if json:
        output.data(result.to_json())
        return
    output.info(f"✓ wrote {result.config_file}; next: neonflow branch start <name>")
