"""controller/nodelife.py without an API server: the verdict on a Node's JSON, the two passes, and
what forgetting a node does to the service (on the SQLite store, with a recording fabric).

The Node objects are the API's JSON as the watch cache keeps it (controller/kube/view.py's
trim_node); `Nodes` serves them from two dicts, the cache's and the API server's, so a test can make
them disagree as they do for a moment in a real cluster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ctlfakes import Clock, make_config, pod_request

from controller.errors import NotFound, TemporaryError
from controller.nodelife import NodeLifecycle, ready_since, refusal, verdict
from controller.service import Service

T0 = 1_800_000_000.0
N2 = {"mac": "02:00:00:00:01:02", "ip": "198.18.0.12"}


def node(status: str | None, *, since: float = T0) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [] if status is None else [{"type": "Ready", "status": status, "lastTransitionTime": stamp}]
    return {"metadata": {"name": "n"}, "status": {"conditions": conditions}}


@pytest.mark.parametrize(("obj", "now", "lost"), [
    (None, T0, "node n2: its Node object was deleted"),
    (node("True"), T0 + 9999, None),
    (node(None), T0 + 9999, None),  # no Ready condition yet: a Node just made
    (node("False"), T0 + 299, None),  # within the grace
    (node("False"), T0 + 300, "node n2: NotReady for 300s (more than node_grace 300s)"),
    (node("Unknown"), T0 + 301, "node n2: NotReady for 301s (more than node_grace 300s)"),
    ({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "yesterday"}]}}, T0, None),
])  # fmt: skip
def test_verdict(obj, now, lost):
    assert verdict("n2", obj, now=now, grace=300) == lost


def test_ready_since_reads_the_ready_condition():
    assert ready_since(node("False", since=T0)) == (False, T0)
    assert ready_since({"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}}) == (True, None)


def test_a_node_registers_only_if_the_cluster_knows_it_and_has_not_lost_it():
    assert isinstance(refusal("n2", None, now=T0, grace=300), NotFound)
    lost = refusal("n2", node("False"), now=T0 + 400, grace=300)
    assert isinstance(lost, TemporaryError) and "it registers once Ready again" in str(lost)
    assert refusal("n2", node("True"), now=T0, grace=300) is None


class Nodes:
    def __init__(self) -> None:
        self.cached: dict[str, dict[str, Any] | None] = {}
        self.live: dict[str, dict[str, Any] | None | Exception] = {}
        self.events: list[tuple[str, str, str]] = []  # (node, reason, message)

    def node(self, name: str) -> dict[str, Any] | None:
        return self.cached.get(name, node("True"))

    def node_live(self, name: str) -> dict[str, Any] | None:
        answer = self.live.get(name, node("True"))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def event(self, involved: dict[str, Any], *, reason: str, message: str, type: str = "Warning") -> None:
        self.events.append((involved["metadata"]["name"], reason, message))


@pytest.fixture
def nodes() -> Nodes:
    return Nodes()


@pytest.fixture
def placed(service: Service) -> Service:
    """n2 (pinned on switch 1 port 3) with a pod and a StatefulSet pod; n3 is not registered."""
    service.register_node("n2", **N2)
    service.allocate_and_place("n2", pod_request("a"))
    service.allocate_and_place("n2", pod_request("web-0", sticky="default/web/0@uid-1"))
    return service


def test_a_node_lost_on_two_passes_and_confirmed_live_is_forgotten(placed, nodes, clock, fabric):
    lifecycle = NodeLifecycle(placed, nodes, now=clock, grace=300)
    nodes.cached["n2"] = nodes.live["n2"] = None
    first = lifecycle.run_pass()
    assert (first.suspects, first.forgotten) == (("n2",), ())
    assert len(placed.placements()) == 3  # the node and its two pods: nothing done on one pass
    fabric.calls.clear()
    second = lifecycle.run_pass()
    assert second.forgotten == (("n2", "node n2: its Node object was deleted", 2),)
    assert placed.placements() == [] and placed.node_names() == []
    assert placed.desired_state(1).placements == frozenset()
    assert fabric.calls == [(1,)]  # its switch converged: the flows went
    assert placed.reservations() == {"default/web/0@uid-1": "198.18.0.101"}  # the StatefulSet pod's address waits
    assert nodes.events == [("n2", "NodeForgotten", "node n2: its Node object was deleted: 2 pod(s) released and their "
                                                    "flows removed")]


def test_a_node_back_before_the_live_read_is_left_alone(placed, nodes, clock):
    lifecycle = NodeLifecycle(placed, nodes, now=clock, grace=300)
    nodes.cached["n2"] = None
    lifecycle.run_pass()
    lifecycle.run_pass()  # the cache still says deleted, the API server says it is there
    assert placed.node_names() == ["n2"] and len(placed.placements()) == 3 and nodes.events == []
    nodes.cached["n2"] = node("True")
    assert lifecycle.run_pass().suspects == ()


def test_a_node_seen_lost_once_then_back_is_not_a_suspect_any_more(placed, nodes, clock):
    lifecycle = NodeLifecycle(placed, nodes, now=clock, grace=300)
    nodes.cached["n2"] = nodes.live["n2"] = None
    lifecycle.run_pass()
    nodes.cached["n2"] = nodes.live["n2"] = node("True")
    lifecycle.run_pass()
    nodes.cached["n2"] = nodes.live["n2"] = None
    assert lifecycle.run_pass().forgotten == ()  # two passes in a row, not two in all


def test_an_api_error_on_the_live_read_keeps_the_node(placed, nodes, clock):
    lifecycle = NodeLifecycle(placed, nodes, now=clock, grace=300)
    nodes.cached["n2"], nodes.live["n2"] = None, TemporaryError("kubernetes: connection refused", delay=1)
    lifecycle.run_pass()
    report = lifecycle.run_pass()
    assert report.kept == (("n2", "kubernetes: connection refused"),) and report.suspects == ("n2",)
    nodes.live["n2"] = None
    assert lifecycle.run_pass().forgotten[0][0] == "n2"


def test_a_forgotten_node_stays_forgotten_after_a_restart_and_comes_back_with_its_pods(placed, nodes, clock,
                                                                                         make_service):
    pod = placed.list_pods("n2")[0]
    placed.forget_node("n2", reason="node n2: its Node object was deleted")
    placed.store.close()
    restarted = make_service()
    assert restarted.node_names() == [] and restarted.placements() == []
    with pytest.raises(NotFound, match="not registered"):
        restarted.list_pods("n2")  # what the agent's next sync hears: it registers again
    restarted.register_node("n2", **N2)
    again = restarted.allocate_and_place("n2", pod_request("a", ip=pod.ip, mac=pod.mac))  # its sync's re-add
    assert (again.pod.ip, again.pod.mac) == (pod.ip, pod.mac)


def test_nodes_come_from_the_cluster_with_the_kubernetes_store(store_path, clock, fabric):
    """The config's nodes do not matter then: a Node object does (a DictCluster here)."""
    from ctlfakes import DictCluster

    from controller.store import SqliteStore

    cluster = DictCluster()
    config = make_config(store="kubernetes", kubernetes={"node_grace": 300})
    service = Service(SqliteStore(store_path), config, now=clock, fabric=fabric, cluster=cluster)
    with pytest.raises(NotFound, match="node n2: no Node object of that name in the cluster"):
        service.register_node("n2", **N2)
    cluster.nodes["n2"] = {"metadata": {"name": "n2"}}
    service.register_node("n2", **N2)
    cluster.nodes["elsewhere"] = {"metadata": {"name": "elsewhere"}}  # in no [nodes] table: fine
    service.register_node("elsewhere", mac="02:00:00:00:01:07", ip="198.18.0.17")
    cluster.nodes["n2"] = node("False", since=clock() - 301)
    with pytest.raises(TemporaryError, match="NotReady for 301s"):
        service.register_node("n2", **N2)
