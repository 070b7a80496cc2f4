"""deploy/lab/podsync.py: what the kubelet stand-in does about its node's pods (no I/O, no root)."""

from __future__ import annotations

from deploy.lab import podsync
from deploy.lab.podsync import Attached, Plan, plan


def pod(name: str, *, uid: str | None = None, node: str = "node1", ip: str | None = None, phase: str = "Pending",
        deleting: bool = False, host_network: bool = False, namespace: str = "default") -> dict:
    meta = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"phase": phase, **({"podIP": ip} if ip else {})}
    return {"metadata": meta, "spec": {"nodeName": node, "hostNetwork": host_network,
                                       "containers": [{"name": "c", "image": "pause"}]}, "status": status}


def attached(name: str, *, uid: str | None = None, ip: str = "198.18.0.100") -> Attached:
    return Attached(uid or f"uid-{name}", "default", name, "c" * 64, f"ul-default.{name}", ip, "02:00:00:00:00:01")


def test_a_new_pod_on_this_node_is_added():
    assert plan([pod("a")], {}, node="node1") == Plan(add=(pod("a"),))


def test_pods_of_other_nodes_or_on_the_host_network_are_left_alone():
    assert plan([pod("a", node="node2"), pod("b", host_network=True)], {}, node="node1") == Plan()


def test_an_attached_pod_that_shows_its_address_needs_nothing():
    assert plan([pod("a", ip="198.18.0.100", phase="Running")], {"uid-a": attached("a")}, node="node1") == Plan()


def test_an_attached_pod_whose_status_lacks_the_address_is_reported_again():
    """A stand-in restarted between ADD and the status write."""
    todo = plan([pod("a")], {"uid-a": attached("a")}, node="node1")
    assert todo == Plan(report=((pod("a"), attached("a")),))


def test_a_pod_gone_from_the_api_is_deleted():
    assert plan([], {"uid-a": attached("a")}, node="node1") == Plan(delete=(attached("a"),))


def test_a_pod_made_again_under_its_name_is_a_new_pod():
    """A StatefulSet's pod deleted and made again: a new UID, so DEL the old attachment, ADD the new."""
    todo = plan([pod("web-0", uid="new")], {"old": attached("web-0", uid="old")}, node="node1")
    assert todo == Plan(add=(pod("web-0", uid="new"),), delete=(attached("web-0", uid="old"),))


def test_a_terminating_pod_is_deleted_then_finalized():
    going = pod("a", ip="198.18.0.100", phase="Running", deleting=True)
    assert plan([going], {"uid-a": attached("a")}, node="node1") == Plan(delete=(attached("a"),))
    assert plan([going], {}, node="node1") == Plan(finalize=(going,))


def test_a_finished_pod_loses_its_network_but_stays():
    done = pod("job", ip="198.18.0.100", phase="Succeeded")
    assert plan([done], {"uid-job": attached("job")}, node="node1") == Plan(delete=(attached("job"),))
    assert plan([done], {}, node="node1") == Plan()


def test_namespace_names_never_collide_and_stay_short():
    assert podsync.netns_name("ul12", "default", "node1") == "ul12-default.node1"
    assert podsync.netns_name("ul12", "default", "node1") != "ul12-node1"  # a lab node's namespace
    long_a = podsync.netns_name("ul12", "default", "x" * 200 + "a")
    long_b = podsync.netns_name("ul12", "default", "x" * 200 + "b")
    assert len(long_a) == podsync.NETNS_MAX and long_a != long_b


def test_cni_args_name_the_pod_as_kubelet_does():
    assert podsync.cni_args(pod("web-0", uid="u1"), "cid") == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0",
        "K8S_POD_INFRA_CONTAINER_ID": "cid", "K8S_POD_UID": "u1"}


def test_a_running_pod_is_ready_with_its_address():
    status = podsync.running_status(pod("a"), attached("a"), host_ip="198.18.0.11", now="T")["status"]
    assert (status["phase"], status["podIP"], status["podIPs"], status["hostIP"]) == (
        "Running", "198.18.0.100", [{"ip": "198.18.0.100"}], "198.18.0.11")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert [(c["name"], c["ready"], "running" in c["state"]) for c in status["containerStatuses"]] == [("c", True, True)]


def test_a_node_is_ready_with_room_and_its_address():
    status = podsync.node_status("node1", ip="198.18.0.11", now="T")["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert {"type": "InternalIP", "address": "198.18.0.11"} in status["addresses"]
    assert status["allocatable"]["pods"] == "110"


def test_the_lease_is_owned_by_its_node():
    lease = podsync.lease_object("node1", node_uid="n-uid", now="T")
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "n-uid"
    assert lease["spec"]["holderIdentity"] == "node1"


def test_a_failed_sandbox_is_a_warning_on_the_pod():
    event = podsync.sandbox_failed_event(pod("a"), node="node1", message="ADD underlay: no pool", now="T")
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "FailedCreatePodSandBox",
                                                                  "ADD underlay: no pool")
    assert event["involvedObject"]["uid"] == "uid-a"
