"""A private Open vSwitch: its own database, run and log directories, and network namespace.

The daemons run inside the rig's management namespace, so the userspace datapath's tap devices
(`ovs-netdev`, bridge internal ports) never appear in the host's namespace and two rigs on one
machine cannot collide. This kernel has no openvswitch module: bridges use `datapath_type=netdev`.
The system's openvswitch service is never used.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.lab import netns
from deploy.lab.process import stop_pidfile
from openflow.tables import vsctl_name_tables

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
DAEMONS = ("ovs-vswitchd", "ovsdb-server")  # stop order: the switch before its database


class OvsError(RuntimeError):
    pass


@dataclass(frozen=True)
class Bridge:
    name: str
    dpid: int


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd rooted in `workdir`, running in namespace `ns`."""

    def __init__(self, workdir: Path, ns: str) -> None:
        self.workdir = workdir
        self.ns = ns
        self.db_sock = workdir / "db.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment under which ovs-vsctl/ovs-ofctl/ovs-appctl reach this switch."""
        return {
            **os.environ,
            "OVS_RUNDIR": str(self.workdir),
            "OVS_DBDIR": str(self.workdir),
            "OVS_LOGDIR": str(self.workdir),
            "OVS_SYSCONFDIR": str(self.workdir),
            "DB_SOCK": str(self.db_sock),
        }

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        db = self.workdir / "conf.db"
        if not db.exists():
            self._tool(["ovsdb-tool", "create", str(db), str(SCHEMA)])
        self._tool(netns.exec_argv(self.ns, [
            "ovsdb-server", str(db), f"--remote=punix:{self.db_sock}", *self._daemon_args("ovsdb-server"),
        ]))
        self.vsctl("--no-wait", "init")
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:vlan-limit=2")
        self._tool(netns.exec_argv(self.ns, [
            "ovs-vswitchd", f"unix:{self.db_sock}", *self._daemon_args("ovs-vswitchd"),
        ]))

    def stop(self) -> None:
        """Stop both daemons (also half-started ones); safe to call twice."""
        for daemon in DAEMONS:
            stop_pidfile(self.workdir / f"{daemon}.pid")

    def restart_switch(self, *, kill: bool = False) -> None:
        """Stop ovs-vswitchd (SIGTERM, or SIGKILL) and start it again on the same database."""
        stop_pidfile(self.workdir / "ovs-vswitchd.pid", sig=signal.SIGKILL if kill else signal.SIGTERM)
        self._tool(netns.exec_argv(self.ns, [
            "ovs-vswitchd", f"unix:{self.db_sock}", *self._daemon_args("ovs-vswitchd"),
        ]))

    def add_bridge(self, name: str, dpid: int, *, controller: str | None = None) -> Bridge:
        args = [
            "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev", "fail_mode=secure",
            "protocols=OpenFlow13", f"other-config:datapath-id={dpid:016x}",
        ]
        if controller:
            args += ["--", "set-controller", name, controller]
        self.vsctl(*args, *vsctl_name_tables(name))
        return Bridge(name=name, dpid=dpid)

    def add_port(self, bridge: str, port: str, ofport: int) -> None:
        self.vsctl("add-port", bridge, port, "--", "set", "interface", port, f"ofport_request={ofport}")

    def vsctl(self, *args: str) -> str:
        return self._tool(["ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=10", *args])

    def ofctl(self, *args: str) -> str:
        return self._tool(["ovs-ofctl", "-O", "OpenFlow13", *args])

    def appctl(self, *args: str) -> str:
        """ovs-appctl against this ovs-vswitchd (its control socket has no pid in its name)."""
        return self._tool(["ovs-appctl", "-t", str(self.workdir / "ovs-vswitchd.ctl"), *args])

    def _daemon_args(self, daemon: str) -> list[str]:
        return [
            f"--pidfile={self.workdir / daemon}.pid", "--detach", "--no-chdir",
            f"--log-file={self.workdir / daemon}.log", "-vconsole:off", f"--unixctl={self.workdir / daemon}.ctl",
        ]

    def _tool(self, argv: Sequence[str]) -> str:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=30)
        if proc.returncode != 0:
            raise OvsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout
