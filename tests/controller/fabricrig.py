"""A fabric of real switches for tests and benchmarks: three bridges of the rig's Open vSwitch,
joined by veth pairs (in the rig's management namespace) as the config's `[[links]]` say, optionally
hosts on trusted ports, and the real controller (switch names and links added to its config)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from deploy.lab import netns
from deploy.lab.control import Controller, NodeSpec, PoolSpec
from deploy.lab.rig import Host, Rig

# link ports: 101.. on each bridge (the rig numbers host ports from 1, one counter for all bridges)
TRIANGLE = (("a", 101, "b", 101), ("b", 102, "c", 101), ("a", 102, "c", 102))


@dataclass
class Fabric:
    rig: Rig
    bridges: dict[str, str]  # name -> bridge
    dpids: dict[str, int]
    cables: dict[tuple[str, int], str]  # (switch, port) -> the veth end in that bridge
    controller: Controller
    hosts: dict[str, Host] = field(default_factory=dict)  # on trusted ports, by switch name

    def topology(self) -> dict[str, Any]:
        return self.controller.request("GET", "/v1/topology", token=self.controller.operator_token)

    def link(self, a: str, b: str) -> dict[str, Any]:
        """The link between switches `a` and `b` as GET /v1/topology shows it."""
        dpids = {f"{self.dpids[a]:#x}", f"{self.dpids[b]:#x}"}
        found: list[dict[str, Any]] = [link for link in self.topology()["links"]
                                       if {link["a"].split(":")[0], link["b"].split(":")[0]} == dpids]
        assert len(found) == 1, found
        return found[0]

    def set_cable(self, switch: str, port: int, state: str) -> None:
        netns.run(self.rig.mgmt_ns, ["ip", "link", "set", self.cables[switch, port], state])

    def flows(self, switch: str) -> str:
        return self.rig.ovs.ofctl("dump-flows", self.bridges[switch])


def wait_for(probe: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last: {value!r})")
        time.sleep(0.02)


def cable(rig: Rig, a: str, b: str) -> tuple[str, str]:
    """A veth pair in the rig's management namespace, both ends up; named uniquely."""
    cable.count += 1  # type: ignore[attr-defined]
    ends = (f"{rig.prefix}k{cable.count}a", f"{rig.prefix}k{cable.count}b")  # type: ignore[attr-defined]
    netns.add_veth(ns_a=rig.mgmt_ns, name_a=ends[0], ns_b=rig.mgmt_ns, name_b=ends[1])
    for end in ends:
        netns.tx_checksum_off(rig.mgmt_ns, end)
    return ends


cable.count = 0  # type: ignore[attr-defined]


def build(rig: Rig, workdir_name: str, *, wiring: tuple[tuple[str, int, str, int], ...] = TRIANGLE,
          configured: tuple[tuple[str, int, str, int], ...] = TRIANGLE, hosts: tuple[str, ...] = ()
          ) -> Generator[Fabric, None, None]:
    """The fabric, until the generator is closed; `hosts` names the switches that get a host
    (198.18.0.<n>/24) on a trusted port."""
    bridges = {name: rig.add_bridge() for name in "abc"}
    dpids = {name: int(rig.ovs.vsctl("get", "bridge", br, "other-config:datapath-id").strip().strip('"'), 16)
             for name, br in bridges.items()}
    cables: dict[tuple[str, int], str] = {}
    made = {name: rig.add_host(f"fh{name}", bridges[name], cidr=f"198.18.0.{10 + i}/24")
            for i, name in enumerate(hosts)}
    controller = Controller(workdir=rig.workdir / workdir_name, ns=rig.mgmt_ns, nodes={"n1": NodeSpec("n1")},
                            trusted={dpid: tuple(h.ofport for n, h in made.items() if n == name)
                                     for name, dpid in dpids.items()},
                            pool=PoolSpec("198.18.0.0/24", ranges=("198.18.0.100-198.18.0.199",)))
    try:
        for a, port_a, b, port_b in wiring:
            end_a, end_b = cable(rig, a, b)
            rig.ovs.add_port(bridges[a], end_a, port_a)
            rig.ovs.add_port(bridges[b], end_b, port_b)
            cables[a, port_a], cables[b, port_b] = end_a, end_b
        controller.write_config()
        text = controller.config_path.read_text()
        for name, dpid in dpids.items():
            text = text.replace(f'[switches."{dpid}"]\n', f'[switches."{dpid}"]\nname = "{name}"\n')
        text += "".join(f'[[links]]\na = "{dpids[a]}:{pa}"\nb = "{dpids[b]}:{pb}"\n' for a, pa, b, pb in configured)
        controller.config_path.write_text(text)
        controller.start()
        for br in bridges.values():
            rig.ovs.vsctl("set-controller", br, f"tcp:127.0.0.1:{controller.openflow_port}")
        controller.wait_healthy(timeout=20, switches=3)
        yield Fabric(rig, bridges, dpids, cables, controller, made)
    finally:
        controller.stop()
        for host in made.values():
            netns.remove(host.netns)
            rig.hosts.pop(host.name, None)
        for br in bridges.values():
            rig.ovs.vsctl("--if-exists", "del-br", br)
        for end in cables.values():
            netns.run(rig.mgmt_ns, ["ip", "link", "del", end], check=False)


def packets(flow: str) -> int:
    found = re.search(r"n_packets=(\d+)", flow)
    assert found is not None, flow
    return int(found.group(1))


def all_up(fabric: Fabric) -> bool:
    return all(link["state"] == "up" for link in fabric.topology()["links"])
