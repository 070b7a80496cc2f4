"""A replica's leadership (controller/leading.py) without a switch or an API server: what its REST
API answers as follower, leader and deposed leader, the role it wants from the switches, and that
it stops writing and leaves once it cannot renew or a switch calls it stale. The same on the real
Open vSwitch and API server: tests/controller/kube/test_failover.py."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import replace
from typing import Any

import pytest
from ctlfakes import Clock
from test_leader import MemoryLease

from controller.leader import Election, LeaseRecord, Timing
from controller.leading import EX_TEMPFAIL, Leadership, identity
from controller.switch import Role

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


def leader_api(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"served": environ["PATH_INFO"], "epoch": "e1"}).encode()]


leader_api.epoch = "e1"  # type: ignore[attr-defined]


class Replica:
    """A Leadership on a MemoryLease, its election turned by hand (`attempt`), its exits recorded."""

    def __init__(self, name: str, lease: MemoryLease, clock: Clock) -> None:
        self.exits: list[int] = []
        self.promoted: list[int] = []
        self.wakes = 0
        self.clock = clock

        def promote(generation: int) -> Any:
            self.promoted.append(generation)
            return leader_api

        def wake() -> None:
            self.wakes += 1

        self.leadership = Leadership(name, TIMING, promote=promote, wake=wake, exit=self.exits.append,
                                     spawn=lambda work: work())  # the take-over at once, in this thread
        self.leadership.election = Election(self.leadership.elector, lease, self.leadership, clock=clock,
                                            stop=threading.Event())

    def attempt(self) -> None:
        """One turn of the election's loop, without its waiting."""
        assert self.leadership.election is not None
        self.leadership.election.turn()

    def call(self, method: str, path: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer.update(status=status, headers=dict(headers))

        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO()}
        body = b"".join(self.leadership(environ, start_response))
        return answer["status"], answer["headers"], json.loads(body)


def leader(lease: MemoryLease) -> Replica:
    """controller-a, leading: it saw controller-b's lease, which was not renewed for 15 s."""
    replica = Replica("controller-a", lease, Clock())
    replica.attempt()
    replica.clock.advance(15)
    replica.attempt()
    return replica


@pytest.fixture
def lease() -> MemoryLease:
    lease = MemoryLease()
    lease.create(LeaseRecord("controller-b", 15, transitions=3), timeout=1)
    return lease


def test_a_follower_is_alive_not_ready_and_sends_agents_to_the_leader(lease: MemoryLease) -> None:
    replica = Replica("controller-a", lease, Clock())
    replica.attempt()
    assert replica.leadership.wanted() == Role(master=False, generation=3) and replica.wakes == 1
    assert not replica.leadership.may_write()

    status, _, body = replica.call("GET", "/v1/ready")
    assert (status, body) == ("503 Service Unavailable", {"error": "not the leader: controller-b"})
    status, headers, body = replica.call("POST", "/v1/nodes/n1/pods")
    assert status.startswith("503") and headers["Retry-After"] == "2" and body == {"error": "not the leader: controller-b"}
    status, _, body = replica.call("GET", "/v1/health")
    assert status.startswith("200") and body == {"status": "ok", "role": "follower", "leader": "controller-b"}
    assert replica.leadership.epoch is None  # no epoch: an agent must not take a follower for a restart


def test_the_leader_loads_its_state_claims_master_with_the_lease_generation_and_serves(lease: MemoryLease) -> None:
    replica = leader(lease)
    assert replica.promoted == [4]
    assert replica.leadership.wanted() == Role(master=True, generation=4) and replica.leadership.may_write()
    assert replica.call("GET", "/v1/ready")[2] == {"status": "ready", "leader": "controller-a", "epoch": "e1"}
    assert replica.call("POST", "/v1/nodes/n1/pods")[2] == {"served": "/v1/nodes/n1/pods", "epoch": "e1"}
    assert replica.leadership.epoch == "e1"


def test_a_leader_that_cannot_renew_stops_writing_at_the_deadline_then_leaves(lease: MemoryLease) -> None:
    replica = leader(lease)
    clock = replica.clock
    lease.down = True
    clock.advance(9.9)
    assert replica.leadership.may_write()
    clock.advance(0.1)  # nothing has run since: the clock alone stops the writing
    assert not replica.leadership.may_write()
    assert replica.call("POST", "/v1/nodes/n1/pods")[0].startswith("503")
    assert replica.call("GET", "/v1/ready")[0].startswith("503")
    replica.attempt()
    assert replica.exits == [EX_TEMPFAIL] and replica.leadership.wanted() is None


def test_a_switch_calling_a_deposed_leader_stale_makes_it_leave(lease: MemoryLease) -> None:
    """Split brain: controller-b took the Lease (generation 5) while controller-a still believes it
    leads; a switch refuses a's claim. a cannot raise the Lease (its write is based on an old
    version) and leaves."""
    replica = leader(lease)
    assert lease.record is not None
    lease.update(replace(lease.record, holder="controller-b", transitions=5), acquired=True, timeout=1)
    assert replica.leadership.may_write()  # a has not looked yet
    replica.leadership.stale(1, "switch 1 refused master with generation 4 as stale", generation=5)
    assert replica.exits == [EX_TEMPFAIL]
    assert not replica.leadership.may_write() and replica.leadership.wanted() is None
    assert lease.record.holder == "controller-b"


def test_a_leader_whose_lease_lost_its_history_raises_its_generation_past_the_switchs(lease: MemoryLease) -> None:
    """The Lease was deleted and created again (transitions from 0), a switch remembers 9: the
    holder proves it leads with a conditional write of transitions 10, and claims master again."""
    replica = leader(lease)
    wakes = replica.wakes
    replica.leadership.stale(1, "switch 1 refused master with generation 4 as stale", generation=9)
    assert replica.exits == []
    assert replica.leadership.wanted() == Role(master=True, generation=10) and replica.wakes == wakes + 1
    assert lease.record is not None and (lease.record.holder, lease.record.transitions) == ("controller-a", 10)
    replica.leadership.stale(2, "switch 2 refused master with generation 4 as stale", generation=9)
    assert lease.record.transitions == 10 and replica.exits == []  # raised already: once is enough
    replica.leadership.stale(3, "switch 3 said nothing", generation=None)
    assert replica.exits == [EX_TEMPFAIL]


def test_a_leader_that_cannot_load_its_state_leaves_without_serving(lease: MemoryLease) -> None:
    clock = Clock()
    replica = Replica("controller-a", lease, clock)

    def broken(generation: int) -> Any:
        raise OSError("the API server went away")

    replica.leadership._promote = broken  # type: ignore[method-assign]
    replica.attempt()
    clock.advance(15)
    replica.attempt()
    assert replica.exits == [EX_TEMPFAIL] and not replica.leadership.may_write()


def test_the_identity_is_the_pod_name_else_the_host_name() -> None:
    assert identity({"POD_NAME": "underlay-controller-7d9-x2"}) == "underlay-controller-7d9-x2"
    assert identity({}) != ""
