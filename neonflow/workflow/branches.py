"""The branch lifecycle: start, switch, reset, diff, delete, promote, prune, list, status.

:class:`Branches` is every use case over one Neon client and the project's settings; each lives
in a module of its own (:mod:`.start`, :mod:`.lifecycle`, :mod:`.promote`, :mod:`.prune`,
:mod:`.listing`, over :mod:`.base`) and returns a result of :mod:`.results`; nothing here
prints. ``progress`` receives one-line messages for people (the CLI sends them to stderr).
"""

from __future__ import annotations

from neonflow.workflow.lifecycle import Lifecycle
from neonflow.workflow.listing import Listing
from neonflow.workflow.promote import Promoting
from neonflow.workflow.prune import Pruning

__all__ = ["Branches"]


class Branches(Listing, Pruning, Promoting, Lifecycle):
    """The branch use cases over one Neon client and the project's settings."""
