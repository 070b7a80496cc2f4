"""Our plugin first in a conflist, Debian's reference `tuning` and `portmap` after it.

Driven by the lab's libcni-style runner (`deploy.lab.runtime.run_chain`): ADD through the plugins in
order with prevResult and the runtimeConfig each declares a capability for, CHECK in order and DEL
in reverse with the cached result. Debian's plugins speak up to 1.0.0.
"""

from __future__ import annotations

import pytest

from deploy.lab import netns as lab_netns
from deploy.lab.runtime import Attachment, run_chain
from underlay_testbed import links_in, ns_of

pytestmark = pytest.mark.rig
RUNTIME = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
           "mac": "0a:00:00:00:02:01"}


def conflist(node, version: str) -> dict:
    ours = {k: v for k, v in node.conf(version).items() if k not in ("cniVersion", "name")}
    return {"cniVersion": version, "name": "underlay", "plugins": [
        dict(ours, capabilities={"mac": True, "ips": True}),
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
    ]}


def without(chain: dict, kind: str) -> dict:
    return dict(chain, plugins=[p for p in chain["plugins"] if p["type"] != kind])


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_chain_with_reference_plugins(version, make_node, pods, segment):
    node = make_node("n1")
    pod = pods.make("chained")
    chain = conflist(node, version)
    attachment = Attachment(container_id="chained", netns_path=pod, runtime_config=RUNTIME)

    def run(command: str, chain: dict, prev: dict | None = None) -> dict | None:
        return run_chain(chain, command, attachment, cni_path=[node.bin_dir], node_ns=node.host.netns,
                         prev_result=prev)

    result = run("ADD", chain)

    assert result["cniVersion"] == version
    assert result["interfaces"][0] == {"name": "eth0", "mac": "0a:00:00:00:02:01", "sandbox": pod}
    assert result["ips"][0]["address"].startswith("198.18.5.")
    assert lab_netns.run(ns_of(pod), ["sysctl", "-n", "net.ipv4.conf.eth0.arp_filter"]).stdout.strip() == "1"
    nat = lab_netns.run(node.host.netns, ["iptables-save", "-t", "nat"]).stdout
    assert "18080" in nat, "portmap put its DNAT rule in the node's namespace"

    # Debian's portmap CHECK fails on an IPv4-only result ("could not check ipv6 dnat: chain ... not
    # found"): it looks for an IPv6 chain its ADD never made. Not ours to check.
    run("CHECK", without(chain, "portmap"), result)
    run("DEL", chain, result)

    assert links_in(ns_of(pod)) == ["lo"]
    assert segment.allocations("n1") == {}
    assert "18080" not in lab_netns.run(node.host.netns, ["iptables-save", "-t", "nat"]).stdout


def test_our_result_is_appended_to_a_previous_plugins(make_node, pods):
    """Chained after another interface plugin, our interface and address come after its."""
    node = make_node("n1")
    pod = pods.make("second")
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "net0", "sandbox": pod}],
            "ips": [{"address": "198.19.0.5/24", "interface": 0}], "dns": {"nameservers": ["198.19.0.1"]}}

    call = node.cni("ADD", node.conf("1.0.0", prevResult=prev), container_id="c1", netns=pod)

    assert call.returncode == 0, call.stdout
    assert [i["name"] for i in call.json["interfaces"]] == ["net0", "eth0"]
    assert call.json["ips"][1]["interface"] == 1
    assert call.json["dns"] == {"nameservers": ["198.19.0.1"]}
