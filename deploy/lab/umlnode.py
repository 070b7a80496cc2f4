"""Lab nodes that are User-Mode Linux instances: each its own kernel, as a bare-metal node is.

The lab uses them for `--mode ipvlan` on a kernel without ipvlan. A node is a long-running instance
whose eth0 is a tap in the rig's management namespace, a port of the lab's switch; its init gives
eth0 the node's MAC and IP, starts the node agent (which reaches the controller's API over the
segment, as on a real node) and serves the command channel (`deploy.uml.channel`), through which
the lab runs the CNI plugin, makes pod namespaces and `exec`s. The instance sees the lab's directory
read-only and its own node directory read-write, both at their host paths, so a path in a conflist
means the same file on either side; the agent's socket stays inside, where the plugin runs.

TCP and UDP need nothing here: UML's eth0 (the `tuntap` transport) does no checksum offload, so what a
node and its ipvlan pods send reaches the tap, and the switch, with its checksums filled in (the host
ends of the rig's veth cables have offload turned off for that reason: `deploy.lab.netns.tx_checksum_off`).

The instance leads its own process group; its pid is in `uml.pid` under the lab's directory, so
`underlay-lab down` and the rig's stale sweep stop it with everything else.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import deploy
from deploy.lab.runtime import PluginCall
from deploy.uml import channel
from deploy.uml.instance import UmlInstance

PROJECT_ROOT = Path(deploy.__file__).resolve().parent.parent
RUN_DIR = "/run/underlay"  # inside the instance (its own tmpfs)
AGENT_SOCKET = f"{RUN_DIR}/agent.sock"
AGENT_PID = f"{RUN_DIR}/agent.pid"
MEM = "512M"


class NodeFailed(RuntimeError):
    """The instance did not come up (or died); the message ends with its console."""


class UmlNode:
    """The host's handle on one node instance, all of whose files live in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.spool = directory / "spool"
        self.pidfile = directory / "uml.pid"
        self.console = directory / "uml" / "console.log"

    def boot(self, *, ns: str, tap: str, mac: str, cidr: str, agent_argv: Sequence[str], lab_dir: Path,
             env: Mapping[str, str], cidr6: str | None = None, link_local: str | None = None) -> None:
        """Start the instance and return at once (`wait_ready` waits): nodes boot side by side.
        With `cidr6`, eth0 gets that IPv6 address and exactly `link_local` (as `netns.configure_ipv6`)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        (self.spool / "ready").unlink(missing_ok=True)
        ipv6 = [f"sysctl -q -w net.ipv6.conf.eth0.{key}={value}" for key, value in (
            ("addr_gen_mode", 1), ("accept_ra", 0), ("autoconf", 0), ("disable_ipv6", 0))] + [
            f"ip -6 addr add {address} dev eth0 nodad" for address in (cidr6, f"{link_local}/64")] if cidr6 else []
        command = "\n".join([
            "set -e",
            f"ip link set eth0 address {mac}", *ipv6, "ip link set eth0 up", f"ip addr add {cidr} dev eth0",
            f"mkdir -p {RUN_DIR}",
            self.agent_start(agent_argv),
            f"exec python -m deploy.uml.channel {shlex.quote(str(self.spool))}",
        ])
        UmlInstance(self.directory / "uml", command=command, mem=MEM, taps=[tap], netns=ns, cwd=PROJECT_ROOT,
                    env=env, shared={lab_dir: False, self.directory: True}).start(self.pidfile)

    def agent_start(self, agent_argv: Sequence[str]) -> str:
        """Shell that starts the agent in the background, detached from the channel's pipes, from a
        subshell that exits at once: the orphan is then init's child, reaped when it dies (the
        channel's loop, which would otherwise be its parent, never waits for it)."""
        log = shlex.quote(str(self.directory / "agent.log"))
        return f"(setsid {shlex.join(agent_argv)} </dev/null >>{log} 2>&1 & echo $! > {AGENT_PID})"

    def restart_agent(self, agent_argv: Sequence[str], *, kill: bool) -> None:
        script = (f"pid=$(cat {AGENT_PID}); kill -{'KILL' if kill else 'TERM'} $pid; "
                  f"while kill -0 $pid 2>/dev/null; do sleep 0.05; done; rm -f {AGENT_SOCKET}; "
                  f"{self.agent_start(agent_argv)}")
        self.check(["sh", "-c", script], timeout=30)
        self.wait_agent(timeout=60)

    def wait_ready(self, *, timeout: float) -> None:
        """Until the command channel answers and the agent serves its socket."""
        deadline = time.monotonic() + timeout
        while not (self.spool / "ready").exists():
            if not self.running():
                raise NodeFailed(f"the instance in {self.directory} exited while booting:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise NodeFailed(f"the instance in {self.directory} did not start its command channel within "
                                 f"{timeout:g} s:\n{self.console_tail()}")
            time.sleep(0.1)
        self.wait_agent(timeout=max(deadline - time.monotonic(), 10))

    def wait_agent(self, *, timeout: float) -> None:
        waited = self.run(["sh", "-c", f"until [ -S {AGENT_SOCKET} ]; do sleep 0.1; done"], timeout=timeout)
        if waited.returncode != 0:
            raise NodeFailed(f"the node agent in {self.directory} did not serve {AGENT_SOCKET} within {timeout:g} s "
                             f"(log: {self.directory / 'agent.log'})")

    def running(self) -> bool:
        try:
            return Path(f"/proc/{int(self.pidfile.read_text())}").exists()
        except (FileNotFoundError, ValueError):
            return False

    def console_tail(self, lines: int = 30) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else "(no console)"
        return "\n".join(text.splitlines()[-lines:])

    # -- running things inside ---------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, stdin: bytes = b"", env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return channel.call(self.spool, argv, stdin=stdin, env=env, timeout=timeout)

    def check(self, argv: Sequence[str], *, timeout: float = 60) -> None:
        proc = self.run(argv, timeout=timeout)
        if proc.returncode != 0:
            raise NodeFailed(f"inside {self.directory.name}: {shlex.join(argv)} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()}")

    def execute(self, argv: Sequence[str], stdin: bytes, env: Mapping[str, str], timeout: float) -> PluginCall:
        """`deploy.lab.runtime.Execute`: a CNI plugin runs inside the node, as on a real one."""
        proc = self.run(argv, stdin=stdin, env=env, timeout=timeout)
        return PluginCall(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def create_netns(self, name: str) -> None:
        """A pod's namespace inside the node, loopback up and IPv6 off, as `netns.create` does on the host."""
        self.check(["sh", "-c", 'ip netns add "$1" && ip -n "$1" link set lo up && ip netns exec "$1" '
                    'sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1',
                    "sh", name])

    def remove_netns(self, name: str) -> None:
        """Remove a pod's namespace inside the node; one already gone is fine."""
        self.check(["sh", "-c", 'if [ -e "/run/netns/$1" ]; then ip netns del "$1"; fi', "sh", name])
