"""Progress on stderr: a spinner with the stage and its time on a terminal, plain lines elsewhere,
``--quiet``, ``NO_COLOR`` and shell completion.

The spinner is driven by hand with a clock of the test's own; the real CLI runs on a
pseudo-terminal (``pty``) against the session's local Neon, with a migration that takes 1.5 s in
PostgreSQL so that its stage outlasts the spinner's delay.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from neonflow.cli.main import app
from neonflow.cli.progress import Spinner, elapsed_text
from neonflow.local.service import LocalNeonInfo
from tests.conftest import REPO

NEONFLOW = Path(sys.executable).parent / "neonflow"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colour and styling
CONTROL = re.compile(r"(\r|\x1b\[K)")  # back to the row's start; erase to its end
FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SETS = REPO / "tests" / "migration_sets"


def nf(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def unique(prefix: str = "progress") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_config(root: Path, ini: Path, info: LocalNeonInfo) -> None:
    (root / "neonflow.toml").write_text(
        f'[app]\nenv_file = ".env"\n[migrations]\nalembic_ini = "{ini}"\n'
        f'[local]\nstate_dir = "{info.state_dir}"\n'
    )


def screen(raw: str) -> list[str]:
    """What a terminal shows at the end: each row after its carriage returns and erases."""
    rows = []
    for row in SGR.sub("", raw).replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        col = 0
        for piece in CONTROL.split(row):
            if piece == "\r":
                col = 0
            elif piece == "\x1b[K":
                del cells[col:]
            else:
                cells[col : col + len(piece)] = piece
                col += len(piece)
        rows.append("".join(cells))
    while rows and not rows[-1]:
        rows.pop()
    return rows


# -- the spinner, by hand ------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spinner(color: bool = False) -> tuple[Spinner, FakeTTY, Clock]:
    stream, clock = FakeTTY(), Clock()
    return Spinner(stream, color=color, clock=clock), stream, clock


def test_a_stage_shorter_than_a_second_is_only_its_line() -> None:
    sp, stream, clock = spinner()
    sp.stage("creating branch feature-x from main")
    clock.now += 0.9
    sp.tick()
    assert stream.getvalue() == ""  # nothing extra for fast work
    sp.stage("running alembic upgrade head")
    assert stream.getvalue() == "creating branch feature-x from main\n"


def test_a_long_stage_spins_with_its_time_and_keeps_its_line() -> None:
    sp, stream, clock = spinner()
    sp.stage("running alembic upgrade head")
    clock.now += 1.2
    sp.tick()
    assert stream.getvalue() == "\r\x1b[K⠋ running alembic upgrade head 1.2s"
    clock.now += 0.1
    sp.tick()
    assert screen(stream.getvalue()) == ["⠙ running alembic upgrade head 1.3s"]
    clock.now += 0.2
    sp.close()
    assert screen(stream.getvalue()) == ["running alembic upgrade head (1.5s)"]
    sp.tick()  # a tick after the end draws nothing
    assert screen(stream.getvalue()) == ["running alembic upgrade head (1.5s)"]


def test_the_spinner_line_fits_the_terminal() -> None:
    sp, stream, clock = spinner()
    sp.stage("rehearsing the migrations on " + "x" * 200 + "\nsecond line")
    clock.now += 61
    sp.tick()
    [row] = screen(stream.getvalue())
    assert len(row) == 80 - 1  # the width a stream that cannot tell gets, minus the cursor's cell
    assert row.startswith("⠋ rehearsing the migrations on xxx") and row.endswith("… 1m01s")


def test_colour_on_a_terminal_and_none_with_no_color() -> None:
    coloured, stream, clock = spinner(color=True)
    coloured.stage("deleting branch feature-x")
    clock.now += 1.0
    coloured.tick()
    assert "\x1b[36m⠋\x1b[0m" in stream.getvalue()

    plain, stream, clock = spinner(color=False)
    plain.stage("deleting branch feature-x")
    clock.now += 1.0
    plain.tick()
    plain.close()
    assert not SGR.search(stream.getvalue())


def test_frames_are_ascii_where_the_terminal_is_not_utf8() -> None:
    stream, clock = FakeTTY(), Clock()
    stream.encoding = "ascii"  # type: ignore[misc]
    sp = Spinner(stream, clock=clock, color=False)
    sp.stage("waiting")
    clock.now += 1.0
    sp.tick()
    assert screen(stream.getvalue()) == ["| waiting 1.0s"]


def test_elapsed_text() -> None:
    assert [elapsed_text(s) for s in (0.04, 1.25, 59.9, 60, 125.5)] == [
        "0.0s",
        "1.2s",
        "59.9s",
        "1m00s",
        "2m05s",
    ]


# -- the real CLI: plain lines, --quiet, --json ---------------------------------------------------


def test_not_a_terminal_one_plain_line_per_stage(project: Path) -> None:
    name = unique()
    result = nf("branch", "start", name)

    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        f"creating branch {name} from main",
        f"DATABASE_URL in .env -> {name}",
        "running alembic upgrade head",
    ]
    assert lines[3].startswith(f"✓ branch {name} (")
    assert not CONTROL.search(result.stderr) and not SGR.search(result.stderr)


@pytest.mark.parametrize("how", ["--quiet", "-q", "NEONFLOW_QUIET"])
def test_quiet_prints_only_data(project: Path, how: str) -> None:
    name = unique()
    if how == "NEONFLOW_QUIET":
        result = nf("branch", "start", name, "--json", env={"NEONFLOW_QUIET": "1"})
    else:
        result = nf(how, "branch", "start", name, "--json")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["branch"] == name
    assert (project / ".env").read_text().startswith("DATABASE_URL=")


def test_quiet_keeps_errors(project: Path) -> None:
    result = nf("-q", "branch", "switch", unique("nope"))

    assert result.exit_code == 6
    [line] = result.stderr.splitlines()
    assert line.startswith("error: branch 'nope-")


def test_quiet_keeps_why_a_check_failed(project: Path, local_neon: LocalNeonInfo) -> None:
    write_config(project, SETS / "drift" / "alembic.ini", local_neon)  # models ahead of revisions
    result = nf("-q", "check")

    assert result.exit_code == 11, result.stderr
    assert "creating branch" not in result.stderr  # no progress
    assert "✗ check failed (exit 11)" in result.stderr.splitlines()[-1]


# -- the real CLI on a terminal -------------------------------------------------------------------


@pytest.fixture
def slow_project(tmp_path: Path, local_neon: LocalNeonInfo) -> Path:
    """A project whose one revision takes 1.5 s in PostgreSQL, on the session's local Neon."""
    root = tmp_path / "slow"
    (root / "versions").mkdir(parents=True)
    (root / "versions" / "p001_slow.py").write_text(
        '"""take a second and a half"""\n\nfrom alembic import op\n\nrevision = "p001"\n'
        "down_revision = None\nbranch_labels = None\ndepends_on = None\n\n\n"
        'def upgrade() -> None:\n    op.execute("SELECT pg_sleep(1.5)")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    (root / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {SETS / '_env'}\nversion_locations = %(here)s/versions\n"
        f"path_separator = os\nmodels = {SETS / 'slow' / 'models.py'}\n"
    )
    write_config(root, root / "alembic.ini", local_neon)
    return root


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NEONFLOW_") and k not in ("NEON_API_KEY", "NO_COLOR", "TERM")
    }
    return {**env, "TERM": "xterm-256color", **extra}


def on_a_terminal(
    args: list[str], cwd: Path, env: dict[str, str], stdout_too: bool = False
) -> tuple[int, str, str]:
    """Run the real CLI with stderr (and with ``stdout_too`` stdout) on a pseudo-terminal:
    its exit code, what the terminal received, and stdout when it went to a pipe."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        [str(NEONFLOW), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
    ) as proc:
        os.close(slave)
        received = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            received += chunk
        os.close(master)
        stdout = proc.stdout.read() if proc.stdout is not None else b""
        code = proc.wait(timeout=60)
    return code, received.decode(), stdout.decode()


def spinner_frames(raw: str, stage: str) -> list[str]:
    return re.findall(
        rf"\r\x1b\[K(?:\x1b\[36m)?[{FRAMES}](?:\x1b\[0m)? {re.escape(stage)} "
        r"(?:\x1b\[2m)?\d+\.\ds",
        raw,
    )


def test_on_a_terminal_the_slow_stage_spins_and_json_stays_clean(slow_project: Path) -> None:
    name = unique()
    code, raw, _ = on_a_terminal(
        ["branch", "start", name, "--json"], slow_project, clean_env(), stdout_too=True
    )

    assert code == 0, raw
    frames = spinner_frames(raw, "running alembic upgrade head")
    assert frames, raw
    assert "\x1b[36m" in frames[0]  # coloured on a terminal
    rows = screen(raw)
    assert re.fullmatch(rf"creating branch {name} from main( \(\d+\.\ds\))?", rows[0]), rows
    assert re.fullmatch(r"running alembic upgrade head \(\d+\.\ds\)", rows[2]), rows
    # The spinner was gone before stdout: the rest of the screen is the JSON document.
    assert json.loads("\n".join(rows[3:]))["revision"] == ["p001"]


def test_no_color_spins_without_colour_and_never_writes_stdout(slow_project: Path) -> None:
    name = unique()
    code, raw, stdout = on_a_terminal(
        ["branch", "start", name], slow_project, clean_env(NO_COLOR="1")
    )

    assert code == 0, raw
    assert stdout == ""
    assert spinner_frames(raw, "running alembic upgrade head"), raw
    assert not SGR.search(raw), raw
    rows = screen(raw)
    assert re.fullmatch(r"running alembic upgrade head \(\d+\.\ds\)", rows[2]), rows
    assert rows[3].startswith(f"✓ branch {name} (")


@pytest.mark.parametrize(
    ("options", "term"),
    [([], "dumb"), (["--verbose"], "xterm-256color")],
    ids=["TERM=dumb", "--verbose"],  # a terminal that cannot move its cursor; Alembic's log
)
def test_plain_lines_where_a_spinner_cannot_draw(
    slow_project: Path, options: list[str], term: str
) -> None:
    name = unique()
    code, raw, _ = on_a_terminal(
        [*options, "branch", "start", name], slow_project, clean_env(TERM=term)
    )

    assert code == 0, raw
    text = raw.replace("\r\n", "\n")  # the terminal's own line ends
    assert not CONTROL.search(text) and not SGR.search(text), raw
    stages = [
        f"creating branch {name} from main",
        f"DATABASE_URL in .env -> {name}",
        "running alembic upgrade head",
    ]
    assert [row for row in text.splitlines() if row in stages] == stages


def test_help_has_no_styling_with_no_color(tmp_path: Path) -> None:
    code, styled, _ = on_a_terminal(["--help"], tmp_path, clean_env(), stdout_too=True)
    assert code == 0 and SGR.search(styled)  # Typer's Rich help, on a terminal

    code, plain, _ = on_a_terminal(["--help"], tmp_path, clean_env(NO_COLOR="1"), stdout_too=True)
    assert code == 0, plain
    assert not SGR.search(plain), plain
    assert "--quiet" in plain and "--install-completion" in plain


# -- shell completion -----------------------------------------------------------------------------


def bash(script: str, home: Path) -> str:
    """Run ``script`` in bash (the shell neonflow detects as its parent), with ``home`` as HOME."""
    path = f"{NEONFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the script calls neonflow
    env = {**clean_env(), "HOME": str(home), "NF": str(NEONFLOW), "PATH": path}
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


COMPLETE = 'COMP_WORDS=(neonflow branch st); COMP_CWORD=2; _neonflow_completion neonflow; printf "%s\\n" "${COMPREPLY[@]}"'  # noqa: E501


def test_show_completion_prints_a_script_that_completes(tmp_path: Path) -> None:
    out = bash(f'script="$("$NF" --show-completion)"; eval "$script"; {COMPLETE}', tmp_path)

    assert out.split() == ["start", "status"]


def test_install_completion_writes_it_for_the_shell(tmp_path: Path) -> None:
    said = bash('said="$("$NF" --install-completion)"; echo "$said"', tmp_path)

    assert "bash completion installed in" in said
    assert (tmp_path / ".bash_completions" / "neonflow.sh").is_file()
    out = bash(f"source ~/.bashrc; {COMPLETE}", tmp_path)
    assert out.split() == ["start", "status"]
