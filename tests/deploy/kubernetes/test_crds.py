"""deploy/kubernetes/crds on the real API server: the CRDs install and are served; valid objects come
back as written (nothing pruned); every CEL rule refuses what it should with its message; printer
columns come back in Table form; status is written only through the status subresource."""

from __future__ import annotations

import copy
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from controller.kube.allocations import name_for
from deploy.k8s import crds

GROUP, VERSION = "underlay.io", "v1alpha1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

POOL_SPEC: dict[str, Any] = {
    "subnet": "198.18.0.0/24",
    "ips": ["198.18.0.100-198.18.0.199", "198.18.0.250"],
    "excludeIPs": ["198.18.0.150", "198.18.0.160-198.18.0.169", "198.18.0.176/28"],
    "gateway": "198.18.0.1",
    "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}, {"dst": "198.19.0.0/16", "gw": "198.18.0.2"}],
    "vlan": 100,
    "namespaces": ["default", "web"],
    "namespaceSelector": {"matchLabels": {"team": "a"},
                          "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
    "nodes": ["node1"],
    "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "Exists"}]},
    "podSelector": {"matchLabels": {"app": "web"}},
    "default": False,
    "disabled": False,
    "reuseCooldownSeconds": 30,
}

ALLOCATION_SPEC: dict[str, Any] = {
    "address": "198.18.0.100", "pool": "default",
    "pod": {"namespace": "default", "name": "web-0", "uid": "0b7c6f7e-1b52-4d2e-9c39-1f3b2c1d0a11"},
    "node": "node1", "containerID": "4f1c0ffee", "interface": "eth0", "mac": "02:55:c6:12:00:64", "mode": "macvlan",
    "owner": {"kind": "StatefulSet", "name": "web", "uid": "6a0f7f3c-5d7e-4a8b-9a0e-2f4c7b1e9d22"},
    "stickyKey": "default/web/0@6a0f7f3c-5d7e-4a8b-9a0e-2f4c7b1e9d22",
}


@pytest.fixture(scope="module")
def objects(k8s) -> client.CustomObjectsApi:
    crds.install(k8s.api)
    return client.CustomObjectsApi(k8s.api)


@pytest.fixture
def name(objects) -> Iterator[str]:
    """A unique object name, and both kinds of that name deleted afterwards."""
    unique = f"t-{secrets.token_hex(4)}"
    yield unique
    for plural in ("ippools", "ipallocations"):
        try:
            objects.delete_cluster_custom_object(GROUP, VERSION, plural, unique)
        except client.ApiException as error:
            assert error.status == 404


def pool(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}


def allocation(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPAllocation", "metadata": {"name": name}, "spec": spec}


def refusal(create) -> str:
    """The API server's message for a refused write (422 Invalid)."""
    with pytest.raises(client.ApiException) as refused:
        create()
    assert refused.value.status == 422, refused.value.body
    return json.loads(refused.value.body)["message"]


def test_the_crds_install_again_and_are_served_with_short_names_and_a_category(k8s, objects):
    assert crds.install(k8s.api) == ["ipallocations.underlay.io", "ippools.underlay.io"]  # replace: idempotent
    resources = discovery(k8s)
    assert resources["ippools"]["shortNames"] == ["ipp"] and resources["ipallocations"]["shortNames"] == ["ipa"]
    assert resources["ippools"]["categories"] == ["underlay"] == resources["ipallocations"]["categories"]
    assert resources["ippools"]["namespaced"] is False and resources["ipallocations"]["namespaced"] is False
    assert {"ippools/status", "ipallocations/status"} <= set(resources)


def get_json(k8s, path: str, *, accept: str = "application/json") -> dict[str, Any]:
    """A GET with the session's credentials, for what the generated client cannot ask (Table form)."""
    conf = k8s.api.configuration
    request = urllib.request.Request(conf.host + path, headers={
        "Authorization": conf.get_api_key_with_prefix("BearerToken"), "Accept": accept})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=conf.ssl_ca_cert)) as reply:
        return json.loads(reply.read())


def discovery(k8s) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in get_json(k8s, f"/apis/{GROUP}/{VERSION}")["resources"]}


def test_a_full_pool_comes_back_as_written(objects, name):
    created = objects.create_cluster_custom_object(GROUP, VERSION, "ippools", pool(name, POOL_SPEC))
    assert created["spec"] == POOL_SPEC


def test_a_minimal_pool_is_a_subnet(objects, name):
    created = objects.create_cluster_custom_object(GROUP, VERSION, "ippools", pool(name, {"subnet": "198.18.4.0/22"}))
    assert created["spec"] == {"subnet": "198.18.4.0/22"}


def test_an_allocation_comes_back_as_written(objects, name):
    created = objects.create_cluster_custom_object(GROUP, VERSION, "ipallocations", allocation(name, ALLOCATION_SPEC))
    assert created["spec"] == ALLOCATION_SPEC


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return spec


POOL_REFUSALS = {
    "subnet not a network": ({"subnet": "198.18.0.0/33"}, "spec.subnet: Invalid value: \"198.18.0.0/33\": subnet must be an IPv4 network such as 198.18.0.0/24"),
    "subnet IPv6": ({"subnet": "fd00::/64", "ips": None, "excludeIPs": None, "gateway": None, "routes": None}, "subnet must be an IPv4 network"),
    "subnet6 IPv4": ({"subnet6": "198.19.0.0/24"}, "spec.subnet6: Invalid value: \"198.19.0.0/24\": subnet6 must be an IPv6 network such as fd00:18::/64"),
    "subnet6 host bits": ({"subnet6": "fd00:18::5/64"}, "subnet6 must not have host bits set (fd00:18::/64, not fd00:18::5/64)"),
    "gateway6 outside": ({"subnet6": "fd00:18::/64", "gateway6": "fd00:19::1"}, "spec.gateway6: Invalid value: gateway6 must be a host address inside subnet6"),
    "gateway6 is the anycast address": ({"subnet6": "fd00:18::/64", "gateway6": "fd00:18::"}, "gateway6 must be a host address inside subnet6"),
    "gateway6 IPv4": ({"subnet6": "fd00:18::/64", "gateway6": "198.18.0.1"}, "spec.gateway6: Invalid value: \"198.18.0.1\": gateway6 must be an IPv6 address"),
    "gateway6 without subnet6": ({"gateway6": "fd00:18::1"}, "spec.subnet6: Required value: ips6 and gateway6 are IPv6 and need subnet6"),
    "ips6 outside": ({"subnet6": "fd00:18::/64", "ips6": ["fd00:19::1-fd00:19::9"]}, "spec.ips6: Invalid value: every address and range of ips6 must be inside subnet6"),
    "ips6 IPv4": ({"subnet6": "fd00:18::/64", "ips6": ["198.18.0.5"]}, "each entry of ips6 must be an IPv6 address or a range \"first-last\" of two"),
    "route6 gateway outside": ({"subnet6": "fd00:18::/64", "routes": [{"dst": "::/0", "gw": "fd00:19::1"}]},
                               "the gateway (gw) of every route must be inside the subnet of its family (subnet or subnet6)"),
    "route6 without subnet6": ({"routes": [{"dst": "::/0", "gw": "fd00:19::1"}]}, "the gateway (gw) of every route must be inside the subnet of its family"),
    "route of two families": ({"routes": [{"dst": "::/0", "gw": "198.18.0.1"}]}, "spec.routes[0]: Invalid value: gw must be of the family of dst"),
    "subnet host bits": ({"subnet": "198.18.0.5/24"}, "subnet must not have host bits set (198.18.0.0/24, not 198.18.0.5/24)"),
    "gateway outside": ({"gateway": "198.18.1.1"}, "spec.gateway: Invalid value: gateway must be a host address inside subnet"),
    "gateway is the network": ({"gateway": "198.18.0.0"}, "gateway must be a host address inside subnet"),
    "gateway not an address": ({"gateway": "gw.example"}, "spec.gateway: Invalid value: \"gw.example\": gateway must be an IPv4 address"),
    "range outside": ({"ips": ["198.18.1.10-198.18.1.20"]}, "spec.ips: Invalid value: every address and range of ips must be inside subnet"),
    "range ends outside": ({"ips": ["198.18.0.10-198.18.1.20"]}, "every address and range of ips must be inside subnet"),
    "address outside": ({"ips": ["198.18.9.9"]}, "every address and range of ips must be inside subnet"),
    "range half open": ({"ips": ["198.18.0.10-"]}, "spec.ips[0]: Invalid value: \"198.18.0.10-\": each entry of ips must be an IPv4 address or a range \"first-last\" of two"),
    "range of three": ({"ips": ["198.18.0.1-198.18.0.2-9"]}, "spec.ips[0]: Invalid value: \"198.18.0.1-198.18.0.2-9\": each entry of ips must be"),
    "ips twice": ({"ips": ["198.18.0.10", "198.18.0.10"]}, "spec.ips[1]: Duplicate value: \"198.18.0.10\""),
    "exclusion not parsed": ({"excludeIPs": ["198.18.0.0/33"]}, "spec.excludeIPs[0]: Invalid value: \"198.18.0.0/33\": each entry of excludeIPs must be an address, a range \"first-last\" or a network"),
    "route gateway outside": ({"routes": [{"dst": "0.0.0.0/0", "gw": "198.18.1.1"}]}, "spec.routes: Invalid value: the gateway (gw) of every route must be inside the subnet of its family"),
    "route destination": ({"routes": [{"dst": "default", "gw": "198.18.0.1"}]}, "spec.routes[0].dst: Invalid value: \"default\": dst must be a network such as 0.0.0.0/0 or ::/0"),
    "route without gw": ({"routes": [{"dst": "0.0.0.0/0"}]}, "spec.routes[0].gw: Required value"),
    "vlan too high": ({"vlan": 4095}, "spec.vlan: Invalid value: 4095: spec.vlan in body should be less than or equal to 4094"),
    "negative cooldown": ({"reuseCooldownSeconds": -1}, "spec.reuseCooldownSeconds in body should be greater than or equal to 0"),
    "In without values": ({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}},
                          "spec.namespaceSelector.matchExpressions[0]: Invalid value: In and NotIn need values; Exists and DoesNotExist take none"),
    "Exists with values": ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
                           "In and NotIn need values; Exists and DoesNotExist take none"),
    "unknown operator": ({"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}},
                         "spec.nodeSelector.matchExpressions[0].operator: Unsupported value: \"Has\""),
}


@pytest.mark.parametrize("changes,message", POOL_REFUSALS.values(), ids=POOL_REFUSALS.keys())
def test_each_pool_rule_refuses_with_its_message(objects, name, changes, message):
    bad = pool(name, with_spec(POOL_SPEC, **changes))
    assert message in refusal(lambda: objects.create_cluster_custom_object(GROUP, VERSION, "ippools", bad))


def test_a_pool_needs_a_subnet(objects, name):
    assert "spec: Required value: a pool needs subnet (IPv4), subnet6 (IPv6) or both" in refusal(
        lambda: objects.create_cluster_custom_object(GROUP, VERSION, "ippools", pool(name, {"default": True})))
    assert "spec.subnet: Required value: ips and gateway are IPv4 and need subnet" in refusal(
        lambda: objects.create_cluster_custom_object(GROUP, VERSION, "ippools",
                                                     pool(name, {"subnet6": "fd00:18::/64", "ips": ["198.18.0.1"]})))


DUAL_STACK_SPEC: dict[str, Any] = {
    "subnet": "198.18.0.0/24", "gateway": "198.18.0.1",
    "subnet6": "fd00:18::/64", "ips6": ["fd00:18::100-fd00:18::ffff:ffff:ffff:ffff", "fd00:18::5"], "gateway6": "fd00:18::1",
    "excludeIPs": ["198.18.0.150", "fd00:18::150", "fd00:18::160-fd00:18::169", "fd00:18::200/120"],
    "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}, {"dst": "::/0", "gw": "fd00:18::1"},
               {"dst": "fd00:19::/48", "gw": "fd00:18::2"}],
}


def test_dual_stack_and_ipv6_only_pools_come_back_as_written(objects, name):
    created = objects.create_cluster_custom_object(GROUP, VERSION, "ippools", pool(name, DUAL_STACK_SPEC))
    assert created["spec"] == DUAL_STACK_SPEC
    objects.delete_cluster_custom_object(GROUP, VERSION, "ippools", name)
    only6 = {"subnet6": "fd00:18::/64", "gateway6": "fd00:18::1", "routes": [{"dst": "::/0", "gw": "fd00:18::1"}]}
    assert objects.create_cluster_custom_object(GROUP, VERSION, "ippools", pool(name, only6))["spec"] == only6


def test_an_ipv6_allocation_is_named_for_its_address(objects):
    spec = with_spec(ALLOCATION_SPEC, address="fd00:18::5", interfaceAddresses=["198.18.0.5", "fd00:18::5"])
    obj_name = name_for("fd00:18::5")
    try:
        created = objects.create_cluster_custom_object(GROUP, VERSION, "ipallocations", allocation(obj_name, spec))
        assert (created["metadata"]["name"], created["spec"]) == ("fd00-18--5", spec)
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, "ipallocations", obj_name)


ALLOCATION_REFUSALS = {
    "address not an address": ({"address": "198.18.0.256"}, "spec.address: Invalid value: \"198.18.0.256\": address must be an IP address in canonical form, such as 198.18.0.5 or fd00:18::5"),
    "address IPv6 not canonical": ({"address": "fd00:0::5"}, "address must be an IP address in canonical form"),
    "interface addresses": ({"interfaceAddresses": ["198.18.0.5", "x"]}, "spec.interfaceAddresses[1]: Invalid value: \"x\": each entry of interfaceAddresses must be an IP address"),
    "no pool": ({"pool": None}, "spec.pool: Required value"),
    "mac": ({"mac": "02:55:c6:12:00"}, "spec.mac in body should match"),
    "mode": ({"mode": "bridge"}, "spec.mode: Unsupported value: \"bridge\""),
    "pod without name": ({"pod": {"namespace": "default"}}, "spec.pod.name: Required value"),
}


@pytest.mark.parametrize("changes,message", ALLOCATION_REFUSALS.values(), ids=ALLOCATION_REFUSALS.keys())
def test_each_allocation_rule_refuses_with_its_message(objects, name, changes, message):
    bad = allocation(name, with_spec(ALLOCATION_SPEC, **changes))
    assert message in refusal(lambda: objects.create_cluster_custom_object(GROUP, VERSION, "ipallocations", bad))


def test_an_allocations_address_never_changes(objects, name):
    objects.create_cluster_custom_object(GROUP, VERSION, "ipallocations", allocation(name, ALLOCATION_SPEC))
    message = refusal(lambda: objects.patch_cluster_custom_object(
        GROUP, VERSION, "ipallocations", name, {"spec": {"address": "198.18.0.101"}}))
    assert "spec.address: Invalid value: \"198.18.0.101\": address is immutable (an IPAllocation is one address)" in message
    objects.patch_cluster_custom_object(GROUP, VERSION, "ipallocations", name, {"spec": {"node": "node2"}})


def test_a_reserved_address_needs_its_sticky_key(objects, name):
    objects.create_cluster_custom_object(GROUP, VERSION, "ipallocations",
                                         allocation(name, with_spec(ALLOCATION_SPEC, stickyKey=None)))
    message = refusal(lambda: objects.patch_cluster_custom_object_status(
        GROUP, VERSION, "ipallocations", name, {"status": {"phase": "Reserved"}}))
    assert "a Reserved address is kept for a StatefulSet pod, so spec.stickyKey must be set" in message
    objects.patch_cluster_custom_object_status(GROUP, VERSION, "ipallocations", name, {"status": {"phase": "Cooldown"}})


def test_status_is_written_only_through_the_subresource(objects, name):
    created = objects.create_cluster_custom_object(GROUP, VERSION, "ippools", {
        **pool(name, {"subnet": "198.18.0.0/24"}), "status": {"total": 9}})
    assert "status" not in created, "a create kept its status"
    status = {"total": 253, "allocated": 2, "cooldown": 1, "conditions": [{
        "type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 1}]}
    written = objects.patch_cluster_custom_object_status(GROUP, VERSION, "ippools", name,
                                                         {"status": status, "spec": {"subnet": "198.18.8.0/24"}})
    assert written["status"] == status
    assert written["spec"]["subnet"] == "198.18.0.0/24", "the status subresource changed the spec"
    updated = objects.patch_cluster_custom_object(GROUP, VERSION, "ippools", name,
                                                  {"status": {"total": 1}, "spec": {"default": True}})
    assert updated["status"] == status, "the main resource changed the status"
    assert updated["spec"]["default"] is True and updated["metadata"]["generation"] == 2


def table(k8s, plural: str, name: str) -> dict[str, Any]:
    found = get_json(k8s, f"/apis/{GROUP}/{VERSION}/{plural}?fieldSelector=metadata.name%3D{name}", accept=TABLE)
    assert found["kind"] == "Table"
    columns = [column["name"] for column in found["columnDefinitions"]]
    (row,) = found["rows"]
    return dict(zip(columns, row["cells"]))


def test_kubectl_get_ippools_shows_subnet_allocated_total_ready_and_age(k8s, objects, name):
    objects.create_cluster_custom_object(GROUP, VERSION, "ippools", pool(name, POOL_SPEC))
    objects.patch_cluster_custom_object_status(GROUP, VERSION, "ippools", name, {"status": {
        "total": 89, "allocated": 7, "cooldown": 0, "conditions": [{
            "type": "Ready", "status": "False", "reason": "OverlapsPool", "message": "overlaps pool a",
            "lastTransitionTime": "2026-01-02T03:04:05Z"}]}})
    row = table(k8s, "ippools", name)
    assert list(row) == ["Name", "Subnet", "Subnet6", "Allocated", "Total", "Ready", "Age", "Default", "VLAN", "Reason"]
    assert {k: row[k] for k in ("Name", "Subnet", "Allocated", "Total", "Ready", "Default", "VLAN", "Reason")} == {
        "Name": name, "Subnet": "198.18.0.0/24", "Allocated": 7, "Total": 89, "Ready": "False", "Default": False,
        "VLAN": 100, "Reason": "OverlapsPool"}
    assert row["Age"].endswith("s")


def test_kubectl_get_ipallocations_shows_address_pool_pod_node_and_phase(k8s, objects, name):
    objects.create_cluster_custom_object(GROUP, VERSION, "ipallocations", allocation(name, ALLOCATION_SPEC))
    objects.patch_cluster_custom_object_status(GROUP, VERSION, "ipallocations", name, {"status": {"phase": "Bound"}})
    row = table(k8s, "ipallocations", name)
    assert row == {"Name": name, "Address": "198.18.0.100", "Pool": "default", "Namespace": "default", "Pod": "web-0",
                   "Node": "node1", "Phase": "Bound", "Age": row["Age"], "MAC": "02:55:c6:12:00:64",
                   "Sticky": ALLOCATION_SPEC["stickyKey"]}
