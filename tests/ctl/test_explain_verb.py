"""`underlayctl flows --explain`: a dump from standard input named with the controller's placements,
or a switch's flows as the controller reads them. The dump is real (the lab's switch, Open vSwitch
3.1, before the cookie layout: every flow then says `pipeline`) plus flows made by the pipeline of
today, rendered as ovs-ofctl prints them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from controller.opsapi import flow_json
from ctl.client import CtlError
from ctl.explain import STDIN, fetch, render
from openflow import cookies
from openflow.cookies import Purpose

DUMP = (Path(__file__).parents[1] / "openflow" / "ofproto_traces" / "dump_flows.txt").read_text()
TAG = 0x55AA_0000_0000_0000
POD = {"ip": "198.18.0.100", "mac": "02:55:c6:12:00:64", "port": 2, "dpid": 1, "owner": "default/node1-pod1"}
RESPONDER = (f" cookie={cookies.make(TAG, Purpose.ARP_RESPONDER, cookies.ip_owner(POD['ip'])):#x}, table=1, "
             "n_packets=0, priority=100,arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_tpa=198.18.0.100,arp_op=1 "
             "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],IN_PORT")


class Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def placements(path: str) -> dict:
    assert path == "/v1/placements"
    return {"placements": [POD]}


def unreachable(path: str) -> dict:
    raise CtlError("the controller at https://127.0.0.1:6680 is unreachable (Connection refused)")


def test_a_dump_on_stdin_is_explained_with_table_names_and_owners() -> None:
    data = fetch(placements, STDIN, stdin=Stdin(DUMP + RESPONDER + "\n"))
    rows = data["flows"]
    assert len(rows) == len(DUMP.splitlines()) - 1 + 1  # the header is not a flow
    assert {row["table"] for row in rows} >= {"ingress", "responder", "l2"}
    assert rows[-1]["purpose"] == "arp_responder" and rows[-1]["owner"] == "default/node1-pod1"
    text = render(data)
    assert text.splitlines()[0] == f"{len(rows)} flows from standard input:"
    assert text.splitlines()[-1].endswith("# arp_responder for default/node1-pod1")


def test_without_the_controller_owners_stay_ids_and_it_says_so() -> None:
    data = fetch(unreachable, STDIN, stdin=Stdin(RESPONDER))
    assert data["flows"][0]["owner"] == f"{cookies.owner_id(cookies.ip_owner(POD['ip'])):#010x}"
    assert render(data).endswith("(owners not named: the controller at https://127.0.0.1:6680 is unreachable "
                                 "(Connection refused))")


@pytest.mark.parametrize(("text", "says"), [("hello\n", "no flow in the input")])
def test_what_is_not_a_dump_is_refused(text: str, says: str) -> None:
    with pytest.raises(CtlError, match=says):
        fetch(placements, STDIN, stdin=Stdin(text))


def test_a_terminal_on_stdin_gets_told_what_to_pipe() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    with pytest.raises(CtlError, match=r"pipe `ovs-ofctl -O OpenFlow13 dump-flows BRIDGE` into it"):
        fetch(placements, STDIN, stdin=Terminal())


def test_a_switch_is_explained_from_what_the_controller_read() -> None:
    from openflow.pipeline import desired_flows
    from openflow.model import Placement, SwitchState

    state = SwitchState(dpid=1, cookie=TAG, placements=(Placement(POD["ip"], POD["mac"], 2, POD["owner"]),))
    owners = cookies.owner_names([(cookies.ip_owner(POD["ip"]), POD["owner"])])
    answer = {"dpid": 1, "flows": [flow_json(f, owners) for f in desired_flows(state)]}

    def get(path: str) -> dict:
        assert path == "/v1/switches/0x1/flows?state=actual"
        return answer

    text = render(fetch(get, "0x1"))
    assert text.startswith(f"{len(answer['flows'])} flows from switch 0000000000000001 (read through the controller):")
    assert "  responder  prio=100   eth_dst=ff:ff:ff:ff:ff:ff,eth_type=0x0806,arp_op=1,arp_tpa=198.18.0.100" in text
    assert "# arp_responder for default/node1-pod1" in text
