"""The pipeline's tables, named once, and a one-line text form of a flow for docs and logs.

Code refers to tables by name; `TABLES` is the only place that assigns OpenFlow table ids. The order
of the ids is also the order in which a packet walks the tables and in which adds are applied
(ingress allow flows first: make-before-break).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openflow.flows import Flow

INGRESS = "ingress"      # port security: what may enter from each port
RESPONDER = "responder"  # ARP requests and Neighbor Solicitations for placed IPs, answered in the datapath
L2 = "l2"                # exact destination MACs to their port; the rest NORMAL or drop
SEEN = "seen"            # source MACs seen on trusted ports: learned by the switch, read, never walked
ND_REPLY = "nd_reply"    # the last step of a Neighbor Advertisement the responder made (after `seen`:
                         # the ids of the older tables, and what the switch learned in them, stay put)

TABLES: dict[str, int] = {INGRESS: 0, RESPONDER: 1, L2: 2, SEEN: 3, ND_REPLY: 4}

# priorities both families' flows use (openflow.pipeline, openflow.ipv6)
PRIO_ALLOW = 200       # ingress: a placement's own traffic
PRIO_SKIP_OWNER = 200  # responder: a request from the owner's port passes unanswered
PRIO_ANSWER = 100      # responder: a request for a placed IP is answered
TABLE_NAMES: dict[int, str] = {table_id: name for name, table_id in TABLES.items()}


def table_id(name: str) -> int:
    """The id of `name`; a foreign table found on a switch is named "table<N>" (see `table_name`)."""
    if name in TABLES:
        return TABLES[name]
    if name.startswith("table") and name[5:].isdigit():
        return int(name[5:])
    raise KeyError(f"unknown table {name!r}: known are {', '.join(TABLES)}")


def table_name(number: int) -> str:
    return TABLE_NAMES.get(number, f"table{number}")


def vsctl_name_tables(bridge: str) -> list[str]:
    """ovs-vsctl arguments (one transaction, appendable to an `add-br`) that name the pipeline's
    tables on `bridge` in Open vSwitch's `Flow_Table` rows, so that `ovs-ofctl --names` (the default
    at a terminal) prints `table=ingress` and `goto_table:responder` instead of numbers. Names only:
    OpenFlow itself still carries the numbers (`TABLES`)."""
    args: list[str] = []
    for name, number in TABLES.items():
        args += ["--", f"--id=@{name}", "create", "Flow_Table", f"name={name}"]
    args += ["--", "set", "Bridge", bridge, *(f"flow_tables:{number}=@{name}" for name, number in TABLES.items())]
    return args


def render(flow: Flow) -> str:
    """One line in ovs-ofctl's spirit, e.g.
    `ingress(0) prio=200 in_port=1,eth_type=0x806,... actions=goto_table:responder`."""
    return (f"{flow.table}({table_id(flow.table)}) prio={flow.priority} {match_text(flow) or '*'} "
            f"actions={actions_text(flow)} cookie={flow.cookie:#x}")


def match_text(flow: Flow) -> str:
    """`in_port=1,eth_type=0x0806,...`; "" for a flow that matches everything."""
    return ",".join(f"{name}={_value(name, value)}" for name, value in flow.match)


def actions_text(flow: Flow) -> str:
    """`set_field:...,goto_table:l2`; "drop" for none."""
    steps = [str(action) for action in flow.actions]
    if flow.goto is not None:
        steps.append(f"goto_table:{flow.goto}")
    return ",".join(steps) or "drop"


def _value(name: str, value: object) -> str:
    if isinstance(value, tuple):
        return "/".join(str(part) for part in value)
    if name in ("eth_type", "vlan_vid") and isinstance(value, int):
        return f"{value:#06x}"
    return str(value)
