"""IP address management: which address a pod interface gets. Pure decisions, no I/O, no clock.

`Ipam.plan(request, now=...)` decides without changing anything; the caller persists the answer and
only then `commit`s it, so a failed write leaves the in-memory state untouched. The rules:

- An interface is (container id, ifname). Asking again returns the same lease (idempotence).
- A requested (fixed) address is honoured or refused naming its holder. It skips the cooldown: the
  request says which workload the address belongs to.
- A sticky key (a StatefulSet pod's namespace/name) keeps its address across releases: the address
  stays reserved for the key until `unreserve`, and comes back at once.
- A released address waits `cooldown` seconds before anyone else gets it, so stale ARP caches on the
  segment age out first.
- The network, broadcast and gateway addresses and the pool's exclusions are never handed out.

Allocation keeps a cursor per pool and walks forward from it, so a pool is filled in order and
recently released addresses (behind the cursor) are the last to come back: O(1) per allocation
until the pool is nearly full, one lap at worst.

Dual stack: a pool has one address space per family (IPv4 first). A pod interface of a pool with
both gets one address of each in one lease, planned together: a family that cannot be had raises
before anything is committed, so there is never half a lease to undo. Each family has its own
cursor and its own sticky reservation per key. A space is a few (first, last) integer blocks,
however large an IPv6 range is: the walk from the cursor steps over held, reserved and cooling
addresses only, so it takes at most one more step than this IPAM knows addresses, never the
size of a /64. Addresses are integers internally, IPv6 ones offset by 2**128 (`key_of`) so that
the two families never meet in one dictionary.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import netaddr

from controller.config import Family, PoolConfig, Route
from controller.errors import AddressInUse, BadRequest, ConflictError, PoolCoolingDown, PoolExhausted, TemporaryError
from controller.selectors import PoolRules

Key = tuple[str, str]
"""(container id, ifname): one pod interface."""

V6 = 1 << 128
"""Added to an IPv6 address's integer to make its key: above every IPv4 one."""
_ABOVE = 1 << 130  # above every key: for bisecting (address, last) pairs


@dataclass(frozen=True)
class Request:
    container_id: str
    ifname: str
    owner: str  # "namespace/name", for messages
    pool: str | None = None
    ip: str | None = None
    sticky: str | None = None
    ips: tuple[str, ...] = ()  # requested addresses, at most one per family (`ip` counts as one more)

    @property
    def key(self) -> Key:
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class Lease:
    """An interface's addresses: `ip` (IPv4 when its pool has IPv4), and `ip6`, the IPv6 address
    of a dual-stack interface. `sticky_before` is what the sticky key held before this lease."""

    container_id: str
    ifname: str
    owner: str
    pool: str
    ip: str
    sticky: str | None = None
    sticky_before: tuple[str, ...] = field(default=(), compare=False)  # what a rollback restores
    ip6: str | None = None

    @property
    def key(self) -> Key:
        return (self.container_id, self.ifname)

    @property
    def ips(self) -> tuple[str, ...]:
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)


@dataclass(frozen=True)
class Usage:
    """One family of one pool as operators see it (GET /v1/pools)."""

    pool: str
    family: int
    subnet: str
    size: int
    allocated: int
    reserved: int  # kept for a sticky key whose pod is gone
    cooldown: int  # released lately: not handed out before the cooldown ends


@dataclass(frozen=True)
class Space:
    """One family's allocatable addresses as sorted, disjoint (first, last) key blocks."""

    version: int
    network: netaddr.IPNetwork
    gateway: str | None
    blocks: tuple[tuple[int, int], ...]
    starts: tuple[int, ...] = field(repr=False)  # offset of each block's first address
    size: int

    @classmethod
    def build(cls, family: Family, *, exclude: Iterable[str]) -> Space:
        network = netaddr.IPNetwork(family.subnet)
        usable = netaddr.IPSet(netaddr.IPRange(first, last) for first, last in family.ranges)
        never = [network.network, family.gateway, *exclude]
        if family.version == 4:
            never.append(network.broadcast)
        usable -= netaddr.IPSet(str(address) for address in never if address is not None)
        tag = V6 if family.version == 6 else 0
        blocks = tuple((r.first + tag, r.last + tag) for r in usable.iter_ipranges())
        starts, size = [], 0
        for first, last in blocks:
            starts.append(size)
            size += last - first + 1
        return cls(family.version, network, family.gateway, blocks, tuple(starts), size)

    def address(self, offset: int) -> int:
        block = bisect.bisect_right(self.starts, offset) - 1
        return self.blocks[block][0] + offset - self.starts[block]

    def offset(self, address: int) -> int | None:
        """Where `address` sits among the allocatable ones, or None when it is not allocatable."""
        block = bisect.bisect_right(self.blocks, (address, _ABOVE)) - 1
        if block < 0 or address > self.blocks[block][1]:
            return None
        return self.starts[block] + address - self.blocks[block][0]

    def within(self, address: int) -> bool:
        """Whether `address` is in the subnet (allocatable or not)."""
        tag = V6 if self.version == 6 else 0
        return self.network.first + tag <= address <= self.network.last + tag

    @property
    def prefix(self) -> int:
        return int(self.network.prefixlen)

    @property
    def label(self) -> str:
        return f"IPv{self.version}"


@dataclass(frozen=True)
class Pool:
    """A pool: one address space per family it has (IPv4 first), and what its pods get besides."""

    name: str
    spaces: tuple[Space, ...]
    routes: tuple[Route, ...]
    cooldown: float | None = None  # the pool's own, else the IPAM's
    default: bool = False
    rules: PoolRules = PoolRules()  # who may use it (intent's pool selection asks)

    @classmethod
    def from_config(cls, config: PoolConfig) -> Pool:
        spaces = tuple(Space.build(family, exclude=config.exclude) for family in config.families)
        return cls(config.name, spaces, config.routes, config.cooldown, config.default, config.rules)

    def space(self, version: int) -> Space | None:
        return next((space for space in self.spaces if space.version == version), None)

    def space_of(self, address: int) -> Space | None:
        """The space that may hand out `address`."""
        return next((space for space in self.spaces if space.offset(address) is not None), None)

    def holds(self, address: int) -> bool:
        """Whether the pool may hand out `address` (a key: asked of every pool in turn)."""
        return self.space_of(address) is not None

    def within(self, address: int) -> bool:
        return any(space.within(address) for space in self.spaces)

    @property
    def size(self) -> int:
        return sum(space.size for space in self.spaces)

    @property
    def prefix(self) -> int:
        """The first family's (IPv4's in a dual-stack pool): what agents that know one address use."""
        return self.spaces[0].prefix

    @property
    def gateway(self) -> str | None:
        return self.spaces[0].gateway

    def _family(self, space: Space) -> str:
        """How a message names a space: by family, when the pool has two."""
        return f"{space.label} " if len(self.spaces) > 1 else ""


class Ipam:
    """The live leases, sticky reservations and release times of every pool, in memory."""

    def __init__(self, pools: Iterable[PoolConfig], *, cooldown: float) -> None:
        self.cooldown = cooldown
        self._leases: dict[Key, Lease] = {}
        self._holders: dict[int, Lease] = {}
        self._sticky: dict[str, dict[int, int]] = {}  # sticky key -> {family: address}
        self._reserved_for: dict[int, str] = {}
        self._released_at: dict[int, float] = {}
        self._cursor: dict[tuple[str, int], int] = {}  # (pool, family) -> next offset
        self.set_pools(pools)

    def set_pools(self, pools: Iterable[PoolConfig]) -> None:
        """Replace the pools (IPPool objects changed). Leases, reservations and release times stay
        as they are: an address held in a pool that shrank or went away stays held until released."""
        configs = list(pools)
        self.pools = {config.name: Pool.from_config(config) for config in configs}
        self.default = next((config.name for config in configs if config.default), None)
        self._cursor = {(name, space.version): self._cursor.get((name, space.version), 0) % max(space.size, 1)
                        for name, pool in self.pools.items() for space in pool.spaces}

    # -- restoring state -------------------------------------------------------------------------

    def restore(
        self, leases: Iterable[Lease], *, sticky: Mapping[str, str], released: Mapping[str, float]
    ) -> None:
        """Load what a store kept. Leases are taken as they are, even outside today's pools;
        `sticky` may hold either family (call again for the other)."""
        for lease in leases:
            self.commit(lease)
        for key, ip in sticky.items():
            self._reserve(key, key_of(ip))
        self._released_at.update((key_of(ip), at) for ip, at in released.items())

    # -- decisions -------------------------------------------------------------------------------

    def get(self, key: Key) -> Lease | None:
        return self._leases.get(key)

    def leases(self) -> list[Lease]:
        return list(self._leases.values())

    def plan(self, request: Request, *, now: float) -> Lease:
        """The lease `request` should get: one address per family of its pool, or the error about
        the first family that has none. Changes nothing; `commit` the answer once persisted."""
        wanted = requested(request)
        existing = self._leases.get(request.key)
        if existing is not None:
            return self._same_again(existing, request, wanted)
        pool = self._pool_for(request, wanted)
        for version, address in wanted.items():
            if pool.space(version) is None:
                raise BadRequest(f"ip: {_str(address)} is IPv{version}, and pool {pool.name} has no IPv{version} "
                                 f"subnet{'6' if version == 6 else ''}")
        addresses = []
        for space in pool.spaces:
            if space.version in wanted:
                address = self._fixed(pool, space, wanted[space.version], request)
            elif request.sticky is not None and space.version in self._sticky.get(request.sticky, {}):
                address = self._sticky_address(pool, space, request)
            else:
                address = self._pick(pool, space, now=now)
            addresses.append(address)
        before = self._sticky.get(request.sticky, {}) if request.sticky is not None else {}
        return Lease(
            request.container_id, request.ifname, request.owner, pool.name, _str(addresses[0]), request.sticky,
            sticky_before=tuple(_str(before[v]) for v in sorted(before)),
            ip6=_str(addresses[1]) if len(addresses) > 1 else None,
        )  # fmt: skip

    def commit(self, lease: Lease) -> None:
        self._leases[lease.key] = lease
        pool = self.pools.get(lease.pool)
        for ip in lease.ips:
            address = key_of(ip)
            self._holders[address] = lease
            if lease.sticky is not None:
                self._reserve(lease.sticky, address)
            space = None if pool is None else pool.space_of(address)
            if pool is not None and space is not None:
                self._cursor[(pool.name, space.version)] = (_offset(space, address) + 1) % space.size

    def release(self, key: Key, *, now: float) -> Lease | None:
        """Free an interface's addresses; they cool down before anyone but its sticky key gets them."""
        lease = self._free(key)
        if lease is not None:
            self._released_at.update((key_of(ip), now) for ip in lease.ips)
        return lease

    def rollback(self, key: Key) -> Lease | None:
        """Undo a committed lease whose addresses never reached the wire: no cooldown, and the
        sticky reservations are back to what they were before."""
        lease = self._free(key)
        if lease is not None and lease.sticky is not None:
            self.unreserve(lease.sticky)
            for ip in lease.sticky_before:
                self._reserve(lease.sticky, key_of(ip))
        return lease

    def _free(self, key: Key) -> Lease | None:
        lease = self._leases.pop(key, None)
        if lease is not None:
            for ip in lease.ips:
                del self._holders[key_of(ip)]
        return lease

    def unreserve(self, sticky: str) -> str | None:
        """Forget a sticky key (its StatefulSet pod is gone for good); returns the addresses it had
        ("198.18.0.5", or "198.18.0.5,fd00::5" for both families)."""
        addresses = self._sticky.pop(sticky, None)
        if not addresses:
            return None
        for address in addresses.values():
            del self._reserved_for[address]
        return _joined(addresses)

    def mark_held(self, lease: Lease) -> None:
        """Someone this IPAM does not serve holds `lease.ips` (another controller's pod, as the store
        found when it tried to take one): no request gets them, and refusals name that holder.
        Until a restart reloads who really holds what."""
        for ip in lease.ips:
            self._holders[key_of(ip)] = lease

    def pool_of(self, ip: str) -> str | None:
        """The pool that may hand out `ip`, if any."""
        address = key_of(ip)
        return next((pool.name for pool in self.pools.values() if pool.holds(address)), None)

    def usage(self, *, now: float) -> list[Usage]:
        """Each pool's families: how many addresses it has, holds, keeps for sticky keys, cools down."""
        cooling = [a for a, at in self._released_at.items() if a not in self._holders and now - at < self._cooldown_of(a)]
        kept = [a for a in self._reserved_for if a not in self._holders]
        return [Usage(pool.name, space.version, str(space.network.cidr), space.size,
                      *(sum(1 for a in group if space.offset(a) is not None) for group in (self._holders, kept, cooling)))
                for pool in self.pools.values() for space in pool.spaces]

    def _cooldown_of(self, address: int) -> float:
        pool = next((pool for pool in self.pools.values() if pool.holds(address)), None)
        return self.cooldown if pool is None or pool.cooldown is None else pool.cooldown

    def reserved(self) -> dict[str, str]:
        """Sticky key -> its addresses, as `unreserve` returns them."""
        return {key: _joined(addresses) for key, addresses in self._sticky.items() if addresses}

    # -- the rules -------------------------------------------------------------------------------

    def _same_again(self, lease: Lease, request: Request, wanted: Mapping[int, int]) -> Lease:
        held = {_version(key_of(ip)): key_of(ip) for ip in lease.ips}
        for version, address in wanted.items():
            if held.get(version) != address:
                raise ConflictError(
                    f"pod {request.owner}: container {request.container_id}/{request.ifname} "
                    f"already holds {', '.join(lease.ips)}, not the requested {_str(address)}"
                )
        return lease

    def _pool_for(self, request: Request, wanted: Mapping[int, int]) -> Pool:
        name = request.pool
        if name is None and wanted:
            address = next(iter(wanted.values()))
            name = next((pool.name for pool in self.pools.values() if pool.within(address)), None)
        name = name or self.default
        if name is None or name not in self.pools:
            raise BadRequest(f"pool: no pool named {name!r}" if name else "pool: no default pool configured")
        return self.pools[name]

    def _fixed(self, pool: Pool, space: Space, address: int, request: Request) -> int:
        if space.offset(address) is None:
            raise BadRequest(f"ip: {_str(address)} is not an allocatable address of pool {pool.name}")
        self._check_free(address, request)
        return address

    def _sticky_address(self, pool: Pool, space: Space, request: Request) -> int:
        assert request.sticky is not None
        address = self._sticky[request.sticky][space.version]
        if space.offset(address) is None:
            raise ConflictError(
                f"pod {request.owner}: sticky key {request.sticky} holds {_str(address)}, "
                f"which is not in pool {pool.name}"
            )
        holder = self._holders.get(address)
        if holder is not None:
            raise TemporaryError(
                f"pod {request.owner}: {_str(address)} (sticky {request.sticky}) is still held by "
                f"container {holder.container_id}/{holder.ifname} of {holder.owner}; retry once it is released",
                delay=2.0,
            )
        return address

    def _check_free(self, address: int, request: Request) -> None:
        holder = self._holders.get(address)
        if holder is not None:
            raise AddressInUse(f"pod {request.owner}: {_str(address)} is held by {holder.owner}")
        reserved_for = self._reserved_for.get(address)
        if reserved_for is not None and reserved_for != request.sticky:
            raise AddressInUse(f"pod {request.owner}: {_str(address)} is reserved for sticky key {reserved_for}",
                               reserved_for=reserved_for)

    def _pick(self, pool: Pool, space: Space, *, now: float) -> int:
        """The first free address at or after the family's cursor, wrapping around once. Each step
        past the first is over an address this IPAM knows (held, reserved or cooling down)."""
        start, cooling_until = self._cursor[(pool.name, space.version)], float("inf")
        cooldown = self.cooldown if pool.cooldown is None else pool.cooldown
        for step in range(space.size):
            address = space.address((start + step) % space.size)
            if address in self._holders or address in self._reserved_for:
                continue
            released_at = self._released_at.get(address)
            if released_at is not None and now - released_at < cooldown:
                cooling_until = min(cooling_until, released_at + cooldown)
                continue
            return address
        family = pool._family(space)
        if cooling_until != float("inf"):
            raise PoolCoolingDown(
                f"pool {pool.name}: every free {family}address is cooling down after release; retry in "
                f"{cooling_until - now:.0f}s",
                delay=cooling_until - now,
            )
        raise PoolExhausted(f"pool {pool.name}: {family}exhausted (all {space.size} addresses are held or reserved)")

    def _reserve(self, sticky: str, address: int) -> None:
        mine = self._sticky.setdefault(sticky, {})
        previous = mine.get(_version(address))
        if previous is not None and previous != address:
            del self._reserved_for[previous]
        mine[_version(address)] = address
        self._reserved_for[address] = sticky


def requested(request: Request) -> dict[int, int]:
    """The addresses a request asks for by family, or BadRequest for two of one family."""
    wanted: dict[int, int] = {}
    texts = ([request.ip] if request.ip is not None else []) + list(request.ips)
    for text in texts:
        address = key_of(parse_ip(text, field_name="ip" if text == request.ip else "ips", versions=(4, 6)))
        other = wanted.setdefault(_version(address), address)
        if other != address:
            raise BadRequest(f"ips: two IPv{_version(address)} addresses ({_str(other)}, {_str(address)}); "
                             "at most one per family")
    return wanted


def parse_ip(text: str, *, field_name: str = "ip", versions: tuple[int, ...] = (4,)) -> str:
    """A requested address in canonical form (IPv6 compressed), or BadRequest naming the field."""
    kinds = " or ".join(f"IPv{version}" for version in versions)
    try:
        address = ipaddress.ip_address(text)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"{field_name}: {text!r} is not an {kinds} address") from err
    if address.version not in versions or getattr(address, "scope_id", None):  # fe80::1%eth0 names a link, not an address
        raise BadRequest(f"{field_name}: {text!r} is not an {kinds} address")
    return str(address)


MAC_PREFIX = (0x02, 0x55)
"""Derived pod MACs: locally administered, unicast, then the four bytes of the IPv4 address."""
MAC_PREFIX6 = (0x02, 0x56)
"""Derived MACs of IPv6-only pods: then the last four bytes of the IPv6 address."""


def derive_mac(ip: str) -> str:
    """The MAC of a macvlan pod that did not ask for one: a function of its IP, as many CNIs do,
    so the same address always answers at the same MAC (and a sticky pod keeps both). A dual-stack
    pod's comes from its IPv4 address."""
    address = ipaddress.ip_address(ip)
    prefix = MAC_PREFIX if address.version == 4 else MAC_PREFIX6
    return _format_mac(bytes(prefix) + address.packed[-4:])


def parse_mac(text: str, *, field_name: str = "mac") -> str:
    """A requested MAC in canonical lower-case colon form; multicast and all-zero are refused."""
    try:
        raw = netaddr.EUI(text, version=48).packed
    except (netaddr.AddrFormatError, ValueError, TypeError) as err:
        raise BadRequest(f"{field_name}: {text!r} is not a MAC address") from err
    if raw[0] & 0x01:
        raise BadRequest(f"{field_name}: {text} is a multicast address")
    if not any(raw):
        raise BadRequest(f"{field_name}: {text} is the all-zero address")
    return _format_mac(raw)


def _format_mac(raw: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in raw)


@functools.lru_cache(maxsize=1 << 16)
def key_of(ip: str) -> int:
    """An address as this IPAM's integer key (IPv6 above every IPv4: see V6). Cached: a lease's
    addresses are parsed at every step of its life, and parsing IPv6 text is not cheap."""
    address = ipaddress.ip_address(ip)
    return int(address) + (V6 if address.version == 6 else 0)


def _str(address: int) -> str:
    return str(ipaddress.IPv6Address(address - V6)) if address >= V6 else str(ipaddress.IPv4Address(address))


def _version(address: int) -> int:
    return 6 if address >= V6 else 4


def _offset(space: Space, address: int) -> int:
    offset = space.offset(address)
    assert offset is not None
    return offset


def _joined(addresses: Mapping[int, int]) -> str:
    return ",".join(_str(addresses[version]) for version in sorted(addresses))
