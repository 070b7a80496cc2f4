"""An in-memory OpenFlow 1.3 switch for the switch worker's tests: it answers the worker's messages
as Open vSwitch does (flow stats, aggregate counts, role requests, barriers, ONF bundles applied at
commit) from a
table of `Flow` values, synchronously on the sender's thread, and counts what it was asked.

Flow-mods arrive as the bytes the worker really sends (openflow.ofmsg.bundle_transaction) and are
parsed back with os-ken, so the worker's encoding is exercised too. tests/controller/test_audit_ovs.py
runs the same worker against the real switch."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from openflow import ofmsg
from openflow.diff import apply
from openflow.flows import Flow
from openflow.tables import table_id

HEADER = struct.Struct("!BBHI")
BUNDLE_ADD_HEADER = 24  # ofp header, experimenter id and type, bundle id, pad, flags
_DESC = ProtocolDesc(ofp.OFP_VERSION)


class FakeDatapath:
    """What SwitchSession uses of an os-ken datapath; `session` receives the replies."""

    def __init__(self, dpid: int = 1) -> None:
        self.id, self.xid = dpid, 0
        self.ofproto, self.ofproto_parser = ofp, parser
        self.session: Any = None  # set once the session exists
        self.flows: frozenset[Flow] = frozenset()
        self.reads = self.counts = self.bundles = 0  # flow-stats reads, aggregate requests, bundles
        self.roles: list[int] = []  # the roles claimed, in order
        self.changed = threading.Condition()

    def wait(self, condition: Callable[[], bool], timeout: float = 10) -> bool:
        """Until `condition()` holds, re-checked after every message the switch handles."""
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def edit(self, *, remove: frozenset[Flow] = frozenset(), add: frozenset[Flow] = frozenset()) -> None:
        """A change by hand (`ovs-ofctl del-flows`/`add-flow`), behind the controller's back."""
        with self.changed:
            self.flows = (self.flows - remove) | add

    def send_msg(self, msg: Any) -> bool:
        if isinstance(msg, parser.OFPFlowStatsRequest):
            with self.changed:
                entries = [ofmsg.flow_mod(_DESC, flow) for flow in self.flows]
                self.reads += 1
            self._reply(msg.xid, body=entries)
        elif isinstance(msg, parser.OFPAggregateStatsRequest):
            with self.changed:
                count = sum(1 for flow in self.flows if table_id(flow.table) == msg.table_id
                            and flow.cookie & msg.cookie_mask == msg.cookie & msg.cookie_mask)
                self.counts += 1
            self._reply(msg.xid, body=SimpleNamespace(flow_count=count))
        elif isinstance(msg, parser.OFPRoleRequest):
            self.roles.append(msg.role)
            self._reply(msg.xid, role=msg.role, generation_id=msg.generation_id)
        else:  # a barrier
            self._reply(msg.xid)
        return True

    def send(self, blob: bytes) -> bool:
        """One bundle transaction: open, adds, commit, barrier; applied whole at the commit."""
        deleted, added, xids = [], [], []
        offset = 0
        while offset < len(blob):
            _, kind, length, xid = HEADER.unpack_from(blob, offset)
            message = blob[offset:offset + length]
            offset += length
            xids.append(xid)
            if kind == ofp.OFPT_EXPERIMENTER and len(message) > BUNDLE_ADD_HEADER:
                inner = message[BUNDLE_ADD_HEADER:]
                mod = ofproto_parser.msg(_DESC, *HEADER.unpack_from(inner), inner)
                (deleted if mod.command == ofp.OFPFC_DELETE_STRICT else added).extend(ofmsg.parse_flow_stats([mod]))
        with self.changed:
            self.flows = apply(self.flows, deleted, added)
            self.bundles += 1
        for xid in (xids[0], xids[-2], xids[-1]):  # open, commit, barrier
            self._reply(xid)
        return True

    def _reply(self, xid: int, **fields: Any) -> None:
        self.session.on_reply(SimpleNamespace(xid=xid, **fields))
        with self.changed:
            self.changed.notify_all()
