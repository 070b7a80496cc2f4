"""A minimal test-only OpenFlow 1.3 controller end: one blocking TCP connection from one switch.

Messages are os-ken parser objects, serialised with `msg.serialize()`; what the switch sends is parsed
with `os_ken.ofproto.ofproto_parser.msg`, so the tests see the real OFPFlowStatsReply of Open vSwitch.
No os-ken app manager, no eventlet: the controller proper is someone else's job.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from deploy.lab.rig import Rig
from openflow.flows import Flow
from openflow.model import Placement
from openflow.ofmsg import flow_mod, flow_stats_request
from openflow.pipeline import placement_flows

HEADER = struct.Struct("!BBHI")


class OpenFlowError(RuntimeError):
    pass


class Peer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.datapath = ProtocolDesc(ofp.OFP_VERSION)  # what os-ken's builders and parsers need
        self._xids = itertools.count(1)

    def send(self, msg: Any) -> int:
        msg.xid = next(self._xids)
        msg.serialize()
        self.sock.sendall(bytes(msg.buf))
        return int(msg.xid)

    def receive(self) -> Any:
        """The next message that is not an echo request (echoes are answered on the way)."""
        while True:
            header = self._read(HEADER.size)
            version, msg_type, length, xid = HEADER.unpack(header)
            body = self._read(length - HEADER.size)
            if msg_type == ofp.OFPT_ECHO_REQUEST:
                reply = parser.OFPEchoReply(self.datapath, body)
                reply.xid = xid
                reply.serialize()
                self.sock.sendall(bytes(reply.buf))
                continue
            return ofproto_parser.msg(self.datapath, version, msg_type, length, xid, header + body)

    def request(self, msg: Any, *reply_types: type) -> list[Any]:
        """Send `msg`; collect its replies (all parts of a multipart one); raise on an error reply."""
        xid = self.send(msg)
        replies = []
        while True:
            reply = self.receive()
            if reply.xid == xid and isinstance(reply, parser.OFPErrorMsg):
                raise OpenFlowError(f"switch refused {msg}: {reply}")
            if reply.xid != xid or not isinstance(reply, reply_types):
                continue  # the switch's hello, port status and other asynchronous messages
            replies.append(reply)
            if not getattr(reply, "flags", 0) & ofp.OFPMPF_REPLY_MORE:
                return replies

    def flow_mods(self, flows: Iterable[Flow], *, delete: bool = False) -> None:
        """Send the flow-mods, then a barrier: any error the switch reports fails here."""
        xids = {self.send(flow_mod(self.datapath, flow, delete=delete)) for flow in flows}
        barrier = self.send(parser.OFPBarrierRequest(self.datapath))
        while (reply := self.receive()).xid != barrier or not isinstance(reply, parser.OFPBarrierReply):
            if isinstance(reply, parser.OFPErrorMsg) and reply.xid in xids:
                raise OpenFlowError(f"switch refused a flow-mod: {reply}")

    def flow_stats(self, cookie: int) -> list[Any]:
        """The OFPFlowStats entries of every part of the switch's reply."""
        replies = self.request(flow_stats_request(self.datapath, cookie), parser.OFPFlowStatsReply)
        return [entry for reply in replies for entry in reply.body]

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise OpenFlowError("the switch closed the connection")
            data += chunk
        return data


@contextlib.contextmanager
def connected(rig: Rig, bridge: str) -> Iterator[Peer]:
    """An OpenFlow 1.3 session on the bridge's management socket (the one ovs-ofctl uses).

    A unix socket reaches ovs-vswitchd across network namespaces, and a service connection is not a
    controller: the bridge stays in fail_mode=secure with no controller, and keeps its flows after.
    (Listening for the switch inside the rig's namespace needs os.setns, i.e. Python 3.12.)
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(rig.ovs.workdir / f"{bridge}.mgmt"))
        peer = Peer(sock)
        peer.send(parser.OFPHello(peer.datapath))
        peer.request(parser.OFPFeaturesRequest(peer.datapath), parser.OFPSwitchFeatures)
        yield peer


PLACED_BY_TEST = 0x7E57_0000_0000_0006
"""The cookie of placements a test installs beside a running controller (`install_placements`): not the
controller's, so its reconciliation neither reads nor removes them."""


def install_placements(rig: Rig, bridge: str, placements: Iterable[Placement], *,
                       cookie: int = PLACED_BY_TEST) -> frozenset[Flow]:
    """Install the flows of `placements` (on node ports) as the pipeline builds them, beside what a
    controller keeps on `bridge` (its fixed flows, `nd_reply` among them, stay its own).

    For placements the controller cannot make yet (IPv6 while its pools are IPv4 only): the switch
    then treats them exactly as if the controller had placed them."""
    flows = frozenset(flow for placement in placements for flow in placement_flows(placement, False, cookie))
    with connected(rig, bridge) as switch:
        switch.flow_mods(flows)
    return flows
