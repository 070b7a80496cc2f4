"""The Kubernetes store's own behaviour on the real API server: two controllers racing for addresses,
writes that wait for sync, cooldown objects, sticky reservations, objects others changed, and a
write the API refuses for good. (What both stores share is in tests/controller/test_store.py.)"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from controller.errors import ControllerError
from controller.kube.allocations import Phase, from_object
from controller.kube.client import IPALLOCATIONS, Kube
from controller.kube.store import KubeStore
from controller.service import PodRequest, Service
from controller.store import AddressTaken, Mode, Pod, StoreError
from ctlfakes import Clock, RecordingFabric, make_config, store_pod
from kubeenv import ensure_node

N2_MAC = "02:00:00:00:01:02"


def allocation(kube: Kube, ip: str) -> dict[str, Any]:
    return kube.get(IPALLOCATIONS.path(name=ip))


def allocations(kube: Kube) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in kube.get(IPALLOCATIONS.path())["items"]}


@pytest.fixture
def stores(kube_clean: Kube, clock: Clock) -> Iterator[Callable[..., KubeStore]]:
    opened: list[KubeStore] = []

    def make(kube: Kube = kube_clean, **kwargs: Any) -> KubeStore:
        opened.append(KubeStore(kube, now=clock, cooldown=30, **kwargs))
        opened[-1].load()
        return opened[-1]

    yield make
    for store in opened:  # a failed store too: else its background thread retries (and logs) into later tests
        store.close()


def put(store: KubeStore, *pods: Pod) -> None:
    with store.transaction() as tx:
        for p in pods:
            tx.put_pod(p)
    store.sync()


def test_two_stores_racing_for_one_address_never_both_win(stores: Callable[..., KubeStore], kube_clean: Kube) -> None:
    first, second = stores(), stores()  # two controllers that both believe every address is free
    addresses = [f"198.18.3.{i}" for i in range(1, 41)]
    barrier = threading.Barrier(2)
    outcomes: dict[tuple[str, str], str] = {}

    def race(side: str, store: KubeStore) -> None:
        for ip in addresses:
            barrier.wait()
            try:
                put(store, store_pod(f"{side}-{ip}", ip, name=f"{side}-{ip}"))
                outcomes[(side, ip)] = "won"
            except AddressTaken as taken:
                outcomes[(side, ip)] = taken.owner

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(race, ("a", "b"), (first, second)))
    held = allocations(kube_clean)
    for ip in addresses:
        winners = [side for side in "ab" if outcomes[(side, ip)] == "won"]
        assert len(winners) == 1, (ip, outcomes[("a", ip)], outcomes[("b", ip)])
        loser = "b" if winners == ["a"] else "a"
        assert outcomes[(loser, ip)] == f"default/{winners[0]}-{ip}"  # the loser is told who holds it
        assert held[ip]["spec"]["containerID"] == f"{winners[0]}-{ip}"


def two_controllers(stores: Callable[..., KubeStore], clock: Clock) -> list[Service]:
    services = []
    for _ in range(2):
        service = Service(stores(), make_config(), now=clock, fabric=RecordingFabric())
        service.register_node("n2", mac=N2_MAC, ip="198.18.0.12")  # pinned to switch 1 port 3
        services.append(service)
    return services


def test_two_controllers_hand_out_each_address_of_a_pool_once(
    stores: Callable[..., KubeStore], kube_clean: Kube, clock: Clock
) -> None:
    ensure_node(kube_clean, "n2")
    services = two_controllers(stores, clock)
    requests = [(i % 2, PodRequest(f"c{i}", "eth0", "default", f"pod-{i}", Mode.MACVLAN, pool="small")) for i in range(14)]

    def place(job: tuple[int, PodRequest]) -> tuple[str, Any]:
        side, request = job
        try:
            return request.container_id, services[side].allocate_and_place("n2", request).pod.ip
        except ControllerError as err:
            return request.container_id, err

    with ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(place, requests))
    given = {cid: ip for cid, ip in answers.items() if isinstance(ip, str)}
    assert sorted(given.values()) == [f"198.19.0.{i}" for i in range(2, 7)]  # the pool's five, each once
    assert all("exhausted" in str(err) for err in answers.values() if not isinstance(err, str))
    assert {ip: o["spec"]["containerID"] for ip, o in allocations(kube_clean).items()} == {ip: c for c, ip in given.items()}


def test_an_address_another_controller_holds_is_refused_naming_the_holder(
    stores: Callable[..., KubeStore], kube_clean: Kube, clock: Clock
) -> None:
    ensure_node(kube_clean, "n2")
    one, other = two_controllers(stores, clock)
    assert one.allocate_and_place("n2", PodRequest("a", "eth0", "default", "db-1", Mode.MACVLAN)).pod.ip == "198.18.0.100"
    # `other` offers the same first address; the API says it is taken: it learns so and takes the next
    assert other.allocate_and_place("n2", PodRequest("b", "eth0", "default", "b", Mode.MACVLAN)).pod.ip == "198.18.0.101"
    with pytest.raises(ControllerError, match="pod default/web-0: 198.18.0.100 is held by default/db-1"):
        other.allocate_and_place("n2", PodRequest("c", "eth0", "default", "web-0", Mode.MACVLAN, ip="198.18.0.100"))
    one.allocate_and_place("n2", PodRequest("d", "eth0", "default", "d", Mode.MACVLAN, ip="198.18.0.150"))
    with pytest.raises(ControllerError, match="pod default/web-1: 198.18.0.150 is held by default/d"):
        other.allocate_and_place("n2", PodRequest("e", "eth0", "default", "web-1", Mode.MACVLAN, ip="198.18.0.150"))


def test_releases_wait_for_sync_then_cool_down_and_go(stores: Callable[..., KubeStore], kube_clean: Kube, clock: Clock) -> None:
    store = stores()
    put(store, store_pod("a", "198.18.0.100"))
    assert from_object(allocation(kube_clean, "198.18.0.100"))[1].phase is Phase.BOUND  # taken before put_pod returned
    store.write_late()  # the created object's status (its boundAt) is written after the ADD's answer
    assert allocation(kube_clean, "198.18.0.100")["status"] == {"phase": "Bound", "boundAt": "1970-01-01T00:00:12.500000Z"}
    with store.transaction() as tx:
        tx.delete_pod("a", "eth0")
        tx.mark_released("198.18.0.100", clock())
    assert allocation(kube_clean, "198.18.0.100")["status"]["phase"] == "Bound"  # still taken: freeing waits
    store.sync()
    cooling = allocation(kube_clean, "198.18.0.100")
    assert cooling["status"]["phase"] == "Cooldown"
    assert cooling["spec"]["containerID"] == "a"  # who had it last
    clock.advance(29)
    store.sweep()
    assert "198.18.0.100" in allocations(kube_clean)
    clock.advance(1)
    store.sweep()
    assert allocations(kube_clean) == {}
    assert stores().load().released == {}


def test_a_sticky_address_is_reserved_while_its_pod_is_away(
    stores: Callable[..., KubeStore], kube_clean: Kube, clock: Clock
) -> None:
    ensure_node(kube_clean, "n2")
    one, _ = two_controllers(stores, clock)
    ip = one.allocate_and_place("n2", PodRequest("a", "eth0", "default", "web-0", Mode.MACVLAN, sticky="default/web-0@u1")).pod.ip
    one.release("n2", "a", "eth0")
    reserved = allocation(kube_clean, ip)
    assert (reserved["status"]["phase"], reserved["spec"]["stickyKey"]) == ("Reserved", "default/web-0@u1")
    stale = stores()  # a second controller that saw the reservation
    again = one.allocate_and_place("n2", PodRequest("b", "eth0", "default", "web-0", Mode.MACVLAN, sticky="default/web-0@u1"))
    assert again.pod.ip == ip
    assert allocation(kube_clean, ip)["spec"]["containerID"] == "b"
    with pytest.raises(AddressTaken, match=f"{ip} is held by default/web-0"):  # it rebinds at an old version
        put(stale, store_pod("c", ip, sticky="default/web-0@u1"))
    assert one.forget_sticky("default/web-0@u1") == ip


def test_an_object_someone_else_changed_is_left_alone(stores: Callable[..., KubeStore], kube_clean: Kube, clock: Clock) -> None:
    store = stores()
    put(store, store_pod("a", "198.18.0.100"))
    theirs = allocation(kube_clean, "198.18.0.100")
    theirs["spec"].update(containerID="theirs", pod={"namespace": "other", "name": "theirs"})
    kube_clean.replace(IPALLOCATIONS.path(name="198.18.0.100"), theirs)
    with store.transaction() as tx:
        tx.delete_pod("a", "eth0")
        tx.mark_released("198.18.0.100", clock())
    store.sync()
    left = allocation(kube_clean, "198.18.0.100")
    assert (left["spec"]["containerID"], from_object(left)[1].phase) == ("theirs", Phase.BOUND)


def test_a_write_refused_for_good_stops_the_store(
    stores: Callable[..., KubeStore], kube_as: Callable[[list[dict[str, Any]]], Path], clock: Clock
) -> None:
    """Missing RBAC for deletes: allocating and releasing work, ending a cooldown cannot be written. The store then
    refuses writes and says so (health turns 503), and a restart reloads what the API holds."""
    limited = Kube.connect(kubeconfig=str(kube_as([{"apiGroups": ["underlay.io"], "resources": ["ipallocations", "ipallocations/status"],
                        "verbs": ["get", "list", "watch", "create", "update"]},
                       {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}])))  # fmt: skip
    store = stores(limited)
    put(store, store_pod("a", "198.18.0.100"), store_pod("b", "198.18.0.101"))
    with store.transaction() as tx:
        tx.delete_pod("a", "eth0")
        tx.mark_released("198.18.0.100", clock())
    store.sync()
    clock.advance(30)
    with pytest.raises(StoreError, match="a write was refused"):
        store.sweep()  # the cooldown is over: the object must go, and the store may not delete
    assert store.failure is not None and "forbidden" in store.failure
    with pytest.raises(StoreError, match="refusing writes"):
        with store.transaction():
            pass
    snapshot = stores().load()  # a restart: what the API holds
    assert ([p.container_id for p in snapshot.pods], snapshot.released) == (["b"], {"198.18.0.100": clock() - 30})
