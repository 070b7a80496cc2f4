"""Our plugin first in a conflist, Debian's reference `tuning` and `portmap` after it.

Driven the way libcni drives a chain: ADD through the plugins in order, each getting the previous
result as prevResult and runtimeConfig for the capabilities it declares; CHECK in order with the
final result; DEL in reverse order with the final result. Debian's plugins speak up to 1.0.0.
"""

from __future__ import annotations

import pytest

from deploy.lab import netns as lab_netns
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


def plugin_config(chain: dict, plugin: dict, prev: dict | None) -> dict:
    """What libcni puts on a plugin's stdin: the chain's name and version, its own keys, and more."""
    config = {"cniVersion": chain["cniVersion"], "name": chain["name"], **plugin}
    wanted = {k: v for k, v in RUNTIME.items() if plugin.get("capabilities", {}).get(k)}
    if wanted:
        config["runtimeConfig"] = wanted
    if prev is not None:
        config["prevResult"] = prev
    return config


def run_chain(node, chain: dict, command: str, *, pod: str, prev: dict | None = None,
              skip: tuple[str, ...] = ()) -> dict | None:
    plugins = [p for p in chain["plugins"] if p["type"] not in skip]
    plugins = plugins if command != "DEL" else list(reversed(plugins))
    result = prev
    for plugin in plugins:
        call = node.cni(command, plugin_config(chain, plugin, result if command == "ADD" else prev),
                        container_id="chained", netns=pod, plugin=plugin["type"])
        assert call.returncode == 0, f"{command} {plugin['type']}: {call.stdout} {call.stderr}"
        if command == "ADD":
            result = call.json
    return result


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_chain_with_reference_plugins(version, make_node, pods, controller):
    node = make_node("n1")
    pod = pods.make("chained")
    chain = conflist(node, version)

    result = run_chain(node, chain, "ADD", pod=pod)

    assert result["cniVersion"] == version
    assert result["interfaces"][0] == {"name": "eth0", "mac": "0a:00:00:00:02:01", "sandbox": pod}
    assert result["ips"][0]["address"].startswith("198.18.5.")
    assert lab_netns.run(ns_of(pod), ["sysctl", "-n", "net.ipv4.conf.eth0.arp_filter"]).stdout.strip() == "1"
    nat = lab_netns.run(node.host.netns, ["iptables-save", "-t", "nat"]).stdout
    assert "18080" in nat, "portmap put its DNAT rule in the node's namespace"

    # Debian's portmap CHECK fails on an IPv4-only result ("could not check ipv6 dnat: chain ... not
    # found"): it looks for an IPv6 chain its ADD never made. Not ours to check.
    run_chain(node, chain, "CHECK", pod=pod, prev=result, skip=("portmap",))
    run_chain(node, chain, "DEL", pod=pod, prev=result)

    assert links_in(ns_of(pod)) == ["lo"]
    assert controller.allocations("n1") == {}
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
