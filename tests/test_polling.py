"""The one polling loop: what it returns, how long it waits, when it stops."""

from __future__ import annotations

import pytest

from neonflow.polling import until


class Clockless:
    """A sleep that passes no time, recording the pauses asked for."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def test_returns_the_first_answer_and_backs_off() -> None:
    answers = iter([None, None, None, "ready"])
    sleep = Clockless()

    assert until(lambda: next(answers), 60, interval=0.1, max_interval=0.3, sleep=sleep) == "ready"
    assert sleep.pauses == [0.1, 0.2, 0.3]


def test_an_immediate_answer_does_not_wait_unless_asked() -> None:
    sleep = Clockless()
    assert until(lambda: 1, 60, sleep=sleep) == 1 and sleep.pauses == []
    assert until(lambda: 1, 60, interval=0.5, wait_first=True, sleep=sleep) == 1
    assert sleep.pauses == [0.5]


def test_gives_up_after_the_timeout_even_when_sleep_passes_no_time() -> None:
    sleep = Clockless()
    calls: list[int] = []

    assert (
        until(lambda: calls.append(1), 1.0, interval=0.25, max_interval=0.25, sleep=sleep) is None
    )
    assert sum(sleep.pauses) == pytest.approx(1.0) and len(calls) == 5


def test_an_error_in_the_probe_ends_the_wait() -> None:
    def probe() -> None:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        until(probe, 60, sleep=Clockless())
