"""neonflow: the branch-per-feature database workflow for Neon and Alembic.

The public surface, loaded on first use (so ``neonflow --help`` stays fast):

- settings: :func:`load_settings` → :class:`Settings`;
- the client: :func:`open_client` → :class:`NeonClient` (Neon cloud, or the local Neon);
- the use cases: :func:`connect` → :class:`Branches` (``start``, ``switch``, ``reset``,
  ``delete``, ``promote``, ``prune``, ``list``, ``status``) and :class:`Check` (``run``), each
  returning its result type (:class:`StartResult`, …, :class:`CheckReport`);
- :func:`branch`: a context manager for a migrated branch that is deleted on exit;
- the exceptions, one tree under :class:`NeonflowError` (see :mod:`neonflow.errors`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from neonflow.api import BranchHandle, branch, connect
    from neonflow.backend import open_client
    from neonflow.config import Settings, load_settings
    from neonflow.errors import (
        AuthError,
        CheckFailed,
        CheckRefused,
        ConfigError,
        ConflictError,
        DriftDetected,
        EnvPyError,
        LintFailed,
        LocalNeonError,
        LockedError,
        MigrationError,
        MigrationFailed,
        NeonAPIError,
        NeonflowError,
        NetworkError,
        NotFoundError,
        NotReversible,
        OperationFailedError,
        RateLimitError,
        RefusedError,
        RevisionLoadError,
        ServerError,
        UsageError,
        WrongTargetError,
    )
    from neonflow.neon import NeonClient
    from neonflow.workflow.branches import Branches
    from neonflow.workflow.check import Check, CheckReport
    from neonflow.workflow.results import (
        BranchRow,
        DeleteResult,
        DiffResult,
        PromoteResult,
        PruneResult,
        ResetResult,
        StartResult,
        StatusResult,
        SwitchResult,
    )

_ERRORS = (
    "AuthError CheckFailed CheckRefused ConfigError ConflictError DriftDetected EnvPyError "
    "LintFailed LocalNeonError LockedError MigrationError MigrationFailed NeonAPIError "
    "NeonflowError NetworkError NotFoundError NotReversible OperationFailedError RateLimitError "
    "RefusedError RevisionLoadError ServerError UsageError WrongTargetError"
)
_RESULTS = (
    "BranchRow DeleteResult DiffResult PromoteResult PruneResult ResetResult "
    "StartResult StatusResult SwitchResult"
)
_WHERE: dict[str, str] = {
    **dict.fromkeys(_ERRORS.split(), "neonflow.errors"),
    **dict.fromkeys(_RESULTS.split(), "neonflow.workflow.results"),
    "Branches": "neonflow.workflow.branches",
    "BranchHandle": "neonflow.api",
    "branch": "neonflow.api",
    "connect": "neonflow.api",
    "open_client": "neonflow.backend",
    "Settings": "neonflow.config",
    "load_settings": "neonflow.config",
    "NeonClient": "neonflow.neon",
    "Check": "neonflow.workflow.check",
    "CheckReport": "neonflow.workflow.check",
}

__all__ = [
    "AuthError",
    "BranchHandle",
    "BranchRow",
    "Branches",
    "Check",
    "CheckFailed",
    "CheckRefused",
    "CheckReport",
    "ConfigError",
    "ConflictError",
    "DeleteResult",
    "DiffResult",
    "DriftDetected",
    "EnvPyError",
    "LintFailed",
    "LocalNeonError",
    "LockedError",
    "MigrationError",
    "MigrationFailed",
    "NeonAPIError",
    "NeonClient",
    "NeonflowError",
    "NetworkError",
    "NotFoundError",
    "NotReversible",
    "OperationFailedError",
    "PromoteResult",
    "PruneResult",
    "RateLimitError",
    "RefusedError",
    "ResetResult",
    "RevisionLoadError",
    "ServerError",
    "Settings",
    "StartResult",
    "StatusResult",
    "SwitchResult",
    "UsageError",
    "WrongTargetError",
    "__version__",
    "branch",
    "connect",
    "load_settings",
    "open_client",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use."""
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'neonflow' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names."""
    return sorted(__all__)
