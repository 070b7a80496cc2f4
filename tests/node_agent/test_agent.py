"""The agent's pure steps for dual stack: what a request asks for, what goes to the controller,
how its answer (or a delegated IPAM result) becomes a lease, and the CNI result."""

from __future__ import annotations

import pytest

from cni.spec import INVALID_CONFIG, CniError
from node_agent.agent import address_fields, cni_result, lease_from_controller, lease_from_ipam, requested_addresses
from node_agent.netlink import Route
from node_agent.state import Attachment


def request(args: dict | None = None, runtime: dict | None = None) -> dict:
    return {"args": args or {}, "config": {"runtimeConfig": runtime} if runtime else {}}


@pytest.mark.parametrize("req, ips", [
    (request({"IP": "198.18.0.5,FD00:18:0::5"}), ["198.18.0.5", "fd00:18::5"]),
    (request({"IP": "fd00:18::5, 198.18.0.5"}), ["198.18.0.5", "fd00:18::5"]),
    (request(runtime={"ips": ["fd00:18::5/64", "198.18.0.5/24"]}), ["198.18.0.5", "fd00:18::5"]),
    (request({"IP": "fd00:18::5"}, {"ips": ["198.18.0.9/24"]}), ["fd00:18::5"]),  # CNI_ARGS win, as for IPv4
    (request(), []),
])
def test_requested_addresses_one_per_family_ipv4_first(req: dict, ips: list[str]) -> None:
    assert requested_addresses("default/web-0", req)[0] == ips


@pytest.mark.parametrize("req, message", [
    (request({"IP": "198.18.0.5,198.18.0.6"}), "pod default/web-0: requested IPs 198.18.0.5 and 198.18.0.6 are both IPv4"),
    (request(runtime={"ips": ["fd00::5", "fd00::6"]}), "pod default/web-0: requested IPs fd00::5 and fd00::6 are both IPv6"),
    (request({"IP": "198.18.0.5,nope"}), "pod default/web-0: requested IP 'nope' is not an address"),
])
def test_requested_addresses_refused_with_the_reason(req: dict, message: str) -> None:
    with pytest.raises(CniError) as refused:
        requested_addresses("default/web-0", req)
    assert (refused.value.code, refused.value.msg) == (INVALID_CONFIG, message)


def test_the_request_names_ips_only_when_an_ipv6_address_is_asked_for() -> None:
    assert address_fields([]) == {"ip": None}
    assert address_fields(["198.18.0.5"]) == {"ip": "198.18.0.5"}
    assert address_fields(["198.18.0.5", "fd00::5"]) == {"ip": "198.18.0.5", "ips": ["198.18.0.5", "fd00::5"]}


ANSWER = {"ip": "198.18.0.5", "prefix": 24, "gateway": "198.18.0.1", "mac": "02:00:00:00:00:05",
          "ips": [{"address": "198.18.0.5/24", "gateway": "198.18.0.1", "family": 4},
                  {"address": "fd00:18::5/64", "gateway": None, "family": 6}],
          "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}, {"dst": "::/0", "gw": "fd00:18::1"}]}


def test_a_dual_stack_answer_becomes_both_ips_of_the_cni_result() -> None:
    lease = lease_from_controller(ANSWER)
    attachment = Attachment(container_id="c", ifname="eth0", netns="/run/netns/p", ip="198.18.0.5", prefix=24,
                            mac="02:00:00:00:00:05", mode="macvlan", ip6="fd00:18::5")

    result = cni_result(attachment, lease)

    assert (lease.family(4).gateway, lease.family(6).gateway) == ("198.18.0.1", None)  # type: ignore[union-attr]
    assert result["ips"] == [{"address": "198.18.0.5/24", "interface": 0, "gateway": "198.18.0.1"},
                             {"address": "fd00:18::5/64", "interface": 0}]
    assert result["routes"] == ANSWER["routes"]
    assert attachment.ips == ("198.18.0.5", "fd00:18::5")


def test_an_old_controllers_answer_is_one_ipv4_address() -> None:
    old = {k: v for k, v in ANSWER.items() if k != "ips"}
    assert [a.cidr for a in lease_from_controller(old).addresses] == ["198.18.0.5/24"]


def test_a_delegated_ipam_result_gives_each_family_and_its_own_gateway_to_routes() -> None:
    result = {"ips": [{"address": "fd00:6::100/64", "gateway": "fd00:6::1"}, {"address": "fd00:6::101/64"},
                      {"address": "198.18.6.10/24", "gateway": "198.18.6.1"}],
              "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}

    lease = lease_from_ipam("p", result, "02:00:00:00:00:01")

    assert [a.cidr for a in lease.addresses] == ["198.18.6.10/24", "fd00:6::100/64"]
    assert lease.routes == (Route("0.0.0.0/0", "198.18.6.1"), Route("::/0", "fd00:6::1"))
