"""CNI spec conformance of the plugin binary, executed exactly as a runtime does (env + stdin).

Every verb in every supported spec version against a real agent, and every error code with a
malformed input, checking the exact stdout JSON and the exit status.
"""

from __future__ import annotations

import json

import pytest

from cni.spec import IFNAME_RULE, SUPPORTED_VERSIONS
from underlay_testbed import FIRST_POD_IP

pytestmark = pytest.mark.rig
K8S = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u1"


def error(code: int, msg: str, details: str = "", version: str = "1.1.0") -> dict:
    return {"cniVersion": version, "code": code, "msg": msg, "details": details}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_version_is_answered_without_an_agent(version, cni_bin):
    from underlay_testbed import run_plugin

    call = run_plugin(cni_bin / "underlay", "VERSION", {"cniVersion": version}, node_ns=None, container_id="",
                      netns="", ifname="", args="", bin_dir=cni_bin)

    # as the reference plugins answer: the latest version, whatever the config asks
    assert (call.returncode, call.json) == (0, {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)})
    assert call.stderr == ""


@pytest.mark.parametrize("plugin", ["underlay", "underlay.py"], ids=["native forwarder", "python plugin"])
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_verb(version, plugin, make_node, pods, segment):
    """Both ways a node may run us: the native forwarder, or the Python plugin alone (no compiler)."""
    node = make_node("n1")
    pod = pods.make("v" + version.replace(".", "") + ("p" if plugin.endswith(".py") else "n"))
    conf = node.conf(version)

    add = node.cni("ADD", conf, container_id="c1", netns=pod, args=K8S, plugin=plugin)

    assert add.returncode == 0, add.stdout
    result = add.json
    assert result["cniVersion"] == version
    assert result["interfaces"] == [{"name": "eth0", "mac": result["interfaces"][0]["mac"], "sandbox": pod}]
    ip = {"address": f"{FIRST_POD_IP}/24", "interface": 0}
    assert result["ips"] == [dict(ip, version="4") if version == "0.4.0" else ip]

    check = node.cni("CHECK", dict(conf, prevResult=result), container_id="c1", netns=pod, args=K8S,
                     plugin=plugin)
    assert (check.returncode, check.json) == (0, {}), check.stdout

    if version == "1.1.0":
        assert node.cni("STATUS", conf, plugin=plugin).returncode == 0
        gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})
        assert node.cni("GC", gc, plugin=plugin).returncode == 0
        assert ("c1", "eth0") in segment.allocations("n1"), "GC must keep a valid attachment"

    for _ in range(2):  # DEL is idempotent
        delete = node.cni("DEL", dict(conf, prevResult=result), container_id="c1", netns=pod, args=K8S,
                          plugin=plugin)
        assert (delete.returncode, delete.stdout) == (0, "")
    assert segment.allocations("n1") == {}


def test_gc_releases_what_is_not_valid(make_node, pods, segment):
    from underlay_testbed import links_in, ns_of

    node = make_node("n1")
    conf = node.conf()
    paths = {cid: pods.make(cid) for cid in ("keep", "drop")}
    for cid, path in paths.items():
        assert node.cni("ADD", conf, container_id=cid, netns=path).returncode == 0

    gc = node.cni("GC", dict(conf, **{"cni.dev/attachments": [{"containerID": "keep", "ifname": "eth0"}]}))

    assert gc.returncode == 0, gc.stdout
    assert set(segment.allocations("n1")) == {("keep", "eth0")}
    assert "eth0" not in links_in(ns_of(paths["drop"]))
    assert "eth0" in links_in(ns_of(paths["keep"]))


def _decode_error(raw: bytes) -> str:
    try:
        json.loads(raw)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("not malformed")


BASE = {"cniVersion": "1.0.0", "name": "underlay", "type": "underlay", "agentSocket": "/nonexistent/agent.sock"}
ENV_ADD = {"command": "ADD", "container_id": "c1", "netns": "/proc/self/ns/net", "ifname": "eth0"}
NO_AGENT_CASES = {
    "bad json": (ENV_ADD, b'{"cniVersion": ', error(6, "failed to decode the network configuration",
                                                      _decode_error(b'{"cniVersion": '))),
    "config not an object": (ENV_ADD, b"[]", error(6, "the network configuration must be a JSON object")),
    "wrong version": (ENV_ADD, dict(BASE, cniVersion="0.3.1"),
                      error(1, "unsupported cniVersion '0.3.1'", "supported: 0.4.0, 1.0.0, 1.1.0")),
    "missing version": (ENV_ADD, {k: v for k, v in BASE.items() if k != "cniVersion"},
                        error(1, "unsupported cniVersion None", "supported: 0.4.0, 1.0.0, 1.1.0")),
    "missing command": (dict(ENV_ADD, command=""), BASE,
                        error(4, "unknown CNI_COMMAND ''", "expected one of ADD, DEL, CHECK, STATUS, GC, VERSION",
                              "1.0.0")),
    "missing container id": (dict(ENV_ADD, container_id=""), BASE,
                             error(4, "required environment variable CNI_CONTAINERID is missing", "", "1.0.0")),
    "missing netns on ADD": (dict(ENV_ADD, netns=""), BASE,
                             error(4, "required environment variable CNI_NETNS is missing", "", "1.0.0")),
    "netns that does not exist": (dict(ENV_ADD, netns="/run/netns/no-such-pod"), BASE,
                                  error(4, "CNI_NETNS /run/netns/no-such-pod does not exist", "", "1.0.0")),
    "bad ifname": (dict(ENV_ADD, ifname="eth0:1"), BASE,
                   error(4, "invalid CNI_IFNAME 'eth0:1'", IFNAME_RULE, "1.0.0")),
    "unknown mode": (ENV_ADD, dict(BASE, mode="vxlan"),
                     error(7, "unknown mode 'vxlan'", "mode must be one of macvlan, ipvlan", "1.0.0")),
    "unknown macvlanMode": (ENV_ADD, dict(BASE, macvlanMode="hairpin"),
                            error(7, "unknown macvlanMode 'hairpin'",
                                  "macvlanMode must be one of bridge, private, vepa, passthru", "1.0.0")),
    "mtu not a number": (ENV_ADD, dict(BASE, mtu="9000"),
                         error(7, "invalid mtu '9000'", "mtu must be an integer from 68 to 65535", "1.0.0")),
    "unknown CNI_ARGS key": (dict(ENV_ADD, args="FOO=bar"), BASE,
                             error(2, "CNI_ARGS: unknown key FOO=bar", "set IgnoreUnknown=true to ignore unknown keys",
                                   "1.0.0")),
    "STATUS before 1.1.0": (dict(command="STATUS"), BASE,
                            error(1, "config version 1.0.0 does not allow STATUS", "STATUS and GC need cniVersion 1.1.0",
                                  "1.0.0")),
    "GC before 1.1.0": (dict(command="GC"), BASE,
                        error(1, "config version 1.0.0 does not allow GC", "STATUS and GC need cniVersion 1.1.0",
                              "1.0.0")),
    "agent down on ADD": (ENV_ADD, BASE, error(11, "node agent not reachable at /nonexistent/agent.sock",
                                               "No such file or directory", "1.0.0")),
    "agent down on DEL": (dict(ENV_ADD, command="DEL"), BASE,
                          error(11, "node agent not reachable at /nonexistent/agent.sock", "No such file or directory",
                                "1.0.0")),
    "agent down on STATUS": (dict(command="STATUS"), dict(BASE, cniVersion="1.1.0"),
                             error(50, "node agent not reachable at /nonexistent/agent.sock",
                                   "No such file or directory")),
}


@pytest.mark.parametrize("env,stdin,expected", NO_AGENT_CASES.values(), ids=NO_AGENT_CASES.keys())
def test_errors_without_agent(env, stdin, expected, cni_bin):
    from underlay_testbed import run_plugin

    call = run_plugin(cni_bin / "underlay", env["command"], stdin, node_ns=None,
                      container_id=env.get("container_id", ""), netns=env.get("netns", ""),
                      ifname=env.get("ifname", ""), args=env.get("args", ""), bin_dir=cni_bin)

    assert (call.returncode, call.json) == (1, expected)
    assert "Traceback" not in call.stdout + call.stderr


def test_errors_from_the_agent(make_node, pods):
    node = make_node("n1")
    pod = pods.make("p1")
    conf = node.conf("1.0.0")

    too_big = node.cni("ADD", dict(conf, mtu=9000), container_id="c1", netns=pod)
    assert (too_big.returncode, too_big.json) == (
        1, error(7, "pod container c1: mtu 9000 is above master eth0's 1500", "", "1.0.0"))

    no_master = node.cni("ADD", dict(conf, master="nosuch0"), container_id="c1", netns=pod)
    assert (no_master.returncode, no_master.json) == (1, error(
        7, f"pod container c1: failed to lookup master 'nosuch0' in netns {node.host.netns}: no such interface", "",
        "1.0.0"))

    unknown = node.cni("CHECK", dict(conf, prevResult={}), container_id="ghost", netns=pod)
    assert (unknown.returncode, unknown.json) == (
        1, error(3, "container ghost: no eth0 attachment known to this agent", "", "1.0.0"))

    assert node.cni("ADD", conf, container_id="c1", netns=pod).returncode == 0
    twice = node.cni("ADD", conf, container_id="c2", netns=pod)
    assert (twice.returncode, twice.json) == (
        1, error(102, f"pod container c2: interface eth0 already exists in netns {pod}", "", "1.0.0"))
