"""What a pod asks for: its address intent read from the cluster's objects, and the pool it gets.

Pure: plain dicts of the API's JSON in (the pod, its namespace, its StatefulSet), frozen dataclasses
out; no client objects, no I/O, no clock. The service reads the objects through a `ClusterView`
(defined here, implemented over watch caches by controller/kube/) and hands them in.

Where intent comes from, highest precedence first (controller/INTENT.md for users):

1. pod: the pod's annotations (its template's among them) `underlay.io/ippool`, `underlay.io/ip`,
   `underlay.io/mac`, `underlay.io/ip-list` (entry N for StatefulSet pod N) and their aliases, and
   the CNI request's own IP= and MAC=;
2. workload: the StatefulSet object's own `underlay.io/ippool` and `underlay.io/ip-list`;
3. namespace: `underlay.io/default-ippool`;
4. network: the CNI network config's `pool`;
5. pool: the IPPools marked `default: true`.

Per field the highest level that says something wins; two sources of that level that disagree are
refused, naming both (`underlay.io/ip says 198.18.0.5, ovn.kubernetes.io/ip_address says
198.18.0.6`). A fixed address picks the pool that holds it, unless a pool was named at the same or a
higher level: then the address must be in it, or both are named in the refusal.

Pod or workload: a pod carries its template's annotations (the API server copies them), so the
template is the pod level, and nothing could tell the two apart. The workload level is the
StatefulSet object's own annotations, which no pod carries: changing them does not roll the
StatefulSet's pods (changing the template does), which is what extending an `ip-list` before a
scale-up wants. Deployments have no workload level: their pods have no stable identity to give a
per-pod address to, and their template annotations already reach every pod.
"""

from __future__ import annotations

import enum
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from controller.errors import BadRequest, Contradiction, InvalidIntent, NoPoolMatches
from controller.ipam import key_of, parse_mac
from controller.selectors import PoolRules, Subject, annotations_of
from controller.sticky import StatefulSetPod

T = TypeVar("T")

POOL = "underlay.io/ippool"
IP = "underlay.io/ip"
MAC = "underlay.io/mac"
IP_LIST = "underlay.io/ip-list"
DEFAULT_POOL = "underlay.io/default-ippool"
SPIDERPOOL_POOL = "ipam.spidernet.io/ippool"  # {"interface"?, "ipv4": [pools]} ("ipv4pools" before v0.8)
SPIDERPOOL_POOLS = "ipam.spidernet.io/ippools"  # a list of those, one per interface
SPIDERPOOL_DEFAULT = "ipam.spidernet.io/default-ipv4-ippool"  # namespace: a JSON list of pools
CALICO_IPS = "cni.projectcalico.org/ipAddrs"  # a JSON list, at most one address per family
OVN_IP = "ovn.kubernetes.io/ip_address"  # "10.16.0.15" or "10.16.0.15,fd00::f" (dual stack)
OVN_MAC = "ovn.kubernetes.io/mac_address"


class ClusterView(Protocol):
    """The little of the cluster that intent needs: cached reads, one uncached read, Events.

    Objects are the API's JSON (plain dicts). The cached reads serve from watch caches and read
    live once on a miss; every read may raise controller.errors.TemporaryError when the API
    cannot be reached."""

    def pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def pod_live(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """Read the API server itself, not a cache (the leak collector confirms with this)."""

    def namespace(self, name: str) -> Mapping[str, Any] | None: ...

    def statefulset(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def node(self, name: str) -> Mapping[str, Any] | None: ...

    def event(self, involved: Mapping[str, Any], *, reason: str, message: str, type: str = "Warning") -> None:
        """Record a Kubernetes Event about `involved` (an object's JSON, at least its metadata)."""


class Level(enum.IntEnum):
    """Where a value was said; a higher level overrides a lower one."""

    POOL_DEFAULT = 1
    NETWORK = 2
    NAMESPACE = 3
    WORKLOAD = 4
    POD = 5


@dataclass(frozen=True)
class Source:
    level: Level
    what: str  # "pod default/web-0 annotation underlay.io/ip", for messages

    def __str__(self) -> str:
        return self.what


@dataclass(frozen=True)
class Said(Generic[T]):
    """A value and who said it."""

    value: T
    source: Source


@dataclass(frozen=True)
class Intent:
    """What one pod interface asks for; None where nobody said anything."""

    pools: Said[tuple[str, ...]] | None = None  # candidates, tried in order (the next when one is full)
    ip: Said[str] | None = None  # "198.18.0.5", "fd00:18::5" or both "198.18.0.5,fd00:18::5" (canonical, IPv4 first)
    mac: Said[str] | None = None


class PoolView(Protocol):
    """What pool selection needs to know about a pool (the IPAM's pools provide it)."""

    @property
    def name(self) -> str: ...
    @property
    def default(self) -> bool: ...
    @property
    def rules(self) -> PoolRules: ...
    def holds(self, address: int) -> bool: ...


@dataclass(frozen=True)
class Request:
    """What the CNI request itself says (the pod level, beside the pod's annotations)."""

    ifname: str
    pool: str | None = None  # the network config's `pool`
    ip: str | None = None  # CNI_ARGS IP= or runtimeConfig ips: an address, or one of each family "a,b"
    mac: str | None = None  # CNI_ARGS MAC= or runtimeConfig mac


def read(
    request: Request,
    *,
    pod: Mapping[str, Any] | None,
    namespace: Mapping[str, Any] | None,
    workload: Mapping[str, Any] | None = None,
    member: StatefulSetPod | None = None,
    who: str,
) -> Intent:
    """The intent of one pod interface. `workload` is the pod's StatefulSet (the one `member` names,
    with the same UID); `who` names the pod in errors (`pod default/web-0`)."""
    try:
        return _read(request, pod=pod, namespace=namespace, workload=workload, member=member, who=who)
    except Contradiction:
        raise
    except InvalidIntent as err:  # about one value: say whose
        raise InvalidIntent(f"{who}: {err}") from None


def _read(
    request: Request, *, pod: Mapping[str, Any] | None, namespace: Mapping[str, Any] | None,
    workload: Mapping[str, Any] | None, member: StatefulSetPod | None, who: str,
) -> Intent:  # fmt: skip
    pod_notes, ns_notes = annotations_of(pod), annotations_of(namespace)
    sts_notes = annotations_of(workload)
    at_pod, at_sts = "annotation", f"{member.owner if member else 'workload'} annotation"
    at_ns = f"namespace {(namespace or {}).get('metadata', {}).get('name', '?')} annotation"
    said = "the CNI request's"
    pools: list[Said[tuple[str, ...]]] = [
        *_pools(pod_notes, request.ifname, Level.POD, at_pod),
        *_pools(sts_notes, request.ifname, Level.WORKLOAD, at_sts, aliases=False),
        *_default_pools(ns_notes, at_ns),
        *_network_pool(request),
    ]
    ips = [
        *_addresses(pod_notes, Level.POD, at_pod, member=member),
        *_ip_list(sts_notes, Level.WORKLOAD, at_sts, member=member),
        *([Said(_ips(request.ip, f"{said} ip"), Source(Level.POD, f"{said} ip (CNI_ARGS IP)"))] if request.ip else []),
    ]
    macs = [
        *(Said(_mac(pod_notes[name], f"{at_pod} {name}"), Source(Level.POD, f"{at_pod} {name}"))
          for name in (MAC, OVN_MAC) if name in pod_notes),
        *([Said(_mac(request.mac, f"{said} mac"), Source(Level.POD, f"{said} mac (CNI_ARGS MAC)"))]
          if request.mac else []),
    ]
    return Intent(pools=_winner(pools, who), ip=_winner(ips, who), mac=_winner(macs, who))


def _network_pool(request: Request) -> list[Said[tuple[str, ...]]]:
    if request.pool is None:
        return []
    return [Said((_pool_name(request.pool, "the network config's pool"),), Source(Level.NETWORK, "the network config's pool"))]


def _winner(said: Sequence[Said[T]], who: str) -> Said[T] | None:
    """The value of the highest level; a different one at that level is a contradiction."""
    if not said:
        return None
    top = max(item.source.level for item in said)
    first, *others = [item for item in said if item.source.level == top]
    for other in others:
        if other.value != first.value:
            raise Contradiction(
                f"{who}: {first.source} says {_show(first.value)}, {other.source} says {_show(other.value)}; "
                "make them agree or remove one"
            )
    return first


def _show(value: object) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)


# -- reading annotations ------------------------------------------------------------------------


def _pools(notes: Mapping[str, str], ifname: str, level: Level, at: str, *, aliases: bool = True) -> list[Said[tuple[str, ...]]]:
    found = []
    if POOL in notes:
        names = _underlay_pool(notes[POOL], ifname, f"{at} {POOL}")
        if names:
            found.append(Said(names, Source(level, f"{at} {POOL}")))
    # Spiderpool: the multi-interface form wins over the single one, as it does there
    spider = [name for name in (SPIDERPOOL_POOLS, SPIDERPOOL_POOL) if aliases and name in notes][:1]
    for name in spider:
        names = _spiderpool(notes[name], ifname, f"{at} {name}", many=name == SPIDERPOOL_POOLS)
        if names:
            found.append(Said(names, Source(level, f"{at} {name}")))
    return found


def _underlay_pool(text: str, ifname: str, where: str) -> tuple[str, ...]:
    """`db` (every interface), or `[{"interface": "eth0", "pool": "db"}, ...]` (per interface; an
    interface not listed gets no pool from here)."""
    if not text.lstrip().startswith("["):
        return (_pool_name(text.strip(), where),)
    entries = _json(text, where)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidIntent(f"{where}: expected a pool name or a JSON list of {{\"interface\", \"pool\"}} objects")
    chosen = []
    for index, entry in enumerate(entries):
        interface, pool = entry.get("interface"), entry.get("pool")
        if not isinstance(interface, str) or not isinstance(pool, str):
            raise InvalidIntent(f"{where}[{index}]: expected {{\"interface\": <name>, \"pool\": <pool>}}")
        if interface == ifname:
            chosen.append(_pool_name(pool, f"{where}[{index}].pool"))
    if len(chosen) > 1:
        raise InvalidIntent(f"{where}: interface {ifname} is listed {len(chosen)} times")
    return tuple(chosen)


def _spiderpool(text: str, ifname: str, where: str, *, many: bool) -> tuple[str, ...]:
    """Spiderpool's `{"interface": "eth0", "ipv4": ["a", "b"]}` (alternatives in order); its
    `interface` defaults to the request's. IPv6 pools are ignored: pools are IPv4 here."""
    value = _json(text, where)
    entries = value if many else [value]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidIntent(f"{where}: expected " + ("a JSON list of objects" if many else "a JSON object"))
    for entry in entries:
        if entry.get("interface", None if many else ifname) != ifname:
            continue
        names = entry.get("ipv4", entry.get("ipv4pools")) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidIntent(f"{where}: ipv4: expected a list of pool names")
        return tuple(_pool_name(n, f"{where} ipv4") for n in names)
    return ()


def _default_pools(notes: Mapping[str, str], at: str) -> list[Said[tuple[str, ...]]]:
    found = []
    for name in (DEFAULT_POOL, SPIDERPOOL_DEFAULT):
        if name in notes:
            where = f"{at} {name}"
            text = notes[name]
            if text.lstrip().startswith("["):
                names = _json(text, where)
                if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                    raise InvalidIntent(f"{where}: expected a pool name or a JSON list of pool names")
                value = tuple(_pool_name(n, where) for n in names)
            else:
                value = (_pool_name(text.strip(), where),)
            found.append(Said(value, Source(Level.NAMESPACE, where)))
    return found


def _addresses(notes: Mapping[str, str], level: Level, at: str, *, member: StatefulSetPod | None) -> list[Said[str]]:
    found = []
    if IP in notes:
        found.append(Said(_ips(notes[IP], f"{at} {IP}"), Source(level, f"{at} {IP}")))
    if CALICO_IPS in notes:
        where = f"{at} {CALICO_IPS}"
        listed = _json(notes[CALICO_IPS], where)
        if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed) or not listed:
            raise InvalidIntent(f"{where}: expected a JSON list of addresses")
        found.append(Said(_ips(",".join(listed), where), Source(level, where)))
    if OVN_IP in notes:
        where = f"{at} {OVN_IP}"
        found.append(Said(_ips(notes[OVN_IP], where), Source(level, where)))
    return found + _ip_list(notes, level, at, member=member)


def _ip_list(notes: Mapping[str, str], level: Level, at: str, *, member: StatefulSetPod | None) -> list[Said[str]]:
    """Entry N of a StatefulSet's address list for its pod N: `["198.18.0.40", ...]` or
    `198.18.0.40,198.18.0.41` (Kube-OVN's ip_pool form). Dual stack: an entry is a pair,
    `["198.18.0.40,fd00:18::40", ...]` or `198.18.0.40,fd00:18::40;198.18.0.41,fd00:18::41` (with
    `;` between entries, each entry's addresses are one pod's)."""
    if IP_LIST not in notes:
        return []
    where = f"{at} {IP_LIST}"
    text = notes[IP_LIST].strip()
    separator = ";" if ";" in text else ","
    parts = _json(text, where) if text.startswith("[") else [p.strip() for p in text.split(separator) if p.strip()]
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise InvalidIntent(f"{where}: expected a JSON list of addresses or a comma-separated list")
    listed = [_ips(part, where) for part in parts]
    each = [address for entry in listed for address in entry.split(",")]
    twice = sorted({a for a in each if each.count(a) > 1})
    if twice:
        raise InvalidIntent(f"{where}: {', '.join(twice)} listed more than once")
    if member is None:
        raise InvalidIntent(f"{where}: the pod is not a StatefulSet's, and the list is indexed by a StatefulSet pod's ordinal")
    if member.ordinal >= len(listed):
        raise InvalidIntent(f"{where}: {len(listed)} addresses, no entry for ordinal {member.ordinal}")
    return [Said(listed[member.ordinal], Source(level, f"{where}[{member.ordinal}]"))]


def _ips(text: str, where: str) -> str:
    """An address, or a pair of one per family "198.18.0.5,fd00:18::5", canonical and IPv4 first."""
    found: dict[int, str] = {}
    for part in (p.strip() for p in text.split(",")):
        try:
            address = ipaddress.ip_address(part)
            if getattr(address, "scope_id", None):
                raise ValueError(part)  # fe80::1%eth0: a link's, not an address to hand out
        except ValueError:
            raise InvalidIntent(f"{where}: {part!r} is not an IPv4 or IPv6 address") from None
        other = found.setdefault(address.version, str(address))
        if other != str(address):
            raise InvalidIntent(f"{where}: more than one IPv{address.version} address ({other}, {address}); "
                                "a pod interface gets one of each family")
    return ",".join(found[version] for version in sorted(found))


def _mac(text: str, where: str) -> str:
    try:
        return parse_mac(text.strip(), field_name=where)
    except BadRequest as err:
        raise InvalidIntent(str(err)) from None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise InvalidIntent(f"{where}: not valid JSON ({err})") from None


def _pool_name(name: str, where: str) -> str:
    if not name or len(name) > 253 or any(c.isspace() or c in "/\"[]{}," for c in name):
        raise InvalidIntent(f"{where}: {name!r} is not a pool name")
    return name


# -- choosing the pool --------------------------------------------------------------------------


def choose_pools(intent: Intent, *, subject: Subject, pools: Iterable[PoolView], who: str) -> tuple[str, ...]:
    """The pools this interface may take an address from, in the order to try them.

    Candidates are what the intent names (or, for a fixed address, the pools holding it; with
    nothing said, the pools marked default); each must accept the pod (`PoolRules`). None left:
    `NoPoolMatches`, naming why each candidate refused."""
    views = {view.name: view for view in pools}
    candidates, why = _candidates(intent, views, who)
    chosen, refusals = [], []
    for name in candidates:
        view = views.get(name)
        refusal = "no such pool" if view is None else view.rules.refusal(subject)
        if refusal is None:
            chosen.append(name)
        else:
            refusals.append(f"{name}: {refusal}")
    if not chosen:
        raise NoPoolMatches(f"{who}: no pool matches ({why}): {'; '.join(refusals)}")
    return tuple(chosen)


def _candidates(intent: Intent, views: Mapping[str, PoolView], who: str) -> tuple[list[str], str]:
    if intent.ip is not None:
        ip, named = intent.ip, intent.pools
        addresses = [key_of(text) for text in ip.value.split(",")]

        def holds(view: PoolView) -> bool:
            return all(view.holds(address) for address in addresses)

        if named is not None and named.source.level >= ip.source.level:
            inside = [name for name in named.value if name in views and holds(views[name])]
            if not inside:
                raise Contradiction(
                    f"{who}: {ip.value} ({ip.source}) is not in pool {_show(named.value)} ({named.source}); "
                    "make them agree or remove one"
                )
            return inside, f"{ip.source}, {named.source}"
        holding = sorted(name for name, view in views.items() if holds(view))
        if not holding:
            raise NoPoolMatches(f"{who}: {ip.value} ({ip.source}) is in no pool's ranges")
        return holding, f"pools holding {ip.value} ({ip.source})"
    if intent.pools is not None:
        return list(intent.pools.value), f"asked by {intent.pools.source}"
    defaults = sorted(name for name, view in views.items() if view.default)
    if not defaults:
        raise NoPoolMatches(
            f"{who}: no pool named (pod or namespace annotation {POOL} / {DEFAULT_POOL}, "
            "or the network config's pool) and no pool is marked default"
        )
    return defaults, "pools marked default"
