"""The retry policy, without sockets: which errors are asked again, how long between attempts, and
when the agent stops. The clock, the sleep and the randomness are the test's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from node_agent.controller_client import ControllerError, PermanentError, TemporaryError
from node_agent.retry import DEFAULT_DEADLINE, RetryPolicy, retrying


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(errors: list[ControllerError], answer: str = "placed") -> Callable[[], str]:
    """A call that raises each of `errors` in turn, then answers."""
    def call() -> str:
        if errors:
            raise errors.pop(0)
        return answer
    return call


def run(call: Callable[[], str], policy: RetryPolicy, clock: Clock, *, jitter: float = 0.0) -> str:
    return retrying(call, policy, now=lambda: clock.now, sleep=clock.sleep, jitter=lambda: jitter)


def test_a_controller_back_after_refusals_and_503s_answers_the_same_call() -> None:
    clock = Clock()
    errors = [TemporaryError("refused"), TemporaryError("reset"), TemporaryError("switch", status=503)]

    assert run(failing(errors), RetryPolicy(), clock) == "placed"
    assert clock.slept == [0.025, 0.05, 0.1], "exponential from first_delay, jitter 0 halves each"


@pytest.mark.parametrize("status", [400, 401, 404, 409, 500])
def test_a_refusal_or_a_bug_is_never_asked_again(status: int) -> None:
    clock = Clock()
    with pytest.raises(PermanentError):
        run(failing([PermanentError("no", status=status)]), RetryPolicy(), clock)
    assert clock.slept == []


def test_retry_after_is_a_floor_and_the_cap_holds() -> None:
    policy = RetryPolicy(first_delay=0.05, max_delay=2.0)

    assert policy.delay(1, retry_after=1.0, jitter=0.0) == 1.0
    assert policy.delay(30, retry_after=None, jitter=0.99) <= 2.0
    assert policy.delay(1000, retry_after=None, jitter=0.0) == 1.0, "no overflow for a long outage"
    assert [policy.delay(n, retry_after=None, jitter=0.999999) for n in (1, 2, 3)] == pytest.approx([0.05, 0.1, 0.2])


def test_gives_up_before_a_wait_would_pass_the_deadline_and_says_so() -> None:
    clock = Clock()
    never = [TemporaryError("controller unreachable", status=None) for _ in range(100)]

    with pytest.raises(TemporaryError) as gave_up:
        run(failing(never), RetryPolicy(deadline=5.0, first_delay=0.5, max_delay=2.0), clock, jitter=0.999999)

    assert sum(clock.slept) <= 5.0
    assert clock.slept == pytest.approx([0.5, 1.0, 2.0])  # a fourth wait of 2 s would end at 5.5 s
    assert gave_up.value.reason == "controller unreachable (gave up after 4 attempts in 3.5s)"


def test_a_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    clock = Clock()
    with pytest.raises(TemporaryError, match="busy"):
        run(failing([TemporaryError("busy", status=503, retry_after=60.0)]), RetryPolicy(), clock)
    assert clock.slept == []


def test_deadline_zero_means_one_attempt() -> None:
    clock = Clock()
    with pytest.raises(TemporaryError, match="^down$"):
        run(failing([TemporaryError("down")]), RetryPolicy(deadline=0), clock)


def test_the_default_deadline_fits_inside_what_waits_for_the_agent() -> None:
    """Worst case of one ADD: the deadline, one attempt's client timeout, then one more deadline for
    the release of a rollback; it must end before the plugin stops waiting for the agent."""
    from cni.plugin import AGENT_TIMEOUT
    from node_agent.controller_client import ControllerClient

    client_timeout = ControllerClient("http://127.0.0.1:1", "n", token=None)._timeout
    assert 2 * DEFAULT_DEADLINE + client_timeout < AGENT_TIMEOUT


def test_a_nonsense_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(first_delay=0)


@pytest.mark.parametrize("header, seconds", [("1", 1.0), (" 12 ", 12.0), (None, None), ("", None), ("-1", None),
                                             ("Fri, 31 Dec 1999 23:59:59 GMT", None), ("1.5", None)])
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    from node_agent.controller_client import parse_retry_after

    assert parse_retry_after(header) == seconds
