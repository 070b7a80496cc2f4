"""`underlay-lab`: bring up, show, use and tear down the one-machine lab."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy.k8s.testenv import MissingBinary, StartFailed
from deploy.lab.control import ApiError, ControllerDied
from deploy.lab import fabriclab, kubedemo, labmetrics, labtrace, netns
from deploy.lab.kubelab import KubeLabError
from deploy.lab.lab import DEFAULT_STATE_DIR, SUBNET, Lab, LabError, LabState
from deploy.lab.umlnode import NodeFailed
from deploy.uml.channel import ChannelError
from deploy.lab import realnode
from deploy.lab.realnode import NodeError
from deploy.lab.rig import MissingPrerequisite
from deploy.lab.runtime import CniError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="underlay-lab", description=__doc__)
    top.add_argument("--state-dir", type=Path, default=Path(os.environ.get("UNDERLAY_LAB_DIR", DEFAULT_STATE_DIR)),
                     help="where the lab keeps everything (default %(default)s, or $UNDERLAY_LAB_DIR)")
    commands = top.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build the lab: switch, controller, nodes, agents, pods")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--pods-per-node", type=int, default=2)
    up.add_argument("--mode", choices=("macvlan", "ipvlan"), default="macvlan")
    up.add_argument("--kubernetes", action="store_true",
                    help="with a Kubernetes control plane: Node objects, pods as Pod objects, a kubeconfig")
    up.add_argument("--dual-stack", action="store_true",
                    help="every node, pod and the external host get an IPv6 address too (fd00:18::/64)")
    up.add_argument("--kubelet", type=int, nargs="?", const=1, default=0, metavar="N",
                    help="with --kubernetes: the first N nodes (1 if no N) run a real kubelet, containerd and "
                         "kube-proxy; the others a stand-in")
    up.add_argument("--image", type=Path, action="append", default=[], dest="images",
                    help="an image archive to import into the real node's containerd (repeatable)")
    up.add_argument("--in-cluster", action="store_true",
                    help="with --kubernetes --kubelet N (every node): no lab controller or agents; deploy/kubernetes "
                         "applied (overlay deploy/lab/overlay), so underlay runs as pods")
    up.add_argument("--topology", default="single", dest="topology_spec", metavar="single|leaf-spine|line:N",
                    help="one switch (default); 2 spines and 3 leaves (nodes on leaf1/leaf2, the external host on "
                         "leaf3); or N switches in a row. Cables are veth pairs: `link down|up A B` cuts them")
    status = commands.add_parser("status", help="the lab's switch, nodes, pods and external host")
    status.add_argument("--json", action="store_true")
    run = commands.add_parser("exec", help="run a command in a node, a pod, `external` or `switch`")
    run.add_argument("name")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    pod = commands.add_parser("pod", help="add or delete a pod through the CNI plugin")
    pods = pod.add_subparsers(dest="pod_command", required=True)
    add = pods.add_parser("add")
    add.add_argument("name")
    add.add_argument("--node", required=True)
    add.add_argument("--ip", help="a fixed address, or one of each family: 198.18.0.150,fd00:18::150")
    delete = pods.add_parser("del")
    delete.add_argument("name")
    demo = commands.add_parser("demo", help="from the external host, ARP, ping and TCP to every pod; TCP pod to pod")
    demo.add_argument("--kubernetes", action="store_true",
                      help="then a fixed-IP pod, an IPPool and a StatefulSet pod keeping its address (up --kubernetes)")
    restart = commands.add_parser("restart", help="restart the controller, a node's agent or the switch")
    restart.add_argument("what", choices=("controller", "agent", "switch"))
    restart.add_argument("node", nargs="?")
    restart.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    commands.add_parser("down", help="remove everything the lab made")
    fabriclab.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lab = Lab(args.state_dir)
    try:
        return COMMANDS[args.command](lab, args)
    except (LabError, MissingPrerequisite, CniError, ApiError, ControllerDied, TimeoutError, NodeFailed,
            ChannelError, KubeLabError, MissingBinary, StartFailed, NodeError) as err:
        print(f"underlay-lab {args.command}: {err}", file=sys.stderr)
        return 1


def cmd_up(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.up(nodes=args.nodes, pods_per_node=args.pods_per_node, mode=args.mode, kubernetes=args.kubernetes,
                   dual_stack=args.dual_stack, kubelet=args.kubelet, images=args.images,
                   in_cluster=args.in_cluster, topology_spec=args.topology_spec)
    print_table(lab, state)
    return 0


def cmd_status(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.state
    if args.json:
        print(json.dumps(status_json(lab, state), indent=2))
    else:
        print_table(lab, state)
    return 0


def status_json(lab: Lab, state: LabState) -> dict[str, Any]:
    real = {path.name for path in realnode.node_dirs(lab.workdir)}
    return {
        "switch": {"bridge": state.bridge, "dpid": f"{state.dpid:016x}", "netns": lab.rig.mgmt_ns,
                   "ovs_rundir": str(lab.rig.ovs.workdir), **controller_json(lab, state)},
        "mode": state.mode,
        "nodes": [{"name": n.name, "kernel": "uml" if n.spool else "host", "netns": n.netns, "ip": n.ip,
                   **({"kubelet": "real" if n.name in real else "stand-in"} if state.kubernetes else {}),
                   "mac": n.mac, "port": n.port, "cni_conf": n.cni_conf, "agent_socket": n.agent_socket,
                   **({"spool": n.spool} if n.spool else {}), **({"ip6": n.ip6} if n.ip6 else {})}
                  for n in state.nodes.values()],
        "pods": [{"name": p.name, "netns": p.netns, "node": p.node, "ip": p.ip, "mac": p.mac,
                  "port": state.nodes[p.node].port, **({"ip6": p.ip6} if p.ip6 else {})}
                 for p in lab.pods(state).values()],
        "external": {"netns": state.external["netns"], "ip": state.external["ip"], "mac": state.external["mac"],
                     **({"ip6": state.external["ip6"]} if "ip6" in state.external else {})},
        "dual_stack": state.dual_stack,
        **({"fabric": fabriclab.status_json(lab, state)} if state.switch_of else {}),
        **({"kubeconfig": state.kubernetes["kubeconfig"], "store": state.kubernetes["store"]}
           if state.kubernetes else {}),
    }


def controller_json(lab: Lab, state: LabState) -> dict[str, Any]:
    """Where the switch's controller is: the lab's process, or the replicas' pods (--in-cluster)."""
    if state.kubernetes.get("in_cluster"):
        return {"controller": lab.rig.ovs.vsctl("get-controller", state.bridge).split()}
    controller = lab.controller(state)
    return {"controller": f"tcp:127.0.0.1:{6653}", "api": controller.url, "api_ca_file": str(controller.ca_file),
            "metrics": {what: f"http://{labmetrics.HOST}:{port}/metrics" for what, port in labmetrics.endpoints(state.nodes).items()}}


def print_table(lab: Lab, state: LabState) -> None:
    rows = [("POD", "NODE", "IP", *(("IPV6",) if state.dual_stack else ()), "MAC", "SWITCH PORT")]
    rows += [(p.name, p.node, p.ip, *((p.ip6,) if state.dual_stack else ()), p.mac,
              ":".join(filter(None, (state.switch_of.get(p.node), str(state.nodes[p.node].port)))))
             for p in lab.pods(state).values()]
    print_rows(rows)
    ext6 = f" and {state.external['ip6']}" if state.dual_stack else ""
    print(f"\nexternal host: {state.external['ip']}{ext6} (netns {state.external['netns']}); "
          f"switch: bridge {state.bridge}; run in a pod: underlay-lab exec <pod> -- ip addr")
    if not state.kubernetes.get("in_cluster"):
        print(labmetrics.describe(state.nodes, ns=lab.rig.mgmt_ns))
    if state.kubernetes:
        print(f"kubernetes: kubectl --kubeconfig {state.kubernetes['kubeconfig']} get pods -o wide "
              f"(the controller's store: {state.kubernetes['store']})")
    if state.switch_of:
        fabriclab.print_status(lab, state, print_rows)


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_exec(lab: Lab, args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("exec NAME -- COMMAND...: no command given")
    if args.name == "switch":
        os.execvpe(argv[0], argv, lab.switch_env())
    inside = lab.run_inside(args.name, argv)
    if inside is not None:
        sys.stdout.buffer.write(inside.stdout)
        sys.stderr.buffer.write(inside.stderr)
        return inside.returncode
    namespace = lab.namespace_of(args.name)
    os.execvp("ip", ["ip", "netns", "exec", namespace, *argv])  # replaces this process: no return


def cmd_pod(lab: Lab, args: argparse.Namespace) -> int:
    if args.pod_command == "add":
        pod = lab.add_pod(args.name, node=args.node, ip=args.ip)
        print(f"{pod.name} {pod.node} {pod.ip} {pod.mac}")
    else:
        lab.delete_pod(args.name)
    return 0


def cmd_demo(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.state
    rows = lab.demo()
    table = [("POD", "NODE", "IP", "ARP REPLY MAC", "ANSWERED BY", "PING", "TCP")]
    for row in rows:
        mac = row["arp_reply_mac"] or "-"
        verdict = "ok" if row["ping"] else "FAILED"
        answered = f"{row['answered_by']} (flow +{row['responder_flow_hits']}, packet-ins +{row['controller_packet_ins']})"
        table.append((row["pod"], row["node"], row["ip"], mac if mac == row["mac"] else f"{mac} (expected {row['mac']})",
                      answered, verdict, row["tcp"].describe()))
    print_rows(table)
    across = lab.demo_across()
    if across:
        print()
        print_rows([("TCP FROM POD", "TO POD ON ANOTHER NODE", "TRANSFER")]
                   + [(client, server, result.describe()) for client, server, result in across])
    ipv6_rows = [row for row in rows if "ip6" in row]
    if ipv6_rows:
        print()
        print_ipv6_demo(ipv6_rows)
    unreachable = [row["pod"] for row in rows
                   if not row["ping"] or row["arp_reply_mac"] != row["mac"] or not row["tcp"].ok]
    unreachable += [f"{row['pod']} (IPv6)" for row in ipv6_rows
                    if not row["ping6"] or row["nd_reply_mac"] != row["mac"] or not row["tcp6"].ok]
    failed = [f"{client} -> {server}" for client, server, result in across if not result.ok]
    if unreachable:
        print(f"\nunreachable from the external host: {', '.join(unreachable)}", file=sys.stderr)
    if failed:
        print(f"\nno TCP between pods across nodes: {', '.join(failed)}", file=sys.stderr)
    if unreachable or failed:
        return 1
    by_switch = sum(row["answered_by"] == "switch flow" for row in rows)
    print(f"\nall {len(rows)} pods reached from the external host; {by_switch} of {len(rows)} ARP requests "
          "answered by the switch's responder flows")
    print(f"TCP, every byte checked: from the external host to all {len(rows)} pods, and {len(across)} "
          f"transfer{'s' * (len(across) != 1)} between pods on different nodes")
    if ipv6_rows:
        by_flow = sum(row["nd_answered_by"] == "switch flow" for row in ipv6_rows)
        print(f"IPv6: all {len(ipv6_rows)} pods reached by ping6 and TCP; {by_flow} of {len(ipv6_rows)} Neighbor "
              "Solicitations answered by the switch's responder flows")
    if state.switch_of and fabriclab.print_demo(lab, state, print_rows):
        return 1
    traced, text = labtrace.demo_trace(lab, rows[0]["pod"]) if rows else (True, "")
    print(f"\n{text}" if text else "")
    if not traced:
        print(f"\nunderlayctl trace did not find {rows[0]['pod']} reachable", file=sys.stderr)
        return 1
    return kubernetes_demo(lab) if args.kubernetes else 0


def print_ipv6_demo(rows: list[dict[str, Any]]) -> None:
    """The external host's neighbour entry for each pod's IPv6 address, and who answered for it."""
    table = [("POD", "IPV6", "NEIGHBOUR MAC (ip -6 neigh)", "ANSWERED BY", "PING6", "TCP6")]
    for row in rows:
        mac = row["nd_reply_mac"] or "-"
        table.append((row["pod"], row["ip6"], mac if mac == row["mac"] else f"{mac} (expected {row['mac']})",
                      f"{row['nd_answered_by']} (flow +{row['nd_flow_hits']}, packet-ins +{row['nd_packet_ins']})",
                      "ok" if row["ping6"] else "FAILED", row["tcp6"].describe()))
    print_rows(table)


def kubernetes_demo(lab: Lab) -> int:
    state = lab.state
    if not state.kubernetes:
        raise LabError("demo --kubernetes: this lab runs without Kubernetes (underlay-lab up --kubernetes)")
    external = state.external["netns"]
    rows = kubedemo.run(lab.kube, subnet=SUBNET, node=next(iter(state.nodes)), ping=lambda ip: netns.run(
        external, ["ping", "-n", "-c", "1", "-W", "2", ip], check=False).returncode == 0)
    table = [("", "POD", "NODE", "IP", "EXPECTED", "PING")]
    table += [(r.what, r.pod, r.node, r.ip, r.expected if r.ok else f"{r.expected}: NOT MET",
               "ok" if r.ping else "FAILED") for r in rows]
    print()
    print_rows(table)
    failed = [r.what for r in rows if not (r.ok and r.ping)]
    if failed:
        print(f"\nnot as expected: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nthe fixed address, the pool and the StatefulSet's kept address all came from the cluster's API")
    return 0


def cmd_restart(lab: Lab, args: argparse.Namespace) -> int:
    lab.restart(args.what, args.node, kill=args.kill)
    return 0


def cmd_down(lab: Lab, args: argparse.Namespace) -> int:
    lab.down()
    return 0


COMMANDS = {"up": cmd_up, "status": cmd_status, "exec": cmd_exec, "pod": cmd_pod, "demo": cmd_demo,
            "restart": cmd_restart, "down": cmd_down, "link": fabriclab.cmd_link}


if __name__ == "__main__":
    sys.exit(main())
