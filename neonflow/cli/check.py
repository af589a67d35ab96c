"""``neonflow check``: the pre-merge migration check (see neonflow.workflow.check)."""

from __future__ import annotations

from neonflow.cli.common import handle_errors
from neonflow.errors import UsageError


@handle_errors
def check() -> None:
    """Rehearse, lint and diff the migrations on a throw-away branch (pre-merge CI)."""
    raise UsageError("neonflow check is not implemented yet")
