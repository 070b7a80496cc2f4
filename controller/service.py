"""The controller's use cases: what the REST API and the OpenFlow app ask for.

`Service` owns the working state in memory (nodes, pods, the IPAM, a per-switch placement index)
and writes every change through to the `Store` before it counts. It never talks OpenFlow itself:
it tells the `Fabric` which switches must converge to `desired_state(dpid)` and waits for that.

Concurrency: one lock guards memory and store writes. It is never held while waiting for a switch
or for the store's commit (`_change`: write under the lock, `sync` after it), so concurrent requests
share commits and bundles, and the switch sessions asking for `desired_state` proceed in parallel.
A pod's allocation is visible to `desired_state` as soon as it is written, and removed again if its
switch does not acknowledge: the next convergence of that switch removes its flows.

Removal is best effort towards the switches (DEL must not fail because a switch is down; the
switch converges on reconnect), adding is not (ADD answers only after the barrier).

Registering and locating nodes, and the checks that keep each MAC and IP its holder's, are in
controller/identity.py (`Identity`, a base class sharing this state), by controller/edge.py's rules.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from controller import cluster, edge, fabricstate, intent, ipam, sticky
from controller.config import Config, PoolConfig, Route
from controller.errors import (AddressInUse, BadRequest, ConflictError, ControllerError, NotFound, PoolCoolingDown,
                               PoolExhausted, TemporaryError)
from controller.identity import Identity
from controller.logs import kv
from controller.metrics import ControllerMetrics, switch_label
from controller.store import AddressTaken, Mode, Node, Pod, Store, Writes
from controller.topology import Forwarding
from openflow.model import Placement, PortRole, SwitchPort, SwitchState

LOG = logging.getLogger("underlay.service")
Key = tuple[str, str]


class Fabric(Protocol):
    def apply(self, dpids: Iterable[int], *, timeout: float) -> None:
        """Bring these switches to the desired state and return after their barrier replies.
        Raises SwitchUnavailable (a TemporaryError) when a switch is not connected or does not answer."""

    def seen(self, dpids: Iterable[int], *, cookie: int, mac: str | None = None, ip: str | None = None
             ) -> dict[int, tuple[int, ...]]:
        """Where each switch saw `mac` as a source, or `ip` as an ARP sender, on a trusted port lately
        (its `seen` table, see openflow.pipeline): dpid -> ports. Raises SwitchUnavailable as `apply`."""


@dataclass(frozen=True)
class PodRequest:
    container_id: str
    ifname: str
    namespace: str
    name: str
    mode: Mode
    pool: str | None = None
    ip: str | None = None
    mac: str | None = None
    sticky: str | None = None
    uid: str | None = None  # the pod's (K8S_POD_UID): the leak collector tells pods apart by it
    pools: tuple[str, ...] = ()  # set by intent resolution: the pools to try in order (else `pool`)
    ips: tuple[str, ...] = ()  # requested addresses besides `ip`, at most one per family (dual stack)

    @property
    def key(self) -> Key:
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class Address:
    """One address of an attachment, with its subnet's prefix length and its family's gateway."""

    ip: str
    prefix: int
    gateway: str | None

    @property
    def family(self) -> int:
        return 6 if ":" in self.ip else 4


@dataclass(frozen=True)
class Attachment:
    """The answer to an ADD: everything the agent puts on the pod's link. `prefix` and `gateway`
    are the first address's (IPv4 in a dual-stack pool); `addresses` has every family's."""

    pod: Pod
    prefix: int
    gateway: str | None
    routes: tuple[Route, ...]
    addresses: tuple[Address, ...] = ()


@dataclass(frozen=True)
class NodeView:
    node: Node
    dpid: int | None
    port: int | None


@dataclass(frozen=True)
class PlacementView:
    ip: str
    mac: str
    node: str
    port: int
    dpid: int
    owner: str


@dataclass(frozen=True)
class SyncResult:
    pods: tuple[Pod, ...]
    released: tuple[Pod, ...]
    unknown: tuple[Key, ...]


class Service(Identity):
    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        now: Callable[[], float],
        fabric: Fabric,
        apply_timeout: float = 5.0,
        epoch: str | None = None,
        cluster: intent.ClusterView | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        """With a `cluster`, a pod's pool, address, MAC and StatefulSet identity come from the
        cluster's objects (controller/intent.py); without one, from the request alone."""
        self.store, self.config, self.fabric, self.cluster = store, config, fabric, cluster
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self.now, self.apply_timeout = now, apply_timeout
        self.epoch = epoch or secrets.token_hex(8)
        self._lock = threading.RLock()
        self._ipam = ipam.Ipam(config.pools.values(), cooldown=config.release_cooldown)
        self._nodes: dict[str, Node] = {}
        self._pods: dict[Key, Pod] = {}
        self._pending: set[Key] = set()
        self._macvlan_macs: dict[str, Pod] = {}  # a MAC is one pod's: two on a segment break both
        self._remote = fabricstate.RemotePlacements(fabricstate.from_config(config.switches, config.links))
        self._index = _PlacementIndex(self._remote)
        self._refusals = edge.Refusals(now=now)
        self._restore()

    def _restore(self) -> None:
        """A restarted controller continues where it stopped: everything comes from the store."""
        snapshot = self.store.load()
        self._ipam.restore((_lease(pod) for pod in snapshot.pods), sticky=snapshot.sticky, released=snapshot.released)
        self._ipam.restore((), sticky=snapshot.sticky6, released={})
        for node in snapshot.nodes:
            self._nodes[node.name] = node
        for pod in snapshot.pods:
            self._add_pod(pod)
        for name in self._nodes:
            self._place_node(name)
        LOG.info(kv("restored", epoch=self.epoch, nodes=len(self._nodes), pods=len(self._pods)))

    def set_pools(self, pools: Iterable[PoolConfig]) -> None:
        """The pools changed (IPPool objects): requests from now on see the new ones; leases stay."""
        with self._lock:
            self._ipam.set_pools(pools)

    # -- pods ------------------------------------------------------------------------------------

    def allocate_and_place(self, node_name: str, request: PodRequest) -> Attachment:
        """Allocate an address, store the placement, and return once the node's switch has the
        flows. If the switch does not acknowledge, the allocation is undone and the error raised."""
        (answer,) = self.place_pods(node_name, [request])
        if isinstance(answer, ControllerError):
            raise answer
        return answer

    def place_pods(self, node_name: str, requests: Sequence[PodRequest]) -> list[Attachment | ControllerError]:
        """`allocate_and_place` for several pods of one node, with one store commit and one switch
        convergence: what an agent sends when kubelet starts many pods at once. Each request gets
        its own answer, an attachment or the error about it; errors about the node (not registered,
        port unknown) and a switch that does not acknowledge are raised for all of them."""
        answers: list[Attachment | ControllerError | None] = [None] * len(requests)
        requests, involved = self._resolve(node_name, requests, answers)  # the MAC may come from intent
        for index, refusal in self._screen_macs(requests).items():
            answers[index] = answers[index] or refusal
        claims: dict[int, tuple[Pod, bool]] = {}  # request index -> (pod, created by this call)
        try:
            with self._change():
                watch = self.metrics.stopwatch()  # the steps' times, from holding the lock
                node = self._registered(node_name)
                dpid, port = self._location(node_name)
                if dpid is None or port is None:
                    raise TemporaryError(
                        f"node {node_name}'s switch port is not known yet (no frame seen from {node.mac})", delay=1.0
                    )
                with self.store.transaction() as tx:  # the batch's writes: all, or none if the store refuses
                    for index, request in enumerate(requests):
                        if answers[index] is not None:
                            continue  # refused by intent or _screen_macs
                        try:
                            claims[index] = self._claim(node, request, tx)
                        except ControllerError as err:  # raised before its pod wrote anything
                            answers[index] = err
                watch.lap("ipam")
            if claims:
                watch.lap("store")  # the commit (`_change`), shared with concurrent callers
                self._apply_placed(dpid)
                watch.lap("switch")
        except BaseException:
            self._undo([pod for pod, created in claims.values() if created])
            raise
        finally:
            with self._lock:
                self._pending.difference_update(pod.key for pod, _ in claims.values())
        for index, (pod, _) in claims.items():
            answers[index] = self._attachment(pod)
        for index, about in involved.items():
            if isinstance(answers[index], ControllerError) and self.cluster is not None:
                cluster.tell(self.cluster, about, answers[index])  # type: ignore[arg-type]
        return answers  # type: ignore[return-value]  # every index is answered

    def _resolve(
        self, node_name: str, requests: Sequence[PodRequest], answers: list[Attachment | ControllerError | None]
    ) -> tuple[list[PodRequest], dict[int, Mapping[str, Any]]]:
        """With a cluster, each request as its pod's intent completes it (a failure is its answer),
        and the pod each one is about, for Events. Runs without the lock: reads may reach the API.
        An interface already allocated is answered as it is (ADD is idempotent, even after its pool
        was disabled or its annotations changed)."""
        requests = list(requests)
        if self.cluster is None:
            return requests, {}
        with self._lock:
            pools = list(self._ipam.pools.values())
            known = {request.key for request in requests if request.key in self._pods}
        involved: dict[int, Mapping[str, Any]] = {}
        for index, request in enumerate(requests):
            if request.key in known:
                continue
            asked = ",".join(dict.fromkeys(ip for ip in (request.ip, *request.ips) if ip)) or None
            ask = cluster.Ask(request.namespace, request.name, request.uid, node_name,
                              intent.Request(request.ifname, request.pool, asked, request.mac), request.sticky)
            try:
                found = cluster.resolve(self.cluster, ask, pools=pools)
            except ControllerError as err:
                answers[index], involved[index] = err, cluster.involved(ask)
                continue
            involved[index] = found.involved
            requests[index] = replace(request, pool=found.pools[0], pools=found.pools, ip=None,
                                      ips=() if found.ip is None else tuple(found.ip.split(",")), mac=found.mac,
                                      sticky=found.sticky or request.sticky)  # fmt: skip
        return requests, involved

    def _claim(self, node: Node, request: PodRequest, tx: Writes) -> tuple[Pod, bool]:
        """The pod for this request, allocated if new, and marked pending until its flows are in."""
        pod = self._pods.get(request.key)
        created = pod is None
        if pod is None:
            pod = self._allocate_free(node, request, tx)
        elif request.key in self._pending:
            raise TemporaryError(f"container {_name(request.key)}: its ADD is still in progress", delay=1.0)
        elif pod.node != node.name:
            raise ConflictError(f"container {_name(request.key)}: already placed on node {pod.node}")
        else:
            self._ipam.plan(_ipam_request(request), now=self.now())  # same answer, or a conflict
        self._pending.add(request.key)
        return pod, created

    def _allocate_free(self, node: Node, request: PodRequest, tx: Writes) -> Pod:
        """`_allocate` until the store takes the address: with the Kubernetes store another
        controller may hold the first ones the IPAM offers; each is marked held by its holder."""
        while True:
            try:
                return self._allocate(node, request, tx)
            except AddressTaken as taken:
                self._ipam.mark_held(ipam.Lease(taken.container_id, taken.ifname, taken.owner, taken.pool, taken.ip))

    def _allocate(self, node: Node, request: PodRequest, tx: Writes) -> Pod:
        owner = f"{request.namespace}/{request.name}"
        if request.mac is not None and request.mode is not Mode.MACVLAN:
            raise BadRequest(f"mac: pod {owner}: only macvlan pods choose their MAC")
        mac = None if request.mac is None else ipam.parse_mac(request.mac)
        lease = self._plan(request, tx)
        if request.mode is Mode.IPVLAN:
            mac = node.mac
        elif mac is None:
            mac = ipam.derive_mac(lease.ip)
        self._check_pod_mac(mac, owner=owner, mode=request.mode)
        pod = Pod(
            request.container_id, request.ifname, node.name, request.namespace, request.name,
            lease.pool, lease.ip, mac, request.mode, request.sticky, created_at=self.now(), uid=request.uid,
            ip6=lease.ip6,
        )  # fmt: skip
        tx.put_pod(pod)  # both families in one write: the store takes both or raises having taken none
        if pod.sticky is not None:
            for ip in pod.ips:
                tx.reserve(pod.sticky, ip)
        self._ipam.commit(lease)
        self._add_pod(pod)
        if LOG.isEnabledFor(logging.DEBUG):  # per pod: thousands a minute on a busy segment
            LOG.debug(kv("allocated", pod=owner, container=_name(pod.key), ip=pod.ip, mac=mac, node=node.name))
        return pod

    def _plan(self, request: PodRequest, tx: Writes) -> ipam.Lease:
        """The lease from the first of the request's pools with a free address (one cooling down
        counts as full: the next pool has room now)."""
        names, who = request.pools or (request.pool,), f"pod {request.namespace}/{request.name}"
        cooling: list[PoolCoolingDown] = []
        for name in names:
            try:
                return self._plan_in(request if name == request.pool else replace(request, pool=name), tx)
            except PoolCoolingDown as err:
                cooling.append(err)
            except PoolExhausted as err:
                if len(names) == 1:
                    raise PoolExhausted(f"{who}: {err}") from None
        if cooling:
            raise PoolCoolingDown(f"{who}: {'; '.join(map(str, cooling))}", delay=min(e.delay for e in cooling))
        raise PoolExhausted(f"{who}: pools {', '.join(map(str, names))} are exhausted")

    def _plan_in(self, request: PodRequest, tx: Writes) -> ipam.Lease:
        """A fixed address reserved for this StatefulSet pod's namesake in a deleted StatefulSet
        (same name and ordinal, another UID) is taken over: that reservation can never be used."""
        try:
            return self._ipam.plan(_ipam_request(request), now=self.now())
        except AddressInUse as err:
            old = None if err.reserved_for is None else sticky.parse_key(err.reserved_for)
            new = None if request.sticky is None else sticky.parse_key(request.sticky)
            if old is None or new is None or not new.supersedes(old):
                raise
            tx.unreserve(old.key)
            self._ipam.unreserve(old.key)
            asked = ",".join(filter(None, (request.ip, *request.ips)))
            LOG.info(kv("sticky reservation superseded", old=old.key, new=new.key, ip=asked))
            return self._ipam.plan(_ipam_request(request), now=self.now())

    def _undo(self, pods: list[Pod]) -> None:
        """Take back allocations whose flows were never acknowledged, sticky reservations included:
        no cooldown, the addresses never answered on the wire."""
        if not pods:
            return
        with self._change():
            with self.store.transaction() as tx:
                for pod in pods:
                    lease = self._ipam.get(pod.key)
                    tx.delete_pod(*pod.key)
                    if lease is not None and lease.sticky is not None:
                        tx.unreserve(lease.sticky)
                        for ip in lease.sticky_before:
                            tx.reserve(lease.sticky, ip)
            for pod in pods:
                self._ipam.rollback(pod.key)
                self._remove_pod(pod)
                LOG.warning(kv("allocation rolled back", pod=pod.owner, container=_name(pod.key), ip=",".join(pod.ips)))

    def release(self, node_name: str, container_id: str, ifname: str) -> bool:
        """Release one interface's address. Idempotent: what is not there is `False`, not an error."""
        with self._change():
            pod = self._pods.get((container_id, ifname))
            if pod is None or pod.node != node_name:
                return False
            self._release([pod])
            dpid = self._location(node_name)[0]
        self._converge_best_effort({dpid}, why=f"pod {pod.owner} released")
        return True

    def forget_sticky(self, sticky: str, *, reason: str | None = None) -> str | None:
        """Drop a sticky reservation for good (its StatefulSet pod will not come back); the address
        then cools down like any released one. Returns the address, or None if there was none."""
        with self._change():
            address = self._ipam.reserved().get(sticky)
            if address is None:
                return None
            with self.store.transaction() as tx:
                tx.unreserve(sticky)
            LOG.info(kv("sticky reservation dropped", key=sticky, ip=address, reason=reason))
            return self._ipam.unreserve(sticky)

    def release_leaked(self, pod: Pod, *, reason: str) -> bool:
        """Release an allocation the leak collector found abandoned, if it is still exactly that
        one (not re-added, not in the middle of an ADD); the reason goes to the store."""
        with self._change():
            current = self._pods.get(pod.key)
            if current is None or (current.ip, current.uid) != (pod.ip, pod.uid) or pod.key in self._pending:
                return False
            self._release([current], reason=reason)
            dpid = self._location(current.node)[0]
        self._converge_best_effort({dpid}, why=f"pod {pod.owner}'s leaked address released")
        return True

    def allocations(self) -> list[Pod]:
        """Every pod interface holding an address (for the leak collector)."""
        with self._lock:
            return list(self._pods.values())

    def reservations(self) -> dict[str, str]:
        """Sticky key -> address, for every reservation."""
        with self._lock:
            return self._ipam.reserved()

    def sync(self, node_name: str, present: Iterable[Key]) -> SyncResult:
        """Converge on an agent's full list of attachments: release what it no longer has.

        Allocations younger than `resync_grace` are kept: the agent's list may have been taken
        before their ADD finished."""
        present = set(present)
        with self._change():
            self._registered(node_name)
            mine = [pod for pod in self._pods.values() if pod.node == node_name]
            young_since = self.now() - self.config.resync_grace
            stale = [p for p in mine if p.key not in present and p.created_at <= young_since and p.key not in self._pending]
            self._release(stale)
            kept = tuple(pod for pod in mine if pod not in stale)
            unknown = tuple(sorted(key for key in present if not self._is_on(key, node_name)))
            dpid = self._location(node_name)[0]
        if stale:
            self._converge_best_effort({dpid}, why=f"node {node_name} synced")
        return SyncResult(pods=kept, released=tuple(stale), unknown=unknown)

    def _release(self, pods: list[Pod], *, reason: str | None = None) -> None:
        if not pods:
            return
        now = self.now()
        with self.store.transaction() as tx:
            for pod in pods:
                tx.delete_pod(*pod.key)
                for ip in pod.ips:
                    tx.mark_released(ip, now, reason=reason)
        for pod in pods:
            self._ipam.release(pod.key, now=now)
            self._remove_pod(pod)
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug(kv("released", pod=pod.owner, container=_name(pod.key), ip=pod.ip, node=pod.node))

    def list_pods(self, node_name: str) -> list[Pod]:
        with self._lock:
            self._registered(node_name)
            return [self._effective(pod) for pod in self._pods.values() if pod.node == node_name]

    # -- views -----------------------------------------------------------------------------------

    def placements(self) -> list[PlacementView]:
        with self._lock:
            views = [view for name in sorted(self._nodes) for view in self._node_placements(name)]
            views += [view for pod in self._pods.values() for view in self._pod_placements(pod)]
        return views

    def pool_usage(self) -> list[ipam.Usage]:
        with self._lock:
            return self._ipam.usage(now=self.now())

    def nodes(self) -> list[NodeView]:
        """Every registered node, where its uplink is (operators' GET /v1/nodes)."""
        with self._lock:
            return [self._view(name) for name in sorted(self._nodes)]

    def switches(self) -> list[int]:
        """Every switch the controller knows of: configured, or where a node was located."""
        with self._lock:
            located = {self._location(name)[0] for name in self._nodes}
        return sorted({*self.config.switches, *(d for d in located if d is not None)})

    def desired_state(self, dpid: int) -> SwitchState:
        """What switch `dpid` should hold: trusted ports, node ports, every placement behind them,
        and the MACs of nodes whose port is still to be learned (there, or anywhere if unpinned).
        In a fabric also its link ports, its part of the tree, and every placement of the switches it
        reaches, behind its next-hop port towards each (controller/fabricstate.py)."""
        with self._lock:
            forwarding = self._remote.forwarding
            ports = {n: SwitchPort(n, PortRole.LINK) for n in forwarding.link_ports(dpid)}
            ports.update({n: SwitchPort(n, PortRole.TRUSTED) for n in self._trusted(dpid)})
            learn = []
            for name, node in self._nodes.items():
                where, port = self._location(name)
                if where == dpid and port is not None:
                    ports.setdefault(port, SwitchPort(port, PortRole.NODE))
                elif port is None and where in (None, dpid):
                    learn.append(node.mac)
            return SwitchState(
                dpid=dpid,
                cookie=self.config.cookie,
                ports=tuple(sorted(ports.values())),
                placements=self._index.on(dpid),
                unknown_destination=self.config.unknown_destination,
                learn_macs=tuple(sorted(learn)),
                tree_links=tuple(sorted(forwarding.tree_ports(dpid))),
            )

    # -- the fabric ------------------------------------------------------------------------------

    @property
    def forwarding(self) -> Forwarding:
        return self._remote.forwarding

    def set_forwarding(self, forwarding: Forwarding) -> bool:
        """The fabric's links changed (controller/links.py): desired states follow it from now on,
        remote placements re-pointed. The caller has every switch converge (one bundle each): it
        runs on the OpenFlow event thread, which must not wait for switches. False: no change."""
        with self._lock:
            return self._remote.set_forwarding(forwarding)

    def node_located(self, mac: str, *, dpid: int, port: int) -> frozenset[int]:
        changed = super().node_located(mac, dpid=dpid, port=port)
        with self._lock:
            return changed | self._remote.peers(changed)

    def _seen(self, dpids: Iterable[int], *, mac: str | None = None, ip: str | None = None) -> edge.Seen:
        """In a fabric, a host behind any switch's trusted port is seen: ask every switch that
        reaches these (controller/identity.py asks a located node's own switch)."""
        dpids = set(dpids)
        with self._lock:
            dpids |= self._remote.peers(dpids)
        return super()._seen(dpids, mac=mac, ip=ip)

    def _apply_placed(self, dpid: int) -> None:
        """Converge a switch whose placements were added, and every switch that reaches it, all at
        once; only the pod's own switch must acknowledge (the others converge on reconnect)."""
        with self._lock:
            peers = self._remote.peers({dpid})
        try:
            self.fabric.apply([dpid, *peers], timeout=self.apply_timeout)
        except TemporaryError:
            if not peers:
                raise
            self.fabric.apply([dpid], timeout=self.apply_timeout)
            self._converge_each(peers, why=f"placements of switch {dpid:x}")

    # -- helpers ---------------------------------------------------------------------------------

    @contextmanager
    def _change(self) -> Iterator[None]:
        """Change memory and store under the lock, then wait for the store's commit outside it: the
        caller answers only once its change is durable, and concurrent callers share a commit."""
        with self._lock:
            yield
        try:
            self.store.sync()
        except Exception:
            self.metrics.store_failures.inc()
            raise

    def _registered(self, name: str) -> Node:
        node = self._nodes.get(name)
        if node is None:
            raise NotFound(f"node {name}: not registered (PUT /v1/nodes/{name} first)")
        return node

    def _is_on(self, key: Key, node_name: str) -> bool:
        pod = self._pods.get(key)
        return pod is not None and pod.node == node_name

    def _pinned(self, name: str) -> bool:
        pinned = self.config.nodes.get(name)
        return pinned is not None and pinned.port is not None

    def _location(self, name: str) -> tuple[int | None, int | None]:
        """(dpid, port) of a node's uplink: pinned in the config, else learned, else unknown."""
        pinned = self.config.nodes.get(name)
        if pinned is not None and pinned.port is not None:
            return pinned.dpid, pinned.port
        node = self._nodes.get(name)
        if node is None or node.port is None:
            return (None if pinned is None else pinned.dpid), None
        return self._located(node)

    @staticmethod
    def _located(node: Node) -> tuple[int | None, int | None]:
        return node.dpid, node.port

    def _trusted(self, dpid: int) -> tuple[int, ...]:
        switch = self.config.switches.get(dpid)
        return () if switch is None else switch.trusted_ports

    def _view(self, name: str) -> NodeView:
        dpid, port = self._location(name)
        return NodeView(self._nodes[name], dpid, port)

    def _effective(self, pod: Pod) -> Pod:
        """An ipvlan pod answers at its node's current MAC, whatever it was at allocation."""
        node = self._nodes.get(pod.node)
        if pod.mode is Mode.IPVLAN and node is not None and node.mac != pod.mac:
            return replace(pod, mac=node.mac)
        return pod

    def _attachment(self, pod: Pod) -> Attachment:
        """What the agent configures. An address whose pool (or family) went away since keeps a
        host prefix and no gateway; the routes are those of the families the pod has."""
        pool = self._ipam.pools.get(pod.pool)
        with self._lock:
            pod = self._effective(pod)
        addresses = tuple(_address(pool, ip) for ip in pod.ips)
        families = {address.family for address in addresses}
        routes = () if pool is None else tuple(r for r in pool.routes if (6 if ":" in r.dst else 4) in families)
        first = addresses[0]
        return Attachment(pod, prefix=first.prefix, gateway=first.gateway, routes=routes, addresses=addresses)

    def _add_pod(self, pod: Pod) -> None:
        self._pods[pod.key] = pod
        if pod.mode is Mode.MACVLAN:
            self._macvlan_macs[pod.mac] = pod
        self._place_pod(pod)

    def _remove_pod(self, pod: Pod) -> None:
        self._pods.pop(pod.key, None)
        if self._macvlan_macs.get(pod.mac) == pod:
            del self._macvlan_macs[pod.mac]
        self._index.discard(("pod", *pod.key))

    def _place_node(self, name: str) -> None:
        """Recompute a node's uplink placements and its pods' (after it registered or moved)."""
        self._index.set(("node", name), self._node_placements(name))
        for pod in self._pods.values():
            if pod.node == name:
                self._place_pod(pod)

    def _place_pod(self, pod: Pod) -> None:
        self._index.set(("pod", *pod.key), self._pod_placements(pod))

    def _node_placements(self, name: str) -> list[PlacementView]:
        """The node's uplink: one placement per address it registered (IPv4, and IPv6 if any)."""
        node, (dpid, port) = self._nodes.get(name), self._location(name)
        if node is None or dpid is None or port is None:  # None: forgotten (controller/nodelife.py)
            return []
        ips = (node.ip,) if node.ip6 is None else (node.ip, node.ip6)
        return [PlacementView(ip, node.mac, name, port, dpid, f"node/{name}") for ip in ips]

    def _pod_placements(self, pod: Pod) -> list[PlacementView]:
        """One placement per address: a dual-stack pod has two, same MAC, same port."""
        dpid, port = self._location(pod.node)
        if dpid is None or port is None:
            return []
        pod = self._effective(pod)
        return [PlacementView(ip, pod.mac, pod.node, port, dpid, pod.owner) for ip in pod.ips]

    def _converge_best_effort(self, dpids: set[int | None], *, why: str) -> None:
        """Push a change that must not fail its request: a switch that is down converges on reconnect.

        `None` stands for "not located yet": such a node may appear on any switch, so all of them
        must hold the flow that sends its first frame to us."""
        targets = set(self.switches()) if None in dpids else {d for d in dpids if d is not None}
        with self._lock:
            together = self._remote.active
            targets |= self._remote.peers(targets)
        self._converge_each(targets, why=why, together=together)

    def _converge_each(self, targets: set[int], *, why: str, together: bool = False) -> None:
        """Best effort, switch by switch; `together` (a fabric's switches) first tries them all at
        once, so they converge in parallel, and goes one by one only if one of them fails."""
        if together:
            try:
                self.fabric.apply(sorted(targets), timeout=self.apply_timeout)
                return
            except TemporaryError:
                pass  # which one? each on its own: the others still converge
        for dpid in sorted(targets):
            try:
                self.fabric.apply([dpid], timeout=self.apply_timeout)
            except TemporaryError as err:
                LOG.warning(kv("switch not converged", why=why, switch=switch_label(dpid), error=err))


class _PlacementIndex:
    """Each switch's placements as a set kept up to date, so `desired_state` costs a set copy (which
    reuses the stored hashes) and the switch's `DesiredFlows` diffs it against the last one in C.
    In a fabric, a switch also holds the others' placements, re-pointed (`RemotePlacements`)."""

    def __init__(self, remote: fabricstate.RemotePlacements) -> None:
        self._where: dict[Hashable, list[tuple[int, Placement]]] = {}
        self._on: dict[int, set[Placement]] = {}
        self._remote = remote

    def set(self, key: Hashable, views: Sequence[PlacementView]) -> None:
        self.discard(key)
        if not views:
            return
        placed = [(view.dpid, Placement(view.ip, view.mac, view.port, view.owner)) for view in views]
        for dpid, placement in placed:
            self._on.setdefault(dpid, set()).add(placement)
            self._remote.added(dpid, placement)
        self._where[key] = placed

    def discard(self, key: Hashable) -> None:
        for dpid, placement in self._where.pop(key, ()):
            self._on[dpid].discard(placement)
            self._remote.removed(dpid, placement)

    def on(self, dpid: int) -> frozenset[Placement]:
        if not self._remote.active:
            return frozenset(self._on.get(dpid, ()))
        return frozenset().union(self._on.get(dpid, ()), *self._remote.on(dpid, self._on))


def _lease(pod: Pod) -> ipam.Lease:
    return ipam.Lease(pod.container_id, pod.ifname, pod.owner, pod.pool, pod.ip, pod.sticky, ip6=pod.ip6)


def _address(pool: ipam.Pool | None, ip: str) -> Address:
    space = None if pool is None else pool.space(6 if ":" in ip else 4)
    if space is None:
        return Address(ip, prefix=128 if ":" in ip else 32, gateway=None)
    return Address(ip, prefix=space.prefix, gateway=space.gateway)


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def _ipam_request(request: PodRequest) -> ipam.Request:
    owner = f"{request.namespace}/{request.name}"
    return ipam.Request(request.container_id, request.ifname, owner, request.pool, request.ip, request.sticky,
                        ips=request.ips)
