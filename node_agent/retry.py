"""When the agent asks the controller again, and when it stops asking.

A CNI call that meets a restarting controller should wait for it rather than fail: kubelet would
only retry the whole sandbox later, after tearing it down. The controller comes back in about two
seconds (SIGKILL to serving, measured in the lab), and its switches within Open vSwitch's reconnect
backoff (at most 8 s by default); until then it answers 503 with a Retry-After, or the connection
is refused or reset. Asking again is safe because the controller is idempotent per (container id,
ifname): an ADD it committed just before dying gets the same allocation back.

What is retried: `TemporaryError` only, i.e. no connection, a reset, a timeout, 502/503/504. Never
a 4xx (`PermanentError`): the same request would get the same answer. Never a 500 either: that is
a bug to report, not to hammer.

How long: until `deadline` seconds after the first attempt. The default, 30 s, covers a restart and
the switch's reconnect with room to spare (and a two-replica failover, whose Lease lasts 15 s),
and stays well inside what waits for the agent: the plugin's socket timeout (120 s,
`cni.plugin.AGENT_TIMEOUT`) and kubelet's CRI runtime-request-timeout (2 min), which bounds the
whole sandbox set-up, CNI included. An attempt in flight at the deadline may still take the
client's own timeout (10 s); an ADD that fails after its allocation may spend one more deadline
releasing it: 30 + 10 + 30 s at worst, still inside both. Past that, the controller is really
down: failing with code 11 frees the agent's threads and lets kubelet retry with its own backoff.

Between attempts: exponential from `first_delay` (50 ms, a restart is quick), doubling to
`max_delay` (2 s), each delay scaled by a random factor in [0.5, 1] so that many agents which lost
the controller together do not all come back in the same instant; never shorter than the
controller's Retry-After. All of this is pure: the clock, the sleep and the randomness are passed in.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from node_agent.controller_client import TemporaryError

T = TypeVar("T")
DEFAULT_DEADLINE = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    deadline: float = DEFAULT_DEADLINE  # seconds from the first attempt; 0: one attempt only
    first_delay: float = 0.05
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.deadline < 0 or self.first_delay <= 0 or self.max_delay < self.first_delay:
            raise ValueError(f"retry policy: need deadline >= 0 and 0 < first_delay <= max_delay, got {self}")

    def delay(self, attempt: int, *, retry_after: float | None, jitter: float) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 is the first); `jitter` in [0, 1)."""
        backoff = min(self.max_delay, self.first_delay * 2.0 ** min(attempt - 1, 32))
        return max(backoff * (0.5 + jitter / 2), retry_after or 0.0)


def retrying(call: Callable[[], T], policy: RetryPolicy, *, now: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random) -> T:
    """`call()`, again after each TemporaryError while the next attempt can start before the
    deadline; then the last error is raised, saying how many attempts it took and for how long."""
    started = now()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except TemporaryError as error:
            wait = policy.delay(attempt, retry_after=error.retry_after, jitter=jitter())
            spent = now() - started
            if spent + wait > policy.deadline:
                if attempt == 1:
                    raise
                raise type(error)(f"{error.reason} (gave up after {attempt} attempts in {spent:.1f}s)",
                                  status=error.status, retry_after=error.retry_after) from None
            sleep(wait)
