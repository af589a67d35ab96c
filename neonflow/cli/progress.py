"""A spinner on stderr for the stage a command waits on, with the time it has taken so far.

Nothing shows for a stage's first second, so fast work prints only its lines; after that the
spinner redraws one line in place. When the stage ends (the next one starts, or the command
prints anything else), the spinner goes and the stage's line stays, with its time if it showed:
a terminal ends up with the lines a log gets, plus how long the slow stages took.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TextIO

import typer

DELAY = 1.0
"""Seconds before a stage shows its spinner."""
INTERVAL = 0.1
"""Seconds between frames."""
FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ASCII_FRAMES = "|/-\\"
CLEAR_LINE = "\r\x1b[K"  # back to the line's start, erase to its end


def elapsed_text(seconds: float) -> str:
    """``1.4s`` or ``2m05s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def columns(stream: TextIO) -> int:
    """The terminal's width (80 when the stream cannot tell)."""
    try:
        # A pseudo-terminal nobody sized says 0.
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class Spinner:
    """The running stage on a terminal stream; :meth:`tick` draws a frame once it is due.

    :meth:`start` runs the ticks on a thread of its own; tests call :meth:`tick` with a clock
    of their own instead. Every write holds the lock, so frames and lines never interleave.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        color: bool = True,
        clock: Callable[[], float] = time.monotonic,
        delay: float = DELAY,
    ) -> None:
        self.stream = stream
        self.color = color
        self.clock = clock
        self.delay = delay
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self.frames = FRAMES if encoding == "utf8" else ASCII_FRAMES
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stage: str | None = None
        self._since = 0.0
        self._drawn = 0  # frames drawn for the running stage

    def stage(self, message: str) -> None:
        """End the running stage (its line stays) and start timing ``message``."""
        with self._lock:
            self._end()
            self._stage, self._since, self._drawn = message, self.clock(), 0

    def tick(self) -> None:
        """Redraw the spinner line, once the running stage is older than the delay."""
        with self._lock:
            if self._stage is None:
                return
            elapsed = self.clock() - self._since
            if elapsed < self.delay:
                return
            frame = self.frames[self._drawn % len(self.frames)]
            self._drawn += 1
            time_text = elapsed_text(elapsed)
            # One row only: a wrapped line could not be redrawn in place.
            room = columns(self.stream) - len(frame) - len(time_text) - 3
            text = self._stage.split("\n", 1)[0]
            if len(text) > room:
                text = text[: max(room - 1, 0)] + "…"
            if self.color:
                frame = typer.style(frame, fg="cyan")
                time_text = typer.style(time_text, dim=True)
            self._write(f"{CLEAR_LINE}{frame} {text} {time_text}")

    def start(self) -> Spinner:
        """Tick on a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="neonflow-spinner", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """End the running stage (its line stays) and stop ticking."""
        self._stop.set()
        with self._lock:
            self._end()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.tick()

    def _end(self) -> None:
        if self._stage is None:
            return
        line = self._stage
        if self._drawn:
            line = f"{CLEAR_LINE}{line} ({elapsed_text(self.clock() - self._since)})"
        self._stage = None
        self._write(line + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
