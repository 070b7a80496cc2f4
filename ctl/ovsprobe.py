"""Ask a running Open vSwitch, through its run directory, how it would treat a packet.

The one module of `underlayctl` that talks to a switch directly: `ovs-appctl` against
ovs-vswitchd's control socket (`ofproto/trace`, `dpif/show`) and `ovs-vsctl` against its database
socket (which bridge has a datapath id). `ofproto/trace` only simulates: nothing is sent, learned or
counted on the switch. The flows themselves are read through the controller (its operator REST),
never here. The run directory is the lab's `--ovs-rundir` (`underlay-lab status --json` prints it)
or a system switch's /var/run/openvswitch; the controller does not need to be reachable from it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from openflow.ofproto_trace import Trace, parse, parse_dpif_ports

TIMEOUT = 10.0
SYSTEM_RUNDIR = Path("/var/run/openvswitch")


class ProbeError(RuntimeError):
    """The switch cannot be asked; the message says which and what to do."""


class OvsProbe:
    """ovs-vswitchd and ovsdb-server of one run directory."""

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.target = _control_socket(rundir)
        self.db = rundir / "db.sock"
        for tool in ("ovs-appctl", "ovs-vsctl"):
            if shutil.which(tool) is None:
                raise ProbeError(f"{tool} is not installed (Debian package openvswitch-common): "
                                 "install it, or trace without --ovs-rundir")

    def bridge_of(self, dpid: int) -> str:
        """The bridge whose datapath id is `dpid`."""
        rows = self._run(["ovs-vsctl", f"--db=unix:{self.db}", f"--timeout={int(TIMEOUT)}", "--bare",
                          "--columns=name,datapath_id", "list", "Bridge"]).split("\n\n")
        for row in rows:
            fields = row.split()
            if len(fields) == 2 and int(fields[1], 16) == dpid:
                return fields[0]
        raise ProbeError(f"switch {dpid:016x}: no bridge with that datapath id under {self.rundir} "
                         "(is this the run directory of the switch the controller names?)")

    def datapath_ports(self, bridge: str) -> dict[int, int]:
        """{datapath port: OpenFlow port} of `bridge`: ofproto/trace prints datapath ports."""
        return parse_dpif_ports(self._appctl("dpif/show"), bridge)

    def trace(self, bridge: str, flow: str) -> Trace:
        return parse(self._appctl("ofproto/trace", bridge, flow))

    def _appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "-t", str(self.target), f"--timeout={int(TIMEOUT)}", *args])

    def _run(self, argv: list[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            raise ProbeError(f"{' '.join(argv[:3])}: no answer from the switch in {TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            raise ProbeError(f"{' '.join(argv[:3])} {argv[-1] if len(argv) > 3 else ''}: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout


def _control_socket(rundir: Path) -> Path:
    """ovs-vswitchd's control socket in `rundir`: `ovs-vswitchd.ctl` where it was started with
    `--unixctl` (the lab's rig), else `ovs-vswitchd.<pid>.ctl` (a system switch)."""
    fixed = rundir / "ovs-vswitchd.ctl"
    if fixed.exists():
        return fixed
    try:
        pid = int((rundir / "ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError):
        raise ProbeError(f"--ovs-rundir {rundir}: no ovs-vswitchd control socket there (ovs-vswitchd.ctl, or "
                         "ovs-vswitchd.pid naming ovs-vswitchd.<pid>.ctl): give the switch's run directory "
                         f"(a system switch's is {SYSTEM_RUNDIR}; `underlay-lab status --json` prints the lab's)"
                         ) from None
    by_pid = rundir / f"ovs-vswitchd.{pid}.ctl"
    if not by_pid.exists():
        raise ProbeError(f"--ovs-rundir {rundir}: ovs-vswitchd (pid {pid}) has no control socket {by_pid.name}: "
                         "is it running?")
    return by_pid
