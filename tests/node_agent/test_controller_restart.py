"""The agent rides out a controller restart: ADDs in flight succeed once it is back, and the first
answer from a new epoch sets off a full sync at once, not at the next period.

Everything real: the plugin binary, agent processes, the controller process (SIGKILLed and started
again on its store), Open vSwitch and its flows."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from underlay_testbed import wait_for

pytestmark = pytest.mark.rig
N = 20
K8S = "K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"


def flows_for(segment, ip: str) -> list[str]:
    dump = segment.rig.ovs.ofctl("dump-flows", segment.bridge)
    return [line for line in dump.splitlines() if f"={ip}," in line or line.rstrip().endswith(f"={ip}")]


def test_adds_in_flight_ride_out_a_controller_kill_and_restart(make_node, pods, segment):
    """20 ADDs at once; the controller is SIGKILLed while they run and started again: each ADD
    retries until it is back and succeeds, each pod with its own address, its flows on the switch,
    and the controller holds exactly those 20 allocations (a retry of an ADD the dead controller had
    already committed gets the same one back)."""
    node = make_node("n1")
    paths = [pods.make(f"r{i}") for i in range(N)]
    conf = node.conf()

    with ThreadPoolExecutor(N) as pool:
        adds = [pool.submit(node.cni, "ADD", conf, container_id=f"r{i}", netns=paths[i], args=K8S.format(f"r{i}"))
                for i in range(N)]
        segment.controller.stop(kill=True)
        down = time.monotonic()
        segment.controller.start()
        segment.controller.wait_healthy(timeout=15, switches=1)
        restart = time.monotonic() - down
        results = [add.result() for add in adds]

    assert [r.returncode for r in results] == [0] * N, [r.stdout for r in results if r.returncode]
    addresses = [r.json["ips"][0]["address"].split("/")[0] for r in results]
    assert len(set(addresses)) == N
    held = segment.allocations("n1")
    assert set(held) == {(f"r{i}", "eth0") for i in range(N)}
    assert [held[(f"r{i}", "eth0")]["ip"] for i in range(N)] == addresses
    assert all(flows_for(segment, ip) for ip in addresses), "every pod's flows are on the switch"
    assert restart < 10, f"the restart itself took {restart:.1f}s"
    assert segment.external.ping(addresses[0]) and segment.external.ping(addresses[-1])


def restart_controller(segment, *, lose_store: bool = False) -> None:
    segment.controller.stop(kill=True)
    for path in segment.controller.workdir.glob("store.sqlite*") if lose_store else ():
        path.unlink()
    segment.controller.start()
    segment.controller.wait_healthy(timeout=15, switches=1)


def add(node, pods, name: str) -> dict:
    call = node.cni("ADD", node.conf(), container_id=name, netns=pods.make(name), args=K8S.format(name))
    assert call.returncode == 0, call.stdout
    return call.json


def test_a_new_epoch_seen_by_a_cni_call_starts_a_full_sync_at_once(make_node, pods, segment):
    """The agent syncs only every hour here. The controller holds an allocation for this node that
    the agent never made (a leftover: the full sync releases what the agent does not list). After a
    restart, the first CNI call that meets the new epoch sets off the full sync at once."""
    node = make_node("n1", resync_interval="3600")
    add(node, pods, "first")
    segment.controller.request("POST", "/v1/nodes/n1/pods", {"container_id": "leftover", "ifname": "eth0",
                                                            "mode": "macvlan", "namespace": "default",
                                                            "name": "leftover"}, node="n1")
    restart_controller(segment)
    assert ("leftover", "eth0") in segment.allocations("n1")

    add(node, pods, "second")
    seen = time.monotonic()

    wait_for(lambda: ("leftover", "eth0") not in segment.allocations("n1"), timeout=5,
             what="the full sync after the new epoch to release the allocation the agent does not have")
    synced_in = time.monotonic() - seen
    assert set(segment.allocations("n1")) == {("first", "eth0"), ("second", "eth0")}
    assert synced_in < 1.0, f"the full sync came {synced_in:.2f}s after the new epoch was seen"


def test_a_controller_that_lost_its_store_hears_of_the_pods_before_it_allocates(make_node, pods, segment):
    """Restarted without its store, the controller does not know the node nor its pod. The next ADD
    is told "unknown node": the agent registers and reports its pod (allocated again with the same
    address and MAC) before that ADD's own allocation, which so cannot take the pod's address."""
    node = make_node("n1", resync_interval="3600")
    old = add(node, pods, "before")
    restart_controller(segment, lose_store=True)

    new = add(node, pods, "after")

    placed = segment.allocations("n1")
    assert (placed[("before", "eth0")]["ip"], placed[("before", "eth0")]["mac"]) == (
        old["ips"][0]["address"].split("/")[0], old["interfaces"][0]["mac"])
    assert new["ips"][0]["address"] != old["ips"][0]["address"]
    assert segment.external.ping(placed[("before", "eth0")]["ip"])
    assert segment.external.ping(new["ips"][0]["address"].split("/")[0])
