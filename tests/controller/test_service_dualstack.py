"""Dual stack in the service, on each real store (SQLite, and the Kubernetes store on the session's
API server): one address of each family in one ADD, placed as two placements, kept across a
restart, and, when any family fails (exhausted, held, sticky-held, the store, the switch), nothing
left behind: no row or object, no reservation change, no placement, no address taken.

(What peers got wrong here: Spiderpool #4295, Calico cni-plugin #908, Kube-OVN #4210.)"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from controller.config import Config
from controller.errors import BadRequest, ConflictError, ControllerError, PoolExhausted, SwitchUnavailable, TemporaryError
from controller.kube.allocations import name_for
from controller.kube.client import IPALLOCATIONS
from controller.service import Address, Service
from controller.store import Mode, SqliteStore, StoreError
from openflow.model import Placement

from ctlfakes import STORE_KINDS, Clock, RecordingFabric, make_config
from ctlfakes import pod_request as request

N1_MAC = "02:00:00:00:01:01"
DUAL = {
    "subnet": "198.18.0.0/24", "ranges": ["198.18.0.100-198.18.0.109"], "gateway": "198.18.0.1",
    "subnet6": "fd00:18::/64", "ranges6": ["fd00:18::100-fd00:18::101"], "gateway6": "fd00:18::1",
    "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}, {"dst": "::/0", "gw": "fd00:18::1"}],
    "default": True,
}


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def dual_config(**pool: Any) -> Config:
    return make_config(pools={"dual": {**DUAL, **pool}, "only6": {"subnet6": "fd00:19::/120", "gateway6": "fd00:19::1"}})


@pytest.fixture
def ready(make_service: Callable[..., Service]) -> Service:
    service = make_service(dual_config())
    service.register_node("n1", mac=N1_MAC, ip="198.18.1.11")
    assert service.node_located(N1_MAC, dpid=1, port=4) == {1}
    return service


def reloaded(service: Service) -> Any:
    """What the service's store holds now, read back as a restarted controller reads it."""
    service.store.sync()
    return service.store.load()


def nothing_left(service: Service, *, cid: str) -> None:
    """The ADD of `cid` left nothing: no allocation in memory, store or placements."""
    assert all(pod.container_id != cid for pod in service.allocations())
    assert all(pod.container_id != cid for pod in reloaded(service).pods)
    assert all(not view.owner.endswith(f"pod-{cid}") for view in service.placements())


def test_a_dual_stack_pod_gets_both_families_and_two_placements(ready: Service, fabric: RecordingFabric) -> None:
    attachment = ready.allocate_and_place("n1", request("a"))
    pod = attachment.pod
    assert (pod.ip, pod.ip6, pod.ips) == ("198.18.0.100", "fd00:18::100", ("198.18.0.100", "fd00:18::100"))
    assert (attachment.prefix, attachment.gateway) == (24, "198.18.0.1")
    assert attachment.addresses == (Address("198.18.0.100", 24, "198.18.0.1"), Address("fd00:18::100", 64, "fd00:18::1"))
    assert [route.dst for route in attachment.routes] == ["0.0.0.0/0", "::/0"]
    placements = ready.desired_state(1).placements
    assert {Placement("198.18.0.100", pod.mac, 4, "default/pod-a"), Placement("fd00:18::100", pod.mac, 4, "default/pod-a")} <= placements
    assert [(v.ip, v.mac, v.port) for v in ready.placements() if v.owner == "default/pod-a"] == [
        ("198.18.0.100", pod.mac, 4), ("fd00:18::100", pod.mac, 4)]
    assert ready.allocate_and_place("n1", request("a")) == attachment  # idempotent


def test_both_families_survive_a_restart_and_release_frees_both(
    ready: Service, make_service: Callable[..., Service], clock: Clock
) -> None:
    ready.allocate_and_place("n1", request("a", sticky="default/web-0"))
    ready.store.close()  # as a restart does: the old store's late writes would race the new one's
    again = make_service(dual_config())
    (pod,) = again.allocations()
    assert pod.ips == ("198.18.0.100", "fd00:18::100")
    assert again.reservations() == {"default/web-0": "198.18.0.100,fd00:18::100"}
    assert again.release("n1", "a", "eth0")
    snapshot = reloaded(again)
    assert set(snapshot.released) == {"198.18.0.100", "fd00:18::100"}
    assert (snapshot.sticky, snapshot.sticky6) == ({"default/web-0": "198.18.0.100"}, {"default/web-0": "fd00:18::100"})
    clock.advance(1)  # its sticky key gets both back at once, no cooldown
    assert again.allocate_and_place("n1", request("b", sticky="default/web-0")).pod.ips == pod.ips


def test_fixed_addresses_of_both_families(ready: Service) -> None:
    pod = ready.allocate_and_place("n1", request("a", ips=("fd00:18::101", "198.18.0.105"))).pod
    assert pod.ips == ("198.18.0.105", "fd00:18::101")
    with pytest.raises(ConflictError, match="^pod default/pod-b: fd00:18::101 is held by default/pod-a$"):
        ready.allocate_and_place("n1", request("b", ip="fd00:18::101"))
    nothing_left(ready, cid="b")


def test_an_ipv6_only_pod(ready: Service) -> None:
    attachment = ready.allocate_and_place("n1", request("a", pool="only6"))
    assert (attachment.pod.ip, attachment.pod.ip6, attachment.prefix, attachment.gateway) == ("fd00:19::2", None, 120, "fd00:19::1")
    assert attachment.pod.mac == "02:56:00:00:00:02" and attachment.routes == ()


def test_the_second_family_exhausted_leaves_nothing(ready: Service, fabric: RecordingFabric, clock: Clock) -> None:
    ready.allocate_and_place("n1", request("a"))
    ready.allocate_and_place("n1", request("b"))  # the two IPv6 addresses are gone, IPv4 has eight left
    fabric.calls.clear()
    with pytest.raises(PoolExhausted, match=r"^pod default/pod-c: pool dual: IPv6 exhausted \(all 2 addresses"):
        ready.allocate_and_place("n1", request("c"))
    nothing_left(ready, cid="c")
    assert fabric.calls == []  # nothing reached the switch
    ready.release("n1", "a", "eth0")
    clock.advance(30)  # a's addresses cool down
    assert ready.allocate_and_place("n1", request("c", ip="198.18.0.102")).pod.ips == ("198.18.0.102", "fd00:18::100")


def test_the_second_family_held_leaves_nothing_and_the_first_stays_free(ready: Service) -> None:
    ready.allocate_and_place("n1", request("a", ips=("198.18.0.100", "fd00:18::100")))
    with pytest.raises(ConflictError, match="fd00:18::100 is held by default/pod-a"):
        ready.allocate_and_place("n1", request("b", ips=("198.18.0.101", "fd00:18::100")))
    nothing_left(ready, cid="b")
    assert ready.allocate_and_place("n1", request("c", ip="198.18.0.101")).pod.ips == ("198.18.0.101", "fd00:18::101")


def test_the_second_family_sticky_held_leaves_the_reservations_as_they_were(ready: Service) -> None:
    ready.allocate_and_place("n1", request("a", sticky="default/web-0"))
    with pytest.raises(TemporaryError, match="still held by container a/eth0"):
        ready.allocate_and_place("n1", request("b", sticky="default/web-0"))
    nothing_left(ready, cid="b")
    assert ready.reservations() == {"default/web-0": "198.18.0.100,fd00:18::100"}


def test_a_switch_that_does_not_acknowledge_undoes_both_families_and_their_reservation(
    ready: Service, fabric: RecordingFabric
) -> None:
    fabric.fail = 1
    with pytest.raises(SwitchUnavailable):
        ready.allocate_and_place("n1", request("a", sticky="default/web-0"))
    nothing_left(ready, cid="a")
    assert ready.reservations() == {} and reloaded(ready).sticky6 == {} and reloaded(ready).sticky == {}
    assert ready.desired_state(1).placements == frozenset({Placement("198.18.1.11", N1_MAC, 4, "node/n1")})
    assert reloaded(ready).released == {}  # never on the wire: no cooldown
    assert ready.allocate_and_place("n1", request("b", ips=("198.18.0.100", "fd00:18::100"))).pod.ips == (
        "198.18.0.100", "fd00:18::100")


def test_a_family_the_pool_lacks_is_a_bad_request(ready: Service) -> None:
    with pytest.raises(BadRequest, match="^ip: 198.18.0.5 is IPv4, and pool only6 has no IPv4 subnet$"):
        ready.allocate_and_place("n1", request("a", pool="only6", ips=("198.18.0.5",)))
    nothing_left(ready, cid="a")


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_sqlite_refusing_the_ipv6_address_leaves_nothing(ready: Service, store_path: Path) -> None:
    """Another writer holds the IPv6 address the IPAM picks: the store refuses the row, and the
    IPv4 address written in the same row goes with it."""
    with closing(sqlite3.connect(store_path)) as other:
        other.execute("INSERT INTO pods (container_id, ifname, node, namespace, name, pool, ip, mac, mode, created_at, ip6) "
                      "VALUES ('x', 'eth0', 'n1', 'default', 'x', 'dual', '198.18.0.109', '02:00:00:00:00:09', 'macvlan', 0, 'fd00:18::100')")
        other.commit()
    with pytest.raises(StoreError, match="UNIQUE constraint failed: pods.ip6"):
        ready.allocate_and_place("n1", request("a"))
    assert ready.allocations() == [] and ready.placements()[1:] == []
    assert [pod.container_id for pod in reloaded(ready).pods] == ["x"]


@pytest.mark.parametrize("store_kind", ["kubernetes"])
def test_an_ipv6_address_another_controller_holds_gives_the_ipv4_one_back(ready: Service, kube_clean: Any) -> None:
    """The IPv4 object is created first; the IPv6 one exists already (another controller's pod):
    the claim gives the IPv4 object back before the refusal, so no object names this pod."""
    foreign = {"apiVersion": IPALLOCATIONS.api_version, "kind": "IPAllocation", "metadata": {"name": name_for("fd00:18::101")},
               "spec": {"address": "fd00:18::101", "pool": "dual", "containerID": "other", "interface": "eth0",
                        "pod": {"namespace": "default", "name": "other"}, "node": "n2", "mac": "02:00:00:00:00:09",
                        "mode": "macvlan"}}  # fmt: skip
    kube_clean.create(IPALLOCATIONS.path(), foreign)
    with pytest.raises(ConflictError, match="fd00:18::101 is held by default/other"):
        ready.allocate_and_place("n1", request("a", ips=("198.18.0.104", "fd00:18::101")))
    nothing_left(ready, cid="a")
    names = {o["metadata"]["name"]: o["spec"].get("containerID") for o in kube_clean.get(IPALLOCATIONS.path())["items"]}
    assert names == {"fd00-18--101": "other"}  # 198.18.0.104's object was made, then given back
    picked = ready.allocate_and_place("n1", request("b")).pod  # the IPAM now steps over the foreign address
    assert picked.ips == ("198.18.0.100", "fd00:18::100")


@pytest.mark.parametrize("store_kind", ["kubernetes"])
def test_each_address_has_its_object_and_both_name_the_interface(ready: Service, kube_clean: Any) -> None:
    ready.allocate_and_place("n1", request("a"))
    ready.allocate_and_place("n1", request("v4", pool="only6"))
    objects = {o["metadata"]["name"]: o["spec"] for o in kube_clean.get(IPALLOCATIONS.path())["items"]}
    assert objects["198.18.0.100"]["interfaceAddresses"] == ["198.18.0.100", "fd00:18::100"]
    assert objects["fd00-18--100"]["address"] == "fd00:18::100"
    assert objects["fd00-18--100"]["interfaceAddresses"] == ["198.18.0.100", "fd00:18::100"]
    assert "interfaceAddresses" not in objects["fd00-19--2"]  # one address: the object is as it always was


@pytest.mark.parametrize("store_kind", ["kubernetes"])
def test_a_lost_second_object_is_written_again_on_load(
    ready: Service, kube_clean: Any, make_service: Callable[..., Service]
) -> None:
    ready.allocate_and_place("n1", request("a"))
    ready.store.close()
    kube_clean.delete(IPALLOCATIONS.path(name="fd00-18--100"))  # as if the controller died between the two
    again = make_service(dual_config())
    assert [pod.ips for pod in again.allocations()] == [("198.18.0.100", "fd00:18::100")]
    again.store.sync()
    again.store.close()  # writes what load found missing
    assert kube_clean.get(IPALLOCATIONS.path(name="fd00-18--100"))["spec"]["containerID"] == "a"


def test_a_store_from_before_dual_stack_opens_and_takes_both_families(store_path: Path, clock: Clock,
                                                                      fabric: RecordingFabric) -> None:
    with closing(sqlite3.connect(store_path)) as old:  # the tables as they were made before dual stack
        old.executescript("""
            CREATE TABLE nodes (name TEXT PRIMARY KEY, mac TEXT NOT NULL, ip TEXT NOT NULL, dpid TEXT, port INTEGER);
            CREATE TABLE pods (container_id TEXT NOT NULL, ifname TEXT NOT NULL, node TEXT NOT NULL,
                namespace TEXT NOT NULL, name TEXT NOT NULL, pool TEXT NOT NULL, ip TEXT NOT NULL UNIQUE,
                mac TEXT NOT NULL, mode TEXT NOT NULL, sticky TEXT, created_at REAL NOT NULL, uid TEXT,
                PRIMARY KEY (container_id, ifname));
            CREATE TABLE sticky (key TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE);
            CREATE TABLE released (ip TEXT PRIMARY KEY, at REAL NOT NULL);
            INSERT INTO nodes VALUES ('n1', '02:00:00:00:01:01', '198.18.1.11', '1', 4);
            INSERT INTO pods VALUES ('old', 'eth0', 'n1', 'default', 'web-0', 'dual', '198.18.0.100',
                '02:55:c6:12:00:64', 'macvlan', 'default/web-0', 5, NULL);
            INSERT INTO sticky VALUES ('default/web-0', '198.18.0.100');
        """)
    service = Service(SqliteStore(store_path), dual_config(), now=clock, fabric=fabric)
    (old,) = service.allocations()
    assert (old.ips, old.mode, service.reservations()) == (("198.18.0.100",), Mode.MACVLAN, {"default/web-0": "198.18.0.100"})
    assert service.allocate_and_place("n1", request("new")).pod.ips == ("198.18.0.101", "fd00:18::100")
    service.store.close()
    assert [pod.ips for pod in SqliteStore(store_path).load().pods] == [("198.18.0.100",), ("198.18.0.101", "fd00:18::100")]


def test_a_node_s_ipv6_address_is_a_second_placement_and_kept(
    ready: Service, make_service: Callable[..., Service]
) -> None:
    ready.register_node("n1", mac=N1_MAC, ip="198.18.1.11", ip6="FD00:18:0::11")
    assert {Placement("198.18.1.11", N1_MAC, 4, "node/n1"), Placement("fd00:18::11", N1_MAC, 4, "node/n1")} <= \
        ready.desired_state(1).placements
    ready.store.close()
    again = make_service(dual_config())
    assert [(v.ip, v.port) for v in again.placements() if v.owner == "node/n1"] == [("198.18.1.11", 4), ("fd00:18::11", 4)]
    again.register_node("n1", mac=N1_MAC, ip="198.18.1.11")  # registering without it drops it
    assert [v.ip for v in again.placements() if v.owner == "node/n1"] == ["198.18.1.11"]


@pytest.mark.parametrize(
    ("ip6", "error"),
    [
        ("fd00:18::1", "node n3: fd00:18::1 is pool dual's gateway"),
        ("fd00:18::", "node n3: fd00:18:: is the subnet-router anycast address of pool dual's subnet6 fd00:18::/64"),
        ("fd00:18::100", "node n3: fd00:18::100 is in pool dual's ranges"),
        ("fd00:18::11", "node n3: fd00:18::11 is already node n1's"),
    ],
)
def test_a_node_may_not_claim_an_ipv6_address_that_is_not_its_own(ready: Service, ip6: str, error: str) -> None:
    ready.register_node("n1", mac=N1_MAC, ip="198.18.1.11", ip6="fd00:18::11")
    with pytest.raises(ConflictError, match=f"^{error}"):
        ready.register_node("n3", mac="02:00:00:00:01:03", ip="198.18.1.13", ip6=ip6)
    with pytest.raises(BadRequest, match="^ip6: '198.18.1.14' is not an IPv6 address$"):
        ready.register_node("n3", mac="02:00:00:00:01:03", ip="198.18.1.13", ip6="198.18.1.14")


ADMISSION = "/apis/admissionregistration.k8s.io/v1"


@pytest.fixture
def ipv6_allocations_refused(kube_clean: Any) -> Any:
    """The real API server refuses every IPv6 IPAllocation of pool `dual` (a ValidatingAdmissionPolicy,
    as an operator's policy or a webhook would), until the test ends."""
    name = "test-refuse-ipv6-allocations"
    kube_clean.create(f"{ADMISSION}/validatingadmissionpolicies", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": ["underlay.io"], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["ipallocations"]}]},
            "validations": [{"expression": "!object.spec.address.contains(':')", "message": "no IPv6 here (test policy)"}]}})
    kube_clean.create(f"{ADMISSION}/validatingadmissionpolicybindings", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"objectSelector": {"matchLabels": {"underlay.io/pool": "dual"}}}}})
    probe = {"apiVersion": IPALLOCATIONS.api_version, "kind": "IPAllocation",
             "metadata": {"name": "fd00-18--ffff", "labels": {"underlay.io/pool": "dual"}},
             "spec": {"address": "fd00:18::ffff", "pool": "dual"}}
    try:
        deadline = time.monotonic() + 30
        while True:  # the API server loads policies from a watch: wait until this one bites
            try:
                kube_clean.create(IPALLOCATIONS.path(), probe)
            except ControllerError as err:
                if "no IPv6 here" in str(err):
                    break
                raise
            kube_clean.delete(IPALLOCATIONS.path(name="fd00-18--ffff"))
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.2)
        yield
    finally:
        kube_clean.delete(f"{ADMISSION}/validatingadmissionpolicybindings/{name}")
        kube_clean.delete(f"{ADMISSION}/validatingadmissionpolicies/{name}")


@pytest.mark.parametrize("store_kind", ["kubernetes"])
def test_the_api_refusing_the_ipv6_object_leaves_no_ipv4_object(
    ready: Service, kube_clean: Any, ipv6_allocations_refused: None
) -> None:
    with pytest.raises(ControllerError, match="no IPv6 here"):
        ready.allocate_and_place("n1", request("a"))
    nothing_left(ready, cid="a")
    assert kube_clean.get(IPALLOCATIONS.path())["items"] == []  # 198.18.0.100's object was made, then given back
    assert ready.allocate_and_place("n1", request("b", pool="only6")).pod.ips == ("fd00:19::2",)  # the store still works


def test_a_node_may_not_claim_an_ipv6_address_its_switch_sees_behind_a_trusted_port(
    ready: Service, fabric: RecordingFabric
) -> None:
    fabric.sightings[(1, "fd00:18::77")] = (1,)  # a router's, as an ND sender on trusted port 1
    with pytest.raises(ConflictError, match="^node n1: fd00:18::77 .*trusted"):
        ready.register_node("n1", mac=N1_MAC, ip="198.18.1.11", ip6="fd00:18::77")
    assert ready.register_node("n1", mac=N1_MAC, ip="198.18.1.11", ip6="fd00:18::78").node.ip6 == "fd00:18::78"
