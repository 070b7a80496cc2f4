"""Controller replicas beside the rig's switch: two `underlay-controller` processes electing a leader
with a Lease on the API server, each with its own OpenFlow and REST port in the management
namespace, and the switch cabled to both (`set-controller` with two targets). For the failover
tests, the failover bench and the lab.

What the switch thinks of each is asked of Open vSwitch itself (`switch_roles`): its Controller
table says which connection is master and which slave.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy.lab.control import Controller, NodeSpec, PoolSpec
from deploy.lab.ovs import PrivateOvs

OPENFLOW_PORT, API_PORT = 6653, 6680


def replicas(count: int, *, workdir: Path, ns: str, nodes: Mapping[str, NodeSpec],
             trusted: Mapping[int, tuple[int, ...]], pool: PoolSpec, kubeconfig: Path, lease_namespace: str,
             lease: Mapping[str, Any] | None = None) -> list[Controller]:
    """`count` controllers sharing one Lease (`lease` overrides its name and periods), named
    controller-0, controller-1, ... on OpenFlow ports 6653, 6654, ... and API ports 6680, 6681, ..."""
    election = {"leader_election": True, "lease_namespace": lease_namespace, **(lease or {})}
    return [Controller(workdir=workdir / f"controller-{i}", ns=ns, nodes=dict(nodes), trusted=dict(trusted),
                       pool=pool, openflow_port=OPENFLOW_PORT + i, api_port=API_PORT + i, kubeconfig=kubeconfig,
                       election=election, identity=f"controller-{i}")
            for i in range(count)]


def target(controller: Controller) -> str:
    return f"tcp:127.0.0.1:{controller.openflow_port}"


def cable(ovs: PrivateOvs, bridge: str, controllers: Sequence[Controller]) -> None:
    """The switch connects to every replica."""
    ovs.vsctl("set-controller", bridge, *(target(c) for c in controllers))


def switch_roles(ovs: PrivateOvs, bridge: str) -> dict[str, str]:
    """target -> "master", "slave" or "other" (EQUAL), for the bridge's connected controllers."""
    mine = set(ovs.vsctl("get", "bridge", bridge, "controller").strip("[] \n").replace(",", " ").split())
    table = json.loads(ovs.vsctl("--format=json", "--columns=_uuid,target,role,is_connected", "list", "controller"))
    roles = {}
    for uuid, target_, role, connected in table["data"]:
        if uuid[1] in mine and connected:
            roles[target_] = role if isinstance(role, str) else "other"
    return roles


def leader(controllers: Sequence[Controller]) -> Controller | None:
    """The replica whose /v1/ready answers 200, if one does."""
    for controller in controllers:
        try:
            if controller.running() and controller.ready():
                return controller
        except OSError:
            continue
    return None


def master_granted(controller: Controller, *, after: float) -> float | None:
    """When the switch granted `controller` the master role after `after` (wall clock): the time of
    its log line, written on the switch's role reply. Open vSwitch's Controller table says so too,
    but refreshes its `role` column only every few seconds."""
    for line in controller.logfile.read_text().splitlines():
        if "event=role role=master" in line:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at > after:
                return at
    return None


def wait_master(ovs: PrivateOvs, bridge: str, controller: Controller, *, timeout: float) -> float:
    """Wait until the switch's table shows `controller` as its master (seconds late: see
    `master_granted`); the monotonic time it was seen so."""
    deadline = time.monotonic() + timeout
    while switch_roles(ovs, bridge).get(target(controller)) != "master":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the switch did not make {controller.identity} master within {timeout:g}s: "
                               f"{switch_roles(ovs, bridge)}")
        time.sleep(0.01)
    return time.monotonic()
