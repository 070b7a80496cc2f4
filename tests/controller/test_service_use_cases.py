"""The service's use cases, with each real store (SQLite, and the Kubernetes store on the session's
API server) and a recording fabric."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controller.errors import BadRequest, ConflictError, NotFound, SwitchUnavailable, TemporaryError
from controller.service import Service
from controller.store import Mode
from openflow.model import Placement, PortRole, SwitchPort

from ctlfakes import STORE_KINDS, Clock, RecordingFabric, make_config
from ctlfakes import pod_request as request

N1_MAC, N2_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02"


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ready(service: Service) -> Service:
    """n1 registered and located on switch 1 port 4; n2 registered (pinned to switch 1 port 3)."""
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.register_node("n2", mac=N2_MAC, ip="198.18.0.12")
    assert service.node_located(N1_MAC, dpid=1, port=4) == {1}
    return service


def test_register_unknown_node(service: Service) -> None:
    with pytest.raises(NotFound, match="node nx: not in the controller's config"):
        service.register_node("nx", mac=N1_MAC, ip="198.18.0.11")


def test_register_reports_learned_or_pinned_port(service: Service) -> None:
    assert service.register_node("n1", mac=N1_MAC, ip="198.18.0.11").port is None
    assert service.register_node("n2", mac=N2_MAC, ip="198.18.0.12").port == 3


def test_register_validates_and_refuses_clashes(service: Service) -> None:
    with pytest.raises(BadRequest, match="mac: 'nope' is not a MAC address"):
        service.register_node("n1", mac="nope", ip="198.18.0.11")
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    with pytest.raises(ConflictError, match="node n3: 198.18.0.11 is already node n1's"):
        service.register_node("n3", mac="02:00:00:00:01:03", ip="198.18.0.11")
    with pytest.raises(ConflictError, match="node n3: 198.18.0.150 is in pool default's ranges"):
        service.register_node("n3", mac="02:00:00:00:01:03", ip="198.18.0.150")


def test_registering_an_unlocated_node_converges_every_switch_one_by_one(
    service: Service, fabric: RecordingFabric
) -> None:
    fabric.down.add(1)  # one switch down does not keep the other stale, nor fail the request
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    assert sorted(fabric.calls) == [(1,), (2,)]


def test_desired_state_before_and_after_learning(service: Service) -> None:
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.register_node("n2", mac=N2_MAC, ip="198.18.0.12")
    state = service.desired_state(1)
    assert state.ports == (SwitchPort(1, PortRole.TRUSTED), SwitchPort(3, PortRole.NODE))
    assert state.placements == frozenset({Placement("198.18.0.12", N2_MAC, 3)})
    assert state.learn_macs == (N1_MAC,)
    assert state.cookie == 0x55AA_0000_0000_0000

    assert service.node_located(N1_MAC.upper(), dpid=1, port=4) == {1}
    state = service.desired_state(1)
    assert SwitchPort(4, PortRole.NODE) in state.ports
    assert Placement("198.18.0.11", N1_MAC, 4) in state.placements
    assert state.learn_macs == ()
    assert service.desired_state(2).learn_macs == ()


def test_node_located_ignores_what_it_must(ready: Service) -> None:
    assert ready.node_located(N1_MAC, dpid=1, port=4) == frozenset()  # no change
    assert ready.node_located(N1_MAC, dpid=2, port=2) == frozenset()  # a trusted port
    assert ready.node_located(N2_MAC, dpid=1, port=9) == frozenset()  # pinned in config
    assert ready.node_located("02:99:99:99:99:99", dpid=1, port=9) == frozenset()  # not a node
    assert ready.node_located(N1_MAC, dpid=2, port=5) == {1, 2}  # moved: both switches change


def test_allocate_waits_for_the_switch_and_places_the_pod(ready: Service, fabric: RecordingFabric) -> None:
    fabric.calls.clear()
    attachment = ready.allocate_and_place("n1", request("a"))
    pod = attachment.pod
    assert (pod.ip, pod.mac, attachment.prefix, attachment.gateway) == ("198.18.0.100", "02:55:c6:12:00:64", 24, "198.18.0.1")
    assert [(r.dst, r.gw) for r in attachment.routes] == [("0.0.0.0/0", "198.18.0.1")]
    assert fabric.calls == [(1,)]
    assert Placement("198.18.0.100", pod.mac, 4, "default/pod-a") in ready.desired_state(1).placements


def test_allocate_is_idempotent_and_still_waits_for_the_switch(ready: Service, fabric: RecordingFabric) -> None:
    first = ready.allocate_and_place("n1", request("a"))
    fabric.calls.clear()
    assert ready.allocate_and_place("n1", request("a")) == first
    assert fabric.calls == [(1,)]
    with pytest.raises(ConflictError, match="already placed on node n1"):
        ready.allocate_and_place("n2", request("a"))


def test_allocate_before_the_node_port_is_known(service: Service) -> None:
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    with pytest.raises(TemporaryError, match=r"node n1's switch port is not known yet \(no frame seen from 02:00:00:00:01:01\)"):
        service.allocate_and_place("n1", request("a"))
    with pytest.raises(NotFound, match="node n3: not registered"):
        service.allocate_and_place("n3", request("a"))


def test_switch_failure_rolls_back_everything(
    ready: Service, fabric: RecordingFabric, make_service: Callable[..., Service]
) -> None:
    before = ready.desired_state(1)
    fabric.down.add(1)
    with pytest.raises(SwitchUnavailable):
        ready.allocate_and_place("n1", request("a", sticky="default/web-0"))
    assert ready.desired_state(1) == before
    assert ready.list_pods("n1") == []
    fabric.down.clear()
    assert make_service().list_pods("n1") == []  # nothing stored either, sticky reservation included:
    assert make_service().allocate_and_place("n1", request("b", ip="198.18.0.100")).pod.ip == "198.18.0.100"


def test_a_batch_is_one_convergence_and_each_request_gets_its_own_answer(
    ready: Service, fabric: RecordingFabric, make_service: Callable[..., Service]
) -> None:
    ready.allocate_and_place("n2", request("elsewhere"))
    fabric.calls.clear()
    answers = ready.place_pods("n1", [
        request("a"), request("b", ip="198.18.0.100"), request("c", ip="198.18.0.150"), request("elsewhere"),
        request("a"),
    ])  # fmt: skip
    assert fabric.calls == [(1,)]
    assert [type(answer).__name__ for answer in answers] == [
        "Attachment", "AddressInUse", "Attachment", "ConflictError", "TemporaryError"]
    assert "198.18.0.100 is held by default/pod-elsewhere" in str(answers[1])
    assert "container elsewhere/eth0: already placed on node n2" in str(answers[3])
    assert "container a/eth0: its ADD is still in progress" in str(answers[4])  # the same pod twice in one batch
    assert [answers[0].pod.ip, answers[2].pod.ip] == ["198.18.0.101", "198.18.0.150"]  # type: ignore[union-attr]
    # durable when answered: a second store on the same file sees both
    assert {p.container_id for p in make_service().list_pods("n1")} == {"a", "c"}


def test_a_batch_the_switch_does_not_acknowledge_is_undone_whole(ready: Service, fabric: RecordingFabric) -> None:
    kept = ready.allocate_and_place("n1", request("kept"))
    fabric.down.add(1)
    with pytest.raises(SwitchUnavailable):
        ready.place_pods("n1", [request("a"), request("b", sticky="default/web-0"), request("kept")])
    assert ready.list_pods("n1") == [kept.pod]  # an earlier pod the batch repeated is not taken back
    assert ready.forget_sticky("default/web-0") is None  # its reservation went with it
    fabric.down.clear()
    answers = ready.place_pods("n1", [request("x", ip="198.18.0.101"), request("y", ip="198.18.0.102")])
    assert [a.pod.ip for a in answers] == ["198.18.0.101", "198.18.0.102"]  # type: ignore[union-attr]  # no cooldown


def test_ipvlan_pods_answer_at_the_node_mac(ready: Service) -> None:
    with pytest.raises(BadRequest, match="mac: pod default/pod-a: only macvlan pods choose their MAC"):
        ready.allocate_and_place("n1", request("a", mode=Mode.IPVLAN, mac="02:aa:00:00:00:01"))
    pod = ready.allocate_and_place("n1", request("a", mode=Mode.IPVLAN)).pod
    assert pod.mac == N1_MAC
    ready.register_node("n1", mac="02:00:00:00:0a:01", ip="198.18.0.11")  # new NIC: port unknown again
    assert ready.list_pods("n1")[0].mac == "02:00:00:00:0a:01"
    ready.node_located("02:00:00:00:0a:01", dpid=1, port=6)
    assert Placement(pod.ip, "02:00:00:00:0a:01", 6) in ready.desired_state(1).placements


def test_requested_mac_must_be_unique(ready: Service) -> None:
    ready.allocate_and_place("n1", request("a", mac="02:aa:00:00:00:01"))
    with pytest.raises(ConflictError, match="pod default/pod-b: MAC 02:aa:00:00:00:01 is held by default/pod-a"):
        ready.allocate_and_place("n1", request("b", mac="02:AA:00:00:00:01"))
    with pytest.raises(ConflictError, match="is node n2's uplink"):
        ready.allocate_and_place("n1", request("b", mac=N2_MAC))


def test_release_is_idempotent_and_cools_down(ready: Service, clock: Clock, fabric: RecordingFabric) -> None:
    ip = ready.allocate_and_place("n1", request("a", pool="small")).pod.ip
    fabric.calls.clear()
    assert ready.release("n1", "a", "eth0") is True
    assert fabric.calls == [(1,)]
    assert ready.release("n1", "a", "eth0") is False
    assert ip not in {ready.allocate_and_place("n1", request(f"c{i}", pool="small")).pod.ip for i in range(4)}
    with pytest.raises(TemporaryError, match="cooling down"):
        ready.allocate_and_place("n1", request("late", pool="small"))
    clock.advance(30)
    assert ready.allocate_and_place("n1", request("late", pool="small")).pod.ip == ip


def test_forget_sticky_frees_the_reserved_address(ready: Service, make_service: Callable[..., Service]) -> None:
    ip = ready.allocate_and_place("n1", request("a", sticky="default/web-0")).pod.ip
    ready.release("n1", "a", "eth0")
    assert ready.forget_sticky("default/web-0") == ip
    assert ready.forget_sticky("default/web-0") is None
    assert make_service().allocate_and_place("n1", request("b", ip=ip)).pod.ip == ip  # not reserved after restart


def test_release_succeeds_while_the_switch_is_down(ready: Service, fabric: RecordingFabric) -> None:
    ready.allocate_and_place("n1", request("a"))
    fabric.down.add(1)
    assert ready.release("n1", "a", "eth0") is True
    assert ready.desired_state(1).placements == frozenset(
        {Placement("198.18.0.11", N1_MAC, 4), Placement("198.18.0.12", N2_MAC, 3)})


def test_release_of_another_nodes_pod_is_refused_quietly(ready: Service) -> None:
    ready.allocate_and_place("n1", request("a"))
    assert ready.release("n2", "a", "eth0") is False
    assert len(ready.list_pods("n1")) == 1


def test_sync_releases_what_the_agent_no_longer_has(ready: Service, clock: Clock) -> None:
    for cid in ("keep", "gone"):
        ready.allocate_and_place("n1", request(cid))
    clock.advance(61)
    ready.allocate_and_place("n1", request("young"))  # may be missing from the agent's list: grace
    result = ready.sync("n1", [("keep", "eth0"), ("stranger", "eth0")])
    assert [p.container_id for p in result.released] == ["gone"]
    assert sorted(p.container_id for p in result.pods) == ["keep", "young"]
    assert result.unknown == (("stranger", "eth0"),)
    assert sorted(p.container_id for p in ready.list_pods("n1")) == ["keep", "young"]


def test_a_restarted_controller_reloads_everything(ready: Service, make_service: Callable[..., Service], clock: Clock) -> None:
    ready.allocate_and_place("n1", request("a", sticky="default/web-0"))
    ready.allocate_and_place("n2", request("b", mode=Mode.IPVLAN))
    ready.release("n1", "a", "eth0")
    restarted = make_service()
    assert restarted.epoch != ready.epoch
    assert restarted.desired_state(1) == ready.desired_state(1)
    assert restarted.placements() == ready.placements()
    assert restarted.list_pods("n2") == ready.list_pods("n2")
    assert restarted.allocate_and_place("n1", request("a2", sticky="default/web-0")).pod.ip == "198.18.0.100"
    assert restarted.allocate_and_place("n1", request("c")).pod.ip == "198.18.0.102"


def test_placements_and_switches(ready: Service) -> None:
    ready.allocate_and_place("n2", request("a"))
    owners = {(p.owner, p.node, p.port, p.dpid) for p in ready.placements()}
    assert owners == {("node/n1", "n1", 4, 1), ("node/n2", "n2", 3, 1), ("default/pod-a", "n2", 3, 1)}
    assert ready.switches() == [1, 2]


@pytest.mark.parametrize("store_kind", ["sqlite"])  # about desired_state, not the store
def test_desired_state_for_ten_thousand_pods_is_cheap(make_service: Callable[..., Service]) -> None:
    import time

    service = make_service(make_config(pools={"big": {"subnet": "198.18.0.0/17"}}), )
    service.register_node("n2", mac=N2_MAC, ip="198.19.0.12")
    for i in range(2000):
        service.allocate_and_place("n2", request(f"c{i}"))
    started = time.perf_counter()
    for _ in range(100):
        assert len(service.desired_state(1).placements) == 2001
    assert time.perf_counter() - started < 0.5
