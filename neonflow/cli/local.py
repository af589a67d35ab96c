"""``neonflow local up | down | status``: the local Neon on this machine."""

from __future__ import annotations

import typer

from neonflow.cli import output
from neonflow.cli.common import JsonOpt, handle_errors, settings

app = typer.Typer(
    help="Run the local Neon (a Neon API over embedded PostgreSQL).", no_args_is_help=True
)


@app.command()
@handle_errors
def up(json: JsonOpt = False) -> None:
    """Start the local Neon in the background (nothing happens if it runs already).

    Example: neonflow local up
    """
    from neonflow.local import service

    info, started = service.up(settings())
    payload = {
        "api_host": info.api_host,
        "project_id": info.project_id,
        "token_file": str(info.token_file),
        "pid": info.pid,
        "started": started,
    }
    if json:
        output.data(payload)
        return
    output.info(f"{'started' if started else 'already running'}: local Neon (pid {info.pid})")
    output.info(f"  api host:   {info.api_host}")
    output.info(f"  project id: {info.project_id}")
    output.info(f"  token:      {info.token_file}")


@app.command()
@handle_errors
def down() -> None:
    """Stop the local Neon and its PostgreSQL (the data stays for the next `up`).

    Example: neonflow local down
    """
    from neonflow.local import service

    stopped = service.down(settings())
    output.info("stopped the local Neon" if stopped else "the local Neon was not running")


@app.command()
@handle_errors
def status(json: JsonOpt = False) -> None:
    """Say whether the local Neon runs, where, and how many branches it holds.

    Example: neonflow local status
    """
    from neonflow.local import service
    from neonflow.neon import NeonClient

    cfg = settings()
    info = service.running(cfg)
    payload: dict[str, object] = {"running": info is not None, "state_dir": str(cfg.state_dir)}
    if info is not None:
        with NeonClient(info.api_host, info.token, info.project_id) as client:
            count = len(client.list_branches())
        payload.update(
            api_host=info.api_host,
            project_id=info.project_id,
            pid=info.pid,
            postgres_port=info.pg_port,
            token_file=str(info.token_file),
            branches=count,
        )
    if json:
        output.data(payload)
        return
    if info is None:
        output.info(f"not running (state in {cfg.state_dir}); start it with `neonflow local up`")
        return
    output.info(f"running: pid {info.pid}, {payload['branches']} branches")
    output.info(f"  api host:   {info.api_host}")
    output.info(f"  postgres:   127.0.0.1:{info.pg_port}")
    output.info(f"  state:      {cfg.state_dir}")
