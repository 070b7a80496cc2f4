"""The one-machine test rig: a private Open vSwitch and hosts cabled to it, all uniquely named.

Every rig has a short random prefix. Its namespaces are `<prefix>-<name>`, its switch-side veth
ends `<prefix><n>` (interface names are at most 15 characters), its files live in
`/run/underlay-rig/<prefix>`, where `owner` holds the pid of the process that made it. A rig whose
owner is dead is a leftover: `sweep_stale()` removes it, so an interrupted run is cleaned by the next.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deploy.lab import netns
from deploy.lab.ovs import PrivateOvs
from deploy.lab.process import stop_pidfile

STATE_ROOT = Path("/run/underlay-rig")
PERSISTENT = "persistent"  # owner of a rig that outlives its maker (the lab): kept until destroyed
REQUIRED_TOOLS = ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ip", "ping", "arping")


class MissingPrerequisite(RuntimeError):
    """The machine lacks something the rig needs; the message says what and how to get it."""


def check_prerequisites(tools: tuple[str, ...] = REQUIRED_TOOLS) -> None:
    if os.geteuid() != 0:
        raise MissingPrerequisite("the rig needs root (network namespaces, Open vSwitch): run as root or with sudo")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise MissingPrerequisite(
            f"missing {', '.join(missing)}: run `make setup` (apt packages openvswitch-switch, iproute2, "
            "iputils-ping, iputils-arping)"
        )


@dataclass(frozen=True)
class Host:
    """A network namespace on the segment: `ifname` inside it is cabled to `ofport` of `bridge`."""

    name: str
    netns: str
    ifname: str
    mac: str
    ip: str | None
    bridge: str
    ofport: int
    switch_ifname: str

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return netns.run(self.netns, argv, check=check, timeout=timeout)

    def enable_ipv6(self, cidr: str) -> None:
        """IPv6 on this host's interface (namespaces are made with it off), with `cidr` on it, no DAD."""
        for scope in ("all", self.ifname):
            netns.set_sysctl(self.netns, f"net.ipv6.conf.{scope}.disable_ipv6", "0")
        self.run("ip", "-6", "addr", "add", cidr, "dev", self.ifname, "nodad")

    def ping(self, address: str, *, count: int = 1, timeout: float = 2) -> bool:
        proc = self.run("ping", "-n", "-c", str(count), "-W", str(timeout), address, check=False,
                        timeout=count * timeout + 5)
        return proc.returncode == 0


@dataclass
class Rig:
    prefix: str = field(default_factory=lambda: "u" + secrets.token_hex(2))
    state_root: Path = STATE_ROOT
    hosts: dict[str, Host] = field(default_factory=dict)
    _next_ofport: int = 1
    _next_dpid: int = 1

    def __post_init__(self) -> None:
        self.workdir = self.state_root / self.prefix
        self.mgmt_ns = f"{self.prefix}-mgmt"
        self.ovs = PrivateOvs(self.workdir / "ovs", self.mgmt_ns)

    # lifecycle -----------------------------------------------------------------------------
    def start(self, *, persistent: bool = False) -> Rig:
        check_prerequisites()
        sweep_stale(self.state_root)
        self.workdir.mkdir(parents=True)
        (self.workdir / "owner").write_text(PERSISTENT if persistent else str(os.getpid()))
        try:
            netns.create(self.mgmt_ns)
            self.ovs.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove everything this rig made; safe to call twice and on a half-started rig."""
        destroy(self.prefix, self.state_root)
        self.hosts.clear()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # building ------------------------------------------------------------------------------
    def add_bridge(self, name: str | None = None, *, controller: str | None = None) -> str:
        name = name or f"{self.prefix}br{self._next_dpid}"
        self.ovs.add_bridge(name, self._next_dpid, controller=controller)
        self._next_dpid += 1
        return name

    def add_host(self, name: str, bridge: str, *, cidr: str | None = None, mac: str | None = None,
                 ifname: str = "eth0") -> Host:
        """A new namespace `<prefix>-<name>` whose `ifname` is a cable to a new port of `bridge`."""
        ns = f"{self.prefix}-{name}"
        ofport = self._take_ofport()
        switch_end = f"{self.prefix}p{ofport}"
        netns.create(ns)
        netns.add_veth(ns_a=self.mgmt_ns, name_a=switch_end, ns_b=ns, name_b=f"{self.prefix}h{ofport}",
                       final_b=ifname)
        host_mac = netns.configure(ns, ifname, cidr=cidr, mac=mac)
        netns.tx_checksum_off(ns, ifname)  # else TCP and UDP through the userspace datapath arrive corrupt
        self.ovs.add_port(bridge, switch_end, ofport)
        host = Host(name=name, netns=ns, ifname=ifname, mac=host_mac, ip=cidr.split("/")[0] if cidr else None,
                    bridge=bridge, ofport=ofport, switch_ifname=switch_end)
        self.hosts[name] = host
        return host

    def add_tap(self, bridge: str) -> tuple[str, int]:
        """A tap in the management namespace on a new port of `bridge`: a User-Mode Linux instance
        started in that namespace (`UmlInstance(taps=..., netns=rig.mgmt_ns)`) is cabled there."""
        ofport = self._take_ofport()
        tap = self.tap_name(ofport)
        netns.add_tap(self.mgmt_ns, tap)
        self.ovs.add_port(bridge, tap, ofport)
        return tap, ofport

    def tap_name(self, ofport: int) -> str:
        return f"{self.prefix}t{ofport}"

    def add_mgmt_address(self, bridge: str, cidr: str) -> int:
        """Give the management namespace itself an address on `bridge`'s segment (a veth pair whose
        one end is a new port); daemons there (the controller) then listen on the segment."""
        ofport = self._take_ofport()
        inside = f"{self.prefix}a{ofport}"
        netns.add_veth(ns_a=self.mgmt_ns, name_a=f"{self.prefix}p{ofport}", ns_b=self.mgmt_ns, name_b=inside)
        netns.configure(self.mgmt_ns, inside, cidr=cidr)
        netns.tx_checksum_off(self.mgmt_ns, inside)  # as add_host's cables
        self.ovs.add_port(bridge, f"{self.prefix}p{ofport}", ofport)
        return ofport

    def skip_ofports(self, below: int) -> None:
        """Hand out no port number under `below` from now on: those are numbered by the caller (the
        lab's inter-switch cables, deploy/lab/fabric.py), on every bridge."""
        self._next_ofport = max(self._next_ofport, below)

    def _take_ofport(self) -> int:
        ofport = self._next_ofport
        self._next_ofport += 1
        return ofport

    def add_macvlan_pod(self, name: str, host: Host, *, cidr: str, mac: str | None = None) -> Host:
        """A namespace `<prefix>-<name>` with a macvlan child of `host`'s uplink (a pod, made by hand)."""
        ns = f"{self.prefix}-{name}"
        netns.create(ns)
        temporary = f"{self.prefix}m{len(self.hosts)}"
        netns.add_macvlan(host.netns, host.ifname, name=temporary, into=ns, final="eth0")
        pod_mac = netns.configure(ns, "eth0", cidr=cidr, mac=mac)
        pod = Host(name=name, netns=ns, ifname="eth0", mac=pod_mac, ip=cidr.split("/")[0], bridge=host.bridge,
                   ofport=host.ofport, switch_ifname=host.switch_ifname)
        self.hosts[name] = pod
        return pod


def destroy(prefix: str, state_root: Path = STATE_ROOT) -> None:
    """Stop a rig's daemons, delete its namespaces (and so its veths) and its files."""
    workdir = state_root / prefix
    for pidfile in sorted(workdir.glob("**/*.pid")) if workdir.exists() else []:
        # ovs-vswitchd first: its pidfile sorts before ovsdb-server's; others (agents, controller) too
        stop_pidfile(pidfile)
    for ns in netns.list_names(f"{prefix}-"):
        netns.remove(ns)
    shutil.rmtree(workdir, ignore_errors=True)


def sweep_stale(state_root: Path = STATE_ROOT) -> list[str]:
    """Destroy every rig whose owner process is gone; return their prefixes."""
    swept = []
    for workdir in sorted(state_root.glob("*")) if state_root.exists() else []:
        if not _owner_alive(workdir / "owner"):
            destroy(workdir.name, state_root)
            swept.append(workdir.name)
    return swept


def _owner_alive(owner: Path) -> bool:
    try:
        text = owner.read_text()
        if text == PERSISTENT:
            return True
        pid = int(text)
    except (FileNotFoundError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()
