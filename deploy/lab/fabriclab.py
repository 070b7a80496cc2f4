"""`underlay-lab`'s fabric commands (with `up --topology leaf-spine|line:N`): `link down|up A B`,
the switches and links `status` shows, and the part of `demo` that shows ARP answered on the
requester's own switch and pings across the fabric.

The links' state comes from the controller (`GET /v1/topology`) when it serves one, so `status`
shows what the controller believes (a link it has not confirmed by LLDP, or miscabled); the lab's
own view (the veth cables' carrier) is always there beside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from deploy.lab import fabric as labfabric
from deploy.lab import frames, netns, topology
from deploy.lab.control import ApiError
from deploy.lab.lab import Lab, LabError, LabState, PodInfo

PrintRows = Callable[[Sequence[Sequence[str]]], None]  # the CLI's table printer


def add_commands(commands: Any) -> None:
    """`link down|up A B` on the CLI's subcommands."""
    link = commands.add_parser("link", help="cut or restore the cable between two switches (--topology)")
    link.add_argument("action", choices=("down", "up"))
    link.add_argument("a", metavar="A", help="a switch name (underlay-lab status), e.g. leaf1")
    link.add_argument("b", metavar="B", help="the switch at the cable's other end, e.g. spine1")


def fabric_of(state: LabState) -> topology.Fabric:
    return topology.parse(state.topology)


def cmd_link(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.state
    fabric = fabric_of(state)
    if fabric.single:
        raise LabError("link: this lab is one switch; underlay-lab up --topology leaf-spine (or line:N) has links")
    try:
        cable = labfabric.set_link(lab.rig, fabric, args.a, args.b, prefix=state.prefix, up=args.action == "up")
    except topology.TopologyError as err:
        raise LabError(str(err)) from None
    print(f"link {cable.a} - {cable.b}: {labfabric.link_state(lab.rig, cable, prefix=state.prefix)}")
    return 0


def status_json(lab: Lab, state: LabState) -> dict[str, Any]:
    """The fabric's switches and links (the lab's view: carrier), each link with what the controller
    says of it (`GET /v1/topology`: state, used, reason), and the controller's whole answer."""
    fabric = fabric_of(state)
    described = labfabric.describe(lab.rig, fabric, prefix=state.prefix, switch_of=state.switch_of)
    answer = controller_topology(lab, state)
    seen = {frozenset((link["a"], link["b"])): link for link in (answer or {}).get("links", ())}
    for link, ends in zip(described["links"], fabric.config_links()):
        said = seen.get(frozenset(ends), {})
        link["controller"] = {key: said.get(key) for key in ("state", "used", "reason")} if said else None
    return {**described, "controller": answer}


def controller_topology(lab: Lab, state: LabState) -> dict[str, Any] | None:
    """What the controller says of the topology; None while it serves no `GET /v1/topology`."""
    controller = lab.controller(state)
    try:
        return controller.request("GET", "/v1/topology", token=controller.operator_token)
    except ApiError as err:
        if err.status == 404:
            return None
        return {"error": str(err)}
    except OSError as err:
        return {"error": f"the controller's API does not answer: {err}"}


def print_status(lab: Lab, state: LabState, print_rows: PrintRows) -> None:
    described = status_json(lab, state)
    print(f"\nfabric {described['topology']}:")
    print_rows([("SWITCH", "DPID", "BRIDGE", "HOSTS")] + [
        (s["name"], s["dpid"], s["bridge"], ", ".join(s["hosts"]) or "-") for s in described["switches"]])
    print()
    print_rows([("LINK", "", "CARRIER", "CONTROLLER")] + [
        (link["a"], link["b"], link["state"], _controller_says(link["controller"])) for link in described["links"]])
    if described["controller"] is None:
        print("(the controller serves no GET /v1/topology yet: the links' state is the cables' carrier)")


def _controller_says(said: dict[str, Any] | None) -> str:
    if said is None:
        return "-"
    return f"{said['state']}, {'used' if said['used'] else 'not used'}" + (f" ({said['reason']})" if said["reason"] else "")


def demo_rows(lab: Lab, state: LabState) -> list[dict[str, Any]]:
    """ARP and ping from the first pod of each node to the first pod of the next node on another
    switch: the requester's own switch answers (its responder flow +1, every other switch's +0,
    the controller's packet-ins +0), then the ping crosses the fabric."""
    fabric, pods = fabric_of(state), lab.pods(state)
    first: dict[str, PodInfo] = {}
    for pod in pods.values():
        first.setdefault(pod.node, pod)
    chosen = list(first.values())
    pairs = [(a, b) for a, b in zip(chosen, chosen[1:] + chosen[:1]) if switch_of(state, a) != switch_of(state, b)]
    return [_demo_pair(lab, state, fabric, requester, target) for requester, target in pairs]


def switch_of(state: LabState, pod: PodInfo) -> str:
    return state.switch_of[pod.node]


def _demo_pair(lab: Lab, state: LabState, fabric: topology.Fabric, requester: PodInfo,
               target: PodInfo) -> dict[str, Any]:
    controller = lab.controller(state)
    counters = _responder_counters(lab, fabric, state, target.ip)
    punted = _punted(lab, fabric, state)
    packet_ins = labfabric.packet_ins(controller.health()["stats"])
    request = frames.Arp(op=1, sha=requester.mac, spa=requester.ip, tha="00:00:00:00:00:00", tpa=target.ip,
                         eth_src=requester.mac, eth_dst=frames.BROADCAST)
    replies = frames.arp_exchange(requester.netns, "eth0", request, timeout=1.0)
    lab.rig.ovs.appctl("revalidator/wait")  # flow counters of cached datapath flows are credited on a pass
    after = _responder_counters(lab, fabric, state, target.ip)
    row = {"from": requester.name, "from_switch": switch_of(state, requester), "to": target.name,
           "to_switch": switch_of(state, target), "ip": target.ip, "mac": target.mac,
           "arp_reply_mac": replies[0].sha if replies else None,
           "answered_on": {name: after[name] - counters[name] for name in after if after[name] > counters[name]},
           "controller_packet_ins": labfabric.packet_ins(controller.health()["stats"]) - packet_ins,
           "switches_punted": _punted(lab, fabric, state) - punted}
    ping = netns.run(requester.netns, ["ping", "-n", "-c", "1", "-W", "2", target.ip], check=False)
    return {**row, "ping": ping.returncode == 0}


def _responder_counters(lab: Lab, fabric: topology.Fabric, state: LabState, ip: str) -> dict[str, int]:
    """Packets each switch's ARP responder flow for `ip` answered, by switch name."""
    return {s.name: labfabric.responder_packets(lab.rig.ovs, fabric.bridge(s.name, state.prefix), ip)
            for s in fabric.switches}


def _punted(lab: Lab, fabric: topology.Fabric, state: LabState) -> int:
    """What every switch sent to the controller so far, LLDP aside (by the switches' own counters)."""
    return sum(labfabric.punted(lab.rig.ovs, fabric.bridge(s.name, state.prefix)) for s in fabric.switches)


def demo_ok(row: dict[str, Any]) -> bool:
    return (row["ping"] and row["arp_reply_mac"] == row["mac"] and row["controller_packet_ins"] == 0
            and row["switches_punted"] == 0
            and list(row["answered_on"]) == [row["from_switch"]])


def print_demo(lab: Lab, state: LabState, print_rows: PrintRows) -> int:
    """The fabric half of `demo`; 1 when a pair failed."""
    rows = demo_rows(lab, state)
    print()
    print_rows([("FROM POD", "ON", "ARP FOR POD", "ON", "ANSWERED ON (RESPONDER FLOW)", "PACKET-INS", "PING")] + [
        (r["from"], r["from_switch"], r["to"], r["to_switch"],
         ", ".join(f"{name} +{hits}" for name, hits in r["answered_on"].items()) or "nobody",
         f"+{r['controller_packet_ins']}", "ok" if r["ping"] else "FAILED") for r in rows])
    failed = [f"{r['from']} -> {r['to']}" for r in rows if not demo_ok(r)]
    if failed:
        print(f"\nacross the fabric, not answered on the requester's own switch or not reached: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    print(f"\nacross the fabric: {len(rows)} ARP requests answered on the requester's own switch "
          "(no packet-in, no other switch), and pings between pods on different switches")
    return 0
