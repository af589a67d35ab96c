"""The documentation agrees with the program: every registered command has help with an example
and a README entry, and the exit codes of the exception tree, ``--help`` and the README are one
table (``neonflow.errors.EXIT_CODES``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from neonflow import errors
from neonflow.cli import common
from neonflow.cli.main import app
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        if hasattr(command, "commands"):  # a group (Typer carries its own click)
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(_commands(typer.main.get_command(app)))


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_the_commands_are_found() -> None:
    # The walk itself: the commands every user meets are among what it finds.
    assert {("branch", "start"), ("check",), ("local", "up"), ("init",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example_and_a_readme_entry(command: tuple[str, ...]):
    result = CliRunner().invoke(app, [*command, "--help"])

    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"`neonflow {' '.join(command)} --help` has no example"
    assert f"neonflow {' '.join(command)}" in README


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("neonflow ")


def test_every_exception_exits_with_a_documented_code() -> None:
    for cls in [errors.NeonflowError, *_subclasses(errors.NeonflowError)]:
        assert cls.exit_code in errors.EXIT_CODES, f"{cls.__name__} exits {cls.exit_code}"
    for code in (common.EXIT_INTERRUPTED, common.EXIT_STDOUT_CLOSED):
        assert code in errors.EXIT_CODES


def test_the_readme_and_help_list_the_same_exit_codes_as_the_table() -> None:
    section = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    readme_codes = [int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert readme_codes == sorted(errors.EXIT_CODES)

    root_help = " ".join(CliRunner().invoke(app, ["--help"]).output.split())
    for code, meaning in errors.EXIT_CODES.items():
        if code:
            assert f"{code} {' '.join(meaning.split())}" in root_help


def test_checks_help_lists_the_codes_of_its_failures() -> None:
    text = " ".join(CliRunner().invoke(app, ["check", "--help"]).output.split())
    listed = {int(code) for code in re.findall(r"(\d+) [a-z]", text.split("Exit codes:")[1])}
    failures = {cls.exit_code for cls in _subclasses(errors.CheckFailed)}
    assert failures | {0} <= listed <= set(errors.EXIT_CODES)
