"""``neonflow check``: the pre-merge rehearsal of a change's migrations (see :mod:`.run`).

:meth:`Check.run` returns a :class:`CheckReport`; :meth:`CheckReport.raise_for_status` raises the
:class:`~neonflow.errors.CheckFailed` kind of the first failing stage, whose ``exit_code`` the CLI
exits with::

    CheckFailed (neonflow.errors)     exit code
    ├── CheckRefused                      2   several heads; the base is not in the history
    ├── MigrationFailed                  10   a revision failed on the branch
    ├── DriftDetected                    11   alembic check: the models differ from the migrations
    ├── NotReversible                    12   a downgrade failed, or the upgrade after it
    └── LintFailed                       13   squawk found a rule listed in ``[check] fail_on``

Errors that stop the check itself (the Neon API, the network, the configuration) are in the
report as an ``error`` finding with their own exit code, after the branch is deleted.
"""

from neonflow.workflow.check.report import (
    STAGES,
    CheckReport,
    DbError,
    Finding,
    Lock,
    RevisionReport,
    RoundTrip,
    RowCounts,
)
from neonflow.workflow.check.run import Check, check_branch_name
from neonflow.workflow.check.schema_diff import without_bookkeeping

__all__ = [
    "STAGES",
    "Check",
    "CheckReport",
    "DbError",
    "Finding",
    "Lock",
    "RevisionReport",
    "RoundTrip",
    "RowCounts",
    "check_branch_name",
    "without_bookkeeping",
]
