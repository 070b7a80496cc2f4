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
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import netaddr

from controller.config import PoolConfig, Route
from controller.errors import AddressInUse, BadRequest, ConflictError, PoolCoolingDown, PoolExhausted, TemporaryError
from controller.selectors import PoolRules

Key = tuple[str, str]
"""(container id, ifname): one pod interface."""


@dataclass(frozen=True)
class Request:
    container_id: str
    ifname: str
    owner: str  # "namespace/name", for messages
    pool: str | None = None
    ip: str | None = None
    sticky: str | None = None

    @property
    def key(self) -> Key:
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class Lease:
    container_id: str
    ifname: str
    owner: str
    pool: str
    ip: str
    sticky: str | None = None
    sticky_before: str | None = field(default=None, compare=False)  # what a rollback restores

    @property
    def key(self) -> Key:
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class Pool:
    """A pool's allocatable addresses as sorted, disjoint (first, last) integer blocks."""

    name: str
    network: netaddr.IPNetwork
    gateway: str | None
    routes: tuple[Route, ...]
    blocks: tuple[tuple[int, int], ...]
    starts: tuple[int, ...] = field(repr=False)  # offset of each block's first address
    size: int
    cooldown: float | None = None  # the pool's own, else the IPAM's
    default: bool = False
    rules: PoolRules = PoolRules()  # who may use it (intent's pool selection asks)

    @classmethod
    def from_config(cls, config: PoolConfig) -> Pool:
        network = netaddr.IPNetwork(config.subnet)
        usable = netaddr.IPSet(netaddr.IPRange(first, last) for first, last in config.ranges)
        never = [network.network, network.broadcast, config.gateway, *config.exclude]
        usable -= netaddr.IPSet(str(address) for address in never if address is not None)
        blocks = tuple((r.first, r.last) for r in usable.iter_ipranges())
        starts, size = [], 0
        for first, last in blocks:
            starts.append(size)
            size += last - first + 1
        return cls(config.name, network, config.gateway, config.routes, blocks, tuple(starts), size,
                   config.cooldown, config.default, config.rules)

    def address(self, offset: int) -> int:
        block = bisect.bisect_right(self.starts, offset) - 1
        return self.blocks[block][0] + offset - self.starts[block]

    def offset(self, address: int) -> int | None:
        """Where `address` sits among the allocatable ones, or None when it is not allocatable."""
        block = bisect.bisect_right(self.blocks, (address, 2**32)) - 1
        if block < 0 or address > self.blocks[block][1]:
            return None
        return self.starts[block] + address - self.blocks[block][0]

    def holds(self, address: int) -> bool:
        """Whether the pool may hand out `address` (an int: asked of every pool in turn)."""
        return self.offset(address) is not None

    @property
    def prefix(self) -> int:
        return int(self.network.prefixlen)


class Ipam:
    """The live leases, sticky reservations and release times of every pool, in memory."""

    def __init__(self, pools: Iterable[PoolConfig], *, cooldown: float) -> None:
        self.cooldown = cooldown
        self._leases: dict[Key, Lease] = {}
        self._holders: dict[int, Lease] = {}
        self._sticky: dict[str, int] = {}
        self._reserved_for: dict[int, str] = {}
        self._released_at: dict[int, float] = {}
        self._cursor: dict[str, int] = {}
        self.set_pools(pools)

    def set_pools(self, pools: Iterable[PoolConfig]) -> None:
        """Replace the pools (IPPool objects changed). Leases, reservations and release times stay
        as they are: an address held in a pool that shrank or went away stays held until released."""
        configs = list(pools)
        self.pools = {config.name: Pool.from_config(config) for config in configs}
        self.default = next((config.name for config in configs if config.default), None)
        self._cursor = {name: self._cursor.get(name, 0) % max(pool.size, 1) for name, pool in self.pools.items()}

    # -- restoring state -------------------------------------------------------------------------

    def restore(
        self, leases: Iterable[Lease], *, sticky: Mapping[str, str], released: Mapping[str, float]
    ) -> None:
        """Load what a store kept. Leases are taken as they are, even outside today's pools."""
        for lease in leases:
            self.commit(lease)
        for key, ip in sticky.items():
            self._reserve(key, _int(ip))
        self._released_at.update((_int(ip), at) for ip, at in released.items())

    # -- decisions -------------------------------------------------------------------------------

    def get(self, key: Key) -> Lease | None:
        return self._leases.get(key)

    def leases(self) -> list[Lease]:
        return list(self._leases.values())

    def plan(self, request: Request, *, now: float) -> Lease:
        """The lease `request` should get. Changes nothing; `commit` the answer once persisted."""
        if request.ip is not None:
            request = replace(request, ip=parse_ip(request.ip))
        existing = self._leases.get(request.key)
        if existing is not None:
            return self._same_again(existing, request)
        pool = self._pool_for(request)
        if request.ip is not None:
            address = self._fixed(pool, request)
        elif request.sticky is not None and request.sticky in self._sticky:
            address = self._sticky_address(pool, request)
        else:
            address = self._pick(pool, now=now)
        before = None if request.sticky is None else self._sticky.get(request.sticky)
        return Lease(
            request.container_id, request.ifname, request.owner, pool.name, _str(address), request.sticky,
            sticky_before=None if before is None else _str(before),
        )  # fmt: skip

    def commit(self, lease: Lease) -> None:
        address = _int(lease.ip)
        self._leases[lease.key] = lease
        self._holders[address] = lease
        if lease.sticky is not None:
            self._reserve(lease.sticky, address)
        pool = self.pools.get(lease.pool)
        offset = None if pool is None else pool.offset(address)
        if pool is not None and offset is not None:
            self._cursor[pool.name] = (offset + 1) % pool.size

    def release(self, key: Key, *, now: float) -> Lease | None:
        """Free an interface's address; it cools down before anyone but its sticky key gets it."""
        lease = self._free(key)
        if lease is not None:
            self._released_at[_int(lease.ip)] = now
        return lease

    def rollback(self, key: Key) -> Lease | None:
        """Undo a committed lease whose address never reached the wire: no cooldown, and the
        sticky reservation is back to what it was before."""
        lease = self._free(key)
        if lease is not None and lease.sticky is not None:
            if lease.sticky_before is None:
                self.unreserve(lease.sticky)
            else:
                self._reserve(lease.sticky, _int(lease.sticky_before))
        return lease

    def _free(self, key: Key) -> Lease | None:
        lease = self._leases.pop(key, None)
        if lease is not None:
            del self._holders[_int(lease.ip)]
        return lease

    def unreserve(self, sticky: str) -> str | None:
        """Forget a sticky key (its StatefulSet pod is gone for good); returns the address it had."""
        address = self._sticky.pop(sticky, None)
        if address is None:
            return None
        del self._reserved_for[address]
        return _str(address)

    def mark_held(self, lease: Lease) -> None:
        """Someone this IPAM does not serve holds `lease.ip` (another controller's pod, as the store
        found when it tried to take it): no request gets it, and refusals name that holder. Until a
        restart reloads who really holds what."""
        self._holders[_int(lease.ip)] = lease

    def pool_of(self, ip: str) -> str | None:
        """The pool that may hand out `ip`, if any."""
        address = _int(ip)
        return next((pool.name for pool in self.pools.values() if pool.offset(address) is not None), None)

    def reserved(self) -> dict[str, str]:
        return {key: _str(address) for key, address in self._sticky.items()}

    # -- the rules -------------------------------------------------------------------------------

    def _same_again(self, lease: Lease, request: Request) -> Lease:
        if request.ip is not None and _int(request.ip) != _int(lease.ip):
            raise ConflictError(
                f"pod {request.owner}: container {request.container_id}/{request.ifname} "
                f"already holds {lease.ip}, not the requested {request.ip}"
            )
        return lease

    def _pool_for(self, request: Request) -> Pool:
        name = request.pool
        if name is None and request.ip is not None:
            address = netaddr.IPAddress(_int(request.ip))
            name = next((pool.name for pool in self.pools.values() if address in pool.network), None)
        name = name or self.default
        if name is None or name not in self.pools:
            raise BadRequest(f"pool: no pool named {name!r}" if name else "pool: no default pool configured")
        return self.pools[name]

    def _fixed(self, pool: Pool, request: Request) -> int:
        assert request.ip is not None
        address = _int(request.ip)
        if pool.offset(address) is None:
            raise BadRequest(f"ip: {request.ip} is not an allocatable address of pool {pool.name}")
        self._check_free(address, request)
        return address

    def _sticky_address(self, pool: Pool, request: Request) -> int:
        assert request.sticky is not None
        address = self._sticky[request.sticky]
        if pool.offset(address) is None:
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

    def _pick(self, pool: Pool, *, now: float) -> int:
        """The first free address at or after the cursor, wrapping around once."""
        start, cooling_until = self._cursor[pool.name], float("inf")
        cooldown = self.cooldown if pool.cooldown is None else pool.cooldown
        for step in range(pool.size):
            address = pool.address((start + step) % pool.size)
            if address in self._holders or address in self._reserved_for:
                continue
            released_at = self._released_at.get(address)
            if released_at is not None and now - released_at < cooldown:
                cooling_until = min(cooling_until, released_at + cooldown)
                continue
            return address
        if cooling_until != float("inf"):
            raise PoolCoolingDown(
                f"pool {pool.name}: every free address is cooling down after release; retry in "
                f"{cooling_until - now:.0f}s",
                delay=cooling_until - now,
            )
        raise PoolExhausted(f"pool {pool.name}: exhausted (all {pool.size} addresses are held or reserved)")

    def _reserve(self, sticky: str, address: int) -> None:
        previous = self._sticky.get(sticky)
        if previous is not None and previous != address:
            del self._reserved_for[previous]
        self._sticky[sticky] = address
        self._reserved_for[address] = sticky


def parse_ip(text: str, *, field_name: str = "ip") -> str:
    """A requested IPv4 address in canonical form, or BadRequest naming the field."""
    try:
        address = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError) as err:
        raise BadRequest(f"{field_name}: {text!r} is not an IPv4 address") from err
    if address.version != 4:
        raise BadRequest(f"{field_name}: {text!r} is not an IPv4 address")
    return str(address)


MAC_PREFIX = (0x02, 0x55)
"""Derived pod MACs: locally administered, unicast, then the four bytes of the IPv4 address."""


def derive_mac(ip: str) -> str:
    """The MAC of a macvlan pod that did not ask for one: a function of its IP, as many CNIs do,
    so the same address always answers at the same MAC (and a sticky pod keeps both)."""
    return _format_mac(bytes(MAC_PREFIX) + ipaddress.IPv4Address(ip).packed)


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


def _int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _str(address: int) -> str:
    return str(ipaddress.IPv4Address(address))
