"""The switch worker when convergence keeps failing: it backs off instead of spinning, logs an
error once, and fails the callers waiting for it at once, naming the switch and the error.

The desired state is what fails here (a state that cannot become flows: the controller's bug), so
the worker never reaches the datapath; the session is given one with a datapath id and nothing
else. tests/controller/test_controller_ovs.py does the same against a real controller and switch."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest

from controller.errors import SwitchUnavailable
from controller.switch import Backoff, SwitchSession
from openflow.model import SwitchState
from openflow.pipeline import StateError


class BrokenState:
    """A `state_of` that always raises, counting its calls; `reached(n)` waits for the n-th."""

    def __init__(self) -> None:
        self.calls = 0
        self._cond = threading.Condition()

    def __call__(self, dpid: int) -> SwitchState:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
        raise StateError("default/web-1: 02:00:00:00:00:01 is already placed by default/web-0 on port 2")

    def reached(self, n: int, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= n, timeout)


def session(state_of: BrokenState, backoff: Backoff) -> SwitchSession:
    started = SwitchSession(SimpleNamespace(id=1), state_of, backoff=backoff)
    started.start()
    return started


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    assert [backoff.next() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next() == 0.1


def test_waiting_callers_fail_at_once_naming_the_switch_and_the_error() -> None:
    broken = BrokenState()
    switch = session(broken, Backoff(first=30, cap=30))
    try:
        started = time.monotonic()
        with pytest.raises(SwitchUnavailable) as failed:
            switch.converge(timeout=20)
        assert time.monotonic() - started < 5, "not the caller's timeout: the failure itself"
        assert str(failed.value) == ("switch 0000000000000001 cannot converge: StateError: default/web-1: "
                                     "02:00:00:00:00:01 is already placed by default/web-0 on port 2")
        assert 25 < failed.value.delay <= 30, "Retry-After: until the worker tries again"
    finally:
        switch.close()


def test_requests_during_the_backoff_fail_at_once_and_do_not_cut_it_short() -> None:
    broken = BrokenState()
    switch = session(broken, Backoff(first=30, cap=30))
    try:
        with pytest.raises(SwitchUnavailable):
            switch.converge(timeout=20)
        for _ in range(200):  # what ADDs arriving meanwhile do: each must not start an attempt
            with pytest.raises(SwitchUnavailable, match="cannot converge: StateError"):
                switch.converge(timeout=20)
            switch.request()
        assert broken.calls == 1
    finally:
        switch.close()
    switch._worker.join(5)
    assert not switch._worker.is_alive(), "closing ends the backoff's wait"


def test_an_error_that_repeats_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    broken = BrokenState()
    with caplog.at_level(logging.INFO, logger="underlay.switch"):
        switch = session(broken, Backoff(first=0.001, cap=0.001))
        switch.request()
        try:
            assert broken.reached(20), "the worker retries on its own after each backoff"
        finally:
            switch.close()
    failures = [r for r in caplog.records if "converge-failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR and failures[0].exc_info


def test_operators_see_the_failure_and_no_convergence_yet() -> None:
    """What GET /v1/switches reports of a session (controller/opsapi.py): its role without leader
    election, and, until a convergence succeeds, no time of one and the failure that stops it."""
    broken = BrokenState()
    switch = session(broken, Backoff(first=30, cap=30))
    try:
        with pytest.raises(SwitchUnavailable):
            switch.converge(timeout=20)
        status = switch.status()
        assert (status.role, status.last_convergence) == ("equal", None)
        assert status.failure is not None and status.failure.startswith("switch 0000000000000001 cannot converge")
    finally:
        switch.close()
