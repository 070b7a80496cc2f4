"""Registration and anti-entropy with the controller.

The agent registers its node (uplink MAC and IP), then re-reports its full set of attachments every
`interval` seconds and at once when the controller's epoch changes (a restarted controller may have
lost what it knew): the client calls `poke` when an answer, to whatever call, carries a new epoch.
Attachments the controller reports `unknown` are re-allocated with the address and MAC the pod
already has. Failures back off exponentially and never stop the loop.

A CNI call that finds the controller does not know this node at all (restarted without its store)
cannot wait for the loop: its allocation could take the address of a pod the controller has not
heard of yet. It calls `catch_up`, which syncs right there, once per epoch however many calls ask.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cni.spec import CniError
from node_agent.agent import Agent, address_fields
from node_agent.controller_client import ControllerClient, ControllerError, PermanentError
from node_agent.netlink import NetlinkFailure
from node_agent.state import owner

log = logging.getLogger("underlay.sync")


class Syncer:
    def __init__(self, agent: Agent, client: ControllerClient, *, interval: float = 60.0,
                 max_backoff: float = 30.0) -> None:
        self.agent = agent
        self.client = client
        self.interval = interval
        self.max_backoff = max_backoff
        self.registered_epoch: str | None = None
        self.synced_epoch: str | None = None  # the epoch of the last full sync that succeeded
        self._syncing = threading.Lock()  # one full sync at a time: the loop's, or a CNI call's
        self._wake = threading.Event()
        self._stop = threading.Event()

    def register(self) -> None:
        uplink = self.agent.node.uplink(self.agent.master)
        self.client.register(mac=uplink.mac, ip=uplink.ip, ip6=uplink.ip6)
        self.registered_epoch = self.client.epoch
        log.info("event=registered node=%s mac=%s ip=%s ip6=%s epoch=%s", self.client.node, uplink.mac, uplink.ip,
                 uplink.ip6, self.client.epoch)

    def sync_once(self) -> dict[str, Any]:
        """Register if the controller is new to us (or forgot us), then report the full state."""
        with self._syncing:
            answer = self._sync()
            self.synced_epoch = self.client.epoch
            return answer

    def catch_up(self) -> None:
        """For a CNI call the controller answered "unknown node": a full sync, unless one already
        happened at the epoch that answer came from (many calls ask at once; one syncs)."""
        epoch = self.client.epoch
        with self._syncing:
            if epoch is not None and epoch == self.synced_epoch:
                return
            self._sync()
            self.synced_epoch = self.client.epoch

    def _sync(self) -> dict[str, Any]:
        if self.registered_epoch is None or self.client.epoch != self.registered_epoch:
            self.register()
        try:
            answer = self.client.sync(self.agent.attachments())
        except PermanentError as exc:
            if exc.status != 404:
                raise
            self.register()
            answer = self.client.sync(self.agent.attachments())
        if self.client.epoch != self.registered_epoch:  # restarted between our calls
            self.register()
            answer = self.client.sync(self.agent.attachments())
        self._readd(answer.get("unknown", []))
        return answer

    def _readd(self, unknown: list[dict[str, Any]]) -> None:
        """Attachments the controller lost: ask for the same address and MAC again."""
        for item in unknown:
            record = self.agent.store.get(item["container_id"], item["ifname"])
            if record is None or record.standalone:
                continue
            body = {"container_id": record.container_id, "ifname": record.ifname, "mode": record.mode, "pool": None,
                    **address_fields(list(record.ips)), "mac": record.mac if record.mode == "macvlan" else None, "sticky": None,
                    **owner(record.namespace, record.name, record.container_id)}
            try:
                self.client.allocate(body)
                log.info("event=readded pod=%s ip=%s", record.pod, record.ip)
            except ControllerError as exc:
                log.error("event=readd-failed pod=%s ip=%s error=%r", record.pod, record.ip, exc.reason)

    def run(self) -> None:
        """The loop: sync, then wait `interval` (or the backoff after a failure), until stopped."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.sync_once()
                delay, wait = 0.5, self.interval
            except (ControllerError, CniError, NetlinkFailure, OSError) as exc:
                log.warning("event=sync-failed retry_in=%.1fs error=%s", delay, getattr(exc, "msg", exc))
                wait, delay = delay, min(delay * 2, self.max_backoff)
            self._wake.wait(wait)
            self._wake.clear()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="controller-sync", daemon=True)
        thread.start()
        return thread

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
