"""The service's identity use cases: registering a node, learning where it is, and the checks
that keep every MAC and IP on the segment its holder's. The rules are controller.edge's; this
applies them to the service's state and says what the switches have seen.

`Identity` is a base class of `controller.service.Service` and shares its state (nodes, pods, the
lock, the store, the fabric); it is apart so that each module stays one size a reader can hold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

from controller import edge, ipam, nodelife
from controller.config import KUBERNETES_STORE, Config, NodeConfig
from controller.errors import BadRequest, ConflictError, ControllerError, NotFound, TemporaryError
from controller.logs import kv
from controller.metrics import ControllerMetrics, switch_label
from controller.store import Mode, Node, Pod, Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from controller.intent import ClusterView
    from controller.service import Fabric, Key, NodeView, PodRequest

LOG = logging.getLogger("underlay.service")
REFUSAL_KINDS = ("node_locations_refused", "node_claims_refused", "pod_macs_refused")


class Identity:
    config: Config
    store: Store
    fabric: Fabric
    cluster: ClusterView | None
    now: Callable[[], float]
    _lock: threading.RLock
    _nodes: dict[str, Node]
    _pods: dict[Key, Pod]
    _pending: set[Key]
    _macvlan_macs: dict[str, Pod]
    _ipam: ipam.Ipam
    _refusals: edge.Refusals
    metrics: ControllerMetrics

    if TYPE_CHECKING:  # what Service provides
        def switches(self) -> list[int]: ...
        def _change(self) -> AbstractContextManager[None]: ...
        def _location(self, name: str) -> tuple[int | None, int | None]: ...
        @staticmethod
        def _located(node: Node) -> tuple[int | None, int | None]: ...
        def _pinned(self, name: str) -> bool: ...
        def _trusted(self, dpid: int) -> tuple[int, ...]: ...
        def _place_node(self, name: str) -> None: ...
        def _view(self, name: str) -> NodeView: ...
        def _converge_best_effort(self, dpids: set[int | None], *, why: str) -> None: ...
        def _release(self, pods: list[Pod], *, reason: str | None = None) -> None: ...

    # -- nodes -----------------------------------------------------------------------------------

    def register_node(self, name: str, *, mac: str, ip: str, ip6: str | None = None) -> NodeView:
        """Register or update a node's uplink. A changed MAC forgets the learned port.

        A new claim (not the node's stored MAC and IP again) is checked against what the node's
        switch has seen on its trusted ports (controller.edge), before taking the lock: that asks
        the switch. `ip6`, the node's IPv6 address, is claimed by the same rules (the switch
        records ND senders as it records ARP ones), but for pins, which are IPv4."""
        mac, ip = ipam.parse_mac(mac), ipam.parse_ip(ip)
        ip6 = None if ip6 is None else ipam.parse_ip(ip6, field_name="ip6", versions=(6,))
        self._check_known(name)
        with self._lock:
            self._check_node_claim(name, mac=mac, ip=ip)
            why = None if ip6 is None else edge.node_address_refusal(name, ip6, pools=self.config.pools.values(),
                                                                      pinned_ip=None)
            if why is not None:
                raise self._refused("node_claims_refused", ConflictError(f"node {name}: {why}"))
            known = self._nodes.get(name)
            dpid = self._location(name)[0]
        self._check_node_not_seen(name, mac=None if known is not None and known.mac == mac else mac,
                                  ip=None if known is not None and known.ip == ip else ip,
                                  dpids={dpid} if dpid is not None else set(self.switches()),
                                  ip6=None if known is not None and known.ip6 == ip6 else ip6)
        with self._change():
            self._check_node_identity(name, mac=mac, ip=ip)
            if ip6 is not None:
                self._check_node_identity(name, mac=mac, ip=ip6)
            old = self._nodes.get(name)
            node = Node(name, mac, ip, ip6=ip6) if old is None or old.mac != mac else replace(old, ip=ip, ip6=ip6)
            if node != old:
                with self.store.transaction() as tx:
                    tx.put_node(node)
                self._nodes[name] = node
                LOG.info(kv("node registered", node=name, mac=mac, ip=ip, ip6=ip6))
            dpids = {self._location(name)[0], None if old is None else self._located(old)[0]}
            self._place_node(name)
            view = self._view(name)
        self._converge_best_effort(dpids, why=f"node {name} registered")
        return view

    def _check_known(self, name: str) -> None:
        """Nodes come from Node objects with the Kubernetes store (one the cluster does not know, or
        has lost, cannot register: controller/nodelife.py); else from the config. Reads the cluster:
        call it without the lock."""
        if self.cluster is None or self.config.store != KUBERNETES_STORE:
            if name not in self.config.nodes:
                raise NotFound(f"node {name}: not in the controller's config")
            return
        kubernetes = self.config.kubernetes
        grace = nodelife.GRACE if kubernetes is None else kubernetes.node_grace
        refused = nodelife.refusal(name, self.cluster.node(name), now=self.now(), grace=grace)
        if refused is not None:
            raise refused

    def node_names(self) -> list[str]:
        with self._lock:
            return sorted(self._nodes)

    def forget_node(self, name: str, *, reason: str) -> list[Pod]:
        """The cluster has lost this node (controller/nodelife.py): release its pods (a StatefulSet
        pod's reservation stays), forget its uplink, and take its flows off its switch. A pod whose
        ADD is still in progress is left to the leak collector, as `release_leaked` leaves it."""
        with self._change():
            node = self._nodes.get(name)
            if node is None:
                return []
            dpid = self._location(name)[0]
            pods = [pod for pod in self._pods.values() if pod.node == name and pod.key not in self._pending]
            self._release(pods, reason=reason)
            with self.store.transaction() as tx:
                tx.delete_node(name)
            del self._nodes[name]
            self._place_node(name)
        self._converge_best_effort({dpid}, why=f"node {name} forgotten")
        return pods

    def node_located(self, mac: str, *, dpid: int, port: int) -> frozenset[int]:
        """A frame from a node's MAC arrived on (dpid, port): learn where the node is, if the rule
        of controller.edge allows it (no other node holds that port; a node with pods stays put);
        a refusal is logged loudly and counted (`stats`).

        Returns the switches whose desired state changed; the caller converges them. It waits for
        the store's commit: call it off the OpenFlow event loop (controller.ofapp's locator)."""
        with self._change():
            node = next((n for n in self._nodes.values() if n.mac == mac.lower()), None)
            if node is None or self._pinned(node.name) or port in self._trusted(dpid):
                return frozenset()
            if (node.dpid, node.port) == (dpid, port):
                return frozenset()
            if self._refuse_location(node, dpid=dpid, port=port):
                return frozenset()
            moved = replace(node, dpid=dpid, port=port)
            with self.store.transaction() as tx:
                tx.put_node(moved)
            self._nodes[node.name] = moved
            self._place_node(node.name)
            if node.port is not None:  # it was somewhere else: moved, not found for the first time
                self.metrics.relocations.labels(node.name).inc()
        LOG.info(kv("node located", node=node.name, mac=mac, switch=switch_label(dpid), port=port, was=node.port))
        return frozenset(d for d in (node.dpid, dpid) if d is not None)

    def _refuse_location(self, node: Node, *, dpid: int, port: int) -> bool:
        """Whether the rule refuses to locate `node` at (dpid, port); a refusal is logged and counted."""
        located = {name: self._location(name) for name in self._nodes}
        holder = edge.port_holder((dpid, port), besides=node.name, pins=self.config.nodes, located=located)
        pods = sum(1 for pod in self._pods.values() if pod.node == node.name)
        why = edge.location_refusal(node.name, at=(dpid, port), holder=holder, located=node.port is not None, pods=pods)
        if why is None:
            return False
        was = "-" if node.dpid is None else f"{node.dpid:x}:{node.port}"
        self._refusals.refuse("node_locations_refused", (node.name, dpid, port), "node location refused",
                              node=node.name, mac=node.mac, switch=switch_label(dpid), port=port, held_by=holder,
                              located=was, why=why)
        return True

    def stats(self) -> dict[str, int]:
        """Refused identity claims, by kind (shown in /v1/health's stats)."""
        with self._lock:
            return {kind: self._refusals.counts[kind] for kind in REFUSAL_KINDS}

    def _check_node_claim(self, name: str, *, mac: str, ip: str) -> None:
        """What the config says a node may not claim (controller.edge): pins, gateways, exclusions."""
        why = edge.pin_refusal(name, mac=mac, ip=ip, pins=self.config.nodes) or edge.node_address_refusal(
            name, ip, pools=self.config.pools.values(), pinned_ip=self._pin(name).ip)
        if why is not None:
            raise self._refused("node_claims_refused", ConflictError(f"node {name}: {why}"))

    def _check_node_not_seen(self, name: str, *, mac: str | None, ip: str | None, dpids: set[int],
                             ip6: str | None = None) -> None:
        """A node's new MAC or IP (None: not new) must not be a host's its switch sees behind a
        trusted port; what the config pins to this node is vouched for."""
        pin = self._pin(name)
        for label, claim in (() if mac in (None, pin.mac) else ((f"MAC {mac}", {"mac": mac}),)) + \
                            (() if ip in (None, pin.ip) else ((str(ip), {"ip": ip}),)) + \
                            (() if ip6 is None else ((ip6, {"ip": ip6}),)):
            why = edge.seen_refusal(label, self._seen(dpids, **claim))
            if why is not None:
                raise self._refused("node_claims_refused", ConflictError(f"node {name}: {why}"))

    def _pin(self, name: str) -> NodeConfig:
        """What the config pins of a node (nothing for a node known from its Node object only)."""
        return self.config.nodes.get(name) or NodeConfig(name, token="")

    def _seen(self, dpids: Iterable[int], *, mac: str | None = None, ip: str | None = None) -> edge.Seen:
        """What these switches saw; one that does not answer is skipped (and logged), as a switch
        that is down must not fail a registration: it checks what it can."""
        found: dict[int, tuple[int, ...]] = {}
        for dpid in sorted(dpids):
            try:
                found.update(self.fabric.seen([dpid], cookie=self.config.cookie, mac=mac, ip=ip))
            except TemporaryError as err:
                LOG.warning(kv("identity check skipped", switch=switch_label(dpid), mac=mac, ip=ip, error=err))
        return found

    # -- pods' MACs ------------------------------------------------------------------------------

    def _screen_macs(self, requests: Sequence[PodRequest]) -> dict[int, ControllerError]:
        """The requests whose asked-for MAC no pod may take, whoever holds it now (controller.edge):
        a vendor MAC (unless allowed), or one a switch saw on a trusted port. Asks the switches, so it
        runs before the lock; a retried ADD of a pod that has its MAC already is not asked again."""
        refused: dict[int, ControllerError] = {}
        for index, request in enumerate(requests):
            with self._lock:
                if request.mac is None or request.mode is not Mode.MACVLAN or request.key in self._pods:
                    continue
            try:
                self._screen_mac(ipam.parse_mac(request.mac), owner=f"{request.namespace}/{request.name}")
            except ControllerError as err:
                refused[index] = err
        return refused

    def _screen_mac(self, mac: str, *, owner: str) -> None:
        why = edge.foreign_mac_refusal(mac, allow_global=self.config.allow_global_macs)
        if why is not None:
            raise self._refused("pod_macs_refused", BadRequest(f"mac: pod {owner}: {why}"))
        why = edge.seen_refusal(f"MAC {mac}", self._seen(self.switches(), mac=mac))
        if why is not None:
            raise self._refused("pod_macs_refused", ConflictError(f"pod {owner}: {why}"))

    def _check_node_identity(self, name: str, *, mac: str, ip: str) -> None:
        """A node's IP and MAC are its own: not another node's, not a pod's, not in a pool."""
        other = next((n for n in self._nodes.values() if n.name != name and (n.mac == mac or ip in (n.ip, n.ip6))), None)
        holder = self._macvlan_macs.get(mac) or next((pod for pod in self._pods.values() if ip in pod.ips), None)
        pool = self._ipam.pool_of(ip)
        if other is not None:
            why = f"{mac if other.mac == mac else ip} is already node {other.name}'s"
        elif holder is not None:
            why = f"{ip if ip in holder.ips else mac} is held by pod {holder.owner}"
        elif pool is not None:
            why = f"{ip} is in pool {pool}'s ranges; exclude it from the pool" + (
                "" if ":" in ip else f" and pin it as nodes.{name}.ip")  # an IPv6 address has no pin
        else:
            return
        raise self._refused("node_claims_refused", ConflictError(f"node {name}: {why}"))

    def _check_pod_mac(self, mac: str, *, owner: str, mode: Mode) -> None:
        """A macvlan pod's MAC is no node's (registered or pinned) and no other pod's."""
        if mode is not Mode.MACVLAN:
            return
        node = next((n.name for n in self._nodes.values() if n.mac == mac), None) or next(
            (name for name, pin in self.config.nodes.items() if pin.mac == mac), None)
        holder = self._macvlan_macs.get(mac)
        why = f"is node {node}'s uplink" if node is not None else None if holder is None else f"is held by {holder.owner}"
        if why is not None:
            raise self._refused("pod_macs_refused", ConflictError(f"pod {owner}: MAC {mac} {why}"))

    def _refused(self, kind: str, error: ControllerError) -> ControllerError:
        """Count a refused claim of `kind` (`stats`); returns the error to raise."""
        with self._lock:
            self._refusals.counts[kind] += 1
        return error
