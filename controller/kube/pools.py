"""IPPool objects: the IPAM's pools, applied live, and each pool's status written back.

Pure part: `read_pool` turns an IPPool into the IPAM's `PoolConfig` (the same validation and
messages as a `[pools.<name>]` table of the TOML config), `judge` decides each pool's `Ready`
condition across all pools, `status_of` writes it down with the pool's counts.

Overlap is the controller's to check (CEL sees one object at a time): of two pools that share an
address, the older keeps serving and the younger is `Ready=False, reason=OverlapsPool`, naming the
older, and stays out of the IPAM until it is fixed. A pool whose spec the controller cannot use is
`Ready=False, reason=InvalidSpec`; a disabled one `Ready=False, reason=Disabled` (it stays in the
IPAM, so pods holding its addresses keep their gateway and routes, and hands out nothing new).

`PoolManager` watches IPPools (and IPAllocations, for the counts), hands the usable pools to the
service whenever they change, and writes status through the status subresource at most once per
`interval` per pool, only when it changed: a burst of a thousand pods is one write, not a thousand.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import netaddr

from controller.config import ConfigError, PoolConfig, parse_pool, ranges_of
from controller.errors import ControllerError
from controller.ipam import Pool
from controller.kube.allocations import Phase, timestamp
from controller.kube.client import IPALLOCATIONS, IPPOOLS, Kube, Missing, Object
from controller.kube.reflector import Reflector
from controller.logs import kv
from controller.selectors import SelectorError, pool_rules

LOG = logging.getLogger("underlay.pools")
MAX_TOTAL = 2**63 - 1
"""status.total counts addresses of both families; an IPv6 /64 has more than an int64 holds."""
_SPEC_KEYS = {"ranges6": "ips6", "ranges": "ips", "exclude": "excludeIPs"}  # the TOML's names -> the IPPool's, for messages


@dataclass(frozen=True)
class PoolObject:
    """What the controller keeps of one IPPool."""

    name: str
    created: str  # creationTimestamp: the older of two overlapping pools wins
    generation: int
    config: PoolConfig | None  # None: the spec is not usable (see `error`)
    error: str | None = None
    disabled: bool = False
    status: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as served, to skip no-op writes


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    message: str = ""


def read_pool(obj: Object) -> PoolObject:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name = meta["name"]
    where = f"ippool {name}: spec"
    data: dict[str, Any] = {"default": bool(spec.get("default", False))}
    for ours, theirs in (("ranges", "ips"), ("ranges6", "ips6")):
        if spec.get(theirs):
            data[ours] = [text if "-" in str(text) else f"{text}-{text}" for text in spec[theirs]]
    if spec.get("excludeIPs"):
        data["exclude"] = spec["excludeIPs"]
    for key in ("subnet", "subnet6", "gateway", "gateway6", "routes", "vlan"):
        if spec.get(key) is not None:
            data[key] = spec[key]
    cooldown = spec.get("reuseCooldownSeconds")
    base = PoolObject(name, meta.get("creationTimestamp", ""), int(meta.get("generation", 0)), None,
                      disabled=bool(spec.get("disabled", False)), status=obj.get("status") or {})  # fmt: skip
    try:
        config = parse_pool(name, data, where=where)
        if cooldown is not None and (isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown < 0):
            raise ConfigError(f"{where}.reuseCooldownSeconds: {cooldown!r} is not a number of seconds (>= 0)")
        rules = pool_rules(spec, path=where)
    except (ConfigError, SelectorError) as err:
        message = str(err)
        for ours, theirs in _SPEC_KEYS.items():
            message = message.replace(f"{where}.{ours}", f"{where}.{theirs}")
        return replace(base, error=message)
    return replace(base, config=replace(config, default=config.default and not base.disabled, rules=rules,
                                        cooldown=None if cooldown is None else float(cooldown)))  # fmt: skip


def judge(pools: Iterable[PoolObject]) -> dict[str, Verdict]:
    """Each pool's Ready condition; of overlapping pools the oldest (then first by name) wins. Pools
    in different VLANs do not overlap: their addresses are in different broadcast domains."""
    verdicts: dict[str, Verdict] = {}
    serving: list[tuple[str, int | None, netaddr.IPSet]] = []
    for pool in sorted(pools, key=lambda p: (p.created, p.name)):
        if pool.config is None:
            verdicts[pool.name] = Verdict(False, "InvalidSpec", pool.error or "")
            continue
        addresses = ranges_of(pool.config)
        clash = next(((other, shared) for other, vlan, theirs in serving
                      if vlan == pool.config.vlan and (shared := addresses & theirs)), None)
        if clash is not None:
            other, shared = clash
            first = next(iter(shared.iter_ipranges()))
            where = str(first) if first.size > 1 else str(netaddr.IPAddress(first.first))
            verdicts[pool.name] = Verdict(False, "OverlapsPool",
                                          f"its addresses overlap pool {other} ({where}); it serves none until fixed")  # fmt: skip
            continue
        serving.append((pool.name, pool.config.vlan, addresses))
        verdicts[pool.name] = Verdict(False, "Disabled", "spec.disabled is true") if pool.disabled \
            else Verdict(True, "Ready", "")  # fmt: skip
    return verdicts


def usable(pools: Iterable[PoolObject], verdicts: Mapping[str, Verdict]) -> list[PoolConfig]:
    """The pools the IPAM gets: ready and disabled ones (see the module docstring), by name."""
    chosen = [p for p in pools if p.config is not None and (verdicts[p.name].ready or verdicts[p.name].reason == "Disabled")]
    return [p.config for p in sorted(chosen, key=lambda p: p.name) if p.config is not None]


def status_of(pool: PoolObject, verdict: Verdict, counts: Mapping[str, int], *, now: float) -> dict[str, Any]:
    """The status to write; the condition's lastTransitionTime moves only when its status does."""
    condition = {"type": "Ready", "status": "True" if verdict.ready else "False", "reason": verdict.reason,
                 "message": verdict.message, "observedGeneration": pool.generation}  # fmt: skip
    previous: Mapping[str, Any] = next((c for c in pool.status.get("conditions") or () if c.get("type") == "Ready"), {})
    same = previous.get("status") == condition["status"] and previous.get("lastTransitionTime")
    condition["lastTransitionTime"] = previous["lastTransitionTime"] if same else timestamp(now)[:19] + "Z"
    total = 0 if pool.config is None else min(Pool.from_config(pool.config).size, MAX_TOTAL)
    return {
        "total": total,
        "allocated": counts.get(Phase.BOUND.value, 0) + counts.get(Phase.RESERVED.value, 0),
        "cooldown": counts.get(Phase.COOLDOWN.value, 0),
        "conditions": [condition],
    }


def _allocation(obj: Object) -> tuple[str, str]:
    """What the counts need of an IPAllocation: (pool, phase), each string stored once."""
    pool, phase = (obj.get("spec") or {}).get("pool", ""), (obj.get("status") or {}).get("phase") or Phase.BOUND.value
    return sys.intern(str(pool)), sys.intern(str(phase))


class PoolManager:
    """IPPools to the IPAM, live, and their status back to the API (batched)."""

    def __init__(self, kube: Kube, *, now: Callable[[], float] = time.time, interval: float = 1.0) -> None:
        self.kube, self.now, self.interval = kube, now, interval
        self._lock = threading.Lock()
        self._apply: Callable[[list[PoolConfig]], None] | None = None
        self._verdicts: dict[str, Verdict] = {}
        self._configs: list[PoolConfig] = []
        self._counts: dict[str, Counter[str]] = {}
        self._dirty: set[str] = set()
        self._written: dict[str, float] = {}  # pool -> when its status was last written
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self.writes = 0  # status writes so far (a test's measure of batching)
        self.pools = Reflector(kube, IPPOOLS, transform=read_pool, on_change=self._pool_changed)
        self.allocations = Reflector(kube, IPALLOCATIONS, transform=_allocation, on_change=self._allocation_changed)
        self._thread = threading.Thread(target=self._write_forever, name="pool-status", daemon=True)

    def start(self) -> PoolManager:
        self.pools.start()
        self.allocations.start()
        self._thread.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self.pools.wait_synced(timeout) and self.allocations.wait_synced(timeout)

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify_all()
        self.pools.stop()
        self.allocations.stop()
        self._thread.join(timeout=10)

    def bind(self, apply: Callable[[list[PoolConfig]], None]) -> None:
        """From now on hand every change of the usable pools to `apply` (the service's
        `set_pools`), starting with the current ones."""
        with self._lock:
            self._apply = apply
            apply(list(self._configs))

    def configs(self) -> list[PoolConfig]:
        with self._lock:
            return list(self._configs)

    def cooldown(self, pool: str) -> float | None:
        """The pool's own reuseCooldownSeconds, if it has one."""
        found = self.pools.get(pool)
        return None if found is None or found.config is None else found.config.cooldown

    def pool_of(self, ip: str) -> str | None:
        """The usable pool whose ranges hold `ip`."""
        address = netaddr.IPAddress(ip)
        return next((c.name for c in self.configs() if address in ranges_of(c)), None)

    def verdict(self, pool: str) -> Verdict | None:
        return self._verdicts.get(pool)

    # -- reacting to the watches (their threads) -------------------------------------------------

    def _pool_changed(self, key: str, old: PoolObject | None, new: PoolObject | None) -> None:
        if old is not None and new is not None and old == new:  # only its status moved (our write)
            return
        pools = list(self.pools.items().values())
        verdicts = judge(pools)
        configs = usable(pools, verdicts)
        with self._lock:
            self._verdicts = verdicts
            self._dirty.update(verdicts)
            changed = configs != self._configs
            self._configs = configs
            if changed and self._apply is not None:
                self._apply(list(configs))
            self._wake.notify_all()
        if changed:
            LOG.info(kv("pools applied", pools=",".join(c.name for c in configs) or "none"))

    def _allocation_changed(self, key: str, old: tuple[str, str] | None, new: tuple[str, str] | None) -> None:
        with self._lock:
            for value, step in ((old, -1), (new, 1)):
                if value is not None:
                    pool, phase = value
                    self._counts.setdefault(pool, Counter())[phase] += step
                    self._dirty.add(pool)
            self._wake.notify_all()

    # -- writing status --------------------------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            with self._lock:
                due = self._due()
                while not self._stop and not due:
                    self._wake.wait(self._next_in())
                    due = self._due()
                if self._stop:
                    return
                self._dirty.difference_update(due)
            for name in due:
                self._write_status(name)

    def _due(self) -> list[str]:
        now = time.monotonic()
        return [name for name in self._dirty if now - self._written.get(name, -1e9) >= self.interval]

    def _next_in(self) -> float | None:
        if not self._dirty:
            return None
        now = time.monotonic()
        return max(0.01, min(self._written.get(name, -1e9) + self.interval - now for name in self._dirty))

    def _write_status(self, name: str) -> None:
        pool, verdict = self.pools.get(name), self._verdicts.get(name)
        if pool is None or verdict is None:
            return
        with self._lock:
            counts = dict(self._counts.get(name, {}))
        status = status_of(pool, verdict, counts, now=self.now())
        if status == dict(pool.status):
            return
        self._written[name] = time.monotonic()
        try:
            self.kube.patch(IPPOOLS.path(name=name, sub="status"), {"status": status})
            self.writes += 1
        except Missing:
            pass  # deleted meanwhile
        except ControllerError as err:
            LOG.warning(kv("pool status not written", pool=name, error=err))
            with self._lock:
                self._dirty.add(name)
