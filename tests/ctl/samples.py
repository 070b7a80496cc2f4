"""The controller's answers (controller/API.md, "Operators") as underlayctl receives them, for the
pure tests: one switch in sync, one out of sync, one not connected; two nodes; three pods."""

from __future__ import annotations

from typing import Any

FLOW = {"table": "responder", "table_id": 1, "priority": 100,
        "match": {"eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 2054, "arp_op": 1, "arp_tpa": "198.18.0.100"},
        "actions": ["IN_PORT"], "goto": None, "cookie": "0x55aa040012345678", "purpose": "arp_responder",
        "owner": "default/web-0",
        "text": "responder(1) prio=100 eth_dst=ff:ff:ff:ff:ff:ff,eth_type=0x0806,arp_op=1,arp_tpa=198.18.0.100 "
                "actions=IN_PORT cookie=0x55aa040012345678"}
STALE = {**FLOW, "purpose": "forward", "owner": None, "table": "l2", "match": {"eth_dst": "02:00:00:00:00:09"}, "text": "l2(2) prio=100 eth_dst=02:00:00:00:00:09 "
         "actions=output:7 cookie=0x55aa080000000009"}


def switches() -> list[dict[str, Any]]:
    return [
        {"dpid": 1, "name": "leaf1", "connected": True, "role": "equal", "flows_desired": 40, "flows_actual": 40,
         "last_convergence": "2026-11-27T20:00:00.000+00:00", "in_sync": True, "error": None,
         "ports": [{"number": 1, "role": "trusted"}, {"number": 4, "role": "node"}]},
        {"dpid": 2, "name": None, "connected": True, "role": "master", "flows_desired": 12, "flows_actual": 11,
         "last_convergence": "2026-11-27T19:58:00.000+00:00", "in_sync": False, "error": None, "ports": []},
        {"dpid": 0x30, "name": None, "connected": False, "role": None, "flows_desired": 9, "flows_actual": None,
         "last_convergence": None, "in_sync": None, "error": None, "ports": []},
    ]


def nodes() -> list[dict[str, Any]]:
    return [{"name": "node1", "mac": "02:00:00:00:01:01", "ip": "198.18.0.11", "ip6": None, "dpid": 1, "port": 4,
             "pods": 2},
            {"name": "node2", "mac": "02:00:00:00:01:02", "ip": "198.18.0.12", "ip6": "fd00:18::12", "dpid": None,
             "port": None, "pods": 1}]


def pods() -> list[dict[str, Any]]:
    def pod(name: str, node: str, ips: list[str], state: str) -> dict[str, Any]:
        return {"namespace": "default", "name": name, "container_id": "c-" + name, "ifname": "eth0", "node": node,
                "ip": ips[0], "ips": ips, "mac": "02:00:c6:12:00:64", "mode": "macvlan", "pool": "default", "uid": None,
                "dpid": 1 if state == "placed" else None, "port": 4 if state == "placed" else None, "state": state}
    return [pod("web-0", "node1", ["198.18.0.100"], "placed"), pod("web-1", "node1", ["198.18.0.101"], "placed"),
            pod("db-0", "node2", ["198.18.0.102", "fd00:18::102"], "unplaced")]


def pools() -> list[dict[str, Any]]:
    return [{"name": "default", "default": True, "size": 100, "allocated": 3, "reserved": 1, "cooldown": 2,
             "families": [{"family": 4, "subnet": "198.18.0.0/24", "size": 100, "allocated": 3, "reserved": 1,
                           "cooldown": 2}]},
            {"name": "dual", "default": False, "size": 300, "allocated": 0, "reserved": 0, "cooldown": 0,
             "families": [{"family": 4, "subnet": "198.18.1.0/24", "size": 100, "allocated": 0, "reserved": 0,
                           "cooldown": 0},
                          {"family": 6, "subnet": "fd00:18:1::/64", "size": 200, "allocated": 0, "reserved": 0,
                           "cooldown": 0}]}]
