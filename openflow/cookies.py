"""A flow's cookie says whose it is and why it exists: the controller's tag, a purpose, an owner.

    bits 63..48  the controller's tag (the config's `cookie`, high 16 bits: 0x55aa by default)
    bits 47..40  the flow's purpose (`Purpose`)
    bits 39..32  zero (room for a later layout)
    bits 31..0   its owner's id: CRC-32 of the owner key ("ip:198.18.0.5", "mac:02:..", "port:3")

The switch compares only the tag (`TAG_MASK`) when the controller reads or deletes its flows, so
other controllers' flows stay untouched, and `ovs-ofctl dump-flows` output turns back into names:
the purpose directly, the owner by hashing the keys the controller knows (`owner_id`;
openflow.explain). The records the switch learns itself (table `seen`) carry another tag,
`seen_tag(tag)` (the tag's bitwise complement: 0xaa55 for 0x55aa), so a read of our flows never
returns them.
Everything here is pure and deterministic: the same flow gets the same cookie after a restart, which
keeps reconciliation at zero flow-mods.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TAG_MASK = 0xFFFF_0000_0000_0000
_PURPOSE_SHIFT = 40
_PURPOSE_MASK = 0xFF << _PURPOSE_SHIFT
_OWNER_MASK = 0xFFFF_FFFF


class Purpose(enum.IntEnum):
    """Why a flow exists. Values are on the wire (in every cookie): append, never renumber."""

    PIPELINE = 0       # a table's default (miss) flow, broadcast handling
    LEARN = 1          # a registered node's MAC to the controller, to learn its port
    TRUSTED = 2        # a trusted port: passes unchecked, its sources recorded in `seen`
    PORT_SECURITY = 3  # what a placement's port may send (ingress allow flows)
    ARP_RESPONDER = 4  # an ARP request for a placed IPv4 address answered by the switch
    ND_RESPONDER = 5   # a Neighbor Solicitation for a placed IPv6 address answered by the switch
    OWNER_PASS = 6     # the owner's own request (DAD, gratuitous) passes unanswered
    RA_GUARD = 7       # router advertisements, redirects and foreign ND from a pod port dropped
    FORWARD = 8        # a placed MAC forwarded to its port (or towards its switch)
    FLOOD = 9          # broadcast and unknown traffic along the fabric's loop-free tree
    TOPOLOGY = 10      # LLDP between switches, sent to the controller
    VLAN = 11          # a VLAN's admission or trunking
    SEEN = 12          # a trusted port's source, recorded by the switch itself (under `seen_tag`)

    @property
    def label(self) -> str:
        """The name in listings and metrics labels: `arp_responder`."""
        return self.name.lower()


@dataclass(frozen=True)
class Decoded:
    tag: int
    purpose: Purpose | int  # an int for a purpose this version does not know
    owner_id: int

    @property
    def purpose_label(self) -> str:
        """`arp_responder`, or `purpose<N>` for a purpose this version does not know."""
        return self.purpose.label if isinstance(self.purpose, Purpose) else f"purpose{self.purpose}"

    def owner_name(self, owners: Mapping[int, str] | None = None) -> str:
        """Its owner's name in `owners`, its id in hex (`0x0000abcd`) when not there, "" for no owner."""
        if not self.owner_id:
            return ""
        return (owners or {}).get(self.owner_id, f"{self.owner_id:#010x}")

    def describe(self, owners: Mapping[int, str] | None = None) -> str:
        """`arp_responder for default/web-0`, or `... for owner 0x0000abcd` when it is not known."""
        owner = self.owner_name(owners)
        if not owner:
            return self.purpose_label
        return f"{self.purpose_label} for {owner if self.owner_id in (owners or {}) else 'owner ' + owner}"


def tag_of(cookie: int) -> int:
    """The controller's tag in a configured cookie (its low 48 bits are ignored)."""
    return cookie & TAG_MASK


def seen_tag(tag: int) -> int:
    """The tag of the `seen` records the switch learns for the controller tagged `tag`: its
    complement, never equal to it, and as easy to spot in a dump (0x55aa → 0xaa55)."""
    return ~tag_of(tag) & TAG_MASK


def owner_id(key: str) -> int:
    """The 32-bit id of an owner key; 0 for no owner."""
    return zlib.crc32(key.encode()) & _OWNER_MASK if key else 0


def make(tag: int, purpose: Purpose, owner: str = "") -> int:
    """The cookie of a flow with this purpose and owner key, under the controller's `tag`."""
    return tag_of(tag) | purpose << _PURPOSE_SHIFT | owner_id(owner)


def decode(cookie: int) -> Decoded:
    raw = (cookie & _PURPOSE_MASK) >> _PURPOSE_SHIFT
    purpose: Purpose | int = Purpose(raw) if raw in Purpose._value2member_map_ else raw
    return Decoded(tag_of(cookie), purpose, cookie & _OWNER_MASK)


def is_ours(cookie: int, tag: int) -> bool:
    return tag_of(cookie) == tag_of(tag)


def ip_owner(ip: str) -> str:
    return f"ip:{ip}"


def mac_owner(mac: str) -> str:
    return f"mac:{mac.lower()}"


def port_owner(port: int) -> str:
    return f"port:{port}"


def owner_names(names: Iterable[tuple[str, str]]) -> dict[int, str]:
    """{owner id: human name} from (owner key, name) pairs, e.g. ("ip:198.18.0.5", "default/web-0")."""
    return {owner_id(key): name for key, name in names}
