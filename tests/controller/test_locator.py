"""The locator: the OpenFlow event thread hands sightings over and never waits for the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from controller.locator import Locator


class SlowLocate:
    """`locate` that blocks until released (a commit's fsync), recording what it was asked, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int]] = []
        self.release = threading.Event()
        self.busy = threading.Event()
        self.done = threading.Condition()

    def __call__(self, mac: str, dpid: int, port: int) -> frozenset[int]:
        self.busy.set()
        self.release.wait(10)
        with self.done:
            self.asked.append((mac, dpid, port))
            self.done.notify_all()
        return frozenset({dpid})

    def wait_for(self, count: int) -> None:
        with self.done:
            assert self.done.wait_for(lambda: len(self.asked) >= count, 10), self.asked


@pytest.fixture
def slow() -> SlowLocate:
    return SlowLocate()


@pytest.fixture
def locator(slow: SlowLocate) -> Iterator[tuple[Locator, list[int]]]:
    converged: list[int] = []
    located = Locator(slow, converged.append, capacity=4)
    yield located, converged
    slow.release.set()
    located.close()


def test_submit_returns_while_the_decision_waits_and_frames_are_decided_in_order(
    locator: tuple[Locator, list[int]], slow: SlowLocate
) -> None:
    located, converged = locator
    assert located.submit("02:00:00:00:01:01", dpid=1, port=4)
    assert slow.busy.wait(5)  # the worker is stuck in the store...
    assert located.submit("02:00:00:00:01:02", dpid=1, port=5)  # ...and the event thread is not
    assert located.submit("02:00:00:00:01:01", dpid=2, port=6)
    slow.release.set()
    slow.wait_for(3)
    assert slow.asked == [("02:00:00:00:01:01", 1, 4), ("02:00:00:00:01:02", 1, 5), ("02:00:00:00:01:01", 2, 6)]
    located.close()
    assert converged == [1, 1, 2]


def test_a_burst_of_one_frame_is_one_decision_and_a_full_queue_drops(
    locator: tuple[Locator, list[int]], slow: SlowLocate
) -> None:
    located, _ = locator
    located.submit("02:00:00:00:00:00", dpid=1, port=1)
    assert slow.busy.wait(5)  # taken off the queue: 4 places left
    for _ in range(10):
        assert located.submit("02:00:00:00:01:01", dpid=1, port=4)  # waiting already: not queued again
    accepted = [located.submit(f"02:00:00:00:02:{n:02x}", dpid=1, port=5) for n in range(5)]
    assert accepted == [True, True, True, False, False] and located.dropped == 2
    slow.release.set()
    slow.wait_for(5)
    assert [mac for mac, _, _ in slow.asked].count("02:00:00:00:01:01") == 1


def test_a_failing_decision_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def locate(mac: str, dpid: int, port: int) -> frozenset[int]:
        asked.append(mac)
        if mac.endswith("01"):
            raise OSError("disk full")
        return frozenset()

    located = Locator(locate, lambda dpid: None)
    located.submit("02:00:00:00:00:01", dpid=1, port=4)
    located.submit("02:00:00:00:00:02", dpid=1, port=4)
    located.close()
    assert asked == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    assert "locating failed mac=02:00:00:00:00:01 switch=0000000000000001 port=4" in caplog.text
