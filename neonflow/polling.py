"""Waiting for a condition: one polling loop for every wait neonflow does (Neon's operations, a
branch becoming ready, the local Neon starting and stopping)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(
    probe: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    max_interval: float = 2.0,
    wait_first: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call ``probe`` until it returns something other than None and return that; None once
    ``timeout`` seconds passed. The pause between calls doubles from ``interval`` up to
    ``max_interval``; ``wait_first`` pauses before the first call too. An exception from
    ``probe`` ends the wait.

    Time is counted both on the clock and as the pauses asked for, so that an injected
    ``sleep`` that passes no real time still ends the wait.
    """
    started, slept = time.monotonic(), 0.0
    if not wait_first:
        found = probe()
        if found is not None:
            return found
    while True:
        remaining = timeout - max(time.monotonic() - started, slept)
        if remaining <= 0:
            return None
        pause = min(interval, remaining)
        sleep(pause)
        slept += pause
        interval = min(interval * 2, max_interval)
        found = probe()
        if found is not None:
            return found
