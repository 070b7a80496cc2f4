"""The CNI verbs as the node agent carries them out: controller, kernel, rollback.

A request is the shim's parsed call (command, container_id, ifname, netns, args, config and, for a
delegated IPAM plugin, its result). Each verb returns the version-neutral CNI result (the shim
formats it for the requested spec version) or raises `CniError` with a message naming the pod.

ADD registers the undo of every step right after the step (`ExitStack`), so a failure at any point
leaves no link, no host route, no record and no allocation. DEL is idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from cni.spec import (BAD_ENV, INTERFACE_EXISTS, INTERNAL, INVALID_CONFIG, REFUSED,
                        TRY_AGAIN_LATER, UNAVAILABLE, UNKNOWN_CONTAINER, CniError, JsonObject)
from node_agent.announce import announce
from node_agent.controller_client import ControllerClient, ControllerError, PermanentError, TemporaryError
from node_agent.retry import RetryPolicy, retrying
from node_agent.shimroutes import via_node
from node_agent.netlink import (IPVLAN_MODES, LinkSpec, NetlinkFailure, NetnsGone, NodeNetlink, PodLink, PodNetns,
                                Route, Uplink, netns_path)
from node_agent.state import Attachment, AttachmentStore, owner, pod_label
from openflow.model import link_local

log = logging.getLogger("underlay.agent")
P = ParamSpec("P")
T = TypeVar("T")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class Address:
    """One address of a pod's interface, with its pool's gateway of the same family."""

    ip: str
    prefix: int
    gateway: str | None = None

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefix}"


@dataclass(frozen=True)
class Lease:
    """The addresses a pod gets (at most one per family, IPv4 first), from the controller or a
    delegated IPAM plugin."""

    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    mac: str | None
    dns: JsonObject

    @property
    def ip(self) -> str:
        return self.addresses[0].ip

    def family(self, version: int) -> Address | None:
        return next((a for a in self.addresses if (":" in a.ip) == (version == 6)), None)


@dataclass
class _ContainerLock:
    """One container's request lock, and how many requests hold or wait for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class Agent:
    def __init__(self, *, node: NodeNetlink, controller: ControllerClient | None, store: AttachmentStore,
                 master: str | None = None, shim_ifname: str = "ulshim0", retry: RetryPolicy = RetryPolicy()) -> None:
        self.node = node
        self.controller = controller
        self.retry = retry  # how long a CNI call waits for a controller that is away (node_agent.retry)
        self.store = store
        self.master = master
        self.shim_ifname = shim_ifname
        self._locks: dict[str, _ContainerLock] = {}
        self._locks_guard = threading.Lock()
        self._adding: set[tuple[str, str]] = set()
        # set by the syncer: registers this node and reports its attachments, for a controller that forgot it
        self.rejoin: Callable[[], None] | None = None
        self._shim_mac: str | None = None
        self._shim_lock = threading.Lock()
        # controller calls and node-namespace steps that run alongside a request's pod-namespace work
        self._aside = ThreadPoolExecutor(32, thread_name_prefix="aside")

    # dispatch and per-container serialisation -------------------------------------------------
    def handle(self, request: JsonObject) -> JsonObject | None:
        verb = {"ADD": self.add, "DEL": self.delete, "CHECK": self.check, "GC": self.gc,
                "STATUS": self.status}.get(request.get("command", ""))
        if verb is None:
            raise CniError(BAD_ENV, f"unknown command {request.get('command')!r}")
        if request["command"] in ("GC", "STATUS"):
            return verb(request)
        key = (request["container_id"], request["ifname"])
        with self._serialised(request["container_id"]), self._tracked(key, request["command"] == "ADD"):
            return verb(request)

    @contextlib.contextmanager
    def _serialised(self, container_id: str) -> Iterator[None]:
        """One request at a time per container; different containers run in parallel.

        A lock lives while someone holds or waits for it, so the table does not grow with churn.
        """
        with self._locks_guard:
            entry = self._locks.setdefault(container_id, _ContainerLock())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._locks_guard:
                entry.users -= 1
                if not entry.users:
                    del self._locks[container_id]

    @contextlib.contextmanager
    def _tracked(self, key: tuple[str, str], adding: bool) -> Iterator[None]:
        if not adding:
            yield
            return
        with self._locks_guard:
            self._adding.add(key)
        try:
            yield
        finally:
            with self._locks_guard:
                self._adding.discard(key)

    def in_flight(self) -> set[tuple[str, str]]:
        """Attachments being added now: each may hold an allocation whose record is not written yet."""
        with self._locks_guard:
            return set(self._adding)

    # ADD --------------------------------------------------------------------------------------
    def add(self, req: JsonObject) -> JsonObject:
        """The controller's allocation (a round trip through the switch's barrier) runs alongside the
        kernel work that does not need its answer: the link is made first, under its temporary name."""
        config, cid, ifname = req["config"], req["container_id"], req["ifname"]
        pod = pod_label(req["args"].get("K8S_POD_NAMESPACE"), req["args"].get("K8S_POD_NAME"), cid)
        kind = config.get("mode", "macvlan")
        uplink = self._uplink(pod, config)
        ips, mac = requested_addresses(pod, req)
        spec = LinkSpec(kind=kind, mode=link_mode(pod, config), mtu=self._mtu(pod, config, uplink),
                        mac=mac if kind == "macvlan" else None)
        netns = netns_path(req["netns"])
        with self._pod_netns(pod, netns) as pod_ns, contextlib.ExitStack() as undo:
            if pod_ns.has(ifname):
                raise CniError(INTERFACE_EXISTS, f"pod {pod}: interface {ifname} already exists in netns {netns}")
            leasing = self._lease(pod, req, kind=kind, ips=ips, mac=mac, undo=undo)
            node_addresses = self._aside.submit(self._kernel, pod, self.node.addresses)
            tmp = "ul" + secrets.token_hex(5)
            self._kernel(pod, self.node.create_child, uplink=uplink, spec=spec, pod_netns=netns, tmp_name=tmp)
            undo.callback(lambda: pod_ns.delete(ifname) or pod_ns.delete(tmp))
            lease = leasing.result()
            mac = lease.mac if kind == "macvlan" and lease.mac else uplink.mac  # ipvlan: the uplink's
            shim_mac = self._shim(uplink, spec)
            routing = self._host_routes(pod, uplink, lease, mac=mac, undo=undo) if shim_mac else None
            v6 = lease.family(6)
            # the node's IPv6 address only for a pod with IPv6: the pod's namespace may have IPv6 off
            node_ips = [ip for ip in (uplink.ip, uplink.ip6 if v6 else None) if ip]
            through_node = [route for node_ip in node_ips for route in via_node(
                node_ip=node_ip, pod_ips=[a.ip for a in lease.addresses], node_addresses=node_addresses.result(),
                config=config)] if shim_mac else []
            self._kernel(pod, pod_ns.configure, tmp, ifname=ifname, mac=mac if kind == "macvlan" else None,
                         addresses=[a.cidr for a in lease.addresses], routes=[*lease.routes, *through_node],
                         neighbours={ip: shim_mac for ip in node_ips} if shim_mac else {},
                         link_local=link_local(v6.ip) if v6 else None, accept_ra=not (v6 and v6.gateway))
            if routing:
                routing.result()
            v4 = lease.family(4) or lease.addresses[0]
            attachment = Attachment(container_id=cid, ifname=ifname, netns=netns, ip=v4.ip, prefix=v4.prefix,
                                    mac=mac, mode=kind, namespace=req["args"].get("K8S_POD_NAMESPACE"),
                                    name=req["args"].get("K8S_POD_NAME"), standalone="ipam" in req,
                                    ip6=v6.ip if v6 and v6 is not v4 else None)
            self.store.put(attachment)
            undo.callback(self.store.remove, cid, ifname)
            undo.pop_all()
        self._announce(attachment)
        log.debug("event=add pod=%s container=%s ifname=%s mac=%s", pod, cid[:12], ifname, mac)  # INFO: server.py
        return cni_result(attachment, lease)

    def _lease(self, pod: str, req: JsonObject, *, kind: str, ips: list[str], mac: str | None,
               undo: contextlib.ExitStack) -> Future[Lease]:
        """Addresses from the delegated IPAM result, or being allocated (and placed) by the controller;
        an allocation is released on rollback, also one still under way."""
        done: Future[Lease] = Future()
        if "ipam" in req:
            done.set_result(lease_from_ipam(pod, req["ipam"], mac or derived_mac(req["container_id"], req["ifname"])))
            return done
        if self.controller is None:
            raise CniError(INVALID_CONFIG, f"pod {pod}: this agent has no controller; add an ipam section")
        args = req["args"]
        body = {"container_id": req["container_id"], "ifname": req["ifname"], "mode": kind,
                "pool": req["config"].get("pool"), **address_fields(ips), "mac": mac, "sticky": None,
                "uid": args.get("K8S_POD_UID") or None,
                **owner(args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME"), req["container_id"])}
        leasing = self._aside.submit(lambda: lease_from_controller(self._controller(pod, self._allocate, body)))
        undo.callback(self._release_once_allocated, leasing, pod, req["container_id"], req["ifname"])
        return leasing

    def _release_once_allocated(self, leasing: Future[Lease], pod: str, container_id: str, ifname: str) -> None:
        if leasing.exception() is None:
            self._release(pod, container_id, ifname)

    def _host_routes(self, pod: str, uplink: Uplink, lease: Lease, *, mac: str,
                     undo: contextlib.ExitStack) -> Future[None]:
        """The node's host routes to the pod's addresses through the shim, made in the node's
        namespace while the pod's is set up; on rollback removed once made."""
        def add() -> None:
            for address in lease.addresses:
                self._kernel(pod, self.node.add_host_route, self.shim_ifname, ip=address.ip, mac=mac,
                             src=uplink.ip6 if ":" in address.ip else uplink.ip)

        routing = self._aside.submit(add)

        def remove() -> None:
            wait([routing])  # not before it is made, or it would outlive the rollback
            for address in lease.addresses:
                self.node.delete_host_route(self.shim_ifname, ip=address.ip)

        undo.callback(remove)
        return routing

    def _allocate(self, body: JsonObject) -> JsonObject:
        """Allocate; a controller that does not know this node (new, or restarted without its store)
        first hears of it and of its pods, so it cannot hand out an address a pod here still has."""
        assert self.controller is not None
        try:
            return self.controller.allocate(body)
        except PermanentError as exc:
            if exc.status != 404 or self.rejoin is None:
                raise
            self.rejoin()
            return self.controller.allocate(body)

    def _release(self, pod: str, container_id: str, ifname: str) -> None:
        assert self.controller is not None
        self._controller(pod, self.controller.release, container_id, ifname)

    # DEL --------------------------------------------------------------------------------------
    def delete(self, req: JsonObject) -> None:
        """The release at the controller and the host route go alongside the link's deletion, the
        slow step (the kernel waits out RCU readers of the device)."""
        cid, ifname = req["container_id"], req["ifname"]
        record = self.store.get(cid, ifname)
        pod = record.pod if record else pod_label(req["args"].get("K8S_POD_NAMESPACE"),
                                                  req["args"].get("K8S_POD_NAME"), cid)
        netns = netns_path(req["netns"]) if req.get("netns") else record.netns if record else None
        aside = []
        for ip in record.ips if record else ():
            aside.append(self._aside.submit(self.node.delete_host_route, self.shim_ifname, ip=ip))
        if self.controller and not (record and record.standalone) and "ipam" not in req:
            aside.append(self._aside.submit(self._release, pod, cid, ifname))
        self._remove_link(pod, netns, ifname)
        for step in aside:
            step.result()
        self.store.remove(cid, ifname)

    def _remove_link(self, pod: str, netns: str | None, ifname: str) -> None:
        # A runtime calls DEL more than once, and after the netns is gone (node reboot, pod already
        # torn down): a missing netns or link is success (kubernetes/kubernetes#43014).
        if not netns:
            return
        try:
            with PodNetns(netns) as pod_ns:
                self._kernel(pod, pod_ns.delete, ifname)
        except NetnsGone:
            pass

    # CHECK ------------------------------------------------------------------------------------
    def check(self, req: JsonObject) -> None:
        cid, ifname, config = req["container_id"], req["ifname"], req["config"]
        record = self.store.get(cid, ifname)
        if record is None:
            raise CniError(UNKNOWN_CONTAINER, f"container {cid[:12]}: no {ifname} attachment known to this agent")
        prev = config.get("prevResult")
        if not prev:
            raise CniError(INVALID_CONFIG, f"pod {record.pod}: CHECK needs prevResult")
        with self._pod_netns(record.pod, netns_path(req["netns"])) as pod_ns:
            link = pod_ns.read(ifname)
        problems = link_problems(record, link, config, prev)
        if not problems and self.controller and not record.standalone:
            problems = self._controller_problems(record)
        if problems:
            raise CniError(INTERNAL, f"pod {record.pod}: {problems[0]}", "; ".join(problems[1:]))

    def _controller_problems(self, record: Attachment) -> list[str]:
        assert self.controller is not None
        pods = self._controller(record.pod, self.controller.pods)
        match = [p for p in pods if (p["container_id"], p["ifname"]) == record.key]
        if not match:
            return [f"the controller has no allocation for {record.ifname}"]
        placed = tuple(match[0].get("ips") or [match[0]["ip"]])
        if placed != record.ips or (record.mode == "macvlan" and match[0]["mac"].lower() != record.mac):
            return [f"the controller places {','.join(placed)} {match[0]['mac']}, the link has "
                    f"{','.join(record.ips)} {record.mac}"]
        return []

    # GC and STATUS ----------------------------------------------------------------------------
    def gc(self, req: JsonObject) -> None:
        """Tear down and release every attachment of this node that the runtime no longer lists."""
        config = req["config"]
        listed = config.get("cni.dev/valid-attachments", config.get("cni.dev/attachments", []))
        valid = {(a.get("containerID"), a.get("ifname")) for a in listed}
        busy = self.in_flight()
        for record in self.store.all():
            if record.key not in valid and record.key not in busy:
                with self._serialised(record.container_id):
                    self.delete({"container_id": record.container_id, "ifname": record.ifname, "netns": None,
                                 "args": {}})
        if self.controller:
            self._controller("node", self.controller.sync, self.attachments(keep=valid))

    def attachments(self, *, keep: set[tuple[str, str]] | None = None) -> list[JsonObject]:
        """This node's attachments as the controller's full-state sync lists them.

        In-flight ADDs count: their allocation exists before their record does.
        """
        records = {r.key for r in self.store.all() if not r.standalone and (keep is None or r.key in keep)}
        return [{"container_id": c, "ifname": i} for c, i in sorted(records | self.in_flight())]

    def status(self, req: JsonObject) -> None:
        if self.controller is None:
            return
        try:
            self.controller.health()
        except ControllerError as exc:
            raise CniError(UNAVAILABLE, f"controller at {self.controller.url} not reachable", exc.reason) from None

    # the view from the kernel ----------------------------------------------------------------
    def rebuild(self) -> list[Attachment]:
        """Keep the records whose link still exists; make the shim's routes match exactly those."""
        kept, pods_link = [], None
        for record in self.store.all():
            try:
                with PodNetns(record.netns) as pod_ns:
                    link = pod_ns.read(record.ifname)
            except NetnsGone:
                link = None
            if link is not None and link.mac == record.mac:
                kept.append(record)
                pods_link = LinkSpec(kind=link.kind, mode=link.mode or "", mtu=link.mtu)
            else:
                log.info("event=forget pod=%s container=%s reason=link-gone", record.pod, record.container_id[:12])
                self.store.remove(*record.key)
        self._reconcile_host_routes(kept, pods_link)
        return kept

    def _reconcile_host_routes(self, attachments: list[Attachment], pods_link: LinkSpec | None) -> None:
        """The shim is made for the pods there are (its kind follows theirs), else on the first ADD."""
        try:
            uplink = self.node.uplink(self.master)
        except NetlinkFailure as exc:  # e.g. no default route yet: the first ADD makes the shim
            log.warning("event=no-uplink error=%r", str(exc))
            return
        if pods_link:
            self._shim(uplink, pods_link)
        wanted = {ip: a.mac for a in attachments for ip in a.ips}
        for ip in self.node.host_routes(self.shim_ifname) - set(wanted):
            self.node.delete_host_route(self.shim_ifname, ip=ip)
        for ip, mac in wanted.items():
            self.node.add_host_route(self.shim_ifname, ip=ip, mac=mac, src=uplink.ip6 if ":" in ip else uplink.ip)

    # helpers ----------------------------------------------------------------------------------
    def _shim(self, uplink: Uplink, pods_link: LinkSpec) -> str:
        """The node's shim beside pods whose links are like `pods_link` (made once): a bridge-mode
        macvlan, which reaches its siblings, or an ipvlan in the pods' mode, since an ipvlan port
        has one mode for all its children (a child made in another mode switches them all)."""
        with self._shim_lock:  # the first ADDs of a node arrive together: one of them makes it
            if self._shim_mac is None:
                mode = "bridge" if pods_link.kind == "macvlan" else pods_link.mode
                self._shim_mac = self.node.ensure_shim(uplink, self.shim_ifname,
                                                       LinkSpec(kind=pods_link.kind, mode=mode, mtu=uplink.mtu))
            return self._shim_mac

    def _uplink(self, pod: str, config: JsonObject) -> Uplink:
        try:
            return self.node.uplink(config.get("master") or self.master)
        except NetlinkFailure as exc:
            raise CniError(INVALID_CONFIG, f"pod {pod}: {exc}") from None

    @staticmethod
    def _mtu(pod: str, config: JsonObject, uplink: Uplink) -> int:
        mtu = int(config.get("mtu") or uplink.mtu)
        if mtu > uplink.mtu:
            raise CniError(INVALID_CONFIG, f"pod {pod}: mtu {mtu} is above master {uplink.name}'s {uplink.mtu}")
        return mtu

    @contextlib.contextmanager
    def _pod_netns(self, pod: str, path: str) -> Iterator[PodNetns]:
        try:
            pod_ns = PodNetns(path)
        except NetnsGone as exc:
            raise CniError(BAD_ENV, f"pod {pod}: {exc}") from None
        with pod_ns:
            yield pod_ns

    @staticmethod
    def _kernel(pod: str, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A netlink step; its failure becomes a CNI error naming the pod."""
        try:
            return call(*args, **kwargs)
        except NetnsGone as exc:
            raise CniError(BAD_ENV, f"pod {pod}: {exc}") from None
        except (NetlinkFailure, OSError) as exc:
            raise CniError(INTERNAL, f"pod {pod}: {exc}") from None
        except Exception as exc:  # pyroute2's NetlinkError and friends
            raise CniError(INTERNAL, f"pod {pod}: netlink: {exc}") from None

    def _controller(self, pod: str, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A controller call, asked again while the controller is away (restarting, its switch not
        back) within the retry policy's deadline; its failure becomes a CNI error naming the pod
        (once: the controller's own messages often name it already)."""
        try:
            return retrying(lambda: call(*args, **kwargs), self.retry)
        except ControllerError as exc:
            message = exc.reason if f"pod {pod}:" in exc.reason else f"pod {pod}: {exc.reason}"
            if isinstance(exc, TemporaryError):
                raise CniError(TRY_AGAIN_LATER, message) from None
            raise CniError(INVALID_CONFIG if exc.status == 400 else REFUSED, message) from None

    def _announce(self, attachment: Attachment) -> None:
        """One gratuitous ARP and, with an IPv6 address, one unsolicited NA, off
        the ADD's path: a packet socket costs the kernel a synchronize_net() (~30 ms), and
        arp_notify already announced the link when it came up. Best effort."""
        def send() -> None:
            for ip in attachment.ips:
                try:
                    announce(attachment.netns, attachment.ifname, ip=ip, mac=attachment.mac)
                except (OSError, NetlinkFailure) as exc:  # ENXIO/ENODEV: a DEL already removed the link
                    log.debug("event=announce-failed pod=%s ip=%s error=%s", attachment.pod, ip, exc)

        threading.Thread(target=send, name="announce", daemon=True).start()


def requested_addresses(pod: str, req: JsonObject) -> tuple[list[str], str | None]:
    """IPs (at most one per family, IPv4 first, prefix lengths dropped) and MAC asked for by
    CNI_ARGS (IP=198.18.0.5,fd00::5; MAC=) or runtimeConfig capabilities (ips, mac)."""
    runtime = req["config"].get("runtimeConfig") or {}
    arg = req["args"].get("IP")
    asked = [part.strip() for part in arg.split(",")] if arg else list(runtime.get("ips") or [])
    ips: dict[int, str] = {}
    for text in asked:
        try:
            ip = ipaddress.ip_interface(text).ip
        except (ValueError, TypeError):
            raise CniError(INVALID_CONFIG, f"pod {pod}: requested IP {text!r} is not an address") from None
        if ips.setdefault(ip.version, str(ip)) != str(ip):
            raise CniError(INVALID_CONFIG, f"pod {pod}: requested IPs {ips[ip.version]} and {ip} are both "
                           f"IPv{ip.version}", "ask for at most one address of each family")
    mac = req["args"].get("MAC") or runtime.get("mac")
    if mac is not None and not MAC_RE.match(mac):
        raise CniError(INVALID_CONFIG, f"pod {pod}: requested MAC {mac!r} is not a MAC address")
    return [ips[v] for v in sorted(ips)], mac.lower() if mac else None


def address_fields(ips: list[str]) -> JsonObject:
    """A pod request's `ip` (the first asked for) and, when an IPv6 address is asked for, `ips`
    (controller/API.md, "Dual stack"); an IPv4-only request stays as it always was."""
    return {"ip": ips[0] if ips else None, **({"ips": ips} if any(":" in ip for ip in ips) else {})}


def link_mode(pod: str, config: JsonObject) -> str:
    """The child's mode: `macvlanMode` (default bridge) or `ipvlanMode` (default l2; in l3 and l3s the
    pods do no ARP at all, which the switch's responder makes up for: it answers at the node's MAC)."""
    if config.get("mode", "macvlan") == "macvlan":
        return str(config.get("macvlanMode", "bridge"))
    mode = config.get("ipvlanMode", "l2")
    if mode not in IPVLAN_MODES:
        raise CniError(INVALID_CONFIG, f"pod {pod}: unknown ipvlanMode {mode!r}",
                       f"ipvlanMode must be one of {', '.join(IPVLAN_MODES)}")
    return str(mode)


def derived_mac(container_id: str, ifname: str) -> str:
    """A stable, locally administered unicast MAC for an attachment (when no controller picks one)."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def lease_from_controller(answer: JsonObject) -> Lease:
    """The controller's answer: `ips` (dual stack), else the `ip`/`prefix`/`gateway` of one address."""
    entries = answer.get("ips") or [{"address": f"{answer['ip']}/{answer['prefix']}", "gateway": answer.get("gateway")}]
    return Lease(addresses=tuple(_address(e) for e in entries),
                 routes=tuple(Route(dst=r["dst"], gw=r.get("gw")) for r in answer.get("routes", [])),
                 mac=answer.get("mac"), dns={})


def _address(entry: JsonObject) -> Address:
    iface = ipaddress.ip_interface(entry["address"])
    return Address(ip=str(iface.ip), prefix=iface.network.prefixlen, gateway=entry.get("gateway"))


def lease_from_ipam(pod: str, result: JsonObject, mac: str) -> Lease:
    """The first address of each family the IPAM plugin returned; a route without a gateway goes
    through the gateway of its own family."""
    firsts: dict[int, Address] = {}
    for entry in result.get("ips", []):
        address = _address(entry)
        firsts.setdefault(6 if ":" in address.ip else 4, address)
    if not firsts:
        raise CniError(INVALID_CONFIG, f"pod {pod}: the IPAM plugin returned no address")
    gateways = {version: a.gateway for version, a in firsts.items()}
    return Lease(addresses=tuple(firsts[v] for v in sorted(firsts)),
                 routes=tuple(Route(dst=r["dst"], gw=r.get("gw") or gateways.get(6 if ":" in r["dst"] else 4))
                              for r in result.get("routes", [])),
                 mac=mac, dns=result.get("dns") or {})


def cni_result(attachment: Attachment, lease: Lease) -> JsonObject:
    ips = [{"address": a.cidr, "interface": 0, **({"gateway": a.gateway} if a.gateway else {})}
           for a in lease.addresses]
    interface = {"name": attachment.ifname, "mac": attachment.mac, "sandbox": attachment.netns}
    routes = [{"dst": r.dst, **({"gw": r.gw} if r.gw else {})} for r in lease.routes]
    result: JsonObject = {"interfaces": [interface], "ips": ips, "routes": routes}
    if lease.dns:
        result["dns"] = lease.dns
    return result


def link_problems(record: Attachment, link: PodLink | None, config: JsonObject, prev: JsonObject) -> list[str]:
    """What differs between the kernel's link and what ADD made (prevResult, config, record)."""
    if link is None:
        return [f"interface {record.ifname} is missing from netns {record.netns}"]
    problems = []
    kind, mode = config.get("mode", "macvlan"), link_mode(record.pod, config)
    if link.kind != kind:
        problems.append(f"{record.ifname} is a {link.kind or 'plain link'}, not a {kind}")
    elif link.mode != mode:
        problems.append(f"{record.ifname} is in {kind} mode {link.mode}, not {mode}")
    if not link.up:
        problems.append(f"{record.ifname} is down")
    ours = [i for i, iface in enumerate(prev.get("interfaces", [])) if iface.get("name") == record.ifname]
    for iface in (prev.get("interfaces", [])[i] for i in ours):
        if iface.get("mac", link.mac).lower() != link.mac:
            problems.append(f"{record.ifname} has MAC {link.mac}, prevResult says {iface['mac']}")
    for ip in prev.get("ips", []):
        if ip.get("interface") in ours and ip["address"] not in link.addresses:
            problems.append(f"{record.ifname} lacks address {ip['address']}")
    dsts = {r.dst for r in link.routes}
    for route in prev.get("routes", []):
        if route["dst"] not in dsts and ours:
            problems.append(f"{record.ifname} lacks route to {route['dst']}")
    return problems
