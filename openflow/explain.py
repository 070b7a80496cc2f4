"""`ovs-ofctl dump-flows` text → each flow with its table's name, its purpose and its owner. No I/O.

What an operator pastes from a switch (`ovs-ofctl -O OpenFlow13 dump-flows BRIDGE`, with or without
`--no-stats`, with table numbers, or with the names Open vSwitch prints from the bridge's
`Flow_Table` rows with `--names` or at a terminal: `table=ingress`, `goto_table:"nd_reply"`) is
read back into `Explained` values: the cookie (openflow.cookies) gives the purpose directly and
the owner through a map of the owners the controller knows (`owner_map`: placements → names).
`underlayctl flows --explain` prints them; nothing here talks to a switch.

    explain(" cookie=0x55aa0400c0a1b2c3, table=1, priority=100,arp,arp_tpa=198.18.0.5 actions=...",
            owners=owner_map(state.placements))[0].describe()  →  "arp_responder for default/web-0"
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openflow import cookies
from openflow.flows import Flow
from openflow.model import Placement, link_local
from openflow.tables import actions_text, match_text, table_name

DEFAULT_PRIORITY = 32768  # what OpenFlow gives a flow added without one; ovs-ofctl then prints none
# `key=value, ` fields before the match (statistics, timeouts; `table` and `cookie` are read)
_FIELD = re.compile(r"\s*(cookie|duration|table|n_packets|n_bytes|idle_timeout|hard_timeout|idle_age|hard_age"
                    r"|importance|out_port|out_group)=([^,\s]*),\s+")
_FLAG = re.compile(r"\s*(send_flow_rem|reset_counts|no_packet_counts|no_byte_counts|check_overlap)(?:\s+|$)")
_ACTIONS = re.compile(r"(?:^|\s)actions=")
_PRIORITY = re.compile(r"priority=(\d+),?")
# a table named in an action: goto_table:N, learn(table=N, resubmit(,N); a number or a (quoted) name
_TABLE_REF = re.compile(r'(goto_table:|learn\(table=|resubmit\([^,()]*,)("?)([\w-]+)\2')


@dataclass(frozen=True)
class Explained:
    """One flow of a dump, in words."""

    table: str      # the pipeline's name ("ingress"), or "table<N>" for a table it does not have
    priority: int
    match: str      # as ovs-ofctl printed it ("" matches everything)
    actions: str    # as printed, with table numbers turned into names
    cookie: int
    purpose: str    # `Purpose.label` ("arp_responder"), "purpose<N>" for one this version does not know
    owner: str      # its owner's name, its id in hex ("0x0000abcd") when unknown, "" for none
    ours: bool | None = None  # under the controller's tag (None: no tag given)

    def describe(self) -> str:
        """`arp_responder for default/web-0`, `pipeline`."""
        return f"{self.purpose} for {self.owner}" if self.owner else self.purpose

    def render(self) -> str:
        """One line: `responder  prio=100  arp,arp_tpa=198.18.0.5  actions=...  # arp_responder for web-0`."""
        foreign = "" if self.ours is not False else " (not ours)"
        return (f"{self.table:<10} prio={self.priority:<5} {self.match or '*'}  actions={self.actions}  "
                f"# {self.describe()}{foreign} cookie={self.cookie:#x}")


def explain(text: str, *, owners: Mapping[int, str] | None = None, tag: int | None = None) -> list[Explained]:
    """Every flow line of a dump (header and blank lines skipped), in order. `owners` is
    `owner_map(...)` or `cookies.owner_names(...)`; `tag` (the controller's cookie) sets `ours`."""
    found = (explain_line(line, owners=owners, tag=tag) for line in text.splitlines())
    return [flow for flow in found if flow is not None]


def explain_line(line: str, *, owners: Mapping[int, str] | None = None,
                 tag: int | None = None) -> Explained | None:
    """One line of a dump; None for a line that is not a flow (the `OFPST_FLOW reply` header)."""
    split = _ACTIONS.search(line)
    if split is None or line.lstrip().startswith(("OFPST_", "NXST_")):
        return None
    head, actions = line[:split.start()], line[split.end():].strip()
    fields: dict[str, str] = {}
    while (field := _FIELD.match(head)) is not None:
        fields[field.group(1)] = field.group(2)
        head = head[field.end():]
    while (flag := _FLAG.match(head)) is not None:
        head = head[flag.end():]
    head = head.strip()
    priority = DEFAULT_PRIORITY
    if (found := _PRIORITY.match(head)) is not None:
        priority, head = int(found.group(1)), head[found.end():]
    cookie = int(fields.get("cookie", "0"), 16)
    purpose, owner = _names(cookie, owners)
    return Explained(table=_table(fields.get("table", "0")), priority=priority, match=head,
                     actions=_TABLE_REF.sub(lambda m: m.group(1) + _table(m.group(3)), actions),
                     cookie=cookie, purpose=purpose, owner=owner,
                     ours=None if tag is None else cookies.is_ours(cookie, tag))


def explain_flow(flow: Flow, *, owners: Mapping[int, str] | None = None, tag: int | None = None) -> Explained:
    """A `Flow` (desired, or parsed from flow stats) in the same words as a dump's line: for
    listings built from the controller's own view (`underlayctl flows`, the flows endpoint)."""
    purpose, owner = _names(flow.cookie, owners)
    return Explained(table=flow.table, priority=flow.priority, match=match_text(flow), actions=actions_text(flow),
                     cookie=flow.cookie, purpose=purpose, owner=owner,
                     ours=None if tag is None else cookies.is_ours(flow.cookie, tag))


def owner_map(placements: Iterable[Placement], *, ports: Mapping[int, str] | None = None,
              names: Iterable[tuple[str, str]] = ()) -> dict[int, str]:
    """{owner id: name} for the owners the pipeline puts in cookies: each placement's IP (and, for
    IPv6, its link-local address) by its `owner` (or the IP), each MAC by the node whose own
    placement answers at it (ipvlan pods share it) or else by its placements' owners; `ports`
    names the ports trusted flows belong to ({9: "uplink"}); `names` adds (owner key, name) pairs,
    e.g. the learn MACs of registered nodes (`cookies.mac_owner(mac)`, "node/n3")."""
    by_key: dict[str, set[str]] = defaultdict(set)
    for placement in placements:
        name = placement.owner or placement.ip
        by_key[cookies.ip_owner(placement.ip)].add(name)
        if ":" in placement.ip:
            by_key[cookies.ip_owner(link_local(placement.ip))].add(name)
        by_key[cookies.mac_owner(placement.mac)].add(name)
    pairs = [(key, _one_name(owners)) for key, owners in by_key.items()]
    pairs += [(cookies.port_owner(number), name) for number, name in (ports or {}).items()]
    return cookies.owner_names([*pairs, *names])


def _names(cookie: int, owners: Mapping[int, str] | None) -> tuple[str, str]:
    decoded = cookies.decode(cookie)
    return decoded.purpose_label, decoded.owner_name(owners)


def _one_name(owners: set[str]) -> str:
    nodes = sorted(name for name in owners if name.startswith("node/"))
    return nodes[0] if len(nodes) == 1 else ", ".join(sorted(owners))


def _table(text: str) -> str:
    """A table as ovs-ofctl printed it (a number, a name, a quoted name) → the pipeline's name."""
    text = text.strip('"')
    return table_name(int(text)) if text.isdigit() else text
