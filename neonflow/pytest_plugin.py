"""neonflow's pytest plugin: the tests on a throw-away branch of real data, migrated to head.

Opt-in, so installing neonflow changes nothing for a suite that does not ask: ``pytest
--neon-branch``, or ``neonflow_branch = true`` in the pytest configuration, or the
:func:`neon_branch` fixture (which then opens the branch when first used).

Before the test modules (and so the app) are imported, the run gets a branch of ``[neon] parent``
migrated to head (the snapshot) and a child of it for the tests, and the app's variables
(``[app] env_var`` or ``[app.env]``) are exported for the child. At the end, on failures and
Ctrl-C too, both are deleted; should the process die, the child expires by itself (Neon branches
from no expiring branch, so the snapshot cannot: ``neonflow branch prune`` sweeps it). Under
pytest-xdist each worker has its own pair, named after the run and the worker.

:func:`neon_db` hands each test a clean state: a transaction rolled back at its end, or, for a
test marked ``@pytest.mark.neon_commits``, a reset of the tests' branch from the snapshot after it.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from neonflow.workflow.branches import Branches
    from neonflow.workflow.results import StartResult

RUN_VAR = "NEONFLOW_PYTEST_RUN"
"""The run's id, shared by pytest-xdist's workers (they inherit the controller's environment)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--neon-branch``, ``--neon-schema-only`` and their ini options."""
    group = parser.getgroup("neonflow", "neonflow: the tests on a throw-away Neon branch")
    group.addoption(
        "--neon-branch",
        action="store_true",
        default=False,
        help="run the tests on a throw-away branch of [neon] parent, migrated to head",
    )
    group.addoption(
        "--neon-schema-only",
        action="store_true",
        default=False,
        help="branch the parent's schema only, without its data",
    )
    parser.addini("neonflow_branch", "like --neon-branch", type="bool", default=False)
    parser.addini("neonflow_schema_only", "like --neon-schema-only", type="bool", default=False)


@dataclass
class NeonBranch:
    """The run's branch for the tests: its name, URI, revision and the variables exported."""

    name: str
    id: str
    url: str = field(repr=False)  # has the password
    revision: tuple[str, ...]
    snapshot: str
    """The migrated branch it is a child of; :func:`neon_db` resets from it."""
    snapshot_id: str
    env: dict[str, str] = field(repr=False)


@dataclass
class NeonDB:
    """One test's database: the URI, and (by default) a connection in a transaction rolled back
    at the end of the test. Bind your ORM session to ``connection`` with
    ``join_transaction_mode="create_savepoint"`` so the code's own commits are rolled back too."""

    url: str = field(repr=False)
    connection: Connection


class _Run:
    """The branches of one pytest process: opened before collection, deleted at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.workflow: Branches | None = None
        self.branch: NeonBranch | None = None
        self.saved_env: dict[str, str | None] = {}
        self.engine: Engine | None = None
        self.names: list[str] = []
        self._base: str | None = None

    def base_name(self) -> str:
        """``pytest-<run>``, or ``pytest-<run>-<worker>`` under pytest-xdist."""
        if self._base is None:
            worker = os.environ.get("PYTEST_XDIST_WORKER")
            run = (os.environ.get(RUN_VAR) if worker else None) or uuid.uuid4().hex[:8]
            if _xdist_controller(self.config):
                os.environ[RUN_VAR] = run  # the workers it starts inherit it
            self._base = f"pytest-{run}-{worker}" if worker else f"pytest-{run}"
        return self._base

    def open(self) -> NeonBranch:
        """Make the snapshot (migrated) and the tests' branch, and export the app's variables."""
        from neonflow.api import app_env, connect

        schema_only = bool(
            _option(self.config, "neon_schema_only") or self.config.getini("neonflow_schema_only")
        )
        self.workflow = workflow = connect()
        base = self.base_name()
        self.names = [workflow.full_name(base)[0], workflow.full_name(f"{base}-tests")[0]]
        try:
            # Neon branches from no expiring branch: the snapshot has no expiry, its child has.
            snapshot = workflow.start(
                base,
                migrate=True,
                write_env=False,
                purpose="pytest",
                expiry="none",
                schema_only=schema_only,
            )
            tests: StartResult = workflow.start(
                f"{base}-tests",
                parent=snapshot.branch,
                migrate=False,
                write_env=False,
                purpose="pytest",
                expiry="throwaway",
            )
        except BaseException:
            self.close()
            raise
        env = app_env(workflow, tests.database_url)
        self.saved_env = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        self.branch = NeonBranch(
            name=tests.branch,
            id=tests.branch_id,
            url=tests.database_url,
            revision=tuple(tests.revision),
            snapshot=snapshot.branch,
            snapshot_id=snapshot.branch_id,
            env=env,
        )
        return self.branch

    def sqlalchemy(self) -> Engine:
        """One engine for the run's transactional tests (psycopg 3)."""
        if self.engine is None:
            from sqlalchemy import create_engine

            from neonflow.appenv import with_driver

            assert self.branch is not None
            self.engine = create_engine(with_driver(self.branch.url, "psycopg"))
        return self.engine

    def reset(self) -> None:
        """The tests' branch back to the snapshot: Neon's reset from parent, then wait."""
        assert self.workflow is not None and self.branch is not None
        if self.engine is not None:
            self.engine.dispose()  # the reset ends every session on the branch
        client = self.workflow.client
        restored = client.restore_branch(self.branch.id, self.branch.snapshot_id)
        client.wait_for_operations(restored.operations)
        self.workflow.wait_ready(client.get_branch(self.branch.id))

    def close(self) -> None:
        """Delete the branches (the child first) and put the environment back."""
        if self.engine is not None:
            self.engine.dispose()
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.workflow is not None:
            for name in reversed(self.names):
                self.workflow.delete_quietly(name)
            self.workflow.client.close()
            self.workflow = None


_RUN = pytest.StashKey[_Run]()


def _option(config: pytest.Config, name: str) -> object:
    """A command-line option, also before pytest has parsed them all (at conftest loading)."""
    return getattr(config.known_args_namespace, name, None) or getattr(config.option, name, None)


def _enabled(config: pytest.Config) -> bool:
    return bool(_option(config, "neon_branch") or config.getini("neonflow_branch"))


def _xdist_controller(config: pytest.Config) -> bool:
    """This process hands the tests to pytest-xdist's workers and runs none itself."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return False
    return bool(_option(config, "numprocesses"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Open the run's branch before conftest.py and the test modules import the app."""
    if not _enabled(early_config):
        return
    run = _Run(early_config)
    early_config.stash[_RUN] = run
    if _xdist_controller(early_config):
        run.base_name()  # only fix the run's id for the workers
        return
    _open(run)


def _open(run: _Run) -> NeonBranch:
    """Open the run's branch; neonflow's errors end the run with one line, as pytest's own."""
    from neonflow.errors import NeonflowError

    try:
        return run.open()
    except NeonflowError as exc:
        import re

        from neonflow.urls import mask_password

        message = re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", lambda m: mask_password(m[0]), str(exc))
        raise pytest.UsageError(f"neonflow could not open the run's branch: {message}") from None


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say which branch the tests run on (the password never shows)."""
    run = config.stash.get(_RUN, None)
    if run is None or run.branch is None:
        return None
    branch = run.branch
    return (
        f"neonflow: tests on branch {branch.name}, a child of {branch.snapshot} "
        f"(migrated to {', '.join(branch.revision) or 'no revision'})"
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker."""
    config.addinivalue_line(
        "markers", "neon_commits: the test commits; neon_db resets the branch after it"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Delete the run's branches; pytest-xdist's controller sweeps what a dead worker left."""
    run = config.stash.get(_RUN, None)
    if run is None:
        return
    if _xdist_controller(config) and run.workflow is None:
        _sweep(run)
    run.close()


def _sweep(run: _Run) -> None:
    from neonflow.api import connect

    prefix = run.base_name() + "-"
    try:
        workflow = connect()
    except Exception as exc:
        sys.stderr.write(f"neonflow: could not check for the run's branches: {exc}\n")
        return
    with workflow.client:
        full = workflow.full_name(prefix.rstrip("-"))[0] + "-"
        left = [b.name for b in workflow.client.list_branches() if b.name.startswith(full)]
        for name in sorted(left, key=len, reverse=True):  # children ("…-tests") first
            workflow.delete_quietly(name)


@pytest.fixture(scope="session")
def neon_branch(request: pytest.FixtureRequest) -> NeonBranch:
    """The run's branch for the tests (opened here, if ``--neon-branch`` did not open it)."""
    config = request.config
    run = config.stash.get(_RUN, None)
    if run is None:
        run = config.stash[_RUN] = _Run(config)
    if run.branch is None:
        return _open(run)
    return run.branch


@pytest.fixture
def neon_db(request: pytest.FixtureRequest, neon_branch: NeonBranch) -> Iterator[NeonDB]:
    """A clean database for one test: rolled back after it, or reset if marked ``neon_commits``."""
    run = request.config.stash[_RUN]
    engine = run.sqlalchemy()
    if request.node.get_closest_marker("neon_commits") is not None:
        try:
            with engine.connect() as connection:
                yield NeonDB(neon_branch.url, connection)
        finally:
            run.reset()
        return
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield NeonDB(neon_branch.url, connection)
        finally:
            transaction.rollback()
