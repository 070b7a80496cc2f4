"""The operators' read-only REST endpoints (controller/API.md, "Operators"): switches, their flows
(desired, actual, and the difference the controller would send), pools, nodes and pods.

`OperatorRoutes` is mixed into the WSGI application (controller/api.py), which routes and
authenticates; this module only reads. What the switch really holds is read through the
controller's own OpenFlow session (flow stats, `Fabric.read_flows`), never by shelling out, and is
compared with `openflow.diff.diff`, the very function the switch's worker converges with: "in sync"
here means the worker would send nothing. Flows become JSON with their cookie decoded
(openflow/cookies.py): purpose, and owner named from what the controller knows of that switch.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from controller.errors import BadRequest, NotFound, SwitchUnavailable
from controller.service import PlacementView, Service
from controller.switch import SessionStatus
from openflow import cookies
from openflow.diff import diff
from openflow.explain import owner_map
from openflow.flows import Flow, sort_flows
from openflow.model import Placement, SwitchState
from openflow.pipeline import StateError, desired_flows
from openflow.tables import render, table_id

Json = dict[str, Any]
STATES = ("desired", "actual", "diff")


class Inspectable(Protocol):
    """What the OpenFlow side tells operators (controller.ofapp.UnderlayApp, via main.LateFabric)."""

    def connected(self) -> list[int]: ...

    def session_status(self, dpid: int) -> SessionStatus | None: ...

    def read_flows(self, dpid: int, *, cookie: int) -> frozenset[Flow]: ...

    def resync(self, dpid: int) -> None: ...


def parse_dpid(text: str) -> int:
    """A datapath id as people write it: `0x1` (hex), `0000000000000001` (16 hex digits, as
    ovs-ofctl prints it) or `1` (decimal)."""
    try:
        dpid = int(text, 16) if text.lower().startswith("0x") or len(text) == 16 else int(text, 10)
    except ValueError:
        raise BadRequest(f"dpid: {text!r} is not a datapath id (e.g. 0x1, 1 or 0000000000000001)") from None
    if not 0 <= dpid < 2**64:
        raise BadRequest(f"dpid: {text!r} is out of range (64 bits)")
    return dpid


def _repair(query: Mapping[str, str], state: str) -> bool:
    """`repair=true`: a switch found differing from the desired flows is repaired at once (read
    again and sent the difference by its worker, as on a reconnect), not at its next reconnect."""
    value = query.get("repair", "false")
    if value not in ("true", "false"):
        raise BadRequest(f"repair: {value!r} is not true or false")
    if value == "true" and state == "desired":
        raise BadRequest("repair: only with state=actual or state=diff (what the switch holds)")
    return value == "true"


def flow_json(flow: Flow, owners: Mapping[int, str]) -> Json:
    """One flow for operators: where, what it matches and does, and whose it is and why."""
    decoded = cookies.decode(flow.cookie)
    purpose = decoded.purpose_label
    return {
        "table": flow.table, "table_id": table_id(flow.table), "priority": flow.priority,
        "match": {name: value if isinstance(value, int | str) else "/".join(map(str, value))
                  for name, value in flow.match},
        "actions": [str(action) for action in flow.actions], "goto": flow.goto,
        "cookie": f"{flow.cookie:#018x}", "purpose": purpose,
        "owner": owners.get(decoded.owner_id) if decoded.owner_id else None, "text": render(flow),
    }  # fmt: skip


def owner_names(placements: Iterable[PlacementView], *, ports: Mapping[int, str]) -> dict[int, str]:
    """Owner id -> name for the keys of one switch's flows: its placements' IPs (and IPv6
    link-locals) and MACs (a MAC several placements share, an ipvlan node's, is named after the
    node), and its ports. One naming for the REST answers and `underlayctl flows --explain`."""
    return owner_map((Placement(view.ip, view.mac, view.port, view.owner, view.vlan) for view in placements),
                     ports=ports)


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="milliseconds")


class OperatorRoutes:
    """Handlers of the operators' GET routes; `service` is set by the application."""

    service: Service

    # -- switches ----------------------------------------------------------------------------------

    def list_switches(self, request: Any) -> Json:
        fabric = self._inspectable()
        connected = set(fabric.connected()) if fabric is not None else set()
        dpids = sorted({*self.service.switches(), *connected})
        return {"switches": [self._switch(dpid, fabric, connected=dpid in connected) for dpid in dpids]}

    def switch_flows(self, request: Any) -> Json:
        dpid = parse_dpid(request.params["dpid"])
        state = request.query.get("state", "desired")
        if state not in STATES:
            raise BadRequest(f"state: {state!r} is not one of {', '.join(STATES)}")
        fabric = self._inspectable()
        if dpid not in self.service.switches() and (fabric is None or dpid not in fabric.connected()):
            known = ", ".join(f"{d:016x}" for d in self.service.switches()) or "none"
            raise NotFound(f"switch {dpid:016x}: not known to the controller (known: {known})")
        repair = _repair(request.query, state)
        owners = self._owners(dpid)
        desired = self._desired(dpid)
        if state == "desired":
            return {"dpid": dpid, "state": state, "flows": [flow_json(f, owners) for f in sort_flows(desired)]}
        actual = self._actual(dpid, fabric)
        to_delete, to_add = diff(actual, desired)
        if repair and fabric is not None and (to_delete or to_add):
            fabric.resync(dpid)  # answered with what was read; the worker repairs it from now
        if state == "actual":
            return {"dpid": dpid, "state": state, "flows": [flow_json(f, owners) for f in sort_flows(actual)]}
        return {"dpid": dpid, "state": state, "in_sync": not (to_delete or to_add),
                "to_delete": [flow_json(f, owners) for f in sort_flows(to_delete)],
                "to_add": [flow_json(f, owners) for f in sort_flows(to_add)]}

    def _switch(self, dpid: int, fabric: Inspectable | None, *, connected: bool) -> Json:
        status = fabric.session_status(dpid) if fabric is not None and connected else None
        state = self.service.desired_state(dpid)
        desired, actual, error = self._desired(dpid, state), None, None
        if status is not None:
            try:
                actual = self._actual(dpid, fabric)
            except SwitchUnavailable as err:  # it went away, or did not answer, since
                error = str(err)
        in_sync = None if actual is None else diff(actual, desired) == ((), ())
        return {
            "dpid": dpid, "name": self._switch_name(dpid), "connected": status is not None,
            "role": None if status is None else status.role, "flows_desired": len(desired),
            "flows_actual": None if actual is None else len(actual),
            "last_convergence": None if status is None else iso(status.last_convergence),
            "in_sync": in_sync, "error": error or (None if status is None else status.failure),
            "audit_interval": None if status is None else status.audit_interval,
            "last_audit": None if status is None else iso(status.last_audit),
            "ports": [{"number": port.number, "role": port.role.value} for port in state.ports],
        }  # fmt: skip

    def _switch_name(self, dpid: int) -> str | None:
        switch = self.service.config.switches.get(dpid)
        name = getattr(switch, "name", None)  # `[switches."0x1"] name`, once the config has it
        return name if isinstance(name, str) else None

    def _desired(self, dpid: int, state: SwitchState | None = None) -> frozenset[Flow]:
        try:
            return desired_flows(state or self.service.desired_state(dpid))
        except StateError as err:  # the controller's bug: the switch's worker reports it too
            raise SwitchUnavailable(f"switch {dpid:016x}: its desired state has no flows: {err}") from err

    def _actual(self, dpid: int, fabric: Inspectable | None) -> frozenset[Flow]:
        if fabric is None:
            raise SwitchUnavailable(f"switch {dpid:016x}: the OpenFlow side is not running")
        return fabric.read_flows(dpid, cookie=self.service.config.cookie)

    def _owners(self, dpid: int) -> dict[int, str]:
        here = [view for view in self.service.placements() if view.dpid == dpid]
        ports = {view.port: view.owner for view in here if view.owner.startswith("node/")}
        switch = self.service.config.switches.get(dpid)
        ports.update({port: f"trusted port {port}" for port in (switch.trusted_ports if switch else ())})
        return owner_names(here, ports=ports)

    def _inspectable(self) -> Inspectable | None:
        fabric = self.service.fabric
        if all(hasattr(fabric, name) for name in ("connected", "session_status", "read_flows")):
            return fabric  # type: ignore[return-value]
        return None

    # -- pools, nodes, pods ------------------------------------------------------------------------

    def list_pools(self, request: Any) -> Json:
        pools: dict[str, Json] = {}
        default = self.service.config.pools
        for usage in self.service.pool_usage():
            pool = pools.setdefault(usage.pool, {
                "name": usage.pool, "default": getattr(default.get(usage.pool), "default", False),
                "size": 0, "allocated": 0, "reserved": 0, "cooldown": 0, "families": []})
            family = {"family": usage.family, "subnet": usage.subnet, "size": usage.size,
                      "allocated": usage.allocated, "reserved": usage.reserved, "cooldown": usage.cooldown}
            pool["families"].append(family)
            for key in ("size", "allocated", "reserved", "cooldown"):
                pool[key] += family[key]
        return {"pools": list(pools.values())}

    def list_nodes(self, request: Any) -> Json:
        pods: dict[str, int] = {}
        for pod in self.service.allocations():
            pods[pod.node] = pods.get(pod.node, 0) + 1
        return {"nodes": [
            {"name": view.node.name, "mac": view.node.mac, "ip": view.node.ip, "ip6": view.node.ip6,
             "dpid": view.dpid, "port": view.port, "pods": pods.get(view.node.name, 0)}
            for view in self.service.nodes()]}  # fmt: skip

    def list_all_pods(self, request: Any) -> Json:
        placed = {(view.owner, view.ip): view for view in self.service.placements()}
        answer = []
        for pod in sorted(self.service.allocations(), key=lambda p: (p.namespace, p.name, p.ifname)):
            view = placed.get((pod.owner, pod.ip))
            answer.append({
                "namespace": pod.namespace, "name": pod.name, "container_id": pod.container_id, "ifname": pod.ifname,
                "node": pod.node, "ip": pod.ip, "ips": list(pod.ips), "mac": pod.mac if view is None else view.mac,
                "mode": pod.mode.value, "pool": pod.pool, "uid": pod.uid, "dpid": None if view is None else view.dpid,
                "port": None if view is None else view.port, "state": "placed" if view else "unplaced"})  # fmt: skip
        return {"pods": answer}
